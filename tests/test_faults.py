"""Faults: what the world does to pyinit and its child, and what pyinit owes in each case.

- The child closes its stdout and stderr: pyinit neither notices nor cares.
- pyinit's own stderr is closed, or a pipe whose reader went away, under
  -vv: it carries on forwarding and reaping, and the child gets exactly the
  caller's descriptors (a closed fd 2 is not filled with one of pyinit's).
- pyinit started with 0, 1 and 2 closed: /dev/null holds them (close-on-exec)
  before pyinit opens anything, so its own descriptors never pass for a
  stream (a --pty launcher's signalfd was read as its input, for ever).
- Descriptors (RLIMIT_NOFILE) or processes (RLIMIT_NPROC) run out: before
  the child runs, one line and 125; once it runs, the child's status.
- pyinit is SIGKILLed while a tree runs, as PID 1 and as the launcher's
  init: nothing is left, and the launcher reports 137.
- The child inherits nothing of pyinit's: its descriptors are exactly those
  the caller passed, an extra one included.

(The child killed by each signal is in test_exit.py.)
"""

import os
import resource
import signal
import sys

import pytest

from support import (
    PLACEMENTS, SYSTEM_PYTHON, as_user, children, clean_env, forwarder, pyinit_lines, report, start_recorder, stat,
    wait_for,
)

TERM, USR1 = signal.SIGTERM, signal.SIGUSR1
PLACES = ["pid1", "subreaper", "launcher"]  # the launcher: pyinit --unshare, with its init as PID 1


def descriptors(pid: int) -> "dict[str, str]":
    """{fd number: what it is}, from /proc/PID/fd; one closed while being read is left out."""
    directory = "/proc/%d/fd" % pid
    found = {}
    for fd in os.listdir(directory):
        try:
            found[fd] = os.readlink(os.path.join(directory, fd))
        except FileNotFoundError:
            pass
    return found


def proc_syscall(pid: int) -> "list[str]":
    """/proc/PID/syscall: the number of the system call it is blocked in and its arguments (x86-64: read is 0)."""
    with open("/proc/%d/syscall" % pid) as file:
        return file.read().split()


def place(place: str, options=()) -> "tuple[str, list[str]]":
    """(placement for `start`, pyinit's options) for one of PLACES."""
    if place == "launcher":
        return "subreaper", ["--unshare", *options]
    return place, list(options)


# --- the child's streams ------------------------------------------------------------------------


def test_child_closing_its_stdout_and_stderr(start, placement):
    """A child that closes both streams still gets its signals forwarded, and its exit code comes back."""
    script = 'exec >&- 2>&-; trap "exit 7" TERM; while :; do sleep 0.05; done'
    init = start(["-v", "--", "sh", "-c", script], placement)
    child = init.child()
    wait_for(lambda: not {"1", "2"} & set(descriptors(child)), "the child to close its stdout and stderr")
    os.kill(init.pid, TERM)
    assert init.wait() == 7
    assert "forwarded SIGTERM" in init.stderr


# --- pyinit's own stderr ------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["closed", "broken"])
def test_pyinit_with_a_closed_or_broken_stderr(start, placement, how):
    """-vv logs a line per step; with nowhere to write them pyinit still forwards, reaps and exits with the code.

    Closed: fd 2 is free when pyinit starts, so the first descriptor pyinit
    opens takes it; the child must still start with fd 2 closed, as the
    caller left it. Broken: each write raises SIGPIPE in pyinit, which is
    its own and is not forwarded (a SIGPIPE, 13, would come before the
    SIGTERM marker).
    """
    read_end, write_end = os.pipe()
    os.close(read_end)
    wrapper = ["sh", "-c", 'exec 2>&-; exec "$@"', "sh"] if how == "closed" else []
    try:
        init = start_recorder(start, placement, ["-vv"], wrapper=wrapper, stderr=write_end)
    finally:
        os.close(write_end)
    held = descriptors(init.child())
    if how == "closed":
        assert "2" not in held, "the child got one of pyinit's descriptors as its stderr: %s" % held
    else:
        assert held["2"] == descriptors(init.pid)["2"]
    os.kill(init.pid, USR1)
    assert init.out.next() == report(USR1, forwarder(init))
    os.kill(init.pid, TERM)
    assert init.out.next() == report(TERM, forwarder(init))
    assert init.wait() == 0


