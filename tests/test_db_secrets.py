"""Secrets never appear in the database (README, "Nothing secret leaves"; issue 27, item 2), checked over
every table and every column of a real synced SQLite database, not one column.

A real ``syncd once`` process syncs the WorkOS simulator with workflows that call every kind of integration
(a bearer-token HTTP API, a Slack webhook whose URL is the secret, SMTP with a password), through receivers
that fail half of the calls, so errors, retries and their messages are stored too. Then every value of
every row of every table, and the database's files byte for byte, are searched for each secret.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.sink import SinkSimulator
from simulators.workos import WorkOSSimulator

REPO = Path(__file__).resolve().parents[1]
WORKOS_KEY = "sk_test_dbscan_workos_71c9e2"
CRM_TOKEN = "crmtok-dbscan-5a0f33"  # no known token shape: only redaction by value can hide it
SLACK_SECRET = "hooksecret-dbscan-c4d1"  # a webhook URL's path is its credential
SMTP_PASSWORD = "smtppass-dbscan-9e77"
SECRETS = (WORKOS_KEY, CRM_TOKEN, SLACK_SECRET, SMTP_PASSWORD)

WORKFLOWS = '''
from connectors import workos
from syncd import workflow

CHOSEN = __CHOSEN__  # two events: step retries really wait in a real process


@workflow(name="secrets.crm", on=workos.events("user.created"), retries=2)
def crm(event, ctx):
    if event.id in CHOSEN:
        ctx.step("crm", lambda: ctx.http("crm").post("/contacts", json={"id": event.id}).status_code,
                 retries=1)


@workflow(name="secrets.slack", on=workos.events("user.created"), retries=2)
def slack(event, ctx):
    if event.id in CHOSEN:
        ctx.slack.send_message(text=f"new user {event.id}", retries=1)


@workflow(name="secrets.email", on=workos.events("user.created"), retries=2)
def email(event, ctx):
    if event.id in CHOSEN:
        ctx.send_email(to="someone@example.com", subject="hi", body="welcome")
'''


@pytest.fixture(scope="module")
def synced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A SQLite database after one ``syncd once`` run that used (and failed with) every secret."""
    tmp_path = tmp_path_factory.mktemp("dbscan")
    db_path = tmp_path / "synced.db"
    with WorkOSSimulator(events=120, seed=5, api_key=WORKOS_KEY) as sim, \
            SinkSimulator(fail_rate=0.5, seed=3) as sink:
        chosen = [e["id"] for e in sim.events() if e["event"] == "user.created"][:2]
        (tmp_path / "secret_workflows.py").write_text(WORKFLOWS.replace("__CHOSEN__", repr(set(chosen))))
        env = {
            "PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
            "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)]),
            "DATABASE_URL": f"sqlite:///{db_path}", "WORKOS_API_KEY": WORKOS_KEY, "WORKOS_BASE_URL": sim.url,
            "SYNCD_WORKFLOWS": "secret_workflows", "SYNCD_HTTP_PORT": "0", "OTEL_SDK_DISABLED": "true",
            "SYNCD_INTEGRATION_CRM_URL": f"{sink.url}/crm", "SYNCD_INTEGRATION_CRM_TOKEN": CRM_TOKEN,
            "SYNCD_SLACK_WEBHOOK_URL": f"{sink.url}/slack/T0/B0/{SLACK_SECRET}",
            # aiosmtpd-less on purpose: nothing listens there, so every email attempt fails with an error
            # that knows the URL (and its password)
            "SYNCD_SMTP_URL": f"smtp://mailer:{SMTP_PASSWORD}@127.0.0.1:{closed_port()}",
            "SYNCD_SMTP_FROM": "hello@example.com", "LOG_LEVEL": "DEBUG",
        }
        try:
            done = subprocess.run([sys.executable, "-m", "syncd", "once"], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired as e:
            raise AssertionError(str(e.stderr)[-4000:]) from None
        assert done.returncode in (0, 1), done.stdout + done.stderr  # 1: some runs failed, as intended
        calls = list(sink.calls)
    # the secrets were really used: both receivers were called (and half the calls failed)
    assert any(c.path.startswith("/crm") and c.authorization == f"Bearer {CRM_TOKEN}" for c in calls)
    assert any(c.path == f"/slack/T0/B0/{SLACK_SECRET}" for c in calls)
    assert 200 in {c.status for c in calls} and len({c.status for c in calls}) > 1  # some failed too
    yield db_path


def closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def every_value(db_path: Path) -> Iterator[tuple[str, str, str]]:
    """(table, column, value as text) for every column of every row of every table."""
    conn = sqlite3.connect(db_path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            cursor = conn.execute(f'SELECT * FROM "{table}"')
            columns = [d[0] for d in cursor.description]
            for row in cursor:
                for column, value in zip(columns, row, strict=True):
                    text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
                    yield table, column, text
    finally:
        conn.close()


def test_no_secret_in_any_table_or_column_of_a_synced_database(synced: Path) -> None:
    seen_tables: set[str] = set()
    errors_stored = 0
    for table, column, text in every_value(synced):
        seen_tables.add(table)
        errors_stored += column in ("last_error", "error") and text not in ("None", "")
        for secret in SECRETS:
            assert secret not in text, f"{secret[:8]}… found in {table}.{column}"
    # the scan covered syncd's tables, the mirrors and the stored errors of the failed calls
    assert {"syncd_sources", "syncd_events", "syncd_runs", "syncd_steps", "syncd_ticks"} <= seen_tables
    assert errors_stored > 0


def test_no_secret_in_the_database_files_byte_for_byte(synced: Path) -> None:
    files = [p for p in synced.parent.iterdir() if p.name.startswith(synced.name) and p.is_file()]
    assert files
    for path in files:  # the database, its WAL and shared memory if left: free pages keep old bytes too
        data = path.read_bytes()
        for secret in SECRETS:
            assert secret.encode() not in data, f"{secret[:8]}… found in {path.name}"
