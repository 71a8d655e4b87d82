"""Terminals and job control (issue 4): real ptys, real bash, keystrokes in, screen text out.

pyinit is driven in four placements on a fresh pty made by pexpect:

- ``session-leader``: pexpect runs pyinit itself, so pyinit leads the pty's
  session (a terminal emulator, ``ssh -t``, ``docker run -it`` without a
  PID namespace).
- ``pid1``: ``unshare --fork --pid --mount-proc pyinit ...``: PID 1 of a new
  PID namespace, in the session unshare leads, its process group outside
  the namespace: the child then stays in pyinit's process group.
- ``pid1-session-leader``: ``unshare ... setsid -w -c pyinit ...``: PID 1 and
  the leader of the terminal's session, which is ``docker run -it`` exactly.
- ``outer-shell``: an interactive ``bash`` on the pty, into which the pyinit
  command is typed: a plain process, a job in the foreground of a shell.

and in the default mode and with ``-c`` (single child); a few tests use a
``sh -c`` parent without job control, or type ``unshare ... pyinit`` into the
outer shell. Processes are observed from outside through /proc (state,
process group, session, controlling terminal, foreground group); the test
runs in the host's PID namespace, so it sees every process of the nested ones
under its host PID. Where the only witness of a signal sent twice is pyinit's
own ``-v`` log (standard signals coalesce in the child), the log is read.

The tests at the end cover bugs found while writing these, since fixed, and
the ``unshare --fork --pid`` placement started with ``&`` or suspended.
The launcher's own pty (``pyinit --unshare``) is tested in test_launcher_tty.py.
"""

import re
import shlex
import subprocess
import time

import pytest

from support import (BASH, INNER_PROMPT, OUTER_PROMPT, PROGRAMS, PYINIT, TERMINAL_ENV, TIMEOUT, UNSHARE,
                     REPO, innermost_pid, stat, state, wait_for)

SIGNALS = str(PROGRAMS / "terminal_signals.py")
WINCH = str(PROGRAMS / "terminal_winch.py")
TICKER = str(PROGRAMS / "terminal_ticker.py")
PY = PYINIT[0]

SESSION_LEADER = "session-leader"
PID1 = "pid1"
PID1_SESSION_LEADER = "pid1-session-leader"
OUTER_SHELL = "outer-shell"
PLACEMENTS = [SESSION_LEADER, PID1, PID1_SESSION_LEADER, OUTER_SHELL]
LEADS_SESSION = {SESSION_LEADER, PID1_SESSION_LEADER}
IS_PID1 = {PID1, PID1_SESSION_LEADER}
MODES = {"default": [], "single-child": ["-c"]}


