"""Bad inputs (issue 6): one test per row of the README's "What happens when…" table.

Each shows a clear error (naming the variable, module, source or event) and that nothing is lost: the
cursor only moves past what was recorded, and once the input is fixed the result is exact.
Providers are real loopback servers: the WorkOS simulator, or a tiny canned server for shapes the
simulator never produces.
"""

from __future__ import annotations

import json
import logging
import socket
import sqlite3
from datetime import timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from simulators.httpserver import LoopbackServer
from simulators.workos import Faults, WorkOSSimulator
from syncd import cli
from syncd.contracts import FakeClock
from syncd.engine import run_backoff
from syncd.ops.app import App
from syncd.store.tables import events as ledger
from syncd.store.tables import runs, sources, ticks
from tests.conftest import WORKOS_KEY, workos_env
from tests.test_reliability import (
    MIRROR_TYPES,
    assert_exact,
    build,
    connector_for,
    requested,
    run_row,
    source_row,
)


@pytest.fixture(autouse=True)
def _no_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads ./.env: run where there is none."""
    monkeypatch.chdir(tmp_path)


def ledger_ids(db: Engine, stream: str = "workos") -> list[str]:
    with db.connect() as conn:
        return list(conn.execute(sa.select(ledger.c.event_id).where(ledger.c.stream == stream)
                                 .order_by(ledger.c.event_id)).scalars())


class CannedProvider:
    """A loopback server answering ``GET /events`` with the given responses in order (the last repeats)."""

    def __init__(self, responses: list[tuple[int, str, bytes]]) -> None:
        self.responses = responses
        self.afters: list[str | None] = []
        provider = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                provider.afters.append((parse_qs(urlsplit(self.path).query).get("after") or [None])[-1])
                shown = provider.responses
                status, kind, body = shown[min(len(provider.afters), len(shown)) - 1]
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Silent."""

        self.server = LoopbackServer(Handler, name="canned-provider")
        self.server.bind()

    @property
    def url(self) -> str:
        return self.server.url

    def __enter__(self) -> CannedProvider:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()


def page(data: list[Any], after: str | None) -> tuple[int, str, bytes]:
    body = {"object": "list", "data": data, "list_metadata": {"before": None, "after": after}}
    return 200, "application/json", json.dumps(body).encode()


def user_event(event_id: str, user_id: str, stamp: str = "2026-01-15T12:00:00.000Z") -> dict[str, Any]:
    return {"object": "event", "id": event_id, "event": "user.created", "created_at": stamp,
            "data": {"object": "user", "id": user_id, "email": f"{user_id}@example.com", "first_name": "A",
                     "last_name": "B", "email_verified": True, "profile_picture_url": None,
                     "external_id": None, "last_sign_in_at": None, "metadata": {}, "created_at": stamp,
                     "updated_at": stamp}}


# ---- missing or invalid settings ----------------------------------------------------------------------

@pytest.mark.parametrize(("env", "variable"), [
    ({}, "SYNCD_SOURCES"),  # no source configured at all: the message says which variables to set
    ({"SYNC_INTERVAL_SECONDS": "soon"}, "SYNC_INTERVAL_SECONDS"),
    ({"SYNCD_MAX_ATTEMPTS": "0"}, "SYNCD_MAX_ATTEMPTS"),
    ({"SYNCD_HTTP_TIMEOUT": "fast"}, "SYNCD_HTTP_TIMEOUT"),
    ({"DATABASE_URL": "mysql://db/syncd"}, "DATABASE_URL"),
    ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
    ({"WORKOS_API_KEY": WORKOS_KEY, "WORKOS_BASE_URL": "api.workos.com"}, "WORKOS_BASE_URL"),
    ({"WORKOS_API_KEY": WORKOS_KEY, "SYNCD_BUILTINS": "none"}, "WORKOS_EVENTS"),  # nothing to request
    ({"EVENTS_RANGE_START": "1767225600000"}, "EVENTS_RANGE_END"),  # a window needs both ends
])
def test_missing_or_invalid_settings_exit_2_naming_the_variable(
        sqlite_url: str, env: dict[str, str], variable: str, capsys: pytest.CaptureFixture[str]) -> None:
    environ = {"DATABASE_URL": sqlite_url, "OTEL_SDK_DISABLED": "true", **env}
    assert cli.main(["once"], environ=environ) == 2
    err = capsys.readouterr().err
    assert f"configuration error: {variable}" in err
    assert WORKOS_KEY not in err


