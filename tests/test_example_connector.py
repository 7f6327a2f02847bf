"""A connector from outside the tree (issue #24, item 5): ``examples/jsonl-connector``, a package of its own
that ``make install`` installs into the virtualenv, found by syncd only through its ``syncd.connectors``
entry point. The test syncs it end to end as a user would: ``syncd once`` in a subprocess (nothing of the
repository on ``PYTHONPATH``), a workflow module of the user's triggered on its events, on SQLite and
PostgreSQL; then again after more lines are appended (only the new ones run), with a malformed line
quarantined and a half-written last line left for later.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, distribution, entry_points
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from syncd.store.db import create_engine
from syncd.store.tables import events as ledger
from syncd.store.tables import quarantine, sources

TIMEOUT = 60

FLOWS = '''
import sqlalchemy as sa
import syncd_jsonl
from syncd import workflow

INSERT = sa.text("INSERT INTO logins (event_id, user_id) VALUES (:event_id, :user_id)")


@workflow(name="record_login", on=syncd_jsonl.events("login"))
def record_login(event, ctx):
    ctx.db.execute(INSERT, {"event_id": event.id, "user_id": event.data["user"]})
'''


def line(n: int, kind: str = "login") -> str:
    return json.dumps({"id": f"evt-{n}", "type": kind, "time": f"2026-01-15T12:{n // 60:02d}:{n % 60:02d}Z",
                       "data": {"user": f"u{n}"}}) + "\n"


def test_the_example_package_is_installed_and_registers_its_entry_point() -> None:
    try:
        dist = distribution("syncd-jsonl")
    except PackageNotFoundError:
        pytest.fail("the example connector (examples/jsonl-connector) is not installed: run `make install`")
    assert any(e.name == "jsonl" and e.value == "syncd_jsonl:provider" for e in dist.entry_points)
    assert "jsonl" in {e.name for e in entry_points(group="syncd.connectors")}


def syncd_once(cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("syncd")
    if not script.is_file():
        pytest.fail(f"the console script is not installed next to {sys.executable}")
    base = {"PATH": "/usr/bin:/bin", "HOME": str(cwd), "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
            "SYNCD_HTTP_PORT": "0", "SYNCD_BUILTINS": "none"}
    return subprocess.run([str(script), "once"], cwd=cwd, env={**base, **env}, capture_output=True, text=True,
                          timeout=TIMEOUT, check=False)


def rows(db_url: str, statement: Any) -> list[Any]:
    db = create_engine(db_url)
    try:
        with db.connect() as conn:
            return list(conn.execute(statement))
    finally:
        db.dispose()


def test_syncd_syncs_the_example_connector_end_to_end(tmp_path: Path, db_url: str) -> None:
    db = create_engine(db_url)
    with db.begin() as conn:  # the user's own table, made by the user's own migrations
        conn.execute(sa.text("CREATE TABLE logins (event_id VARCHAR(50) PRIMARY KEY, user_id VARCHAR(50))"))
    db.dispose()
    (tmp_path / "myflows.py").write_text(FLOWS)
    audit = tmp_path / "audit.jsonl"
    audit.write_text("".join(line(n, "login" if n % 3 else "logout") for n in range(1, 31)))
    env = {"DATABASE_URL": db_url, "JSONL_FILES": str(audit), "JSONL_PAGE_SIZE": "7", "SYNCD_WORKFLOWS": "myflows"}

    first = syncd_once(tmp_path, env)
    assert first.returncode == 0, first.stdout + first.stderr
    logins = [f"evt-{n}" for n in range(1, 31) if n % 3]
    assert sorted(r[0] for r in rows(db_url, sa.text("SELECT event_id FROM logins"))) == sorted(logins)
    recorded = rows(db_url, sa.select(ledger.c.event_id).where(ledger.c.stream == "jsonl:audit"))
    assert len(recorded) == 30  # every line in the ledger, the logouts too

    with audit.open("a") as handle:  # more lines: one broken, one still being written
        handle.write(line(31) + "{not json\n" + line(32) + line(33).rstrip("\n"))
    second = syncd_once(tmp_path, env)
    assert second.returncode == 0, second.stdout + second.stderr
    got = sorted(r[0] for r in rows(db_url, sa.text("SELECT event_id FROM logins")))
    assert got == sorted([*logins, "evt-31", "evt-32"])  # each once; the unfinished line waits
    held = rows(db_url, sa.select(quarantine.c.reason, quarantine.c.raw).where(quarantine.c.stream == "jsonl:audit"))
    assert [reason for reason, _ in held] == ["not a JSON line"] and "{not json" in held[0][1]
    [cursor] = rows(db_url, sa.select(sources.c.cursor).where(sources.c.key == "jsonl:audit"))
    assert int(cursor[0]) == audit.stat().st_size - len(line(33).rstrip("\n"))

    with audit.open("a") as handle:
        handle.write("\n")  # the last line is finished
    third = syncd_once(tmp_path, env)
    assert third.returncode == 0, third.stdout + third.stderr
    assert len(rows(db_url, sa.text("SELECT event_id FROM logins"))) == len(logins) + 3


def test_a_bad_setting_of_the_example_exits_2_naming_it(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}", "JSONL_FILES": str(tmp_path / "a.jsonl"),
           "JSONL_PAGE_SIZE": "lots"}
    result = syncd_once(tmp_path, env)
    assert result.returncode == 2
    assert "JSONL_PAGE_SIZE" in result.stderr and len(result.stderr.strip().splitlines()) == 1
