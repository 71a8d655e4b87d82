"""Exit status: the child's code, 128+N for death by signal N, `-e` remapping, exec failures.

pyinit is transparent about how its child ended: the parent of pyinit (a
container runtime, a shell) sees what it would have seen without it, in the
shell's convention. Its own failures to start the child use the coreutils
wrapper codes: 127 not found, 126 found but not executable.
"""

import os
import signal
import subprocess
import time

import pytest

from support import PYINIT, TIMEOUT, clean_env, descendants, program, pyinit_lines, signal_name, wait_for


@pytest.mark.parametrize("code", [0, 1, 7, 255])
def test_exit_code_passes_through(run, placement, code):
    result = run(["sh", "-c", "exit %d" % code], placement)
    assert (result.returncode, result.stderr) == (code, "")


# Every signal whose default action ends the process: all but those that are ignored or stop it.
# The real-time ones between SIGRTMIN and SIGRTMAX behave alike: the stress run takes each.
NOT_FATAL = {signal.SIGCHLD, signal.SIGCONT, signal.SIGURG, signal.SIGWINCH,
             signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU}
DEATHS = [pytest.param(int(signo), id=signal_name(signo),
                       marks=[pytest.mark.stress] if signal.SIGRTMIN < signo < signal.SIGRTMAX else [])
          for signo in sorted(signal.valid_signals() - NOT_FATAL)]


@pytest.mark.parametrize("signo", DEATHS)
def test_death_by_signal_is_128_plus_n(run, placement, signo):
    result = run(program("selfkill", signo), placement)
    assert (result.returncode, result.stderr) == (128 + signo, "")


def test_exit_code_passes_through_when_the_caller_ignores_sigchld(run, placement):
    """An inherited SIG_IGN for SIGCHLD would make the kernel discard the child's status."""
    result = run(["sh", "-c", "exit 9"], placement, wrapper=program("ignoring", int(signal.SIGCHLD)))
    assert (result.returncode, result.stderr) == (9, "")


@pytest.mark.parametrize(
    "argv, env, child_exit, expected",
    [
        (["-e", "3"], {}, "exit 3", 0),
        (["-e3"], {}, "exit 3", 0),
        (["--remap-exit", "3"], {}, "exit 3", 0),
        (["--remap-exit=3"], {}, "exit 3", 0),
        (["-e", "3"], {}, "exit 4", 4),  # only the code named
        (["-e", "3", "-e", "4"], {}, "exit 3", 0),  # repeatable: both apply
        (["-e", "3", "-e", "4"], {}, "exit 4", 0),
        (["-e", "3", "-e", "4"], {}, "exit 5", 5),
        (["-e", "0"], {}, "exit 0", 0),
        (["-e", "255"], {}, "exit 255", 0),
        (["-e", "143"], {}, "kill -TERM $$", 0),  # 128+N counts as the code for death by N
        (["-e", "143"], {}, "kill -KILL $$", 137),
        ([], {"PYINIT_REMAP_EXIT": "3"}, "exit 3", 0),
        ([], {"PYINIT_REMAP_EXIT": "3,4"}, "exit 4", 0),
        ([], {"PYINIT_REMAP_EXIT": "3 4"}, "exit 4", 0),
        ([], {"PYINIT_REMAP_EXIT": "3,4"}, "exit 5", 5),
        (["-e", "5"], {"PYINIT_REMAP_EXIT": "4"}, "exit 4", 0),  # flags add to the environment's
        (["-e", "5"], {"PYINIT_REMAP_EXIT": "4"}, "exit 5", 0),
    ],
)
def test_remap_exit(run, argv, env, child_exit, expected):
    result = run([*argv, "sh", "-c", child_exit], env=clean_env(**env))
    assert (result.returncode, result.stderr) == (expected, "")


def test_remap_exit_of_a_signal_death_as_pid1(run):
    """The typical container use: SIGTERM at shutdown is a clean stop."""
    result = run(["-e", "143", *program("selfkill", int(signal.SIGTERM))], "pid1")
    assert (result.returncode, result.stderr) == (0, "")


# --- exec failures --------------------------------------------------------------------------


def assert_one_failure_line(result, code: int, *words: str) -> None:
    assert result.returncode == code, result
    lines = pyinit_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert result.stdout == ""


def test_command_not_found_in_path(run, placement):
    result = run(["no-such-command-pyinit-test", "arg"], placement)
    assert_one_failure_line(result, 127, "no-such-command-pyinit-test")


