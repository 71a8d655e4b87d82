"""The command line: help and version, where option parsing stops, and every way to get it wrong.

pyinit's own failures exit 125 (the coreutils wrapper convention) with exactly
one line `pyinit: ...` on stderr and nothing on stdout, and never run the
command. No input, however strange, produces a Python traceback.
"""

import os
import shutil
import signal
import subprocess
import sys

import pytest

import pyinit
from support import REPO, clean_env, forwarder, pyinit_lines, report, start_recorder, wait_for

# The command given after bad options: if pyinit ran it, stdout would say so.
WITNESS = ["sh", "-c", "echo COMMAND RAN"]


def test_help_and_version(run):
    for flag in ("-h", "--help"):
        result = run([flag])
        assert (result.returncode, result.stderr) == (0, "")
        assert result.stdout.startswith("usage: pyinit")
        for option in ("--single-child", "--rewrite", "-e", "-p", "-w", "PYINIT_VERBOSITY", "0 to 1000000000"):
            assert option in result.stdout
    for flag in ("-V", "--version"):
        result = run([flag])
        assert (result.returncode, result.stdout, result.stderr) == (0, "pyinit %s\n" % pyinit.__version__, "")


def test_help_wins_over_the_command(run):
    result = run(["-h", *WITNESS])
    assert result.returncode == 0 and "usage:" in result.stdout and "COMMAND RAN" not in result.stdout


@pytest.mark.parametrize(
    "argv, printed",
    [
        (["echo", "-v"], "-v"),  # the first non-option ends pyinit's options
        (["sh", "-c", 'echo "$0"', "--help"], "--help"),
        (["--", "echo", "-v"], "-v"),
        (["--", "--", "x"], None),  # only the first -- is pyinit's: the command is "--"
        (["-v", "-q", "--", "echo", "-c", "--", "-r"], "-c -- -r"),
    ],
    ids=["first-non-option", "long-option-after-command", "double-dash", "second-double-dash", "options-then-command"],
)
def test_option_parsing_stops_at_the_command(run, argv, printed):
    result = run(argv)
    if printed is None:
        assert result.returncode == 127 and "'--'" in result.stderr
    else:
        assert (result.returncode, result.stdout, result.stderr) == (0, printed + "\n", "")


def test_clustered_and_attached_values(start, placement):
    """getopt grammar: `-qe3` clusters and carries its value, so do `-r15:3` and `--rewrite=HUP:0`; each one acts.

    The recorder reports what reaches it: the SIGHUP is dropped (a forwarded
    one would be reported before the SIGQUIT that follows it), the SIGTERM
    arrives as SIGQUIT, and -q keeps stderr empty.
    """
    init = start_recorder(start, placement, ["-qe3", "-r15:3", "--remap-exit=4", "--rewrite=HUP:0"],
                          exit_on=signal.SIGQUIT)
    os.kill(init.pid, signal.SIGHUP)
    os.kill(init.pid, signal.SIGTERM)
    assert init.out.next() == report(signal.SIGQUIT, forwarder(init))
    assert init.wait() == 0
    assert init.stderr == ""


def test_tini_flags_are_accepted(run):
    """`-g` (group: our default) and `-s` (subreaper: automatic) exist for tini's users."""
    result = run(["-g", "-s", "--subreaper", "--process-group", "sh", "-c", "exit 4"], env=clean_env(TINI_SUBREAPER="1"))
    assert (result.returncode, result.stderr) == (4, "")


