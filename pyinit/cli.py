"""The command line and the PYINIT_* environment, turned into a Config.

Parsing is written by hand rather than with argparse or getopt: both import
enough of the standard library to cost more start-up time than all of pyinit
(the benchmark measures it), and the grammar is small. It is getopt's: short
options cluster (`-vvw`, `-e143`, `-r15:3`), long options take `--opt=V` or
`--opt V`, and parsing stops at `--` or at the first non-option, so
`pyinit echo -v` passes `-v` to echo.

Flags of tini and dumb-init are accepted with their meaning, so switching is
a matter of changing the program name. The environment gives defaults that a
container image can set without touching its ENTRYPOINT; flags override it.
"""

import os
import sys

TYPE_CHECKING = False  # mypy reads the block below; at run time `typing` would cost start-up
if TYPE_CHECKING:
    from typing import Any

    from pyinit.launcher.namespace import Completion

from pyinit import __version__, log, signals
from pyinit.config import EXIT_USAGE, MAX_FD, MAX_SECONDS, Config


class UsageError(Exception):
    """A bad command line or environment: one line for the user, exit 125."""


# short option -> (long name, takes a value); every short option has a long form.
_OPTIONS = {
    "c": ("single-child", False),
    "g": ("process-group", False),
    "r": ("rewrite", True),
    "e": ("remap-exit", True),
    "p": ("pdeathsig", True),
    "s": ("subreaper", False),
    "w": ("warn-reaped", False),
    "v": ("verbose", False),
    "q": ("quiet", False),
    "V": ("version", False),
    "h": ("help", False),
}
# Options with no short form are known by their long name.
_SHUTDOWN_OPTIONS = {"grace": True, "drain": True, "settle": True, "term-delay": True, "exit-report": True}
_LAUNCHER_OPTIONS = {"unshare": False, "user": False, "no-mount-proc": False, "hostname": True, "ipc": False,
                     "net": False, "pty": False, "no-pty": False, "name": True, "bare": False}
_ENTER_OPTIONS = {"enter": True, "list": False, "json": False}
_LONG = {long_name: (short, takes_value) for short, (long_name, takes_value) in _OPTIONS.items()}
for _table in (_SHUTDOWN_OPTIONS, _LAUNCHER_OPTIONS, _ENTER_OPTIONS):
    _LONG.update((long_name, (long_name, takes_value)) for long_name, takes_value in _table.items())


def _display(option: str) -> str:
    return "-" + option if len(option) == 1 else "--" + option


def _split_options(argv: "list[str]") -> "tuple[list[tuple[str, str]], list[str]]":
    """getopt-style scan: [(option, value)], and the command.

    An option is named by its short letter, or by its long name if it has none.
    """
    options = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        index += 1
        if arg == "--":
            break
        if arg.startswith("--"):
            long_name, equals, value = arg[2:].partition("=")
            if long_name not in _LONG:
                raise UsageError("unknown option '--%s'" % long_name)
            option, takes_value = _LONG[long_name]
            if takes_value and not equals:
                if index == len(argv):
                    raise UsageError("option '--%s' needs a value" % long_name)
                value, index = argv[index], index + 1
            elif equals and not takes_value:
                raise UsageError("option '--%s' takes no value" % long_name)
            options.append((option, value))
        elif arg.startswith("-") and arg != "-":
            position = 1
            while position < len(arg):
                short = arg[position]
                position += 1
                if short not in _OPTIONS:
                    raise UsageError("unknown option '-%s'" % short)
                value = ""
                if _OPTIONS[short][1]:
                    value, position = arg[position:], len(arg)
                    if not value:
                        if index == len(argv):
                            raise UsageError("option '-%s' needs a value" % short)
                        value, index = argv[index], index + 1
                options.append((short, value))
        else:
            index -= 1
            break
    return options, argv[index:]


# Values are ASCII, like the C programs pyinit stands in for: str methods
# would otherwise take Arabic-Indic digits for numbers, the long s 'ſ' for
# an 's' once upper-cased, and U+3000 for a space.
_ASCII_SPACE = " \t\n\r\v\f"


def _trim(text: str) -> str:
    return text.strip(_ASCII_SPACE)


