"""Signals: every catchable one is forwarded, to the right processes, after rewriting.

The child is tests/programs/recorder.py, which blocks everything and reports
each signal it takes, with its sender's PID. The sender must be pyinit (PID 1
inside its namespace, pyinit's own PID as a subreaper): that proves the signal
came through pyinit and did not reach the child some other way.

To prove that a signal was NOT delivered, a test sends a higher-numbered
marker afterwards and checks that the marker is the next thing reported:
pending signals are taken lowest number first, by pyinit and by the recorder,
so a signal that had been forwarded would be reported before the marker.
"""

import os
import shutil
import signal
import subprocess
import sys
import time

import pexpect

import pytest

from support import (
    GLIBC_RESERVED,
    PROGRAMS,
    PYINIT,
    REPO,
    TIMEOUT,
    descendants,
    signal_set,
    stat,
    start_behind_parent,
    children,
    clean_env,
    forwarder,
    program,
    report,
    signal_name,
    start_recorder,
    status,
    wait_for,
    waiting_for_signals,
)

STANDARD = [s for s in range(1, 32) if s not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD)]
SUSPEND = [signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU]
REALTIME = [signal.SIGRTMIN, (signal.SIGRTMIN + signal.SIGRTMAX) // 2, signal.SIGRTMAX]
USR1, USR2, TERM, QUIT, HUP, WINCH = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGQUIT,
                                      signal.SIGHUP, signal.SIGWINCH)


@pytest.mark.parametrize("options", [[], ["-c"]], ids=["default", "single-child"])
def test_every_forwardable_signal_reaches_the_child(start, placement, options):
    """Each standard signal but SIGKILL, SIGSTOP, SIGCHLD, and real-time ones, one at a time.

    In the default mode SIGTSTP, SIGTTIN and SIGTTOU become SIGSTOP (see
    test_suspending_signal_stops_the_group); with -c all go as they are.
    SIGTERM goes last: the recorder exits on it, and so pyinit exits 0.
    """
    init = start_recorder(start, placement, options)
    skipped = [TERM] if options else [TERM, *SUSPEND]
    for signo in [s for s in STANDARD if s not in skipped] + REALTIME + [TERM]:
        os.kill(init.pid, signo)
        assert init.out.next() == report(signo, forwarder(init)), "%s was not forwarded" % signal_name(signo)
    assert init.wait() == 0
    assert init.stderr == ""


def test_signal_from_inside_the_namespace_is_forwarded(start, placement):
    """The child sends SIGUSR2 to its parent (PID 1 inside): pyinit takes it and forwards it back.

    The kernel lets a namespace's own processes signal its PID 1 only for
    signals it handles or blocks; pyinit blocks them all.
    """
    init = start(["--", *program("recorder", "child", "--signal-parent", int(USR2))], placement)
    assert init.out.next() == "child ready"
    assert init.out.next() == report(USR2, forwarder(init))


def test_sigchld_is_not_forwarded(start, placement):
    """SIGCHLD means "reap" to pyinit; the child has no business with pyinit's SIGCHLDs."""
    init = start_recorder(start, placement)
    os.kill(init.pid, signal.SIGCHLD)
    os.kill(init.pid, WINCH)  # marker: 28 > 17
    assert init.out.next() == report(WINCH, forwarder(init))


def test_realtime_signals_queue(start, placement):
    """Twenty copies of one real-time signal sent at once arrive twenty times: none merged or lost."""
    init = start_recorder(start, placement)
    signo = signal.SIGRTMIN + 1
    for _ in range(20):
        os.kill(init.pid, signo)
    assert init.out.take(20) == [report(signo, forwarder(init))] * 20
    os.kill(init.pid, signo + 1)  # marker: a 21st copy would be reported before it
    assert init.out.next() == report(signo + 1, forwarder(init))


def test_default_delivery_reaches_the_whole_group(start, placement):
    """By default the signal goes to the child's process group: the grandchild gets it too."""
    init = start_recorder(start, placement, grandchild=True)
    os.kill(init.pid, USR1)
    got = sorted(init.out.take(2))
    assert got == [report(USR1, forwarder(init)), report(USR1, forwarder(init), "child-grandchild")]


