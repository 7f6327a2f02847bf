"""A SIGTERM while ``syncd run`` is still starting (imports, migrations) stops it cleanly, exit 0.

Rolling deploys and ``docker compose up`` followed at once by ``down`` stop containers that have not
finished starting; Python's default handler would kill the daemon (exit -15, "143" in ``docker ps``).
Whenever the signal lands from the first import on, the exit is 0.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulators.workos import WorkOSSimulator

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("delay", [0.0, 0.3, 1.0, 2.0])
def test_sigterm_at_any_point_of_start_up_exits_zero(tmp_path: Path, delay: float) -> None:
    with WorkOSSimulator(events=50, api_key="sk_test_start") as sim:
        stop_while_starting(tmp_path, delay, {"WORKOS_API_KEY": "sk_test_start", "WORKOS_BASE_URL": sim.url})


def stop_while_starting(tmp_path: Path, delay: float, source: dict[str, str]) -> None:
    env = {**source, "PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(REPO), "HOME": str(tmp_path),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'syncd.db'}", "SYNCD_ENV_FILE": str(tmp_path / "none.env"),
           "SYNCD_HTTP_PORT": "0", "OTEL_SDK_DISABLED": "true", "LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "syncd", "run"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    # From the moment syncd's first line has run (it catches SIGTERM: /proc says so), wherever the signal
    # lands — imports, migrations, the first tick — the exit is 0. (Before that, the interpreter itself is
    # starting, a few milliseconds no Python code can cover.)
    deadline = time.monotonic() + 30
    while not catches_sigterm(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out.decode()[-2000:]


def catches_sigterm(pid: int) -> bool:
    """Whether ``pid`` has a handler for SIGTERM (Linux: the SigCgt mask of /proc/<pid>/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught, 16) >> (signal.SIGTERM - 1) & 1)
