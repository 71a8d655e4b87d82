"""`pyinit-check`: does a command stop cleanly on a signal? For CI jobs in any language.

    pyinit-check --ready-port 8080 --within 5 --no-leftovers --junit report.xml -- ./my-server

Starts the command in a pyinit.Sandbox, waits until it is ready, sends the
signal (SIGTERM by default) to the sandbox's PID 1 as `docker stop` does, and
checks that the command exits within the time, with the expected code, and
(with --no-leftovers) that nothing of it was left running when it exited.
One verdict line per check; on failure the process tree and the output tail.
`--json -` writes the JSON result to standard output, after those lines.

Exit status: 0 when every check holds, 1 when one fails, 125 for a usage
error (a report file that cannot be written among them: the files are opened
before the command starts), for a command that never became ready, and for a
check that could not be made or reported (one line `pyinit-check: ...` says
why). --signal STOP and KILL are refused: sent from outside, they act on the
sandbox's PID 1 (pyinit), not on the command. Interrupted (SIGINT), it tears
the sandbox down and dies of SIGINT, as util-linux's wrappers do.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import re
import signal
import stat
import sys
import time
from typing import List, NoReturn, Optional, Sequence

from pyinit import signals
from pyinit.sandbox import CommandExited, Process, Result, Sandbox, SandboxError, TimeoutExpired, signal_number
from pyinit.testing import describe, exited_before, format_processes, how_it_ended

EXIT_FAILED = 1
EXIT_USAGE = 125  # as pyinit's own failures: the check could not be made
EXIT_INTERRUPTED = 128 + signal.SIGINT  # main()'s status after a Ctrl-C; run() dies of SIGINT instead
_END_TIMEOUT = 30.0
# The two signals the kernel delivers to a namespace's PID 1 from outside whatever it does: they act
# on pyinit, never reach the command, and so cannot tell anything about it.
_UNCHECKABLE = {
    signal.SIGSTOP: "it would stop pyinit itself (the sandbox's PID 1), not the service: use TSTP",
    signal.SIGKILL: "it would kill the sandbox's PID 1 and every member at once: there is nothing to check",
}


class _Usage(Exception):
    """A usage error: the message, and whether to point at --help."""

    def __init__(self, message: str, hint: bool = True) -> None:
        super().__init__(message + (" (see pyinit-check --help)" if hint else ""))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _Usage(message)


def _parser() -> _Parser:
    parser = _Parser(prog="pyinit-check", description=__doc__.split("\n\n")[0],
                     usage="pyinit-check [OPTIONS] -- COMMAND [ARG...]")
    ready = parser.add_mutually_exclusive_group()
    ready.add_argument("--ready-output", metavar="REGEX",
                       help="ready once the command's output (stdout or stderr) matches REGEX")
    ready.add_argument("--ready-port", metavar="N", type=int, help="ready once 127.0.0.1:N accepts a connection")
    ready.add_argument("--ready-path", metavar="P", help="ready once the path P exists")
    parser.add_argument("--ready-timeout", metavar="S", type=float, default=30.0,
                        help="seconds to wait for readiness (default 30)")
    parser.add_argument("--signal", metavar="SIG", default="TERM", help="the signal to send (default TERM)")
    parser.add_argument("--within", metavar="S", type=float, default=10.0,
                        help="seconds from the signal to the command's exit (default 10)")
    parser.add_argument("--expect-exit", metavar="CODE", type=int, default=0,
                        help="the expected exit code, 128+N for death by signal N (default 0)")
    parser.add_argument("--no-leftovers", action="store_true",
                        help="check that nothing of the command was left running when it exited")
    parser.add_argument("--junit", metavar="FILE", help="write the verdicts as JUnit XML")
    parser.add_argument("--json", metavar="FILE",
                        help="write the result as JSON (-: to standard output, after the verdicts)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command and its arguments, after --")
    return parser


class Check:
    """One verdict: a name, whether it held, and the line that says so."""

    def __init__(self, name: str, passed: bool, message: str) -> None:
        self.name, self.passed, self.message = name, passed, message

    def line(self) -> str:
        return "%s  %s" % ("PASS" if self.passed else "FAIL", self.message)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """pyinit-check with these arguments; the exit status (EXIT_INTERRUPTED after a Ctrl-C)."""
    try:
        options = _parse(list(sys.argv[1:] if argv is None else argv))
    except _Usage as problem:
        print("pyinit-check: %s" % problem, file=sys.stderr)
        return EXIT_USAGE
    started = time.time()
    try:
        outcome = _check(options)
    except KeyboardInterrupt:  # on its way here it left the `with` block, which tore the sandbox down
        print("pyinit-check: interrupted", file=sys.stderr)
        outcome = _Outcome(EXIT_INTERRUPTED, [], None, "interrupted")
    try:
        _write_reports(options, time.time() - started, outcome)
    except _WriteFailed as problem:
        print("pyinit-check: %s" % problem, file=sys.stderr)
        return EXIT_INTERRUPTED if outcome.status == EXIT_INTERRUPTED else EXIT_USAGE
    return outcome.status


class _Outcome:
    """How a run ended: the exit status, the verdicts, the command's Result once it has ended,
    and the error that stopped the check (None when the checks were made)."""

    def __init__(self, status: int, checks: List[Check], result: Optional[Result], error: Optional[str]) -> None:
        self.status, self.checks, self.result, self.error = status, checks, result, error


class _NotReady(Exception):
    """The command never became ready: why (the first line, then the details), and its Result if it has exited."""

    def __init__(self, reason: str, result: Optional[Result] = None) -> None:
        super().__init__(reason)
        self.reason, self.result = reason, result


def _check(options: argparse.Namespace) -> _Outcome:
    """Start the command, wait until it is ready, signal it, and print the verdicts (or why there are none)."""
    try:
        with Sandbox(options.command) as box:
            _wait_until_ready(box, options)
            checks, result, tree = _stop_and_check(box, options)
    except _NotReady as failure:
        print("pyinit-check: %s" % failure.reason, file=sys.stderr)
        return _Outcome(EXIT_USAGE, [], failure.result, failure.reason)
    except (SandboxError, OSError) as problem:  # a wait that ran out, the system refusing something
        print("pyinit-check: %s" % _first_line(problem), file=sys.stderr)
        return _Outcome(EXIT_USAGE, [], None, str(problem))
    for check in checks:
        print(check.line())
    failed = not all(check.passed for check in checks)
    if failed:
        print(describe(result, tree=tree))
    return _Outcome(EXIT_FAILED if failed else 0, checks, result, None)


def _first_line(problem: Exception) -> str:
    """The message's first line: the processes a TimeoutExpired lists after it go to the reports, not stderr."""
    line = (str(problem).splitlines() or [type(problem).__name__])[0]
    return line[:-len("; the processes:")] if line.endswith("; the processes:") else line


