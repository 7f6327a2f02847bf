"""Settings that would pass start-up and then fail every tick (issue 17, class 9) are refused at start-up:
exit 2, one line naming the variable, never a traceback. Through the CLI, as a user meets them."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors import workos
from syncd import cli
from syncd.settings import MAX_ATTEMPTS, MAX_REPLICA_ID_LENGTH, Settings
from syncd.store.tables import sources, ticks
from syncd.workflows import Registry
from tests.conftest import WORKOS_KEY

#: Loopback, never reached: these configurations fail before any request.
NOWHERE = "http://127.0.0.1:9"


@pytest.fixture(autouse=True)
def _no_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI reads ./.env: run where there is none."""
    monkeypatch.chdir(tmp_path)


BAD = [
    ("SYNCD_HTTP_TIMEOUT", "nan"),
    ("SYNCD_HTTP_TIMEOUT", "inf"),
    ("SYNCD_HTTP_TIMEOUT", "-inf"),
    ("SYNCD_HTTP_TIMEOUT", "1e9"),
    ("SYNC_INTERVAL_SECONDS", "1e20"),
    ("SYNC_INTERVAL_SECONDS", "100000000000000000000"),
    ("SYNCD_LEASE_SECONDS", "99999999999999"),
    ("SYNCD_REPLICA_ID", "r" * (MAX_REPLICA_ID_LENGTH + 1)),
    ("SYNCD_REPLICA_ID", "replica\x1b[2J"),
    ("SYNCD_HTTP_PORT", "70000"),
    ("SYNCD_PREFETCH_PAGES", "10000000000"),
    ("SYNCD_GROUP_EVENTS", "10000000000"),
    ("SYNCD_GROUP_SECONDS", "1e9"),
    ("SYNCD_MAX_ATTEMPTS", "100"),  # the run backoff would overflow at the 60th
    ("DATABASE_URL", "postgresql+asyncpg://syncd:pw-7f1c@localhost/syncd"),
    ("DATABASE_URL", "sqlite+aiosqlite:///syncd.db"),
    ("OTEL_EXPORTER_OTLP_TIMEOUT", "inf"),
    ("OTEL_BSP_MAX_QUEUE_SIZE", "100000000000000000000000"),  # overflowed the queue: a traceback
    ("SYNCD_SQL_GAP_SECONDS", "nan"),  # read by the SQL connector, with the same getter
]
#: Read by a connector package or the tracing set-up: commands that build neither (status) do not read them.
CONNECTOR_VARIABLES = {"SYNCD_SQL_GAP_SECONDS", "OTEL_BSP_MAX_QUEUE_SIZE"}


@pytest.mark.parametrize(("variable", "value"), BAD, ids=[f"{v}={x[:20]!r}" for v, x in BAD])
def test_a_setting_that_would_fail_every_tick_stops_start_up_naming_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], variable: str, value: str) -> None:
    # The span queue is read only while tracing; otherwise tracing stays off in this (the test's) process.
    exporter = "console" if variable == "OTEL_BSP_MAX_QUEUE_SIZE" else "none"
    environ = {"DATABASE_URL": f"sqlite:///{tmp_path / 'syncd.db'}", "OTEL_TRACES_EXPORTER": exporter,
               "WORKOS_API_KEY": WORKOS_KEY, "WORKOS_BASE_URL": NOWHERE, "SYNCD_SQL_TABLES": "orders:insert:id",
               variable: value}
    for command in ("once",) if variable in CONNECTOR_VARIABLES else ("once", "status"):
        assert cli.main([command], environ=environ) == 2, command
        out, err = capsys.readouterr()
        [line] = err.strip().splitlines()
        assert variable in line and "Traceback" not in err, line
        assert "pw-7f1c" not in out + err and "\x1b" not in err


@pytest.mark.parametrize(("variable", "value"), [
    ("SYNCD_HTTP_TIMEOUT", "600"), ("SYNC_INTERVAL_SECONDS", str(7 * 86_400)), ("SYNCD_MAX_ATTEMPTS", "50"),
    ("SYNCD_LEASE_SECONDS", str(21 * 86_400)), ("SYNCD_HTTP_PORT", "65535"),
    ("SYNCD_REPLICA_ID", "r" * MAX_REPLICA_ID_LENGTH), ("DATABASE_URL", "postgres://u:p@db/syncd"),
    ("DATABASE_URL", "sqlite+pysqlite:///x.db"),
])
def test_the_bounds_themselves_are_accepted(variable: str, value: str) -> None:
    Settings.from_env({variable: value})


def test_a_workflows_retries_are_bounded_like_the_setting() -> None:
    registry = Registry()
    with pytest.raises(ValueError, match=f"1 to {MAX_ATTEMPTS}"):
        registry.workflow("too.patient", on=workos.events("user.created"), retries=MAX_ATTEMPTS + 1)
    registry.workflow("patient", on=workos.events("user.created"), retries=MAX_ATTEMPTS)(lambda event, ctx: None)


def test_the_replica_id_limit_is_the_width_of_the_columns_that_store_it() -> None:
    assert sources.c.lease_owner.type.length == MAX_REPLICA_ID_LENGTH  # type: ignore[attr-defined]
    assert ticks.c.replica.type.length == MAX_REPLICA_ID_LENGTH  # type: ignore[attr-defined]


def test_the_default_lease_of_the_longest_interval_is_within_bounds() -> None:
    settings = Settings.from_env({"SYNC_INTERVAL_SECONDS": str(7 * 86_400)})
    assert settings.lease_seconds == 3 * 7 * 86_400
