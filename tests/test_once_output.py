"""``syncd once`` writes its report to the process's streams as they are when it runs (a captured or
redirected ``sys.stdout``), not to the ones bound when ``syncd.ops.once`` was first imported."""

from __future__ import annotations

import re

import pytest

from simulators.workos import WorkOSSimulator
from syncd import cli
from syncd.ops import once
from tests.conftest import WORKOS_KEY


def test_once_reports_to_the_current_stdout(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert once.OnceReport  # imported before capsys replaced sys.stdout: the case that failed
    with WorkOSSimulator(events=30, seed=3, api_key=WORKOS_KEY) as sim:
        env = {"DATABASE_URL": sqlite_url, "OTEL_SDK_DISABLED": "true", "WORKOS_API_KEY": WORKOS_KEY,
               "WORKOS_BASE_URL": sim.url}
        assert cli.main(["once"], environ=env) == 0
    out = capsys.readouterr().out
    assert re.match(r"workos: ok — 1 pages, \d+ events \(\d+ new\), \d+ runs ok, 0 failed$", out), out