def test_no_source_at_all_names_every_way_to_configure_one(sqlite_url: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["once"], environ={"DATABASE_URL": sqlite_url, "OTEL_SDK_DISABLED": "true"}) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    for variable in ("WORKOS_API_KEY", "GITHUB_REPOS", "STRIPE_API_KEY", "SYNCD_SQL_TABLES", "syncd demo"):
        assert variable in line, variable


# ---- the provider --------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_an_unreachable_provider_fails_the_tick_loudly_and_loses_nothing(
        sqlite_url: str, apps: list[App], clock: FakeClock,
        capsys: pytest.CaptureFixture[str]) -> None:
    sim = WorkOSSimulator(events=300, seed=4, api_key=WORKOS_KEY, port=free_port())
    url = sim.start()
    sim.stop()  # nothing listens there now
    app = build(apps, sqlite_url, clock, WORKOS_API_KEY=WORKOS_KEY, WORKOS_BASE_URL=url)
    [result] = app.tick_all()
    assert not result.ok and result.pages == 0
    assert "cannot reach the provider" in (result.error or "")
    assert source_row(app.db).last_error == result.error and source_row(app.db).cursor is None
    assert cli.main(["status"], environ={"DATABASE_URL": sqlite_url}) == 0
    assert "cannot reach the provider" in capsys.readouterr().out

    with sim:  # the provider is back, on the same address
        [result] = app.tick_all()
        assert result.ok and result.caught_up
        assert_exact(app.db, sim.final_state(MIRROR_TYPES), requested(sim))
    assert source_row(app.db).last_error is None


def test_a_revoked_key_fails_that_source_loudly_while_the_other_goes_on(
        sqlite_url: str, apps: list[App], clock: FakeClock) -> None:
    with WorkOSSimulator(events=400, seed=21, api_key=WORKOS_KEY) as good, \
            WorkOSSimulator(events=400, seed=22, api_key="sk_test_current_key_of_eu") as revoked:
        connectors = [connector_for(revoked, attempts=4, key="workos:eu", api_key="sk_test_revoked_eu_key"),
                      connector_for(good, attempts=4, key="workos")]
        app = build(apps, sqlite_url, clock, connectors=connectors)
        for _ in range(2):  # and again on the next tick: loud every time, never blocking the other source
            eu, main = app.tick_all()
            assert not eu.ok and "WORKOS_API_KEY rejected (401 Unauthorized)" in (eu.error or "")
            assert main.ok and main.caught_up
        assert [status for _, status in revoked.requests] == [401, 401]  # once per tick: never retried
        assert_exact(app.db, good.final_state(MIRROR_TYPES), requested(good))
        assert ledger_ids(app.db, "workos:eu") == []
        assert source_row(app.db, "workos:eu").last_error == eu.error
        assert "sk_test_revoked" not in (eu.error or "")


def test_a_non_json_page_is_retried_then_fails_the_tick_without_moving_the_cursor(
        sqlite_url: str, apps: list[App], clock: FakeClock) -> None:
    maintenance = (200, "text/html", b"<html><body>Down for maintenance</body></html>")
    with CannedProvider([maintenance]) as provider:
        app = build(apps, sqlite_url, clock, WORKOS_API_KEY=WORKOS_KEY, WORKOS_BASE_URL=provider.url)
        [result] = app.tick_all()
        assert not result.ok and "invalid JSON in a 200 response" in (result.error or "")
        assert len(provider.afters) == 4  # retried like any transient failure
        assert source_row(app.db).cursor is None and ledger_ids(app.db) == []
        provider.responses = [page([user_event("event_01", "user_1")], None)]
        [result] = app.tick_all()
        assert result.ok and ledger_ids(app.db) == ["event_01"]