def _exit_code(text: str) -> int:
    digits = _trim(text)
    if not (digits.isascii() and digits.isdigit()) or int(digits) > 255:
        raise ValueError("exit code '%s' is not a number from 0 to 255" % text)
    return int(digits)


def _seconds(text: str) -> float:
    """A timer's length: a decimal number of seconds from 0 to MAX_SECONDS."""
    try:
        value = float(text) if text.isascii() and "_" not in text else -1.0
    except ValueError:
        value = -1.0
    if not 0 <= value <= MAX_SECONDS:  # nan fails both comparisons
        raise ValueError("'%s' is not a number of seconds from 0 to %d (e.g. 10 or 2.5)" % (text, MAX_SECONDS))
    return value + 0.0  # -0 becomes 0


def _exit_report(text: str) -> str:
    """A file descriptor `fd:N`, or a path made absolute now: the init moves to / before writing."""
    if text.startswith("fd:"):
        number = text[3:]
        if not (number.isascii() and number.isdigit()) or int(number) > MAX_FD:
            raise ValueError("'%s' is neither a file path nor fd:N with N from 0 to %d" % (text, MAX_FD))
        return text
    if not text:
        raise ValueError("the exit report needs a file path or fd:N")
    try:
        return os.path.abspath(text)
    except OSError:  # getcwd(3) fails when the working directory was removed
        raise ValueError("'%s' is relative and the working directory is gone: give an absolute path" % text) from None


def _flag(environ: "dict[str, str]", variable: str) -> bool:
    value = _trim(environ.get(variable, ""))
    word = value.lower() if value.isascii() else value
    if word in ("", "0", "false", "no", "off"):
        return False
    if word in ("1", "true", "yes", "on"):
        return True
    raise UsageError("%s=%s: expected 1 or 0" % (variable, environ[variable]))


def _items(text: str) -> "list[str]":
    """The items of a list separated by commas or ASCII white space."""
    for separator in "," + _ASCII_SPACE:
        text = text.replace(separator, " ")
    return [item for item in text.split(" ") if item]


_SHUTDOWN_VARIABLES = (
    ("PYINIT_GRACE", "grace", _seconds),
    ("PYINIT_DRAIN", "drain", _seconds),
    ("PYINIT_SETTLE", "settle", _seconds),
    ("PYINIT_TERM_DELAY", "term_delay", _seconds),
    ("PYINIT_EXIT_REPORT", "exit_report", _exit_report),
)


def _from_environment(environ: "dict[str, str]") -> dict:
    """The defaults the environment sets, with the variable named on error."""
    fields: dict = {}
    variable = ""
    try:
        for variable in ("TINI_VERBOSITY", "PYINIT_VERBOSITY"):
            level = _trim(environ.get(variable, ""))
            if level:
                # tini's own variable is clamped, as tini takes any number; pyinit's is held to its levels
                if not (level.isascii() and level.isdigit()) or (variable == "PYINIT_VERBOSITY" and int(level) > 3):
                    raise ValueError("expected a number from 0 to 3")
                fields["verbosity"] = min(int(level), log.DEBUG)
        variable = "PYINIT_REWRITE"
        fields["rewrite"] = dict(signals.parse_rewrite(item) for item in _items(environ.get(variable, "")))
        variable = "PYINIT_REMAP_EXIT"
        fields["remap_exit"] = {_exit_code(item) for item in _items(environ.get(variable, ""))}
        variable = "PYINIT_PDEATHSIG"
        if _trim(environ.get(variable, "")):
            fields["pdeathsig"] = signals.parse(environ[variable])
        for variable, field, parse_value in _SHUTDOWN_VARIABLES:
            if _trim(environ.get(variable, "")):
                fields[field] = parse_value(_trim(environ[variable]))
    except ValueError as problem:
        raise UsageError("%s=%s: %s" % (variable, environ[variable], problem)) from None
    # dumb-init's DUMB_INIT_SETSID=0: no session of its own, signals to the child alone (-c); 1 is its default.
    setsid = not _trim(environ.get("DUMB_INIT_SETSID", "")) or _flag(environ, "DUMB_INIT_SETSID")
    fields["single_child"] = _flag(environ, "PYINIT_SINGLE_CHILD") or not setsid
    fields["warn_reaped"] = _flag(environ, "PYINIT_WARN_REAPED")
    if environ.get("PYINIT_PTY", "").strip():  # unset: the launcher looks at its standard input
        fields["pty"] = _flag(environ, "PYINIT_PTY")
    if _trim(environ.get("PYINIT_NAME", "")):  # checked in parse(), where it is known to be the launcher's
        fields["name"] = environ["PYINIT_NAME"]
    return fields


