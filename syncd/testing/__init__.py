"""``syncd.testing``: test your own workflows against simulated providers, the way ``syncd once`` runs them.

::

    import pytest
    from datetime import timedelta
    from syncd.testing import Sandbox

    SCHEMA = "CREATE TABLE welcome_queue (user_id TEXT PRIMARY KEY, email TEXT NOT NULL)"

    @pytest.fixture
    def sandbox(tmp_path):
        with Sandbox("myapp.workflows", path=tmp_path, schema=SCHEMA, integrations=["crm"]) as box:
            yield box

    def test_welcome(sandbox):
        sandbox.workos_event("user.created", {"id": "user_1", "email": "ada@example.com"})
        assert sandbox.once().exit_code == 0
        assert sandbox.query("SELECT user_id FROM welcome_queue") == [("user_1",)]
        assert [r.status for r in sandbox.runs("welcome")] == ["succeeded"]
        assert sandbox.calls("crm")[0].json == {"name": "ada@example.com"}

A ``Sandbox`` holds: the WorkOS simulator (an empty stream; add events with ``workos_event`` or realistic
ones with ``workos_events(n)``), the GitHub simulator for ``repos`` (``github_changes``), a recorder that
every outbound call goes to instead of the real receiver (each integration of ``integrations``, and Slack;
answered 200 with ``{}`` unless ``responses`` gives a JSON body or a ``Reply(status, json)``), a recording
SMTP server for ``ctx.send_email`` (when ``aiosmtpd`` is installed), a temporary SQLite database with
syncd's schema and yours (``schema=``: SQL text, a SQLAlchemy ``MetaData``, or a function of the engine),
and a fake clock (``advance`` moves it, so a 30-minute ``ctx.sleep`` is resumed by the next ``once``
without waiting).

``once()`` is ``syncd once`` in this process: settings from the sandbox's environment only (never the
real one, nor ``.env``), ``syncd.ops`` building the app and running every source's tick and the runs due
now. Only the workflows of the modules given run, even when other tests imported others.
"""

from __future__ import annotations

import importlib
import shutil
import tempfile
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import sqlalchemy as sa
import stamina

from syncd.contracts import FakeClock
from syncd.testing.receivers import Call, Mailbox, Recorder, Reply, mailbox_available
from syncd.workflows import Registry, default_registry

__all__ = ["Call", "OnceResult", "Reply", "Run", "RunResult", "Sandbox", "run"]

WORKOS_KEY = "sk_test_syncd_testing"
#: Above any attempts syncd configures, so each retry loop keeps its own setting (only the waits go).
RETRY_ATTEMPTS_CAP = 50
Schema = str | sa.MetaData | Callable[[sa.Engine], None]


@dataclass(frozen=True)
class Run:
    """One workflow run (``syncd_runs``), with its stored step results (name → value)."""

    workflow: str
    stream: str
    event_id: str
    status: str
    attempts: int
    error: str | None
    due: datetime | None
    steps: Mapping[str, Any]


@dataclass(frozen=True)
class OnceResult:
    """What ``Sandbox.once`` did: ``syncd once``'s exit code and its lines (one per source)."""

    exit_code: int
    lines: list[str]
    errors: list[str]


