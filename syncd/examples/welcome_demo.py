"""The welcome-email example inside ``syncd demo --examples``: a ``users`` table with a few sign-ups (one a
bot, one already emailed), a local SMTP server, and a clock the demo fast-forwards past the 30-minute wait.

Needs ``aiosmtpd`` (a dev dependency); without it the demo says so and skips this example. Importing this
module registers nothing (the workflow module is enabled through ``SYNCD_WORKFLOWS`` by ``prepare``).
"""

from __future__ import annotations

import contextlib
import logging
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

SAMPLE_USERS = [
    {"email": "ada@example.com", "name": "Ada", "is_bot": False, "email_sent": False},
    {"email": "ci-bot@example.com", "name": "CI", "is_bot": False, "email_sent": False},
    {"email": "grace@example.com", "name": "Grace", "is_bot": False, "email_sent": True},
    {"email": "linus@example.com", "name": "Linus", "is_bot": False, "email_sent": False},
    {"email": "robo@example.com", "name": "Robo", "is_bot": True, "email_sent": False},
]


class DemoClock:
    """Real time, plus whatever the demo skipped ahead."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def skip(self, delta: timedelta) -> None:
        self.offset += delta


@dataclass
class WelcomeDemo:
    database_url: str
    port: int = 0
    received: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.extend(envelope.rcpt_tos)
        return "250 OK"

    def finish(self, app: Any, clock: DemoClock) -> None:
        """Skip past the wait, tick until the sleeping runs are done, and print what happened."""
        # Imported here, not at the top: importing the example registers its workflow, and ``syncd demo``
        # without --examples imports this module too.
        from syncd.examples.welcome_email import DELAY

        skip = DELAY + timedelta(minutes=1)
        minutes = int(skip.total_seconds() // 60)
        print(f"\nWelcome email (example): fast-forwarding the clock {minutes} minutes")
        clock.skip(skip)
        for _ in range(3):
            app.tick_all()
        engine = sa.create_engine(self.database_url)
        try:
            with engine.connect() as conn:
                marked = conn.execute(sa.text("SELECT count(*) FROM users WHERE email_sent")).scalar_one()
        finally:
            engine.dispose()
        print(f"  {len(SAMPLE_USERS)} sign-ups, {len(self.received)} welcome emails sent to the local SMTP "
              f"server ({', '.join(sorted(self.received))}); bots and already-emailed users skipped; "
              f"{marked} rows marked email_sent")


def prepare(stack: contextlib.ExitStack, env: dict[str, str], database_url: str) -> WelcomeDemo | None:
    """Create and fill ``users``, start the SMTP server, enable the workflow in ``env``."""
    try:
        from aiosmtpd.controller import Controller
    except ImportError:
        print("syncd demo: aiosmtpd is not installed; skipping the welcome-email example")
        return None
    engine = sa.create_engine(database_url)
    try:
        if sa.inspect(engine).has_table("users"):  # never write sample rows into a users table of yours
            print("syncd demo: a users table already exists; skipping the welcome-email example")
            return None
    finally:
        engine.dispose()
    demo = WelcomeDemo(database_url)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        demo.port = probe.getsockname()[1]
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every connection at INFO
    controller = Controller(demo, hostname="127.0.0.1", port=demo.port)
    controller.start()
    stack.callback(controller.stop)
    engine = sa.create_engine(database_url)
    metadata = sa.MetaData()
    users = sa.Table("users", metadata, sa.Column("id", sa.Integer, primary_key=True),
                     sa.Column("email", sa.String(200), nullable=False), sa.Column("name", sa.String(200)),
                     sa.Column("is_bot", sa.Boolean, nullable=False, default=False),
                     sa.Column("email_sent", sa.Boolean, nullable=False, default=False),
                     sa.Column("created_at", sa.DateTime(timezone=True)))
    try:
        metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(users.insert(), [{**u, "created_at": datetime.now(UTC)} for u in SAMPLE_USERS])
    finally:
        engine.dispose()
    modules = [m for m in (env.get("SYNCD_WORKFLOWS") or "").split(",") if m.strip()]
    env["SYNCD_WORKFLOWS"] = ",".join([*modules, "syncd.examples.welcome_email"])
    env["SYNCD_SMTP_URL"] = f"smtp://127.0.0.1:{demo.port}"
    env.setdefault("SYNCD_SMTP_FROM", "hello@example.com")
    return demo
