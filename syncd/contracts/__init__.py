"""The contracts between syncd's parts, in one place: records, enums and the interfaces that plug in.

Records are frozen: ``Event``, ``Page``, ``Window`` pass between connectors, the engine and workflows;
``SourceRow``, ``RunRecord``, ``DueRun``, ``TickRecord`` and ``Skip`` between the engine and the store.
Interfaces are ``Protocol``s whose docstrings state ordering, fencing and what each method raises:

- ``providers``: ``Connector`` and ``Provider`` (connectors/, found through the ``syncd.connectors``
  entry points), ``Listener``, ``Clock``, and the provider records ``Event``, ``Page``, ``Window``;
- ``records``: the store's records and enums (``RunStatus``, ``SkipReason``);
- ``store``: ``Store`` with its handles ``Lease``, ``PageTxn`` and ``RunTxn`` (syncd/store/ holds the one
  implementation, ``SqlStore``);
- ``reads``: ``Reads``, what status, health, metrics, backfill progress and the dashboard read.

Import from this package (``from syncd.contracts import Store``); the modules only keep each part short.
"""

from __future__ import annotations

from syncd.contracts.providers import (
    Clock,
    Connector,
    Event,
    FakeClock,
    Listener,
    Page,
    Provider,
    Quarantined,
    SystemClock,
    Window,
)
from syncd.contracts.reads import FailedRun, QueueStats, Reads, TickRow, TickStats
from syncd.contracts.records import (
    DUE_STATUSES,
    OPEN_STATUSES,
    ClaimedRun,
    CursorSpec,
    DueRun,
    Recorded,
    RunKey,
    RunRecord,
    RunStatus,
    Skip,
    SkipReason,
    SourceRow,
    TickRecord,
)
from syncd.contracts.store import ClaimTxn, Lease, PageTxn, RunTxn, Store

__all__ = [
    "DUE_STATUSES",
    "OPEN_STATUSES",
    "ClaimTxn",
    "ClaimedRun",
    "Clock",
    "Connector",
    "CursorSpec",
    "DueRun",
    "Event",
    "FailedRun",
    "FakeClock",
    "Lease",
    "Listener",
    "Page",
    "PageTxn",
    "Provider",
    "Quarantined",
    "QueueStats",
    "Reads",
    "Recorded",
    "RunKey",
    "RunRecord",
    "RunStatus",
    "RunTxn",
    "Skip",
    "SkipReason",
    "SourceRow",
    "Store",
    "SystemClock",
    "TickRecord",
    "TickRow",
    "TickStats",
    "Window"
]
