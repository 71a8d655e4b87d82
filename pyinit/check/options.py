"""`pyinit-check`'s command line: argv -> options, every bad value refused before anything runs.

A refusal is a Usage exception: check/__init__.py prints its one line `pyinit-check:
...` and exits 125. The report files are opened here, last, so that a path
that cannot be written is refused before the command starts and no other
refusal leaves a file behind.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import signal
from typing import Dict, List, NoReturn

from pyinit import signals
from pyinit.check import traffic
from pyinit.config import MAX_SECONDS
from pyinit.check.reports import Report, ReportRefused, StandardOutput
from pyinit.sandbox import signal_number
from pyinit.sandbox.launch import SETTLE
from pyinit.sandbox.ready import http_target

# The two signals the kernel delivers to a namespace's PID 1 from outside whatever it does: they act
# on pyinit, never reach the command, and so cannot tell anything about it.
_UNCHECKABLE = {
    signal.SIGSTOP: "it would stop pyinit itself (the sandbox's PID 1), not the service: use TSTP",
    signal.SIGKILL: "it would kill the sandbox's PID 1 and every member at once: there is nothing to check",
}


class Usage(Exception):
    """A usage error: the message, and whether to point at --help."""

    def __init__(self, message: str, hint: bool = True) -> None:
        super().__init__(message + (" (see pyinit-check --help)" if hint else ""))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise Usage(message)


def parser(description: str) -> argparse.ArgumentParser:
    parser = _Parser(prog="pyinit-check", description=description,
                     usage="pyinit-check [OPTIONS] -- COMMAND [ARG...]")
    ready = parser.add_mutually_exclusive_group()
    ready.add_argument("--ready-output", metavar="REGEX",
                       help="ready once the command's output (stdout or stderr) matches REGEX")
    ready.add_argument("--ready-port", metavar="N", type=int, help="ready once a member listens on 127.0.0.1:N")
    ready.add_argument("--ready-path", metavar="P", help="ready once the path P exists")
    ready.add_argument("--ready-http", metavar="URL",
                       help="ready once an HTTP GET of URL (http://...) answers with the --ready-status")
    parser.add_argument("--ready-status", metavar="CODE", type=int,
                        help="the HTTP status --ready-http waits for (default 200)")
    parser.add_argument("--ready-timeout", metavar="S", type=float, default=30.0,
                        help="seconds to wait for readiness (default 30)")
    parser.add_argument("--signal", metavar="SIG", default="TERM", help="the signal to send (default TERM)")
    parser.add_argument("--within", metavar="S", type=float, default=10.0,
                        help="seconds from the signal to the command's exit (default 10)")
    parser.add_argument("--expect-exit", metavar="CODE", type=int, default=0,
                        help="the expected exit code, 128+N for death by signal N (default 0)")
    parser.add_argument("--no-leftovers", action="store_true",
                        help="check that nothing of the command was left running when it exited")
    parser.add_argument("--bare", action="store_true",
                        help="no init: the command itself is PID 1 (as `docker run` without --init); also judge "
                             "the zombies it leaves unreaped, and say whether it needs an init")
    parser.add_argument("--sweep", metavar="N", type=int,
                        help="make the check N times (2 or more), the signal sent at N moments spread evenly "
                             "from the spawn to 1 s after ready")
    sandbox = parser.add_argument_group("the sandbox (pyinit.Sandbox's options)")
    sandbox.add_argument("--env", metavar="NAME=VALUE", action="append", default=[],
                         help="add NAME=VALUE to the command's environment (pyinit-check's own); repeatable")
    sandbox.add_argument("--cwd", metavar="DIR", help="the command's working directory")
    sandbox.add_argument("--grace", metavar="S", type=float,
                         help="pyinit's grace period: SIGKILL to what still runs S seconds after the signal")
    sandbox.add_argument("--settle", metavar="S", type=float, default=SETTLE,
                         help="seconds pyinit gives what the command left to exit on its own, after the command's "
                              "exit, before it lists the leftovers (default %g)" % SETTLE)
    sandbox.add_argument("--rewrite", metavar="S:R", action="append", default=[],
                         help="pyinit forwards signal S as R (names or numbers; R=0 drops S); repeatable")
    sandbox.add_argument("--single-child", action="store_true",
                         help="pyinit forwards signals to the command alone, not its process group")
    sandbox.add_argument("--network", choices=("private", "host"), default="host",
                         help="private: a network of its own, with only the loopback interface (default host)")
    traffic.add_options(parser)
    parser.add_argument("--junit", metavar="FILE", help="write the verdicts as JUnit XML")
    parser.add_argument("--json", metavar="FILE",
                        help="write the result as JSON (-: to standard output, after the verdicts)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command and its arguments, after --")
    return parser


def parse(argv: List[str], description: str) -> argparse.Namespace:
    """The options, checked; Usage for the first bad one."""
    options = parser(description).parse_args(argv)
    command = options.command
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise Usage("no command given (put it after --)")
    options.command = command
    try:
        options.signo = signal_number(options.signal)
    except ValueError as problem:
        raise Usage("--signal: %s" % problem) from None
    if options.signo in _UNCHECKABLE:
        raise Usage("--signal %s: %s" % (signals.name(options.signo), _UNCHECKABLE[options.signo]), hint=False)
    _check_ranges(options)
    if options.ready_output is not None:
        try:
            options.ready_regex = re.compile(options.ready_output)
        except re.error as problem:
            raise Usage("--ready-output: not a regular expression: %s" % problem) from None
    _check_http(options)
    traffic.check_options(options, Usage, _http_url)
    _check_sandbox(options)
    _check_bare(options)
    _open_reports(options)  # last: no other usage error can leave a file behind
    return options


# Whole-number options and what they may be: (attribute, lowest, highest, what it is).
_RANGES = [("ready_port", 1, 65535, "a TCP port"), ("expect_exit", 0, 255, "an exit code"),
           ("ready_status", 100, 599, "an HTTP status"), ("sweep", 2, None, "a number of moments")]


# The options that are seconds; pyinit's own limit for its timers (config.MAX_SECONDS) is theirs too.
_SECONDS = ("ready_timeout", "within", "grace", "settle")


def _check_ranges(options: argparse.Namespace) -> None:
    for name, low, high, what in _RANGES:
        value = getattr(options, name)
        if value is not None and not (low <= value and (high is None or value <= high)):
            limits = "%d to %d" % (low, high) if high is not None else "%d or more" % low
            raise Usage("--%s %d: not %s (%s)" % (name.replace("_", "-"), value, what, limits))
    for name in _SECONDS:
        seconds = getattr(options, name)
        flag = "--%s %g" % (name.replace("_", "-"), seconds) if seconds is not None else ""
        if seconds is not None and not 0 <= seconds < math.inf:  # nan fails every comparison
            raise Usage("%s: not a number of seconds (finite, 0 or more)" % flag)
        if seconds is not None and seconds > MAX_SECONDS:  # the clock cannot count it: refused, not cut short
            raise Usage("%s: longer than pyinit-check can wait (at most %d s, about 31 years)" % (flag, MAX_SECONDS))


def _check_http(options: argparse.Namespace) -> None:
    if options.ready_http is None:
        if options.ready_status is not None:
            raise Usage("--ready-status: only with --ready-http")
        return
    _http_url("--ready-http", options.ready_http)
    if options.ready_status is None:
        options.ready_status = 200


def _http_url(flag: str, url: str) -> None:
    """Usage unless `url` is an http:// URL as the sandbox reads it."""
    try:
        http_target(url)  # as wait_for_http reads it
        valid = not any(char.isspace() or not char.isprintable() for char in url)
    except ValueError:  # not http://, no host, a port that is not one, a bracket left open
        valid = False
    if not valid:
        raise Usage("%s %s: not an http:// URL (http://HOST[:PORT][/PATH])" % (flag, url))


