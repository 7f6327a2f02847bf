"""``syncd demo`` never touches the user's data: run as a user would (a subprocess in a directory with a
populated ``.env``), the user's database stays byte-identical and the user's workflows are never imported."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

from simulators.workos import WorkOSSimulator
from syncd.ops.demo import DEMO_APPLICATION_ID, application_id
from tests.test_cli import KEY, query, syncd

pytestmark = pytest.mark.slow

#: A workflow module of the user's: importing it leaves a file behind, running it writes to their database.
USER_WORKFLOWS = '''
from pathlib import Path

import sqlalchemy as sa

from syncd import workflow

Path(__file__).with_name("imported.flag").write_text("the demo imported the user's workflows")


@workflow("team_welcome", on=["user.created"])
def team_welcome(event, ctx):
    ctx.db.execute(sa.text("INSERT INTO customers (name) VALUES ('written by the demo')"))
'''


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    """A project directory: a real syncd database with the user's own rows, their workflows and a ``.env``
    pointing everything at them."""
    real = tmp_path / "real.db"
    with WorkOSSimulator(events=100, seed=5, api_key=KEY) as sim:  # their synced users, cursor and ledger
        env = {"DATABASE_URL": f"sqlite:///{real}", "WORKOS_API_KEY": KEY, "WORKOS_BASE_URL": sim.url}
        once = syncd(tmp_path, "once", env=env)
        assert once.returncode == 0, once.stderr
    conn = sqlite3.connect(real)
    try:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
        conn.executemany("INSERT INTO customers (name) VALUES (?)", [("Ada",), ("Grace",)])
        conn.commit()
        assert conn.execute("SELECT count(*) FROM workos_users").fetchone()[0] > 0
    finally:
        conn.close()
    (tmp_path / "team_workflows.py").write_text(USER_WORKFLOWS)
    (tmp_path / ".env").write_text(
        f"DATABASE_URL=sqlite:///{real}\n"
        "SYNCD_WORKFLOWS=team_workflows\n"
        "SYNCD_SOURCES=workos\n"
        f"SYNCD_SQL_URL=sqlite:///{real}\n"
        "SYNCD_SQL_TABLES=customers\n"
        "WORKOS_API_KEY=sk_test_real_key_of_the_user_4f1c\n"
        "WORKOS_BASE_URL=http://127.0.0.1:9\n"
        "SYNC_INTERVAL_SECONDS=soon\n"  # a mistake of theirs: the demo reads none of this, so it runs anyway
    )
    return tmp_path


def user_env(user_dir: Path) -> dict[str, str]:
    return {"PYTHONPATH": f"{Path(__file__).resolve().parents[1]}:{user_dir}"}


def test_the_demo_leaves_the_database_of_a_populated_env_byte_identical(user_dir: Path) -> None:
    real = user_dir / "real.db"
    before = digest(real)
    result = syncd(user_dir, "demo", "--events", "200", env=user_env(user_dir), timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert digest(real) == before
    assert not (user_dir / "real.db-wal").exists() and not (user_dir / "real.db-journal").exists()
    assert not (user_dir / "imported.flag").exists(), "the demo imported the user's SYNCD_WORKFLOWS"
    assert "sk_test_real_key_of_the_user_4f1c" not in result.stdout + result.stderr
    demo = user_dir / "syncd-demo.db"
    assert f"→ {demo}\n" in result.stdout  # says where it writes
    assert application_id(demo) == DEMO_APPLICATION_ID
    [(events,)] = query(demo, "SELECT count(*) FROM syncd_events")
    assert events > 0
    workflows = {name for (name,) in query(demo, "SELECT DISTINCT workflow FROM syncd_runs")}
    assert workflows and "team_welcome" not in workflows


def test_database_chooses_another_file_and_a_second_run_replaces_it(user_dir: Path) -> None:
    (user_dir / "elsewhere").mkdir()
    target = user_dir / "elsewhere" / "my-demo.db"
    for _ in range(2):  # the second run replaces the first run's demo database
        result = syncd(user_dir, "demo", "--events", "150", "--database", "elsewhere/my-demo.db",
                       env=user_env(user_dir), timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"→ {target}\n" in result.stdout
    assert not (user_dir / "syncd-demo.db").exists()
    [(ticks,)] = query(target, "SELECT count(*) FROM syncd_ticks WHERE source = 'workos'")
    assert ticks == 1, "a fresh database each run"


@pytest.mark.parametrize("name", ["real.db", "notes.txt"])
def test_database_refuses_a_file_that_is_not_a_demo_database(user_dir: Path, name: str) -> None:
    target = user_dir / name
    if not target.exists():
        target.write_text("my notes\n")
    before = digest(target)
    result = syncd(user_dir, "demo", "--database", name, env=user_env(user_dir))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("syncd: configuration error: --database: ") and "not a syncd demo database" in line
    assert digest(target) == before


def test_examples_run_the_shipped_workflows_against_local_receivers(tmp_path: Path) -> None:
    """``syncd demo --examples``: the account-federation example reaches every user on all three receivers
    once (the sink fails 2% of calls: retried, never doubled); the welcome email reaches the real sign-ups."""
    result = syncd(tmp_path, "demo", "--events", "300", "--examples", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    db = tmp_path / "syncd-demo.db"
    created = query(db, "SELECT count(*) FROM syncd_events WHERE type = 'user.created'")[0][0]
    federation = dict(query(db, "SELECT status, count(*) FROM syncd_runs WHERE workflow = 'account-federation' "
                                "GROUP BY status"))
    assert federation == {"succeeded": created} and created > 0  # one run per new user, each succeeded
    welcome = dict(query(db, "SELECT status, count(*) FROM syncd_runs WHERE workflow = 'welcome-email' "
                             "GROUP BY status"))
    assert welcome == {"succeeded": 5}
    assert "2 welcome emails sent to the local SMTP server (ada@example.com, linus@example.com)" in result.stdout
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[-3:]}
    assert set(lines) == {"intercom", "slack", "close"}, result.stdout[-800:]
    for line in lines.values():
        assert line.endswith(" 0 duplicates"), line
        reached = int(line.split(",")[2].split()[0])
        assert reached >= created, line  # every new user reached (slack and intercom also hear of others)
    assert "0 failed, 0 dead" in result.stdout


def test_live_keeps_ticking_while_the_simulator_produces_new_events(tmp_path: Path) -> None:
    """``syncd demo --live SECONDS``: after the initial catch-up, new events (20 a second) keep arriving and
    are synced by later ticks, each with its own printed line."""
    result = syncd(tmp_path, "demo", "--events", "200", "--live", "5", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    db = tmp_path / "syncd-demo.db"
    [(workos_events,)] = query(db, "SELECT count(*) FROM syncd_events WHERE stream = 'workos'")
    ticks = [line.split() for line in result.stdout.splitlines() if line.split()[:1] == ["workos"]
             and " pages " in line]
    assert all(t[-1] == "ok" for t in ticks), ticks
    new = [int(t[t.index("new") - 1]) for t in ticks]
    # the catch-up, then live ticks (printed only when they bring something new) that synced the new events
    assert len(new) >= 2 and all(n > 0 for n in new), ticks
    assert workos_events == sum(new)
    [(pending,)] = query(db, "SELECT count(*) FROM syncd_runs WHERE status != 'succeeded'")
    assert pending == 0
