"""The simulated repositories: issue versions over time, and their deterministic generation.

Each repo's history spans at least 30 days before the start and is a series of bursts of 1-8 changes in
the same second (creates, title/label/body/comment edits, closes, reopens), so several issues sharing an
``updated_at`` second is common. Everything is drawn from the repo's seeded RNG.
"""

from __future__ import annotations

import bisect
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

__all__ = ["DEFAULT_REPOS", "JSON", "SORT_KEYS", "USERS", "Issue", "Repo", "Version", "apply_change",
           "generate_history", "iso", "make_version", "to_epoch"]

JSON = dict[str, Any]

DEFAULT_REPOS: Final[dict[str, int]] = {"acme/web": 120, "acme/api": 80}
HISTORY_SECONDS: Final = 30 * 86400

# Item URLs are data, never followed by syncd; they keep GitHub's real shape.
_API: Final = "https://api.github.com"
_WEB: Final = "https://github.com"
_BURST_SIZES: Final = (1, 1, 1, 2, 2, 3, 4, 5, 8)
USERS: Final = (
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


def iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_epoch(when: datetime) -> float:
    """Epoch seconds of `when`; a naive datetime is taken as UTC."""
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


# --------------------------------------------------------------------------- data model
@dataclass(slots=True)
class Version:
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


def make_version(number: int, time_: int, issue: JSON | None, created: int) -> Version:
    if issue is None:
        return Version(time_, number, created, 0, "deleted", None, b"")
    return Version(time_, number, created, issue["comments"], issue["state"], issue)


SORT_KEYS: Final[dict[str, Callable[[Version], tuple[int, int]]]] = {
    "created": lambda v: (v.created, v.number),
    "updated": lambda v: (v.time, v.number),
    "comments": lambda v: (v.comments, v.number),
}


@dataclass(slots=True)
class Issue:
    """Every version of one issue, in time order (at most one per second)."""

    versions: list[Version]
    times: list[int]

    def at(self, now: int) -> Version | None:
        if self.times[-1] <= now:  # the common case: nothing scheduled in the future
            return self.versions[-1]
        index = bisect.bisect_right(self.times, now) - 1
        return self.versions[index] if index >= 0 else None

    def put(self, version: Version) -> None:
        """Append `version`, or replace the last one when it is from the same second."""
        if self.times[-1] == version.time:
            self.versions[-1] = version
        else:
            self.versions.append(version)
            self.times.append(version.time)


@dataclass(slots=True)
class Repo:
    full_name: str
    repo_id: int
    index: int
    rng: random.Random
    issues: dict[int, Issue] = field(default_factory=dict)
    generation: int = 0
    view_key: tuple[int, int] = (-1, -1)
    visible: list[Version] = field(default_factory=list)
    views: dict[tuple[str, str, str], list[Version]] = field(default_factory=dict)
    #: Issues transferred away: number → (id of the repository it went to, its number there).
    moved: dict[int, tuple[int, int]] = field(default_factory=dict)

    def issue_id(self, number: int) -> int:
        return 1_000_000_000 + self.index * 10_000_000 + number

    def listing(self, now: int, state: str, sort: str, direction: str) -> list[Version]:
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
            items.sort(key=SORT_KEYS[sort], reverse=direction == "desc")
            self.views[key] = items
        return self.views[key]


# --------------------------------------------------------------------------- data generation
def _labels(repo: Repo, rng: random.Random) -> list[JSON]:
    picked = sorted(rng.sample(range(len(_LABELS)), rng.choice((0, 1, 1, 2))))
    return [
        {"id": 5_000_000 + repo.index * 100 + i, "name": _LABELS[i][0], "color": _LABELS[i][1]}
        for i in picked
    ]


def _user(rng: random.Random) -> JSON:
    login, user_id = rng.choice(USERS)
    return {"login": login, "id": user_id}


def _new_issue(repo: Repo, number: int, now: int, rng: random.Random) -> JSON:
    is_pr = rng.random() < 0.3
    issue_id, name, stamp = repo.issue_id(number), repo.full_name, iso(now)
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


def _changed(repo: Repo, prev: JSON, now: int, rng: random.Random) -> JSON:
    """A new state of `prev` at `now`: an edit, a close or a reopen (a merged PR stays closed)."""
    issue = dict(prev)  # nested values are replaced, never changed in place, except the PR's
    stamp = issue["updated_at"] = iso(now)
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


def apply_change(
    repo: Repo, now: int, create: bool, touched: set[int], *, fallback_create: bool = True
) -> Version | None:
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
                version = make_version(number, now, issue, current.created)
                repo.issues[number].put(version)
                return version
        if not fallback_create:
            return None
    number = len(repo.issues) + 1
    touched.add(number)
    version = make_version(number, now, _new_issue(repo, number, now, rng), now)
    repo.issues[number] = Issue([version], [now])
    return version


def generate_history(repo: Repo, count: int, end: int) -> None:
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
            apply_change(repo, end - span + offset, create, touched, fallback_create=False)
    repo.generation += 1

