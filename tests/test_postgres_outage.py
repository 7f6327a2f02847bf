"""PostgreSQL stopped in the middle of a sync until every replica has failed on it again and again: the
replicas log errors, keep running, and finish the sync exactly once after the server returns. Uses its own
server (the shared one must not go away)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from tests.pgserver import PostgresServer, require_postgres
from tests.test_replicas import (  # cluster_for is the fixture
    SYNC_TIMEOUT,
    Cluster,
    assert_exact,
    cluster_for,
    expected_state,
    prepare_database,
    run_count,
    source_row,
    wait_until,
)

__all__ = ["cluster_for"]

#: The outage lasts until each replica has logged database errors in this many different seconds (in-flight
#: runs fail together; then ticks and claims fail again each second): it saw the database gone and went on
#: trying, for seconds. A fixed 20 s proved no more and took a third of this test's time.
OUTAGE_SECONDS = 4
#: Only bounds a replica that never notices the outage (the test then fails naming it).
OUTAGE_LIMIT = 120
OUTAGE_EVENTS = 20_000  # ~2,100 organization events
WORKERS_PER_REPLICA = 16  # SYNCD_WORKERS's default


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    require_postgres()
    with PostgresServer() as server:
        yield server


@pytest.mark.postgres
def test_replicas_ride_out_a_postgres_outage_and_finish_exactly_once(
        own_server: PostgresServer, cluster_for: Callable[..., Cluster]) -> None:
    db_url = own_server.create_database()
    db = prepare_database(db_url)
    cluster = cluster_for(db_url, events=OUTAGE_EVENTS)
    expected = expected_state(cluster.github, OUTAGE_EVENTS)
    cluster.start("replica-1", "replica-2")

    wait_until(lambda: source_row(db, "workos").events_seen >= 600, 120, "the WorkOS sync to be under way")
    before = {name: len(outage_errors(cluster.log(name))) for name in cluster.replicas}
    own_server.stop()  # fast shutdown: open transactions are cut, new connections refused
    stopped = time.monotonic()
    wait_until(lambda: all(len(error_seconds(cluster.log(name), before[name])) >= OUTAGE_SECONDS
                           for name in cluster.replicas) or len(cluster.alive()) < 2,
               OUTAGE_LIMIT, f"database errors in {OUTAGE_SECONDS} different seconds from each replica")
    assert cluster.alive() == ["replica-1", "replica-2"]  # nobody crashed while the database was gone
    outage = time.monotonic() - stopped
    own_server.restart()
    restarted = time.monotonic()

    wait_until(lambda: run_count(db) >= expected.total_runs, SYNC_TIMEOUT,
               "the sync to finish after the outage")
    finished = time.monotonic() - restarted
    codes = cluster.stop()

    assert codes == {"replica-1": 0, "replica-2": 0}
    # A run in flight when the server went away lost its transaction: that attempt counts (the queue cannot
    # tell it from a worker that died in it), so it ran a second time — at most the workers in flight.
    assert_exact(db, expected, interrupted=2 * WORKERS_PER_REPLICA)
    logs = {name: cluster.log(name) for name in cluster.replicas}
    errors = [line for text in logs.values() for line in text.splitlines() if " ERROR " in line]
    assert any("OperationalError" in line for line in errors), errors[:5]  # the outage was seen and logged
    # … as one line per failure, no crash
    assert not any("Traceback" in text for text in logs.values()), [
        text[max(0, text.index("Traceback") - 1500):text.index("Traceback") + 3000]
        for text in logs.values() if "Traceback" in text][:1]
    print(f"\noutage of {outage:.1f}s; finished {finished:.1f}s after Postgres returned; "
          f"{len(errors)} error lines logged")


def outage_errors(log: str) -> list[str]:
    """The log's error lines that name the database being unreachable."""
    return [line for line in log.splitlines() if " ERROR " in line and "OperationalError" in line]


def error_seconds(log: str, skip: int) -> set[str]:
    """The distinct ``HH:MM:SS`` stamps (LOG_FORMAT=text) of those lines, after the first ``skip``."""
    return {line.split(" ", 1)[0] for line in outage_errors(log)[skip:]}
