"""Secrets in URLs and redirects (issue 17, classes 2 and 4).

A Slack incoming-webhook URL is its own secret (the path), and an integration URL may carry a key in its
query. With sentinels in both (and in the token and the provider key), a sync whose receivers fail must
leave none of them in the database file, the logs (JSON and text, stamina's retry lines included),
``syncd status`` (both views) or the exported spans. And a receiver answering a redirect has not
received anything: only a 2xx is a delivery.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connectors import workos
from simulators.github import GitHubSimulator
from simulators.sink import SinkSimulator
from simulators.workos import DEFAULT_NOW, WorkOSSimulator
from syncd import cli
from syncd.contracts import FakeClock
from syncd.ops.app import App
from syncd.ops.http import HealthServer, Monitor
from syncd.store.reads import SqlReads
from syncd.store.tables import runs
from syncd.workflows import Registry
from tests.conftest import settings_for, workos_env
from tests.otlp_receiver import OTLPReceiver

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 60

SLACK_SECRET = "SlackPathSentinel7c1d"
QUERY_SECRET = "QueryKeySentinel93ab"
TOKEN_SECRET = "TokenSentinel51f0"
WORKOS_SECRET = "sk_test_leak_sentinel_0d4e"
GITHUB_SECRET = "ghp_GithubTokenSentinel44c2"
SENTINELS = (SLACK_SECRET, QUERY_SECRET, TOKEN_SECRET, WORKOS_SECRET, GITHUB_SECRET)

#: Two workflows calling failing receivers, for one event only (each step is tried twice, with real waits).
LEAKY_WORKFLOWS = '''
from connectors import workos
from syncd import workflow

ONLY = {only!r}


@workflow(name="leak.slack", on=workos.events("user.created"))
def tell_slack(event, ctx):
    if event.id == ONLY:
        ctx.slack.send_message(text="a new user", retries=1)


@workflow(name="leak.crm", on=workos.events("user.created"))
def add_to_crm(event, ctx):
    if event.id == ONLY:
        ctx.step("crm", lambda: ctx.http("crm").post("/contacts", json={{"id": event.id}}).status_code,
                 retries=1)
'''


def leaked(text: str | bytes) -> list[str]:
    """The sentinels found in ``text``."""
    data = text if isinstance(text, bytes) else text.encode()
    return [s for s in SENTINELS if s.encode() in data]


@pytest.fixture
def sink() -> Iterator[SinkSimulator]:
    with SinkSimulator(fail_rate=1.0) as s:
        yield s


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_no_secret_of_a_url_leaves_when_receivers_fail(tmp_path: Path, sink: SinkSimulator,
                                                       capsys: pytest.CaptureFixture[str], log_format: str) -> None:
    with WorkOSSimulator(events=40, seed=4, api_key=WORKOS_SECRET) as sim, OTLPReceiver() as rx, \
            GitHubSimulator(repos={"acme/leak": 5}, seed=4, tokens=(GITHUB_SECRET,)) as gh:
        only = next(e["id"] for e in sim.events() if e["event"] == "user.created")
        (tmp_path / "leak_wf.py").write_text(LEAKY_WORKFLOWS.format(only=only))
        db = tmp_path / "leak.db"
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8",
               "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]), "PYTHONDONTWRITEBYTECODE": "1",
               "SYNCD_HTTP_PORT": "0", "DATABASE_URL": f"sqlite:///{db}", "LOG_FORMAT": log_format,
               "WORKOS_API_KEY": WORKOS_SECRET, "WORKOS_BASE_URL": sim.url, "SYNCD_WORKFLOWS": "leak_wf",
               "GITHUB_TOKEN": GITHUB_SECRET, "GITHUB_REPOS": "acme/leak", "GITHUB_BASE_URL": gh.url,
               "SYNCD_BUILTINS": "none", "SYNCD_MAX_ATTEMPTS": "1",
               "SYNCD_SLACK_WEBHOOK_URL": f"{sink.url}/services/T0/B0/{SLACK_SECRET}",
               "SYNCD_INTEGRATION_CRM_URL": f"{sink.url}/api?key={QUERY_SECRET}",
               "SYNCD_INTEGRATION_CRM_TOKEN": TOKEN_SECRET,
               "OTEL_EXPORTER_OTLP_ENDPOINT": rx.url,
               "OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST": ".*"}  # the worst configuration
        proc = subprocess.run([sys.executable, "-m", "syncd", "once"], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=TIMEOUT, check=False)
        # Runs went dead (the receiver fails): `syncd once` says so with exit 1, and the tick itself is ok.
        assert proc.returncode == 1, proc.stderr
        assert "workos: ok" in proc.stdout and "github:acme/leak: ok" in proc.stdout  # the token was accepted
        spans, raw_spans = rx.spans, rx.raw

    # The secrets were really used: each receiver got both attempts at its secret URL (and a relative
    # path joins the integration URL's path, its query staying a query).
    paths = [c.path for c in sink.calls]
    assert paths.count(f"/services/T0/B0/{SLACK_SECRET}") == 2
    assert paths.count(f"/api/contacts?key={QUERY_SECRET}") == 2

    # The failures were recorded, and say what happened without the URL's path or query.
    with sa.create_engine(f"sqlite:///{db}").connect() as conn:
        rows = {r.workflow: r for r in conn.execute(sa.select(runs).where(runs.c.event_id == only))}
    assert {w: r.status for w, r in rows.items()} == {"leak.slack": "dead", "leak.crm": "dead"}
    for row in rows.values():
        assert f"{sink.url}/… answered 503" in row.last_error, row.last_error

    # status, both views
    assert cli.main(["status"], environ={"DATABASE_URL": f"sqlite:///{db}"}) == 0
    assert cli.main(["status", "--json"], environ={"DATABASE_URL": f"sqlite:///{db}"}) == 0
    status = capsys.readouterr().out
    assert "answered 503" in status
    served = served_health_and_metrics(f"sqlite:///{db}")
    assert "workos: ok" in served and "syncd_source_healthy" in served

    # The logs held the retries' lines (syncd's own, with the error that caused them) and the failures.
    assert "retrying step 'slack'" in proc.stderr and "answered 503" in proc.stderr
    if log_format == "json":
        retries = [r for r in map(json.loads, proc.stderr.splitlines()) if "retry_num" in r]
        assert retries and all("answered 503" in r["message"] for r in retries)

    # Spans: the receivers' HTTP spans are there, with the URL cut to scheme and host.
    sink_port = int(sink.url.rsplit(":", 1)[1])
    sent = [s for s in spans if s.attributes.get("server.port") == sink_port]
    assert len(sent) == 4 and {s.attributes["url.full"] for s in sent} == {f"{sink.url}/…"}
    failed_steps = [s for s in spans if s.name == "workflow.step" and s.is_error]
    assert failed_steps and all("answered 503" in s.status_message for s in failed_steps)

    files = b"".join(p.read_bytes() for p in tmp_path.rglob("leak.db*") if p.is_file())  # the db, its WAL, lock files
    assert files  # the database (and its WAL, if any) was read
    outputs: list[tuple[str, str | bytes]] = [("database file", files), ("stdout", proc.stdout),
                                              ("logs", proc.stderr), ("status", status), ("spans", raw_spans),
                                              ("/healthz and /metrics", served)]
    for where, text in outputs:
        assert not leaked(text), where


def served_health_and_metrics(url: str) -> str:
    """The bodies of ``/healthz`` and ``/metrics`` over the database at ``url``."""
    db = sa.create_engine(url)
    try:
        with HealthServer(Monitor(SqlReads(db), ["workos"], interval=60), host="127.0.0.1", port=0) as server:
            bodies = []
            for path in ("/healthz", "/metrics"):
                with urllib.request.urlopen(server.url + path, timeout=5) as response:
                    bodies.append(response.read().decode())
    finally:
        db.dispose()
    return "\n".join(bodies)


def test_a_redirect_is_not_a_delivery(sqlite_url: str, workos_sim: Any) -> None:
    clock = FakeClock(DEFAULT_NOW + timedelta(days=1))
    events = [e["id"] for e in workos_sim.events() if e["event"] == "user.created"][:3]
    registry = Registry()

    @registry.workflow("notify.slack", on=workos.events("user.created"), retries=3)
    def tell_slack(event: Any, ctx: Any) -> None:
        if event.id in events:
            ctx.slack.send_message(text=f"welcome {event.id}", retries=1)

    @registry.workflow("notify.crm", on=workos.events("user.created"), retries=3)
    def add_to_crm(event: Any, ctx: Any) -> None:
        if event.id in events:
            ctx.step("crm", lambda: ctx.http("crm").post("/contacts", json={"id": event.id}).status_code, retries=1)

    with SinkSimulator(fail_rate=1.0, fail_status=302) as moved:
        settings = settings_for(sqlite_url, SYNCD_BUILTINS="none", **workos_env(workos_sim),
                                SYNCD_SLACK_WEBHOOK_URL=f"{moved.url}/slack",
                                SYNCD_INTEGRATION_CRM_URL=f"{moved.url}/crm")
        app = App.build(settings, registry=registry, clock=clock)
        try:
            app.tick_all()
            rows = _runs(app, events)
            assert {r.status for r in rows} == {"failed"}  # not succeeded: retried later
            assert all(f"answered 302 (redirect to {moved.url}/…, not followed)" in r.last_error for r in rows)
            assert len(moved.calls) == 2 * 2 * len(events)  # both attempts of each step, and nothing else:
            assert not [c for c in moved.calls if c.path.startswith("/moved")]  # the redirect was not followed

            clock.advance(3600)
            app.tick_all()  # the second of three attempts: still redirected
            clock.advance(3600)
            moved.fail_rate = 0.0  # the receiver is back where it was
            app.tick_all()
            rows = _runs(app, events)
            assert {r.status for r in rows} == {"succeeded"} and {r.attempts for r in rows} == {3}
            for path in ("/slack", "/crm"):
                delivered = moved.successes_by_key(path)
                assert len(delivered) == len(events) and set(delivered.values()) == {1}, path
        finally:
            app.close()


def test_a_redirect_fails_the_run_once_its_attempts_are_spent(sqlite_url: str, workos_sim: Any) -> None:
    clock = FakeClock(DEFAULT_NOW + timedelta(days=1))
    only = next(e["id"] for e in workos_sim.events() if e["event"] == "user.created")
    registry = Registry()

    @registry.workflow("notify.slack", on=workos.events("user.created"), retries=2)
    def tell_slack(event: Any, ctx: Any) -> None:
        if event.id == only:
            ctx.slack.send_message(text="welcome", retries=0)

    with SinkSimulator(fail_rate=1.0, fail_status=301) as moved:
        settings = settings_for(sqlite_url, SYNCD_BUILTINS="none", **workos_env(workos_sim),
                                SYNCD_SLACK_WEBHOOK_URL=f"{moved.url}/slack")
        app = App.build(settings, registry=registry, clock=clock)
        try:
            for _ in range(3):
                app.tick_all()
                clock.advance(3600)
            [row] = _runs(app, [only])
            assert (row.status, row.attempts) == ("dead", 2) and "answered 301" in row.last_error
            assert len(moved.calls) == 2
        finally:
            app.close()


def _runs(app: App, event_ids: list[str]) -> list[Any]:
    with app.db.connect() as conn:
        return list(conn.execute(sa.select(runs).where(runs.c.event_id.in_(event_ids))))


def test_the_settings_repr_shows_integration_urls_as_scheme_and_host() -> None:
    settings = settings_for("sqlite://", SYNCD_INTEGRATION_CRM_URL=f"https://crm.example.com/v1?key={QUERY_SECRET}",
                            SYNCD_INTEGRATION_CRM_TOKEN=TOKEN_SECRET,
                            SYNCD_SLACK_WEBHOOK_URL=f"https://hooks.slack.com/services/T0/B0/{SLACK_SECRET}")
    shown = repr(settings)
    assert "https://crm.example.com/…" in shown and not leaked(shown)
    assert settings.integrations.http_integration("crm").url.endswith(QUERY_SECRET)  # still usable


# ---- SMTP and database passwords -------------------------------------------------------------------------

SMTP_SECRET = "SmtpPasswordSentinel2b8e"
DB_SECRET = "DbPasswordSentinel6a0f"
PASSWORDS = (SMTP_SECRET, DB_SECRET, WORKOS_SECRET)

#: A workflow e-mailing one event's user over an SMTP server that refuses the login (no AUTH offered).
EMAIL_WORKFLOW = '''
from connectors import workos
from syncd import workflow

ONLY = {only!r}


@workflow(name="leak.email", on=workos.events("user.created"))
def welcome(event, ctx):
    if event.id == ONLY:
        ctx.send_email(to="someone@example.com", subject="hello", body="welcome")
'''


def table_dump(url: str) -> str:
    """Every row of every table of the database at ``url``, as text (PostgreSQL: the data, not files)."""
    db = sa.create_engine(url)
    try:
        with db.connect() as conn:
            names = sa.inspect(conn).get_table_names()
            return "\n".join(str(row) for name in names for row in conn.execute(sa.text(f'SELECT * FROM "{name}"')))
    finally:
        db.dispose()


@pytest.mark.postgres
def test_no_smtp_or_database_password_leaves(tmp_path: Path, pg_server: Any,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from tests.test_welcome_email import Smtp

    # The throwaway server trusts local connections, so the password is accepted and never checked: syncd
    # still holds it in its settings, its engine's URL and every error about the connection.
    url = pg_server.create_database().replace("://syncd@", f"://syncd:{DB_SECRET}@")
    smtp = Smtp()
    smtp.controller.start()
    try:
        with WorkOSSimulator(events=20, seed=5, api_key=WORKOS_SECRET) as sim, OTLPReceiver() as rx:
            only = next(e["id"] for e in sim.events() if e["event"] == "user.created")
            (tmp_path / "mail_wf.py").write_text(EMAIL_WORKFLOW.format(only=only))
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8",
                   "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]), "PYTHONDONTWRITEBYTECODE": "1",
                   "SYNCD_HTTP_PORT": "0", "DATABASE_URL": url, "LOG_FORMAT": "json",
                   "WORKOS_API_KEY": WORKOS_SECRET, "WORKOS_BASE_URL": sim.url, "SYNCD_WORKFLOWS": "mail_wf",
                   "SYNCD_BUILTINS": "none", "SYNCD_MAX_ATTEMPTS": "1", "SYNCD_SMTP_FROM": "syncd@example.com",
                   "SYNCD_SMTP_URL": f"smtp://mailer:{SMTP_SECRET}@127.0.0.1:{smtp.port}",
                   "OTEL_EXPORTER_OTLP_ENDPOINT": rx.url}
            proc = subprocess.run([sys.executable, "-m", "syncd", "once"], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=TIMEOUT, check=False)
            assert proc.returncode == 1, proc.stderr  # the e-mail run went dead: the server refused the login
            raw_spans = rx.raw
    finally:
        smtp.controller.stop()
    db = sa.create_engine(url)
    with db.connect() as conn:
        row = conn.execute(sa.select(runs).where(runs.c.event_id == only)).one()
    db.dispose()
    assert row.status == "dead" and "AUTH" in (row.last_error or ""), row.last_error  # the password was used

    assert cli.main(["status"], environ={"DATABASE_URL": url}) == 0
    assert cli.main(["status", "--json"], environ={"DATABASE_URL": url}) == 0
    # a database that cannot be reached: the error names it without its password
    down = f"postgresql+psycopg://syncd:{DB_SECRET}@127.0.0.1:1/nowhere"
    assert cli.main(["status"], environ={"DATABASE_URL": down}) != 0
    captured = capsys.readouterr()
    status = captured.out + captured.err
    assert "leak.email" in status and "127.0.0.1" in status
    served = served_health_and_metrics(url)
    outputs: list[tuple[str, str | bytes]] = [("database", table_dump(url)), ("stdout", proc.stdout),
                                              ("logs", proc.stderr), ("status", status), ("spans", raw_spans),
                                              ("/healthz and /metrics", served)]
    for where, text in outputs:
        data = text if isinstance(text, bytes) else text.encode()
        assert not [s for s in PASSWORDS if s.encode() in data], where