def _unshare_works() -> bool:
    try:
        return subprocess.run(UNSHARE + ["true"], stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


UNSHARE_WORKS = _unshare_works()
NEEDS_UNSHARE = pytest.mark.skipif(not UNSHARE_WORKS, reason="unshare --fork --pid --mount-proc is refused here")


def placements(*chosen):
    """pytest params for `chosen` placements (all by default); the namespace ones need unshare."""
    return [pytest.param(p, id=p, marks=[NEEDS_UNSHARE] if p in IS_PID1 else []) for p in (chosen or PLACEMENTS)]


def modes(*chosen):
    return [pytest.param(MODES[m], id=m) for m in (chosen or MODES)]


@pytest.fixture
def placed(on_pty):
    """placed(args, placement, ...) -> Terminal running `pyinit ARGS` in one of the PLACEMENTS.

    For the outer-shell placement, `background` adds `&`, `outer_setup` are
    commands typed first, `prefix` goes before pyinit's command line, and
    `args` None types nothing.
    """

    def placed(args, placement, *, background=False, outer_setup=(), prefix=()):
        command = list(prefix) + PYINIT + list(args or [])
        if placement == OUTER_SHELL:
            terminal = on_pty(None, setup=outer_setup)
            if args is not None:
                # The inner prompt is written so that the echo of this line does not match it.
                terminal.sendline("PS1='[in''ner]$ ' " + shlex.join(command) + (" &" if background else ""))
            return terminal
        assert not (background or outer_setup or prefix)
        wrapper = {SESSION_LEADER: [], PID1: UNSHARE, PID1_SESSION_LEADER: UNSHARE + ["setsid", "-w", "-c"]}
        return on_pty(wrapper[placement] + command, env={"PS1": INNER_PROMPT})

    return placed


# ---------------------------------------------------------------- 1. the child owns the terminal


@pytest.mark.parametrize("mode", modes())
@pytest.mark.parametrize("placement", placements())
def test_child_owns_the_terminal(placed, placement, mode):
    run = placed(mode + ["--", PY, SIGNALS], placement)
    run.expect_exact("READY")
    pyinit, child = run.pyinit(), run.child(PY)
    me, kid = stat(pyinit), stat(child)

    # The placement is what it claims to be.
    assert (innermost_pid(pyinit) == 1) == (placement in IS_PID1)
    assert (me.sid == pyinit) == (placement in LEADS_SESSION)

    assert kid.tty_nr == run.tty_rdev, "the child's controlling terminal is not the pty"
    assert kid.tpgid == kid.pgid, "the child's process group is not the terminal's foreground group"
    if mode or placement == PID1:  # -c, or pyinit's group outside its namespace: the child stays in pyinit's group
        assert kid.pgid == me.pgid and kid.sid == me.sid
    elif placement in LEADS_SESSION:  # the child leads a new session that owns the terminal
        assert kid.sid == child and kid.pgid == child
        assert me.tty_nr == 0, "pyinit still has the terminal as its controlling terminal"
    else:  # the child leads a new process group of pyinit's session
        assert kid.pgid == child and kid.sid == me.sid

    # The child, in the foreground, reads the terminal; nothing hit it on the way.
    run.sendline("go")
    assert run.expect(r"RECEIVED: (\S+)\r\n").group(1) == "none"
    assert run.exit_code() == 0


@pytest.mark.parametrize("placement", placements(SESSION_LEADER, PID1_SESSION_LEADER, OUTER_SHELL))
def test_child_given_the_terminal_starts_with_a_clean_signal_state(placed, placement):
    """Handed the terminal, the child is forked, not posix_spawn'ed: nothing blocked, nothing ignored at all."""
    run = placed(["--", "grep", "^Sig[BI]", "/proc/self/status"], placement)
    masks = dict(run.expect(r"Sig(Blk|Ign):\s+([0-9a-f]+)\r\n").groups() for _ in range(2))
    assert masks == {"Blk": "0" * 16, "Ign": "0" * 16}
    assert run.exit_code() == 0


# ---------------------------------------------------------------- 1, 2. a shell under pyinit


@pytest.mark.parametrize("mode", modes())
@pytest.mark.parametrize("placement", placements())
def test_shell_under_pyinit_has_job_control(placed, placement, mode):
    """$- has m; sleep, Ctrl-Z, jobs, fg, Ctrl-Z, bg, jobs, fg, Ctrl-C; the shell survives; `exit 3` -> 3."""
    run = placed(mode + ["--"] + BASH, placement)
    run.expect_exact(INNER_PROMPT)
    run.exercise_job_control()
    run.sendline("exit 3")
    assert run.exit_code() == 3


# ---------------------------------------------------------------- 2. Ctrl-C at a plain program


@pytest.mark.parametrize("mode", modes())
@pytest.mark.parametrize("placement", placements())
def test_ctrl_c_ends_a_plain_program_and_pyinit_exits_130(placed, placement, mode):
    run = placed(["-v"] + mode + ["--", "sleep", "100"], placement)
    run.child("sleep")
    run.sendcontrol("c")
    assert run.exit_code() == 130
    # The terminal sent SIGINT to the child's group itself: a copy from pyinit would be a second Ctrl-C.
    # (Standard signals coalesce, so the child cannot count them reliably: pyinit's -v log says.)
    assert "forwarded SIGINT" not in run.screen, run.screen


# ---------------------------------------------------------------- 3. SIGTTOU, SIGHUP, SIGCONT


@pytest.mark.parametrize("mode", modes())
def test_pyinit_in_the_background_is_not_stopped_by_its_own_output(placed, mode):
    """`stty tostop`: a background job that writes to the terminal gets SIGTTOU. pyinit logs
    (-vv) from the background while its child runs, and finishes: never stopped."""
    run = placed(["-vv"] + mode + ["--", "sh", "-c", "sleep 2; exit 4"], OUTER_SHELL,
                background=True, outer_setup=["stty tostop"])
    pyinit = run.pyinit()
    deadline = time.monotonic() + TIMEOUT
    while state(pyinit) != "gone" and time.monotonic() < deadline:  # sample pyinit's state until it is gone
        assert state(pyinit) != "T", "pyinit was stopped in the background; the terminal shows:\n" + run.screen
        time.sleep(0.01)
    run.expect(r"pyinit: [^\r\n]*exited: exit code 4")
    run.sendline('wait $!; echo "rc=$?"')
    assert run.expect(r"rc=(\d+)\r\n").group(1) == "4"


@pytest.mark.parametrize("placement", placements())
def test_handoff_signals_reach_neither_pyinit_nor_child(placed, placement):
    """The SIGHUP and SIGCONT the hand-off makes (TIOCNOTTY) are dropped, not forwarded."""
    run = placed(["-v", "--", PY, SIGNALS], placement)
    run.expect_exact("READY")
    run.sendline("go")
    assert run.expect(r"RECEIVED: (\S+)\r\n").group(1) == "none"
    assert run.exit_code() == 0
    assert not re.search(r"forwarded SIG(HUP|CONT)", run.screen), run.screen


# ---------------------------------------------------------------- 4. pyinit as a job of an outer shell


def ticker_suspended_in_outer_shell(placed, mode):
    """An outer shell runs pyinit over a ticking program and suspends the job with Ctrl-Z.

    Returns (run, pyinit, child, the last tick seen before the stop).
    """
    run = placed(mode + ["--", PY, TICKER], OUTER_SHELL)
    run.expect(r"tick 2\r\n")
    pyinit, child = run.pyinit(), run.child(PY)
    run.sendcontrol("z")
    run.expect(r"Stopped +.*terminal_ticker\.py\r\n")
    run.expect_exact(OUTER_PROMPT)
    last = max(int(n) for n in re.findall(r"tick (\d+)", run.screen))
    return run, pyinit, child, last


@pytest.mark.parametrize("mode", modes())
def test_ctrl_z_in_the_outer_shell_suspends_pyinit_and_child_and_fg_resumes_both(placed, mode):
    run, pyinit, child, last = ticker_suspended_in_outer_shell(placed, mode)
    assert (state(pyinit), state(child)) == ("T", "T")

    run.sendline("fg")
    tick = int(run.expect(r"tick (\d+)\r\n").group(1))
    assert tick > last, "the ticker did not go on where it stopped"
    run.expect(r"tick %d\r\n" % (tick + 1))  # and keeps going
    assert state(pyinit) != "T" and state(child) != "T"
    wait_for(lambda: stat(child).tpgid == stat(child).pgid, "the child's group to be the foreground again")

    run.sendcontrol("c")  # and the terminal is the child's again
    assert run.exit_code() == 130


@pytest.mark.parametrize("mode", modes())
def test_bg_in_the_outer_shell_continues_pyinit_and_child_in_the_background(placed, mode):
    run, pyinit, child, last = ticker_suspended_in_outer_shell(placed, mode)

    run.sendline("bg")
    assert int(run.expect(r"tick (\d+)\r\n").group(1)) > last
    wait_for(lambda: state(pyinit) != "T" and state(child) != "T", "pyinit and its child to run again")
    run.say("still-mine", OUTER_PROMPT)  # the shell kept the terminal
    assert stat(child).tpgid not in (stat(child).pgid, stat(pyinit).pgid)
    run.sendline('kill %%1; wait %d; echo "rc=$?"' % pyinit)  # SIGTERM, forwarded: 128+15
    assert run.expect(r"rc=(\d+)\r\n").group(1) == "143"


@pytest.mark.parametrize("mode", modes())
def test_pyinit_started_with_ampersand_leaves_the_terminal_to_the_shell(placed, mode):
    """`pyinit ... &`: the outer shell keeps the terminal; the child that reads it is
    stopped, pyinit with it (`jobs` says Stopped); `fg` lets the child read."""
    run = placed(mode + ["--", "sh", "-c", 'read line; echo "got:$line"; exit 6'], OUTER_SHELL, background=True)
    run.expect(r"\[1\] \d+\r\n")
    run.expect_exact(OUTER_PROMPT)
    pyinit, child = run.pyinit(), run.child("sh")
    run.say("still-mine", OUTER_PROMPT)  # the shell reads its commands: the terminal is not taken
    wait_for(lambda: state(child) == "T", "the child to be stopped reading from the background")
    wait_for(lambda: state(pyinit) == "T", "pyinit to stop along with its child")
    run.sendline("jobs")
    run.expect(r"\[1\]\+ +Stopped +.*pyinit")
    run.expect_exact(OUTER_PROMPT)

    run.sendline("fg")
    wait_for(lambda: state(child) == "S" and stat(child).tpgid == stat(child).pgid,
               "the child to be continued in the foreground")
    run.sendline("hello")
    run.expect(r"got:hello\r\n")
    assert run.exit_code() == 6


# ---------------------------------------------------------------- 5. window size


@pytest.mark.parametrize("mode", modes())
@pytest.mark.parametrize("placement", placements())
def test_window_size_change_reaches_the_child(placed, placement, mode):
    """Each resize is a SIGWINCH that reaches the child exactly once, and the child
    reads the new size from the terminal."""
    run = placed(["-v"] + mode + ["--", PY, WINCH], placement)
    run.expect(r"WINCH 0 SIZE 24 80\r\n")
    run.pty.setwinsize(40, 100)
    run.expect(r"WINCH 1 SIZE 40 100\r\n")
    run.pty.setwinsize(30, 132)
    run.expect(r"WINCH (\d+) SIZE 30 132\r\n")
    assert run.pty.match.group(1) == "2", "a resize reached the child twice:\n" + run.screen
    run.sendcontrol("c")
    assert run.exit_code() == 130
    # Two copies of one SIGWINCH usually coalesce in the child: pyinit's -v log tells whether it sent one.
    assert "forwarded SIGWINCH" not in run.screen, run.screen


# Under `unshare --fork --pid` in a terminal, pyinit's process group lies outside its PID namespace
# (getpgrp() is 0): the child stays in that group and pyinit leaves the terminal alone, so the outer
# shell's job control acts on the child as on a command of `unshare` itself.

@pytest.mark.parametrize("prefix", [pytest.param([], id="plain"), pytest.param(UNSHARE, id="pid1", marks=NEEDS_UNSHARE)])
def test_terminal_is_given_back_to_a_parent_without_job_control(on_pty, prefix):
    """`sh -c 'pyinit -- CMD; read line'`: sh has no job control and does not take the terminal
    back; pyinit must, or sh, left in the background of its own terminal, cannot read it."""
    script = '"$@"; echo "rc=$?"; read line; echo "got:$line"'
    run = on_pty(["sh", "-c", script, "sh"] + prefix + PYINIT + ["--", "true"])
    run.expect(r"rc=0\r\n")
    run.sendline("hello")
    run.expect(r"got:(.*)\r\n")
    assert run.pty.match.group(1) == "hello", "the shell could not read its terminal after pyinit"


@NEEDS_UNSHARE
@pytest.mark.parametrize("mode", modes())
def test_pid1_pyinit_started_with_ampersand_leaves_the_terminal_to_the_shell(on_pty, mode):
    """Ten times in one outer shell: `unshare ... pyinit -- sh -c 'read ...' &`; the shell reads
    what is typed next, the job stops when it reads the terminal, and `fg` gives it the terminal."""
    run = on_pty(None)
    command = shlex.join(UNSHARE + PYINIT + mode + ["--", "sh", "-c", 'read line; echo "got:$line"; exit 6'])
    for attempt in range(10):
        run.sendline(command + " &")
        run.expect(r"\[1\] \d+\r\n")
        run.expect_exact(OUTER_PROMPT)
        run.say("still-mine-%d" % attempt, OUTER_PROMPT)  # the shell kept its terminal and is alive
        unshare = run.child("unshare", parent=run.pty.pid)
        wait_for(lambda: state(unshare) == "T", "the job to stop reading the terminal from the background")
        run.sendline("jobs")
        run.expect(r"\[1\]\+ +Stopped.*unshare")  # sh read the terminal from the background
        run.expect_exact(OUTER_PROMPT)
        run.sendline("fg")
        run.sendline("hello-%d" % attempt)
        run.expect(r"got:hello-%d\r\n" % attempt)
        assert run.exit_code() == 6


@NEEDS_UNSHARE
@pytest.mark.parametrize("mode", modes())
def test_pid1_ctrl_z_gives_the_prompt_back_and_fg_resumes(on_pty, mode):
    """`unshare ... pyinit -- TICKER`, Ctrl-Z: the prompt comes back with the job stopped, the
    ticker stopped with it; `fg` continues it where it was, in the foreground (Ctrl-C ends it)."""
    run = on_pty(None)
    run.sendline(shlex.join(UNSHARE + PYINIT + mode + ["--", PY, TICKER]))
    run.expect(r"tick 2\r\n")
    ticker = run.descendant([PY, TICKER])
    run.sendcontrol("z")
    run.expect(r"\[1\]\+ +Stopped +unshare")
    run.expect_exact(OUTER_PROMPT)
    wait_for(lambda: state(ticker) == "T", "the ticker to be stopped")
    last = max(int(n) for n in re.findall(r"tick (\d+)", run.screen))
    run.say("prompt-is-back", OUTER_PROMPT)
    run.sendline("fg")
    tick = int(run.expect(r"tick (\d+)\r\n").group(1))
    assert tick > last, "the ticker did not go on where it stopped"
    run.expect(r"tick %d\r\n" % (tick + 1))
    run.sendcontrol("c")
    assert run.exit_code() == 130


# ---------------------------------------------------------------- 6. standard input that is not a terminal


@pytest.mark.parametrize("mode", modes())
@pytest.mark.parametrize("prefix", [pytest.param([], id="plain"), pytest.param(UNSHARE, id="pid1", marks=NEEDS_UNSHARE)])
def test_piped_script_and_redirected_file(tmp_path, prefix, mode):
    """`echo 'exit 5' | pyinit sh` -> 5; `pyinit -- cat < file` copies the file."""
    script = subprocess.run(prefix + PYINIT + mode + ["sh"], input=b"echo from-sh\nexit 5\n",
                            capture_output=True, cwd=REPO, env=TERMINAL_ENV, timeout=TIMEOUT)
    assert (script.returncode, script.stdout) == (5, b"from-sh\n"), script.stderr

    data = bytes(range(256)) * 64 + "two\nlines\n".encode()
    source = tmp_path / "source"
    source.write_bytes(data)
    with open(source, "rb") as stdin:
        copy = subprocess.run(prefix + PYINIT + mode + ["--", "cat"], stdin=stdin, capture_output=True,
                              cwd=REPO, env=TERMINAL_ENV, timeout=TIMEOUT)
    assert (copy.returncode, copy.stdout) == (0, data), copy.stderr


@pytest.mark.parametrize("mode", modes())
def test_piped_stdin_in_an_interactive_shell(on_pty, tmp_path, mode):
    """The same in a terminal: stdout and stderr are the pty, stdin a pipe or a file."""
    source = tmp_path / "source.txt"
    source.write_text("first line\nsecond line\n")
    pyinit = shlex.join(PYINIT + mode)
    run = on_pty(None)
    run.sendline("echo 'exit 5' | %s sh" % pyinit)
    assert run.exit_code() == 5
    run.sendline("%s -- cat < %s" % (pyinit, shlex.quote(str(source))))
    run.expect_exact("first line\r\nsecond line\r\n")
    assert run.exit_code() == 0


# ---------------------------------------------------------------- found while writing these tests


@pytest.mark.parametrize("mode", modes())
def test_terminal_hang_up_reaches_the_child(placed, tmp_path, mode):
    """Closing the terminal (window closed, ssh dropped) sends SIGHUP to the session leader;
    whoever leads it, the child must hear of it, as it would without pyinit."""
    record = tmp_path / "signals"
    run = placed(mode + ["--", PY, SIGNALS, str(record)], SESSION_LEADER)
    run.expect_exact("READY")
    run.child(PY)
    run.hang_up()
    wait_for(lambda: record.exists() and "SIGHUP" in record.read_text().split(), "the child to get SIGHUP", timeout=5)


@pytest.mark.parametrize("mode", modes())
@pytest.mark.parametrize("prefix", [pytest.param([], id="plain"), pytest.param(UNSHARE, id="pid1", marks=NEEDS_UNSHARE)])
def test_suspend_in_a_shell_under_pyinit_returns_to_the_outer_shell(placed, prefix, mode):
    """bash's `suspend` stops the inner shell; the outer shell's job stops with it: pyinit itself,
    or as PID 1 under unshare (which cannot stop), unshare, the rest of its process group."""
    run = placed(mode + ["--"] + BASH, OUTER_SHELL, prefix=prefix)
    run.expect_exact(INNER_PROMPT)
    bash = run.child("bash")
    job = stat(run.pyinit()).ppid if prefix else run.pyinit()
    run.sendline("suspend")
    wait_for(lambda: state(bash) == "T", "the inner shell to stop")
    wait_for(lambda: state(job) == "T", "the outer shell's job to stop with it")
    run.expect(r"Stopped +.*pyinit")
    run.expect_exact(OUTER_PROMPT)
    run.sendline("fg")
    wait_for(lambda: state(bash) == "S" and stat(bash).tpgid == stat(bash).pgid,
               "the inner shell to have the terminal again")
    run.say("back")
    run.sendline("exit 3")
    assert run.exit_code() == 3


@pytest.mark.parametrize("mode", modes())
def test_fg_of_a_running_background_pyinit_gives_the_child_the_terminal(placed, tmp_path, mode):
    go = tmp_path / "go"
    script = 'while [ ! -e "$1" ]; do sleep 0.02; done; read line; echo "got:$line"'
    run = placed(mode + ["--", "sh", "-c", script, "sh", str(go)], OUTER_SHELL, background=True)
    run.expect_exact(OUTER_PROMPT)
    pyinit = run.pyinit()
    run.child("sh")  # placed in the background, running
    run.sendline("fg")
    wait_for(lambda: stat(pyinit).tpgid == stat(pyinit).pgid, "the shell to give pyinit's job the terminal")
    go.touch()  # only now does the child read the terminal
    run.sendline("hello")
    run.expect(r"got:hello\r\n|Stopped")
    assert run.pty.match.group(0) == "got:hello\r\n", "the child was stopped reading the terminal after fg"
    assert run.exit_code() == 0
