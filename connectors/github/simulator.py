"""A loopback HTTP server that speaks GitHub's "list repository issues" REST contract.

Stands in for api.github.com in the tests, `syncd demo` and the benchmarks. It imports nothing
from `syncd`, so it can never agree with the client by accident.

Contract served (GET only):

- ``/repos/{owner}/{repo}/issues`` and ``/repositories/{repo_id}/issues`` with ``state``
  (open|closed|all, default open), ``sort`` (created|updated|comments, default created),
  ``direction`` (asc|desc, default desc), ``since`` (ISO-8601; keeps ``updated_at >= since``),
  ``per_page`` (default 30, at most 100) and ``page`` (1-based). Ties in the sort key are broken
  by issue number in the same direction, so the order is total and deterministic. Pull requests
  are listed too and carry a ``pull_request`` key. An invalid enum or ``since`` is a 422.
- ``Link`` (prev/next/last/first, absolute URLs) always points at ``/repositories/{id}/issues``,
  so a client that rebuilds URLs instead of following them breaks here as it would on GitHub.
- Every 200 has a weak ``ETag`` (a hash of the body and the Link header); ``If-None-Match``
  with it gives a 304 without a body that does not count against the rate limit.
- Rate limits per token, or per client IP without one: 5000 / 60 per hour-long window that
  starts at the window's first request; ``x-ratelimit-limit/remaining/used/reset/resource``
  on every API response. An exhausted window gives 403 "API rate limit exceeded" until reset.
  ``rate_limit_next`` injects throttling responses (403 or 429, with or without retry-after).
- ``Authorization: Bearer <t>`` or ``token <t>``; an unknown token is a 401, no header is
  anonymous. An unknown repository or path is a 404. ``/rate_limit`` (not counted) and
  ``/health`` (no auth) are 200.

Time: the simulator has its own clock, which moves only through `advance` (the CLI keeps it on
the wall clock). A change is visible once its ``updated_at`` is at or before the clock.
``x-ratelimit-reset`` is in epoch seconds of that clock; the default start is the current
wall-clock second, so both agree unless a test picks another ``now``.

Data: deterministic from the seed and the repos (their order gives the repo ids). Each repo's
history spans at least 30 days before the start and is a series of bursts of 1-8 changes in
the same second (creates, title/label/body/comment edits, closes, reopens), so several issues
sharing an ``updated_at`` second is common.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import hashlib
import json
import random
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit

__all__ = ["GitHubSimulator", "main"]

JSON = dict[str, Any]
RequestRecord = tuple[str, int, dict[str, str]]

DEFAULT_REPOS: Final[dict[str, int]] = {"acme/web": 120, "acme/api": 80}
DEFAULT_TOKEN: Final = "ghp_simulator"
TOKEN_LIMIT: Final = 5000
ANONYMOUS_LIMIT: Final = 60
WINDOW_SECONDS: Final = 3600
MAX_PER_PAGE: Final = 100
DEFAULT_PER_PAGE: Final = 30
HISTORY_SECONDS: Final = 30 * 86400

# Item URLs are data, never followed by syncd; they keep GitHub's real shape.
_API: Final = "https://api.github.com"
_WEB: Final = "https://github.com"
_DOCS: Final = "https://docs.github.com/rest"
_RECORDED_HEADERS: Final = ("accept", "if-none-match", "user-agent", "x-github-api-version")
_BURST_SIZES: Final = (1, 1, 1, 2, 2, 3, 4, 5, 8)
_USERS: Final = (
    ("octocat", 583231),
    ("hubot", 480938),
    ("monalisa", 2),
    ("defunkt", 2698),
    ("mojombo", 1),
    ("pjhyett", 3),
    ("wycats", 4),
    ("ezmobius", 5),
)
_LABELS: Final = (
    ("bug", "d73a4a"),
    ("enhancement", "a2eeef"),
    ("documentation", "0075ca"),
    ("question", "d876e3"),
    ("good first issue", "7057ff"),
    ("help wanted", "008672"),
    ("wontfix", "ffffff"),
    ("duplicate", "cfd3d7"),
)
_VERBS: Final = ("Fix", "Add", "Remove", "Refactor", "Document", "Speed up", "Test", "Handle")
_NOUNS: Final = (
    "login flow",
    "rate limiter",
    "cache layer",
    "webhook retries",
    "search index",
    "billing page",
    "CSV export",
    "dark mode",
    "API pagination",
    "audit log",
)


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _to_epoch(when: datetime) -> float:
    """Epoch seconds of `when`; a naive datetime is taken as UTC."""
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


# --------------------------------------------------------------------------- data model
@dataclass(slots=True)
class _Version:
    """One state of an issue, visible from `time` (its updated_at, epoch s); `issue` None = deleted.

    Never changed once made (snapshots share nested objects); only the encoding is filled in,
    on first use, because most past versions are never served.
    """

    time: int
    number: int
    created: int
    comments: int
    state: str
    issue: JSON | None
    encoded: bytes | None = None

    @property
    def body(self) -> bytes:
        if self.encoded is None:
            self.encoded = json.dumps(self.issue, separators=(",", ":")).encode()
        return self.encoded


def _version(number: int, time_: int, issue: JSON | None, created: int) -> _Version:
    if issue is None:
        return _Version(time_, number, created, 0, "deleted", None, b"")
    return _Version(time_, number, created, issue["comments"], issue["state"], issue)


_SORT_KEYS: Final[dict[str, Callable[[_Version], tuple[int, int]]]] = {
    "created": lambda v: (v.created, v.number),
    "updated": lambda v: (v.time, v.number),
    "comments": lambda v: (v.comments, v.number),
}


@dataclass(slots=True)
class _Issue:
    """Every version of one issue, in time order (at most one per second)."""

    versions: list[_Version]
    times: list[int]

    def at(self, now: int) -> _Version | None:
        if self.times[-1] <= now:  # the common case: nothing scheduled in the future
            return self.versions[-1]
        index = bisect.bisect_right(self.times, now) - 1
        return self.versions[index] if index >= 0 else None

    def put(self, version: _Version) -> None:
        """Append `version`, or replace the last one when it is from the same second."""
        if self.times[-1] == version.time:
            self.versions[-1] = version
        else:
            self.versions.append(version)
            self.times.append(version.time)


@dataclass(slots=True)
class _Repo:
    full_name: str
    repo_id: int
    index: int
    rng: random.Random
    issues: dict[int, _Issue] = field(default_factory=dict)
    generation: int = 0
    view_key: tuple[int, int] = (-1, -1)
    visible: list[_Version] = field(default_factory=list)
    views: dict[tuple[str, str, str], list[_Version]] = field(default_factory=dict)

    def issue_id(self, number: int) -> int:
        return 1_000_000_000 + self.index * 10_000_000 + number

    def listing(self, now: int, state: str, sort: str, direction: str) -> list[_Version]:
        """Visible issues at `now` in the requested order; cached until the clock or data move."""
        if self.view_key != (now, self.generation):
            self.visible = [
                v for i in self.issues.values() if (v := i.at(now)) is not None and v.issue is not None
            ]
            self.views = {}
            self.view_key = (now, self.generation)
        key = (state, sort, direction)
        if key not in self.views:
            items = [v for v in self.visible if state == "all" or v.state == state]
            items.sort(key=_SORT_KEYS[sort], reverse=direction == "desc")
            self.views[key] = items
        return self.views[key]


# --------------------------------------------------------------------------- data generation
def _labels(repo: _Repo, rng: random.Random) -> list[JSON]:
    picked = sorted(rng.sample(range(len(_LABELS)), rng.choice((0, 1, 1, 2))))
    return [
        {"id": 5_000_000 + repo.index * 100 + i, "name": _LABELS[i][0], "color": _LABELS[i][1]}
        for i in picked
    ]


def _user(rng: random.Random) -> JSON:
    login, user_id = rng.choice(_USERS)
    return {"login": login, "id": user_id}


def _new_issue(repo: _Repo, number: int, now: int, rng: random.Random) -> JSON:
    is_pr = rng.random() < 0.3
    issue_id, name, stamp = repo.issue_id(number), repo.full_name, _iso(now)
    assignees = [_user(rng)] if rng.random() < 0.4 else []
    issue: JSON = {
        "url": f"{_API}/repos/{name}/issues/{number}",
        "repository_url": f"{_API}/repos/{name}",
        "html_url": f"{_WEB}/{name}/{'pull' if is_pr else 'issues'}/{number}",
        "id": issue_id,
        "node_id": f"{'PR' if is_pr else 'I'}_kwDO{issue_id:012x}",
        "number": number,
        "title": f"{rng.choice(_VERBS)} {rng.choice(_NOUNS)}",
        "user": _user(rng),
        "labels": _labels(repo, rng),
        "state": "open",
        "state_reason": None,
        "locked": False,
        "assignee": assignees[0] if assignees else None,
        "assignees": assignees,
        "comments": 0,
        "created_at": stamp,
        "updated_at": stamp,
        "closed_at": None,
        "author_association": "MEMBER",
        "body": f"Seen in {name} since {stamp[:10]}.",
    }
    if is_pr:
        issue["pull_request"] = {
            "url": f"{_API}/repos/{name}/pulls/{number}",
            "html_url": f"{_WEB}/{name}/pull/{number}",
            "diff_url": f"{_WEB}/{name}/pull/{number}.diff",
            "patch_url": f"{_WEB}/{name}/pull/{number}.patch",
            "merged_at": None,
        }
    return issue


def _changed(repo: _Repo, prev: JSON, now: int, rng: random.Random) -> JSON:
    """A new state of `prev` at `now`: an edit, a close or a reopen (a merged PR stays closed)."""
    issue = dict(prev)  # nested values are replaced, never changed in place, except the PR's
    stamp = issue["updated_at"] = _iso(now)
    pull: JSON | None = None
    if "pull_request" in prev:
        pull = issue["pull_request"] = dict(prev["pull_request"])
    if issue["state"] == "open":
        action = rng.choice(("edit", "edit", "edit", "close", "close"))
    else:
        merged = pull is not None and pull["merged_at"] is not None
        action = "edit" if merged else rng.choice(("edit", "reopen"))
    if action == "close":
        issue.update(state="closed", closed_at=stamp)
        if pull is None:
            issue["state_reason"] = rng.choice(("completed", "completed", "not_planned"))
        elif rng.random() < 0.7:
            pull["merged_at"] = stamp
    elif action == "reopen":
        issue.update(state="open", closed_at=None, state_reason="reopened")
    else:
        field_ = rng.choice(("title", "labels", "body", "comments"))
        if field_ == "title":
            issue["title"] = f"{rng.choice(_VERBS)} {rng.choice(_NOUNS)} ({stamp[:10]})"
        elif field_ == "labels":
            issue["labels"] = _labels(repo, rng)
        elif field_ == "body":
            issue["body"] = f"{issue['body']}\n\nUpdate {stamp}."
        else:
            issue["comments"] += rng.randint(1, 3)
    return issue


def _apply_change(
    repo: _Repo, now: int, create: bool, touched: set[int], *, fallback_create: bool = True
) -> _Version | None:
    """One change at `now`: a new issue, or a new state of one not yet changed in this burst.

    When no such issue is found after a few draws it creates one, or with `fallback_create`
    false makes no change (None) so that the history keeps its exact issue count.
    """
    rng = repo.rng
    if not create:
        for _ in range(8 if repo.issues else 0):
            number = rng.randint(1, len(repo.issues))  # numbers are 1..len, never removed
            current = repo.issues[number].versions[-1]
            if number not in touched and current.time <= now and current.issue is not None:
                touched.add(number)
                issue = _changed(repo, current.issue, now, rng)
                version = _version(number, now, issue, current.created)
                repo.issues[number].put(version)
                return version
        if not fallback_create:
            return None
    number = len(repo.issues) + 1
    touched.add(number)
    version = _version(number, now, _new_issue(repo, number, now, rng), now)
    repo.issues[number] = _Issue([version], [now])
    return version


def _generate_history(repo: _Repo, count: int, end: int) -> None:
    """`count` issues created before `end`, with about 1.2 further changes each, in bursts."""
    rng = repo.rng
    kinds = [True] * count + [False] * (count + count // 5)
    rng.shuffle(kinds)
    bursts: list[list[bool]] = []
    while kinds:
        size = rng.choice(_BURST_SIZES)
        bursts.append(kinds[:size])
        del kinds[:size]
    span = max(HISTORY_SECONDS, 2 * len(bursts))
    for offset, burst in zip(sorted(rng.sample(range(span), len(bursts))), bursts, strict=True):
        touched: set[int] = set()
        for create in burst:
            _apply_change(repo, end - span + offset, create, touched, fallback_create=False)
    repo.generation += 1


# --------------------------------------------------------------------------- HTTP plumbing
@dataclass(frozen=True, slots=True)
class _Response:
    status: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class _Throttle:
    status: int
    retry_after: int | None
    reset_in: int


@dataclass(slots=True)
class _Bucket:
    limit: int
    used: int
    reset: int

    def headers(self) -> tuple[tuple[str, str], ...]:
        return (
            ("x-ratelimit-limit", str(self.limit)),
            ("x-ratelimit-remaining", str(max(0, self.limit - self.used))),
            ("x-ratelimit-used", str(self.used)),
            ("x-ratelimit-reset", str(self.reset)),
            ("x-ratelimit-resource", "core"),
        )


def _json(status: int, payload: Any, headers: tuple[tuple[str, str], ...] = ()) -> _Response:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return _Response(status, headers, body)


def _error(status: int, message: str, headers: tuple[tuple[str, str], ...] = (), **extra: Any) -> _Response:
    return _json(
        status, {"message": message, **extra, "documentation_url": _DOCS, "status": str(status)}, headers
    )


def _invalid(field_: str) -> _Response:
    return _error(
        422, "Validation Failed", errors=[{"resource": "Issue", "field": field_, "code": "invalid"}]
    )


def _etag_matches(header: str | None, etag: str) -> bool:
    """Weak comparison (RFC 9110 §13.1.2), as GitHub does for list endpoints."""
    if not header:
        return False
    tags = {t.strip().removeprefix("W/") for t in header.split(",")}
    return "*" in tags or etag.removeprefix("W/") in tags


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], simulator: GitHubSimulator) -> None:
        self.simulator = simulator
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Tracked so that stop() can cut keep-alive connections, like a server going away.
        with self.sockets_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        with self.sockets_lock:
            sockets = list(self.open_sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):  # already closed by the peer
                sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # otherwise Nagle + delayed ACK stall each response ~40 ms
    server: _Server

    def do_GET(self) -> None:
        headers = {name.lower(): value for name, value in self.headers.items()}
        response = self.server.simulator._serve(self.path, headers, self.client_address[0])
        self._send(response)

    def _send(self, response: _Response) -> None:
        """Status line, headers and body in one write: split writes meet delayed ACKs."""
        reason = HTTPStatus(response.status).phrase
        lines = [
            f"HTTP/1.1 {response.status} {reason}",
            f"Date: {self.date_time_string()}",
            "Server: github-simulator",
        ]
        lines += [f"{name}: {value}" for name, value in response.headers]
        if response.status != 304:
            lines += [
                "Content-Type: application/json; charset=utf-8",
                f"Content-Length: {len(response.body)}",
            ]
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + (b"" if response.status == 304 else response.body))

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: `GitHubSimulator.requests` is the log, and it never holds a token."""


