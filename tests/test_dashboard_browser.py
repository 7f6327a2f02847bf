"""The dashboard in a real browser (issue #22): Playwright drives Debian's Chromium (``make test`` installs it
when root, like PostgreSQL; with ``CI=true`` these tests must run, never skip).

One flow, as an operator walks it: sign in with the token, see the sources, find a dead run, fix the
workflow, click Replay and see it succeed (the real replay path), search a user id and see all its events;
and a cross-site form post, from a page the same browser opens on another origin, refused with nothing
changed. ``SYNCD_SCREENSHOTS=DIR`` keeps the screenshots the flow takes (the README's come from here).
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from simulators.workos import WorkOSSimulator
from syncd.ops.app import App
from syncd.store.tables import events as ledger
from syncd.store.tables import runs
from tests.conftest import WORKOS_KEY
from tests.test_dashboard import UI_TOKEN, Fixture, _strings, dead_runs, paused, start_dashboard
from tests.test_dashboard_queue import Queue, queue_on, statuses
from tests.test_dashboard_trace import FakeJaeger, fake_jaeger, serve, stored_traces, traced_database

CHROMIUM = os.environ.get("SYNCD_CHROMIUM", "/usr/bin/chromium")
#: Headless, no sandbox (containers run as root), and nothing that reaches beyond loopback on its own.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_unavailable_reason() -> str | None:
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} not found (as root, `make test` installs Debian's chromium package)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    return None


def require_chromium() -> None:
    """Skip without Chromium locally; fail with CI=true (CI must run the browser tests)."""
    reason = chromium_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true requires the browser tests to run, but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """A fresh Chromium profile; yields Playwright's browser context."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900})
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def served(sqlite_url: str, workos_sim: WorkOSSimulator, apps: list[App]) -> Iterator[Fixture]:
    fixture = start_dashboard(sqlite_url, workos_sim, apps)
    yield fixture
    fixture.server.stop()


@pytest.fixture
def queue(sqlite_url: str, workos_sim: WorkOSSimulator, apps: list[App]) -> Iterator[Queue]:
    with queue_on(sqlite_url, workos_sim, apps) as served:
        yield served


@pytest.fixture
def jaeger() -> Iterator[FakeJaeger]:
    with fake_jaeger() as fake:
        yield fake


class _Attacker(BaseHTTPRequestHandler):
    """Another origin's page that posts a form to the dashboard as soon as it loads."""

    target = ""

    def do_GET(self) -> None:
        body = (f'<!doctype html><form id="f" method="post" action="{self.target}/actions/pause">'
                '<input name="key" value="workos"></form>'
                "<script>document.getElementById('f').submit()</script>").encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def attacker(served: Fixture) -> Iterator[str]:
    handler = type("Attacker", (_Attacker,), {"target": served.url})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def shoot(page: Any, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    keep = os.environ.get("SYNCD_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)


def test_operator_signs_in_replays_a_dead_run_and_searches_a_user(browser: Any, served: Fixture,
                                                                  tmp_path: Path) -> None:
    from playwright.sync_api import expect

    page = browser.new_page()
    texts: list[str] = []
    page.on("response", lambda r: texts.append(r.text()) if "text/html" in r.headers.get("content-type", "")
            else None)

    first = page.goto(served.url + "/")
    assert first is not None and first.status == 401
    page.get_by_label("Token").fill("not-the-token-at-all")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not the right one")
    page.get_by_label("Token").fill(UI_TOKEN)
    page.get_by_role("button", name="Sign in").click()

    expect(page.get_by_role("heading", name="Sources")).to_be_visible()
    expect(page.locator("#sources")).to_contain_text("workos")
    expect(page.get_by_role("button", name="Pause workos")).to_be_visible()
    shoot(page, tmp_path, "dashboard-sources")

    page.get_by_role("link", name="Runs").click()
    page.get_by_label("Status").select_option("dead")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"/runs\?status=dead"))
    buttons = page.get_by_role("button", name=re.compile(r"^Replay welcome on "))
    dead = dead_runs(served.app)
    expect(buttons).to_have_count(min(len(dead), 50))
    shoot(page, tmp_path, "dashboard-runs")

    served.broken["on"] = False  # the workflow is fixed
    button = buttons.first
    event_id = (button.text_content() or "").removeprefix("Replay welcome on ").strip()
    button.click()
    row = page.locator("tr", has_text=event_id)
    expect(row.locator(".status")).to_have_text("succeeded")
    with served.app.db.connect() as conn:
        status, attempts = conn.execute(sa.select(runs.c.status, runs.c.attempts).where(
            runs.c.workflow == "welcome", runs.c.event_id == event_id)).one()
    assert (status, attempts) == ("succeeded", 2)
    shoot(page, tmp_path, "dashboard-replayed")
    assert len(dead_runs(served.app)) == len(dead) - 1

    user, about = _busiest_user(served.app)
    page.get_by_label("Search").fill(user)
    page.get_by_label("Search").press("Enter")
    expect(page.get_by_role("heading", name=re.compile("Everything that happened to"))).to_contain_text(user)
    expect(page.locator("article.event")).to_have_count(len(about))
    shown = page.locator("article.event p small code:nth-of-type(2)").all_text_contents()
    assert shown == [e for _, e in sorted(about)]
    page.locator("article.event details summary", has_text="Payload").first.click()
    expect(page.locator("article.event pre").first).to_contain_text(user)
    shoot(page, tmp_path, "dashboard-search")

    for text in texts:
        assert UI_TOKEN not in text and WORKOS_KEY not in text


