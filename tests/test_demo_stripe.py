"""``syncd demo`` syncs the Stripe simulator too (issue #24): its source ticks beside WorkOS and GitHub, the
Stripe mirror fills, and the summary prints its tables and cursor. Run in-process on the demo's own file."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from syncd.ops.demo import run_demo, stripe_events
from syncd.settings import Settings


def test_the_demo_syncs_stripe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "demo.db"
    assert run_demo(Settings.from_env({"LOG_LEVEL": "WARNING"}), events=300, database=str(path)) == 0
    out = capsys.readouterr().out
    assert f"{stripe_events(300)} Stripe events" in out.splitlines()[0]
    ticks = {line.split()[0]: line for line in out.splitlines() if " pages " in line}
    assert ticks["stripe"].endswith(" ok") and ticks["workos"].endswith(" ok"), out
    db = sa.create_engine(f"sqlite:///{path}")
    try:
        with db.connect() as conn:
            counts = {name: conn.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar_one()
                      for name in ("stripe_customers", "stripe_subscriptions")}
            stripe_ledger = conn.execute(sa.text("SELECT count(*) FROM syncd_events WHERE stream = 'stripe'")
                                         ).scalar_one()
            cursor = conn.execute(sa.text("SELECT cursor FROM syncd_sources WHERE key = 'stripe'")).scalar_one()
            open_runs = conn.execute(sa.text("SELECT count(*) FROM syncd_runs WHERE status != 'succeeded'")
                                     ).scalar_one()
    finally:
        db.dispose()
    assert stripe_ledger > 0 and cursor and open_runs == 0
    for name, count in counts.items():
        assert count > 0 and any(line.split() == [name, str(count)] for line in out.splitlines()), name
    assert any(line.split()[:2] == ["stripe", "last"] for line in out.splitlines())  # its cursor is shown
