"""`pyinit-check`'s runs: one command in a Sandbox made from the options, readiness, the signal, the verdicts.

check/__init__.py makes one such run; check/sweep.py makes one per moment of a sweep.
Nothing here prints: the callers say what happened.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Callable, List, Optional

from pyinit import signals
from pyinit.sandbox import CommandExited, Process, Result, Sandbox, TimeoutExpired
from pyinit.testing import describe, exited_before, how_it_ended

if TYPE_CHECKING:
    from pyinit.sandbox.traffic import Traffic

END_TIMEOUT = 30.0  # seconds for pyinit to finish (its report) once the command has exited, beyond --settle


class Check:
    """One verdict: a name, whether it held, and the line that says so."""

    def __init__(self, name: str, passed: bool, message: str) -> None:
        self.name, self.passed, self.message = name, passed, message

    def line(self) -> str:
        return "%s  %s" % ("PASS" if self.passed else "FAIL", self.message)


class Run:
    """One run of the command: its verdicts, its Result once it has ended, the tree at a missed deadline.

    In a sweep, `ms` is the moment planned for the signal (milliseconds
    after the spawn), `sent_ms` when it went, and `before_ready` whether
    the moment came before the command was ready (then death by the signal
    itself passes the exit-code check). The single check has ms None.
    """

    def __init__(self, ms: Optional[int] = None, before_ready: bool = False) -> None:
        self.ms, self.before_ready = ms, before_ready
        self.sent_ms: Optional[float] = None
        self.checks: List[Check] = []
        self.result: Optional[Result] = None
        self.tree: Optional[str] = None
        self.traffic: Optional["Traffic"] = None  # the requests made through the signal (check/traffic.py)
        self.exit_at: Optional[float] = None  # the command's exit, in seconds on the traffic's clock
        self.notes: List[str] = []  # more details for a failure: the requests that failed
        self.bare: Optional[dict] = None  # --bare: what check/bare.py found, for the JSON report

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)

    def details(self) -> str:
        """What happened, for a failure: describe() of the Result (the tree at the deadline first)."""
        return "\n".join([describe(self.result, tree=self.tree) if self.result is not None else "", *self.notes])


class Outcome:
    """How pyinit-check ended: the exit status, its runs (one, or a sweep's), the error that stopped
    it (None when every check could be made), a sweep's readiness (ms after the spawn), and the
    signal that ended it, if one did (during the check: the error says so too)."""

    def __init__(self) -> None:
        self.status = 0
        self.runs: List[Run] = []
        self.error: Optional[str] = None
        self.ready_ms: Optional[float] = None
        self.interrupted: Optional[str] = None  # the signal that ended pyinit-check ("SIGTERM"), if one did

    def fail(self, status: int, error: str) -> None:
        self.status, self.error = status, error

    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.runs) and all(run.passed for run in self.runs)


class NotReady(Exception):
    """The command never became ready: why (the first line, then the details), and its Result if it has exited."""

    def __init__(self, reason: str, result: Optional[Result] = None) -> None:
        super().__init__(reason)
        self.reason, self.result = reason, result


def sandbox(options: argparse.Namespace) -> Sandbox:
    """The Sandbox the options describe, not yet started."""
    return Sandbox(options.command, env=options.environment, cwd=options.cwd, grace=options.grace,
                   settle=options.settle, single_child=options.single_child,
                   rewrite=options.rewrites or None, network=options.network, init=not options.bare)


def wait_until_ready(box: Sandbox, options: argparse.Namespace, run: Run) -> bool:
    """True once the command is ready. False when it exited before: the service's failure, which run's
    verdicts and Result then say. NotReady when the check cannot be made: the command never ran
    (pyinit's line says why), or the wait ran out (with the tree and the output tail)."""
    try:
        if options.ready_output is not None:
            box.wait_for_output(options.ready_regex, options.ready_timeout, stream="any")
        elif options.ready_port is not None:
            box.wait_for_port(options.ready_port, timeout=options.ready_timeout)
        elif options.ready_path is not None:
            box.wait_for_path(options.ready_path, timeout=options.ready_timeout)
        elif options.ready_http is not None:
            box.wait_for_http(options.ready_http, status=options.ready_status, timeout=options.ready_timeout)
    except TimeoutExpired as failure:
        raise NotReady("never ready: %s" % failure) from None
    except CommandExited:
        result = box.wait(options.settle + END_TIMEOUT)
        if not result.started:  # pyinit's own message says why (not found, not executable), as docs/cli.md promises
            raise NotReady(why_not_run(result), result) from None
        # A daemon's parent gone before its child was ready, a crash at start-up: the same verdicts whichever
        # came first, the exit or the readiness (stop_and_check's "had already exited" then), never the
        # check's own failure.
        run.result = result
        run.checks = [Check(_within(options), False, "exited before it was ready (while waiting for %s), %s: %s "
                            "was never sent" % (_awaited(options), how_it_ended(result), signals.name(options.signo)))]
        if options.no_leftovers:
            run.checks.append(leftovers_check(result.leftovers))
        return False
    return True


def _awaited(options: argparse.Namespace) -> str:
    """What the --ready-* option waits for, for the verdict line."""
    if options.ready_output is not None:
        return "output matching %r" % options.ready_output
    if options.ready_port is not None:
        return "a listener on port %d" % options.ready_port
    if options.ready_path is not None:
        return "the path %s" % options.ready_path
    return "an HTTP %d from %s" % (options.ready_status, options.ready_http)


def _within(options: argparse.Namespace) -> str:
    """The name of the first check: the same whether the command stopped, ran on, or had exited before."""
    return "stops within %g s of %s" % (options.within, signals.name(options.signo))


def why_not_run(result: Result) -> str:
    """pyinit's own line about a command it could not start, from the captured stderr."""
    lines = [line for line in (result.stderr or "").splitlines() if line.startswith("pyinit: ")]
    return lines[-1][len("pyinit: "):] if lines else "the command never ran (exit code %d)" % result.exit_code


def stop_and_check(box: Sandbox, options: argparse.Namespace, run: Run,
                   send: Optional[Callable[[int], float]] = None) -> None:
    """Send the signal and fill in run's verdicts, Result and tree; NotReady if the command never ran.
    `send(signo)`: sends it instead of box.send_signal, and returns the moment (time.time())."""
    name = signals.name(options.signo)
    if send is None:
        sent = time.time()
        box.send_signal(options.signo)
    else:
        sent = send(options.signo)
    within = _within(options)
    stopped = box.wait_for_exit(options.within)
    if not stopped:
        run.tree = box.tree()
        box.kill_command()  # so pyinit writes its report, which says what it forwarded
    run.result = result = box.wait(options.settle + END_TIMEOUT)
    if not result.started:
        raise NotReady(why_not_run(result), result)
    before = exited_before(result, sent, name) if stopped else None
    if before is not None:  # a daemon's parent, say: it ended on its own, and stopped on nothing
        run.checks = [Check(within, False, "had already exited, %s, %.2f s before %s: it did not stop on it"
                            % (how_it_ended(result), before, name))]
        if options.no_leftovers:
            run.checks.append(leftovers_check(result.leftovers))
        return
    took = result.stop_duration or 0.0
    run.checks = [Check(within, stopped, "stopped %.2f s after %s (limit %g s)" % (took, name, options.within)
                        if stopped else "still running %g s after %s: SIGKILLed" % (options.within, name))]
    if stopped:
        run.checks.append(_exit_check(result, options, run.before_ready))
    if options.no_leftovers:
        run.checks.append(leftovers_check(result.leftovers))


def _exit_check(result: Result, options: argparse.Namespace, before_ready: bool) -> Check:
    """The exit code is the expected one; before the command was ready (a sweep's early moments), death
    by the signal it was sent also passes: nothing had a chance to install a handler yet."""
    expected = options.expect_exit
    forwarded = options.rewrites.get(options.signo, options.signo)
    if not before_ready or forwarded == 0:
        return Check("exit code %d" % expected, result.exit_code == expected,
                     "%s, expected %d" % (how_it_ended(result), expected))
    death = signals.name(forwarded)
    passed = result.exit_code == expected or (result.signal == death and result.exit_code == 128 + forwarded)
    return Check("exit code %d or death by %s before ready" % (expected, death), passed,
                 "%s, expected %d or death by %s (before ready)" % (how_it_ended(result), expected, death))


def leftovers_check(left: Optional[List[Process]]) -> Check:
    """--no-leftovers: `left` is None when not known (pyinit wrote no exit report), which cannot pass."""
    if left is None:
        return Check("no leftovers", False, "leftovers unknown: pyinit wrote no exit report")
    if not left:
        return Check("no leftovers", True, "nothing left running when it exited")
    return Check("no leftovers", False, "left running when it exited: %s"
                 % "; ".join("%s (PID %d)" % (p.command, p.pid) for p in left))


def first_line(problem: Exception) -> str:
    """The message's first line: the processes a TimeoutExpired lists after it go to the reports, not stderr."""
    line = (str(problem).splitlines() or [type(problem).__name__])[0]
    return line[:-len("; the processes:")] if line.endswith("; the processes:") else line
