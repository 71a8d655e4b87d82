"""The command line: help and version, where option parsing stops, and every way to get it wrong.

pyinit's own failures exit 125 (the coreutils wrapper convention) with exactly
one line `pyinit: ...` on stderr and nothing on stdout, and never run the
command. No input, however strange, produces a Python traceback.
"""

import os
import shutil
import subprocess
import sys

import pytest

import pyinit
from support import REPO, clean_env, pyinit_lines

# The command given after bad options: if pyinit ran it, stdout would say so.
WITNESS = ["sh", "-c", "echo COMMAND RAN"]


def test_help_and_version(run):
    for flag in ("-h", "--help"):
        result = run([flag])
        assert (result.returncode, result.stderr) == (0, "")
        assert result.stdout.startswith("usage: pyinit")
        for option in ("--single-child", "--rewrite", "-e", "-p", "-w", "PYINIT_VERBOSITY"):
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


def test_clustered_and_attached_values(run):
    """getopt grammar: `-vq` clusters, `-e3` and `-r15:3` carry their value, `--opt=V` too."""
    result = run(["-qe3", "-r15:3", "--remap-exit=4", "--rewrite=HUP:0", "sh", "-c", "exit 4"])
    assert (result.returncode, result.stderr) == (0, "")


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
    "tini-verbosity-word": {"TINI_VERBOSITY": "loud"},
    "single-child-maybe": {"PYINIT_SINGLE_CHILD": "maybe"},
    "warn-reaped-perhaps": {"PYINIT_WARN_REAPED": "perhaps"},
    "rewrite-bad": {"PYINIT_REWRITE": "bad"},
    "rewrite-one-bad-of-two": {"PYINIT_REWRITE": "TERM:QUIT,KILL:TERM"},
    "remap-300": {"PYINIT_REMAP_EXIT": "300"},
    "remap-word": {"PYINIT_REMAP_EXIT": "3,x"},
    "pdeathsig-bad": {"PYINIT_PDEATHSIG": "NOPE"},
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
