"""The command line and signal specs, in process: `cli.parse`, `signals.parse`, `parse_rewrite`, `signals.name`.

Pure logic, checked in milliseconds: the exact Config that a command line
and an environment give, and the exact value or refusal of every kind of
signal spec. test_cli.py runs pyinit for real on the same grammar and sees
the exit codes and the one-line messages; test_hostile.py throws random
input at both layers.
"""

import signal

import pytest

from pyinit import cli, log, signals
from pyinit.config import MAX_FD, MAX_SECONDS, Config

RTMIN, RTMAX = signal.SIGRTMIN, signal.SIGRTMAX
TERM, QUIT, HUP, USR1, USR2, INT = (signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2,
                                    signal.SIGINT)


def parse(argv, **environ) -> Config:
    config = cli.parse(argv, environ)
    assert isinstance(config, Config), config
    return config


def refused(argv, **environ) -> str:
    with pytest.raises(cli.UsageError) as raised:
        cli.parse(argv, environ)
    return str(raised.value)


# --- cli.parse ----------------------------------------------------------------------------------


def test_defaults():
    config = parse(["cmd", "arg"])
    assert config.command == ("cmd", "arg")
    assert (config.single_child, config.rewrite, config.remap_exit, config.pdeathsig, config.warn_reaped) == (
        False, {}, frozenset(), 0, False)
    assert (config.verbosity, config.grace, config.drain, config.term_delay, config.exit_report) == (
        log.WARNING, None, None, 0.0, None)
    assert (config.unshare, config.user_namespace, config.mount_proc, config.hostname, config.ipc, config.net) == (
        False, False, True, None, False, False)


@pytest.mark.parametrize("argv, command", [
    (["echo", "-v"], ("echo", "-v")),
    (["--", "-v"], ("-v",)),
    (["--", "--", "x"], ("--", "x")),
    (["-v", "-", "x"], ("-", "x")),  # a lone dash is not an option
    (["-c", "--", "echo", "-c"], ("echo", "-c")),
])
def test_options_stop_at_the_command(argv, command):
    assert parse(argv).command == command


def test_clusters_and_attached_values():
    config = parse(["-cwvvqe3", "-r15:3", "-rHUP:0", "--remap-exit=4", "-e", "5", "--rewrite", "USR1:USR2", "x"])
    assert config.single_child and config.warn_reaped
    assert config.verbosity == log.ERROR  # -q after -vv: the last one wins
    assert config.remap_exit == {3, 4, 5}
    assert config.rewrite == {TERM: QUIT, HUP: 0, USR1: USR2}
    assert parse(["-vv", "x"]).verbosity == parse(["-vvvvv", "x"]).verbosity == log.DEBUG


def test_a_value_taking_option_swallows_the_next_argument():
    assert "exit code '-v'" in refused(["-e", "-v", "x"])
    assert parse(["--grace", "1", "--", "x"]).grace == 1.0
    assert parse(["--hostname", "--", "--unshare", "x"]).hostname == "--"


@pytest.mark.parametrize("text, seconds", [
    ("0", 0.0), ("2.5", 2.5), (" 7 ", 7.0), ("1e3", 1000.0), ("-0", 0.0), ("1e-400", 0.0), (".5", 0.5),
    ("1000000000", MAX_SECONDS), ("1e9", MAX_SECONDS),
])
def test_seconds(text, seconds):
    for option, field in (("--grace", "grace"), ("--drain", "drain"), ("--term-delay", "term_delay")):
        value = getattr(parse([option, text, "x"]), field)
        assert value == seconds and str(value) != "-0.0"
    assert parse(["x"], PYINIT_GRACE=text).grace == seconds


@pytest.mark.parametrize("text", ["", "-1", "-1e-9", "nan", "NaN", "inf", "-inf", "1e400", "1_000", "1000000000.001",
                                  "9.3e9", "99999999999", "\u0665", "1,5", "0x10", "five"])
def test_seconds_refused_naming_the_limit(text):
    message = refused(["--grace", text, "x"])
    assert message.startswith("option '--grace'") and "from 0 to 1000000000" in message
    if text.strip():
        message = refused(["x"], PYINIT_TERM_DELAY=text)
        assert message.startswith("PYINIT_TERM_DELAY=") and "1000000000" in message


def test_exit_report():
    assert parse(["--exit-report", "fd:3", "x"]).exit_report == "fd:3"
    assert parse(["--exit-report", "fd:%d" % MAX_FD, "x"]).exit_report == "fd:2147483647"
    assert parse(["--exit-report=/r.json", "x"]).exit_report == "/r.json"
    assert parse(["x"], PYINIT_EXIT_REPORT=" /r.json\t").exit_report == "/r.json"
    for text in ("fd:2147483648", "fd:99999999999999999999999", "fd:-1", "fd:", "fd:x", "fd:\u0663", "fd: 3", ""):
        assert "--exit-report" in refused(["--exit-report", text, "x"]), text
    assert "2147483647" in refused(["x"], PYINIT_EXIT_REPORT="fd:2147483648")


