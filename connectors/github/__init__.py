"""GitHub: each repository's issues (and pull requests) as a source, triggers for workflows, a mirror table.

::

    from connectors import github

    @workflow(name="triage", on=github.issues(repo="acme/web", pull_requests=False), version="1")
    def triage(event, ctx):
        if event.action == "opened":
            ...   # event.data is the issue as GitHub lists it

Settings: ``GITHUB_REPOS`` (comma list of ``owner/repo``; one source ``github:owner/repo`` each, in lower
case), ``GITHUB_TOKEN`` (optional; without it GitHub allows 60 requests an hour), ``GITHUB_BASE_URL``
(default ``https://api.github.com``; GitHub Enterprise Server uses ``https://HOST/api/v3``),
``GITHUB_RECONCILE_SECONDS`` (default 3600; 0 turns it off): how often each repository's deletions and
transfers are looked for (``connectors.github.reconcile``), when the built-in mirror is on (it is what a
reconciliation compares GitHub's listing with).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

from connectors.github.client import ACTIONS, EVENT_TYPE, GitHubConnector, is_pull_request, valid_actions
from connectors.github.mirrorindex import SqlMirrorIndex
from syncd.contracts import Connector, Event
from syncd.envreaders import get_float, get_str, normalize_database_url
from syncd.errors import ConfigError
from syncd.settings import get_list, get_secret, get_url, http_timeout
from syncd.workflows import Registry, Trigger

NAME = "github"
DEFAULT_BASE_URL = "https://api.github.com"
DEFAULT_RECONCILE_SECONDS = 3600.0

# GitHub's rules: owners are alphanumeric with inner hyphens (≤ 39); repository names ≤ 100 of [A-Za-z0-9._-].
_REPO = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/(?!\.{1,2}$)[A-Za-z0-9._-]{1,100}$")


def repo_name(value: str) -> str:
    """``owner/repo`` in lower case (GitHub names are case-insensitive); ``ValueError`` if malformed."""
    text = value.strip()
    if not _REPO.match(text):
        raise ValueError(f"not an owner/repo name: {value!r}")
    return text.lower()


def issues(repo: str | Iterable[str] | None = None, *, pull_requests: bool | None = None,
           actions: Iterable[str] | None = None, where: Callable[[Event], bool] | None = None) -> Trigger:
    """Trigger on GitHub issue versions (type ``github.issue``).

    ``repo``: one ``owner/repo`` or several (None: every configured repository). ``pull_requests``: True
    for pull requests only, False for issues only, None for both. ``actions``: some of opened, edited,
    closed, reopened, and deleted, transferred (found by reconciliation; None: all). ``where``: a further
    predicate of your own.
    """
    names = [repo] if isinstance(repo, str) else (list(repo) if repo is not None else None)
    streams = frozenset(f"{NAME}:{repo_name(r)}" for r in names) if names is not None else None
    if streams is not None and not streams:
        raise ValueError("repo: give at least one owner/repo, or None for every repository")
    chosen = valid_actions(actions) if actions is not None else None

    def matches(event: Event) -> bool:
        if pull_requests is not None and is_pull_request(event.data) != pull_requests:
            return False
        if chosen is not None and event.action not in chosen:
            return False
        return where is None or bool(where(event))

    if where is not None and not callable(where):  # left as given: the start-up check names the workflow
        return Trigger(provider=NAME, types=frozenset({EVENT_TYPE}), streams=streams, where=where)
    plain = pull_requests is None and chosen is None and where is None
    return Trigger(provider=NAME, types=frozenset({EVENT_TYPE}), streams=streams,
                   where=None if plain else matches)


class _Provider:
    name = NAME

    def known_types(self, environ: Mapping[str, str]) -> frozenset[str]:
        """The one type this connector emits (the action is ``event.action``: see ``ACTIONS``)."""
        return frozenset({EVENT_TYPE})

    def sources(self, environ: Mapping[str, str], registry: Registry) -> list[Connector]:
        """One connector per repository in ``GITHUB_REPOS``; [] when it is unset."""
        every = get_float(environ, "GITHUB_RECONCILE_SECONDS", DEFAULT_RECONCILE_SECONDS, minimum=0.0)
        repos: list[str] = []
        for raw in get_list(environ, "GITHUB_REPOS"):
            try:
                name = repo_name(raw)
            except ValueError:
                raise ConfigError("GITHUB_REPOS", f"expected a comma list of owner/repo, got {raw!r}"
                                  ) from None
            if name not in repos:
                repos.append(name)
        if not repos:
            return []
        token = get_secret(environ, "GITHUB_TOKEN")
        base_url = get_url(environ, "GITHUB_BASE_URL", DEFAULT_BASE_URL)
        timeout = http_timeout(environ)
        mirror = _mirror_index(environ, registry) if every > 0 else None
        return [GitHubConnector(repo=r, base_url=base_url, token=token, timeout=timeout, reconcile_seconds=every,
                                mirror=mirror) for r in repos]

    def builtin_workflows(self, registry: Registry) -> None:
        from connectors.github.workflows import register

        register(registry)


def _mirror_index(environ: Mapping[str, str], registry: Registry) -> SqlMirrorIndex | None:
    """The mirror a reconciliation compares with (None without the built-in mirror: nothing to compare)."""
    from connectors.github.workflows import NAME as MIRROR

    if registry.get(MIRROR) is None:
        return None
    return SqlMirrorIndex(normalize_database_url(get_str(environ, "DATABASE_URL", "sqlite:///syncd.db") or ""))


provider = _Provider()

__all__ = ["ACTIONS", "DEFAULT_BASE_URL", "EVENT_TYPE", "NAME", "GitHubConnector", "issues", "provider",
           "repo_name"]
