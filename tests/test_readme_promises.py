"""README features that had no test exercising them (issue 27, item 2): the integration bearer token sent
and never logged, the SQLite busy timeout's real value, ``ctx.sleep_until``, trace links from
``SYNCD_JAEGER_URL`` in ``syncd status``, and ``smtps://`` and STARTTLS against a real TLS SMTP server.

Everything is real: loopback HTTP to the sink simulator, aiosmtpd with a certificate made for the test,
SQLite files, the CLI's own ``main``.
"""

from __future__ import annotations

import logging
import socket
import subprocess
from datetime import timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connectors import workos
from simulators.sink import SinkSimulator
from simulators.workos import WorkOSSimulator
from syncd import cli
from syncd.contracts import FakeClock
from syncd.ops.app import App
from syncd.store.tables import runs
from syncd.workflows import Context, Registry
from syncd.workflows.integrations import send_smtp
from tests.conftest import settings_for, workos_env
from tests.otlp_receiver import OTLPReceiver
from tests.test_telemetry import FAILING_WORKFLOW, base_env, syncd_once
from tests.test_telemetry import KEY as TELE_KEY

CRM_TOKEN = "tok_crm_sentinel_8d2f1c"


def first_user_created(sim: Any) -> str:
    return str(next(e["id"] for e in sim.events() if e["event"] == "user.created"))


def run_rows(app: App, workflow: str) -> list[Any]:
    with app.db.connect() as conn:
        return list(conn.execute(sa.select(runs).where(runs.c.workflow == workflow)))


# ---- integrations: the bearer token --------------------------------------------------------------------

