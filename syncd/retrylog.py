"""Retry lines an operator can read: what is retried, attempt k of n, and the wait.

stamina's own hook logs a bare ``stamina.retry_scheduled`` with the details in extras a text log drops.
:func:`install` replaces it (for every stamina retry in the process) with one WARNING line such as::

    retrying workos (api.workos.com): attempt 2 of 4 in 0.4s after: workos: timed out talking to the provider

``syncd.http.with_retries`` opens a :func:`scope` (the number of attempts) and ``syncd.http.send`` fills in
the host it talks to. Retries outside a scope (a workflow step's) name the step when there is one.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("syncd.retry")


@dataclass
class Scope:
    """What a retry loop retries: its attempts, and the source and host of the request in flight."""

    attempts: int
    source: str | None = None
    host_of: Callable[[], str | None] | None = None  # found only when a retry is logged (a URL join costs)

    @property
    def host(self) -> str | None:
        return self.host_of() if self.host_of is not None else None

    def what(self) -> str:
        host = self.host
        if self.source and host:
            return f"{self.source} ({host})"
        return self.source or host or "a provider request"


_current: contextvars.ContextVar[Scope | None] = contextvars.ContextVar("syncd_retry_scope", default=None)
_lock = threading.Lock()


@contextlib.contextmanager
def scope(attempts: int) -> Iterator[Scope]:
    """The retry loop in this block makes at most ``attempts`` attempts."""
    current = Scope(attempts)
    token = _current.set(current)
    try:
        yield current
    finally:
        _current.reset(token)


def note_request(source: str, host_of: Callable[[], str | None]) -> None:
    """The request about to be sent (and maybe retried) in the current scope goes to ``host_of()``."""
    current = _current.get()
    if current is not None:
        current.source, current.host_of = source, host_of


def describe(retry_num: int, wait_for: float, caused_by: BaseException, current: Scope | None,
             step: str | None = None) -> str:
    """The retry line (pure, for tests): what, attempt k of n, wait, why."""
    attempt = retry_num + 1  # stamina counts retries from 1 after the first failure
    if current is not None:
        what, of = current.what(), f" of {current.attempts}"
    else:
        what, of = (f"step {step!r}" if step else "an operation"), ""
    reason = str(caused_by).strip().splitlines()[0] if str(caused_by).strip() else type(caused_by).__name__
    return f"retrying {what}: attempt {attempt}{of} in {wait_for:.1f}s after: {reason}"


def _hook(details: Any) -> None:
    steps = sys.modules.get("syncd.workflows.steps")
    step_var = getattr(steps, "current_step", None) if steps is not None else None
    step = step_var.get(None) if step_var is not None else None
    log.warning("%s", describe(details.retry_num, details.wait_for, details.caused_by, _current.get(), step),
                extra={"retry_num": details.retry_num, "wait_seconds": round(details.wait_for, 2)})


def install() -> None:
    """Put :func:`_hook` in place of stamina's logging hook, keeping any other hook (metrics, a test's)
    that is installed. Idempotent; a tuple lookup when already in place."""
    from stamina.instrumentation import get_on_retry_hooks, set_on_retry_hooks

    if _hook in get_on_retry_hooks():
        return
    with _lock:
        current = get_on_retry_hooks()
        if _hook not in current:
            kept = [h for h in current if getattr(h, "__module__", "") != "stamina.instrumentation._logging"]
            set_on_retry_hooks([*kept, _hook])