def parse(argv: "list[str]", environ: "dict[str, str]") -> "Config | str":
    """argv (without the program name) + environment -> Config.

    Returns the text to print instead when --help or --version was asked for.
    Raises UsageError for anything it cannot make sense of.
    """
    fields: "dict[str, Any]" = {"verbosity": log.WARNING, "pdeathsig": 0, "grace": None, "drain": None, "settle": 0.0,
              "term_delay": 0.0,
              "exit_report": None, "unshare": False, "user_namespace": False, "mount_proc": True,
              "hostname": None, "ipc": False, "net": False, "pty": None, "name": None, "enter": None,
              "listing": None, "bare": False}
    fields.update(_from_environment(environ))
    options, command = _split_options(argv)
    verbose_flags = 0
    for option, value in options:
        try:
            if option == "h":
                from pyinit.usage import HELP  # read only when asked for

                return HELP
            if option == "V":
                return "pyinit %s\n" % __version__
            if option == "c":
                fields["single_child"] = True
            elif option == "r":
                source, target = signals.parse_rewrite(value)
                fields["rewrite"][source] = target
            elif option == "e":
                fields["remap_exit"].add(_exit_code(value))
            elif option == "p":
                fields["pdeathsig"] = signals.parse(value)
            elif option == "w":
                fields["warn_reaped"] = True
            elif option == "v":
                verbose_flags += 1
                fields["verbosity"] = min(log.WARNING + verbose_flags, log.DEBUG)
            elif option == "q":
                fields["verbosity"] = log.ERROR
            elif option in ("grace", "drain", "settle", "term-delay"):
                fields[option.replace("-", "_")] = _seconds(value)
            elif option == "exit-report":
                fields["exit_report"] = _exit_report(value)
            elif option == "unshare":
                fields["unshare"] = True
            elif option == "user":
                fields["user_namespace"] = True
            elif option == "no-mount-proc":
                fields["mount_proc"] = False
            elif option == "hostname":
                fields["hostname"] = _hostname(value)
            elif option == "ipc":
                fields["ipc"] = True
            elif option == "net":
                fields["net"] = True
            elif option in ("pty", "no-pty"):
                fields["pty"] = option == "pty"
            elif option == "name":
                fields["name"] = _name(value)
            elif option == "bare":
                fields["bare"] = True
            elif option == "enter":
                fields["enter"] = _enter_target(value)
            elif option == "list":
                fields["listing"] = fields["listing"] or "table"
            elif option == "json":
                fields["listing"] = "json"
            # -g and -s ask for what pyinit does anyway.
        except ValueError as problem:
            raise UsageError("option '%s': %s" % (_display(option), problem)) from None
    fields["remap_exit"] = frozenset(fields["remap_exit"])
    given = {option for option, _ in options}
    if "list" in given or "json" in given:
        return _listing(given, command, fields)
    if fields["enter"] is not None:
        _check_enter(given)
        fields["name"] = None  # PYINIT_NAME is the launcher's
    elif not fields["unshare"]:
        for option in sorted(given & set(_LAUNCHER_OPTIONS)):
            raise UsageError("option '--%s' only applies with --unshare" % option)
        fields["name"] = None  # PYINIT_NAME is the launcher's: an init ignores it
    elif "name" not in given and fields["name"] is not None:
        try:
            _name(fields["name"])
        except ValueError as problem:
            raise UsageError("PYINIT_NAME=%s: %s" % (fields["name"], problem)) from None
    if fields["bare"]:
        for option in sorted(given & _NEED_AN_INIT):
            raise UsageError("option '%s' needs an init, and --bare runs none" % _display(option))
        fields["pty"] = False  # the pty's relay works with an init (terminal.py); a bare command has none
    if not command:
        raise UsageError("no command given")
    return Config(command=tuple(command), **fields)


# What only an init does: reap and wait for what the command leaves, and stand between it and a pty.
_NEED_AN_INIT = {"drain", "settle", "w", "pty"}