# --- standard streams closed at start ------------------------------------------------------------

CLOSING = ["sh", "-c", 'exec <&- >&- 2>&-; exec "$@"', "sh"]  # a caller that starts pyinit with 0, 1 and 2 closed
CLOSING_STDIN = ["sh", "-c", 'exec <&-; exec "$@"', "sh"]


@pytest.mark.parametrize("where", PLACES)
def test_closed_standard_streams_are_held_by_dev_null_and_stay_closed_for_the_child(start, where):
    """0, 1 and 2 closed at start: pyinit (and the launcher's init) hold /dev/null there, and the command finds them closed.

    Nothing of pyinit's own (a signalfd, a pidfd, a pipe) may take those
    numbers, where the command or pyinit's relay would take it for a stream.
    """
    placement, options = place(where)
    init = start([*options, "--", "sleep", "1000"], placement, wrapper=CLOSING)
    family = wait_for(lambda: len(init.tree()) == (2 if where == "launcher" else 1) and init.tree(),
                      "the command to start")
    for pid in [init.pid, *family[:-1]]:
        held = descriptors(pid)
        assert [held.get(fd) for fd in "012"] == ["/dev/null"] * 3, held
    wait_for(lambda: os.readlink("/proc/%d/exe" % family[-1]).endswith("/sleep"), "the command to exec sleep")
    assert not {"0", "1", "2"} & set(descriptors(family[-1])), descriptors(family[-1])
    os.kill(init.pid, TERM)
    assert init.wait() in (128 + TERM, -TERM)


@pytest.mark.parametrize("asked", ["--pty", "PYINIT_PTY=1"])
def test_a_pty_launcher_with_stdin_closed_runs_its_command_and_hears_sigterm(start, asked):
    """`pyinit --unshare --pty -- CMD <&-` used to hang for ever, deaf to SIGTERM: its signalfd was taken for stdin.

    The command runs on its pty, its output comes back, a SIGTERM ends it,
    and a command that ends by itself ends the launcher with its code.
    """
    options, env = (["--pty"], clean_env()) if asked == "--pty" else ([], clean_env(PYINIT_PTY="1"))
    init = start(["--unshare", *options, "--", "sh", "-c", "echo ran; exec sleep 1000"], wrapper=CLOSING_STDIN,
                 env=env)
    assert init.out.next().rstrip("\r") == "ran"
    os.kill(init.pid, TERM)
    assert init.wait() in (128 + TERM, -TERM)
    ended = start(["--unshare", *options, "--", "sh", "-c", "exit 3"], wrapper=CLOSING_STDIN, env=env)
    assert ended.wait() == 3


# --- descriptors run out ------------------------------------------------------------------------

# The interpreter without site (-S): this Python's site opens two files at once, so with one
# descriptor free the interpreter starts, and what pyinit itself needs is what runs out.
BARE_PYINIT = [sys.executable, "-S", "-m", "pyinit"]
ONE_FREE_DESCRIPTOR = ["prlimit", "--nofile=6", "--", "sh", "-c", 'exec 3</dev/null 4</dev/null; exec "$@"', "sh"]
# A caller that ignores SIGCHLD: the init must then fork the child to give it SIG_IGN (spawn.py).
IGNORING_SIGCHLD = ["env", "--ignore-signal=CHLD"]