def test_command_path_does_not_exist(run, placement, tmp_path):
    result = run([str(tmp_path / "missing")], placement)
    assert_one_failure_line(result, 127, str(tmp_path / "missing"))


def test_empty_command_name(run, placement):
    result = run([""], placement)
    assert_one_failure_line(result, 127)


def test_directory_is_not_executable(run, placement, tmp_path):
    result = run([str(tmp_path)], placement)
    assert_one_failure_line(result, 126, str(tmp_path))


def test_file_without_execute_permission(run, placement, tmp_path):
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    result = run([str(script)], placement)
    assert_one_failure_line(result, 126, str(script))


def test_file_without_execute_permission_found_in_path(run, tmp_path):
    (tmp_path / "tool").write_text("#!/bin/sh\nexit 0\n")
    env = clean_env(PATH=str(tmp_path) + os.pathsep + os.environ["PATH"])
    result = run(["tool"], env=env)
    assert_one_failure_line(result, 126, "tool")


def test_interpreter_missing(run, tmp_path):
    """A script whose #! interpreter does not exist: ENOENT from exec, so 127 as `env` says."""
    script = tmp_path / "script"
    script.write_text("#!/nonexistent/interpreter\n")
    script.chmod(0o755)
    result = run([str(script)])
    assert_one_failure_line(result, 127, str(script))


def test_failures_are_reported_even_with_quiet(run):
    result = run(["-q", "no-such-command-pyinit-test"])
    assert_one_failure_line(result, 127)


def test_executable_script_without_shebang_runs_under_sh(run, placement, tmp_path):
    """execvp(3) (POSIX, glibc) runs an executable file with no #! line with /bin/sh.

    So `env ./script` and `tini ./script` run it; pyinit must behave the same
    for users to switch by changing the program name. Arguments follow.
    """
    script = tmp_path / "script"
    script.write_text('echo "$0 $1 $2"; exit 9\n')
    script.chmod(0o755)
    result = run([str(script), "one", "two words"], placement)
    assert (result.returncode, result.stdout, result.stderr) == (9, "%s one two words\n" % script, "")
    env = clean_env(PATH=str(tmp_path) + os.pathsep + os.environ["PATH"])
    result = run(["script"], placement, env=env)
    assert (result.returncode, result.stderr) == (9, "")


def test_path_search_goes_on_past_a_file_that_is_not_executable(run, tmp_path):
    """As execvp(3): EACCES in one PATH directory is reported only if no later directory has the command."""
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (first / "tool").write_text("#!/bin/sh\nexit 1\n")
    (first / "tool").chmod(0o644)
    (second / "tool").write_text("#!/bin/sh\nexit 8\n")
    (second / "tool").chmod(0o755)
    result = run(["tool"], env=clean_env(PATH=os.pathsep.join([str(first), str(second), os.environ["PATH"]])))
    assert (result.returncode, result.stderr) == (8, "")


# --- the launcher, as util-linux unshare: it dies of the signal it relayed when that ended the command ---------


LAUNCHER_DEATHS = {
    "INT": (signal.SIGINT, ["sleep", "100"], -signal.SIGINT),  # Ctrl-C: the calling shell's loop stops
    "TERM": (signal.SIGTERM, ["sleep", "100"], -signal.SIGTERM),
    "INT-handled-then-130": (signal.SIGINT, ["sh", "-c", "trap 'exit 130' INT; sleep 100 & wait"], -signal.SIGINT),
    "QUIT-exits-131": (signal.SIGQUIT, ["sleep", "100"], 128 + signal.SIGQUIT),  # no core dump of the launcher
    "INT-ignored": (signal.SIGINT, ["sh", "-c", "trap '' INT; sleep 0.5; exit 3"], 3),
}


@pytest.mark.parametrize("signo, command, expected", LAUNCHER_DEATHS.values(), ids=LAUNCHER_DEATHS.keys())
def test_the_launcher_dies_of_the_signal_that_ended_its_command(signo, command, expected):
    """The init, as PID 1, exits 128+N; the launcher outside dies of N when it relayed N (SIGQUIT and the like: 128+N)."""
    proc = subprocess.Popen([*PYINIT, "--unshare", "--", *command], env=clean_env(), stdin=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        wait_for(lambda: len(descendants(proc.pid)) >= 2, "the command to start under the launcher's init")
        time.sleep(0.2)  # the shell's trap is set
        proc.send_signal(signo)
        assert proc.wait(TIMEOUT) == expected
        assert proc.stderr.read() == b""
    finally:
        proc.kill()
        proc.wait()
