"""Start-up validation of the user's workflows (``syncd.workflows.validate``): each mistake stops ``syncd``
with exit status 2 and one line naming the workflow and the problem; a trigger on a source this process
does not poll is a warning. The CLI cases run ``syncd`` as a user does: a subprocess, a workflow module
in its working directory."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from connectors import github, workos
from connectors.sql import table
from connectors.workos.types import KNOWN_TYPES
from simulators.github import DEFAULT_TOKEN, GitHubSimulator
from simulators.workos import WorkOSSimulator
from syncd.workflows import Registry, Trigger, Workflow
from syncd.workflows.validate import problem_of, unconfigured

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk_test_validate_3c1d"
NOWHERE = "http://127.0.0.1:9"  # never reached: these configurations stop before any request
TIMEOUT = 60


def syncd(cwd: Path, module: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    (cwd / "acme_flows.py").write_text(module)
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cwd), "LANG": "C.UTF-8",
            "PYTHONPATH": str(ROOT), "PYTHONDONTWRITEBYTECODE": "1", "SYNCD_HTTP_PORT": "0",
            "DATABASE_URL": f"sqlite:///{cwd / 'v.db'}", "SYNCD_WORKFLOWS": "acme_flows",
            "SYNCD_BUILTINS": "none", "WORKOS_API_KEY": KEY, "WORKOS_BASE_URL": NOWHERE, "LOG_FORMAT": "text",
            **env}
    return subprocess.run([sys.executable, "-m", "syncd", *(args or ("once",))], cwd=cwd, env=full,
                          capture_output=True, text=True, timeout=TIMEOUT, check=False)


HEADER = textwrap.dedent("""
    import sqlalchemy as sa
    from syncd import workflow
    from connectors import workos, github
""")

CASES = {
    "misspelt type": (
        """
        @workflow(name="welcome", on=workos.events("user.craeted"))
        def welcome(event, ctx):
            pass
        """,
        "SYNCD_WORKFLOWS: workflow 'welcome' (acme_flows.welcome) listens to 'user.craeted', which workos "
        "does not send (did you mean 'user.created'?)"),
    "handler without ctx": (
        """
        @workflow(name="welcome", on=workos.events("user.created"))
        def welcome(event):
            pass
        """,
        "SYNCD_WORKFLOWS: workflow 'welcome' (acme_flows.welcome) has a handler welcome(event) that cannot be "
        "called as (event, ctx): too many positional arguments"),
    "batch needing three arguments": (
        """
        def many(events, ctx, extra):
            pass

        @workflow(name="bulk", on=workos.events("user.created"), batch=many)
        def one(event, ctx):
            pass
        """,
        "SYNCD_WORKFLOWS: workflow 'bulk' (acme_flows.one) has a batch handler many(events, ctx, extra) that "
        "cannot be called as (events, ctx): missing a required argument: 'extra'"),
    "where is not callable": (
        """
        @workflow(name="welcome", on=workos.events("user.created", where="event.data['email']"))
        def welcome(event, ctx):
            pass
        """,
        "SYNCD_WORKFLOWS: workflow 'welcome' (acme_flows.welcome) has where=\"event.data['email']\", which is "
        "not a function of the event"),
    "github where is not callable": (
        """
        @workflow(name="triage", on=github.issues(repo="acme/web", where=True))
        def triage(event, ctx):
            pass
        """,
        "SYNCD_WORKFLOWS: workflow 'triage' (acme_flows.triage) has where=True, which is not a function of the "
        "event"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_mistake_stops_start_up_with_one_line_naming_the_workflow(tmp_path: Path, case: str) -> None:
    code, expected = CASES[case]
    done = syncd(tmp_path, HEADER + textwrap.dedent(code))
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"syncd: configuration error: {expected}\n"
    assert not (tmp_path / "v.db").exists()  # stopped before touching the database


def test_syncd_check_reports_the_same_mistake(tmp_path: Path) -> None:
    code, expected = CASES["misspelt type"]
    done = syncd(tmp_path, HEADER + textwrap.dedent(code), "check")
    assert done.returncode == 2
    assert expected in done.stderr


def test_a_type_listed_in_workos_events_is_accepted(tmp_path: Path) -> None:
    """A type WorkOS added after syncd's list: naming it in WORKOS_EVENTS says it is meant."""
    module = HEADER + textwrap.dedent("""
        @workflow(name="new", on=workos.events("widget.created"))
        def new(event, ctx):
            pass
        """)
    refused = syncd(tmp_path, module)
    assert refused.returncode == 2 and "listens to 'widget.created', which workos does not send" in refused.stderr
    with WorkOSSimulator(events=0, api_key=KEY) as sim:
        sim.append({"event": "widget.created", "data": {"id": "w_1"}})
        done = syncd(tmp_path, module, WORKOS_BASE_URL=sim.url, WORKOS_EVENTS="widget.created")
    assert done.returncode == 0, done.stderr
    assert "1 runs ok" in done.stdout


