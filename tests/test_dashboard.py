"""The dashboard over real HTTP (issue #22): access rules, actions, search and what pages never show.

Real things only: a WorkOS simulator over loopback, real SQLite and PostgreSQL, the real replay path, the
server ``syncd run`` starts (``HealthServer`` with a ``Dashboard``), and ``syncd ui`` as a subprocess.
The browser flows are in ``test_dashboard_browser.py``.
"""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from connectors import workos
from simulators.workos import WorkOSSimulator
from syncd.contracts import Event
from syncd.errors import ConfigError
from syncd.ops.app import App
from syncd.ops.dashboard import dashboard_for
from syncd.ops.http import HealthServer, Monitor
from syncd.settings import Settings
from syncd.store.tables import events as ledger
from syncd.store.tables import runs, sources
from syncd.workflows import Context, Registry
from tests.conftest import WORKOS_KEY, settings_for, workos_env

UI_TOKEN = "ui-token-sentinel-7c1d9e2b44"
#: A workflow's error quoting an integration URL with a secret path and query: shown redacted, never whole.
HOOK_SECRET = "T0SECRETHOOKPATH"
HOOK_URL = f"https://hooks.example.com/services/{HOOK_SECRET}?token=qs-secret-91"
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")


_clients: list[httpx.Client] = []


def client_for(url: str) -> httpx.Client:
    """An HTTP client closed at the end of the test (``_close_clients``)."""
    client = httpx.Client(base_url=url, timeout=30)
    _clients.append(client)
    return client


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _clients:
        _clients.pop().close()


@dataclass
class Fixture:
    """One synced database with dead runs, and the dashboard serving it."""

    app: App
    server: HealthServer
    broken: dict[str, bool]

    @property
    def url(self) -> str:
        return self.server.url


def failing_registry(broken: dict[str, bool]) -> Registry:
    """A ``welcome`` workflow on user.created that fails (quoting an integration URL) while ``broken["on"]``;
    one attempt, so each failure is a dead run at once."""
    registry = Registry()

    @registry.workflow("welcome", on=workos.events("user.created"), retries=1)
    def welcome(event: Event, ctx: Context) -> None:
        if broken["on"]:
            raise RuntimeError(f"posting to {HOOK_URL} failed: 500")

    return registry


def start_dashboard(db_url: str, sim: WorkOSSimulator, apps: list[App], *, host: str = "127.0.0.1",
                    **env: str) -> Fixture:
    """Sync ``sim`` once into ``db_url`` (the welcome runs die), then serve the dashboard on ``host``."""
    broken = {"on": True}
    settings = settings_for(db_url, SYNCD_UI_TOKEN=UI_TOKEN, **workos_env(sim), **env)
    app = App.build(settings, registry=failing_registry(broken))
    apps.append(app)
    assert app.tick_all()[0].ok
    monitor = Monitor(app.reads, ["workos"], interval=60)
    server = HealthServer(monitor, host=host, port=0, dashboard=dashboard_for(settings, app, host=host))
    server.start()
    return Fixture(app, server, broken)


@pytest.fixture
def served(db_url: str, workos_sim: WorkOSSimulator, apps: list[App]) -> Iterator[Fixture]:
    fixture = start_dashboard(db_url, workos_sim, apps)
    yield fixture
    fixture.server.stop()


def signed_in(fixture: Fixture) -> httpx.Client:
    client = client_for(fixture.url)
    answer = client.post("/signin", data={"token": UI_TOKEN, "next": "/runs"}, headers={"Origin": fixture.url})
    assert answer.status_code == 303 and answer.headers["location"] == "/runs"
    return client


def dead_runs(app: App) -> list[tuple[str, str, str]]:
    with app.db.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(runs.c.workflow, runs.c.stream, runs.c.event_id)
                                               .where(runs.c.status == "dead").order_by(runs.c.event_id))]


