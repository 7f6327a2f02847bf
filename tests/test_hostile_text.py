"""Text from outside shown to people (issue 17, classes 8 and the ``/healthz`` part of 3).

A provider's error message may carry terminal escape sequences and newlines: ``syncd status`` and text
logs escape them (one record stays one line; the terminal is never rewritten). A stored database error
may carry SQLAlchemy's ``[parameters: …]`` dump, i.e. users' data: ``/healthz`` (listening on all
interfaces) and ``syncd status`` show its first line only, without the dump.
"""

from __future__ import annotations

import io
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from simulators.httpserver import LoopbackServer
from simulators.workos import WorkOSSimulator
from syncd import cli
from syncd.logs import JsonFormatter, TextFormatter
from syncd.ops.app import App
from syncd.ops.http import HealthServer, Monitor
from syncd.ops.status import collect, render
from syncd.store.reads import SqlReads
from syncd.store.tables import sources
from tests.conftest import WORKOS_KEY, settings_for

#: A provider's message trying to clear the screen, colour the output and forge a line of its own.
HOSTILE = "cursor rejected\x1b[2J\x1b[31m\r\nsyncd: every source is healthy\x07\u202e"
FORGED = "syncd: every source is healthy"
EMAIL = "bob.private@example.com"


@pytest.fixture(autouse=True)
def _no_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads ./.env: run where there is none."""
    monkeypatch.chdir(tmp_path)


class _Hostile(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = json.dumps({"message": HOSTILE}).encode()
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent."""


@pytest.fixture
def hostile_provider() -> Iterator[str]:
    with LoopbackServer(_Hostile) as server:
        yield server.url


@pytest.fixture
def text_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def assert_tame(text: str) -> None:
    """No control character but newlines, and no line of the provider's making."""
    assert not [c for c in text if (ord(c) < 32 and c != "\n") or 0x7F <= ord(c) < 0xA0 or c == "\u202e"], text
    assert not [line for line in text.splitlines() if line.startswith(FORGED)], text


def test_a_providers_control_characters_are_escaped_in_status_and_text_logs(
        sqlite_url: str, hostile_provider: str, text_log: io.StringIO, capsys: pytest.CaptureFixture[str]) -> None:
    app = App.build(settings_for(sqlite_url, WORKOS_API_KEY=WORKOS_KEY, WORKOS_BASE_URL=hostile_provider))
    try:
        [result] = app.tick_all()
        assert not result.ok
    finally:
        app.close()
    with sa.create_engine(sqlite_url).connect() as conn:
        stored = conn.execute(sa.select(sources.c.last_error)).scalar_one()
    assert "\x1b[2J" in stored  # stored as received: only what is shown is escaped

    logged = text_log.getvalue()
    assert "cursor rejected\\x1b[2J\\x1b[31m\\r\\nsyncd: every source" in logged
    assert_tame(logged)

    assert cli.main(["status"], environ={"DATABASE_URL": sqlite_url}) == 0
    shown = capsys.readouterr().out
    assert "last error:" in shown and "cursor rejected\\x1b[2J" in shown
    assert_tame(shown)


def test_status_escapes_every_value_a_provider_chose() -> None:
    hostile = "evt\x1b]0;owned\x07\nFAKE"
    report = {
        "sources": [{"key": "workos", "source": "workos", "kind": "live", "state": "active", "cursor": hostile,
                     "events_processed": 1, "last_success_at": None, "last_error": None, "last_error_at": None,
                     "paused_until": None, "pause_reason": None, "lease_owner": None, "lease_expires_at": None,
                     "meta": {"note": hostile}, "last_tick": None,
                     "runs": {"succeeded": 0, "failed": 1, "dead": 0, "sleeping": 0, "queued": 0, "running": 0,
                              "pending": 0}}],
        "problem_runs": [{"workflow": "w", "stream": "workos", "event_id": hostile, "status": "failed",
                          "attempts": 1, "next_attempt_at": None, "error": hostile, "trace_id": None,
                          "event_type": "user.created", "trace_url": None}],
        # The human view shows failures grouped by error (syncd.ops.statusparts), each with its newest run.
        "problem_groups": [{"workflow": "w", "status": "failed", "error": hostile, "runs": 2,
                            "example": {"stream": "workos", "event_id": hostile, "event_type": "user.created",
                                        "attempts": 1, "next_attempt_at": None, "trace_id": None,
                                        "trace_url": None}}],
        "totals": {},
    }
    shown = render(report)
    assert "\x1b" not in shown and "\x07" not in shown
    assert not [line for line in shown.splitlines() if line.startswith("FAKE")]
    assert shown.count("evt\\x1b]0;owned\\x07") == 4  # cursor, meta, event id, and the error (its first line)


