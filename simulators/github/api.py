"""``GitHubSimulator``: the repositories, the clock and the rate limits behind one loopback HTTP server."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Final
from urllib.parse import parse_qsl, urlsplit

from simulators.github.data import (
    DEFAULT_REPOS,
    JSON,
    Issue,
    Repo,
    Version,
    apply_change,
    generate_history,
    iso,
    make_version,
    to_epoch,
)
from simulators.github.ratelimit import (
    ANONYMOUS_LIMIT,
    TOKEN_LIMIT,
    Bucket,
    Throttle,
    exceeded,
    new_bucket,
    throttled,
)
from simulators.github.routes import issue_response, list_response, repo_response
from simulators.github.wire import Handler, Response, error, etag_matches, json_response
from simulators.httpserver import LoopbackServer

__all__ = ["DEFAULT_TOKEN", "GitHubSimulator", "RequestRecord"]

RequestRecord = tuple[str, int, dict[str, str]]

DEFAULT_TOKEN: Final = "ghp_simulator"
_RECORDED_HEADERS: Final = ("accept", "if-none-match", "user-agent", "x-github-api-version")


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
        token_limit: int = TOKEN_LIMIT,
        count_not_modified: bool = False,
    ) -> None:
        if token_limit < 1:
            raise ValueError("token_limit must be >= 1")
        self._tokens = frozenset(tokens)
        #: Rate-limit knobs: a token's requests per hour-long window, and whether a 304 to a conditional
        #: request counts against it (GitHub: not when authorised; secondary limits count it anyway).
        self.token_limit = token_limit
        self.count_not_modified = count_not_modified
        self._now = float(int(to_epoch(now) if now is not None else time.time()))
        self._lock = threading.RLock()
        self._buckets: dict[str, Bucket] = {}
        self._throttles: list[Throttle] = []
        self._http = LoopbackServer(Handler, context=self, host=host, port=port, name="github-simulator",
                                    quiet_disconnects=False)
        self.requests = []
        #: Fault knob: the base of the ``Link`` URLs served. None: this server's own URL; "": relative links
        #: (``</repositories/…>``); any other text: that base (another host). Settable at any time.
        self.link_base: str | None = None
        #: Fault knob: a GET of issue ``hold_number`` (any repository) waits until ``release`` is set, with
        #: ``holding`` set meanwhile (a test can kill its client mid-request).
        self.hold_number: int | None = None
        self.release = threading.Event()
        self.holding = threading.Event()
        self._repos: dict[str, Repo] = {}
        for index, (name, count) in enumerate((DEFAULT_REPOS if repos is None else repos).items()):
            owner, _, short = name.partition("/")
            if not owner or not short or "/" in short or count < 0:
                raise ValueError(f"repos: expected 'owner/name': count >= 0, got {name!r}: {count}")
            repo = Repo(name, 700_000_000 + index + 1, index, random.Random(f"{seed}:{name}"))
            generate_history(repo, count, int(self._now))
            self._repos[name.lower()] = repo

    # ----- lifecycle
    @property
    def url(self) -> str:
        """``http://host:port`` of the running server; RuntimeError before `start`."""
        url = self._http.url_or_none
        if url is None:
            raise RuntimeError("GitHubSimulator is not started")
        return url

    def start(self) -> str:
        """Bind and serve in a background thread (idempotent); returns `url`."""
        return self._http.start()

    def stop(self) -> None:
        """Stop serving and cut open connections (idempotent)."""
        self._http.stop(timeout=None)

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
            when = int(to_epoch(at) if at is not None else self._now)
            touched: set[int] = set()
            made = [apply_change(target, when, target.rng.random() < 0.3, touched) for _ in range(n)]
            target.generation += 1
        return [json.loads(v.body) for v in made if v is not None]

    def edit(self, repo: str, number: int, *, at: datetime | None = None, listed_now: bool = False) -> JSON:
        """A title edit of issue `number` dated `at` (default: the clock); returns a copy of the new snapshot.

        ``listed_now``: the version is listed from the clock on even though `at` is later (a provider whose
        data or clock is wrong: an ``updated_at`` in the future, sorted by it, matching every ``since``)."""
        with self._lock:
            target = self._repo(repo)
            issue = target.issues.get(number)
            if issue is None or issue.versions[-1].issue is None:
                raise KeyError(f"{repo}#{number} does not exist")
            when = int(to_epoch(at) if at is not None else self._now)
            last = issue.versions[-1]
            assert last.issue is not None
            if when < issue.times[-1]:
                raise ValueError(f"{repo}#{number} has changes after {iso(when)}")
            snapshot = {**last.issue, "updated_at": iso(when), "title": f"{last.issue['title']} (edited {iso(when)})"}
            version = make_version(number, when, snapshot, last.created)
            if listed_now and when > self._now:
                issue.versions.append(version)
                issue.times.append(int(self._now))  # visible now; listed (and filtered) by its own time
            else:
                issue.put(version)
            target.generation += 1
            made: JSON = json.loads(version.body)
            return made

    def delete(self, repo: str, number: int, *, at: datetime | None = None) -> None:
        """Delete issue `number` from `at` on (default: the clock): it stops being listed, and a GET of it
        answers 410 Gone."""
        with self._lock:
            target = self._repo(repo)
            self._remove(target, number, int(to_epoch(at) if at is not None else self._now))

    def transfer(self, repo: str, number: int, to: str, *, at: datetime | None = None) -> JSON:
        """Move issue `number` to the repository `to` from `at` on (default: the clock): it leaves `repo`'s
        listing, a GET of it there answers 301 to its new URL, and `to` lists it under a new number and id
        (updated at `at`). Returns a copy of the new snapshot."""
        with self._lock:
            source, target = self._repo(repo), self._repo(to)
            when = int(to_epoch(at) if at is not None else self._now)
            last = source.issues[number].versions[-1] if number in source.issues else None
            if last is None or last.issue is None:
                raise KeyError(f"{repo}#{number} does not exist")
            self._remove(source, number, when)
            new_number = len(target.issues) + 1
            name = target.full_name
            snapshot = {**last.issue, "id": target.issue_id(new_number), "number": new_number,
                        "updated_at": iso(when), "url": f"https://api.github.com/repos/{name}/issues/{new_number}",
                        "repository_url": f"https://api.github.com/repos/{name}",
                        "html_url": f"https://github.com/{name}/issues/{new_number}"}
            target.issues[new_number] = Issue([make_version(new_number, when, snapshot, last.created)], [when])
            source.moved[number] = (target.repo_id, new_number)
            target.generation += 1
            made: JSON = json.loads(target.issues[new_number].versions[-1].body)
            return made

    def _remove(self, target: Repo, number: int, when: int) -> None:
        name = target.full_name
        if number not in target.issues:
            raise KeyError(f"{name}#{number} does not exist")
        if target.issues[number].times[-1] > when:
            raise ValueError(f"{name}#{number} has changes after {iso(when)}")
        issue = target.issues[number]
        issue.put(make_version(number, when, None, issue.versions[-1].created))
        target.generation += 1

    def corrupt(self, repo: str, number: int, **fields: Any) -> None:
        """Serve the current version of issue `number` with `fields` replaced (``id="x"``,
        ``updated_at=None``…): a malformed item for client tests. It keeps its place in every listing,
        which goes by the version's own time and number."""
        with self._lock:
            issue = self._repo(repo).issues.get(number)
            if issue is None or issue.versions[-1].issue is None:
                raise KeyError(f"{repo}#{number} does not exist")
            last = issue.versions[-1]
            assert last.issue is not None
            issue.versions[-1] = Version(last.time, last.number, last.created, last.comments, last.state,
                                         {**last.issue, **fields})
            self._repo(repo).generation += 1

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
    def used(self, token: str) -> tuple[int, int, int]:
        """``(limit, used, reset)`` of ``token``'s current window (used 0 before its first request)."""
        with self._lock:
            bucket = self._buckets.get(f"token:{token}")
            if bucket is None or bucket.reset <= int(self._now):
                return self.token_limit, 0, int(self._now) + 3600
            return bucket.limit, bucket.used, bucket.reset

    def rate_limit_next(
        self, n: int = 1, *, status: int = 403, retry_after: int | None = None, reset_in: int = 60
    ) -> None:
        """The next `n` rate-counted requests (authenticated issue requests, conditional ones
        included) get a `status` throttling response without consuming the window: with
        ``retry-after: retry_after`` (secondary limit; remaining left as is) when given, else
        remaining 0 and reset = clock + `reset_in` (primary limit)."""
        with self._lock:
            self._throttles.extend([Throttle(status, retry_after, reset_in)] * n)

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
                key, limit = f"token:{token}", self.token_limit
            used = limit - max(0, min(limit, remaining))
            self._buckets[key] = Bucket(limit, used, int(self._now) + reset_in)

    # ----- request handling (called by the handler threads)
    def _repo(self, name: str) -> Repo:
        try:
            return self._repos[name.lower()]
        except KeyError:
            raise KeyError(f"unknown repo {name!r}") from None

    def serve(self, target: str, headers: Mapping[str, str], client_ip: str) -> Response:
        """The response to ``GET target`` (called by the handler threads), recorded in ``requests``."""
        held = self.hold_number
        if held is not None and urlsplit(target).path.rstrip("/").endswith(f"/issues/{held}"):
            self.holding.set()
            self.release.wait(60)
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

    def _respond(self, target: str, headers: Mapping[str, str], client_ip: str) -> Response:
        parts = urlsplit(target)
        path = parts.path.rstrip("/") or "/"
        if path == "/health":
            return json_response(200, {"status": "ok"})
        now = int(self._now)
        key = self._authenticate(headers.get("authorization"), client_ip)
        if key is None:
            return error(401, "Bad credentials")
        bucket = self._bucket(key, now)
        if path == "/rate_limit":
            core = {
                "limit": bucket.limit,
                "used": bucket.used,
                "reset": bucket.reset,
                "remaining": bucket.limit - bucket.used,
            }
            return json_response(200, {"resources": {"core": core}, "rate": core}, bucket.headers())
        if self._throttles:
            return throttled(self._throttles.pop(0), bucket, key, now)
        if bucket.used >= bucket.limit:
            return exceeded(bucket, key, 403)
        response = self._route(path, dict(parse_qsl(parts.query, keep_blank_values=True)), now)
        if response.status == 200:
            etag = dict(response.headers)["ETag"]
            if etag_matches(headers.get("if-none-match"), etag):
                if self.count_not_modified:
                    bucket.used += 1
                return Response(304, (("ETag", etag), *bucket.headers()))
        bucket.used += 1
        return Response(response.status, response.headers + bucket.headers(), response.body)

    def _authenticate(self, header: str | None, client_ip: str) -> str | None:
        """The rate-limit key for this caller, or None for bad credentials."""
        if not header:
            return f"ip:{client_ip}"
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() not in ("bearer", "token") or token.strip() not in self._tokens:
            return None
        return f"token:{token.strip()}"

    def _bucket(self, key: str, now: int) -> Bucket:
        bucket = self._buckets.get(key)
        if bucket is None or bucket.reset <= now:  # a window starts at its first request
            bucket = self._buckets[key] = new_bucket(key, now, self.token_limit)
        return bucket

    def _route(self, path: str, query: dict[str, str], now: int) -> Response:
        segments = path.strip("/").split("/")
        repo: Repo | None = None
        if len(segments) in (3, 4, 5) and segments[0] == "repos":
            repo = self._repos.get(f"{segments[1]}/{segments[2]}".lower())
            rest = segments[3:]
        elif len(segments) in (3, 4) and segments[0] == "repositories":
            repo = next((r for r in self._repos.values() if str(r.repo_id) == segments[1]), None)
            rest = segments[2:]
        if repo is None:
            return error(404, "Not Found")
        if rest == ["issues"]:
            return list_response(repo, query, now, self._root())
        if not rest and segments[0] == "repos":
            return repo_response(repo)
        if len(rest) == 2 and rest[0] == "issues" and rest[1].isdigit():
            return issue_response(repo, int(rest[1]), now, self._root())
        return error(404, "Not Found")

    def _root(self) -> str:
        """The base of the URLs served in ``Link`` and ``Location`` (see ``link_base``)."""
        return self.url if self.link_base is None else self.link_base.rstrip("/")
