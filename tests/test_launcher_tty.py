"""The launcher in a terminal (issue 12): `pyinit --unshare` gives the command a pty of its own.

A person's session, for real: an interactive bash on a fresh pty (pexpect),
`pyinit --unshare ...` typed into it, keys sent, the screen read, the
processes looked at from the host's /proc (the namespace's processes are
there under their host PIDs). The outer shell's `stty -g` before and after
each run says whether the user's terminal got its modes back.

Inside the namespace the init (PID 1) leads the pty's session, and the
command is the pty's foreground process group; the launcher relays the
bytes, the window size and the outer job control. With `--no-pty`, or a
standard input that is not a terminal, the command gets the launcher's
standard streams directly, as before.
"""

import os
import shlex
import shutil
import signal

import pytest

from support import (AS_NOBODY, BASH, HOLDING_1100_DESCRIPTORS, INNER_PROMPT, OUTER_PROMPT, PROGRAMS, PYINIT,
                     SYSTEM_PYTHON, highest_descriptor, innermost_pid, stat, state, wait_for)

pytestmark = pytest.mark.skipif(not shutil.which("bash"), reason="needs bash")

PY = PYINIT[0]
TICKER = str(PROGRAMS / "terminal_ticker.py")
WINCH = str(PROGRAMS / "terminal_winch.py")
SIGNALS = str(PROGRAMS / "terminal_signals.py")
LAUNCHER = PYINIT + ["--unshare"]
MODES = [pytest.param([], id="default"), pytest.param(["-c"], id="single-child")]


@pytest.fixture
def shell(on_pty, tmp_path):
    """An interactive bash at its prompt, its terminal modes saved; checks at the end that they are unchanged."""
    modes = tmp_path / "stty-before"
    terminal = on_pty(None, setup=["stty -g > %s" % shlex.quote(str(modes))])
    terminal.modes_file = modes
    yield terminal
    if terminal.pty.isalive():
        assert_terminal_restored(terminal)


def assert_terminal_restored(shell) -> None:
    """The outer shell's terminal has the modes it had at the start (pyinit put them back)."""
    shell.sendline("stty -g | cmp -s - %s && echo mo''des-same || echo mo''des-changed" % shlex.quote(str(shell.modes_file)))
    assert shell.expect(r"modes-(same|changed)\r\n").group(1) == "same", shell.screen
    shell.expect_exact(OUTER_PROMPT)


def typed(shell, args, background=False, inner_prompt=False):
    """Type `pyinit --unshare ARGS` into the outer shell."""
    line = shlex.join(LAUNCHER + list(args)) + (" &" if background else "")
    shell.sendline(("PS1='[in''ner]$ ' " if inner_prompt else "") + line)


def tree(shell, argv0):
    """(launcher, init, command) host PIDs, once the init has exec'd a command whose argv[0] is `argv0`."""
    launcher = shell.pyinit()
    init = shell.child(PY, parent=launcher)
    return launcher, init, shell.child(argv0, parent=init)


# ---------------------------------------------------------------- the terminal inside


def test_exit_code_and_output_come_back(shell):
    """The issue's example: `a` on the screen, exit code 3, the terminal as it was."""
    typed(shell, ["--", "sh", "-c", "echo a; exit 3"])
    shell.expect_exact("a\r\n")
    assert shell.exit_code() == 3
    typed(shell, ["--", "sh", "-c", "kill -TERM $$"])  # killed by a signal: 128+15
    assert shell.exit_code() == 143


@pytest.mark.parametrize("mode", MODES)
def test_the_command_owns_a_pty_of_its_own(shell, mode):
    """The init leads the pty's session; the command is its foreground group; /dev/tty is that pty."""
    typed(shell, mode + ["--", "sh", "-c", 'read line </dev/tty; echo "got:$line"; tty; exit 5'])
    launcher, init, command = tree(shell, "sh")
    assert innermost_pid(init) == 1
    me, kid = stat(init), stat(command)
    assert me.sid == init and kid.sid == init, "the init does not lead the session of its terminal"
    assert kid.tty_nr == me.tty_nr and kid.tty_nr not in (0, shell.tty_rdev), "the command's terminal is not a pty of its own"
    assert kid.tpgid == kid.pgid, "the command's group is not the pty's foreground"
    assert kid.pgid == command != me.pgid, "the command does not lead a process group of its own (even with -c)"
    shell.sendline("typed for /dev/tty")
    shell.expect(r"got:typed for /dev/tty\r\n/dev/pts/\d+\r\n")
    assert shell.exit_code() == 5