def test_the_integration_token_is_sent_as_a_bearer_and_never_logged(
        sqlite_url: str, workos_sim: Any, clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx's request lines included
    target = first_user_created(workos_sim)
    registry = Registry()

    @registry.workflow("crm", on=workos.events("user.created"), retries=3)
    def add_contact(event: Any, ctx: Context) -> None:
        if event.id == target:
            ctx.step("add", lambda: ctx.http("crm").post("/contacts", json={"id": event.id}).status_code,
                     retries=0)

    with SinkSimulator(fail_rate=1.0, fail_status=401) as sink:
        env = {**workos_env(workos_sim), "SYNCD_BUILTINS": "none", "SYNCD_INTEGRATION_CRM_URL": sink.url,
               "SYNCD_INTEGRATION_CRM_TOKEN": CRM_TOKEN}
        app = App.build(settings_for(sqlite_url, **env), registry=registry, clock=clock)
        try:
            app.tick_all()  # the receiver rejects the first attempt: an error is stored and logged
            [failed] = [r for r in run_rows(app, "crm") if r.event_id == target]
            assert failed.status == "failed" and "401" in failed.last_error
            sink.fail_rate = 0.0
            clock.advance(3600)
            app.tick_all()
            [done] = [r for r in run_rows(app, "crm") if r.event_id == target]
            assert done.status == "succeeded"
        finally:
            app.close()
        calls = [c for c in sink.calls if c.path == "/contacts"]
    assert [c.status for c in calls] == [401, 200]
    assert {c.authorization for c in calls} == {f"Bearer {CRM_TOKEN}"}  # really sent, each time
    assert caplog.records and not [r for r in caplog.records if CRM_TOKEN in r.getMessage()]
    assert CRM_TOKEN not in caplog.text and CRM_TOKEN not in failed.last_error


# ---- SQLite: the busy timeout --------------------------------------------------------------------------

def test_sqlite_waits_30_seconds_for_a_lock_as_the_readme_says(sqlite_url: str, workos_sim: Any,
                                                                make_app: Any) -> None:
    app = make_app(sqlite_url, **workos_env(workos_sim))
    with app.db.connect() as conn:  # read back from SQLite itself, on a connection the app's engine made
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar_one() == 30_000
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"


# ---- ctx.sleep_until ------------------------------------------------------------------------------------

def test_sleep_until_holds_the_run_until_that_time_and_then_finishes_it_once(
        sqlite_url: str, workos_sim: Any, clock: FakeClock) -> None:
    target = first_user_created(workos_sim)
    wake_at = clock.now() + timedelta(hours=2)
    finished: list[str] = []
    registry = Registry()

    @registry.workflow("later", on=workos.events("user.created"))
    def later(event: Any, ctx: Context) -> None:
        if event.id == target:
            ctx.sleep_until("two-hours", wake_at)
            finished.append(event.id)

    app = App.build(settings_for(sqlite_url, SYNCD_BUILTINS="none", **workos_env(workos_sim)),
                    registry=registry, clock=clock)
    try:
        app.tick_all()
        [row] = [r for r in run_rows(app, "later") if r.event_id == target]
        assert row.status == "sleeping" and finished == []
        clock.advance(3600)  # an hour early: still asleep, whatever ticks happen
        app.tick_all()
        [row] = [r for r in run_rows(app, "later") if r.event_id == target]
        assert row.status == "sleeping" and finished == []
        clock.advance(3601)  # past the wake time
        app.tick_all()
        [row] = [r for r in run_rows(app, "later") if r.event_id == target]
        assert row.status == "succeeded" and finished == [target]
        clock.advance(3600)
        app.tick_all()
        assert finished == [target]  # once
    finally:
        app.close()


# ---- syncd status: trace links --------------------------------------------------------------------------

def test_status_links_each_failed_run_to_the_trace_jaeger_received(
        sqlite_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with WorkOSSimulator(events=160, seed=21, api_key=TELE_KEY) as sim, OTLPReceiver() as rx:
        fail_id = next(e["id"] for e in sim.events() if e["event"] == "user.created")
        (tmp_path / "tele_wf.py").write_text(FAILING_WORKFLOW.format(fail_id=fail_id))
        env = base_env(tmp_path, DATABASE_URL=sqlite_url, WORKOS_API_KEY=TELE_KEY, WORKOS_BASE_URL=sim.url,
                       SYNCD_WORKFLOWS="tele_wf", SYNCD_BUILTINS="none", OTEL_EXPORTER_OTLP_ENDPOINT=rx.url)
        proc = syncd_once(tmp_path, env)
        assert proc.returncode == 1, proc.stderr  # the failed run
        exported = {span.trace_id for span in rx.spans}
    with sa.create_engine(sqlite_url).connect() as conn:
        trace_id = conn.execute(sa.select(runs.c.trace_id).where(runs.c.event_id == fail_id)).scalar_one()
    assert trace_id in exported  # the link leads to a trace the collector really received

    capsys.readouterr()
    environ = {"DATABASE_URL": sqlite_url, "SYNCD_JAEGER_URL": "http://jaeger.internal:16686/"}
    assert cli.main(["status"], environ=environ) == 0
    assert f"trace: http://jaeger.internal:16686/trace/{trace_id}" in capsys.readouterr().out
    assert cli.main(["status"], environ={"DATABASE_URL": sqlite_url}) == 0
    assert "/trace/" not in capsys.readouterr().out  # no link without the variable


# ---- SMTP over TLS: smtps:// and STARTTLS ---------------------------------------------------------------

def over_tls(server: Any, session: Any) -> bool:
    """Whether this SMTP session is encrypted: upgraded by STARTTLS, or TLS from its first byte."""
    return session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None


class TlsSmtp:
    """aiosmtpd on a free loopback port, with TLS (implicit or STARTTLS) and AUTH; keeps what it accepts."""

    def __init__(self, cert: Path, key: Path, *, implicit: bool) -> None:
        import ssl

        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        self.received: list[tuple[Any, bool]] = []
        self.logins: list[tuple[str, bool]] = []
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]

        def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
            login = (data.login.decode(), data.password.decode())
            self.logins.append((login[0], over_tls(server, session)))
            return AuthResult(success=login == ("mailer", "p@ss word"))

        # aiosmtpd's auth_require_tls knows only STARTTLS: on implicit TLS the session's TLS is checked instead
        tls = ({"ssl_context": context, "auth_require_tls": False} if implicit
               else {"tls_context": context, "require_starttls": True, "auth_require_tls": True})
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port, authenticator=authenticate,
                                     server_hostname="localhost", **tls)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append((envelope, over_tls(server, session)))
        return "250 OK"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, made with the system's openssl."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


@pytest.fixture
def trust(certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make the test certificate the one CA the client trusts (ssl.create_default_context reads it)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    return certificate[0]


def message() -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "hello@example.com", "alice@example.com", "welcome"
    msg.set_content("hi")
    return msg


@pytest.mark.parametrize("scheme", ["smtps", "smtp"])
def test_email_goes_over_tls_smtps_from_the_start_or_smtp_with_starttls(
        scheme: str, certificate: tuple[Path, Path], trust: Path) -> None:
    server = TlsSmtp(*certificate, implicit=scheme == "smtps")
    server.controller.start()
    try:
        send_smtp(f"{scheme}://mailer:p%40ss%20word@localhost:{server.port}", message())
    finally:
        server.controller.stop()
    # the password went over TLS (the server refuses AUTH in clear), and so did the message
    assert server.logins == [("mailer", True)]
    [(envelope, over_tls)] = server.received
    assert over_tls and envelope.rcpt_tos == ["alice@example.com"]


def test_a_certificate_the_client_does_not_trust_is_refused(certificate: tuple[Path, Path]) -> None:
    import ssl

    server = TlsSmtp(*certificate, implicit=True)
    server.controller.start()
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            send_smtp(f"smtps://mailer:p%40ss%20word@localhost:{server.port}", message())
    finally:
        server.controller.stop()
    assert server.logins == [] and server.received == []
