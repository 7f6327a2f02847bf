"""The idle path made cheaper in session 10 (issue 28) keeps what it must.

- provider clients keep no cookies: a ``Set-Cookie`` is not stored and never sent back
  → ``test_provider_clients_neither_keep_nor_send_cookies``
- a GitHub idle poll reuses its listing URL only while ``since`` stays: an edit moves ``since`` and the next
  poll asks from there → ``test_github_idle_polls_ask_from_the_current_since``
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from connectors.github import GitHubConnector
from simulators.github import GitHubSimulator
from syncd.http import make_client, send
from syncd.settings import Secret


def test_provider_clients_neither_keep_nor_send_cookies() -> None:
    sent: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get("cookie"))
        return httpx.Response(304, headers={"Set-Cookie": "session=abc123; Path=/"})

    with make_client("http://127.0.0.1:9", headers={}, timeout=5, transport=httpx.MockTransport(handler)) as client:
        first = send(client, "s", "GET", "/a")
        send(client, "s", "GET", "/a", params=[("q", "1")])
        assert first.headers["set-cookie"].startswith("session=")  # the provider did send one
        assert len(client.cookies) == 0 and not client.cookies.jar
        with pytest.raises(TypeError, match="no cookies"):
            client.cookies = {"a": "b"}
        with pytest.raises(TypeError, match="no cookies"):
            client.cookies.set("a", "b")
        with pytest.raises(TypeError, match="no cookies"):
            client.cookies.update({"a": "b"})
    assert sent == [None, None]


def test_github_idle_polls_ask_from_the_current_since() -> None:
    token = "ghp_idle_since_77aa"

    def since_asked() -> list[str]:
        return parse_qs(urlsplit(sim.requests[-1][0]).query).get("since", [])

    with GitHubSimulator(repos={"acme/s": 30}, seed=4, tokens=(token,)) as sim:
        connector = GitHubConnector(repo="acme/s", base_url=sim.url, token=Secret(token), page_size=5,
                                    transport=httpx.HTTPTransport())
        try:
            cursor = None
            for _ in range(60):
                page = connector.fetch_page(cursor)
                cursor = page.next_cursor or cursor
                if page.next_cursor is None:  # a 304: caught up
                    break
            caught_up = since_asked()
            connector.fetch_page(cursor)
            assert since_asked() == caught_up and sim.requests[-1][1] == 304  # the same URL again: one 304
            edited = []
            for number in range(1, 8):  # more than a page: since moves to the edits' seconds
                sim.advance(60)
                edited.append(sim.edit("acme/s", number)["updated_at"])
            for _ in range(60):
                page = connector.fetch_page(cursor)
                cursor = page.next_cursor or cursor
                if page.next_cursor is None:
                    break
            assert since_asked() != caught_up and since_asked()[0] in edited  # asked from the moved since
        finally:
            connector.close()