# --------------------------------------------------------------------------- the simulator
class GitHubSimulator:
    """GitHub's issue listing on 127.0.0.1, with a movable clock and fault knobs.

    Thread-safe: the API below may be called while the server handles requests. `requests`
    records every request as ``(path+query, status, headers)``; the recorded headers are
    accept, if-none-match, user-agent, x-github-api-version and authorization reduced to its
    scheme (``"Bearer ***"``), never the token.
    """

    requests: list[RequestRecord]

    def __init__(
        self,
        *,
        repos: dict[str, int] | None = None,
        seed: int = 0,
        tokens: tuple[str, ...] = (DEFAULT_TOKEN,),
        host: str = "127.0.0.1",
        port: int = 0,
        now: datetime | None = None,
    ) -> None:
        self._host, self._port = host, port
        self._tokens = frozenset(tokens)
        self._now = float(int(_to_epoch(now) if now is not None else time.time()))
        self._lock = threading.RLock()
        self._buckets: dict[str, _Bucket] = {}
        self._throttles: list[_Throttle] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.requests = []
        self._repos: dict[str, _Repo] = {}
        for index, (name, count) in enumerate((DEFAULT_REPOS if repos is None else repos).items()):
            owner, _, short = name.partition("/")
            if not owner or not short or "/" in short or count < 0:
                raise ValueError(f"repos: expected 'owner/name': count >= 0, got {name!r}: {count}")
            repo = _Repo(name, 700_000_000 + index + 1, index, random.Random(f"{seed}:{name}"))
            _generate_history(repo, count, int(self._now))
            self._repos[name.lower()] = repo

    # ----- lifecycle
    @property
    def url(self) -> str:
        """``http://host:port`` of the running server; RuntimeError before `start`."""
        if self._server is None:
            raise RuntimeError("GitHubSimulator is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> str:
        """Bind and serve in a background thread (idempotent); returns `url`."""
        if self._server is None:
            self._server = _Server((self._host, self._port), self)
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name="github-simulator",
                daemon=True,
            )
            self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving and cut open connections (idempotent)."""
        server, thread, self._server, self._thread = self._server, self._thread, None, None
        if server is not None:
            server.shutdown()
            server.cut_connections()
            server.server_close()
        if thread is not None:
            thread.join()

    def __enter__(self) -> GitHubSimulator:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ----- clock and data
    @property
    def now(self) -> datetime:
        """The simulator's clock (UTC)."""
        with self._lock:
            return datetime.fromtimestamp(self._now, UTC)

    def advance(self, seconds: float) -> None:
        """Move the clock forward; changes dated up to the new time become visible."""
        if seconds < 0:
            raise ValueError("the simulator's clock never goes back")
        with self._lock:
            self._now += seconds

    def mutate(self, repo: str, n: int, *, at: datetime | None = None) -> list[JSON]:
        """Make `n` changes (about 30% creates, the rest edits, closes and reopens of distinct
        issues) all with ``updated_at`` = `at` truncated to the second (default: the clock).

        A change dated after the clock is hidden until `advance` reaches it. Returns copies of
        the new snapshots, in the order made.
        """
        if n < 0:
            raise ValueError("n must be >= 0")
        with self._lock:
            target = self._repo(repo)
            when = int(_to_epoch(at) if at is not None else self._now)
            touched: set[int] = set()
            made = [_apply_change(target, when, target.rng.random() < 0.3, touched) for _ in range(n)]
            target.generation += 1
        return [json.loads(v.body) for v in made if v is not None]

    def delete(self, repo: str, number: int, *, at: datetime | None = None) -> None:
        """Delete issue `number` from `at` on (default: the clock): it just stops being listed."""
        with self._lock:
            target = self._repo(repo)
            if number not in target.issues:
                raise KeyError(f"{repo}#{number} does not exist")
            when = int(_to_epoch(at) if at is not None else self._now)
            if target.issues[number].times[-1] > when:
                raise ValueError(f"{repo}#{number} has changes after {_iso(when)}")
            issue = target.issues[number]
            issue.put(_version(number, when, None, issue.versions[-1].created))
            target.generation += 1

    def issues(self, repo: str) -> dict[int, JSON]:
        """Copies of the issues (and PRs) visible at the clock, keyed by issue ``id``."""
        with self._lock:
            target = self._repo(repo)
            listed = target.listing(int(self._now), "all", "created", "asc")
            return {v.issue["id"]: json.loads(v.body) for v in listed if v.issue is not None}

    @property
    def repo_names(self) -> tuple[str, ...]:
        """The repos served, as given (``owner/name``)."""
        return tuple(r.full_name for r in self._repos.values())

    def repo_id(self, repo: str) -> int:
        """The numeric id used in ``/repositories/{id}/issues`` links."""
        return self._repo(repo).repo_id

    # ----- rate-limit knobs
    def rate_limit_next(
        self, n: int = 1, *, status: int = 403, retry_after: int | None = None, reset_in: int = 60
    ) -> None:
        """The next `n` rate-counted requests (authenticated issue requests, conditional ones
        included) get a `status` throttling response without consuming the window: with
        ``retry-after: retry_after`` (secondary limit; remaining left as is) when given, else
        remaining 0 and reset = clock + `reset_in` (primary limit)."""
        with self._lock:
            self._throttles.extend([_Throttle(status, retry_after, reset_in)] * n)

    def set_remaining(
        self, token: str | None, remaining: int, reset_in: int = 3600, *, ip: str = "127.0.0.1"
    ) -> None:
        """Set the window of `token` (None: the anonymous client at `ip`) to `remaining`
        requests left, resetting `reset_in` seconds from the clock."""
        with self._lock:
            if token is not None and token not in self._tokens:
                raise KeyError("unknown token")
            if token is None:
                key, limit = f"ip:{ip}", ANONYMOUS_LIMIT
            else:
                key, limit = f"token:{token}", TOKEN_LIMIT
            used = limit - max(0, min(limit, remaining))
            self._buckets[key] = _Bucket(limit, used, int(self._now) + reset_in)

    # ----- request handling (called by the handler threads)
    def _repo(self, name: str) -> _Repo:
        try:
            return self._repos[name.lower()]
        except KeyError:
            raise KeyError(f"unknown repo {name!r}") from None

    def _serve(self, target: str, headers: Mapping[str, str], client_ip: str) -> _Response:
        with self._lock:
            response = self._respond(target, headers, client_ip)
            # Recorded before the response is written, so a client that got it can assert on it.
            auth = headers.get("authorization")
            recorded = {k: v for k in _RECORDED_HEADERS if (v := headers.get(k)) is not None}
            if auth:
                scheme = auth.strip().split(" ", 1)[0]
                shown = scheme if scheme.lower() in ("bearer", "token", "basic") else ""
                recorded["authorization"] = f"{shown} ***".strip()
            self.requests.append((target, response.status, recorded))
        return response

    def _respond(self, target: str, headers: Mapping[str, str], client_ip: str) -> _Response:
        parts = urlsplit(target)
        path = parts.path.rstrip("/") or "/"
        if path == "/health":
            return _json(200, {"status": "ok"})
        now = int(self._now)
        key = self._authenticate(headers.get("authorization"), client_ip)
        if key is None:
            return _error(401, "Bad credentials")
        bucket = self._bucket(key, now)
        if path == "/rate_limit":
            core = {
                "limit": bucket.limit,
                "used": bucket.used,
                "reset": bucket.reset,
                "remaining": bucket.limit - bucket.used,
            }
            return _json(200, {"resources": {"core": core}, "rate": core}, bucket.headers())
        if self._throttles:
            return self._throttled(self._throttles.pop(0), bucket, key, now)
        if bucket.used >= bucket.limit:
            return self._exceeded(bucket, key, 403)
        response = self._route(path, dict(parse_qsl(parts.query, keep_blank_values=True)), now)
        if response.status == 200:
            etag = dict(response.headers)["ETag"]
            if _etag_matches(headers.get("if-none-match"), etag):
                return _Response(304, (("ETag", etag), *bucket.headers()))
        bucket.used += 1
        return _Response(response.status, response.headers + bucket.headers(), response.body)

    def _authenticate(self, header: str | None, client_ip: str) -> str | None:
        """The rate-limit key for this caller, or None for bad credentials."""
        if not header:
            return f"ip:{client_ip}"
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() not in ("bearer", "token") or token.strip() not in self._tokens:
            return None
        return f"token:{token.strip()}"

    def _bucket(self, key: str, now: int) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None or bucket.reset <= now:  # a window starts at its first request
            limit = TOKEN_LIMIT if key.startswith("token:") else ANONYMOUS_LIMIT
            bucket = self._buckets[key] = _Bucket(limit, 0, now + WINDOW_SECONDS)
        return bucket

    def _exceeded(self, bucket: _Bucket, key: str, status: int) -> _Response:
        who = f"user ID {_USERS[0][1]}" if key.startswith("token:") else key.removeprefix("ip:")
        return _error(status, f"API rate limit exceeded for {who}.", bucket.headers())

    def _throttled(self, throttle: _Throttle, bucket: _Bucket, key: str, now: int) -> _Response:
        if throttle.retry_after is None:
            drained = _Bucket(bucket.limit, bucket.limit, now + throttle.reset_in)
            return self._exceeded(drained, key, throttle.status)
        headers = (("retry-after", str(throttle.retry_after)), *bucket.headers())
        return _error(
            throttle.status,
            "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
            headers,
        )

    def _route(self, path: str, query: dict[str, str], now: int) -> _Response:
        segments = path.strip("/").split("/")
        repo: _Repo | None = None
        if len(segments) == 4 and segments[0] == "repos" and segments[3] == "issues":
            repo = self._repos.get(f"{segments[1]}/{segments[2]}".lower())
        elif len(segments) == 3 and segments[0] == "repositories" and segments[2] == "issues":
            repo = next((r for r in self._repos.values() if str(r.repo_id) == segments[1]), None)
        if repo is None:
            return _error(404, "Not Found")
        return self._list(repo, query, now)

    def _list(self, repo: _Repo, query: dict[str, str], now: int) -> _Response:
        state = query.get("state", "open")
        sort = query.get("sort", "created")
        direction = query.get("direction", "desc")
        for name, value, allowed in (
            ("state", state, ("open", "closed", "all")),
            ("sort", sort, tuple(_SORT_KEYS)),
            ("direction", direction, ("asc", "desc")),
        ):
            if value not in allowed:
                return _invalid(name)
        items = repo.listing(now, state, sort, direction)
        if "since" in query:
            try:  # '+' in an unencoded offset arrives as a space
                since = _to_epoch(datetime.fromisoformat(query["since"].replace(" ", "+")))
            except ValueError:
                return _invalid("since")
            items = [v for v in items if v.time >= since]
        per_page = _int_param(query.get("per_page"), DEFAULT_PER_PAGE)
        per_page = min(MAX_PER_PAGE, per_page if per_page >= 1 else DEFAULT_PER_PAGE)
        page = max(1, _int_param(query.get("page"), 1))
        chunk = items[(page - 1) * per_page : page * per_page]
        body = b"[" + b",".join(v.body for v in chunk) + b"]"
        link = self._link(repo, query, page, max(1, -(-len(items) // per_page)))
        etag = 'W/"' + hashlib.sha256(link.encode() + b"\n" + body).hexdigest() + '"'
        headers = (("ETag", etag), ("Link", link)) if link else (("ETag", etag),)
        return _Response(200, headers, body)

    def _link(self, repo: _Repo, query: dict[str, str], page: int, last: int) -> str:
        """GitHub's Link header: prev, next, last, first, as applicable; '' for a single page."""
        base = f"{self.url}/repositories/{repo.repo_id}/issues?"

        def url(number: int) -> str:
            return base + urlencode({**{k: v for k, v in query.items() if k != "page"}, "page": str(number)})

        rels: list[tuple[int, str]] = []
        if page > 1:
            rels.append((min(page - 1, last), "prev"))
        if page < last:
            rels += [(page + 1, "next"), (last, "last")]
        if page > 1:
            rels.append((1, "first"))
        return ", ".join(f'<{url(number)}>; rel="{rel}"' for number, rel in rels)


def _int_param(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


# --------------------------------------------------------------------------- CLI
def _parse_repos(text: str) -> dict[str, int]:
    repos: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, count = item.rpartition(":")
        if not sep or "/" not in name or not count.isdigit():
            raise argparse.ArgumentTypeError(f"expected owner/repo:COUNT, got {item!r}")
        repos[name] = int(count)
    if not repos:
        raise argparse.ArgumentTypeError("at least one repo is needed")
    return repos


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m connectors.github.simulator",
        description="Serve a simulated GitHub issues API on loopback.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--repos",
        type=_parse_repos,
        default=dict(DEFAULT_REPOS),
        help="owner/repo:COUNT,... (default acme/web:120,acme/api:80)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--token", action="append", help=f"accepted token; repeatable (default {DEFAULT_TOKEN})"
    )
    parser.add_argument(
        "--mutate-rate",
        type=int,
        default=0,
        metavar="N",
        help="live traffic: N changes per second, spread over the repos",
    )
    return parser


def _run_live(simulator: GitHubSimulator, rate: int, seed: int, stop: threading.Event) -> None:
    """Keep the clock on the wall clock and make `rate` changes each second until `stop`."""
    rng = random.Random(f"live:{seed}")
    names = simulator.repo_names
    next_tick = int(time.time()) + 1
    while not stop.wait(max(0.0, next_tick - time.time())):
        simulator.advance(max(0.0, time.time() - simulator.now.timestamp()))
        counts: dict[str, int] = {}
        for _ in range(rate):
            name = rng.choice(names)
            counts[name] = counts.get(name, 0) + 1
        for name, count in counts.items():
            simulator.mutate(name, count)
        next_tick += 1


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGINT or SIGTERM; 0 on a clean stop (argparse exits 2 on bad usage)."""
    args = _parser().parse_args(argv)
    if args.mutate_rate < 0:
        _parser().error("--mutate-rate must be >= 0")
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
    simulator = GitHubSimulator(
        repos=args.repos,
        seed=args.seed,
        host=args.host,
        port=args.port,
        tokens=tuple(args.token or (DEFAULT_TOKEN,)),
    )
    with simulator:
        described = ", ".join(f"{name}:{count}" for name, count in args.repos.items())
        print(f"GitHub simulator on {simulator.url} (repos {described})", flush=True)
        _run_live(simulator, args.mutate_rate, args.seed, stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
