"""Settings from an injected environment: defaults, normalisation, one ConfigError per bad value, no leaks."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from connectors import workos
from connectors.workos import dsync
from syncd.errors import ConfigError
from syncd.settings import KNOWN_VARIABLES, Secret, Settings, env_file_warnings, normalize_database_url
from syncd.workflows import Registry

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
PASSWORD = "hunter2-Pa55"
KEY = "sk_live_do_not_print_8c1e"


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.database_url == "sqlite:///syncd.db"
    assert s.interval_seconds == 60
    assert s.sources == ()
    assert s.workflow_modules == ()
    assert s.builtins is None  # every provider's built-in mirrors
    assert s.max_attempts == 5
    assert s.lease_seconds == 180  # three intervals
    assert s.log_level == "INFO"
    assert s.log_format == "auto"
    assert s.replica_id is None
    assert (s.range_start, s.range_end) == (None, None)


def test_from_env_reads_the_given_mapping_not_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in KNOWN_VARIABLES:  # whatever the runner's environment holds
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SYNC_INTERVAL_SECONDS", "5")
    assert Settings.from_env({}).interval_seconds == 60
    assert Settings.from_env().interval_seconds == 5


def test_values_are_parsed() -> None:
    s = Settings.from_env({
        "DATABASE_URL": "sqlite:////tmp/x.db", "SYNC_INTERVAL_SECONDS": " 15 ",
        "SYNCD_SOURCES": "workos, github:a/b,",
        "SYNCD_WORKFLOWS": "myapp.flows,other", "SYNCD_BUILTINS": "none", "SYNCD_MAX_ATTEMPTS": "3",
        "LOG_LEVEL": "debug", "LOG_FORMAT": "JSON", "EVENTS_RANGE_START": "1767225600000",
        "EVENTS_RANGE_END": "2026-01-02T00:00:00Z",
    }, now=NOW)
    assert s.database_url == "sqlite:////tmp/x.db"
    assert s.interval_seconds == 15
    assert s.lease_seconds == 45
    assert s.sources == ("workos", "github:a/b")
    assert s.workflow_modules == ("myapp.flows", "other")
    assert s.builtins == ()
    assert s.max_attempts == 3
    assert (s.log_level, s.log_format) == ("DEBUG", "json")
    assert s.range_start == datetime(2026, 1, 1, tzinfo=UTC)
    assert s.range_end == datetime(2026, 1, 2, tzinfo=UTC)


@pytest.mark.parametrize(("builtins", "expected"), [
    ("", None), ("all", None), ("none", ()), ("workos", ("workos",)),
])
def test_builtins(builtins: str, expected: tuple[str, ...] | None) -> None:
    assert Settings.from_env({"SYNCD_BUILTINS": builtins}).builtins == expected


@pytest.mark.parametrize(("given", "expected"), [
    ("postgres://u:p@db:5432/app", "postgresql+psycopg://u:p@db:5432/app"),
    ("postgresql://u:p@db/app?sslmode=require", "postgresql+psycopg://u:p@db/app?sslmode=require"),
    ("postgresql+psycopg://u:p@db/app", "postgresql+psycopg://u:p@db/app"),
    ("sqlite:///syncd.db", "sqlite:///syncd.db"),
    ("sqlite:////abs/path.db", "sqlite:////abs/path.db"),
])
def test_database_url_normalised_to_psycopg3(given: str, expected: str) -> None:
    assert normalize_database_url(given) == expected
    assert Settings.from_env({"DATABASE_URL": given}).database_url == expected


@pytest.mark.parametrize(("env", "variable"), [
    ({"SYNC_INTERVAL_SECONDS": "abc"}, "SYNC_INTERVAL_SECONDS"),
    ({"SYNC_INTERVAL_SECONDS": "0"}, "SYNC_INTERVAL_SECONDS"),
    ({"SYNC_INTERVAL_SECONDS": "-5"}, "SYNC_INTERVAL_SECONDS"),
    ({"SYNC_INTERVAL_SECONDS": "1.5"}, "SYNC_INTERVAL_SECONDS"),
    ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
    ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
    ({"DATABASE_URL": f"mysql://root:{PASSWORD}@localhost/db"}, "DATABASE_URL"),
    ({"DATABASE_URL": "not a url"}, "DATABASE_URL"),
    ({"DATABASE_URL": f"postgresql://u:{PASSWORD}@db:notaport/app"}, "DATABASE_URL"),
    ({"SYNCD_MAX_ATTEMPTS": "0"}, "SYNCD_MAX_ATTEMPTS"),
    ({"SYNCD_MAX_ATTEMPTS": "many"}, "SYNCD_MAX_ATTEMPTS"),
    ({"SYNCD_LEASE_SECONDS": "1"}, "SYNCD_LEASE_SECONDS"),
    ({"SYNCD_HTTP_TIMEOUT": "0"}, "SYNCD_HTTP_TIMEOUT"),
    ({"SYNCD_PREFETCH_PAGES": "-1"}, "SYNCD_PREFETCH_PAGES"),
    ({"SYNCD_PREFETCH_PAGES": "many"}, "SYNCD_PREFETCH_PAGES"),
    ({"SYNCD_GROUP_EVENTS": "0"}, "SYNCD_GROUP_EVENTS"),
    ({"SYNCD_GROUP_EVENTS": "lots"}, "SYNCD_GROUP_EVENTS"),
    ({"SYNCD_GROUP_SECONDS": "-1"}, "SYNCD_GROUP_SECONDS"),
    ({"SYNCD_GROUP_SECONDS": "nan"}, "SYNCD_GROUP_SECONDS"),
    ({"SYNCD_HTTP_PORT": "http"}, "SYNCD_HTTP_PORT"),
    ({"EVENTS_RANGE_START": "1767225600000"}, "EVENTS_RANGE_END"),  # one without the other
    ({"EVENTS_RANGE_END": "1767225600000"}, "EVENTS_RANGE_START"),
    # reversed, then empty
    ({"EVENTS_RANGE_START": "1767312000000", "EVENTS_RANGE_END": "1767225600000"}, "EVENTS_RANGE_END"),
    ({"EVENTS_RANGE_START": "1767225600000", "EVENTS_RANGE_END": "1767225600000"}, "EVENTS_RANGE_END"),
    ({"EVENTS_RANGE_START": "last tuesday", "EVENTS_RANGE_END": "1767225600000"}, "EVENTS_RANGE_START"),
    ({"EVENTS_RANGE_START": "1767225600000", "EVENTS_RANGE_END": "soon"}, "EVENTS_RANGE_END"),
    ({"EVENTS_RANGE_START": "2027-01-01T00:00:00Z", "EVENTS_RANGE_END": "2027-02-01T00:00:00Z"},
     "EVENTS_RANGE_START"),  # in the future
])
def test_bad_value_is_a_config_error_naming_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env, now=NOW)
    assert info.value.variable == variable
    assert str(info.value).startswith(f"{variable}: ")
    assert "\n" not in str(info.value)
    assert PASSWORD not in str(info.value)


@pytest.mark.parametrize(("env", "variable"), [
    ({"WORKOS_API_KEY": KEY, "WORKOS_BASE_URL": "ftp://x"}, "WORKOS_BASE_URL"),
    ({"WORKOS_API_KEY": KEY, "WORKOS_BASE_URL": "api.workos.com"}, "WORKOS_BASE_URL"),
    ({"WORKOS_API_KEY": KEY, "SYNCD_HTTP_TIMEOUT": "never"}, "SYNCD_HTTP_TIMEOUT"),
])
def test_bad_workos_value_is_a_config_error_naming_the_variable(env: dict[str, str], variable: str) -> None:
    registry = Registry()
    workos.provider.builtin_workflows(registry)
    with pytest.raises(ConfigError) as info:
        workos.provider.sources(env, registry)
    assert info.value.variable == variable
    assert KEY not in str(info.value)


def test_workos_source_defaults() -> None:
    registry = Registry()
    workos.provider.builtin_workflows(registry)
    assert workos.provider.sources({}, registry) == []  # no key: not configured, not an error
    [connector] = workos.provider.sources({"WORKOS_API_KEY": KEY}, registry)
    try:
        assert connector.key == "workos"
        assert "https://api.workos.com" in repr(connector)
        assert KEY not in repr(connector)
        assert set(connector.event_types) == {f"{kind}.{verb}" for kind in ("user", "organization",  # type: ignore[attr-defined]
                                                                            "organization_membership")
                                              for verb in ("created", "updated", "deleted")} | set(dsync.TARGETS)
    finally:
        connector.close()


def test_workos_events_setting_replaces_the_default_types() -> None:
    registry = Registry()
    workos.provider.builtin_workflows(registry)
    env = {"WORKOS_API_KEY": KEY, "WORKOS_EVENTS": "user.created, session.created,"}
    [connector] = workos.provider.sources(env, registry)
    try:
        assert connector.event_types == ["session.created", "user.created"]  # type: ignore[attr-defined]
    finally:
        connector.close()


def test_repr_never_shows_a_password_or_a_key() -> None:
    s = Settings.from_env({"DATABASE_URL": f"postgres://syncd:{PASSWORD}@db:5432/app", "WORKOS_API_KEY": KEY,
                           "GITHUB_TOKEN": KEY, "POSTGRES_PASSWORD": PASSWORD})
    assert s.database_url == f"postgresql+psycopg://syncd:{PASSWORD}@db:5432/app"  # usable value kept
    for shown in (repr(s), str(s), f"{s}", f"{s!r}", repr([s])):
        assert PASSWORD not in shown
        assert KEY not in shown
        assert "syncd:***@db:5432/app" in shown


def test_secret_hides_itself_everywhere() -> None:
    secret = Secret(KEY)
    for shown in (repr(secret), str(secret), f"{secret}", f"{secret!r}", repr([secret]),
                  repr({"key": secret}), format(secret, ""), "%s" % (secret,)):  # noqa: UP031
        assert KEY not in shown
        assert "***" in shown
    assert secret.reveal() == KEY
    assert secret == Secret(KEY) and secret != Secret("other") and secret != KEY
    assert bool(secret) and not bool(Secret(""))


def test_settings_are_frozen() -> None:
    s = Settings.from_env({})
    with pytest.raises(AttributeError):
        s.interval_seconds = 1  # type: ignore[misc]


@pytest.mark.parametrize(("lines", "warned"), [
    ("WORKOS_APIKEY=sk_test_x\n", {"WORKOS_APIKEY": "WORKOS_API_KEY"}),
    ("SYNC_INTERVAL_SECOND=5\nDATABASE_URL=sqlite:///x.db\n",
     {"SYNC_INTERVAL_SECOND": "SYNC_INTERVAL_SECONDS"}),
    # known names and other applications' names are not warned about
    ("DATABASE_URL=sqlite:///x.db\nWORKOS_API_KEY=x\nMY_OWN_VAR=1\n", {}),
])
def test_env_file_typos_are_warned_with_a_hint(tmp_path: Path, lines: str, warned: dict[str, str]) -> None:
    path = tmp_path / ".env"
    path.write_text(lines)
    warnings = env_file_warnings(path)
    assert len(warnings) == len(warned)
    for (name, hint), warning in zip(sorted(warned.items()), sorted(warnings), strict=True):
        assert name in warning
        assert f"did you mean {hint}?" in warning
        assert "sk_test_x" not in warning  # names only, never values


def test_env_file_warnings_without_a_file(tmp_path: Path) -> None:
    assert env_file_warnings(tmp_path / "missing.env") == []


def test_typed_parts_for_the_http_endpoint_status_and_telemetry() -> None:
    s = Settings.from_env({"SYNCD_HTTP_HOST": "127.0.0.1", "SYNCD_JAEGER_URL": "http://jaeger:16686",
                           "OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318/", "OTEL_SERVICE_NAME": "sync-a"})
    assert (s.http_host, s.jaeger_url) == ("127.0.0.1", "http://jaeger:16686")
    assert (s.telemetry.exporter, s.telemetry.endpoint) == ("otlp", "http://jaeger:4318/v1/traces")
    assert (s.telemetry.service_name, s.telemetry.timeout) == ("sync-a", 5.0)
    default = Settings.from_env({})
    assert (default.http_host, default.jaeger_url, default.telemetry.exporter) == ("0.0.0.0", None, "none")
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"OTEL_TRACES_EXPORTER": "console", "OTEL_BSP_MAX_QUEUE_SIZE": "0"})
    assert info.value.variable == "OTEL_BSP_MAX_QUEUE_SIZE"


def test_integrations_are_read_once_and_never_show_their_secrets() -> None:
    s = Settings.from_env({"SYNCD_INTEGRATION_MY_CRM_URL": " https://crm.example/api ",
                           "SYNCD_INTEGRATION_MY_CRM_TOKEN": KEY, "SYNCD_INTEGRATION_ORPHAN_TOKEN": KEY,
                           "SYNCD_SLACK_WEBHOOK_URL": f"https://hooks.slack.com/services/{KEY}",
                           "SYNCD_SMTP_URL": f"smtp://mail:{PASSWORD}@smtp.example:587"})
    crm = s.integrations.http_integration("my-crm")  # ctx.http("my-crm")
    assert crm.url == "https://crm.example/api" and crm.token is not None and crm.token.reveal() == KEY
    assert set(s.integrations.http) == {"MY_CRM"}  # a token without a URL is no integration
    assert s.integrations.smtp_from == "syncd@localhost"
    with pytest.raises(ConfigError) as info:
        s.integrations.http_integration("intercom")
    assert info.value.variable == "SYNCD_INTEGRATION_INTERCOM_URL"
    for shown in (repr(s), repr(s.integrations)):
        assert KEY not in shown and PASSWORD not in shown