SINGLE_CHILD = {
    "-c": (["-c"], {}),
    "--single-child": (["--single-child"], {}),
    "PYINIT_SINGLE_CHILD": ([], {"PYINIT_SINGLE_CHILD": "1"}),
    "DUMB_INIT_SETSID": ([], {"DUMB_INIT_SETSID": "0"}),
}


@pytest.mark.parametrize("options, variables", SINGLE_CHILD.values(), ids=SINGLE_CHILD.keys())
def test_single_child_delivery_spares_the_grandchild(start, placement, options, variables):
    init = start_recorder(start, placement, options, grandchild=True, env=clean_env(**variables))
    os.kill(init.pid, USR1)
    assert init.out.next() == report(USR1, forwarder(init))
    # By now pyinit has sent its signal; had it gone to the group, the
    # grandchild would hold a pending SIGUSR1 (10) to report before SIGUSR2 (12).
    (grandchild,) = children(init.child())
    os.kill(grandchild, USR2)
    assert init.out.next().startswith("child-grandchild %d " % USR2)


# --- the rewrite table ----------------------------------------------------------------------

REWRITES = {
    "numbers": (["-r", "15:3"], {}, {TERM: QUIT}),
    "names": (["-r", "TERM:QUIT"], {}, {TERM: QUIT}),
    "long-sig-names": (["--rewrite=SIGTERM:SIGQUIT"], {}, {TERM: QUIT}),
    "long-separate-lowercase": (["--rewrite", "sigterm:sigquit"], {}, {TERM: QUIT}),
    "attached": (["-r15:3"], {}, {TERM: QUIT}),
    "realtime-names": (["-r", "RTMIN+1:RTMAX-1"], {}, {signal.SIGRTMIN + 1: signal.SIGRTMAX - 1}),
    "several": (["-r", "TERM:QUIT", "-r", "HUP:USR2", "-r", "USR2:HUP"], {}, {TERM: QUIT, HUP: USR2, USR2: HUP}),
    "environment": ([], {"PYINIT_REWRITE": "TERM:QUIT"}, {TERM: QUIT}),
    "environment-several": ([], {"PYINIT_REWRITE": "TERM:QUIT,HUP:USR2 USR1:WINCH"}, {TERM: QUIT, HUP: USR2, USR1: WINCH}),
    "flag-beats-environment": (["-r", "TERM:USR1"], {"PYINIT_REWRITE": "TERM:QUIT"}, {TERM: USR1}),
    "flags-add-to-environment": (["-r", "HUP:USR2"], {"PYINIT_REWRITE": "TERM:QUIT"}, {TERM: QUIT, HUP: USR2}),
    "last-flag-wins": (["-r", "TERM:USR1", "-r", "TERM:QUIT"], {}, {TERM: QUIT}),
}


@pytest.mark.parametrize("options, variables, table", REWRITES.values(), ids=REWRITES.keys())
def test_rewrite(start, options, variables, table):
    """Each rewritten signal arrives as its replacement; a signal not in the table arrives as itself."""
    init = start_recorder(start, "subreaper", options, env=clean_env(**variables), exit_on=0)
    for source, target in table.items():
        os.kill(init.pid, source)
        assert init.out.next() == report(target, init.pid), "%s -> %s" % (signal_name(source), signal_name(target))
    os.kill(init.pid, signal.SIGALRM)
    assert init.out.next() == report(signal.SIGALRM, init.pid)


def test_rewrite_as_pid1(start):
    init = start_recorder(start, "pid1", ["-r", "TERM:QUIT"], exit_on=0)
    os.kill(init.pid, TERM)
    assert init.out.next() == report(QUIT, 1)


@pytest.mark.parametrize("spec", ["USR1:0", "10:0", "SIGUSR1:0"])
def test_rewrite_to_zero_drops_the_signal(start, placement, spec):
    init = start_recorder(start, placement, ["-v", "-r", spec])
    os.kill(init.pid, USR1)
    os.kill(init.pid, USR2)  # marker: 12 > 10
    assert init.out.next() == report(USR2, forwarder(init))
    assert "dropped SIGUSR1" in init.stderr