def _check_sandbox(options: argparse.Namespace) -> None:
    """--env, --cwd, --rewrite: options.environment (os.environ and the --env pairs), options.rewrites."""
    options.environment = dict(os.environ)
    for pair in options.env:
        name, equals, value = pair.partition("=")
        if not equals or not name:
            raise Usage("--env %s: not NAME=VALUE" % pair)
        options.environment[name] = value
    if options.cwd is not None:
        if not os.path.exists(options.cwd):
            raise Usage("--cwd %s: no such directory" % options.cwd, hint=False)
        if not os.path.isdir(options.cwd):
            raise Usage("--cwd %s: not a directory" % options.cwd, hint=False)
        if not os.access(options.cwd, os.X_OK):
            raise Usage("--cwd %s: permission denied" % options.cwd, hint=False)
    rewrites: Dict[int, int] = {}
    for spec in options.rewrite:
        try:
            source, target = signals.parse_rewrite(spec)
        except ValueError as problem:
            raise Usage("--rewrite: %s" % problem) from None
        rewrites[source] = target
    options.rewrites = rewrites


def _check_bare(options: argparse.Namespace) -> None:
    """--bare: not with what needs an init (--single-child, --settle), nor with --sweep (its watch needs the service ready)."""
    if options.bare:
        for given, option in ((options.single_child, "--single-child"), (options.settle != SETTLE, "--settle"),
                              (options.sweep, "--sweep")):
            if given:
                raise Usage("--bare and %s: not together (%s)" % (option, _NOT_BARE[option]))


_NOT_BARE = {"--single-child": "it is an option of the init, and --bare runs none",
             "--settle": "it is an option of the init, and --bare runs none",
             "--sweep": "--bare watches the service from readiness, and a sweep signals it before"}


def _open_reports(options: argparse.Namespace) -> None:
    """options.json_report and options.junit_report: open now, so that a path that cannot be
    written is refused before the command runs, not found out after it."""
    options.json_report = options.junit_report = options.timeline_report = None
    try:
        if options.json is not None:
            options.json_report = StandardOutput() if options.json == "-" else Report("--json", options.json)
        if options.junit is not None:
            options.junit_report = Report("--junit", options.junit)
        if options.timeline is not None:
            options.timeline_report = Report("--timeline", options.timeline)
    except ReportRefused as problem:
        for report in (options.json_report, options.junit_report):
            if report is not None:
                report.discard()
        raise Usage(str(problem), hint=False) from None
