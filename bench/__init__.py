"""Benchmarks: syncd against dlt and against the machine's floor, memory, idle cost and Postgres.

``python -m bench`` (``make bench``) runs every scenario; ``python -m bench --quick`` a smaller run.
Every contender and every simulator runs in its own process, so the CPU time and peak RSS measured
(``os.wait4``) are the contender's own. See ``bench/README.md`` for the scenarios, targets and results.
"""
