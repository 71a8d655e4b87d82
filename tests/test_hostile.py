"""Hostile input: random command lines and PYINIT_* environments, biased towards valid options with odd values.

Two layers, the same generator:

- in process, many examples: `cli.parse` returns a Config whose every value
  the init can really use (a timer that sigtimedwait() takes, a descriptor
  os.write() takes, a signal the kernel knows), or the help text, or raises
  UsageError; never anything else.
- for real, a few examples each run: pyinit as a subprocess, with the
  parser as the oracle. Refused: exit 125, exactly one `pyinit: ` line on
  stderr, the command never run. Accepted: the command runs and pyinit
  exits with its code (after -e). Never a traceback, never a hang.

Values are huge, negative, empty, nan and inf, other scripts' digits, and
bytes that are not UTF-8 (decoded as Python decodes argv and the
environment, with surrogateescape, and encoded back the same way by
subprocess). The commands pyinit may run come from a PATH holding only
`sh`: a random word that ends the options can only be "not found". Exit
report destinations are descriptors or relative names in the test's own
directory, never an absolute path.
"""

import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, assume, find, given, settings
from hypothesis import strategies as st

from pyinit import cli, log, signals
from pyinit.config import MAX_FD, MAX_SECONDS, Config
from support import PYINIT, TIMEOUT, assert_no_traceback, clean_env, pyinit_lines

# --- the generator ------------------------------------------------------------------------------

ODD_NUMBERS = ["0", "-0", "-1", "", " ", "1", "2.5", "255", "256", "nan", "NaN", "inf", "-inf", "1e400", "1e-400",
               "1e9", "1000000000", "1000000000.5", "9.3e9", "99999999999", "2147483647", "2147483648",
               "18446744073709551616", "1_0", "0x10", "\u0663", "\u00b2", "\u30003", "+3", "3 ", "1e"]
SIGNAL_WORDS = ["TERM", "SIGTERM", "term", "15", "0", "9", "KILL", "CHLD", "STOP", "65", "32", "RTMIN", "RTMIN+3",
                "RTMAX-1", "RTMIN+99", "SIGRTMAX", "\u017figterm", "RTMIN+\u0663", "HUP", "USR1", "WINCH", "CONT"]
REPORT_DESTINATIONS = ["fd:1", "fd:2", "fd:0", "fd:99", "fd:2147483647", "fd:2147483648", "fd:-1", "fd:", "fd:x",
                       "fd:\u0663", "", "report.json", "..", "."]


def non_utf8() -> st.SearchStrategy:
    """Bytes as Python decodes them from argv or the environment: surrogateescape for what is not UTF-8."""
    return st.binary(max_size=8).filter(lambda b: b"\0" not in b).map(os.fsdecode)


def text() -> st.SearchStrategy:
    return st.text(st.characters(exclude_characters="\0", codec="utf-8", exclude_categories=("Cs",)), max_size=8)


def odd() -> st.SearchStrategy:
    return st.one_of(
        st.sampled_from(ODD_NUMBERS),
        st.integers(-2**70, 2**70).map(str),
        st.floats().map(repr),
        st.floats(min_value=0, max_value=2 * MAX_SECONDS).map(str),
        text(),
        non_utf8(),
    )


def seconds() -> st.SearchStrategy:
    valid = st.one_of(st.sampled_from(["0", "-0", "2.5", " 7 ", "1e9", "1000000000", "1e-400"]),
                      st.floats(min_value=0, max_value=MAX_SECONDS).map(str))
    return st.one_of(valid, valid, valid, odd())


def exit_code() -> st.SearchStrategy:
    return st.one_of(st.integers(0, 255).map(str), st.integers(0, 255).map(str), odd())


def signal_spec(zero: bool = False) -> st.SearchStrategy:
    valid = st.one_of(st.sampled_from(sorted(signals.VALID | ({0} if zero else set()))).map(str),
                      st.sampled_from(sorted(signals.VALID)).map(signals.name),
                      st.sampled_from(sorted(signals.VALID)).map(lambda n: signals.name(n)[3:].lower()))
    return st.one_of(valid, valid, valid, st.sampled_from(SIGNAL_WORDS), odd())


def rewrite_spec() -> st.SearchStrategy:
    pair = st.builds(lambda a, b: a + ":" + b, signal_spec(), signal_spec(zero=True))
    return st.one_of(pair, pair, odd())