def test_a_cross_site_form_post_is_refused_and_the_session_stays(browser: Any, served: Fixture,
                                                                 attacker: str) -> None:
    from playwright.sync_api import expect

    page = browser.new_page()
    page.goto(served.url + "/")
    page.get_by_label("Token").fill(UI_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Sources")).to_be_visible()

    # Another origin on the same host: "same-site", so even a SameSite=Strict cookie goes with the post.
    with page.expect_response(re.compile(r"/actions/pause$")) as posted:
        page.goto(attacker)
    assert posted.value.status == 403
    expect(page.locator("body")).to_contain_text("nothing was changed")
    assert not paused(served.app)

    page.goto(served.url + "/")
    expect(page.get_by_role("button", name="Pause workos")).to_be_visible()  # still signed in
    page.get_by_role("button", name="Pause workos").click()  # the dashboard's own button works
    expect(page.get_by_role("button", name="Resume workos")).to_be_visible()
    assert paused(served.app)


def _busiest_user(app: App) -> tuple[str, list[tuple[Any, str]]]:
    """The user id that the most events name, and those events (occurred_at, event id)."""
    with app.db.connect() as conn:
        rows = list(conn.execute(sa.select(ledger.c.event_id, ledger.c.payload, ledger.c.occurred_at)))
    about: dict[str, list[tuple[Any, str]]] = {}
    for event_id, payload, occurred_at in rows:
        for value in set(_strings(payload)):
            if value.startswith("user_"):
                about.setdefault(value, []).append((occurred_at, event_id))
    return max(about.items(), key=lambda item: len(item[1]))


def sign_in(page: Any, url: str) -> None:
    from playwright.sync_api import expect

    page.goto(url + "/")
    page.get_by_label("Token").fill(UI_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Sources")).to_be_visible()


def test_a_trace_link_opens_the_runs_trace_in_jaeger(browser: Any, sqlite_url: str, workos_sim: WorkOSSimulator,
                                                     apps: list[App], jaeger: FakeJaeger, tmp_path: Path) -> None:
    """Real trace ids (``syncd once`` exporting to an OTLP receiver); the link goes to the stand-in Jaeger."""
    from playwright.sync_api import expect

    traced_database(sqlite_url, workos_sim, tmp_path)
    served = serve(sqlite_url, workos_sim, apps, jaeger.url)
    try:
        stored = stored_traces(sqlite_url)
        event_id = sorted(stored)[0]
        page = browser.new_page()
        sign_in(page, served.url)
        page.get_by_label("Search").fill(event_id)
        page.get_by_label("Search").press("Enter")
        expect(page.locator("article.event")).to_have_count(1)
        page.get_by_role("link", name="trace").click()
        expect(page.get_by_role("heading", name="a trace")).to_be_visible()
        assert [p for p in jaeger.paths if p != "/favicon.ico"] == [f"/jaeger/trace/{stored[event_id]}"]
        assert page.url == f"{jaeger.url}/trace/{stored[event_id]}"
    finally:
        served.server.stop()


def test_operator_replays_a_failed_run_now(browser: Any, queue: Queue) -> None:
    """A failed run's Replay brings its retry forward; once a worker has run it, the page shows it succeeded."""
    from playwright.sync_api import expect

    page = browser.new_page()
    sign_in(page, queue.server.url)
    page.get_by_role("link", name="Runs").click()
    page.get_by_label("Status").select_option("failed")
    page.get_by_role("button", name="Filter").click()
    button = page.get_by_role("button", name=re.compile(r"^Replay welcome on .* now$")).first
    event_id = (button.text_content() or "").removeprefix("Replay welcome on ").removesuffix(" now").strip()
    before = statuses(queue.app)[("welcome", "workos", event_id)]
    button.click()
    row = page.locator("tr", has_text=event_id)
    expect(row.locator(".status")).to_have_text("due now")
    status, attempts, due = statuses(queue.app)[("welcome", "workos", event_id)]
    assert (status, attempts) == ("failed", before[1]) and due is not None and before[2] is not None
    assert due < before[2]
    queue.broken["on"] = False
    queue.app.workers().drain()
    page.goto(queue.server.url + f"/events?q={event_id}")
    expect(page.locator("article.event .status").first).to_have_text("succeeded")
