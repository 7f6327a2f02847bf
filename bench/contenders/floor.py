"""The machine's floor: fetch the same pages with httpx and insert the raw events, one ``executemany`` and
one commit per page, into SQLite (WAL, ``synchronous=NORMAL``, as syncd configures it) or PostgreSQL.

No ledger, no runs, no workflows, no cursor table: the cost of the I/O alone on this machine.
``python -m bench.contenders.floor --url URL --key KEY --database (PATH.db | postgresql://…)``
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import time
from typing import Any

import httpx

from bench.contenders.common import MIRROR_TYPES, PAGE_SIZE, report

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, type TEXT NOT NULL, "
    "created_at TEXT NOT NULL, payload TEXT NOT NULL)"
)


def connect(database: str) -> tuple[Any, str]:
    """A DB-API connection and its INSERT statement (placeholders differ)."""
    if database.startswith("postgresql"):
        import psycopg

        conn: Any = psycopg.connect(database.replace("postgresql+psycopg://", "postgresql://"))
        insert = "INSERT INTO events VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING"
    else:
        conn = sqlite3.connect(database, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        insert = "INSERT INTO events VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING"
    conn.execute(SCHEMA)
    if not database.startswith("postgresql"):
        return conn, insert
    conn.commit()
    return conn, insert


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.contenders.floor")
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--database", required=True)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    conn, insert = connect(args.database)
    sqlite = isinstance(conn, sqlite3.Connection)
    params: dict[str, str] = {"events": MIRROR_TYPES, "limit": str(PAGE_SIZE), "order": "asc"}
    events = pages = 0
    with httpx.Client(base_url=args.url, headers={"Authorization": f"Bearer {args.key}"}, timeout=30) as http:
        while True:
            response = http.get("/events", params=params)
            response.raise_for_status()
            body = response.json()
            rows = [
                (e["id"], e["event"], e["created_at"], json.dumps(e, separators=(",", ":")))
                for e in body["data"]
            ]
            if sqlite:
                conn.execute("BEGIN")
            conn.cursor().executemany(insert, rows)
            conn.commit() if not sqlite else conn.execute("COMMIT")
            events += len(rows)
            pages += 1
            after = body["list_metadata"]["after"]
            if not after:
                break
            params["after"] = after
    conn.close()
    report(events=events, pages=pages, seconds=time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