def report_destination() -> st.SearchStrategy:
    return st.one_of(st.sampled_from(REPORT_DESTINATIONS), st.integers(0, MAX_FD).map("fd:{}".format),
                     st.sampled_from(["report.json", "fd:1", "fd:2", "r\u00e9port", os.fsdecode(b"r\xffport")]),
                     st.integers(-5, 2**40).map("fd:{}".format), odd().filter(lambda value: "/" not in value))


def hostname() -> st.SearchStrategy:
    return st.one_of(st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=64), odd())


VALUES = {
    "r": ("rewrite", rewrite_spec), "e": ("remap-exit", exit_code), "p": ("pdeathsig", signal_spec),
    "grace": ("grace", seconds), "drain": ("drain", seconds), "term-delay": ("term-delay", seconds),
    "exit-report": ("exit-report", report_destination),
}
FLAGS = ["-c", "-g", "-s", "-w", "-v", "-vv", "-q", "--single-child", "--process-group", "--subreaper",
         "--warn-reaped", "--verbose", "--quiet", "-cwv", "--unshare", "--unshare"]
LAUNCHER_FLAGS = ["--user", "--no-mount-proc", "--ipc"]  # usage errors without --unshare


@st.composite
def value_option(draw) -> "list[str]":
    short, (long_name, values) = draw(st.sampled_from(sorted(VALUES.items())))
    value = draw(values())
    forms = [["--" + long_name, value], ["--%s=%s" % (long_name, value)]]
    if len(short) == 1:
        forms += [["-" + short, value], ["-" + short + value]]
    return draw(st.sampled_from(forms))


def launcher_option() -> st.SearchStrategy:
    named = st.one_of(hostname().map(lambda name: ["--hostname", name]), hostname().map(lambda name: ["--hostname=" + name]))
    option = st.one_of(st.sampled_from(LAUNCHER_FLAGS).map(lambda f: [f]), named)
    with_unshare = option.map(lambda tokens: ["--unshare", *tokens])
    return st.one_of(with_unshare, with_unshare, with_unshare, option)


def garbage_option() -> st.SearchStrategy:
    return st.one_of(text(), non_utf8()).map(lambda rest: "-" + rest).map(lambda token: [token])


def options() -> st.SearchStrategy:
    flag = st.sampled_from(FLAGS).map(lambda f: [f])
    one = st.one_of(value_option(), value_option(), value_option(), flag, flag, flag,
                    launcher_option(), garbage_option(), st.sampled_from([["-h"], ["--version"], ["-vh"]]))
    return st.lists(one, max_size=4).map(lambda lists: [token for tokens in lists for token in tokens])


def commands() -> st.SearchStrategy:
    exits = st.integers(0, 255).map(lambda code: ["sh", "-c", "exit %d" % code])
    return st.one_of(exits, exits, exits, st.sampled_from([[], ["no-such-command"], [""]]),
                     st.one_of(text(), non_utf8()).map(lambda name: [name]))


VARIABLES = {
    "PYINIT_VERBOSITY": exit_code, "TINI_VERBOSITY": exit_code, "PYINIT_SINGLE_CHILD": odd, "DUMB_INIT_SETSID": odd,
    "PYINIT_WARN_REAPED": odd, "PYINIT_REWRITE": rewrite_spec, "PYINIT_REMAP_EXIT": exit_code,
    "PYINIT_PDEATHSIG": signal_spec, "PYINIT_GRACE": seconds, "PYINIT_DRAIN": seconds,
    "PYINIT_TERM_DELAY": seconds, "PYINIT_EXIT_REPORT": report_destination,
}
FLAG_WORDS = st.sampled_from(["1", "0", "yes", "off", "", "TRUE"])


@st.composite
def environments(draw) -> "dict[str, str]":
    names = draw(st.lists(st.sampled_from(sorted(VARIABLES)), max_size=2, unique=True))
    environ = {}
    for name in names:
        strategy = VARIABLES[name]()
        if name in ("PYINIT_SINGLE_CHILD", "PYINIT_WARN_REAPED", "DUMB_INIT_SETSID"):
            strategy = st.one_of(FLAG_WORDS, FLAG_WORDS, strategy)
        environ[name] = draw(strategy)
    return environ