class Sandbox:
    """A throwaway syncd for one test; a context manager (``close`` stops everything it started)."""

    def __init__(self, *workflows: str | ModuleType, path: str | Path | None = None,
                 schema: Schema | Sequence[Schema] = (), repos: Mapping[str, int] | Iterable[str] = (),
                 integrations: Iterable[str] = (), responses: Mapping[str, Any] | None = None,
                 email: bool | None = None, builtins: str = "none",
                 env: Mapping[str, str] | None = None, now: datetime | None = None,
                 registry: Registry | None = None) -> None:
        from simulators.github import DEFAULT_TOKEN, GitHubSimulator
        from simulators.workos import WorkOSSimulator

        self._own_dir = path is None
        self.path = Path(tempfile.mkdtemp(prefix="syncd-test-") if path is None else path)
        self.clock = FakeClock(now or datetime.now(UTC))
        self.registry = registry if registry is not None else _registry_of(workflows)
        self.database_url = f"sqlite:///{self.path / 'syncd-test.db'}"
        self.db = sa.create_engine(self.database_url)
        self.workos = WorkOSSimulator(events=0, api_key=WORKOS_KEY)
        repo_counts = dict(repos) if isinstance(repos, Mapping) else dict.fromkeys(repos, 0)
        self.github = GitHubSimulator(repos=repo_counts, now=self.clock.now()) if repo_counts else None
        self.recorder = Recorder(responses)
        self.mailbox = Mailbox(self.recorder.record) if (mailbox_available() if email is None else email) else None
        self._started: list[Any] = []
        self._finalizer = weakref.finalize(self, _shutdown, self._started, self.db,
                                           self.path if self._own_dir else None)
        for server in (self.workos, self.github, self.recorder, self.mailbox):
            if server is not None:
                server.start()
                self._started.append(server)
        self.integrations = list(integrations)
        self.env = {"DATABASE_URL": self.database_url, "SYNCD_HTTP_PORT": "0", "SYNCD_BUILTINS": builtins,
                    "SYNCD_SLACK_WEBHOOK_URL": f"{self.recorder.url}/slack", "LOG_LEVEL": "WARNING"}
        for name in self.integrations:
            self.env[f"SYNCD_INTEGRATION_{name.upper().replace('-', '_')}_URL"] = f"{self.recorder.url}/{name}"
        if self.mailbox is not None:
            self.env.update(SYNCD_SMTP_URL=self.mailbox.url, SYNCD_SMTP_FROM="syncd-test@example.com")
        if any(wf.trigger.provider == "workos" for wf in self.registry.all()) or builtins != "none":
            self.env.update(WORKOS_API_KEY=WORKOS_KEY, WORKOS_BASE_URL=self.workos.url)
        if self.github is not None:
            self.env.update(GITHUB_REPOS=",".join(repo_counts), GITHUB_BASE_URL=self.github.url,
                            GITHUB_TOKEN=DEFAULT_TOKEN)
        self.env.update(env or {})
        from syncd.store.schema import migrate

        migrate(self.db)
        for part in [schema] if isinstance(schema, str | sa.MetaData) or callable(schema) else schema:
            self._create(part)

    # ---- events -----------------------------------------------------------------------------------------------

    def workos_event(self, type: str, data: Mapping[str, Any] | None = None, *, id: str | None = None,
                     created_at: str | None = None) -> str:
        """Add one WorkOS event (``type`` as WorkOS names it, ``data`` its object); returns its id."""
        raw: dict[str, Any] = {"event": type, "data": dict(data or {})}
        if id is not None:
            raw["id"] = id
        if created_at is not None:
            raw["created_at"] = created_at
        self.workos.append(raw)
        return str(self.workos.events()[-1]["id"])

    def workos_events(self, n: int) -> list[dict[str, Any]]:
        """Add ``n`` realistic WorkOS events (organizations, users, memberships created, updated, deleted,
        and a few other types) from the simulator's generator; returns them as WorkOS serves them."""
        before = len(self.workos.events())
        self.workos.generate(n)
        return self.workos.events()[before:]

    def github_changes(self, repo: str, n: int = 1) -> list[dict[str, Any]]:
        """Make ``n`` changes to ``repo``'s issues (opened, edited, closed, reopened); returns the issues."""
        if self.github is None:
            raise RuntimeError("no GitHub simulator: give Sandbox(repos=[...])")
        return self.github.mutate(repo, n)

    def sql(self, statement: str, params: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None) -> None:
        """Run a statement on the database (insert rows a table trigger should see), committed."""
        with self.db.begin() as conn:
            conn.execute(sa.text(statement), params if params is not None else {})

    # ---- running ----------------------------------------------------------------------------------------------

    def once(self) -> OnceResult:
        """``syncd once`` against the sandbox: every source ticks, the runs due now are executed."""
        from syncd.ops.app import App
        from syncd.ops.once import run_once
        from syncd.settings import Settings

        app = App.build(Settings.from_env(self.env), registry=self.registry, clock=self.clock)
        # Retries keep their attempts but never wait: a failing step costs a test no real backoff.
        with stamina.set_testing(True, attempts=RETRY_ATTEMPTS_CAP, cap=True):
            try:
                report = run_once(app)
            finally:
                app.close()
        lines = [outcome.line() for outcome in report.sources]
        errors = [outcome.error for outcome in report.sources if outcome.error]
        return OnceResult(report.exit_code, lines, errors)

    def advance(self, delta: timedelta | float) -> None:
        """Move the fake clock (and the GitHub simulator's) forward: sleeps and retries come due."""
        seconds = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
        self.clock.advance(seconds)
        if self.github is not None:
            self.github.advance(seconds)

    # ---- what happened ----------------------------------------------------------------------------------------

    def query(self, statement: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Rows of a query on the database, as tuples: for assertions on your own tables."""
        with self.db.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.text(statement), params or {})]

    def runs(self, workflow: str | None = None) -> list[Run]:
        """The workflow runs, oldest event first (``workflow``: only its runs)."""
        from syncd.store.tables import runs, steps

        query = sa.select(runs.c.workflow, runs.c.stream, runs.c.event_id, runs.c.status, runs.c.attempts,
                          runs.c.last_error, runs.c.next_attempt_at).order_by(runs.c.started_at, runs.c.event_id)
        if workflow is not None:
            query = query.where(runs.c.workflow == workflow)
        with self.db.connect() as conn:
            found = conn.execute(query).all()
            stored: dict[tuple[str, str, str], dict[str, Any]] = {}
            for row in conn.execute(sa.select(steps.c.workflow, steps.c.stream, steps.c.event_id, steps.c.step,
                                              steps.c.result)):
                result = row.result
                value = result["value"] if isinstance(result, dict) and set(result) == {"value"} else result
                stored.setdefault((row.workflow, row.stream, row.event_id), {})[row.step] = value
        return [Run(r.workflow, r.stream, r.event_id, r.status, r.attempts, r.last_error, r.next_attempt_at,
                    stored.get((r.workflow, r.stream, r.event_id), {})) for r in found]

    def calls(self, integration: str | None = None) -> list[Call]:
        """The outbound calls received, in order (``integration``: only that one's; ``slack``, ``email``)."""
        return [c for c in list(self.recorder.calls) if integration is None or c.integration == integration]

    # ---- lifecycle --------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the servers, close the database, remove the directory made for it (idempotent; also done
        when a sandbox nobody closed is garbage-collected)."""
        self._finalizer()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def _create(self, schema: Schema) -> None:
        """The user's tables, created the way the README tells users to create theirs."""
        if isinstance(schema, sa.MetaData):
            schema.create_all(self.db)
        elif isinstance(schema, str):
            raw = self.db.raw_connection()
            try:
                raw.driver_connection.executescript(schema)  # type: ignore[union-attr]
                raw.commit()
            finally:
                raw.close()
        else:
            schema(self.db)


def _shutdown(started: list[Any], db: sa.Engine, own_dir: Path | None) -> None:
    for server in reversed(started):
        server.stop()
    started.clear()
    db.dispose()
    if own_dir is not None:
        shutil.rmtree(own_dir, ignore_errors=True)


def _registry_of(modules: Sequence[str | ModuleType]) -> Registry:
    """The workflows registered by ``modules`` (imported now), and no others a test process imported."""
    names = []
    for module in modules:
        loaded = importlib.import_module(module) if isinstance(module, str) else module
        names.append(loaded.__name__)
    chosen = Registry()
    for wf in default_registry.all():
        home = getattr(wf.fn, "__module__", "") or ""
        if any(home == name or home.startswith(name + ".") for name in names):
            chosen.add(wf)
    return chosen


from syncd.testing.single import RunResult, run  # noqa: E402 - built on Sandbox, defined above
