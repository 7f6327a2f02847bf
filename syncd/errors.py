"""syncd's error hierarchy, grouped by what the caller should do.

::

    SyncdError
    ├── ConfigError            bad or missing setting: exit 2, names the variable
    ├── ConnectorError         talking to a provider failed
    │   ├── RetryableError     try again later (429, 5xx, network); ``retry_after`` seconds if the provider said
    │   └── FatalError         retrying will not help until someone acts
    │       └── AuthError      credentials rejected (401/403)
    ├── EventError             a workflow cannot apply one event: its run fails like any other (retried,
    │                          then dead-lettered); the stream goes on
    ├── CursorStuckError       the provider says there is more but the cursor did not move
    │   └── CursorCycleError   … or it moved back to a cursor already fetched in this tick (pages cycle)
    └── LeaseLostError         another replica took this source's lease; our page is rolled back

Messages are built in ``__init__`` from safe context only; secrets are never part of an error.
"""

from __future__ import annotations


class SyncdError(Exception):
    """Base of every error syncd raises on purpose."""


class ConfigError(SyncdError):
    """A setting is missing or malformed. ``variable`` names it."""

    def __init__(self, variable: str, problem: str) -> None:
        self.variable = variable
        self.problem = problem
        super().__init__(f"{variable}: {problem}")


class ConnectorError(SyncdError):
    """A provider request failed. ``source`` is the source key (e.g. ``workos``)."""

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        super().__init__(f"{source}: {message}")


class RetryableError(ConnectorError):
    """Transient: rate limit, 5xx, timeout, connection error. ``retry_after`` is seconds, when known."""

    def __init__(self, source: str, message: str, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(source, message)


class FatalError(ConnectorError):
    """Retrying will not help (bad request, unknown repository, malformed response contract)."""


class AuthError(FatalError):
    """The provider rejected the credentials."""


class EventError(SyncdError):
    """A workflow cannot apply one event (e.g. a mirror's snapshot without its id).

    Raised from a workflow, it is a run failure like any other exception: the run is recorded
    ``failed``, retried with backoff up to its attempts, then ``dead`` (listed by ``syncd status``,
    re-run by ``syncd replay``); the event stays in the ledger and the cursor has already moved on.
    (Events a connector cannot parse at all never reach a workflow: it drops them and counts them in
    ``Page.skipped``.)
    """


class CursorStuckError(SyncdError):
    """The provider reported more pages but the cursor did not advance (a loop guard)."""

    def __init__(self, source: str, cursor: str | None) -> None:
        self.source = source
        self.cursor = cursor
        super().__init__(f"{source}: provider says there is more, but the cursor did not move from {cursor!r}")


class CursorCycleError(CursorStuckError):
    """The provider's pages cycle: a page led back to a cursor already fetched in this tick (a loop guard)."""

    def __init__(self, source: str, cursor: str | None, pages: int) -> None:
        self.source, self.cursor, self.pages = source, cursor, pages
        shown = cursor if cursor is None or len(cursor) <= 60 else cursor[:60] + "…"
        SyncdError.__init__(self, f"{source}: the provider's pages cycle: cursor {shown!r} came back after {pages} "
                                  "page(s) of this tick; the tick stopped there (earlier pages are committed). "
                                  f"If it persists: syncd cursor reset {source.split('@')[0]} --to TIME")


class ClaimLostError(SyncdError):
    """A worker's claim on a run was taken over (it was frozen past its expiry, or seen dead); what the run
    did in this attempt was rolled back, and the new holder runs it."""

    def __init__(self, run: str) -> None:
        self.run = run
        super().__init__(f"{run}: claim lost to another worker; this attempt rolled back, nothing committed")


class LeaseLostError(SyncdError):
    """This replica no longer holds the source's lease; the page in hand was rolled back."""

    def __init__(self, source: str) -> None:
        self.source = source
        super().__init__(f"{source}: lease lost to another replica; page rolled back, nothing committed")