@pytest.mark.parametrize("mode", MODES)
def test_inner_bash_has_job_control(shell, mode):
    """$- has m; sleep, Ctrl-Z, jobs, fg, Ctrl-Z, bg, jobs, fg, Ctrl-C; no complaint; `exit 3` -> 3."""
    typed(shell, mode + ["--"] + BASH, inner_prompt=True)
    shell.expect_exact(INNER_PROMPT)
    shell.exercise_job_control()
    shell.sendline("exit 3")
    assert shell.exit_code() == 3
    assert "no job control" not in shell.screen and "cannot set terminal process group" not in shell.screen


def test_ctrl_d_ends_the_inner_shell(shell):
    typed(shell, ["--"] + BASH, inner_prompt=True)
    shell.expect_exact(INNER_PROMPT)
    shell.sendcontrol("d")
    assert shell.exit_code() == 0


def test_password_prompt_does_not_echo(shell):
    """getpass turns the pty's echo off: what is typed is read, and not shown."""
    script = "import getpass; secret = getpass.getpass('Passphrase: '); print('length', len(secret))"
    typed(shell, ["--", PY, "-c", script])
    shell.expect_exact("Passphrase: ")
    shell.sendline("s3cr3t-w0rd")
    shell.expect(r"length 11\r\n")
    assert shell.exit_code() == 0
    assert "s3cr3t" not in shell.screen, "the passphrase was echoed:\n" + shell.screen


def test_read_silent_in_the_inner_shell_does_not_echo(shell):
    typed(shell, ["--"] + BASH, inner_prompt=True)
    shell.expect_exact(INNER_PROMPT)
    shell.sendline('read -s -p "pw: " v; echo; echo "got ${#v} characters"')
    shell.expect_exact("pw: ")
    shell.sendline("hunter2-xyz")
    shell.expect(r"got 11 characters\r\n")
    shell.expect_exact(INNER_PROMPT)
    assert "hunter2" not in shell.screen, shell.screen
    shell.sendline("exit")
    assert shell.exit_code() == 0


def test_window_size_at_start_and_on_every_resize(shell):
    """The pty has the terminal's size from the start; each resize reaches the command once, with the new size."""
    typed(shell, ["-v", "--", PY, WINCH])
    shell.expect(r"WINCH 0 SIZE 24 80\r\n")
    shell.pty.setwinsize(40, 100)
    shell.expect(r"WINCH 1 SIZE 40 100\r\n")
    shell.pty.setwinsize(30, 132)
    assert shell.expect(r"WINCH (\d+) SIZE 30 132\r\n").group(1) == "2", "a resize reached the command twice"
    shell.sendcontrol("c")
    assert shell.exit_code() == 130
    typed(shell, ["--", "stty", "size"])  # and what stty asks of its terminal
    shell.expect_exact("30 132\r\n")
    assert shell.exit_code() == 0


def test_ctrl_c_ends_the_command_once(shell):
    """The pty turns Ctrl-C into SIGINT for its foreground group: the launcher forwards no second copy."""
    typed(shell, ["-v", "--", "sleep", "100"])
    launcher, init, sleep = tree(shell, "sleep")
    shell.sendcontrol("c")
    assert shell.exit_code() == 130
    assert "forwarded SIGINT" not in shell.screen, shell.screen


def test_the_launchers_own_lines_start_at_the_left_margin_while_the_terminal_is_raw(shell):
    """Raw mode turns the terminal's newline translation off: the launcher's `-v` lines end in CR LF."""
    typed(shell, ["-v", "--", "sleep", "100"])
    launcher, init, sleep = tree(shell, "sleep")
    os.kill(launcher, signal.SIGUSR1)
    ending = shell.expect(r"pyinit: received SIGUSR1 from PID %d(\r?\n)" % os.getpid()).group(1)
    assert ending == "\r\n", shell.screen
    assert shell.exit_code() == 128 + signal.SIGUSR1  # forwarded, it ended sleep


def test_output_written_just_before_the_exit_is_not_lost(shell):
    """Thousands of lines, then a last word without a newline, then exit: all of it reaches the screen."""
    script = "import sys; sys.stdout.write(''.join('line %d\\n' % i for i in range(5000)) + 'the-end'); sys.exit(7)"
    typed(shell, ["--", PY, "-c", script])
    shell.expect_exact("line 4999\r\nthe-end")
    assert shell.exit_code() == 7
    for number in (0, 1234, 4998):
        assert "line %d\r\n" % number in shell.screen


# ---------------------------------------------------------------- job control outside