@pytest.mark.parametrize("where", PLACEMENTS)
def test_posix_spawn_needs_no_descriptor_to_start_the_child(start, where):
    """RLIMIT_NOFILE reached, but for the one the interpreter's imports need: the child still starts and its status comes back."""
    init = start(["--", "sh", "-c", "echo COMMAND RAN; exit 4"], where, wrapper=ONE_FREE_DESCRIPTOR, pyinit=BARE_PYINIT)
    assert init.out.next() == "COMMAND RAN"
    assert init.wait() == 4
    assert init.stderr == ""


@pytest.mark.parametrize("where", PLACES)
def test_no_descriptor_left_to_start_the_child(start, where):
    """RLIMIT_NOFILE reached where a descriptor is needed first (the fork's pipe, the launcher's): one line, 125, the command never run."""
    placement, options = place(where)
    wrapper = ONE_FREE_DESCRIPTOR + ([] if where == "launcher" else IGNORING_SIGCHLD)
    init = start([*options, "--", "sh", "-c", "echo COMMAND RAN"], placement, wrapper=wrapper, pyinit=BARE_PYINIT)
    assert init.wait() == 125
    assert init.out.buffer == b"" and os.read(init.out.fd, 100) == b""
    lines = pyinit_lines(init.stderr)
    assert len(lines) == 1 and "Too many open files" in lines[0], lines


@pytest.mark.parametrize("where", PLACES)
def test_descriptors_run_out_while_the_child_runs(start, where, tmp_path):
    """RLIMIT_NOFILE lowered to the three standard streams while the child runs: its exit code still comes back.

    pyinit then cannot open anything: not the exit report (one warning),
    not /proc. As PID 1 the drain needs neither (kill(-1) reaches the
    background sleep); it used to be the report's `import json`, which
    opens files, that turned the child's 3 into 125.
    """
    placement, options = place(where, ["--exit-report", str(tmp_path / "report.json")])
    if placement == "pid1" or where == "launcher":
        options += ["--drain", "5"]
        script = "sleep 1000 & echo ready; read line; exit 3"
    else:  # not PID 1, the drain lists what is left in /proc: see docs/robustness.md
        script = "echo ready; read line; exit 3"
    init = start([*options, "--", "sh", "-c", script], placement)
    assert init.out.next() == "ready"
    family = init.tree()
    for pid in [init.pid, *(children(init.pid)[:1] if where == "launcher" else [])]:  # and the launcher's init
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (3, 3))
    init.close_stdin()
    assert init.wait() == 3
    lines = pyinit_lines(init.stderr)
    assert len(lines) == 1 and lines[0].startswith("pyinit: cannot write the exit report"), lines
    assert not any(stat(pid) for pid in family), "left running: %s" % family


# --- processes run out --------------------------------------------------------------------------


@pytest.fixture
def own_user():
    """A uid of this test run alone: RLIMIT_NPROC counts every process of the uid, other test runs' too."""
    return 200000 + os.getpid() % 100000


FORK_OR_EXIT_5 = [SYSTEM_PYTHON, "-I", "-S", "-c",
                  "import os, sys\ntry:\n    os.fork()\nexcept OSError:\n    sys.exit(5)\nsys.exit(0)"]


@pytest.mark.parametrize("where, limit, outcome", [
    ("subreaper", 1, "cannot start 'sh': posix_spawn"), ("pid1", 1, "cannot start 'sh': posix_spawn"),
    ("launcher", 1, "cannot fork the init"), ("launcher", 2, "cannot start 'sh': posix_spawn"),
])
def test_no_process_left_to_start_the_child(start, world_readable_package, own_user, where, limit, outcome):
    """RLIMIT_NPROC reached (root ignores it: run as a user of our own): one line naming the call that failed, 125."""
    top, env = world_readable_package
    placement, options = place(where)
    wrapper = [*as_user(own_user), "prlimit", "--nproc=%d" % limit, "--"]
    init = start([*options, "--", "sh", "-c", "echo COMMAND RAN"], placement, wrapper=wrapper,
                 pyinit=[SYSTEM_PYTHON, "-m", "pyinit"], env=env, cwd=top)
    assert init.wait() == 125
    lines = pyinit_lines(init.stderr)
    assert len(lines) == 1 and outcome in lines[0] and "Resource temporarily unavailable" in lines[0], lines