@st.composite
def command_lines(draw) -> "tuple[list[str], dict[str, str]]":
    argv = draw(options())
    if draw(st.booleans()):
        argv.append("--")
    return argv + draw(commands()), draw(st.one_of(st.just({}), environments()))


# --- the in-process layer -----------------------------------------------------------------------


def check_config(config: Config) -> None:
    """Every value is one the init can use as it is."""
    assert config.command and all(isinstance(word, str) for word in config.command)
    for seconds in (config.grace, config.drain, config.term_delay):
        assert seconds is None or 0 <= seconds <= MAX_SECONDS, seconds
    if config.exit_report is not None:
        if config.exit_report.startswith("fd:"):
            assert 0 <= int(config.exit_report[3:]) <= MAX_FD
        else:
            assert os.path.isabs(config.exit_report)
    assert all(source in signals.FORWARDED and (target == 0 or target in signals.VALID)
               for source, target in config.rewrite.items())
    assert all(0 <= code <= 255 for code in config.remap_exit)
    assert config.pdeathsig == 0 or config.pdeathsig in signals.VALID
    assert log.ERROR <= config.verbosity <= log.DEBUG
    assert config.hostname is None or 0 < len(os.fsencode(config.hostname)) <= 64


@settings(max_examples=500, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(command_lines())
def test_parse_gives_a_usable_config_or_one_usage_error(line):
    argv, environ = line
    try:
        config = cli.parse(argv, environ)
    except cli.UsageError as problem:
        assert str(problem)
        return
    if isinstance(config, str):
        assert config.startswith(("usage: pyinit", "pyinit "))
    else:
        check_config(config)


# --- the real layer -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """A working directory for exit reports, and a PATH with `sh` alone in it."""
    directory = tmp_path_factory.mktemp("hostile")
    (directory / "bin").mkdir()
    (directory / "bin" / "sh").symlink_to("/bin/sh")
    return directory


def expected(argv: "list[str]", environ: "dict[str, str]") -> "int | str":
    """What pyinit must do, by the parser: 'usage', 'text' (help or version), 'cannot run', or the exit code."""
    try:
        config = cli.parse(argv, environ)
    except cli.UsageError:
        return "usage"
    if isinstance(config, str):
        return "text"
    if config.command[0] != "sh":  # the only command in the sandbox's PATH: not found, or not executable
        return "cannot run"
    if config.command == ("sh",):
        code = 0  # reads its standard input, /dev/null
    elif len(config.command) == 3 and config.command[1] == "-c":
        code = int(config.command[2].split()[1])
    else:
        return "other"
    return 0 if code in config.remap_exit else code


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(command_lines())
def test_pyinit_answers_in_one_line_or_runs_the_command(sandbox, line):
    argv, environ = line
    want = expected(argv, environ)
    assume(want != "other")
    env = clean_env(PATH=str(sandbox / "bin"), **environ)
    try:
        result = subprocess.run([*PYINIT, *argv], env=env, cwd=sandbox, stdin=subprocess.DEVNULL,
                                capture_output=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise AssertionError("pyinit hung: argv %r, environment %r" % (argv, environ)) from None
    stderr = result.stderr.decode(errors="replace")
    assert_no_traceback(stderr)
    where = "argv %r, environment %r: %r" % (argv, environ, result)
    if want == "usage":
        assert result.returncode == 125 and result.stdout == b"", where
        assert len(pyinit_lines(stderr)) == 1, where
    elif want == "text":
        assert result.returncode == 0 and result.stdout.startswith((b"usage: pyinit", b"pyinit ")), where
    elif want == "cannot run":
        assert result.returncode in (126, 127), where
        assert any(line.startswith(("pyinit: cannot run", "pyinit: the command name is empty"))
                   for line in stderr.splitlines()), where
    else:
        assert result.returncode == want, where


@pytest.mark.parametrize("outcome", ["usage", "text", "runs", "cannot run"])
def test_the_generator_reaches_every_outcome(outcome):
    """A property over inputs that are all refused proves little: the generator must also make valid lines.

    Each outcome is searched for on its own (hypothesis.find), so the test
    does not hang on which examples come first: hypothesis draws on the
    constants of the modules loaded in the process, which other tests change.
    """
    def reaches(line) -> bool:
        want = expected(*line)
        return (want if isinstance(want, str) else "runs") == outcome

    find(command_lines(), reaches, settings=settings(max_examples=3000, deadline=None, database=None,
                                                      derandomize=True))