def sqlalchemy_error_with_parameters() -> str:
    """The text of a real SQLAlchemy IntegrityError: the driver's message, then the statement and the
    parameters (a user's e-mail)."""
    db = sa.create_engine("sqlite://")
    users = sa.Table("users", sa.MetaData(), sa.Column("email", sa.String, unique=True))
    users.create(db)
    try:
        with db.begin() as conn:
            conn.execute(users.insert(), [{"email": EMAIL}, {"email": EMAIL}])
    except sa.exc.IntegrityError as exc:
        return str(exc)
    finally:
        db.dispose()
    raise AssertionError("the duplicate was accepted")


def test_healthz_and_status_show_a_database_error_without_its_parameters(
        sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    error = sqlalchemy_error_with_parameters()
    assert EMAIL in error and "[parameters:" in error  # what the engine records today
    with WorkOSSimulator(events=20, seed=2, api_key=WORKOS_KEY) as sim:
        app = App.build(settings_for(sqlite_url, WORKOS_API_KEY=WORKOS_KEY, WORKOS_BASE_URL=sim.url))
        try:
            app.tick_all()
            with app.db.begin() as conn:
                conn.execute(sa.update(sources).values(last_error=error, last_success_at=None))
            server = HealthServer(Monitor(SqlReads(app.db), ["workos"], interval=60), host="127.0.0.1", port=0)
            with server:
                try:
                    urllib.request.urlopen(server.url + "/healthz", timeout=5)
                    raise AssertionError("a source without a successful tick is healthy")
                except urllib.error.HTTPError as err:
                    assert err.code == 503
                    body = err.read().decode()
            report = collect(SqlReads(app.db))
        finally:
            app.close()
    [line] = [line for line in body.splitlines() if line.startswith("workos:")]
    assert line.endswith("last error: (sqlite3.IntegrityError) UNIQUE constraint failed: users.email"), line
    assert EMAIL not in body and "[SQL" not in body and "sqlalche.me" not in body

    assert report["sources"][0]["last_error"] == "(sqlite3.IntegrityError) UNIQUE constraint failed: users.email"
    assert cli.main(["status"], environ={"DATABASE_URL": sqlite_url}) == 0
    assert cli.main(["status", "--json"], environ={"DATABASE_URL": sqlite_url}) == 0
    shown = capsys.readouterr().out
    assert "UNIQUE constraint failed: users.email" in shown and EMAIL not in shown and "[SQL" not in shown


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
def test_logs_never_show_a_database_errors_parameters(formatter: logging.Formatter) -> None:
    error = sqlalchemy_error_with_parameters()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    log = logging.getLogger("syncd.test.hostile")
    log.addHandler(handler)
    try:
        log.error("could not record the failure of workos: %s", error, extra={"detail": error})
        try:
            raise RuntimeError(error)
        except RuntimeError:
            log.exception("tick failed")
    finally:
        log.removeHandler(handler)
    logged = stream.getvalue()
    if isinstance(formatter, JsonFormatter):  # the values as a reader of the JSON gets them
        logged = "\n".join(str(v) for line in logged.splitlines() for v in json.loads(line).values())
    assert "UNIQUE constraint failed: users.email" in logged and "[parameters: …]" in logged
    assert EMAIL not in logged
