"""The dashboard's trace links (issue #22, item 5): with ``SYNCD_JAEGER_URL`` set, each run on the runs page and
in the event view links to ``<jaeger>/trace/<trace id>``, the trace id the run stored when it ran.

Real trace ids: ``syncd once`` runs in a subprocess exporting to a real OTLP receiver on loopback, so its runs
store the ids of real traces; the link's target is a tiny loopback server that records the paths asked of it
(the browser test clicks through to it, ``test_dashboard_browser.py``).
"""

from __future__ import annotations

import contextlib
import html
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from simulators.workos import WorkOSSimulator
from syncd.ops.app import App
from syncd.ops.dashboard import dashboard_for
from syncd.ops.http import HealthServer, Monitor
from syncd.store.tables import runs
from syncd.workflows import Registry
from tests.conftest import WORKOS_KEY, settings_for, workos_env
from tests.otlp_receiver import OTLPReceiver
from tests.test_dashboard import UI_TOKEN

ROOT = Path(__file__).resolve().parents[1]

TRACED_WORKFLOW = '''
from connectors import workos
from syncd import workflow


@workflow(name="traced", on=workos.events("user.created"))
def traced(event, ctx):
    pass
'''


@dataclass
class FakeJaeger:
    """A loopback server standing in for Jaeger's UI: it records every path asked of it."""

    url: str = ""
    paths: list[str] = field(default_factory=list)


@pytest.fixture
def jaeger() -> Iterator[FakeJaeger]:
    with fake_jaeger() as fake:
        yield fake


@contextlib.contextmanager
def fake_jaeger() -> Iterator[FakeJaeger]:
    fake = FakeJaeger()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            fake.paths.append(self.path)
            body = b"<!doctype html><title>trace</title><h1>a trace</h1>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}/jaeger"  # under a path, as behind a proxy
    yield fake
    server.shutdown()
    server.server_close()


def traced_database(db_url: str, sim: WorkOSSimulator, tmp_path: Path) -> None:
    """``syncd once`` into ``db_url``, exporting its spans to a real OTLP receiver (so runs store trace ids)."""
    (tmp_path / "trace_wf.py").write_text(TRACED_WORKFLOW)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]), "PYTHONDONTWRITEBYTECODE": "1",
           "SYNCD_HTTP_PORT": "0", "DATABASE_URL": db_url, "WORKOS_API_KEY": WORKOS_KEY,
           "WORKOS_BASE_URL": sim.url, "SYNCD_WORKFLOWS": "trace_wf", "SYNCD_BUILTINS": "none"}
    with OTLPReceiver() as rx:
        done = subprocess.run([sys.executable, "-m", "syncd", "once"], cwd=tmp_path, capture_output=True, text=True,
                              timeout=120, env={**env, "OTEL_EXPORTER_OTLP_ENDPOINT": rx.url}, check=False)
        assert done.returncode == 0, done.stderr
        exported = {s.trace_id for s in rx.spans}
    stored = stored_traces(db_url)
    assert stored and set(stored.values()) <= exported  # the ids of traces that were really exported


def stored_traces(db_url: str) -> dict[str, str]:
    """Event id → the trace id its ``traced`` run stored."""
    db = sa.create_engine(db_url)
    try:
        with db.connect() as conn:
            return {r.event_id: r.trace_id for r in conn.execute(
                sa.select(runs.c.event_id, runs.c.trace_id).where(runs.c.workflow == "traced")) if r.trace_id}
    finally:
        db.dispose()


@dataclass
class Served:
    app: App
    server: HealthServer

    @property
    def url(self) -> str:
        return self.server.url


def serve(db_url: str, sim: WorkOSSimulator, apps: list[App], jaeger_url: str) -> Served:
    settings = settings_for(db_url, SYNCD_UI_TOKEN=UI_TOKEN, SYNCD_JAEGER_URL=jaeger_url, **workos_env(sim))
    app = App.build(settings, registry=Registry())
    apps.append(app)
    server = HealthServer(Monitor(app.reads, ["workos"], interval=60), host="127.0.0.1", port=0,
                          dashboard=dashboard_for(settings, app))
    server.start()
    return Served(app, server)


@pytest.fixture
def traced(db_url: str, workos_sim: WorkOSSimulator, apps: list[App], jaeger: FakeJaeger,
           tmp_path: Path) -> Iterator[Served]:
    traced_database(db_url, workos_sim, tmp_path)
    served = serve(db_url, workos_sim, apps, jaeger.url)
    yield served
    served.server.stop()


def trace_links(page: str) -> dict[str, str]:
    """Event id → the href of its row's trace link (runs page)."""
    found: dict[str, str] = {}
    for row in re.findall(r"<tr>(.*?)</tr>", page, re.S):
        event = re.search(r'name="event_id" value="([^"]+)"|<a href="/events\?q=([^"]+)">', row)
        link = re.search(r'<a href="([^"]+)" rel="noreferrer">trace</a>', row)
        if event and link:
            found[event.group(1) or event.group(2)] = html.unescape(link.group(1))
    return found


def test_runs_and_event_view_link_to_the_stored_trace(traced: Served, jaeger: FakeJaeger, db_url: str) -> None:
    stored = stored_traces(db_url)
    headers = {"Authorization": f"Bearer {UI_TOKEN}"}
    with httpx.Client(base_url=traced.url, timeout=30, headers=headers) as client:
        links = trace_links(client.get("/runs", params={"workflow": "traced"}).text)
        assert len(links) == min(50, len(stored))
        for event_id, href in links.items():
            assert href == f"{jaeger.url}/trace/{stored[event_id]}"
        event_id = sorted(stored)[0]
        view = client.get("/events", params={"q": event_id}).text
        assert re.findall(r'<a href="([^"]+)" rel="noreferrer">trace</a>', view) == [
            f"{jaeger.url}/trace/{stored[event_id]}"]


def test_without_jaeger_url_no_trace_link(db_url: str, workos_sim: WorkOSSimulator, apps: list[App],
                                          tmp_path: Path) -> None:
    traced_database(db_url, workos_sim, tmp_path)
    settings = settings_for(db_url, SYNCD_UI_TOKEN=UI_TOKEN, **workos_env(workos_sim))
    app = App.build(settings, registry=Registry())
    apps.append(app)
    with HealthServer(Monitor(app.reads, ["workos"], interval=60), host="127.0.0.1", port=0,
                      dashboard=dashboard_for(settings, app)) as server, \
            httpx.Client(base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {UI_TOKEN}"}) as client:
        page = client.get("/runs").text
        assert "traced" in page and ">trace</a>" not in page