def _parse(argv: List[str]) -> argparse.Namespace:
    options = _parser().parse_args(argv)
    command = options.command
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise _Usage("no command given (put it after --)")
    options.command = command
    try:
        options.signo = signal_number(options.signal)
    except ValueError as problem:
        raise _Usage("--signal: %s" % problem) from None
    if options.signo in _UNCHECKABLE:
        raise _Usage("--signal %s: %s" % (signals.name(options.signo), _UNCHECKABLE[options.signo]), hint=False)
    _check_ranges(options)
    if options.ready_output is not None:
        try:
            options.ready_regex = re.compile(options.ready_output)
        except re.error as problem:
            raise _Usage("--ready-output: not a regular expression: %s" % problem) from None
    _open_reports(options)  # last: no other usage error can leave a file behind
    return options


def _open_reports(options: argparse.Namespace) -> None:
    """options.json_report and options.junit_report: open now, so that a path that cannot be
    written is refused before the command runs, not found out after it."""
    options.json_report = options.junit_report = None
    try:
        if options.json is not None:
            options.json_report = _StandardOutput() if options.json == "-" else _Report("--json", options.json)
        if options.junit is not None:
            options.junit_report = _Report("--junit", options.junit)
    except _Usage:
        if options.json_report is not None:
            options.json_report.discard()
        raise


class _WriteFailed(Exception):
    """A report could not be written at the end (a full disk): the message says which and why."""


class _Report:
    """A file that --json or --junit names, opened (not yet truncated) when the options are read."""

    def __init__(self, flag: str, path: str) -> None:
        self.name = "%s %s" % (flag, path)
        self.path = path
        self.created = not os.path.lexists(path)
        try:
            # No O_TRUNC: a run refused for another reason leaves an old report as it was.
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as problem:
            raise _Usage("cannot write %s: %s" % (self.name, problem.strerror), hint=False) from None

    def write(self, data: bytes) -> None:
        try:
            with open(self.fd, "wb") as file:
                if stat.S_ISREG(os.fstat(self.fd).st_mode):  # not /dev/stdout or a pipe: those cannot be truncated
                    file.truncate(0)
                file.write(data)
        except OSError as problem:
            raise _WriteFailed("cannot write %s: %s" % (self.name, problem.strerror)) from None

    def discard(self) -> None:
        """Close it, and remove it if it is ours."""
        os.close(self.fd)
        if self.created:
            os.unlink(self.path)


