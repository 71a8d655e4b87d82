"""Reaping: every process that becomes pyinit's child is waited for; pyinit leaves with its main child.

Orphans are made by tests/programs/orphans.py and adopted.py with double
forks, so that nobody but pyinit (PID 1, or the nearest child subreaper)
can ever reap them. A zombie keeps its /proc entry in state Z until it is
reaped, which is what the tests look for.
"""

import os
import re
import signal
import subprocess
import time

import pytest

from support import (TIMEOUT, UNSHARE, assert_no_traceback, children, clean_env, program, pyinit_lines, stat,
                     wait_for)


def zombies_below(init) -> "list[str]":
    return ["%d %s" % (pid, info.state) for pid, info in ((p, stat(p)) for p in init.tree())
            if info and info.state == "Z"]


def test_thousands_of_orphans_are_reaped(start, placement):
    """2000 orphans, released 200 at a time, all reaped by pyinit: -w logs exactly 2000, no zombie stays."""
    count = 2000
    init = start(["-w", "--", *program("orphans", count, "--batch", 200, "--hold")], placement)
    assert init.out.next(timeout=120) == "reaped %d" % count
    # orphans.py saw them all leave /proc; pyinit logs each just after its waitpid().
    wait_for(lambda: init.stderr.count("reaped zombie") >= count, "pyinit to log %d reaps" % count)
    lines = pyinit_lines(init.stderr)
    assert len([line for line in lines if re.fullmatch(r"pyinit: reaped zombie \d+: exit code 0", line)]) == count
    assert len(lines) == count, "unexpected lines: %s" % [line for line in lines if "reaped zombie" not in line]
    assert zombies_below(init) == []
    assert children(init.pid) == [init.child()], "pyinit has children besides its main child"
    init.close_stdin()
    assert init.wait() == 0


def test_orphan_is_adopted_by_pyinit(start, placement):
    """An orphan of the child goes to pyinit: as PID 1 (PPid 1 inside) or as child subreaper."""
    init = start(program("adopted"), placement)
    line = init.out.next()
    name, orphan_pid, parent = line.split()
    assert name == "orphan"
    assert int(parent) == (1 if placement == "pid1" else init.pid), line
    # From the host too: pyinit's children are the main child and the orphan.
    main_child = init.child()
    others = wait_for(lambda: [p for p in children(init.pid) if p != main_child], "the orphan among pyinit's children")
    assert len(others) == 1 and stat(others[0]).ppid == init.pid
    init.close_stdin()
    assert init.wait() == 0
    assert stat(others[0]) is None or stat(others[0]).state != "Z"


def start_with_grandchild(start, placement, options=()):
    """Child: `sh` that starts `sleep 300` in the background and exits 7 when told; returns (init, grandchild)."""
    init = start([*options, "sh", "-c", "sleep 300 & echo started; read line; exit 7"], placement)
    assert init.out.next() == "started"
    child = init.child()
    (grandchild,) = wait_for(lambda: children(child), "the grandchild")
    init.remember(grandchild)
    return init, grandchild


def test_exits_with_the_child_while_grandchildren_run(start, placement):
    """The main child exits: pyinit exits at once with its code, long before `sleep 300` would end.

    At once: within seconds (the subreaper's drain ends the `sleep` with
    SIGTERM), measured apart from the much longer wait's own deadline.
    As PID 1, that exit ends the namespace: the grandchild is gone (not a
    zombie: gone) by the time the exit status reaches the test.
    """
    init, grandchild = start_with_grandchild(start, placement)
    grandchild_start = stat(grandchild).start_time
    began = time.monotonic()
    init.proc.stdin.write(b"go\n")
    init.proc.stdin.flush()
    assert init.wait(timeout=120) == 7
    assert time.monotonic() - began < 10, "pyinit waited for its grandchild"
    if placement == "pid1":
        left = stat(grandchild)
        assert left is None or left.start_time != grandchild_start, "the namespace outlived its PID 1"


def test_subreaper_leaves_no_process_behind(start):
    """DESIGN.md: "When it is not PID 1 nobody [kills the rest] for it, so it must clean up what it adopted itself"."""
    init, grandchild = start_with_grandchild(start, "subreaper")
    init.proc.stdin.write(b"go\n")
    init.proc.stdin.flush()
    assert init.wait(timeout=20) == 7
    wait_for(lambda: stat(grandchild) is None or stat(grandchild).state == "Z", "the grandchild to end", timeout=3)


