"""A loopback HTTP server that speaks the WorkOS Events API (``GET /events``), with knobs for faults.

Used by the tests, ``syncd demo`` and ``bench/`` (``python -m simulators.workos``); it imports nothing from
``syncd``. The stream is generated deterministically from a seed: lifecycles of organizations, users
and organization memberships (created → updated 0..k times → sometimes deleted; memberships are
deleted before their user or organization), plus a small share of other event types. With ``dsync=SHARE``
that share of the events is Directory Sync (``dsync``: directories, directory users and groups, group
memberships), whose true state is ``directory_state()``.

Contract served (see /work/shared/PROVIDERS.md):

- ``Authorization: Bearer <api_key>`` else ``401 {"message":"Unauthorized"}``.
- ``events`` is required, as ``events=a,b``, ``events=a&events=b`` or ``events[]=a&events[]=b``.
- ``limit`` 1..100 (default 10); ``order`` ``asc``/``normal`` (default, oldest first) or ``desc``.
- ``after`` / ``before`` are event ids read in listing order: in ``desc`` order ``after=X`` gives
  events older than X. Because ids are time-ordered ULIDs, an id that is well formed but not in the
  stream (e.g. a cursor kept from another run) is placed by ordering, like a keyset cursor; a
  malformed id is a 422. ``after`` may be combined with the range filters (intersection).
- ``range_start`` (inclusive) / ``range_end`` (exclusive): ISO-8601 on the event time (the time in its
  id, which is ``created_at`` for every generated event); malformed → 422.
- ``organization_id``: events whose ``data.organization_id`` (or, for ``organization.*``, ``data.id``)
  matches.
- ``list_metadata.after`` is the id of the page's last event when more events remain, else null;
  ``list_metadata.before`` is always null.

Faults are drawn per ``/events`` request from one seeded RNG with a single uniform draw against the
cumulative rates (reset, timeout, rate limit, error, broken — so the rates must sum to at most 1),
which makes a sequential client's run reproducible. They apply before authentication, like a proxy.

Modules, by responsibility: ``ids`` (ULIDs, timestamps), ``data`` (the lifecycle generator), ``stream``
(storage and the ``/events`` query), ``faults`` (knobs and faulty responses), ``wire`` (the HTTP
handler), ``api`` (``WorkOSSimulator``), ``dsync`` (the Directory Sync lifecycle), ``oracle`` (``mirror_state``,
``directory_mirror_state``), ``cli`` (``main``).
"""

from simulators.workos.api import WorkOSSimulator
from simulators.workos.cli import main
from simulators.workos.faults import Faults
from simulators.workos.ids import DEFAULT_NOW, format_timestamp, parse_timestamp, ulid, ulid_ms
from simulators.workos.oracle import directory_mirror_state, mirror_state

__all__ = ["DEFAULT_NOW", "Faults", "WorkOSSimulator", "directory_mirror_state", "format_timestamp", "main",
           "mirror_state", "parse_timestamp", "ulid", "ulid_ms"]
