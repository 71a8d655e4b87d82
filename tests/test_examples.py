"""The programs in examples/ run as their docstrings say, under pyinit as PID 1."""

import os
import signal
import sys

from support import REPO

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


def test_every_example_is_described():
    """examples/README.md says what each file in examples/ is, and each is exercised by a test."""
    readme = (EXAMPLES / "README.md").read_text()
    tests = "".join(path.read_text() for path in (REPO / "tests").glob("test_*.py"))
    for path in sorted(EXAMPLES.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.name != "README.md":
            name = str(path.relative_to(EXAMPLES))
            assert "`%s`" % name in readme, "examples/README.md does not describe %s" % name
            assert '"%s"' % path.name in tests, "no test names examples/%s" % name