FAULTS = {
    # The old reaper kept the child's status in a local: an exception after
    # waitpid() lost it, and the loop waited for an exit that had happened.
    "reap-log": ["-v", "--", "sh", "-c", "exit 3"],
    "drain": ["--drain", "5", "--", "sh", "-c", "exit 3"],
}


@pytest.mark.parametrize("fault", FAULTS)
def test_internal_error_never_loses_the_child_status(placement, fault):
    """A bug in the loop's reaper or in the drain (injected by faulty_init.py): pyinit still exits with the child's 3."""
    prefix = UNSHARE if placement == "pid1" else []
    result = subprocess.run([*prefix, *program("faulty_init", fault, *FAULTS[fault])], stdin=subprocess.DEVNULL,
                            capture_output=True, env=clean_env(), timeout=TIMEOUT)
    assert result.returncode == 3, result
    assert "pyinit: internal error" in result.stderr.decode()
    assert_no_traceback(result.stderr.decode())


# --- logging --------------------------------------------------------------------------------

WARN_REAPED = {
    "-w": (["-w"], {}, 3),
    "--warn-reaped": (["--warn-reaped"], {}, 3),
    "PYINIT_WARN_REAPED": ([], {"PYINIT_WARN_REAPED": "1"}, 3),
    "default": ([], {}, 0),
    "-w-and--q": (["-w", "-q"], {}, 0),  # -q silences warnings, and these are warnings
}


@pytest.mark.parametrize("options, variables, expected", WARN_REAPED.values(), ids=WARN_REAPED.keys())
def test_warn_reaped(run, options, variables, expected):
    """`-w` logs each reaped process that is not the main child (three orphans here; not the child)."""
    result = run([*options, "--", *program("orphans", 3)], env=clean_env(**variables))
    assert (result.returncode, result.stdout) == (0, "reaped 3\n")
    lines = pyinit_lines(result.stderr)
    assert len([line for line in lines if re.fullmatch(r"pyinit: reaped zombie \d+: exit code 0", line)]) == expected
    assert len(lines) == expected


VERBOSE = {
    "-v": (["-v"], {}),
    "--verbose": (["--verbose"], {}),
    "PYINIT_VERBOSITY": ([], {"PYINIT_VERBOSITY": "2"}),
    "TINI_VERBOSITY": ([], {"TINI_VERBOSITY": "2"}),
    "-v-single-child": (["-v", "-c"], {}),
}


@pytest.mark.parametrize("options, variables", VERBOSE.values(), ids=VERBOSE.keys())
def test_verbose_logs_spawn_signals_and_reap(start, placement, options, variables):
    init = start([*options, "--", *program("recorder", "child")], placement, env=clean_env(**variables))
    assert init.out.next() == "child ready"
    init.child_pid_seen = init.child()
    os.kill(init.pid, signal.SIGUSR1)
    assert init.out.next().startswith("child %d " % signal.SIGUSR1)
    os.kill(init.pid, signal.SIGTERM)
    assert init.out.next().startswith("child %d " % signal.SIGTERM)
    assert init.wait() == 0
    target = "PID" if "-c" in options else "group"
    lines = pyinit_lines(init.stderr)
    expected = [
        r"started .*python.* as PID (\d+)",
        r"received SIGUSR1 from PID \d+",
        r"forwarded SIGUSR1 to %s (\d+)" % target,
        r"received SIGTERM from PID \d+",
        r"forwarded SIGTERM to %s (\d+)" % target,
        r"child (\d+) exited: exit code 0",
    ]
    position = 0
    pids = set()
    for pattern in expected:
        while position < len(lines) and not re.fullmatch("pyinit: " + pattern, lines[position]):
            position += 1
        assert position < len(lines), "no line %r in order in:\n%s" % (pattern, "\n".join(lines))
        pids.update(re.fullmatch("pyinit: " + pattern, lines[position]).groups())
        position += 1
    assert len(pids) == 1, "the lines name different child PIDs: %s" % pids
    assert pids == {"2" if placement == "pid1" else str(init.child_pid_seen)}


def test_quiet_by_default(run, placement):
    result = run(["sh", "-c", "exit 0"], placement)
    assert (result.returncode, result.stderr) == (0, "")
