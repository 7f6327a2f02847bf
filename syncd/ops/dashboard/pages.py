"""The dashboard's pages (GET): sources and backfill windows, runs and the queue, the search of the ledger
by object, quarantine. Each reads through ``Reads`` only, one snapshot per page, and renders a template."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from syncd.contracts import QueueStats, SourceRow
from syncd.ops.dashboard.render import page
from syncd.ops.health import SourceHealth, read_states, verdicts

if TYPE_CHECKING:
    from syncd.ops.dashboard import Dashboard

#: Runs per page of the runs list.
PAGE_SIZE = 50
#: Events shown for one search (oldest first).
SEARCH_LIMIT = 100
#: The status filter: what people ask for → the run statuses it means.
STATUS_CHOICES: dict[str, tuple[str, ...]] = {
    "failed": ("failed",), "dead": ("dead",), "sleeping": ("sleeping",), "due": ("pending", "queued"),
    "queued": ("queued",), "pending": ("pending",), "in-flight": ("running",), "succeeded": ("succeeded",),
}
#: The queue's statuses (all indexed by status), shown per workflow.
QUEUE_STATUSES = ("queued", "running", "pending", "sleeping", "failed", "dead")
MAX_NEEDLE = 200


@dataclass(frozen=True)
class SourceView:
    row: SourceRow
    lag_seconds: float | None
    health: SourceHealth | None


def _first(request: Request, name: str) -> str | None:
    value = request.query_params.get(name, "").strip()
    return value or None


def _int(request: Request, name: str) -> int:
    raw = request.query_params.get(name, "")
    return int(raw) if raw.isdigit() and len(raw) < 9 else 0


class Pages:
    def __init__(self, dashboard: Dashboard) -> None:
        self.dash = dashboard

    def _common(self, request: Request, **context: Any) -> dict[str, Any]:
        return {"signed_in_with_token": self.dash.token is not None, "path": request.url.path, **context}

    def _sources(self) -> tuple[list[SourceView], list[SourceRow], QueueStats]:
        dash = self.dash
        with dash.reads.snapshot() as snap:
            queue = snap.queue(dash.now())
            rows = snap.sources()
            lags = {row.key: (tick.lag_seconds if (tick := snap.last_tick(row.key)) else None) for row in rows}
            health = {h.key: h for h in verdicts(read_states(snap, dash.keys), dash.keys, now=dash.now(),
                                                 interval=dash.interval)}
        live = [SourceView(r, lags[r.key], health.get(r.key)) for r in rows if r.kind == "live"]
        return live, [r for r in rows if r.kind != "live"], queue

    def sources(self, request: Request) -> Response:
        live, windows, queue = self._sources()
        now = self.dash.now()
        return page("sources.html", **self._common(request, sources=live, windows=windows, now=now, queue=queue,
                                                   oldest_age=queue.oldest_age(now)))

    def sources_fragment(self, request: Request) -> Response:
        live, _, _ = self._sources()
        return page("sources_table.html", sources=live, now=self.dash.now())

    def runs(self, request: Request) -> Response:
        status, workflow, source = _first(request, "status"), _first(request, "workflow"), _first(request, "source")
        statuses = STATUS_CHOICES.get(status or "")
        offset = _int(request, "page") * PAGE_SIZE
        streams = [source] if source else None
        with self.dash.reads.snapshot() as snap:
            rows = snap.runs(statuses=statuses, workflow=workflow, streams=streams, limit=PAGE_SIZE + 1,
                             offset=offset)
            queue = snap.workflow_run_counts(QUEUE_STATUSES)
            keys = [row.key for row in snap.sources() if row.kind == "live"]
        dead = _dead(queue, workflow, source)
        workflows = sorted({w.name for w in self.dash.engine.registry.all()} | {w for w, _, _ in queue})
        query = {k: v for k, v in (("status", status), ("workflow", workflow), ("source", source)) if v}
        return page("runs.html", **self._common(
            request, runs=rows[:PAGE_SIZE], more=len(rows) > PAGE_SIZE, page=offset // PAGE_SIZE, query=query,
            status=status if statuses else None, unknown_status=status if status and not statuses else None,
            workflow=workflow, source=source, choices=list(STATUS_CHOICES), workflows=workflows, streams=keys,
            queue=_queue_table(queue), queue_statuses=QUEUE_STATUSES, dead=dead,
            replayed=_first(request, "replayed"), succeeded=_first(request, "succeeded"),
            retried=_first(request, "retried"),
            jaeger_url=self.dash.jaeger_url, back=str(request.url.path) + (f"?{request.url.query}" if
                                                                         request.url.query else "")))

    def confirm_replay_all(self, request: Request) -> Response:
        workflow, source = _first(request, "workflow"), _first(request, "source")
        dead = _dead(self.dash.reads.workflow_run_counts(["dead"]), workflow, source)
        return page("confirm.html", **self._common(request, workflow=workflow, source=source, dead=dead))

    def events(self, request: Request) -> Response:
        needle = (_first(request, "q") or "")[:MAX_NEEDLE]
        found = self.dash.reads.event_history(needle, SEARCH_LIMIT) if needle else []
        return page("events.html", **self._common(request, q=needle, events=found, limit=SEARCH_LIMIT,
                                                  jaeger_url=self.dash.jaeger_url))

    def quarantine(self, request: Request) -> Response:
        total, rows = self.dash.reads.quarantined(100)
        return page("quarantine.html", **self._common(request, total=total, rows=rows))


def _queue_table(counts: dict[tuple[str, str, str], int]) -> list[tuple[str, dict[str, int]]]:
    """(workflow, {status: runs of every stream}) by workflow name."""
    table: dict[str, dict[str, int]] = {}
    for (workflow, _, status), n in counts.items():
        per_status = table.setdefault(workflow, {})
        per_status[status] = per_status.get(status, 0) + n
    return sorted(table.items())


def _dead(counts: dict[tuple[str, str, str], int], workflow: str | None, source: str | None) -> int:
    """Dead runs of ``workflow`` and ``source`` (None: any) in ``workflow_run_counts``' answer."""
    return sum(n for (w, stream, status), n in counts.items()
               if status == "dead" and workflow in (None, w) and source in (None, stream))
