"""``SYNCD_LOG_PAYLOADS`` (issue #25, item 4): off by default, no payload value (users' e-mails, names) in logs,
exported spans or stored run errors; on, they may appear, with a warning at start-up; a bad value exits 2.

Real things: ``syncd once`` in a subprocess against the WorkOS simulator, its stderr as the log capture, a real
OTLP receiver on loopback for its spans (the raw bytes it received), and the run rows it stored.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from simulators.workos import WorkOSSimulator
from syncd import payloads
from syncd.errors import ConfigError
from syncd.settings import Settings
from syncd.store.tables import runs
from tests.conftest import WORKOS_KEY
from tests.otlp_receiver import OTLPReceiver

ROOT = Path(__file__).resolve().parents[1]

LEAKY_WORKFLOWS = '''
import sqlalchemy as sa

from connectors import workos
from syncd import workflow


@workflow(name="pl.welcome", on=workos.events("user.created"), retries=1)
def welcome(event, ctx):
    raise ValueError(f"could not welcome {event.data['first_name']} <{event.data['email']}> ({event.data['id']})")


@workflow(name="pl.sql", on=workos.events("user.updated"), retries=1)
def copy(event, ctx):
    ctx.db.execute(sa.text("INSERT INTO no_such_table (email) VALUES (:email)"), {"email": event.data["email"]})
'''


def run_once(tmp_path: Path, db_url: str, sim: WorkOSSimulator, **extra: str) -> tuple[str, bytes]:
    """``syncd once`` with the leaky workflows, exporting spans; its stderr and the OTLP bytes received."""
    (tmp_path / "leaky_wf.py").write_text(LEAKY_WORKFLOWS)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "LANG": "C.UTF-8",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]), "PYTHONDONTWRITEBYTECODE": "1",
           "SYNCD_HTTP_PORT": "0", "DATABASE_URL": db_url, "WORKOS_API_KEY": WORKOS_KEY, "WORKOS_BASE_URL": sim.url,
           "SYNCD_WORKFLOWS": "leaky_wf", "SYNCD_BUILTINS": "none", "LOG_FORMAT": "json", **extra}
    with OTLPReceiver() as rx:
        done = subprocess.run([sys.executable, "-m", "syncd", "once"], cwd=tmp_path, env={
            **env, "OTEL_EXPORTER_OTLP_ENDPOINT": rx.url}, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 1, done.stderr  # the failed runs
        raw = rx.raw
    assert raw and "pl.welcome failed" in done.stderr
    return done.stderr, raw


def stored_errors(db_url: str) -> dict[str, str]:
    db = sa.create_engine(db_url)
    try:
        with db.connect() as conn:
            return {r.event_id: r.last_error for r in conn.execute(
                sa.select(runs.c.event_id, runs.c.last_error).where(runs.c.status == "dead"))}
    finally:
        db.dispose()


def user_values(sim: WorkOSSimulator) -> tuple[dict[str, dict[str, str]], set[str]]:
    """Per event id, the user's data; and every e-mail address the simulator's users have."""
    by_event = {e["id"]: e["data"] for e in sim.events() if e["event"] in ("user.created", "user.updated")}
    return by_event, {d["email"] for d in by_event.values()}


@pytest.fixture
def sim() -> Iterator[WorkOSSimulator]:
    with WorkOSSimulator(events=120, seed=5, api_key=WORKOS_KEY) as simulator:
        yield simulator


def test_off_by_default_no_payload_value_leaves(tmp_path: Path, db_url: str, sim: WorkOSSimulator) -> None:
    stderr, raw = run_once(tmp_path, db_url, sim)
    by_event, emails = user_values(sim)
    assert emails
    errors = stored_errors(db_url)
    assert len(errors) >= 10
    for email in emails:
        assert email not in stderr and email.encode() not in raw
    assert not re.search(r"[\w.+-]+@example-\d+\.com", stderr + raw.decode("latin-1"))
    assert "SYNCD_LOG_PAYLOADS is on" not in stderr
    welcomed = [(event_id, error) for event_id, error in errors.items() if "could not welcome" in error]
    assert welcomed
    for event_id, error in welcomed:  # type and message kept, payload values masked, the id kept
        assert error == f"ValueError: could not welcome [payload value] <[payload value]> ({by_event[event_id]['id']})"
    copied = [error for error in errors.values() if "no_such_table" in error]
    assert copied and all("[parameters" not in e and "@" not in e for e in copied)  # the SQL's values cut


def test_on_payloads_may_be_logged_with_a_warning(tmp_path: Path, sqlite_url: str, sim: WorkOSSimulator) -> None:
    stderr, raw = run_once(tmp_path, sqlite_url, sim, SYNCD_LOG_PAYLOADS="true")
    by_event, emails = user_values(sim)
    assert "SYNCD_LOG_PAYLOADS is on" in stderr.splitlines()[0]  # the first line, before any work
    errors = stored_errors(sqlite_url)
    welcomed = [(event_id, error) for event_id, error in errors.items() if "could not welcome" in error]
    assert welcomed
    for event_id, error in welcomed:
        data = by_event[event_id]
        assert error == f"ValueError: could not welcome {data['first_name']} <{data['email']}> ({data['id']})"
    assert any(email in stderr for email in emails)
    assert any(email.encode() in raw for email in emails)


@pytest.mark.parametrize("value", ["yes", "1", "on", "TRUE!", ""])
def test_a_bad_value_exits_2_naming_the_variable(tmp_path: Path, value: str) -> None:
    if value:
        with pytest.raises(ConfigError, match="SYNCD_LOG_PAYLOADS"):
            Settings.from_env({"SYNCD_LOG_PAYLOADS": value})
    else:  # empty: the default
        assert Settings.from_env({"SYNCD_LOG_PAYLOADS": value}).log_payloads is False
        return
    done = subprocess.run([sys.executable, "-m", "syncd", "status"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
                                           "SYNCD_LOG_PAYLOADS": value, "PYTHONPATH": str(ROOT)}, check=False)
    assert done.returncode == 2 and "SYNCD_LOG_PAYLOADS" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_settings_default_and_true() -> None:
    assert Settings.from_env({}).log_payloads is False
    assert Settings.from_env({"SYNCD_LOG_PAYLOADS": "True"}).log_payloads is True
    assert Settings.from_env({"SYNCD_LOG_PAYLOADS": "false"}).log_payloads is False


@pytest.mark.parametrize(("text", "payload", "expected"), [
    ("KeyError: 'ann@example.com'", {"email": "ann@example.com"}, "KeyError: '[payload value]'"),
    ("bad user user_1 (Ann Lee)", {"id": "user_1", "name": "Ann Lee", "tags": ["vip"]},
     "bad user user_1 ([payload value])"),
    ("nested Zoë in org org_9", {"profile": {"first_name": "Zoë"}, "organization_id": "org_9"},
     "nested [payload value] in org org_9"),
    ("mail to bob@example.org failed", {}, "mail to [e-mail] failed"),  # not from the payload: an e-mail still
    ("no values here: ok", {"status": "ok"}, "no values here: ok"),  # two letters: an ordinary word
])
def test_without_payload(text: str, payload: dict[str, object], expected: str) -> None:
    assert payloads.without_payload(text, payload) == expected