def paused(app: App, key: str = "workos") -> bool:
    with app.db.connect() as conn:
        return conn.execute(sa.select(sources.c.paused_until).where(sources.c.key == key)).scalar_one() is not None


# ---- access ---------------------------------------------------------------------------------------------

def test_every_page_and_fragment_needs_the_token(served: Fixture) -> None:
    anonymous = client_for(served.url)
    dead = dead_runs(served.app)[0]
    for path in ("/", "/runs", "/runs?status=dead", "/quarantine", f"/events?q={dead[2]}", "/runs/replay-all",
                 "/fragments/sources"):
        answer = anonymous.get(path)
        assert answer.status_code == 401, path
        text = answer.text
        assert 'type="password"' in text and ">Sign in</button>" in text and ">Token</label>" in text
        assert dead[2] not in answer.text.replace(f"q={dead[2]}", "") and "welcome" not in answer.text
    assert anonymous.get("/fragments/sources", headers={"HX-Request": "true"}).status_code == 401
    # a script may send the token itself
    assert anonymous.get("/runs", headers={"Authorization": f"Bearer {UI_TOKEN}"}).status_code == 200
    assert anonymous.get("/runs", headers={"Authorization": "Bearer wrong-token-0000000"}).status_code == 401
    # the probes stay open, as before
    assert anonymous.get("/healthz").status_code == 200 and anonymous.get("/metrics").status_code == 200


def test_sign_in_with_a_wrong_token_and_a_foreign_next(served: Fixture) -> None:
    client = client_for(served.url)
    wrong = client.post("/signin", data={"token": "not-the-token-at-all", "next": "/"}, headers={"Origin": served.url})
    assert wrong.status_code == 401 and "not the right one" in wrong.text
    assert "syncd_ui_session" not in wrong.headers.get("set-cookie", "")
    right = client.post("/signin", data={"token": UI_TOKEN, "next": "//evil.example/x"}, headers={"Origin": served.url})
    assert right.status_code == 303 and right.headers["location"] == "/"
    cookie = right.headers["set-cookie"]
    assert UI_TOKEN not in cookie and "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    assert client.get("/").status_code == 200
    assert client.post("/signout", headers={"Origin": served.url}).status_code == 303
    assert client.get("/").status_code == 401


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},
    {"Origin": "null"},
    {"Referer": "http://evil.example/page"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
    {},  # a browser always sends Origin on a POST; a cookie without one is not trusted
], ids=["origin", "null-origin", "referer", "cross-site", "same-site", "none"])
def test_a_cross_site_post_changes_nothing_and_keeps_the_session(served: Fixture, headers: dict[str, str]) -> None:
    client = signed_in(served)
    dead = dead_runs(served.app)
    served.broken["on"] = False
    workflow, stream, event_id = dead[0]
    for path, data in (("/actions/pause", {"key": "workos"}),
                       ("/actions/replay", {"workflow": workflow, "stream": stream, "event_id": event_id}),
                       ("/actions/replay-all", {}), ("/signout", {})):
        answer = client.post(path, data=data, headers=headers)
        assert answer.status_code == 403, (path, answer.text)
        assert "nothing was changed" in answer.text
    assert not paused(served.app) and dead_runs(served.app) == dead
    assert client.get("/runs").status_code == 200  # still signed in
    # without the session at all: 401, nothing changed
    anonymous = client_for(served.url)
    assert anonymous.post("/actions/pause", data={"key": "workos"}, headers={"Origin": served.url}).status_code == 401
    assert not paused(served.app)


def test_pause_and_resume_from_the_same_origin(served: Fixture) -> None:
    client = signed_in(served)
    answer = client.post("/actions/pause", data={"key": "workos"}, headers={"Origin": served.url})
    assert answer.status_code == 303 and paused(served.app)
    page = client.get("/").text
    assert "paused until" in page and "Resume workos" in page
    skipped = served.app.tick_all()[0]
    assert skipped.skip is not None and skipped.skip.reason.value == "paused"
    assert client.post("/actions/resume", data={"key": "workos"}, headers={"Origin": served.url}).status_code == 303
    assert not paused(served.app) and served.app.tick_all()[0].ok


