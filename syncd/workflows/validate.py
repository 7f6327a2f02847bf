"""Start-up checks of the registered workflows: a user's mistakes caught before the first tick.

Without these, a misspelt event type (``user.craeted``) silently never matches, and a handler with the
wrong signature (``def f(event)``) only shows up later as retries and dead letters. ``check`` raises a
``ConfigError`` (exit status 2) with one line naming the workflow, where it is defined, and the problem,
with a suggestion where one fits::

    SYNCD_WORKFLOWS: workflow 'welcome' (myapp.workflows.welcome) listens to 'user.craeted', which workos
    does not send (did you mean 'user.created'?)

``unconfigured`` returns warnings, not errors, for triggers naming a source this process does not poll (a
repository missing from ``GITHUB_REPOS``, a provider without credentials): a team may share one workflow
module between deployments that poll different sources.

What a provider knows: its optional ``known_types(environ)`` method returns the event types it can send
(``None``: any). Providers without it (third-party plugins) are not checked for types.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from syncd.contracts import Connector, Provider
from syncd.errors import ConfigError
from syncd.workflows import Registry, Workflow

VARIABLE = "SYNCD_WORKFLOWS"


def check(registry: Registry, providers: Sequence[Provider], environ: Mapping[str, str]) -> None:
    """Raise ``ConfigError`` (``SYNCD_WORKFLOWS``) for the first workflow that could never run right:
    a handler or batch handler not callable as ``(event, ctx)`` / ``(events, ctx)``, a ``where=`` or
    ``key=`` that is not callable, or an event type its provider does not send."""
    known = _known_types(providers, environ)
    for wf in registry.all():
        problem = problem_of(wf, known.get(wf.trigger.provider))
        if problem is not None:
            raise ConfigError(VARIABLE, f"workflow {wf.name!r} ({where(wf)}) {problem}")


def problem_of(wf: Workflow, known: Collection[str] | None) -> str | None:
    """What is wrong with ``wf`` (a phrase following its name), or None. ``known``: its provider's types."""
    problem = _call_problem(wf.fn, "handler", "(event, ctx)")
    if problem is None and wf.batch is not None:
        problem = _call_problem(wf.batch, "batch handler", "(events, ctx)")
    if problem is None and wf.trigger.where is not None and not callable(wf.trigger.where):
        problem = f"has where={_shown(wf.trigger.where)}, which is not a function of the event"
    key = getattr(wf, "key", None)  # ``@workflow(key=...)``: per-key ordering, where the API has it
    if problem is None and key is not None and not callable(key):
        problem = f"has key={_shown(key)}, which is not a function of the event"
    if problem is None and known is not None and wf.trigger.types is not None:
        problem = _type_problem(wf.trigger.provider, wf.trigger.types, known)
    return problem


def unconfigured(registry: Registry, connectors: Iterable[Connector]) -> list[str]:
    """One warning per user workflow trigger naming a provider or stream that no connector here polls."""
    keys = [c.key for c in connectors]
    providers = {k.split(":", 1)[0] for k in keys}
    warnings: list[str] = []
    for wf in registry.all():
        if wf.builtin:
            continue
        trigger, who = wf.trigger, f"workflow {wf.name!r} ({where(wf)})"
        if trigger.provider not in providers:
            warnings.append(f"{who} listens to {trigger.provider} events, but no {trigger.provider} source is "
                            f"configured here: it will not run")
            continue
        for stream in sorted(trigger.streams or ()):
            if stream not in keys:
                same = [k for k in keys if k.split(":", 1)[0] == trigger.provider]
                warnings.append(f"{who} listens to {stream}, which is not among the configured sources "
                                f"({', '.join(same)}){_suggestion(stream, same)}")
    return warnings


def where(wf: Workflow) -> str:
    """``module.qualname`` of a workflow's handler, to find it in the user's code."""
    return f"{getattr(wf.fn, '__module__', '?')}.{getattr(wf.fn, '__qualname__', type(wf.fn).__name__)}"


def _known_types(providers: Sequence[Provider], environ: Mapping[str, str]) -> dict[str, Collection[str]]:
    found: dict[str, Collection[str]] = {}
    for provider in providers:
        declared: Callable[[Mapping[str, str]], Collection[str] | None] | None = getattr(
            provider, "known_types", None)
        types = declared(environ) if callable(declared) else None
        if types is not None:
            found[provider.name] = types
    return found


def _call_problem(fn: Any, what: str, shape: str) -> str | None:
    """Why ``fn`` cannot be called with two positional arguments, or None (also when it cannot be told)."""
    if not callable(fn):
        return f"has a {what} {_shown(fn)}, which is not callable as {shape}"
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin or C function: no signature to check against
        return None
    try:
        signature.bind(None, None)
    except TypeError as exc:
        return f"has a {what} {_name(fn)}{signature} that cannot be called as {shape}: {exc}"
    return None


def _type_problem(provider: str, types: Collection[str], known: Collection[str]) -> str | None:
    for event_type in sorted(types):
        if event_type not in known:
            return f"listens to {event_type!r}, which {provider} does not send{_suggestion(event_type, known)}"
    return None


def _suggestion(wrong: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(wrong, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _name(fn: Any) -> str:
    return str(getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__)


def _shown(value: object) -> str:
    """A short form of a wrong value: its type, and the value itself only when it is short."""
    text = repr(value)
    return text if len(text) <= 40 else f"<{type(value).__name__}>"


__all__ = ["VARIABLE", "check", "problem_of", "unconfigured", "where"]