class _StandardOutput:
    """`--json -`: the report goes to standard output, after the verdict lines."""

    def write(self, data: bytes) -> None:
        try:
            sys.stdout.flush()  # the verdicts first
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        except OSError as problem:
            raise _WriteFailed("cannot write --json -: %s" % problem.strerror) from None

    def discard(self) -> None:
        pass


# Whole-number options and what they may be: (attribute, lowest, highest, what it is).
_RANGES = [("ready_port", 1, 65535, "a TCP port"), ("expect_exit", 0, 255, "an exit code")]


def _check_ranges(options: argparse.Namespace) -> None:
    for name, low, high, what in _RANGES:
        value = getattr(options, name)
        if value is not None and not low <= value <= high:
            raise _Usage("--%s %d: not %s (%d to %d)" % (name.replace("_", "-"), value, what, low, high))
    for name in ("ready_timeout", "within"):
        seconds = getattr(options, name)
        if not 0 <= seconds < math.inf:  # nan fails every comparison
            raise _Usage("--%s %g: not a number of seconds (finite, 0 or more)" % (name.replace("_", "-"), seconds))


def _wait_until_ready(box: Sandbox, options: argparse.Namespace) -> None:
    """Return once the command is ready; raise _NotReady saying why it never was (with the tree, or
    what it left, and the output tail), with its Result when it has exited."""
    try:
        if options.ready_output is not None:
            box.wait_for_output(options.ready_regex, options.ready_timeout, stream="any")
        elif options.ready_port is not None:
            box.wait_for_port(options.ready_port, timeout=options.ready_timeout)
        elif options.ready_path is not None:
            box.wait_for_path(options.ready_path, timeout=options.ready_timeout)
    except TimeoutExpired as failure:
        raise _NotReady("never ready: %s" % failure) from None
    except CommandExited as failure:
        result = box.wait(_END_TIMEOUT)
        if not result.started:  # pyinit's own message says why (not found, not executable), as the README promises
            raise _NotReady(_why_not_run(result), result) from None
        # The first line says what was awaited; describe() says the rest, what the command left among it.
        raise _NotReady("never ready: %s\n%s" % (str(failure).splitlines()[0], describe(result)), result) from None


def _why_not_run(result: Result) -> str:
    """pyinit's own line about a command it could not start, from the captured stderr."""
    lines = [line for line in (result.stderr or "").splitlines() if line.startswith("pyinit: ")]
    return lines[-1][len("pyinit: "):] if lines else "the command never ran (exit code %d)" % result.exit_code


def _stop_and_check(box: Sandbox, options: argparse.Namespace) -> "tuple[List[Check], Result, Optional[str]]":
    name = signals.name(options.signo)
    sent = time.time()
    box.send_signal(options.signo)
    before = exited_before(box, sent)
    if box.result is not None and not box.result.started:
        raise _NotReady(_why_not_run(box.result), box.result)
    if before is not None:  # a daemon's parent, say: it ended on its own, and stopped on nothing
        result = box.wait(_END_TIMEOUT)
        checks = [Check("stops within %g s of %s" % (options.within, name), False,
                        "had already exited, %s, %.2f s before %s: it did not stop on it"
                        % (how_it_ended(result), before, name))]
        if options.no_leftovers:
            checks.append(_leftovers_check(result.leftovers))
        return checks, result, None
    tree = None
    stopped = box.wait_for_exit(options.within)
    if not stopped:
        tree = box.tree()
        box.kill_command()  # so pyinit writes its report, which says what it forwarded
    result = box.wait(_END_TIMEOUT)
    took = result.stop_duration or 0.0
    checks = [Check("stops within %g s of %s" % (options.within, name), stopped,
                    "stopped %.2f s after %s (limit %g s)" % (took, name, options.within) if stopped else
                    "still running %g s after %s: SIGKILLed" % (options.within, name))]
    if stopped:
        checks.append(Check("exit code %d" % options.expect_exit, result.exit_code == options.expect_exit,
                            "%s, expected %d" % (how_it_ended(result), options.expect_exit)))
    if options.no_leftovers:
        checks.append(_leftovers_check(result.leftovers))
    return checks, result, tree


def _leftovers_check(left: Optional[List[Process]]) -> Check:
    """--no-leftovers: `left` is None when not known (pyinit wrote no exit report), which cannot pass."""
    if left is None:
        return Check("no leftovers", False, "leftovers unknown: pyinit wrote no exit report")
    if not left:
        return Check("no leftovers", True, "nothing left running when it exited")
    return Check("no leftovers", False, "left running when it exited: %s"
                 % "; ".join("%s (PID %d)" % (p.command, p.pid) for p in left))


