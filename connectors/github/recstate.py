"""Reconciliation state, kept in the repository's cursor: pure, tested by tables.

GitHub's issue listing never shows a deleted issue, so polling cannot see deletions. Every
``GITHUB_RECONCILE_SECONDS`` the connector lists the repository's issue numbers (``state=all``,
``sort=created``, ``direction=asc``, page by page) and asks about each mirrored issue missing from that
listing (``connectors.github.reconcile``). Where it stands is ``Rec``, stored in the cursor under
``"rec"`` (so it commits with the page whose events it produced, fenced by the source's lease):

- ``at``: when the last complete reconciliation started (epoch seconds, the connector's clock); the next
  one is due ``every`` seconds later. A cursor without ``rec`` gets ``at`` = now: a new repository (whose
  first sync lists every issue anyway) or an upgraded one is first reconciled one interval later.
- ``page`` (> 0 while a walk is under way): the next listing page; ``walk``: the pages listed so far.
- ``last``: the pages of the last complete walk, as ``(ETag, issue numbers)``. Page k of the next walk is
  asked with ``If-None-Match: <ETag of page k>``; a 304 (free on GitHub) means the page holds the same
  issues as then. So an idle reconciliation costs only 304s, and a page changed since costs one 200.
- ``check``: the mirrored numbers missing from the walk, asked about one per page (``GET …/issues/N``).

A page record is stored as one short text, its ETag and its numbers as runs (``sort=created`` lists
them mostly in steps of 1: ``1-100``): about 80 bytes a page whatever the issues (40 kB for 50,000
issues), the ETag being most of it. A step reads and writes them as strings and decodes only the page it
needs (all of them once, at the end of a walk), so a walk costs linear time in its pages.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

#: One listing page of a walk: its ETag (None: the answer had none) and the issue numbers on it.
PageRecord = tuple[str | None, tuple[int, ...]]
#: A page record as the cursor stores it (``page_text``): decoded only when needed, so a step of a walk of
#: 500 pages reads and writes 500 short strings instead of decoding and encoding 50,000 numbers.
PageText = str


@dataclass(frozen=True, slots=True)
class Rec:
    """A repository's reconciliation state (see the module docstring)."""

    at: float
    started: float | None = None
    page: int = 0
    walk: tuple[PageText, ...] = ()
    last: tuple[PageText, ...] = ()
    check: tuple[int, ...] = ()

    @property
    def active(self) -> bool:
        """A reconciliation is under way (a walk, or numbers left to ask about)."""
        return self.page > 0 or bool(self.check)

    def due(self, now: float, every: float) -> bool:
        return not self.active and now >= self.at + every

    def begin(self, now: float) -> Rec:
        return replace(self, started=now, page=1, walk=(), check=())

    def listed(self, record: PageText, *, more: bool) -> Rec:
        """After listing page ``page`` (``more``: another page follows). The end of a walk makes it ``last``;
        what to ask about is then set by ``checking``."""
        walk = (*self.walk, record)
        if more:
            return replace(self, page=self.page + 1, walk=walk)
        return replace(self, page=0, walk=(), last=walk)

    def checking(self, numbers: Sequence[int]) -> Rec:
        """Ask about ``numbers`` next; none: the reconciliation is complete."""
        if not numbers:
            return self.done()
        return replace(self, check=tuple(numbers))

    def checked(self) -> Rec:
        """The first number to ask about was answered."""
        rest = self.check[1:]
        return replace(self, check=rest) if rest else self.done()

    def done(self) -> Rec:
        return replace(self, at=self.started if self.started is not None else self.at, started=None, page=0,
                       walk=(), check=())

    def previous(self, page: int) -> PageRecord | None:
        """Page ``page`` (1-based) of the last complete walk, if it had one."""
        return page_of(self.last[page - 1]) if 0 < page <= len(self.last) else None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"at": self.at}
        if self.started is not None:
            body["started"] = self.started
        if self.page:
            body["page"] = self.page
            body["walk"] = list(self.walk)
        if self.last:
            body["last"] = list(self.last)
        if self.check:
            body["check"] = list(self.check)
        return body

    @classmethod
    def from_json(cls, body: Any) -> Rec:
        """Parse ``to_json`` output; ``ValueError`` on anything else."""
        if not isinstance(body, dict):
            raise ValueError("the cursor's reconciliation state is not an object")
        try:
            started = body.get("started")
            return cls(at=float(body["at"]), started=float(started) if started is not None else None,
                       page=int(body.get("page", 0)), walk=_texts(body.get("walk", [])),
                       last=_texts(body.get("last", [])),
                       check=tuple(int(n) for n in body.get("check", ())))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"unreadable reconciliation state in the cursor: {exc}") from None


def page_text(etag: str | None, numbers: Sequence[int]) -> PageText:
    """A page record as stored: ``<ETag><tab><runs>``, runs of consecutive numbers as ``a-b`` (``1-100``)."""
    runs: list[str] = []
    index = 0
    while index < len(numbers):
        first = last = numbers[index]
        index += 1
        while index < len(numbers) and numbers[index] == last + 1:
            last = numbers[index]
            index += 1
        runs.append(str(first) if first == last else f"{first}-{last}")
    return f"{etag or ''}\t{','.join(runs)}"


def page_of(text: PageText) -> PageRecord:
    """``page_text``'s inverse; ``ValueError`` on anything else."""
    etag, tab, runs = text.rpartition("\t")
    if not tab:
        raise ValueError("a page record has no tab")
    numbers: list[int] = []
    for run in filter(None, runs.split(",")):
        first, _, last = run.partition("-")
        numbers.extend(range(int(first), int(last or first) + 1))
    return (etag or None, tuple(numbers))


class NumberSet:
    """Issue numbers as a bitmap: 50,000 numbers in 6 kB (a ``set`` of them takes about 2.5 MB)."""

    def __init__(self, numbers: Iterable[int] = ()) -> None:
        self._bits = bytearray()
        for number in numbers:
            self.add(number)

    def add(self, number: int) -> None:
        if number < 0:
            return
        index = number >> 3
        if index >= len(self._bits):
            self._bits.extend(bytes(index + 1 - len(self._bits)))
        self._bits[index] |= 1 << (number & 7)

    def __contains__(self, number: int) -> bool:
        index = number >> 3
        return number >= 0 and index < len(self._bits) and bool(self._bits[index] & (1 << (number & 7)))


def _texts(value: Any) -> tuple[PageText, ...]:
    if not isinstance(value, list) or not all(isinstance(t, str) and "\t" in t for t in value):
        raise ValueError("pages are not a list of page records")
    return tuple(value)


def missing(pages: Iterable[PageText], mirrored: Iterable[Sequence[int]]) -> list[int]:
    """The mirrored numbers (given in batches) that no page lists, in the order given."""
    listed = NumberSet(n for text in pages for n in page_of(text)[1])
    return [n for batch in mirrored for n in batch if n not in listed]


__all__ = ["NumberSet", "PageRecord", "PageText", "Rec", "missing", "page_of", "page_text"]
