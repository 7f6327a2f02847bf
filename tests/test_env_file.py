"""``.env`` mistakes are caught, and the OpenTelemetry variables a ``.env`` sets take effect.

Every name syncd, the OpenTelemetry packages or Compose read is known (checked against the installed
packages' source, not a copy of their docs); a near-miss of any known name gets a "did you mean"; an
``OTEL_EXPORTER_OTLP_HEADERS`` set only in ``.env`` reaches a real OTLP receiver as a request header, and
its value is never printed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import opentelemetry
import pytest

from simulators.workos import WorkOSSimulator
from syncd.envfile import KNOWN_VARIABLES, env_file_warnings, export_otel
from syncd.otel_variables import OTEL_VARIABLES
from tests.otlp_receiver import OTLPReceiver
from tests.test_telemetry import base_env

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk_test_envfile_secret_5d0e"
#: What a hosted collector's API key looks like in a header; must never be printed.
COLLECTOR_KEY = "hc_live_collector_key_8b41e7"


# ---- which names are known -----------------------------------------------------------------------


def otel_names_in_installed_packages() -> set[str]:
    """Every ``"OTEL_…"`` string literal in the installed ``opentelemetry`` packages (SDK, exporter,
    instrumentations): the variables they read."""
    names: set[str] = set()
    for root in opentelemetry.__path__:
        for source in Path(root).rglob("*.py"):
            names |= set(re.findall(r"[\"'](OTEL_[A-Z0-9_]*[A-Z0-9])[\"']", source.read_text(errors="replace")))
    return names


def test_every_variable_the_opentelemetry_packages_read_is_known() -> None:
    read = otel_names_in_installed_packages()
    assert len(read) > 80  # the scan found the SDK's list
    assert "OTEL_BSP_MAX_QUEUE_SIZE" in read and "OTEL_EXPORTER_OTLP_HEADERS" in read
    missing = read - OTEL_VARIABLES
    assert not missing, f"add to syncd/otel_variables.py: {sorted(missing)}"


def documented(text: str) -> set[str]:
    """``NAME=`` lines of sample.env (commented out or not) and backquoted names in README tables."""
    return set(re.findall(r"^[#\s]*([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE)) | set(
        re.findall(r"^\| `([A-Z][A-Z0-9_]*)`", text, flags=re.MULTILINE))


def test_every_documented_variable_is_known() -> None:
    names = documented((ROOT / "sample.env").read_text()) | documented((ROOT / "README.md").read_text())
    # JSONL_*: the example outside connector's own settings (examples/jsonl-connector reads them, not syncd)
    names = {n for n in names if not n.startswith(("SYNCD_INTEGRATION_", "JSONL_"))}
    assert {"DATABASE_URL", "OTEL_BSP_MAX_QUEUE_SIZE", "OTEL_EXPORTER_OTLP_HEADERS"} <= names
    assert names <= KNOWN_VARIABLES, f"documented but not known: {sorted(names - KNOWN_VARIABLES)}"


# ---- warnings --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "hint"), [
    ("DATABSE_URL", "did you mean DATABASE_URL?"),  # no syncd prefix: caught as a near-miss
    ("database_url", "did you mean DATABASE_URL? names are case-sensitive"),
    ("LOGLEVEL", "did you mean LOG_LEVEL?"),
    ("WORKSOS_API_KEY", "did you mean WORKOS_API_KEY?"),
    ("GIHUB_TOKEN", "did you mean GITHUB_TOKEN?"),
    ("POSTGRES_PASWORD", "did you mean POSTGRES_PASSWORD?"),
    ("SYNCD_WORKFLOW", "did you mean SYNCD_WORKFLOWS?"),
    ("OTEL_EXPORTER_OTLP_HEADER", "did you mean OTEL_EXPORTER_OTLP_HEADERS?"),
    ("OTEL_BSP_MAX_QUEUE", "did you mean OTEL_BSP_MAX_QUEUE_SIZE?"),
    ("SYNCD_INTEGRATION_INTERCOM_URI", "integrations are SYNCD_INTEGRATION_<NAME>_URL and"),
    ("SYNCD_NOTHING_LIKE_ANYTHING", ""),  # a syncd prefix but no close name: warned, without a guess
])
def test_a_mistyped_name_is_warned_with_a_hint(tmp_path: Path, name: str, hint: str) -> None:
    path = tmp_path / ".env"
    path.write_text(f"{name}=sk_live_value_never_shown\nDATABASE_URL=sqlite:///x.db\n")
    [warning] = env_file_warnings(path)
    assert warning.startswith(f"{path} sets {name}, which syncd does not read")
    assert hint in warning
    if not hint:
        assert "did you mean" not in warning
    assert "sk_live_value_never_shown" not in warning


def test_known_names_and_other_tools_names_are_not_warned_about(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("\n".join([
        "OTEL_BSP_MAX_QUEUE_SIZE=20000", "OTEL_EXPORTER_OTLP_HEADERS=x-api-key=abc",
        "OTEL_RESOURCE_ATTRIBUTES=deployment.environment=prod", "OTEL_TRACES_SAMPLER=parentbased_always_on",
        "OTEL_PYTHON_HTTPX_EXCLUDED_URLS=health", "POSTGRES_PASSWORD=syncd", "COMPOSE_PROFILES=syncd",
        "SYNCD_INTEGRATION_MY_CRM_URL=https://crm.example", "SYNCD_INTEGRATION_MY_CRM_TOKEN=t",
        # other applications' variables sharing the file
        "PGPASSWORD=x", "SENTRY_DSN=https://k@sentry.example/1", "MY_APP_SECRET=s", "DB_URL=postgres://x",
    ]) + "\n")
    assert env_file_warnings(path) == []


def test_export_otel_copies_only_otel_names_the_environment_does_not_set() -> None:
    environ = {"OTEL_SERVICE_NAME": "from-the-environment"}
    copied = export_otel({"OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=k", "OTEL_SERVICE_NAME": "from-env-file",
                          "DATABASE_URL": "sqlite:///x.db"}, environ)
    assert copied == ["OTEL_EXPORTER_OTLP_HEADERS"]
    assert environ == {"OTEL_SERVICE_NAME": "from-the-environment", "OTEL_EXPORTER_OTLP_HEADERS": "x-api-key=k"}


# ---- as a user runs it -----------------------------------------------------------------------------


def syncd(cwd: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "syncd", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60, check=False)


@pytest.fixture
def sim() -> Iterator[WorkOSSimulator]:
    with WorkOSSimulator(events=120, seed=9, api_key=KEY) as simulator:
        yield simulator


def test_the_cli_warns_about_a_typo_and_not_about_otel_names(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DATABSE_URL=sqlite:///typo.db\nOTEL_BSP_MAX_QUEUE_SIZE=20000\n")
    result = syncd(tmp_path, "migrate", env=base_env(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'a.db'}"))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("syncd: warning:")]
    assert warnings == ["syncd: warning: .env sets DATABSE_URL, which syncd does not read "
                        "(did you mean DATABASE_URL?)"]


@pytest.mark.parametrize("from_environment", [False, True])
def test_otlp_headers_set_only_in_env_file_reach_the_collector_and_are_never_printed(
        tmp_path: Path, sim: WorkOSSimulator, from_environment: bool) -> None:
    with OTLPReceiver() as rx:
        (tmp_path / ".env").write_text(
            f"OTEL_EXPORTER_OTLP_ENDPOINT={rx.url}\n"
            f"OTEL_EXPORTER_OTLP_HEADERS=x-api-key={COLLECTOR_KEY},x-team=data\n"
            "OTEL_RESOURCE_ATTRIBUTES=deployment.environment=staging\n"
            f"WORKOS_API_KEY={KEY}\nWORKOS_BASE_URL={sim.url}\n")
        env = base_env(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 'syncd.db'}", LOG_LEVEL="DEBUG")
        if from_environment:  # the real environment wins over .env, for the SDK's variables as for syncd's
            env["OTEL_EXPORTER_OTLP_HEADERS"] = "x-api-key=from-the-environment"
        result = syncd(tmp_path, "once", env=env)
        assert result.returncode == 0, result.stderr
        headers = [{k.lower(): v for k, v in h.items()} for h in rx.headers]
        spans = rx.spans
    assert headers and spans
    expected = "from-the-environment" if from_environment else COLLECTOR_KEY
    assert {h.get("x-api-key") for h in headers} == {expected}
    if not from_environment:
        assert {h.get("x-team") for h in headers} == {"data"}
    # an SDK-only variable (the SDK's Resource reads it from the process environment) took effect too
    assert {s.resource.get("deployment.environment") for s in spans} == {"staging"}
    output = result.stdout + result.stderr
    assert COLLECTOR_KEY not in output and "x-api-key" not in output and KEY not in output
    assert COLLECTOR_KEY.encode() not in rx.raw


def test_malformed_otlp_headers_exit_2_without_showing_the_value(tmp_path: Path, sim: WorkOSSimulator) -> None:
    (tmp_path / ".env").write_text(
        "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:9\n"
        f"OTEL_EXPORTER_OTLP_HEADERS=Authorization Bearer {COLLECTOR_KEY}\n"
        f"WORKOS_API_KEY={KEY}\nWORKOS_BASE_URL={sim.url}\n")
    result = syncd(tmp_path, "once", env=base_env(tmp_path, DATABASE_URL=f"sqlite:///{tmp_path / 's.db'}"))
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("syncd: configuration error: OTEL_EXPORTER_OTLP_HEADERS: expected comma-separated")
    assert COLLECTOR_KEY not in result.stdout + result.stderr
