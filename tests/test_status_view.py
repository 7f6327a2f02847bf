"""``syncd status`` reads well at scale (issue #18, item 9): readable cursors, failed runs grouped by error with
counts, ``--source``/``--workflow``/``--status`` filters, and a database path that does not exist is said to
be missing (exit 2, one line) instead of being created."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from connectors import workos
from connectors.github.client import Cursor
from simulators.workos import WorkOSSimulator
from syncd.cli import main
from syncd.ops.app import App
from syncd.ops.statusparts import cursor_text
from syncd.workflows import Registry
from tests.conftest import WORKOS_KEY, workos_env

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("cursor", "text"), [
    (None, "(start)"),
    ("event_01HZX3", "event_01HZX3"),
    ("x" * 200, "x" * 96 + "… (200 chars; --json shows it all)"),
    (Cursor(since="2026-03-01T12:00:00Z", seen=frozenset({(1, "2026-03-01T12:00:00Z"), (2, "2026-03-01T12:00:00Z"),
                                                          (3, "2026-03-01T12:00:05Z")}),
            next_url="https://api.github.com/repositories/1/issues?page=2&since=x", etag='W/"abc"').dumps(),
     "since 2026-03-01T12:00:00Z · seen: 3 entries · following a next-page link · ETag kept (idle polls are free)"),
    (Cursor().dumps(), "(start)"),
])
def test_cursors_read_as_text(cursor: str | None, text: str) -> None:
    assert cursor_text(cursor) == text


def failing_registry() -> Registry:
    """``welcome`` dead-letters every user event with one error; ``audit`` fails (to retry) on organizations."""
    registry = Registry()

    @registry.workflow("welcome", on=workos.events("user.created"), retries=1)
    def welcome(event, ctx):  # type: ignore[no-untyped-def]
        raise RuntimeError("mail server said 550: mailbox unavailable")

    @registry.workflow("audit", on=workos.events("organization.created"))
    def audit(event, ctx):  # type: ignore[no-untyped-def]
        raise ValueError("audit log is read-only")

    return registry


@pytest.fixture
def sim() -> Iterator[WorkOSSimulator]:
    with WorkOSSimulator(events=600, seed=17, api_key=WORKOS_KEY) as simulator:
        yield simulator


def status(capsys: pytest.CaptureFixture[str], url: str, *args: str) -> tuple[int, str, str]:
    code = main(["status", *args], {"DATABASE_URL": url, "PATH": os.environ.get("PATH", "")})
    out, err = capsys.readouterr()
    return code, out, err


def test_failures_are_grouped_with_counts_and_filtered(tmp_path: Path, sim: WorkOSSimulator,
                                                       make_app: Callable[..., App],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'status.db'}"
    app = make_app(url, registry=failing_registry(), SYNCD_BUILTINS="none", **workos_env(sim))
    app.tick_all()
    capsys.readouterr()
    welcome_runs = sum(1 for e in sim.events() if e["event"] == "user.created")
    audit_runs = sum(1 for e in sim.events() if e["event"] == "organization.created")
    assert welcome_runs > 20 and audit_runs > 2  # more than one screen of runs, before grouping

    code, out, _ = status(capsys, url)
    assert code == 0
    lines = out.splitlines()
    head = lines.index("Failed and dead runs, grouped by error (largest group first):")
    assert lines[head + 1].startswith("  dead   welcome ← workos ")
    assert lines[head + 1].endswith("(attempt 1): RuntimeError: mail server said 550: mailbox unavailable")
    assert lines[head + 2] == f"         … and {welcome_runs - 1} more like it"
    assert lines[head + 3].startswith("  failed audit ← workos ")
    assert lines[head + 3].endswith("ValueError: audit log is read-only")
    assert lines[head + 4] == f"         … and {audit_runs - 1} more like it"
    assert lines[head + 6].startswith("Retention: ")  # two groups, not hundreds of lines; then retention's
    assert len(lines) == head + 9  # head, size, one stream

    code, out, _ = status(capsys, url, "--workflow", "audit", "--json")
    report = json.loads(out)
    assert code == 0 and [(g["workflow"], g["runs"]) for g in report["problem_groups"]] == [("audit", audit_runs)]
    assert report["sources"][0]["runs"] == {"succeeded": 0, "failed": audit_runs, "dead": 0, "sleeping": 0,
                                            "queued": 0, "running": 0, "pending": 0}
    assert {r["workflow"] for r in report["problem_runs"]} == {"audit"}

    code, out, _ = status(capsys, url, "--status", "dead", "--source", "workos", "--json")
    assert [(g["workflow"], g["status"]) for g in json.loads(out)["problem_groups"]] == [("welcome", "dead")]

    code, out, err = status(capsys, url, "--source", "github")
    assert code == 2 and out == ""
    assert err == "syncd status: no source matches --source 'github' (sources: workos)\n"


def run_status(tmp_path: Path, url: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "PYTHONPATH": str(ROOT),
           "LANG": "C.UTF-8", "DATABASE_URL": url}
    return subprocess.run([sys.executable, "-m", "syncd", "status"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=60, check=False)


def test_status_on_a_missing_database_says_so_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "syncd.db"
    result = run_status(tmp_path, f"sqlite:///{missing}")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"syncd: configuration error: DATABASE_URL: no database at {missing}: nothing has synced there "
        "(check the path, or run `syncd migrate` or `syncd once` first)"]
    assert not missing.exists() and not missing.parent.exists()


def test_status_on_a_database_without_syncd_tables_leaves_it_alone(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    code, out, err = status(capsys, f"sqlite:///{empty}")
    assert code == 2 and out == "" and "DATABASE_URL: the database has no syncd tables yet" in err
    with sqlite3.connect(empty) as conn:  # not migrated behind the user's back
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)
