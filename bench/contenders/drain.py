"""The simulator's own serve rate: fetch every page over one keep-alive connection and do nothing else.

The cursor is cut out of the body's tail (``"after":"event_…"``) instead of parsing the JSON, so what is
measured is the server, not the client. ``python -m bench.contenders.drain --url URL --key KEY``
"""

from __future__ import annotations

import argparse
import http.client
import time
from urllib.parse import urlencode, urlsplit

from bench.contenders.common import MIRROR_TYPES, PAGE_SIZE, report

_MARK = b'"list_metadata":{"before":null,"after":"'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.contenders.drain")
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    args = parser.parse_args(argv)
    where = urlsplit(args.url)
    conn = http.client.HTTPConnection(where.hostname or "127.0.0.1", where.port, timeout=30)
    headers = {"Authorization": f"Bearer {args.key}"}
    params = {"events": MIRROR_TYPES, "limit": str(PAGE_SIZE), "order": "asc"}
    started = time.perf_counter()
    pages = size = events = 0
    while True:
        conn.request("GET", "/events?" + urlencode(params), headers=headers)
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise SystemExit(f"drain: HTTP {response.status}")
        pages += 1
        size += len(body)
        events += body.count(b'{"object":"event",')
        cut = body.rfind(_MARK)
        if cut < 0:
            break
        params["after"] = body[cut + len(_MARK) : body.index(b'"', cut + len(_MARK))].decode()
    conn.close()
    report(events=events, pages=pages, bytes=size, seconds=time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