def test_without_a_token_only_on_loopback(sqlite_url: str, workos_sim: WorkOSSimulator, apps: list[App],
                                          caplog: pytest.LogCaptureFixture) -> None:
    settings = settings_for(sqlite_url, **workos_env(workos_sim))
    app = App.build(settings, registry=Registry())
    apps.append(app)
    assert app.tick_all()[0].ok
    monitor = Monitor(app.reads, ["workos"], interval=60)
    with caplog.at_level(logging.WARNING, logger="syncd.health"), \
            HealthServer(monitor, host="0.0.0.0", port=0, dashboard=dashboard_for(settings, app)) as server:
        port = server.url.rsplit(":", 1)[1]
        local = client_for(f"http://127.0.0.1:{port}")
        assert local.get("/").status_code == 404 and local.get("/runs").status_code == 404
        assert local.get("/healthz").status_code == 200
    assert any("dashboard off: SYNCD_HTTP_HOST is 0.0.0.0" in r.getMessage() and "SYNCD_UI_TOKEN is not set"
               in r.getMessage() for r in caplog.records)
    dashboard = dashboard_for(settings, app, host="127.0.0.1")
    with HealthServer(monitor, host="127.0.0.1", port=0, dashboard=dashboard) as server:
        client = client_for(server.url)
        assert client.get("/").status_code == 200 and "workos" in client.get("/").text
        # a page elsewhere cannot reach it by DNS rebinding: its Host is not a loopback name
        assert client.get("/", headers={"Host": "rebind.example"}).status_code == 403
        assert client.post("/actions/pause", data={"key": "workos"},
                           headers={"Origin": "http://evil.example"}).status_code == 403
        assert client.post("/actions/pause", data={"key": "workos"}, headers={"Origin": server.url}).status_code == 303
    assert paused(app)


def test_a_short_token_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="SYNCD_UI_TOKEN"):
        Settings.from_env({"SYNCD_UI_TOKEN": "short"})
    assert UI_TOKEN not in repr(Settings.from_env({"SYNCD_UI_TOKEN": UI_TOKEN}))


# ---- actions and pages ----------------------------------------------------------------------------------

def test_replay_without_javascript_turns_a_dead_run_succeeded(served: Fixture) -> None:
    client = signed_in(served)
    dead = dead_runs(served.app)
    assert len(dead) > 3
    workflow, stream, event_id = dead[0]
    served.broken["on"] = False  # the workflow is fixed
    answer = client.post("/actions/replay", headers={"Origin": served.url},
                         data={"workflow": workflow, "stream": stream, "event_id": event_id,
                               "back": "/runs?status=dead"})
    assert answer.status_code == 303 and answer.headers["location"] == "/runs?status=dead&replayed=1&succeeded=1"
    assert "Replayed 1 dead run(s): 1 succeeded." in client.get(answer.headers["location"]).text
    assert dead_runs(served.app) == dead[1:]
    history = client.get("/events", params={"q": event_id}).text
    assert re.search(r'<td>welcome</td><td><span class="status succeeded">succeeded</span></td>\s*<td>2</td>',
                     history)
    # bulk: a confirmation page first, then every dead run of the filter
    confirm = client.get("/runs/replay-all", params={"workflow": "welcome"}).text
    assert f"Confirm: replay all {len(dead) - 1}" in confirm
    done = client.post("/actions/replay-all", data={"workflow": "welcome", "source": ""},
                       headers={"Origin": served.url})
    assert done.status_code == 303 and f"replayed={len(dead) - 1}&succeeded={len(dead) - 1}" in done.headers["location"]
    assert dead_runs(served.app) == []