@pytest.mark.parametrize("text, code", [("0", 0), ("255", 255), (" 3 ", 3), ("007", 7)])
def test_remap_exit(text, code):
    assert parse(["-e", text, "x"]).remap_exit == {code}


@pytest.mark.parametrize("text", ["256", "-1", "", "x", "\u00b2", "\u0663", "\u30003", "3.0", "+3"])
def test_remap_exit_refused(text):
    assert refused(["-e", text, "x"]).startswith("option '-e': exit code")


def test_environment_gives_defaults_and_flags_win():
    environ = dict(PYINIT_VERBOSITY="3", PYINIT_SINGLE_CHILD="yes", PYINIT_REWRITE="TERM:QUIT, 1:0",
                   PYINIT_REMAP_EXIT="3,4 5", PYINIT_PDEATHSIG="usr1", PYINIT_WARN_REAPED="On",
                   PYINIT_GRACE="8", PYINIT_DRAIN="0.5", PYINIT_TERM_DELAY="5", PYINIT_EXIT_REPORT="fd:1")
    config = parse(["x"], **environ)
    assert (config.verbosity, config.single_child, config.warn_reaped, config.pdeathsig) == (log.DEBUG, True, True, USR1)
    assert config.rewrite == {TERM: QUIT, HUP: 0} and config.remap_exit == {3, 4, 5}
    assert (config.grace, config.drain, config.term_delay, config.exit_report) == (8.0, 0.5, 5.0, "fd:1")
    config = parse(["-q", "-r", "TERM:INT", "-e", "9", "-p", "HUP", "--grace", "1", "x"], **environ)
    assert (config.verbosity, config.pdeathsig, config.grace) == (log.ERROR, HUP, 1.0)
    assert config.rewrite == {TERM: INT, HUP: 0} and config.remap_exit == {3, 4, 5, 9}


def test_compatibility_variables():
    assert parse(["x"], TINI_VERBOSITY="0").verbosity == log.ERROR
    assert parse(["x"], TINI_VERBOSITY="0", PYINIT_VERBOSITY="2").verbosity == log.INFO
    assert parse(["x"], TINI_VERBOSITY="99").verbosity == log.DEBUG  # tini takes any number: the highest level
    assert parse(["x"], DUMB_INIT_SETSID=" 0 ").single_child
    assert not parse(["x"], DUMB_INIT_SETSID="1").single_child


@pytest.mark.parametrize("variable, value", [
    ("PYINIT_VERBOSITY", "-1"), ("PYINIT_VERBOSITY", "99"), ("PYINIT_VERBOSITY", "\u30002"), ("PYINIT_VERBOSITY", "\u0663"),
    ("PYINIT_SINGLE_CHILD", "maybe"), ("PYINIT_SINGLE_CHILD", "\u3000yes"), ("PYINIT_SINGLE_CHILD", "\u0130"),
    ("PYINIT_WARN_REAPED", "2"), ("PYINIT_REWRITE", "TERM"), ("PYINIT_REWRITE", "TERM:QUIT\u3000HUP:0"),
    ("PYINIT_REMAP_EXIT", "3\u30004"), ("PYINIT_PDEATHSIG", "\u017figterm"),
])
def test_bad_environment_names_the_variable(variable, value):
    assert refused(["x"], **{variable: value}).startswith(variable + "=")


def test_help_names_the_limit_the_parser_enforces():
    from pyinit.usage import HELP

    assert "0 to %d" % MAX_SECONDS in HELP


def test_help_and_version_are_returned_as_text():
    assert cli.parse(["-h", "x"], {}).startswith("usage: pyinit")
    assert cli.parse(["--version"], {}).startswith("pyinit ")
    assert cli.parse(["-vh"], {}).startswith("usage:")  # in a cluster, before any command
    assert "unknown option '-x'" in refused(["-x", "-h"])  # the whole line is read first


