"""``syncd.testing.run``: one workflow on one event, for a unit test of a workflow.

::

    from datetime import timedelta
    from syncd.testing import run
    from myapp.onboarding import onboard

    result = run(onboard, type="user.created", data={"id": "user_1", "email": "ada@example.com"},
                 integrations={"close": {"id": "lead_1"}, "intercom": {}})
    assert result.status == "sleeping"
    result = result.resume(after=timedelta(minutes=30))
    assert result.status == "succeeded" and result.steps["crm"] == "lead_1"
    assert [c.integration for c in result.calls] == ["close", "email", "intercom", "slack"]  # in some order

It is a ``Sandbox`` holding only that workflow: the event goes through the simulated provider and
``syncd once`` like any other (a WorkOS event, or, for a table trigger, ``data`` inserted as a row of
its table, which ``schema`` creates).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from syncd.testing import Call, Sandbox, Schema
from syncd.workflows import Registry, Workflow, default_registry

__all__ = ["RunResult", "run"]


@dataclass(frozen=True)
class RunResult:
    """The run of one workflow on one event: ``status`` (``succeeded``, ``failed``, ``sleeping``…), its
    ``error``, ``steps`` (name → stored result) and every outbound ``calls`` so far."""

    status: str
    error: str | None
    steps: Mapping[str, Any]
    calls: list[Call]
    event_id: str
    sandbox: Sandbox = field(repr=False, compare=False)

    def resume(self, *, after: timedelta) -> RunResult:
        """Move the clock by ``after`` and run what came due (a sleep's end, a retry): the new result."""
        self.sandbox.advance(after)
        self.sandbox.once()
        return _result(self.sandbox, self.event_id)

    def close(self) -> None:
        """Stop the sandbox (also done once no result refers to it any more)."""
        self.sandbox.close()


def run(workflow: Callable[..., Any] | Workflow | str, *, type: str, data: Mapping[str, Any],
        id: str | None = None, now: datetime | None = None,
        integrations: Mapping[str, Any] | Iterable[str] | None = None, schema: Schema | Sequence[Schema] = (),
        env: Mapping[str, str] | None = None) -> RunResult:
    """Run ``workflow`` (its function, its ``Workflow`` or its name) on one event of ``type`` with ``data``.

    ``integrations``: names (each answered 200 with ``{}``), or name → the JSON to answer, a
    ``Reply(status, json)``, or a real ``http(s)://`` URL to send that integration's calls to.
    """
    wf = _find(workflow)
    registry = Registry()
    registry.add(wf)
    given = dict(integrations) if isinstance(integrations, Mapping) else dict.fromkeys(integrations or (), None)
    urls = {n: v for n, v in given.items() if isinstance(v, str) and v.startswith(("http://", "https://"))}
    canned = {n: v for n, v in given.items() if n not in urls and v is not None}
    extra = {f"SYNCD_INTEGRATION_{n.upper().replace('-', '_')}_URL": url for n, url in urls.items()}
    sandbox = Sandbox(registry=registry, schema=schema, integrations=[n for n in given if n not in urls],
                      responses=canned, env={**extra, **(env or {})}, now=now)
    try:
        event_id = _emit(sandbox, wf, type, data, id)
        sandbox.once()
        return _result(sandbox, event_id)
    except BaseException:
        sandbox.close()
        raise


def _find(workflow: Callable[..., Any] | Workflow | str) -> Workflow:
    if isinstance(workflow, Workflow):
        return workflow
    for wf in default_registry.all():
        if wf.fn is workflow or wf.name == workflow:
            return wf
    raise ValueError(f"{workflow!r} is not a registered workflow (decorated with @workflow and imported)")


def _emit(sandbox: Sandbox, wf: Workflow, event_type: str, data: Mapping[str, Any], event_id: str | None) -> str:
    """Put the event where the workflow's provider reads it; returns the id syncd will give it."""
    provider = wf.trigger.provider
    if provider == "workos":
        return sandbox.workos_event(event_type, data, id=event_id)
    spec = getattr(wf.trigger, "spec", None)  # a table trigger (connectors.sql.table)
    if provider == "sql" and spec is not None:
        columns = list(data)
        sandbox.sql(f"INSERT INTO {spec.table} ({', '.join(columns)}) VALUES "
                    f"({', '.join(':' + c for c in columns)})", dict(data))
        return str(data[spec.key])
    raise ValueError(f"run() drives WorkOS and table triggers; for {provider} use Sandbox (e.g. github_changes)")


def _result(sandbox: Sandbox, event_id: str) -> RunResult:
    found = [r for r in sandbox.runs() if r.event_id == event_id]
    if not found:
        return RunResult("not run", None, {}, sandbox.calls(), event_id, sandbox)  # filtered out (where=)
    only = found[0]
    return RunResult(only.status, only.error, dict(only.steps), sandbox.calls(), event_id, sandbox)
