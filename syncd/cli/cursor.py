"""``syncd cursor reset SOURCE --to TIME``: restart a source's walk from a time, by hand.

What the messages of a cursor the provider rejects (or a walk that cycles) point at. The connector turns the
time into its own cursor (``cursor_at``: WorkOS ``@TIME``, GitHub ``since``); the next tick lists from
there, and the ledger drops the events it already has (runs are created only for new events), so a time
too early costs requests, never a duplicate effect. A time too late skips what lies before it.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from typing import Any

from syncd.settings import Settings
from syncd.timefmt import parse_time

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def add_parser(sub: Any) -> None:
    """Register ``cursor reset`` on the ``syncd`` sub-parsers."""
    cursor = sub.add_parser("cursor", help="set a source's cursor by hand (see `syncd cursor reset -h`)")
    actions = cursor.add_subparsers(dest="cursor_action", required=True, metavar="ACTION")
    reset = actions.add_parser("reset", help="restart a source's walk from a time; events already synced "
                                              "are not applied again")
    reset.add_argument("source", metavar="SOURCE", help="a source key, as `syncd status` lists it "
                                                        "(workos, github:owner/repo, …)")
    reset.add_argument("--to", required=True, metavar="TIME",
                       help="ISO-8601 time (or unix seconds/milliseconds) to list events from")


def command(settings: Settings, args: argparse.Namespace) -> int:
    from syncd.contracts import CursorSpec
    from syncd.ops.app import App
    from syncd.store.heal import ResetOutcome, reset_cursor

    try:
        moment = parse_time(args.to.strip())
    except ValueError:
        print(f"syncd cursor reset: --to: not a time: {args.to[:60]!r} (e.g. 2026-01-15T12:00:00Z)",
              file=sys.stderr)
        return EXIT_USAGE
    app = App.build(settings, require_sources=False)
    try:
        connector = next((c for c in app.connectors if c.key == args.source), None)
        if connector is None:
            known = ", ".join(c.key for c in app.connectors) or "none configured"
            print(f"syncd cursor reset: unknown source {args.source[:100]!r} (sources: {known})", file=sys.stderr)
            return EXIT_USAGE
        cursor_at = getattr(connector, "cursor_at", None)
        if cursor_at is None:
            print(f"syncd cursor reset: source {connector.key} cannot be set to a time", file=sys.stderr)
            return EXIT_USAGE
        now = datetime.now(UTC)
        note = f"reset at {now.isoformat()} to {moment.isoformat()} by syncd cursor reset"
        result = reset_cursor(app.db, CursorSpec(connector.key, connector.key), cursor_at(moment), now=now, note=note)
    finally:
        app.close()
    if result.outcome is ResetOutcome.LEASED:
        until = result.lease_expires_at.isoformat() if result.lease_expires_at else "?"
        print(f"syncd cursor reset: {connector.key} is being synced now (lease held by {result.lease_owner} "
              f"until {until}); try again when its tick ends", file=sys.stderr)
        return EXIT_FAILED
    print(f"{connector.key}: cursor reset to {moment.isoformat()}; the next tick lists events from then on "
          "(those already synced are not applied again)")
    return EXIT_OK


__all__ = ["add_parser", "command"]
