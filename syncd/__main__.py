import sys

if sys.argv[1:2] == ["run"]:  # before the imports: a SIGTERM during start-up stops the daemon, exit 0
    from syncd.stopping import catch_early

    catch_early()

from syncd.cli import entrypoint

entrypoint()
