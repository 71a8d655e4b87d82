"""The programs in examples/ run as their docstrings say, under pyinit as PID 1."""

import os
import signal
import sys

from conftest import REPO

EXAMPLES = REPO / "examples"


def test_graceful_service_stops_cleanly_on_sigterm(start):
    """`docker stop`: SIGTERM to PID 1 reaches the service, which cleans up and exits 0."""
    init = start(["--", sys.executable, str(EXAMPLES / "graceful_service.py")], "pid1")
    assert init.out.next().startswith("serving")
    os.kill(init.pid, signal.SIGTERM)  # pyinit's host PID: util-linux unshare relays nothing
    assert init.out.next().startswith("stopping")
    assert init.wait() == 0


def test_zombie_factory_leaves_no_zombie(run):
    """Every orphan the careless service makes is reaped by pyinit: `ps` shows no process in state Z."""
    script = "%s %s 50; ps -o stat= -o args=" % (sys.executable, EXAMPLES / "zombie_factory.py")
    result = run(["--", "sh", "-c", script], "pid1")
    assert result.returncode == 0, result
    lines = result.stdout.splitlines()
    assert lines[0] == "made 50 orphans"
    assert [line for line in lines[1:] if line.startswith("Z")] == []
    assert len(lines) == 1 + 3, lines  # pyinit, sh and ps: nothing else is left in the namespace