@pytest.mark.parametrize("mode", MODES)
def test_ctrl_z_stops_the_launcher_fg_and_bg_continue_it(shell, mode):
    """Ctrl-Z to a program that is not a shell: the outer shell shows the job stopped, with its own
    terminal modes; `fg` continues it in the foreground, `bg` in the background; Ctrl-C ends it."""
    typed(shell, mode + ["--", PY, TICKER])
    shell.expect(r"tick 2\r\n")
    launcher, init, ticker = tree(shell, PY)
    shell.sendcontrol("z")
    shell.expect(r"\[1\]\+ +Stopped +.*pyinit")
    shell.expect_exact(OUTER_PROMPT)
    assert (state(launcher), state(ticker)) == ("T", "T")
    assert state(init) != "T", "the init stopped (PID 1 stands in for the launcher, it never stops)"
    assert_terminal_restored(shell)

    shell.sendline("fg")
    shell.expect(r"tick (\d+)\r\n")
    shell.expect(r"tick \d+\r\n")
    wait_for(lambda: stat(ticker).tpgid == stat(ticker).pgid, "the ticker's group to be the pty's foreground again")
    shell.sendcontrol("z")
    shell.expect(r"\[1\]\+ +Stopped +.*pyinit")
    shell.expect_exact(OUTER_PROMPT)

    shell.sendline("bg")
    wait_for(lambda: state(launcher) != "T" and state(ticker) != "T", "launcher and ticker to run in the background")
    shell.say("still-mine", OUTER_PROMPT)  # the outer shell kept its terminal
    shell.sendline("fg")  # of a running job: no SIGCONT; the launcher sees it is in the foreground
    wait_for(lambda: stat(ticker).tpgid == stat(ticker).pgid, "the ticker's group to be the pty's foreground again")
    shell.expect(r"tick \d+\r\n")
    shell.sendcontrol("c")
    assert shell.exit_code() == 130


def test_started_with_ampersand_it_leaves_the_terminal_to_the_shell(shell):
    """`pyinit --unshare -- cat &`: the shell keeps every key; the job stops when cat reads;
    `fg` gives cat the keys; Ctrl-D ends it."""
    typed(shell, ["--", "cat"], background=True)
    shell.expect(r"\[1\] \d+\r\n")
    shell.expect_exact(OUTER_PROMPT)
    launcher, init, cat = tree(shell, "cat")
    shell.say("still-mine", OUTER_PROMPT)
    wait_for(lambda: state(launcher) == "T", "the launcher to stop when cat reads from the background")
    shell.sendline("jobs")
    shell.expect(r"\[1\]\+ +Stopped.*pyinit --unshare -- cat\r\n")
    shell.expect_exact(OUTER_PROMPT)
    shell.sendline("kill -0 %1 && echo typ''able")  # what the issue could not type
    shell.expect_exact("typable\r\n")
    shell.expect_exact(OUTER_PROMPT)
    shell.sendline("fg")
    shell.expect(r"pyinit --unshare -- cat\r\n")
    shell.sendline("meow")
    shell.expect_exact("meow\r\nmeow\r\n")  # the pty's echo, then cat's copy
    shell.sendcontrol("d")
    assert shell.exit_code() == 0


def test_fg_of_a_running_background_launcher_gives_the_command_the_terminal(shell, tmp_path):
    """`fg` of a job that is still running sends no SIGCONT: when the command then reads and is
    stopped for it, the launcher, now in the foreground, takes the terminal and continues it."""
    go = tmp_path / "go"
    script = 'while [ ! -e "$1" ]; do sleep 0.02; done; read line; echo "got:$line"'
    typed(shell, ["--", "sh", "-c", script, "sh", str(go)], background=True)
    shell.expect_exact(OUTER_PROMPT)
    launcher, init, sh = tree(shell, "sh")
    shell.sendline("fg")
    wait_for(lambda: stat(launcher).tpgid == stat(launcher).pgid, "the shell to give the launcher's job the terminal")
    go.touch()
    shell.sendline("hello")
    shell.expect(r"got:hello\r\n|Stopped")
    assert shell.pty.match.group(0) == "got:hello\r\n", "the command was stopped reading the terminal after fg"
    assert shell.exit_code() == 0


def test_output_from_the_background_stops_the_job_under_tostop(shell):
    """`stty tostop`: a background job that writes to the terminal stops; its output waits, and `fg` shows it."""
    shell.sendline("stty tostop")
    shell.expect_exact(OUTER_PROMPT)
    typed(shell, ["--", "sh", "-c", "sleep 1; echo la''te-output; exit 3"], background=True)
    shell.expect(r"\[1\] \d+\r\n")
    shell.expect_exact(OUTER_PROMPT)
    launcher = shell.pyinit()
    wait_for(lambda: state(launcher) == "T", "the launcher to stop for its output")
    shell.sendline("jobs")
    shell.expect(r"\[1\]\+ +Stopped.*pyinit")
    shell.expect_exact(OUTER_PROMPT)
    assert "late-output" not in shell.screen
    shell.sendline("fg")
    shell.expect_exact("late-output\r\n")
    assert shell.exit_code() == 3
    shell.sendline("stty -tostop")
    shell.expect_exact(OUTER_PROMPT)