BAD_ARGUMENTS = {
    "unknown-short": ["-x", *WITNESS],
    "unknown-short-in-cluster": ["-vx", *WITNESS],
    "unknown-long": ["--bogus", *WITNESS],
    "unknown-long-with-value": ["--bogus=1", *WITNESS],
    "value-for-a-flag": ["--single-child=yes", *WITNESS],
    "rewrite-missing-value": ["-r"],
    "rewrite-long-missing-value": ["--rewrite"],
    "remap-missing-value": ["-e"],
    "remap-long-missing-value": ["--remap-exit"],
    "pdeathsig-missing-value": ["-p"],
    "remap-256": ["-e", "256", *WITNESS],
    "remap-negative": ["-e", "-1", *WITNESS],
    "remap-word": ["-e", "abc", *WITNESS],
    "remap-empty": ["-e", "", *WITNESS],
    "remap-huge": ["-e", "99999999999999999999999", *WITNESS],
    "remap-superscript": ["-e", "\u00b2", *WITNESS],
    "pdeathsig-name": ["-p", "NOPE", *WITNESS],
    "pdeathsig-zero": ["-p", "0", *WITNESS],
    "pdeathsig-out-of-range": ["-p", "65", *WITNESS],
    "pdeathsig-superscript": ["-p", "\u00b2", *WITNESS],
    "rewrite-no-colon": ["-r", "15", *WITNESS],
    "rewrite-unknown-source": ["-r", "FOO:TERM", *WITNESS],
    "rewrite-unknown-target": ["-r", "TERM:FOO", *WITNESS],
    "rewrite-empty-target": ["-r", "TERM:", *WITNESS],
    "rewrite-empty-source": ["-r", ":TERM", *WITNESS],
    "rewrite-two-colons": ["-r", "15:3:1", *WITNESS],
    "rewrite-sigchld": ["-r", "SIGCHLD:TERM", *WITNESS],
    "rewrite-chld-number": ["-r", "%d:15" % 17, *WITNESS],
    "rewrite-sigkill": ["-r", "SIGKILL:TERM", *WITNESS],
    "rewrite-sigstop": ["-r", "STOP:TERM", *WITNESS],
    "rewrite-zero-source": ["-r", "0:15", *WITNESS],
    "rewrite-source-out-of-range": ["-r", "65:1", *WITNESS],
    "rewrite-target-out-of-range": ["-r", "15:65", *WITNESS],
    "rewrite-glibc-reserved": ["-r", "32:1", *WITNESS],
    "rewrite-huge": ["-r", "99999999999999999999:1", *WITNESS],
    "rewrite-rt-beyond-max": ["-r", "RTMIN+100:1", *WITNESS],
    "rewrite-superscript": ["-r", "\u00b2:1", *WITNESS],
    # ASCII only: these were RTMIN+3 and SIGTERM, through str.isdigit() and str.upper()
    "rewrite-arabic-indic-digit": ["-r", "RTMIN+\u0663:USR1", *WITNESS],
    "rewrite-long-s": ["-r", "\u017figterm:0", *WITNESS],
    "pdeathsig-long-s": ["-p", "\u017figusr1", *WITNESS],
    "rewrite-ideographic-space": ["-r", "\u300015:3", *WITNESS],
    "remap-ideographic-space": ["-e", "\u30003", *WITNESS],
    "no-command": [],
    "only-options": ["-v", "-c"],
    "only-double-dash": ["--"],
    "options-then-double-dash": ["-v", "--"],
}


@pytest.mark.parametrize("argv", BAD_ARGUMENTS.values(), ids=BAD_ARGUMENTS.keys())
def test_bad_arguments_exit_125_with_one_line(run, argv):
    result = run(argv)
    assert result.returncode == 125, result
    assert result.stdout == "", "the command ran, or pyinit printed to stdout"
    lines = pyinit_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert "--help" in lines[0]  # names where to look


BAD_ENVIRONMENT = {
    "verbosity-word": {"PYINIT_VERBOSITY": "abc"},
    "verbosity-negative": {"PYINIT_VERBOSITY": "-1"},
    "verbosity-4": {"PYINIT_VERBOSITY": "4"},
    "verbosity-huge": {"PYINIT_VERBOSITY": "99999999999999999999"},
    "dumb-init-setsid-maybe": {"DUMB_INIT_SETSID": "maybe"},
    "tini-verbosity-word": {"TINI_VERBOSITY": "loud"},
    "single-child-maybe": {"PYINIT_SINGLE_CHILD": "maybe"},
    "warn-reaped-perhaps": {"PYINIT_WARN_REAPED": "perhaps"},
    "rewrite-bad": {"PYINIT_REWRITE": "bad"},
    "rewrite-one-bad-of-two": {"PYINIT_REWRITE": "TERM:QUIT,KILL:TERM"},
    "remap-300": {"PYINIT_REMAP_EXIT": "300"},
    "remap-word": {"PYINIT_REMAP_EXIT": "3,x"},
    "pdeathsig-bad": {"PYINIT_PDEATHSIG": "NOPE"},
    "pdeathsig-long-s": {"PYINIT_PDEATHSIG": "\u017fIGHUP"},
    # ASCII white space only: U+3000 used to be stripped or split on like a space
    "verbosity-ideographic-space": {"PYINIT_VERBOSITY": "\u30002"},
    "remap-ideographic-space": {"PYINIT_REMAP_EXIT": "3\u30004"},
    "single-child-ideographic-space": {"PYINIT_SINGLE_CHILD": "\u3000yes"},
    "rewrite-arabic-indic-digit": {"PYINIT_REWRITE": "RTMIN+\u0663:USR1"},
}


@pytest.mark.parametrize("variables", BAD_ENVIRONMENT.values(), ids=BAD_ENVIRONMENT.keys())
def test_bad_environment_exits_125_naming_the_variable(run, variables):
    result = run(WITNESS, env=clean_env(**variables))
    assert result.returncode == 125, result
    assert result.stdout == ""
    lines = pyinit_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    (variable,) = variables
    assert variable in lines[0]


# --- limits: a value is refused at once, or it works ---------------------------------------------

