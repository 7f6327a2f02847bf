"""The simulator's answers by resource: the issue listing, one issue (deleted and transferred ones
included) and one repository.

``/repos/{owner}/{repo}/issues`` (and ``/repositories/{id}/issues``): see the package docstring.
``GET /repos/{owner}/{repo}/issues/{number}`` (or ``/repositories/{id}/issues/{number}``): 200 with the
issue as listed (and an ETag), 410 Gone once it was deleted, 301 Moved Permanently (``Location``: the
issue's new URL, ``/repositories/{id}/issues/{number}`` of the repository it went to) once it was
transferred, 404 for a number never used. ``GET /repos/{owner}/{repo}``: a minimal repository object.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Final
from urllib.parse import urlencode

from simulators.github.data import SORT_KEYS, Repo, to_epoch
from simulators.github.wire import Response, error, invalid, json_response

__all__ = ["DEFAULT_PER_PAGE", "MAX_PER_PAGE", "issue_response", "list_response", "repo_response"]

MAX_PER_PAGE: Final = 100
DEFAULT_PER_PAGE: Final = 30


def list_response(repo: Repo, query: dict[str, str], now: int, root: str) -> Response:
    """A page of ``repo``'s issue listing; ``root`` is the base of the ``Link`` URLs."""
    state = query.get("state", "open")
    sort = query.get("sort", "created")
    direction = query.get("direction", "desc")
    for name, value, allowed in (
        ("state", state, ("open", "closed", "all")),
        ("sort", sort, tuple(SORT_KEYS)),
        ("direction", direction, ("asc", "desc")),
    ):
        if value not in allowed:
            return invalid(name)
    items = repo.listing(now, state, sort, direction)
    if "since" in query:
        try:  # '+' in an unencoded offset arrives as a space
            since = to_epoch(datetime.fromisoformat(query["since"].replace(" ", "+")))
        except ValueError:
            return invalid("since")
        items = [v for v in items if v.time >= since]
    per_page = _int_param(query.get("per_page"), DEFAULT_PER_PAGE)
    per_page = min(MAX_PER_PAGE, per_page if per_page >= 1 else DEFAULT_PER_PAGE)
    page = max(1, _int_param(query.get("page"), 1))
    chunk = items[(page - 1) * per_page : page * per_page]
    body = b"[" + b",".join(v.body for v in chunk) + b"]"
    link = _link(repo, query, page, max(1, -(-len(items) // per_page)), root)
    etag = 'W/"' + hashlib.sha256(link.encode() + b"\n" + body).hexdigest() + '"'
    headers = (("ETag", etag), ("Link", link)) if link else (("ETag", etag),)
    return Response(200, headers, body)


def _link(repo: Repo, query: dict[str, str], page: int, last: int, root: str) -> str:
    """GitHub's Link header: prev, next, last, first, as applicable; '' for a single page."""
    base = f"{root}/repositories/{repo.repo_id}/issues?"

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


def issue_response(repo: Repo, number: int, now: int, root: str) -> Response:
    """The answer to a GET of issue ``number`` of ``repo`` at ``now``; ``root`` is the base of URLs served."""
    issue = repo.issues.get(number)
    version = issue.at(now) if issue is not None else None
    if version is None:
        return error(404, "Not Found")
    if version.issue is not None:
        body = version.body
        etag = 'W/"' + hashlib.sha256(body).hexdigest() + '"'
        return Response(200, (("ETag", etag),), body)
    moved = repo.moved.get(number)
    if moved is not None:
        location = f"{root}/repositories/{moved[0]}/issues/{moved[1]}"
        return error(301, "Moved Permanently", (("Location", location),), url=location)
    return error(410, "This issue was deleted")


def repo_response(repo: Repo) -> Response:
    owner, _, name = repo.full_name.partition("/")
    found = json_response(200, {"id": repo.repo_id, "name": name, "full_name": repo.full_name,
                                "owner": {"login": owner}, "private": False})
    etag = 'W/"' + hashlib.sha256(found.body).hexdigest() + '"'
    return Response(200, (("ETag", etag),), found.body)