# --- signals that arrive early --------------------------------------------------------------


def test_signal_pending_before_pyinit_starts_is_forwarded(start, placement):
    """A SIGTERM already pending when pyinit's program starts still ends the child.

    pending.py execs pyinit with SIGTERM blocked and pending: the earliest a
    signal can arrive. pyinit takes it once the child exists and forwards it.
    """
    init = start(["--", "sleep", "300"], placement, wrapper=program("pending", int(TERM)))
    assert init.wait() == 128 + TERM
    assert init.stderr == ""


def test_signal_sent_by_the_process_that_execs_pyinit_is_forwarded(start):
    """A wrapper that blocks SIGTERM, is sent one by itself, then execs pyinit (same PID).

    pyinit's filter for the SIGPIPE/SIGXFSZ its own writes raise matches any
    signal with its own PID as sender, so this SIGTERM is dropped and the
    child runs on.
    """
    init = start(["--", "sleep", "300"], "subreaper", wrapper=program("pending", int(TERM), "--self"))
    assert init.wait(timeout=3) == 128 + TERM


def test_signal_sent_while_the_child_starts_is_forwarded(start, placement):
    """SIGTERM sent the moment pyinit has its signals blocked: usually while it forks and execs."""
    init = start(["--", "sleep", "300"], placement)

    def has_blocked_signals() -> bool:
        # pyinit's own mask, not unshare's: between its fork and exec, unshare
        # blocks SIGINT and SIGTERM for a moment, and then unblocks them.
        if os.path.realpath("/proc/%d/exe" % init.pid) != os.path.realpath(sys.executable):
            return False
        mask = int(status(init.pid)["SigBlk"], 16)
        return all(mask & 1 << (s - 1) for s in (TERM, signal.SIGCHLD, USR1)) or waiting_for_signals(init.pid)

    wait_for(has_blocked_signals, "pyinit to block signals")
    os.kill(init.pid, TERM)
    assert init.wait() == 128 + TERM


# --- the child's signal state ---------------------------------------------------------------


def test_child_starts_with_a_clean_signal_state(run, placement):
    """Nothing blocked and nothing ignored in the child, though pyinit blocks all and Python ignores SIGPIPE/SIGXFSZ.

    The mask and ignored dispositions survive exec, so the child would
    inherit pyinit's unless pyinit resets them; `cat` reports the state
    exactly as exec left it. With no terminal the child is started by
    posix_spawn, which leaves glibc's two reserved signals ignored and
    nothing else (spawn.py).
    """
    result = run(["cat", "/proc/self/status"], placement)
    assert result.returncode == 0, result
    fields = dict(line.split(":\t", 1) for line in result.stdout.splitlines() if ":\t" in line)
    assert int(fields["SigBlk"], 16) == 0, "signals blocked in the child: " + fields["SigBlk"]
    assert signal_set(fields["SigIgn"]) - GLIBC_RESERVED == set(), "signals ignored in the child: " + fields["SigIgn"]
    assert int(fields["SigPnd"], 16) == 0 and int(fields["ShdPnd"], 16) == 0


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc to build the threaded C program")
def test_glibc_reserved_signals_left_ignored_by_posix_spawn_do_no_harm(run, placement, tmp_path):
    """A threaded glibc program started by posix_spawn, with 32 and 33 ignored, still setuids and cancels.

    glibc installs the handlers of its reserved signals with sigaction when
    it first needs them (a second thread, a cancellation), which replaces the
    SIG_IGN that posix_spawn left: the program ends with both caught, none
    ignored, and its setuid(2), which must reach every thread, succeeded.
    """
    binary = tmp_path / "glibc_threads"
    subprocess.run(["gcc", "-O", "-pthread", "-o", str(binary), str(PROGRAMS / "glibc_threads.c")], check=True)
    result = run([str(binary)], placement)
    assert result.returncode == 0, result
    masks = {tuple(line.split()[:2]): signal_set(line.split()[2]) for line in result.stdout.splitlines()}
    assert masks[("start", "SigIgn:")] == GLIBC_RESERVED  # as posix_spawn left them
    assert not masks[("after", "SigIgn:")] & GLIBC_RESERVED
    assert masks[("after", "SigCgt:")] >= GLIBC_RESERVED


