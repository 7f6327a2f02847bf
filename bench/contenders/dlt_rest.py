"""dlt's ``rest_api`` source over the simulated WorkOS Events API, into SQLite through dlt's sqlalchemy
destination: cursor pagination on ``after`` (read from ``list_metadata.after``), ``merge`` on ``id``.

dlt's anonymous telemetry is switched off by the harness (``RUNTIME__DLTHUB_TELEMETRY=false``): no traffic
leaves loopback. ``python -m bench.contenders.dlt_rest --url URL --key KEY --database PATH.db --workdir DIR``
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import time

from bench.contenders.common import MIRROR_TYPES, PAGE_SIZE, report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.contenders.dlt_rest")
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--workdir", required=True, help="dlt's pipelines directory (its extract/load files)")
    args = parser.parse_args(argv)
    os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
    started = time.perf_counter()
    import dlt
    from dlt.sources.rest_api import rest_api_source

    source = rest_api_source(
        {
            "client": {
                "base_url": args.url,
                "auth": {"type": "bearer", "token": args.key},
                "paginator": {
                    "type": "cursor",
                    "cursor_path": "list_metadata.after",
                    "cursor_param": "after",
                },
            },
            "resource_defaults": {"primary_key": "id", "write_disposition": "merge"},
            "resources": [
                {
                    "name": "events",
                    "endpoint": {
                        "path": "events",
                        "data_selector": "data",
                        "params": {"events": MIRROR_TYPES, "limit": PAGE_SIZE, "order": "asc"},
                    },
                }
            ],
        }
    )
    pipeline = dlt.pipeline(
        pipeline_name="bench_workos",
        pipelines_dir=args.workdir,
        dataset_name="main",
        destination=dlt.destinations.sqlalchemy(credentials=f"sqlite:///{args.database}"),
    )
    pipeline.run(source)
    seconds = time.perf_counter() - started
    with sqlite3.connect(args.database) as conn:
        events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    report(events=events, seconds=seconds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
