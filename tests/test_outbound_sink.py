"""The sink simulator's flow-control knobs and measurements: ``latency`` holds calls, ``max_in_flight``
(overall and per path) counts the calls held at once, ``connections`` the TCP connections, ``arrived_at``
when each call came; ``GET /_sink/stats`` serves them to a sink run as its own process.

Deterministic: calls are held by a latency far longer than the test and let go with ``release()`` once
the sink counts them all in flight."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from simulators.sink import SinkSimulator
from tests.test_cli import base_env

DEADLINE = 30.0  # seconds to wait for something that must happen


def eventually(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_latency_holds_calls_and_the_sink_counts_them_in_flight() -> None:
    with SinkSimulator(latency=600) as sink, httpx.Client(base_url=sink.url, timeout=DEADLINE) as client, \
            ThreadPoolExecutor(6) as pool:
        before = time.time()
        paths = ["/crm"] * 4 + ["/slack"] * 2
        futures = [pool.submit(client.post, path, json={"n": n}) for n, path in enumerate(paths)]
        eventually(lambda: sink.in_flight == 6, "six calls in flight")
        assert not any(f.done() for f in futures)  # held by the latency
        sink.release()
        assert all(f.result().status_code == 200 for f in futures)
        after = time.time()
        stats = client.get("/_sink/stats").json()
    assert sink.max_in_flight == 6 and sink.max_in_flight_by_path == {"/crm": 4, "/slack": 2}
    assert sink.in_flight == 0 and sink.connections == 6
    assert len(sink.calls) == 6 and len({c.connection for c in sink.calls}) == 6
    assert all(before <= c.arrived_at <= c.finished_at <= after for c in sink.calls)
    assert stats["max_in_flight"] == 6 and stats["max_in_flight_by_path"] == {"/crm": 4, "/slack": 2}
    assert stats["calls"] == 6 and stats["successes"] == 6 and stats["latency"] == 600
    assert before <= stats["first_arrival"] <= stats["last_arrival"] <= after


def test_one_client_calling_in_turn_is_one_call_in_flight_on_one_connection() -> None:
    with SinkSimulator() as sink, httpx.Client(base_url=sink.url) as client:
        for n in range(20):
            client.post("/crm", json={"n": n})
        sink.reset()
        client.post("/crm")
    assert sink.max_in_flight == 1 and sink.max_in_flight_by_path == {"/crm": 1}
    assert len(sink.calls) == 1 and sink.connections == 0  # reset: the open connection is not counted again


@pytest.mark.parametrize("status", [429, 503])
def test_failures_carry_retry_after_when_asked(status: int) -> None:
    with SinkSimulator(fail_rate=1.0, fail_status=status, retry_after=12) as sink:
        response = httpx.post(f"{sink.url}/crm")
        sink.retry_after = None
        bare = httpx.post(f"{sink.url}/crm")
    assert response.status_code == status and response.headers["Retry-After"] == "12"
    assert "Retry-After" not in bare.headers


def test_the_sink_command_takes_a_latency_and_serves_its_measurements(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "simulators.sink", "--port", "0", "--latency", "0.05"]
    with subprocess.Popen(command, env=base_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          text=True) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            url = line.split(" on ", 1)[1].split(" ", 1)[0]
            httpx.post(f"{url}/crm", timeout=DEADLINE)
            stats = json.loads(httpx.get(f"{url}/_sink/stats", timeout=DEADLINE).text)
        finally:
            process.terminate()
            process.wait(timeout=DEADLINE)
    assert stats["latency"] == 0.05 and stats["calls"] == 1 and stats["max_in_flight"] == 1
    assert "/_sink/stats" in line and process.returncode == 0


def test_a_negative_latency_is_refused() -> None:
    with pytest.raises(ValueError, match="latency"):
        SinkSimulator(latency=-1)


def test_a_request_cut_off_mid_body_is_not_a_call() -> None:
    """A client killed while sending (the queue-crash test's SIGKILLs) leaves half a body: no service acts
    on it, so the sink records no call; the next complete request is recorded as sent."""
    import socket
    from urllib.parse import urlsplit

    with SinkSimulator() as sink:
        address = urlsplit(sink.url)
        with socket.create_connection((address.hostname, address.port), timeout=DEADLINE) as conn:
            conn.sendall(b'POST /crm HTTP/1.1\r\nHost: sink\r\nContent-Type: application/json\r\n'
                         b'Content-Length: 40\r\n\r\n{"user": "u_1", "na')
        with httpx.Client(base_url=sink.url, timeout=DEADLINE) as client:
            assert client.post("/crm", json={"user": "u_2"}).status_code == 200
        assert [(c.path, c.body) for c in sink.calls] == [("/crm", {"user": "u_2"})]