def test_a_caller_ignoring_sigchld_passes_it_on_exactly(run, placement):
    """SIGCHLD ignored by pyinit's caller: the child gets it ignored, and nothing else, not even glibc's reserved signals.

    The init takes SIGCHLD back to the default for itself (or the kernel
    would reap the child for it), so the child must be given SIG_IGN, which
    posix_spawn cannot do: it is forked, and fork and exec leave every other
    disposition at the default.
    """
    result = run(["cat", "/proc/self/status"], placement, wrapper=["env", "--ignore-signal=CHLD"])
    assert result.returncode == 0, result
    fields = dict(line.split(":\t", 1) for line in result.stdout.splitlines() if ":\t" in line)
    assert signal_set(fields["SigIgn"]) == {signal.SIGCHLD}
    assert signal_set(fields["SigBlk"]) == set()


# --- suspend and continue -------------------------------------------------------------------


def state(pid: int) -> str:
    info = stat(pid)
    return info.state if info else "gone"


@pytest.mark.parametrize("signo", SUSPEND, ids=signal_name)
def test_suspending_signal_stops_the_group(start, placement, signo):
    """`kill -TSTP <pyinit>` (or TTIN, TTOU): the child's whole group stops; SIGCONT to pyinit continues it.

    The child leads a session of its own, so its group is orphaned and the
    kernel would discard the signal itself: pyinit sends SIGSTOP instead.
    pyinit, with no terminal and no shell to continue it, never stops:
    as PID 1 it cannot, and not as PID 1 it must not.
    """
    init = start(["-v", "--", "sh", "-c", "sleep 100 & echo ready; wait"], placement, stdin=subprocess.DEVNULL)
    assert init.out.next() == "ready"
    child = init.child()
    (grandchild,) = wait_for(lambda: children(child), "the grandchild")
    os.kill(init.pid, signo)
    wait_for(lambda: state(child) == state(grandchild) == "T", "the child and grandchild to stop")
    wait_for(lambda: "pyinit carries on" in init.stderr, "pyinit to see the stop")
    assert "forwarded SIGSTOP to group" in init.stderr
    assert state(init.pid) != "T"
    os.kill(init.pid, signal.SIGCONT)
    wait_for(lambda: "T" not in (state(child), state(grandchild)), "the child and grandchild to continue")
    os.kill(init.pid, TERM)
    assert init.wait() == 128 + TERM


SUSPEND_RULES = {
    "single-child": (["-c"], signal.SIGTSTP, signal.SIGTSTP),  # the child is in pyinit's group: as it is
    "rewritten": (["-r", "TSTP:USR1"], signal.SIGTSTP, USR1),  # a -r rule wins
    "rewritten-to-itself": (["-r", "TTIN:TTIN"], signal.SIGTTIN, signal.SIGTTIN),
}


@pytest.mark.parametrize("options, sent, expected", SUSPEND_RULES.values(), ids=SUSPEND_RULES.keys())
def test_suspending_signal_as_it_is_or_as_rewritten(start, placement, options, sent, expected):
    init = start_recorder(start, placement, options)
    os.kill(init.pid, sent)
    assert init.out.next() == report(expected, forwarder(init))


def test_never_stays_stopped_without_a_terminal(start):
    """`setsid pyinit -- sh -c '...; exit 4' </dev/null`: the child stopped and continued from outside.

    pyinit used to stop itself with the child and stay stopped, the child a
    zombie nobody reaped. No shell would continue it: it keeps running and
    exits 4 as soon as the child does.
    """
    init = start(["-v", "--", "sh", "-c", "echo ready; sleep 1; exit 4"], wrapper=["setsid"], stdin=subprocess.DEVNULL)
    assert init.out.next() == "ready"
    child = init.child()
    os.kill(child, signal.SIGSTOP)
    wait_for(lambda: "pyinit carries on" in init.stderr, "pyinit to see the stop")
    assert state(init.pid) != "T" and state(child) == "T"
    began = time.monotonic()
    os.kill(child, signal.SIGCONT)
    assert init.wait(timeout=60) == 4
    assert time.monotonic() - began < 10