# What --enter does not do: it makes no namespace, and runs no init (no timers, no report).
_NOT_WITH_ENTER = set(_SHUTDOWN_OPTIONS) | set(_LAUNCHER_OPTIONS) - {"pty", "no-pty"}
_WITH_LIST = {"list", "json", "v", "q"}  # (-h and -V have returned before)
PID_MAX_LIMIT = 1 << 22  # the kernel's highest pid_max: 4194304


def _check_enter(given: "set[str]") -> None:
    for option in sorted(given & _NOT_WITH_ENTER):
        raise UsageError("option '%s' does not apply with --enter" % _display(option))


def _listing(given: "set[str]", command: "list[str]", fields: "dict[str, Any]") -> Config:
    if "list" not in given:
        raise UsageError("option '--json' only applies with --list")
    for option in sorted(given - _WITH_LIST):
        raise UsageError("option '%s' does not apply with --list" % _display(option))
    if command:
        raise UsageError("--list takes no command (to run one inside a namespace: --enter NAME -- COMMAND)")
    fields.update(name=None, enter=None)
    return Config(command=(), **fields)


def _name(text: str) -> str:
    from pyinit.launcher import registry  # only where a name is given

    return registry.check_name(text)


def _enter_target(text: str) -> str:
    """A PID (digits), or a name."""
    if text.isascii() and text.isdigit():
        if not 0 < int(text) <= PID_MAX_LIMIT:
            raise ValueError("'%s' is no PID (1 to %d)" % (text, PID_MAX_LIMIT))
        return str(int(text))
    return _name(text)


def _hostname(text: str) -> str:
    if not 0 < len(os.fsencode(text)) <= 64:
        raise ValueError("hostname %r must be 1 to 64 bytes long" % text)
    return text


def main(argv: "list[str]") -> int:
    """Run pyinit with `argv` (without the program name); return its exit code."""
    try:
        config = parse(argv, os.environ)  # type: ignore[arg-type]
    except UsageError as problem:
        log.error("%s (see 'pyinit --help')", problem)
        return EXIT_USAGE
    if isinstance(config, str):
        try:
            os.write(1, config.encode())
        except OSError:
            return EXIT_USAGE
        return 0
    return start(config)


def start(config: Config, complete: "Completion | None" = None) -> int:
    """Do what `config` asks for; return the exit code. A bug of ours is one line, never a traceback.

    `complete` is passed on to namespace.launch: the test side's fork server
    (forkserver/server.py) starts its spare launchers here.
    """
    log.set_level(config.verbosity)
    try:
        if config.listing is not None:
            from pyinit.launcher import registry

            return registry.show(config.listing == "json")
        if config.enter is not None:
            from pyinit.launcher import enter

            return enter.enter(config)
        if config.unshare:
            from pyinit.launcher import namespace

            return namespace.launch(config, complete)
        from pyinit import init

        return init.run(config)
    except Exception as failure:  # a bug of ours: one line, never a traceback
        log.error("internal error: %r", failure)
        return EXIT_USAGE


def _hold_standard_streams() -> None:
    """Open /dev/null on each of descriptors 0, 1 and 2 that the caller left closed, close-on-exec.

    The kernel gives a new descriptor the lowest free number: left free, 0
    would be whatever pyinit opens first (the launcher's signalfd, which its
    relay then read as the user's input, and waited on for ever). Held by
    /dev/null, the numbers mean what they mean to everyone; close-on-exec,
    the placeholders stay pyinit's, and the command finds the streams closed,
    as the caller left them. Three fstat(2) calls where all are open.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            try:
                os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)  # takes `fd`: every number below it is open
            except OSError:  # no /dev/null, or no descriptor left: nothing can take the number either
                return


def run() -> None:
    """The `pyinit` command and `python -m pyinit`: exit with main()'s code at once, skipping interpreter finalisation.

    pyinit holds no buffered output and no resources that need closing, and
    when it is PID 1 its exit is what tears the namespace down: there is no
    reason to spend milliseconds on garbage collection first. It lives here,
    not in __main__.py, so that bin/pyinit imports one module fewer. Its
    first act, before anything of pyinit opens a descriptor, is to hold the
    standard streams' numbers.
    """
    _hold_standard_streams()
    os._exit(main(sys.argv[1:]))