@pytest.mark.parametrize("argv, words", [
    ([], "no command given"),
    (["-v"], "no command given"),
    (["--"], "no command given"),
    (["-x", "c"], "unknown option '-x'"),
    (["--bogus=1", "c"], "unknown option '--bogus'"),
    (["--single-child=yes", "c"], "takes no value"),
    (["-r"], "needs a value"),
    (["--grace"], "needs a value"),
    (["--hostname", "h", "c"], "only applies with --unshare"),
    (["--ipc", "c"], "only applies with --unshare"),
    (["--net", "c"], "only applies with --unshare"),
    (["--unshare", "--net=1", "c"], "takes no value"),
    (["--unshare", "--hostname", "", "c"], "1 to 64 bytes"),
    (["--unshare", "--hostname", "h" * 65, "c"], "1 to 64 bytes"),
    (["--unshare", "--hostname", "\u00e9" * 33, "c"], "1 to 64 bytes"),  # 66 bytes in UTF-8
])
def test_usage_errors(argv, words):
    assert words in refused(argv)


def test_launcher_options():
    config = parse(["--unshare", "--user", "--no-mount-proc", "--hostname", "box", "--ipc", "--net", "x"])
    assert (config.unshare, config.user_namespace, config.mount_proc, config.hostname, config.ipc, config.net) == (
        True, True, False, "box", True, True)


# --- signal specs -------------------------------------------------------------------------------


@pytest.mark.parametrize("text, number", [
    ("15", TERM), (" 15 ", TERM), ("TERM", TERM), ("SIGTERM", TERM), ("term", TERM), ("sigTerm", TERM),
    ("SIGIOT", signal.SIGABRT), ("CLD", signal.SIGCHLD), ("POLL", signal.SIGIO),
    ("RTMIN", RTMIN), ("SIGRTMIN+0", RTMIN), ("rtmin+3", RTMIN + 3), ("RTMIN+%d" % (RTMAX - RTMIN), RTMAX),
    ("RTMAX", RTMAX), ("SIGRTMAX-1", RTMAX - 1), ("RTMAX-%d" % (RTMAX - RTMIN), RTMIN), (str(RTMAX), RTMAX),
    ("KILL", signal.SIGKILL), ("9", signal.SIGKILL),
])
def test_signal_specs(text, number):
    assert signals.parse(text) == number


@pytest.mark.parametrize("text", [
    "", " ", "0", "-15", "+15", "65", "32", "33", "99999999999999999999", "NOPE", "SIG", "SIGSIGTERM",
    "RTMIN+", "RTMIN+%d" % (RTMAX - RTMIN + 1), "RTMIN-1", "RTMAX+1", "RTMIN+-1", "RTMIN + 1",
    "SIG_IGN", "SIG_DFL", "SIGRTMIN+\u0663", "\u017figterm", "\u017fIGTERM", "\u00b2", "\u0661\u0665", "TERM\u3000",
    "\udcff", "TE\x00RM",
])
def test_signal_specs_refused(text):
    with pytest.raises(ValueError):
        signals.parse(text)


def test_zero_only_where_allowed():
    assert signals.parse("0", allow_zero=True) == 0
    assert signals.parse(" 00 ", allow_zero=True) == 0
    with pytest.raises(ValueError):
        signals.parse("0")


@pytest.mark.parametrize("spec, pair", [
    ("15:3", (TERM, QUIT)), ("TERM:QUIT", (TERM, QUIT)), ("SIGHUP:0", (HUP, 0)), ("RTMIN+1:usr1", (RTMIN + 1, USR1)),
    ("USR1:KILL", (USR1, signal.SIGKILL)),  # any signal may be sent; only the source must be one that is forwarded
    ("INT:INT", (INT, INT)),
])
def test_rewrite_specs(spec, pair):
    assert signals.parse_rewrite(spec) == pair


@pytest.mark.parametrize("spec, words", [
    ("15", "not of the form"), ("", "not of the form"), ("15:3:1", "not a signal"), (":3", "not a signal"),
    ("15:", "not a signal"), ("CHLD:TERM", "never forwarded"), ("KILL:TERM", "never forwarded"),
    ("STOP:0", "never forwarded"), ("0:15", "not a signal"), ("RTMIN+\u0663:USR1", "ASCII only"),
    ("\u017figterm:0", "ASCII only"),
])
def test_rewrite_specs_refused(spec, words):
    with pytest.raises(ValueError) as raised:
        signals.parse_rewrite(spec)
    assert words in str(raised.value)


def test_names():
    assert signals.name(TERM) == "SIGTERM"
    assert signals.name(signal.SIGABRT) == "SIGABRT"  # never the alias SIGIOT
    assert signals.name(signal.SIGCHLD) == "SIGCHLD"
    assert signals.name(RTMIN) == "SIGRTMIN" and signals.name(RTMAX) == "SIGRTMAX"
    assert signals.name(RTMIN + 1) == "SIGRTMIN+1" and signals.name(RTMAX - 1) == "SIGRTMAX-1"
    assert signals.name(99) == "signal 99"
    for number in signals.VALID:  # every name printed reads back as its number
        assert signals.parse(signals.name(number)) == number
