"""Integration rates in the configuration: ``SYNCD_INTEGRATION_<NAME>_RATE`` and ``SYNCD_SLACK_RATE`` are
read into ``Integrations``; a bad one makes ``syncd`` exit 2 with one line naming it (a real subprocess)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from syncd.errors import ConfigError
from syncd.settings import Integrations, Rate, Settings
from tests.test_cli import base_env

CRM = {"SYNCD_INTEGRATION_CRM_URL": "http://127.0.0.1:9/crm"}


@pytest.mark.parametrize(("raw", "rate", "interval"), [
    ("10/s", Rate(10, 1.0), 0.1),
    ("600/min", Rate(600, 60.0), 0.1),
    ("2/h", Rate(2, 3600.0), 1800.0),
    (" 5 / second ", Rate(5, 1.0), 0.2),
    ("1/M", Rate(1, 60.0), 60.0),
])
def test_rates_are_read(raw: str, rate: Rate, interval: float) -> None:
    found = Integrations.from_env({**CRM, "SYNCD_INTEGRATION_CRM_RATE": raw}).http_integration("crm").rate
    assert found == rate and found is not None and found.interval == pytest.approx(interval)


def test_an_integration_without_a_rate_has_none_and_slack_has_its_own() -> None:
    found = Integrations.from_env({**CRM, "SYNCD_SLACK_WEBHOOK_URL": "http://127.0.0.1:9/hook",
                                   "SYNCD_SLACK_RATE": "1/s"})
    assert found.http_integration("crm").rate is None and found.slack_rate == Rate(1, 1.0)
    assert "rate=None" in repr(found.http_integration("crm"))


@pytest.mark.parametrize(("env", "variable", "words"), [
    ({**CRM, "SYNCD_INTEGRATION_CRM_RATE": "10"}, "SYNCD_INTEGRATION_CRM_RATE", "expected a rate"),
    ({**CRM, "SYNCD_INTEGRATION_CRM_RATE": "10/day"}, "SYNCD_INTEGRATION_CRM_RATE", "expected a rate"),
    ({**CRM, "SYNCD_INTEGRATION_CRM_RATE": "0/s"}, "SYNCD_INTEGRATION_CRM_RATE", "at least one call"),
    ({**CRM, "SYNCD_INTEGRATION_CRM_RATE": "-1/s"}, "SYNCD_INTEGRATION_CRM_RATE", "expected a rate"),
    ({**CRM, "SYNCD_INTEGRATION_CRM_RATE": "1e9/s"}, "SYNCD_INTEGRATION_CRM_RATE", "expected a rate"),
    ({**CRM, "SYNCD_INTEGRATION_CRM_RATE": "50000/s"}, "SYNCD_INTEGRATION_CRM_RATE", "at most"),
    ({"SYNCD_INTEGRATION_CMR_RATE": "5/s", **CRM}, "SYNCD_INTEGRATION_CMR_RATE", "SYNCD_INTEGRATION_CMR_URL"),
    ({"SYNCD_SLACK_RATE": "5/s"}, "SYNCD_SLACK_RATE", "SYNCD_SLACK_WEBHOOK_URL"),
    ({"SYNCD_SLACK_WEBHOOK_URL": "http://127.0.0.1:9/h", "SYNCD_SLACK_RATE": "fast"}, "SYNCD_SLACK_RATE",
     "expected a rate"),
])
def test_a_bad_rate_names_its_variable(env: dict[str, str], variable: str, words: str) -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_env(env)
    assert error.value.variable == variable and words in str(error.value)


def test_syncd_check_exits_2_on_a_bad_rate(tmp_path: Path) -> None:
    env = {**base_env(tmp_path), "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", **CRM,
           "SYNCD_INTEGRATION_CRM_TOKEN": "tok-never-shown-3", "SYNCD_INTEGRATION_CRM_RATE": "lots"}
    result = subprocess.run([sys.executable, "-m", "syncd", "check"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    [line] = result.stderr.strip().splitlines()
    assert "SYNCD_INTEGRATION_CRM_RATE" in line and "'lots'" in line
    assert "tok-never-shown-3" not in result.stderr + result.stdout
