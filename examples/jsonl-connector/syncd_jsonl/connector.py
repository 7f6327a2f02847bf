"""``JsonlConnector``: one page of a JSON Lines file per call; the cursor is the byte offset read up to.

The contract it keeps (``syncd.contracts.Connector``): the events strictly after the cursor, oldest first,
at most one page; a malformed line is quarantined, never raised, and the cursor moves past it; a line not
yet ended by a newline is not read (its writer may be mid-line); it never sleeps or loops over pages.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from syncd.contracts import Event, Page, Quarantined, Window
from syncd.errors import FatalError, RetryableError
from syncd.jsoncodec import safe_raw


def parse_line(stream: str, line: bytes) -> Event:
    """One line → ``Event``; ``ValueError`` says what is wrong with it."""
    try:
        raw = json.loads(line)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ValueError("not a JSON line") from None
    if not isinstance(raw, dict):
        raise ValueError(f"a line is a JSON object, not {type(raw).__name__}")
    event_id, event_type, data = raw.get("id"), raw.get("type"), raw.get("data", {})
    if not isinstance(event_id, str) or not event_id or len(event_id) > 200 or "\x00" in event_id:
        raise ValueError("no usable 'id' (text of 1 to 200 characters)")
    if not isinstance(event_type, str) or not event_type:
        raise ValueError(f"line {event_id[:60]} has no 'type'")
    if not isinstance(data, dict):
        raise ValueError(f"line {event_id[:60]}: 'data' is not an object")
    return Event(stream=stream, id=event_id, type=event_type, occurred_at=_time(raw.get("time"), event_id),
                 data=data)


def _time(value: Any, event_id: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None:
        raise ValueError(f"line {event_id[:60]}: 'time' is not an ISO-8601 time")
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class JsonlConnector:
    """One source: the file at ``path``. ``prefetch``: a page depends only on the cursor it is asked for."""

    prefetch = True

    def __init__(self, path: Path, *, key: str, page_size: int = 500) -> None:
        self.path = path
        self.key = key
        self.page_size = page_size

    def __repr__(self) -> str:
        return f"JsonlConnector(key={self.key!r}, path={str(self.path)!r})"

    def close(self) -> None:
        """Nothing held open between pages."""

    def fetch_page(self, cursor: str | None, window: Window | None = None) -> Page:
        offset = self._offset(cursor)
        lines, end, more = self._read(offset)
        events: list[Event] = []
        held: list[Quarantined] = []
        position = offset
        for line in lines:
            try:
                event = parse_line(self.key, line.strip())
            except ValueError as exc:
                text = line.rstrip(b"\r\n").decode("utf-8", "replace")
                held.append(Quarantined(self.key, None, str(exc)[:300], safe_raw(text)))
                position += len(line)
                continue
            if window is not None and event.occurred_at >= window.end:
                return Page(events=tuple(events), next_cursor=str(position), has_more=False, skipped=len(held),
                            quarantined=tuple(held))  # the window is exhausted (the file is in time order)
            if window is None or window.contains(event.occurred_at):
                events.append(event)
            position += len(line)
        return Page(events=tuple(events), next_cursor=str(end), has_more=more, skipped=len(held),
                    quarantined=tuple(held))

    def cursor_at(self, moment: datetime) -> str:
        """The cursor that lists from ``moment`` on (``syncd cursor reset jsonl:NAME --to TIME``): the offset
        of the first line at or after it."""
        offset = 0
        with self._open() as handle:
            for line in handle:
                if line.endswith(b"\n"):
                    try:
                        if parse_line(self.key, line.strip()).occurred_at >= moment:
                            break
                    except ValueError:
                        pass
                offset += len(line)
        return str(offset)

    def _offset(self, cursor: str | None) -> int:
        if cursor is None:
            return 0
        if not cursor.isdigit():
            raise FatalError(self.key, f"unreadable cursor {cursor[:40]!r}; set a new one: "
                                       f"syncd cursor reset {self.key} --to TIME")
        return int(cursor)

    def _read(self, offset: int) -> tuple[list[bytes], int, bool]:
        """Up to ``page_size`` whole lines from ``offset``, the offset after them, and whether more follow."""
        with self._open() as handle:
            size = handle.seek(0, 2)
            if offset > size:
                raise FatalError(self.key, f"the file is shorter than the cursor ({size} < {offset} bytes): "
                                           f"rotated or truncated? syncd cursor reset {self.key} --to TIME")
            handle.seek(offset)
            lines: list[bytes] = []
            end = offset
            for line in handle:
                if not line.endswith(b"\n"):
                    break  # still being written
                if len(lines) == self.page_size:
                    return lines, end, True
                lines.append(line)
                end += len(line)
        return lines, end, False

    def _open(self) -> Any:
        try:
            return self.path.open("rb")
        except FileNotFoundError:
            raise FatalError(self.key, f"{self.path} does not exist; check JSONL_FILES") from None
        except OSError as exc:
            raise RetryableError(self.key, f"cannot read {self.path}: {exc.strerror}") from None