BEYOND_THE_LIMITS = {
    # sigtimedwait() raised OverflowError from 9.3e9 s on, once the timer started: 125 and no SIGTERM passed on
    "grace": (["--grace", "9.3e9"], {}, "--grace", "1000000000"),
    "drain": (["--drain=1000000000.5"], {}, "--drain", "1000000000"),
    "term-delay": (["--term-delay", "99999999999"], {}, "--term-delay", "1000000000"),
    "PYINIT_TERM_DELAY": ([], {"PYINIT_TERM_DELAY": "99999999999"}, "PYINIT_TERM_DELAY", "1000000000"),
    "PYINIT_GRACE": ([], {"PYINIT_GRACE": "1e300"}, "PYINIT_GRACE", "1000000000"),
    # os.write() raised OverflowError at exit, and the child's code became 125
    "exit-report-fd": (["--exit-report", "fd:2147483648"], {}, "--exit-report", "2147483647"),
    "PYINIT_EXIT_REPORT": ([], {"PYINIT_EXIT_REPORT": "fd:99999999999999999999"}, "PYINIT_EXIT_REPORT",
                           "2147483647"),
}


@pytest.mark.parametrize("options, variables, named, limit", BEYOND_THE_LIMITS.values(), ids=BEYOND_THE_LIMITS.keys())
def test_values_beyond_the_limits_are_refused_at_once(run, options, variables, named, limit):
    """Exit 125 before the command runs, one line naming the option or variable and the limit."""
    result = run([*options, *WITNESS], env=clean_env(**variables))
    assert (result.returncode, result.stdout) == (125, ""), result
    lines = pyinit_lines(result.stderr)
    assert len(lines) == 1 and named in lines[0] and limit in lines[0], lines


def test_the_longest_timers_can_really_be_waited(start, placement):
    """--term-delay, --grace and --drain at their maximum (1e9 s): pyinit waits in sigtimedwait() and carries on.

    The first SIGTERM is held (a SIGUSR1 sent after it arrives first), the
    second forwards it to the child (-c: the child only), which exits with
    the grace timer running; the drain then SIGTERMs the grandchild and
    reaps it. pyinit exits 0, long before any of the timers.
    """
    longest = "1e9"
    init = start_recorder(start, placement, ["-v", "-c", "--grace", longest, "--drain", longest, "--term-delay", longest],
                          grandchild=True)
    sender = forwarder(init)
    os.kill(init.pid, signal.SIGTERM)
    wait_for(lambda: "holding SIGTERM for 1e+09 s" in init.stderr, "pyinit to hold the SIGTERM")
    os.kill(init.pid, signal.SIGUSR1)
    assert init.out.next() == report(signal.SIGUSR1, sender)
    os.kill(init.pid, signal.SIGTERM)
    assert init.out.take(2) == [report(signal.SIGTERM, sender), report(signal.SIGTERM, sender, "child-grandchild")]
    assert init.wait() == 0


def test_undecodable_bytes_in_arguments(run):
    """Arguments are bytes on Linux; ones that are not UTF-8 still get one clean line."""
    for argv in ([b"-r", b"\xff:1", b"true"], [b"-\xff", b"true"], [b"-e", b"\xfe", b"true"]):
        result = run(argv)
        assert result.returncode == 125, result
        assert len(pyinit_lines(result.stderr)) == 1
    for variable in (b"PYINIT_REWRITE", b"PYINIT_VERBOSITY", b"PYINIT_SINGLE_CHILD", b"PYINIT_REMAP_EXIT"):
        result = run(["true"], env={**clean_env(), variable: b"\xff:\xfe"})
        assert result.returncode == 125, result
        assert len(pyinit_lines(result.stderr)) == 1


def test_console_script():
    """The `pyinit` entry point that `pip install` creates works like `python -m pyinit`."""
    script = shutil.which("pyinit", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    assert script, "no `pyinit` console script: install the project first (pip install -e '.[test]')"
    env = clean_env()
    del env["PYTHONPATH"]  # the installed package, not the source tree on the path
    version = subprocess.run([script, "--version"], capture_output=True, env=env, cwd="/", timeout=30)
    assert (version.returncode, version.stdout) == (0, b"pyinit %s\n" % pyinit.__version__.encode())
    child = subprocess.run([script, "--", "sh", "-c", "exit 7"], capture_output=True, env=env, cwd="/", timeout=30)
    assert (child.returncode, child.stderr) == (7, b"")


def test_runs_from_the_source_tree_without_installation():
    """`python -m pyinit` from a clone: the repository directory is all it needs.

    -S keeps site-packages (and so any installed pyinit) off the path; `-m`
    puts the working directory first, and that is the source tree.
    """
    env = clean_env()
    del env["PYTHONPATH"]
    result = subprocess.run([sys.executable, "-S", "-m", "pyinit", "sh", "-c", "exit 6"], cwd=REPO, env=env,
                            capture_output=True, timeout=30)
    assert (result.returncode, result.stderr) == (6, b"")