def test_suspend_in_the_inner_shell_stops_the_launcher(shell):
    typed(shell, ["--"] + BASH, inner_prompt=True)
    shell.expect_exact(INNER_PROMPT)
    launcher, init, bash = tree(shell, "bash")
    shell.sendline("suspend")
    shell.expect(r"Stopped +.*pyinit")
    shell.expect_exact(OUTER_PROMPT)
    assert (state(launcher), state(bash)) == ("T", "T")
    shell.sendline("fg")
    shell.say("back")
    shell.sendline("exit 4")
    assert shell.exit_code() == 4


def test_without_job_control_above_ctrl_z_stops_nothing(on_pty):
    """The launcher leads the terminal's session (no shell above can continue it): Ctrl-Z leaves the
    command running, as a terminal without job control does."""
    terminal = on_pty(LAUNCHER + ["--", PY, TICKER])
    terminal.expect(r"tick 2\r\n")
    terminal.sendcontrol("z")
    last = int(terminal.expect(r"tick (\d+)\r\n").group(1))
    terminal.expect(r"tick %d\r\n" % (last + 2))
    terminal.sendcontrol("c")
    assert terminal.exit_code() == 130


# ---------------------------------------------------------------- every way out restores the terminal


@pytest.mark.parametrize("sent, to, code", [
    (signal.SIGTERM, "launcher", 143),
    (signal.SIGHUP, "launcher", 129),
    (signal.SIGKILL, "init", 137),
], ids=["SIGTERM-to-launcher", "SIGHUP-to-launcher", "SIGKILL-to-init"])
def test_every_way_out_gives_the_terminal_back(shell, sent, to, code):
    typed(shell, ["--", "sleep", "100"])
    launcher, init, sleep = tree(shell, "sleep")
    wait_for(lambda: stat(launcher).tpgid == stat(launcher).pgid, "the launcher to be in the foreground")
    os.kill({"launcher": launcher, "init": init}[to], sent)
    assert shell.exit_code() == code
    # (the fixture compares the terminal's modes with those before)


def test_hang_up_reaches_the_command(on_pty, tmp_path):
    """The terminal closes (window closed, ssh dropped): the command hears SIGHUP, as from its own terminal."""
    record = tmp_path / "signals"
    terminal = on_pty(LAUNCHER + ["--", PY, SIGNALS, str(record)])
    terminal.expect_exact("READY")
    terminal.hang_up()
    wait_for(lambda: record.exists() and "SIGHUP" in record.read_text().split(), "the command to get SIGHUP")


# ---------------------------------------------------------------- no pty: --no-pty, PYINIT_PTY=0, pipes

# What the command's standard input is: "pty" (a pty of its own), "terminal" (the user's terminal
# itself) or "other"; and whether it has a controlling terminal.
PROBE = ("import os, sys; r = os.stat(0).st_rdev; mine = os.stat(sys.argv[1]).st_rdev; "
         "kind = 'other' if not os.isatty(0) else 'terminal' if r == mine else 'pty'; "
         "ctty = open('/proc/self/stat').read().rsplit(')', 1)[1].split()[4] != '0'; "
         "print('stdin:%s ctty:%s' % (kind, ctty))")


@pytest.mark.parametrize("how", [["--no-pty"], ["PYINIT_PTY=0"]], ids=["--no-pty", "PYINIT_PTY=0"])
def test_no_pty_passes_the_terminal_through(shell, how):
    """Today's behaviour on request: the command reads the user's terminal itself, without a
    controlling terminal; Ctrl-C still ends it (the launcher forwards it), and the code comes back."""
    shell.sendline("tty > %s/user-tty" % shlex.quote(str(shell.modes_file.parent)))
    shell.expect_exact(OUTER_PROMPT)
    user_tty = (shell.modes_file.parent / "user-tty").read_text().strip()
    env = how[0] + " " if "=" in how[0] else ""
    options = [] if env else how
    shell.sendline(env + shlex.join(LAUNCHER + options + ["--", PY, "-c", PROBE, user_tty]))
    shell.expect_exact("stdin:terminal ctty:False\r\n")
    assert shell.exit_code() == 0
    shell.sendline(env + shlex.join(LAUNCHER + options + ["--", "sleep", "100"]))
    shell.descendant(["sleep", "100"])
    shell.sendcontrol("c")
    assert shell.exit_code() == 130


