"""Where the child runs: its PID and parent, its session and group, its directory, environment and stdin.

The child is tests/programs/hold.py, which reports its own PID and parent
and stays alive until the test closes its stdin; meanwhile the test reads
/proc for the facts it cannot report itself.
"""

import os
import signal
import subprocess
import time

import pytest

from support import GLIBC_RESERVED, clean_env, program, signal_set, stat, status, wait_for, waiting_for_signals


def start_hold(start, placement, options=(), **more):
    init = start([*options, "--", *program("hold")], placement, **more)
    line = init.out.next()
    assert line.startswith("ready "), line
    _, pid, ppid = line.split()
    return init, int(pid), int(ppid)


def test_child_is_pid_2_under_pid_1(start):
    """In the namespace pyinit is PID 1 and the child, its first process after it, PID 2."""
    init, pid, ppid = start_hold(start, "pid1")
    assert (pid, ppid) == (2, 1)
    # ...and the host sees the same pair: the child's host PID is pyinit's child.
    assert stat(init.child()).ppid == init.pid
    init.close_stdin()
    assert init.wait() == 0


def test_child_parent_is_pyinit_as_subreaper(start):
    init, pid, ppid = start_hold(start, "subreaper")
    assert (pid, ppid) == (init.child(), init.pid)
    init.close_stdin()
    assert init.wait() == 0


def test_child_leads_its_own_session_and_group(start, placement):
    """Default mode: the child is a session leader and process-group leader (sid == pgid == pid)."""
    init, _, _ = start_hold(start, placement)
    child, me = stat(init.child()), stat(init.pid)
    assert (child.sid, child.pgid) == (child.pid, child.pid)
    assert (me.sid, me.pgid) != (child.sid, child.pgid)


@pytest.mark.parametrize("options, variables", [(["-c"], {}), ([], {"PYINIT_SINGLE_CHILD": "yes"})],
                         ids=["-c", "PYINIT_SINGLE_CHILD"])
def test_single_child_stays_in_pyinits_group(start, placement, options, variables):
    init, _, _ = start_hold(start, placement, options, env=clean_env(**variables))
    child, me = stat(init.child()), stat(init.pid)
    assert (child.sid, child.pgid) == (me.sid, me.pgid)
    assert child.pgid != child.pid


def test_directory_and_environment(start, placement, tmp_path):
    """The child keeps the caller's directory and exactly its environment; pyinit moves to /."""
    # A UTF-8 locale and no LC_* variable: see the next test for what happens without one.
    env = {k: v for k, v in clean_env().items() if not k.startswith("LC_")}
    env.update(PYINIT_TEST_MARKER="value with spaces=and equals", LANG="C.UTF-8")
    init, _, _ = start_hold(start, placement, cwd=tmp_path, env=env)
    child = init.child()
    assert os.readlink("/proc/%d/cwd" % child) == str(tmp_path)
    assert environment(child) == env
    wait_for(lambda: os.readlink("/proc/%d/cwd" % init.pid) == "/", "pyinit to move to /")
    init.close_stdin()
    assert init.wait() == 0


def environment(pid: int) -> "dict[str, str]":
    """The environment `pid` was started with (what execve() gave it)."""
    with open("/proc/%d/environ" % pid, "rb") as environ:
        entries = [entry.decode() for entry in environ.read().split(b"\0") if entry]
    return dict(entry.split("=", 1) for entry in entries)


@pytest.mark.parametrize("locale", [{}, {"LANG": "C"}], ids=["no-locale", "LANG=C"])
def test_environment_without_a_locale_is_passed_unchanged(start, locale):
    """A container's environment often sets no locale at all; the child must still get exactly it."""
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": clean_env()["PYTHONPATH"], **locale}
    init, _, _ = start_hold(start, "subreaper", env=env)
    assert environment(init.child()) == env


def test_stdin_passes_through_to_a_shell(run, placement):
    result = run(["sh"], placement, input=b"echo from stdin\nexit 5\n")
    assert (result.returncode, result.stdout, result.stderr) == (5, "from stdin\n", "")


def test_stdin_and_stdout_carry_binary_data(run, placement, tmp_path):
    data = bytes(range(256)) * 4096  # 1 MiB: more than any pipe buffer
    path = tmp_path / "data"
    path.write_bytes(data)
    with open(path, "rb") as stdin:
        result = run(["--", "cat"], placement, stdin=stdin, input=None)
    assert result.returncode == 0 and result.stdout_bytes == data


def test_no_wakeups_while_idle(start, placement):
    """pyinit sleeps in sigwaitinfo(): no timer, no polling, so no context switch while nothing happens."""
    init, _, _ = start_hold(start, placement)
    wait_for(lambda: waiting_for_signals(init.pid), "pyinit to wait for signals")

    def switches() -> "tuple[int, int]":
        fields = status(init.pid)
        return int(fields["voluntary_ctxt_switches"]), int(fields["nonvoluntary_ctxt_switches"])

    before = switches()
    time.sleep(1.0)  # the one deliberate sleep: idleness can only be watched over time
    assert switches() == before
    assert waiting_for_signals(init.pid)


@pytest.mark.parametrize("where", ["pid1", "subreaper", "launcher"])
def test_child_signal_state_from_a_caller_that_ignores_and_blocks(run, where):
    """The caller's ignored signals stay ignored; its blocked ones are not blocked in the child; SIGPIPE is default.

    The caller is coreutils `env`, which ignores and blocks signals for the
    command it runs (here pyinit). Ignored dispositions pass through pyinit
    as exec(2) would pass them, but SIGPIPE (and SIGXFSZ), which Python
    ignores for itself at start-up, cannot be told apart from the caller's
    and go back to the default. The mask is emptied: docs/how-it-works.md ("The
    child's signal state") and spawn.py say why.
    """
    caller = ["env", "--ignore-signal=HUP,INT,PIPE,USR2", "--block-signal=TERM,USR1,QUIT"]
    placement, options = ("subreaper", ["--unshare"]) if where == "launcher" else (where, [])
    result = run([*options, "--", "cat", "/proc/self/status"], placement, wrapper=caller)
    assert result.returncode == 0, result
    fields = dict(line.split(":\t", 1) for line in result.stdout.splitlines() if ":\t" in line)
    assert signal_set(fields["SigIgn"]) - GLIBC_RESERVED == {signal.SIGHUP, signal.SIGINT, signal.SIGUSR2}
    assert signal_set(fields["SigBlk"]) == set()
    # The control: without pyinit in between, the command gets the caller's state, the mask included.
    direct = subprocess.run([*caller, "cat", "/proc/self/status"], capture_output=True, text=True, check=True)
    fields = dict(line.split(":\t", 1) for line in direct.stdout.splitlines() if ":\t" in line)
    assert signal_set(fields["SigBlk"]) == {signal.SIGTERM, signal.SIGUSR1, signal.SIGQUIT}
    assert signal_set(fields["SigIgn"]) == {signal.SIGHUP, signal.SIGINT, signal.SIGPIPE, signal.SIGUSR2}