def test_runs_filters_and_queue(served: Fixture) -> None:
    client = signed_in(served)
    dead = dead_runs(served.app)
    page = client.get("/runs", params={"status": "dead"}).text
    shown = re.findall(r'name="event_id" value="([^"]+)"', page)
    assert shown == sorted(e for _, _, e in dead)[: len(shown)] and 0 < len(shown) <= 50
    assert len(re.findall(r">Replay welcome on ", page)) == len(shown)
    assert f"Replay all {len(dead)} dead run(s)" in page
    assert re.search(rf"<tr><td>welcome</td>(<td>0</td>){{5}}<td>{len(dead)}</td></tr>", page)  # the queue table
    assert "No run matches." in client.get("/runs", params={"status": "sleeping"}).text
    assert client.get("/runs", params={"status": "dead", "workflow": "nope"}).text.count(">Replay ") == 0
    succeeded = client.get("/runs", params={"status": "succeeded", "workflow": "welcome"}).text
    assert "No run matches." in succeeded


def test_search_finds_every_event_of_one_object_oldest_first(served: Fixture) -> None:
    with served.app.db.connect() as conn:
        rows = list(conn.execute(sa.select(ledger.c.event_id, ledger.c.payload, ledger.c.occurred_at)))
    counts: dict[str, list[tuple[Any, str]]] = {}
    for event_id, payload, occurred_at in rows:
        for value in set(_strings(payload)):
            if value.startswith("user_"):
                counts.setdefault(value, []).append((occurred_at, event_id))
    user, about = max(counts.items(), key=lambda item: len(item[1]))  # the user with the most events
    assert len(about) >= 3
    client = signed_in(served)
    page = client.get("/events", params={"q": user}).text
    shown = re.findall(r"event <code>([^<]+)</code>", page)
    assert shown == [e for _, e in sorted(about)]
    assert f"{len(about)} event(s), oldest first" in page
    assert client.get("/events", params={"q": user[:-1]}).text.count("<article") == 0  # a prefix is not the id
    first = client.get("/events", params={"q": about[0][1]}).text  # an event id finds its event
    assert re.findall(r"event <code>([^<]+)</code>", first) == [about[0][1]]


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def test_no_secret_in_any_page_and_emails_only_in_the_event_view(served: Fixture) -> None:
    client = signed_in(served)
    dead = dead_runs(served.app)
    pages = {path: client.get(path).text for path in (
        "/", "/fragments/sources", "/runs", "/runs?status=dead", "/runs?status=succeeded", "/quarantine",
        "/runs/replay-all", "/signin", f"/events?q={dead[0][2]}")}
    for path, text in pages.items():
        for secret in (UI_TOKEN, WORKOS_KEY, HOOK_SECRET, "qs-secret-91"):
            assert secret not in text, (path, secret)
        if not path.startswith("/events"):
            assert not EMAIL.findall(text), (path, EMAIL.findall(text)[:3])
    assert "https://hooks.example.com/…" in pages["/runs?status=dead"]  # the error, redacted as elsewhere
    assert EMAIL.search(pages[f"/events?q={dead[0][2]}"])  # operators see the payload there


# ---- syncd ui -------------------------------------------------------------------------------------------