def test_a_trigger_on_a_repository_not_configured_is_a_warning_naming_it(tmp_path: Path) -> None:
    module = HEADER + textwrap.dedent("""
        @workflow(name="triage", on=github.issues(repo="acme/wbe"))
        def triage(event, ctx):
            pass

        @workflow(name="welcome", on=workos.events("user.created"))
        def welcome(event, ctx):
            pass
        """)
    with GitHubSimulator(repos={"acme/web": 3}) as sim:
        done = syncd(tmp_path, module, GITHUB_REPOS="acme/web", GITHUB_BASE_URL=sim.url,
                     GITHUB_TOKEN=DEFAULT_TOKEN, WORKOS_API_KEY="", SYNCD_SOURCES="github")
    assert done.returncode == 0, done.stderr  # a warning: the module may serve another deployment
    lines = done.stderr.splitlines()
    assert any("workflow 'triage' (acme_flows.triage) listens to github:acme/wbe, which is not among the "
               "configured sources (github:acme/web) (did you mean 'github:acme/web'?)" in line for line in lines)
    assert any("workflow 'welcome' (acme_flows.welcome) listens to workos events, but no workos source is "
               "configured here" in line for line in lines)


def test_a_table_trigger_on_a_missing_table_is_a_warning_with_a_hint(tmp_path: Path) -> None:
    import sqlite3

    with sqlite3.connect(tmp_path / "v.db") as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
    module = HEADER + textwrap.dedent("""
        from connectors.sql import table

        @workflow(name="welcome", on=table("usres"))
        def welcome(event, ctx):
            pass
        """)
    done = syncd(tmp_path, module, WORKOS_API_KEY="")
    assert done.returncode == 1  # the source's tick fails, and says why
    assert "table 'usres' does not exist in sqlite:///" in done.stderr
    assert "(did you mean 'users'?)" in done.stderr


def test_a_misspelt_github_action_suggests_the_right_one() -> None:
    with pytest.raises(ValueError, match=r"\['opend'\].*\(did you mean 'opened'\?\)"):
        github.issues(actions=["opend"])


def _ok(event: Any, ctx: Any) -> None:
    return None


def _wf(fn: Any = _ok, *, trigger: Trigger | None = None, batch: Any = None, **extra: Any) -> Workflow:
    wf = Workflow(name="w", trigger=trigger or workos.events("user.created"), fn=fn, batch=batch)
    for name, value in extra.items():  # fields the API may add (``key=``): read with getattr by the check
        object.__setattr__(wf, name, value)
    return wf


def _defaults(event: Any, ctx: Any = None, *rest: Any, flag: bool = False) -> None:
    return None


class _Callable:
    def __call__(self, event: Any, ctx: Any) -> None:
        return None


@pytest.mark.parametrize(("make", "problem"), [
    (lambda: _wf(), None),
    (lambda: _wf(_defaults), None),
    (lambda: _wf(_Callable()), None),
    (lambda: _wf(lambda *args: None), None),
    (lambda: _wf(print), None),  # a builtin: nothing to check against, accepted
    (lambda: _wf(lambda event: None), "cannot be called as (event, ctx)"),
    (lambda: _wf(lambda event, ctx, more: None), "missing a required argument: 'more'"),
    (lambda: _wf(lambda *, event, ctx: None), "too many positional arguments"),
    (lambda: _wf(42), "has a handler 42, which is not callable as (event, ctx)"),
    (lambda: _wf(batch=lambda events: None), "has a batch handler"),
    (lambda: _wf(key="user_id"), "has key='user_id', which is not a function of the event"),
    (lambda: _wf(key=lambda e: e.data["id"]), None),
    (lambda: _wf(trigger=workos.events("user.delted")), "(did you mean 'user.deleted'?)"),
    (lambda: _wf(trigger=workos.events("zzz")), "listens to 'zzz', which workos does not send"),
    (lambda: _wf(trigger=workos.events()), None),  # every type of WORKOS_EVENTS
    (lambda: _wf(trigger=github.issues()), None),
    (lambda: _wf(trigger=Trigger(provider="github", types=frozenset({"github.isue"}))),
     "(did you mean 'github.issue'?)"),
])
def test_problem_of(make: Callable[[], Workflow], problem: str | None) -> None:
    wf = make()
    known = {"workos": KNOWN_TYPES, "github": github.provider.known_types({})}.get(wf.trigger.provider)
    found = problem_of(wf, known)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_every_type_the_simulator_sends_is_known() -> None:
    """The WorkOS list covers what the simulator (modelled on WorkOS) generates."""
    with WorkOSSimulator(events=2000, seed=3) as sim:
        sent = {e["event"] for e in sim.events()}
    assert sent <= KNOWN_TYPES and len(sent) >= 10


def test_unconfigured_skips_builtins_and_names_each_missing_stream() -> None:
    registry = Registry()
    registry.add(Workflow(name="mirror", trigger=github.issues(), fn=_ok, builtin=True))
    registry.add(Workflow(name="two", trigger=github.issues(repo=["a/b", "c/d"]), fn=_ok))
    registry.add(Workflow(name="rows", trigger=table("users"), fn=_ok))

    class _Source:
        def __init__(self, key: str) -> None:
            self.key = key

    warnings = unconfigured(registry, [_Source("github:a/b"), _Source("workos")])  # type: ignore[list-item]
    assert len(warnings) == 2
    assert "workflow 'two'" in warnings[0] and "listens to github:c/d," in warnings[0]
    assert "workflow 'rows'" in warnings[1] and "no sql source" in warnings[1]
