"""Quarantine: events that cannot be processed, held apart (``syncd_quarantine``) so their stream goes on.

Two ways in. A connector that cannot read an event (no id, no time, not an object…) describes it in
``Page.quarantined``. The ledger itself refuses, with :func:`unstorable`, what a database cannot hold:
a NUL character or an unpaired UTF-16 surrogate in any string (PostgreSQL's text and JSONB refuse them,
and SQLite's driver cannot encode a surrogate), an id, type or action longer than its column, and a
payload nested deeper than :data:`MAX_DEPTH` (what orjson writes; the standard library would hit
Python's recursion limit reading it back). The check is the same on every database, so an event is
quarantined or not whatever the store. What is kept is a safe form (:func:`safe_raw`): printable ASCII,
bounded in length and depth, never the bytes that could not be stored.

An event is fetched again after a fix with ``syncd cursor reset SOURCE --to TIME`` (its ``occurred_at``
when known): the ledger drops what it has, the event lands, and its quarantine row is removed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from syncd.contracts import Event, Quarantined
from syncd.jsoncodec import JSON_OPTIONS, RAW_LIMIT, safe_raw, safe_text
from syncd.store.tables import events, quarantine

#: Containers nested deeper than this are not stored: orjson writes up to 254 levels.
MAX_DEPTH = 254
_LIMITS: dict[str, int | None] = {name: getattr(column.type, "length", None) for name, column in (
    ("id", events.c.event_id), ("type", events.c.type), ("action", events.c.action))}


def unstorable(event: Event) -> str | None:
    """Why the ledger cannot hold ``event`` (one line, no value from it), or None if it can."""
    return check(event)[0]


def check(event: Event) -> tuple[str | None, str | None]:
    """(:func:`unstorable`'s answer, the payload's JSON text when the check wrote it on the way, else None).

    The text is exactly ``jsoncodec.dumps(event.data)``, so the ledger stores it as it is instead of
    serializing every payload a second time (bench/README.md, scenario D, session 11)."""
    if _plain_fields(event.id, event.type, event.action):
        return _unstorable_payload(event.data)
    for name, value in (("id", event.id), ("type", event.type), ("action", event.action)):
        if value is None and name == "action":
            continue
        if not isinstance(value, str) or not value:
            return f"{name} is not a non-empty string", None
        limit = _LIMITS[name]
        if limit is not None and len(value) > limit:
            return f"{name} longer than {limit} characters ({len(value)})", None
        problem = _bad_text(value)
        if problem:
            return f"{name} holds {problem}", None
    return _unstorable_payload(event.data)


_ID_LIMIT, _TYPE_LIMIT, _ACTION_LIMIT = (_LIMITS[name] or 1 << 62 for name in ("id", "type", "action"))


def _plain_fields(event_id: object, kind: object, action: object) -> bool:
    """True when the id, type and action are certainly storable: non-empty ``str`` within their lengths, ASCII
    without NUL (no surrogate then). The common case, checked in a few C calls; anything else is False and
    goes through the field-by-field check, which names the problem (0.15 s of CPU a 95,000-event catch-up
    saved)."""
    if type(event_id) is not str or type(kind) is not str or not 0 < len(event_id) <= _ID_LIMIT \
            or not 0 < len(kind) <= _TYPE_LIMIT:
        return False
    if action is None:
        text = event_id + kind
    elif type(action) is str and 0 < len(action) <= _ACTION_LIMIT:
        text = event_id + kind + action
    else:
        return False
    return text.isascii() and "\x00" not in text


def _unstorable_payload(data: Any) -> tuple[str | None, str | None]:
    # Fast path: orjson refuses lone surrogates and nesting beyond MAX_DEPTH, and writes NUL as \u0000.
    # First with jsoncodec's options (its text is then the ledger's), then plain: a datetime or a
    # dataclass, which jsoncodec leaves to the standard library, is still checked by orjson.
    try:
        text = orjson.dumps(data, option=JSON_OPTIONS)
    except TypeError:
        try:
            plain = orjson.dumps(data)
        except TypeError:
            pass
        else:
            if b"\\u0000" not in plain:
                return None, None
    else:
        if b"\\u0000" not in text:
            return None, text.decode()
    return _walk(data), None


def _walk(data: Any) -> str | None:
    """The first problem found in ``data``'s strings (keys included) or depth; None if there is none."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            problem = _bad_text(value)
            if problem:
                return f"payload holds {problem}"
        elif isinstance(value, dict | list | tuple):
            if depth > MAX_DEPTH:
                return f"payload nested deeper than {MAX_DEPTH} levels"
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str):
                    stack.append((key, depth))
                stack.append((item, depth + 1))
    return None


def _bad_text(text: str) -> str | None:
    if "\x00" in text:
        return "a NUL character"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "an unpaired UTF-16 surrogate"
    return None


def _clean(text: str, limit: int) -> str:
    """``text`` kept as it is when already printable ASCII (a connector's ``safe_raw``), else escaped."""
    if text.isascii() and text.isprintable():
        return text if len(text) <= limit else text[:limit] + "…"
    return safe_text(text, limit)


def from_event(event: Event, reason: str) -> Quarantined:
    """The quarantine entry of an event the ledger refused."""
    raw = {"id": event.id, "type": event.type, "action": event.action, "data": event.data}
    event_id = event.id if isinstance(event.id, str) and event.id else None  # a connector may break the type
    return Quarantined(event.stream, event_id, reason, safe_raw(raw), event.occurred_at)


def _key(entry: Quarantined) -> str:
    source = f"id:{entry.event_id}" if entry.event_id is not None else f"raw:{entry.raw}"
    return hashlib.blake2b(source.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def record(conn: Connection, entries: Sequence[Quarantined], now: datetime) -> None:
    """Add ``entries`` to the quarantine; one seen before counts one more sighting."""
    for entry in entries:
        key = _key(entry)
        seen = conn.execute(sa.update(quarantine).where(quarantine.c.stream == entry.stream,
                                                        quarantine.c.key == key)
                            .values(last_seen_at=now, times_seen=quarantine.c.times_seen + 1,
                                    reason=_clean(entry.reason, 500), raw=_clean(entry.raw, RAW_LIMIT)))
        if seen.rowcount:
            continue
        conn.execute(sa.insert(quarantine).values(
            stream=entry.stream, key=key, reason=_clean(entry.reason, 500),
            event_id=None if entry.event_id is None else safe_text(entry.event_id, 1000),
            raw=_clean(entry.raw, RAW_LIMIT), occurred_at=entry.occurred_at, first_seen_at=now,
            last_seen_at=now))


def release(conn: Connection, stream: str, event_ids: Iterable[str]) -> None:
    """Drop the quarantine rows of these events: they are in the ledger now (fetched again after a fix)."""
    # Usually the stream has nothing in quarantine: one indexed look-up instead of hashing every id of a
    # catch-up's pages into a large IN list.
    if conn.execute(_ANY_HELD, {"stream": stream}).first() is None:
        return
    keys = [_key(Quarantined(stream, event_id, "", "")) for event_id in event_ids]
    if keys:
        conn.execute(sa.delete(quarantine).where(quarantine.c.stream == stream, quarantine.c.key.in_(keys)))


_ANY_HELD = sa.select(sa.literal(1)).where(quarantine.c.stream == sa.bindparam("stream")).limit(1)