def test_syncd_ui_serves_a_database_without_syncing(sqlite_url: str, workos_sim: WorkOSSimulator,
                                                    apps: list[App], tmp_path: Path) -> None:
    fixture = start_dashboard(sqlite_url, workos_sim, apps)
    fixture.server.stop()
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": sqlite_url, "SYNCD_UI_TOKEN": UI_TOKEN, "LOG_FORMAT": "text"}
    proc = subprocess.Popen([sys.executable, "-m", "syncd", "ui", "--port", "0"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        url = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
        assert url, line
        client = client_for(url.group(1))
        assert client.get("/runs").status_code == 401
        page = client.get("/runs?status=dead", headers={"Authorization": f"Bearer {UI_TOKEN}"}).text
        assert len(re.findall(r">Replay welcome on ", page)) > 0  # dead runs; the workflow is unregistered here
        ticks = _ticks(fixture.app)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert _ticks(fixture.app) == ticks  # it never synced


def _ticks(app: App) -> int:
    with app.db.connect() as conn:
        return int(conn.execute(sa.text("select count(*) from syncd_ticks")).scalar_one())


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--host", "0.0.0.0"], {}, "SYNCD_UI_TOKEN: SYNCD_HTTP_HOST is 0.0.0.0, not a loopback address"),
    (["--port", "70000"], {}, "--port must be 0 to 65535"),
    ([], {"DATABASE_URL": "sqlite:///nowhere/x.db"}, "DATABASE_URL: no database at nowhere/x.db"),
])
def test_syncd_ui_bad_usage_exits_2(sqlite_url: str, tmp_path: Path, args: list[str], env: dict[str, str],
                                    message: str, migrated: Callable[[str], None]) -> None:
    migrated(sqlite_url)
    full = {"PATH": "/usr/bin:/bin", "DATABASE_URL": sqlite_url, **env}
    done = subprocess.run([sys.executable, "-m", "syncd", "ui", "--port", "0", *args], env=full, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr, done.stderr


@pytest.fixture
def migrated() -> Callable[[str], None]:
    def migrate(url: str) -> None:
        from syncd.store.db import create_engine
        from syncd.store.schema import migrate as run

        db = create_engine(url)
        run(db)
        db.dispose()

    return migrate


def test_pages_render_json_of_steps(served: Fixture) -> None:
    """Pretty, collapsible payloads: the event view's payload is valid JSON once unescaped."""
    client = signed_in(served)
    event_id = dead_runs(served.app)[0][2]
    page = client.get("/events", params={"q": event_id}).text
    body = re.search(r"<details><summary>Payload</summary><pre>(.*?)</pre></details>", page, re.S)
    assert body is not None
    import html

    assert json.loads(html.unescape(body.group(1)))["object"] == "user"


def test_syncd_run_serves_the_dashboard_beside_the_probes(workos_sim: WorkOSSimulator, tmp_path: Path) -> None:
    import socket
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": f"sqlite:///{tmp_path / 'run.db'}", "LOG_FORMAT": "text",
           "SYNCD_HTTP_HOST": "127.0.0.1", "SYNCD_HTTP_PORT": str(port), "SYNCD_UI_TOKEN": UI_TOKEN,
           **workos_env(workos_sim)}
    proc = subprocess.Popen([sys.executable, "-m", "syncd", "run"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        client = client_for(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        while True:  # until the first tick has succeeded
            try:
                if client.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "syncd run did not become healthy"
            time.sleep(0.1)
        assert client.get("/").status_code == 401
        page = client.get("/", headers={"Authorization": f"Bearer {UI_TOKEN}"})
        assert page.status_code == 200 and "Pause workos" in page.text
        assert "syncd_source_healthy" in client.get("/metrics").text
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and UI_TOKEN not in err


def test_sources_page_shows_backfill_windows_with_progress(served: Fixture) -> None:
    from syncd.contracts import Window
    from syncd.engine import Target
    from syncd.ops.backfill import drive, window_engine

    app = served.app
    with app.db.connect() as conn:
        times = sorted(conn.execute(sa.select(ledger.c.occurred_at)).scalars())
    window = Window(times[100], times[200])
    result = drive(window_engine(app, None), Target(app.connectors[0], window, "welcome"))
    assert result.state == "done"
    page = signed_in(served).get("/").text
    row = re.search(r"<tr>\s*<td><code>(workos[^<]+)</code></td>(.*?)</tr>", page, re.S)
    assert row is not None, page
    assert row.group(1).startswith("workos") and row.group(1) != "workos"  # the window's own cursor key
    assert window.start.strftime("%Y-%m-%d %H:%M:%S") in row.group(2) and "welcome" in row.group(2)
    assert 'value="100"' in row.group(2) and "100%" in row.group(2) and "<td>done</td>" in row.group(2)
