"""The run-queue benchmark's own parts (``bench.runqueue``, scenario F): the latency sink counts what the
scenario reports, the simulator host serves only sign-ups and takes a burst of them, and one small
``syncd once`` through the scenario's measuring code ends complete, each call once."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from bench.harness import SimHost
from bench.latencysink import LatencySink
from bench.runqueue import single
from bench.simhost import WORKOS_KEY


def test_the_latency_sink_counts_calls_distinct_keys_and_calls_held_at_once() -> None:
    with LatencySink(latency=0.0) as sink:
        for key, replica in (("a", "r1"), ("b", "r2"), ("a", "r1")):
            headers = {"Idempotency-Key": key, "X-Bench-Replica": replica}
            assert httpx.post(f"{sink.url}/crm", json={}, headers=headers).status_code == 200
        assert {k: sink.stats()[k] for k in ("calls", "keys", "max_in_flight", "in_flight", "by_replica")} == {
            "calls": 3, "keys": 2, "max_in_flight": 1, "in_flight": 0, "by_replica": {"r1": 2, "r2": 1}}

    entered = threading.Event()
    with LatencySink(latency=3600) as slow, ThreadPoolExecutor(3) as pool:  # held until the sink stops
        for n in range(3):
            pool.submit(httpx.post, f"{slow.url}/x", headers={"Idempotency-Key": str(n)}, timeout=60)
        while slow.stats()["in_flight"] < 3:
            entered.wait(0.05)
        assert slow.stats()["max_in_flight"] == 3
        slow.stop()  # cuts the held connections: the clients fail, the pool can finish


def test_the_simulator_host_serves_only_sign_ups_and_takes_a_burst() -> None:
    with SimHost(workos_events=0, users=2, sink_latency=0.0) as sim:
        sim.add_users(3)
        page = httpx.get(f"{sim.workos}/events", params={"events": "user.created,user.updated", "limit": 100},
                         headers={"Authorization": f"Bearer {WORKOS_KEY}"}).json()
        assert [e["event"] for e in page["data"]] == ["user.created"] * 5
        assert len({e["data"]["id"] for e in page["data"]}) == 5
        assert sim.requests()["sink"]["calls"] == 0


@pytest.mark.slow
def test_a_small_fanout_through_syncd_once_is_complete_with_each_call_once() -> None:
    outcome = single(3, timeout=300, progress=lambda _: None)
    assert outcome["complete"], outcome
    assert outcome["succeeded"] == 3
    assert outcome["sink"]["calls"] == outcome["sink"]["keys"] == 9
