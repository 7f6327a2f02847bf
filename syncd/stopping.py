"""A stop asked for while ``syncd run`` is still starting.

Python's default SIGTERM handler kills the process (exit -15), and the daemon installs its own only once the
app is built (imports, migrations: a second or more). A container stopped or rolled during that second
would be killed rather than stopped. ``catch_early`` notes the request instead; the daemon's own handlers
(:func:`install_signal_handlers`) pick it up and stop at once, exit 0.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

#: Set by a SIGTERM received before the command's own handlers were installed.
requested = threading.Event()


def catch_early() -> None:
    """Until the daemon installs its handlers, SIGTERM only sets ``requested``."""

    def note(_signum: int, _frame: FrameType | None) -> None:
        requested.set()

    signal.signal(signal.SIGTERM, note)


def install_signal_handlers(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set ``stop`` (the command finishes what it holds and exits); a SIGTERM noted by
    :func:`catch_early` sets it at once. Here, not in ``syncd.ops.scheduler``, so that ``syncd once`` does
    not import APScheduler (about 20 ms of CPU at every start)."""

    def handle(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger("syncd.scheduler").info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
    if requested.is_set():  # a SIGTERM arrived while starting
        logging.getLogger("syncd.scheduler").info("received SIGTERM while starting")
        stop.set()