def test_suspend_by_signal_in_a_shell_stops_pyinit_with_its_child():
    """Not PID 1, a job of an interactive bash on a terminal: `kill -TSTP <pyinit>` stops both; SIGCONT resumes both.

    bash shows the job stopped, as for Ctrl-Z. The child, in a process
    group of pyinit's session, is not orphaned: it gets SIGTSTP itself.
    """
    shell = pexpect.spawn("bash", ["--norc", "--noprofile", "-i"], env=clean_env(PS1="$ "), cwd=str(REPO),
                          encoding="utf-8", timeout=TIMEOUT, dimensions=(24, 80))
    try:
        shell.expect_exact("$ ")
        shell.sendline(" ".join([*PYINIT, "-v", "--", "sleep", "100"]))
        pyinit, child = wait_for(lambda: descendants(shell.pid) if len(descendants(shell.pid)) == 2 else None,
                                 "bash to run pyinit and pyinit its child")
        wait_for(lambda: stat(child).pgid == child, "the child to lead its group")
        os.kill(pyinit, signal.SIGTSTP)
        shell.expect("Stopped")
        assert (state(pyinit), state(child)) == ("T", "T")
        os.kill(pyinit, signal.SIGCONT)
        wait_for(lambda: "T" not in (state(pyinit), state(child)), "pyinit and its child to continue")
    finally:
        for pid in reversed(descendants(shell.pid)):
            os.kill(pid, signal.SIGKILL)
        shell.close(force=True)


# --- pyinit's own signals -------------------------------------------------------------------


@pytest.mark.parametrize("placement, verbosity, bound", [
    ("pid1", "-v", TIMEOUT), ("subreaper", "-v", TIMEOUT), ("subreaper", "-vv", 3)])
def test_broken_stderr_does_not_stop_pyinit_nor_reach_the_child(start, placement, verbosity, bound):
    """With -v and stderr a pipe nobody reads, each log line raises SIGPIPE in pyinit itself.

    pyinit must carry on, and must not forward the SIGPIPE it raised: it is
    pyinit's own, not a signal sent to it.
    """
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        init = start_recorder(start, placement, [verbosity], stderr=write_end)
    finally:
        os.close(write_end)
    os.kill(init.pid, USR1)
    assert init.out.next(timeout=bound) == report(USR1, forwarder(init))
    os.kill(init.pid, TERM)  # marker: a forwarded SIGPIPE (13) would come first
    assert init.out.next(timeout=bound) == report(TERM, forwarder(init))
    assert init.wait() == 0


PDEATHSIG = {
    "-p": (["-p", "SIGUSR1"], {}, USR1),
    "--pdeathsig": (["--pdeathsig=hup"], {}, HUP),
    "PYINIT_PDEATHSIG": ([], {"PYINIT_PDEATHSIG": "10"}, USR1),
    "none": ([], {}, None),  # the control: without it, the parent's death sends nothing
}


@pytest.mark.parametrize("options, variables, expected", PDEATHSIG.values(), ids=PDEATHSIG.keys())
def test_parent_death_signal(adopter, start, placement, options, variables, expected):
    """`-p SIG`: when pyinit's parent dies, pyinit gets SIG and forwards it to the child.

    The parent is middleman.py (subreaper placement) or unshare (pid1
    placement). Then SIGTERM from the test ends the recorder.
    """
    init, parent = start_behind_parent(start, placement, [*options, "--", *program("recorder", "child")],
                                       "child ready", env=clean_env(**variables))
    adopter.expect(init.pid)
    os.kill(parent, signal.SIGKILL)
    init.proc.wait(TIMEOUT)
    if expected:
        assert init.out.next() == report(expected, forwarder(init))
    os.kill(init.pid, TERM)
    assert init.out.next() == report(TERM, forwarder(init))
    assert adopter.exit_code(init.pid) == 0