@pytest.mark.parametrize("where", PLACES)
def test_processes_run_out_while_the_child_runs(start, world_readable_package, own_user, where):
    """Room for pyinit (and the launcher's init) and the child, none for the child's fork: the child's status."""
    top, env = world_readable_package
    placement, options = place(where)
    limit = 3 if where == "launcher" else 2
    wrapper = [*as_user(own_user), "prlimit", "--nproc=%d" % limit, "--"]
    init = start([*options, "--", *FORK_OR_EXIT_5], placement, wrapper=wrapper,
                 pyinit=[SYSTEM_PYTHON, "-m", "pyinit"], env=env, cwd=top)
    assert init.wait() == 5
    assert init.stderr == ""


# --- pyinit SIGKILLed -----------------------------------------------------------------------------

TREE = 'sleep 1000 & (sleep 1000 &); echo ready; exec sleep 1000'  # a child, its child, and an orphan


@pytest.mark.parametrize("where", ["pid1", "launcher"])
def test_sigkill_to_the_init_leaves_nothing(start, where):
    """SIGKILL to PID 1 (under unshare, or the launcher's init) while a tree runs: the kernel ends the namespace.

    Nothing is left, and the launcher, which watched its init die of the
    SIGKILL, reports it as 137. (unshare(1) has no such convention: only
    its end is checked.)
    """
    placement, options = place(where)
    init = start([*options, "--", "sh", "-c", TREE], placement)
    assert init.out.next() == "ready"
    expected = 4 if where == "launcher" else 3  # the launcher's init, then the same tree as under unshare
    family = wait_for(lambda: len(init.tree()) == expected and init.tree(), "the tree to be complete")
    victim = family[0] if where == "launcher" else init.pid
    os.kill(victim, signal.SIGKILL)
    code = init.wait()
    if where == "launcher":
        assert code == 137
        lines = pyinit_lines(init.stderr)
        assert lines == [], lines
    wait_for(lambda: not any(stat(pid) for pid in [victim, *family]), "every process of the tree to be gone")


# --- the child inherits nothing of pyinit's -------------------------------------------------------


@pytest.mark.parametrize("where", PLACES)
def test_child_has_exactly_the_callers_descriptors(start, where, tmp_path):
    """The caller passes 0, 1, 2 and an extra fd 5; the child holds those and nothing else of pyinit's.

    pyinit's own descriptors (the exec-report pipe, the launcher's pidfd,
    /proc files, an exit report) are close-on-exec or closed before exec.
    """
    extra = tmp_path / "extra"
    extra.write_text("")
    wrapper = ["sh", "-c", 'exec 5<"$0"; exec "$@"', str(extra)]
    placement, options = place(where, ["-vv", "-p", "TERM", "--exit-report", str(tmp_path / "report.json")])
    init = start([*options, "--", "sh", "-c", "echo ready; exec cat"], placement, wrapper=wrapper)
    assert init.out.next() == "ready"
    child = init.tree()[-1]
    wait_for(lambda: os.readlink("/proc/%d/exe" % child).endswith("/cat"), "the child to exec cat")
    caller = descriptors(init.pid)  # pyinit (the launcher) right after the exec: what the caller passed
    # cat's own start-up opens and closes files of its own (setlocale reads /etc/locale.alias):
    # look once it waits in read(2) on its standard input (syscall 0 on fd 0), its start-up over.
    wait_for(lambda: proc_syscall(child)[:2] == ["0", "0x0"], "cat to wait for its input")
    held = descriptors(child)
    assert held == {fd: caller[fd] for fd in held}
    assert held["5"] == str(extra)
    init.close_stdin()
    assert init.wait() == 0