def test_piped_stdin_gets_no_pty_unless_asked(shell, tmp_path):
    """A pipe stays a pipe (`echo 'exit 5' | pyinit --unshare sh` -> 5); --pty or PYINIT_PTY=1 give a pty
    whose input is the pipe's, ended by end-of-file."""
    shell.sendline("tty > %s/user-tty" % shlex.quote(str(tmp_path)))
    shell.expect_exact(OUTER_PROMPT)
    user_tty = (tmp_path / "user-tty").read_text().strip()
    shell.sendline("echo 'exit 5' | " + shlex.join(LAUNCHER + ["sh"]))
    assert shell.exit_code() == 5
    probe = shlex.join(["--", PY, "-c", PROBE, user_tty])
    shell.sendline("echo | " + shlex.join(LAUNCHER) + " " + probe)
    shell.expect_exact("stdin:other ctty:False\r\n")
    assert shell.exit_code() == 0
    for forced in ("--pty", "PYINIT_PTY=1"):
        prefix, option = (forced + " ", "") if "=" in forced else ("", forced + " ")
        shell.sendline("echo | %s%s %s%s" % (prefix, shlex.join(LAUNCHER), option, probe))
        shell.expect(r"stdin:pty ctty:True\r+\n")  # the pty's \r\n, then the user's terminal's own \r
        assert shell.exit_code() == 0
        # (sh is interactive on a terminal: PS1 empty, its prompt does not look like the outer shell's)
        shell.sendline("printf 'echo from-pipe\\nexit 4\\n' | PS1= %s%s %s-- sh" % (prefix, shlex.join(LAUNCHER), option))
        shell.expect(r"\nfrom-pipe\r+\n")
        assert shell.exit_code() == 4
    shell.sendline(shlex.join(LAUNCHER + ["--", "sh", "-c", "echo a; exit 3"]) + " | cat")  # in a pipeline: no pty
    shell.expect_exact("a\r\n")
    assert shell.exit_code() == 0


def test_a_launcher_holding_descriptors_above_1023_relays_its_pty(shell):
    """Started by a program holding 1,100 descriptors: the pty, its pipes and the signalfd are numbered above
    1,100, which the relay's select(2) refused ("internal error", 125). It polls: the command owns its pty, the
    keys reach it, its code comes back."""
    shell.sendline("tty > %s/user-tty" % shlex.quote(str(shell.modes_file.parent)))
    shell.expect_exact(OUTER_PROMPT)
    user_tty = (shell.modes_file.parent / "user-tty").read_text().strip()
    shell.sendline(shlex.join(HOLDING_1100_DESCRIPTORS + LAUNCHER + ["--", PY, "-c", PROBE + "; exit(int(input()))", user_tty]))
    shell.expect_exact("stdin:pty ctty:True\r\n")
    assert highest_descriptor(shell.pyinit()) > 1100
    shell.sendline("7")
    assert shell.exit_code() == 7


# ---------------------------------------------------------------- unprivileged


@pytest.mark.skipif(not (shutil.which("setpriv") and os.access(SYSTEM_PYTHON, os.X_OK)), reason="needs setpriv and /usr/bin/python3")
def test_unprivileged_inner_shell_has_job_control(on_pty, world_readable_package):
    """As uid 65534, in a user namespace: the same pty, the same job control."""
    top, env = world_readable_package
    terminal = on_pty(AS_NOBODY + [SYSTEM_PYTHON, "-m", "pyinit", "--unshare", "--"] + BASH,
                      env={"PYTHONPATH": env["PYTHONPATH"], "PS1": INNER_PROMPT}, cwd=top)
    terminal.expect_exact(INNER_PROMPT)
    terminal.sendline('echo "fl""ags:$- uid:$(id -u)"')
    match = terminal.expect(r"flags:(\w+) uid:(\d+)\r\n")
    assert "m" in match.group(1) and match.group(2) == "0", terminal.screen
    terminal.expect_exact(INNER_PROMPT)
    terminal.sendline("sleep 30")
    terminal.descendant(["sleep", "30"])
    terminal.sendcontrol("z")
    terminal.expect(r"\[1\]\+ +Stopped +sleep 30\r\n")
    terminal.expect_exact(INNER_PROMPT)
    terminal.sendline("fg")
    terminal.expect_exact("sleep 30\r\n")
    terminal.sendcontrol("c")
    terminal.expect_exact(INNER_PROMPT)
    terminal.sendline("exit 6")
    assert terminal.exit_code() == 6