def _write_reports(options: argparse.Namespace, seconds: float, outcome: _Outcome) -> None:
    checks, result, error = outcome.checks, outcome.result, outcome.error
    if options.json_report is not None:
        text = json.dumps(_as_json(options, checks, result, error), indent=1, sort_keys=True) + "\n"
        options.json_report.write(text.encode())
    if options.junit_report is not None:
        options.junit_report.write(_as_junit(options, seconds, checks, result, error))


def _as_json(options: argparse.Namespace, checks: List[Check], result: Optional[Result],
             error: Optional[str]) -> dict:
    return {
        "command": options.command,
        "passed": error is None and all(check.passed for check in checks),
        "error": error,
        "checks": [{"name": c.name, "passed": c.passed, "message": c.message} for c in checks],
        "exit_code": None if result is None else result.exit_code,
        "signal": None if result is None else result.signal,
        "stop_duration": None if result is None else result.stop_duration,
        "leftovers": _processes_json(None if result is None else result.leftovers),  # null: not known
        "report": None if result is None else result.report,
    }


def _processes_json(processes: Optional[List[Process]]) -> Optional[List[dict]]:
    """The JSON entries of processes (the leftovers); None, "unknown", stays None."""
    if processes is None:
        return None
    return [{"pid": p.pid, "ppid": p.ppid, "name": p.name, "state": p.state, "argv": p.argv} for p in processes]


def _as_junit(options: argparse.Namespace, seconds: float, checks: List[Check], result: Optional[Result],
              error: Optional[str]) -> bytes:
    import xml.etree.ElementTree as ET

    command = " ".join(options.command)
    failures = sum(not check.passed for check in checks)
    suite = ET.Element("testsuite", name="pyinit-check", tests=str(max(len(checks), 1)), failures=str(failures),
                       errors=str(int(error is not None)), time="%.3f" % seconds)
    details = describe(result) if result is not None else ""
    if error is not None:
        case = ET.SubElement(suite, "testcase", classname="pyinit-check", name="%s becomes ready" % command)
        ET.SubElement(case, "error", message=error.splitlines()[0]).text = error
    for check in checks:
        case = ET.SubElement(suite, "testcase", classname="pyinit-check", name="%s %s" % (command, check.name))
        if not check.passed:
            ET.SubElement(case, "failure", message=check.message).text = check.message + "\n" + details
    if result is not None and result.leftovers:
        ET.SubElement(suite, "system-out").text = format_processes(result.leftovers)
    root = ET.Element("testsuites")
    root.append(suite)
    for element in root.iter():
        element.text = element.text and _xml_safe(element.text)
        for key, value in element.attrib.items():
            element.set(key, _xml_safe(value))
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


# What XML 1.0 forbids even as a &#...; reference: control characters but tab, newline and carriage
# return (a service's colours are ESC sequences), lone surrogates (a command line that is not UTF-8,
# as Python decodes it), U+FFFE and U+FFFF. ElementTree writes them as they are: no parser reads that.
_XML_FORBIDDEN = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_safe(text: str) -> str:
    """`text` with each character XML forbids written as Python escapes it (ESC as \\x1b), visible in a CI's view."""
    return _XML_FORBIDDEN.sub(lambda match: ascii(match.group())[1:-1], text)


def run() -> None:
    """The console script, and `python -m pyinit.check`."""
    if isinstance(sys.stdout, io.TextIOWrapper) and sys.stdout.errors == "strict":
        # A command line is bytes: one that is not UTF-8 (a leftover's) is decoded with surrogates,
        # which a strict stdout (a UTF-8 locale but C.UTF-8) refuses to write. Written as \udcff instead.
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        status = main()
    except KeyboardInterrupt:  # outside the check: while reading the options or writing the reports
        print("pyinit-check: interrupted", file=sys.stderr)
        status = EXIT_INTERRUPTED
    if status == EXIT_INTERRUPTED:
        _die_of_sigint()
    sys.exit(status)


def _die_of_sigint() -> NoReturn:
    """Die of SIGINT, as util-linux's wrappers do: a shell stops its loop when a command dies of
    SIGINT, not when it exits 130."""
    sys.stdout.flush()  # the default action ends the process without Python's own flushing
    sys.stderr.flush()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGINT)
    sys.exit(EXIT_INTERRUPTED)  # only if SIGINT is blocked: it stays pending


if __name__ == "__main__":
    run()
