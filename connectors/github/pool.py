"""One pooled HTTP client per GitHub credential in the process, shared by every repository it polls.

An ``httpx.Client`` builds its own TLS context (it loads the CA bundle: about 50 ms of CPU and a megabyte
or two each) and its own connection pool. Built per repository, 200 repositories cost 10 s of start-up
and a few hundred MB; shared per credential (base URL + token + timeout), they cost one, and keep-alive
connections serve every repository of the token.

``credential_id`` names a credential everywhere it must be told apart (the budget table, status): a
short hash of the base URL and the token, never the token.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from syncd.settings import Secret

#: Connections one credential's client keeps (its sources tick a few at a time: ``syncd.ops.scheduler``).
MAX_CONNECTIONS = 8


def credential_id(base_url: str, token: Secret | None) -> str:
    """``github:<12 hex>``: stable for one base URL and token, reveals neither (``anonymous`` without one)."""
    if token is None:
        return "github:anonymous"
    digest = hashlib.sha256(f"{base_url.rstrip('/')}\n{token.reveal()}".encode()).hexdigest()
    return f"github:{digest[:12]}"


@dataclass
class _Entry:
    client: httpx.Client
    users: int


class ClientPool:
    """Clients by key, counted: ``acquire`` builds one on first use, ``release`` closes it with its last user."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, ...], _Entry] = {}

    def acquire(self, key: tuple[str, ...], build: Callable[[], httpx.Client]) -> httpx.Client:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.client.is_closed:
                entry = self._entries[key] = _Entry(build(), 0)
            entry.users += 1
            return entry.client

    def release(self, key: tuple[str, ...]) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return
            entry.users -= 1
            if entry.users > 0:
                return
            del self._entries[key]
        entry.client.close()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


#: The process's clients (connectors built with their own ``transport``, as tests do, do not use it).
clients = ClientPool()