def test_events_missing_id_type_or_data_are_skipped_with_an_error_and_the_rest_goes_on(
        sqlite_url: str, apps: list[App], clock: FakeClock,
        caplog: pytest.LogCaptureFixture) -> None:
    no_id = {k: v for k, v in user_event("x", "user_2").items() if k != "id"}
    no_type = {k: v for k, v in user_event("event_03", "user_3").items() if k != "event"}
    no_data = {**user_event("event_04", "user_4"), "data": None}
    good = [user_event("event_01", "user_1"), user_event("event_05", "user_5")]
    first = page([good[0], no_id, no_type, no_data, good[1]], "event_05")
    with CannedProvider([first, page([], None)]) as provider:
        app = build(apps, sqlite_url, clock, WORKOS_API_KEY=WORKOS_KEY, WORKOS_BASE_URL=provider.url)
        [result] = app.tick_all()
    assert result.ok and result.caught_up and result.skipped == 3
    assert ledger_ids(app.db) == ["event_01", "event_05"]
    assert source_row(app.db).cursor == "event_05" and provider.afters == [None, "event_05"]
    with app.db.connect() as conn:
        assert conn.execute(sa.select(ticks.c.skipped)).scalar_one() == 3  # kept for `syncd status`
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("has no id" in m for m in errors)
    assert any("event_03 has no type" in m for m in errors)
    assert any("event_04 has no data object" in m for m in errors)


def test_an_event_the_mirror_cannot_apply_is_dead_lettered_and_the_cursor_moves(
        db_url: str, apps: list[App], clock: FakeClock, workos_sim: WorkOSSimulator,
        capsys: pytest.CaptureFixture[str]) -> None:
    workos_sim.append({"event": "user.created", "data": {"object": "user", "email": "no-id@example.com"}})
    bad = workos_sim.events()[-1]["id"]
    workos_sim.generate(30)  # and the stream goes on after it
    app = build(apps, db_url, clock, **workos_env(workos_sim), SYNCD_MAX_ATTEMPTS="2")
    [result] = app.tick_all()
    wanted = requested(workos_sim)
    assert result.ok and result.caught_up and source_row(app.db).cursor == wanted[-1]
    error = f"EventError: user.created event {bad} has no data.id"
    assert result.failed_runs == [("workos.mirror.users", bad, error)]
    clock.advance(run_backoff(1).total_seconds())
    app.tick_all()
    row = run_row(app.db, "workos.mirror.users", bad)
    assert (row.status, row.attempts) == ("dead", 2)
    assert cli.main(["status"], environ={"DATABASE_URL": db_url}) == 0
    assert f"dead   workos.mirror.users ← workos {bad} (attempt 2): {error}" in capsys.readouterr().out
    good = [e for e in wanted if e != bad]
    with app.db.connect() as conn:
        statuses = dict(conn.execute(sa.select(runs.c.event_id, runs.c.status)).all())
    assert all(statuses[e] == "succeeded" for e in good)
    assert bad in ledger_ids(app.db)  # its payload is kept for `syncd replay`


# ---- workflows -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("source", "detail"), [
    ("raise RuntimeError('SMTP_HOST is not set')\n", "RuntimeError: SMTP_HOST is not set"),
    ("def broken(:\n", "SyntaxError"),
    ("import a_package_that_is_not_installed\n", "ModuleNotFoundError"),
])
def test_a_workflow_module_that_fails_to_import_stops_start_up_naming_it(
        sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        source: str, detail: str) -> None:
    (tmp_path / "team_workflows.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    environ = {"DATABASE_URL": sqlite_url, "OTEL_SDK_DISABLED": "true", "WORKOS_API_KEY": WORKOS_KEY,
               "WORKOS_BASE_URL": "http://127.0.0.1:9", "SYNCD_WORKFLOWS": "team_workflows"}
    for command in ("once", "run"):
        assert cli.main([command], environ=environ) == 2
        err = capsys.readouterr().err
        assert "configuration error: SYNCD_WORKFLOWS: cannot import 'team_workflows'" in err and detail in err


# ---- the database --------------------------------------------------------------------------------------

