"""Database errors said by purpose: which of the store's statements failed, for which events.

The database's own error text quotes the statement and its parameters, which hold payload values (users'
e-mails): :func:`purpose` replaces it with ``"<purpose> failed for event <id>: <driver message>"``, the
driver message cut to its first line with values and SQL removed (``syncd.redaction.safe_error``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import sqlalchemy.exc

from syncd.contracts import Quarantined
from syncd.errors import SyncdError
from syncd.redaction import printable, safe_error

log = logging.getLogger("syncd.engine")


class StatementError(SyncdError):
    """A statement of a page's or a run's transaction failed; the transaction rolled back."""

    def __init__(self, what: str, event_ids: Sequence[str], driver: BaseException) -> None:
        self.what, self.event_ids = what, tuple(event_ids)
        lines = safe_error(str(driver)).splitlines()
        detail = printable(lines[0])[:300] if lines else ""
        super().__init__(f"{what} failed for {events_text(event_ids)}: {type(driver).__name__}"
                         + (f": {detail}" if detail else ""))


def events_text(event_ids: Sequence[str]) -> str:
    """``event X`` or ``N events X … Y``: ids made printable and short."""
    if not event_ids:
        return "no event"
    first = _short(event_ids[0])
    if len(event_ids) == 1:
        return f"event {first}"
    return f"{len(event_ids)} events {first} … {_short(event_ids[-1])}"


def _short(event_id: str) -> str:
    text = json.dumps(event_id[:61], ensure_ascii=True)[1:-1]  # NUL, controls, surrogates as escapes
    return text if len(event_id) <= 60 else f"{text[:60]}… ({len(event_id)} chars)"


@contextmanager
def purpose(what: str, event_ids: Sequence[str]) -> Iterator[None]:
    """Raise the database's errors inside as ``StatementError(what, event_ids)``."""
    try:
        yield
    except sqlalchemy.exc.DBAPIError as exc:
        raise StatementError(what, event_ids, exc.orig if exc.orig is not None else exc) from None


def note_quarantined(source: str, held: Sequence[Quarantined], refused: Iterable[str]) -> None:
    """One warning line per page with quarantined events: how many, and the first ids."""
    ids = [q.event_id or "(no id)" for q in held] + sorted(refused)
    if ids:
        log.warning("%s: %d event(s) quarantined (syncd status shows them): %s", source, len(ids),
                    ", ".join(_short(i) for i in ids[:5]) + (" …" if len(ids) > 5 else ""),
                    extra={"source": source})
