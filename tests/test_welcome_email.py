"""The welcome-email example end to end (issue 10): rows inserted into the user's ``users`` table, a
30-minute durable sleep on a faked clock, a real SMTP server (aiosmtpd), Slack and Intercom on a sink that
fails 30% of calls — one email per user, none to bots or already-emailed users, one call per integration."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from simulators.sink import SinkSimulator
from syncd.contracts import FakeClock
from syncd.ops.app import App
from syncd.store.tables import runs
from syncd.workflows import Registry
from tests.conftest import settings_for

FLAGS = "is_bot BOOLEAN NOT NULL DEFAULT FALSE, email_sent BOOLEAN NOT NULL DEFAULT FALSE"
USERS_DDL = {
    "sqlite": f"CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT NOT NULL, name TEXT, {FLAGS}, "
              "created_at TIMESTAMP)",
    "postgresql": "CREATE TABLE users (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                  f"email TEXT NOT NULL, name TEXT, {FLAGS}, created_at TIMESTAMPTZ DEFAULT now())",
}


class Smtp:
    """A real SMTP server on a free loopback port, keeping every envelope it accepts."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.received: list[Any] = []
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(envelope)
        return "250 OK"

    def recipients(self) -> list[str]:
        return sorted(to for envelope in self.received for to in envelope.rcpt_tos)


@pytest.fixture
def smtp() -> Iterator[Smtp]:
    server = Smtp()
    server.controller.start()
    yield server
    server.controller.stop()


@pytest.fixture
def sink() -> Iterator[SinkSimulator]:
    with SinkSimulator(fail_rate=0.3, seed=10) as s:
        yield s


def add_user(engine: sa.Engine, email: str, *, name: str | None = None, is_bot: bool = False,
             email_sent: bool = False) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO users (email, name, is_bot, email_sent) VALUES (:e, :n, :b, :s)"),
                     {"e": email, "n": name, "b": is_bot, "s": email_sent})


def welcome_registry() -> Registry:
    import syncd.examples.welcome_email  # noqa: F401 - registers the example in the default registry
    from syncd.workflows import default_registry

    registry = Registry()
    registry.add(default_registry.get("welcome-email") or pytest.fail("example not registered"))
    return registry


def statuses(app: App) -> dict[str, str]:
    with app.db.connect() as conn:
        return dict(conn.execute(sa.select(runs.c.event_id, runs.c.status)
                                 .where(runs.c.workflow == "welcome-email")).all())


def test_welcome_email_end_to_end(db_url: str, smtp: Smtp, sink: SinkSimulator) -> None:
    user_db = sa.create_engine(db_url)
    with user_db.begin() as conn:
        conn.execute(sa.text(USERS_DDL[user_db.dialect.name]))
    add_user(user_db, "alice@example.com", name="Alice")          # 1
    add_user(user_db, "ci-bot@example.com")                       # 2: a bot by its address
    add_user(user_db, "robo@example.com", is_bot=True)            # 3: a bot by its flag
    add_user(user_db, "carol@example.com", email_sent=True)       # 4: already emailed
    add_user(user_db, "bob@example.com", name="Bob")              # 5
    clock = FakeClock(datetime.now(UTC))
    env = {"SYNCD_BUILTINS": "none", "SYNCD_SMTP_URL": f"smtp://127.0.0.1:{smtp.port}",
           "SYNCD_SMTP_FROM": "hello@example.com", "SYNCD_SLACK_WEBHOOK_URL": f"{sink.url}/slack",
           "SYNCD_INTEGRATION_INTERCOM_URL": f"{sink.url}/intercom",
           "SYNCD_INTEGRATION_INTERCOM_TOKEN": "tok-intercom-5e1"}

    def start() -> App:
        return App.build(settings_for(db_url, **env), registry=welcome_registry(), clock=clock)

    app = start()
    try:
        [result] = app.tick_all()
        assert result.ok and result.source == "sql:users" and result.new_events == 5
        assert statuses(app) == {"1": "sleeping", "2": "succeeded", "3": "succeeded", "4": "succeeded",
                                 "5": "sleeping"}
        clock.advance(29 * 60)
        app.tick_all()
        assert smtp.received == [] and sink.calls == []  # nobody is emailed before 30 minutes
        add_user(user_db, "dave@example.com", name="Dave")        # 6: while syncd runs
        app.tick_all()
    finally:
        app.close()
    add_user(user_db, "erin@example.com", name="Erin")            # 7: while syncd is down
    clock.advance(2 * 60)
    app = start()  # a new process: sleeping runs come back from the database
    try:
        for _ in range(8):  # 30% of Slack/Intercom calls fail: retried within the steps, then by the run
            app.tick_all()
            clock.advance(31 * 60)
        assert statuses(app) == {str(i): "succeeded" for i in range(1, 8)}
        with app.db.begin() as conn:  # a replay of the whole table changes nothing
            conn.execute(sa.text("UPDATE syncd_sources SET cursor = NULL"))
        [result] = app.tick_all()
        assert result.ok and result.events == 7 and result.new_events == 0
    finally:
        app.close()

    wanted = ["alice@example.com", "bob@example.com", "dave@example.com", "erin@example.com"]
    assert smtp.recipients() == wanted  # one each; never a bot, never carol
    assert all(envelope.mail_from == "hello@example.com" for envelope in smtp.received)
    assert b"Hi Alice," in next(e.content for e in smtp.received if e.rcpt_tos == ["alice@example.com"])
    for path in ("/slack", "/intercom"):
        ok = sink.successes_by_key(path)
        assert len(ok) == len(wanted) and set(ok.values()) == {1}, path  # once per user, by idempotency key
    assert any(call.status >= 500 for call in sink.calls)  # failures did happen and were retried
    intercom = sorted(c.body["email"] for c in sink.calls
                      if c.path == "/intercom/contacts" and c.status < 300)
    assert intercom == wanted
    with user_db.connect() as conn:
        marked = dict(conn.execute(sa.text("SELECT email, email_sent FROM users")).all())
    assert {email for email, sent in marked.items() if sent} == {*wanted, "carol@example.com"}
    user_db.dispose()


def test_bot_rules() -> None:
    from syncd.examples.welcome_email import is_bot

    assert is_bot({"email": "ci-bot@example.com"}) and is_bot({"email": "noreply@example.com"})
    assert is_bot({"email": "deploy+bot@example.com"}) and is_bot({"email": "x@example.com", "is_bot": True})
    assert not is_bot({"email": "abbot@example.com"}) and not is_bot({"email": "robin@example.com"})