def test_a_database_that_cannot_be_opened_is_a_one_line_error(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    environ = {"DATABASE_URL": f"sqlite:///{tmp_path}/no/such/dir/syncd.db", "OTEL_SDK_DISABLED": "true",
               "WORKOS_API_KEY": WORKOS_KEY, "WORKOS_BASE_URL": "http://127.0.0.1:9"}
    for command in (["once"], ["migrate"]):
        assert cli.main(command, environ=environ) == 1
        err = capsys.readouterr().err
        assert err.strip() == "syncd: database error: unable to open database file"
    assert cli.main(["status"], environ=environ) == 2  # read-only: it says the database is not there
    assert capsys.readouterr().err.startswith("syncd: configuration error: DATABASE_URL: no database at ")


def test_a_locked_database_fails_the_tick_and_the_next_one_resumes(
        sqlite_url: str, apps: list[App], clock: FakeClock, workos_sim: WorkOSSimulator) -> None:
    app = build(apps, sqlite_url, clock, **workos_env(workos_sim))
    # syncd waits 30 s for a lock; this test's engine gives up after 0.2 s (set after syncd's own pragmas)
    sa.event.listen(app.db, "connect", lambda dbapi, _record: dbapi.execute("PRAGMA busy_timeout=200"))
    app.db.dispose()
    holder = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holding the write lock
    try:
        [result] = app.tick_all()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert not result.ok and "database is locked" in (result.error or "")
    assert ledger_ids(app.db) == []
    [result] = app.tick_all()
    assert result.ok and result.caught_up
    assert_exact(app.db, workos_sim.final_state(MIRROR_TYPES), requested(workos_sim))


def fail_cursor_moves_past(db: Engine, event_id: str) -> None:
    """A trigger failing the page transaction at its last statement (like a full disk or a lost server)."""
    with db.begin() as conn:
        if db.dialect.name == "sqlite":
            conn.exec_driver_sql(
                "CREATE TRIGGER fail_cursor BEFORE UPDATE OF cursor ON syncd_sources "
                f"WHEN NEW.cursor > '{event_id}' "
                "BEGIN SELECT RAISE(ABORT, 'disk I/O error (simulated)'); END")
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION fail_cursor() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF NEW.cursor > '{event_id}' THEN RAISE EXCEPTION 'disk I/O error (simulated)'; END IF; "
                "RETURN NEW; END $$")
            conn.exec_driver_sql("CREATE TRIGGER fail_cursor BEFORE UPDATE OF cursor ON syncd_sources "
                                 "FOR EACH ROW EXECUTE FUNCTION fail_cursor()")


def drop_fail_cursor(db: Engine) -> None:
    with db.begin() as conn:
        on_table = "" if db.dialect.name == "sqlite" else " ON syncd_sources"
        conn.exec_driver_sql(f"DROP TRIGGER fail_cursor{on_table}")


def test_a_database_error_in_the_middle_of_a_transaction_rolls_all_its_pages_back(
        db_url: str, apps: list[App], clock: FakeClock, workos_sim: WorkOSSimulator) -> None:
    wanted = requested(workos_sim)
    app = build(apps, db_url, clock, **workos_env(workos_sim), SYNCD_GROUP_EVENTS="200",
                SYNCD_GROUP_SECONDS="60")  # two pages per transaction
    fail_cursor_moves_past(app.db, wanted[249])  # pages 1 and 2 commit; pages 3 and 4 fail at the cursor
    [result] = app.tick_all()
    assert not result.ok and "disk I/O error (simulated)" in (result.error or "")
    assert result.pages == 2 and source_row(app.db).cursor == wanted[199]
    assert ledger_ids(app.db) == sorted(wanted[:200])  # nothing of pages 3 and 4: no partial transaction
    with app.db.connect() as conn:
        ran = set(conn.execute(sa.select(runs.c.event_id)).scalars())
    assert ran == set(wanted[:200])  # its workflow runs (and their mirror writes) rolled back with it
    drop_fail_cursor(app.db)
    [result] = app.tick_all()
    assert result.ok and result.caught_up
    assert_exact(app.db, workos_sim.final_state(MIRROR_TYPES), wanted)


def test_a_provider_pause_survives_in_the_database(sqlite_url: str, apps: list[App], clock: FakeClock,
                                                   workos_sim: WorkOSSimulator) -> None:
    """A long Retry-After is stored: a restarted process (a new App on the same database) honours it too."""
    workos_sim.faults = Faults(rate_limit_rate=1.0, retry_after=300)
    first = build(apps, sqlite_url, clock, **workos_env(workos_sim))
    assert not first.tick_all()[0].ok
    first.close()
    workos_sim.faults = Faults()
    again = build(apps, sqlite_url, clock, **workos_env(workos_sim))
    [result] = again.tick_all()
    assert result.skipped_reason and "paused until" in result.skipped_reason
    clock.advance(timedelta(seconds=301).total_seconds())
    assert again.tick_all()[0].caught_up
    with again.db.connect() as conn:
        assert conn.execute(sa.select(sources.c.paused_until)).scalar_one() is None
