"""The idle path made cheaper in session 10 (issue 28) keeps what it must.

- provider clients keep no cookies: a ``Set-Cookie`` is not stored and never sent back
  → ``test_provider_clients_neither_keep_nor_send_cookies``
"""

from __future__ import annotations

import httpx
import pytest

from syncd.http import make_client, send


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
    assert sent == [None, None]
