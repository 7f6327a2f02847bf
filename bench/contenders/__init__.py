"""The programs a benchmark times, each run as its own process (``python -m bench.contenders.NAME``).

``syncd`` itself is not here: it runs as ``python -m syncd once``, exactly as a user would run it.
Every contender prints one JSON line on stdout with what it did (``events``, and its own timings).
"""
