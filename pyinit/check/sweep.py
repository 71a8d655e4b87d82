"""`pyinit-check --sweep N`: the same check N times, each in a fresh sandbox, the signal at N moments.

Services often have a start-up window where the signal kills the master by
default action before its handler is installed, leaving its workers behind,
or where a handler only notes it and nothing acts on it yet. A single check
after readiness never sees that window; a sweep sends the signal at N
moments spread evenly from the spawn (0 ms) to one second after readiness.

The first run measures readiness, and is itself the last moment: it waits
until the command is ready (R ms after the spawn), then sends the signal at
R + 1000 ms. Each of the other N - 1 runs sends it at i * (R + 1000) / (N - 1)
ms after the spawn, i = 0 .. N - 2. A moment before R does not wait for
readiness: it sleeps until the moment after the sandbox's start, then sends.
A moment from R on waits for readiness in its own run first (a slower start
would otherwise be taken for a failure); if that came later than the moment,
the signal goes at once, and the line says when. The spawn is the moment
Sandbox.start() returns (the command runs); without a --ready-* option R is 0.
A --ready-path that did not exist when the sweep began is removed after each
run, so that the next run's readiness is its own.

Every moment gets the same checks: stops within S, the exit code, and with
--no-leftovers what it left. One exception, before readiness: death by the
signal itself (128+N) passes the exit-code check, since a command killed
before it could install a handler has stopped as the kernel stops it; what
matters then is whether it stopped and what it left.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from typing import List, Optional

from pyinit import signals
from pyinit.check.verdicts import Check, NotReady, Outcome, Run, sandbox, stop_and_check, wait_until_ready
from pyinit.sandbox import SandboxError

EXIT_FAILED = 1
_AFTER_READY_MS = 1000  # the last moment: one second after readiness
_LATE_MS = 50  # a signal sent this much after its moment (readiness came later in that run) says when it went


def sweep(options: argparse.Namespace, outcome: Outcome) -> None:
    """Run the sweep, print a line per moment and the details of the failing ones; fill in `outcome`.

    NotReady from the first run (its wait for readiness ran out, or the
    command never ran) is the caller's: no moment can be planned without it.
    A command that exits before it is ready in the first run fails the sweep
    with that run's verdicts alone.
    """
    moments = options.sweep
    marker = _ready_path(options)
    probe = _probe(options, outcome, marker)
    if probe.ms is None:  # it exited before it was ready: no moment to plan, and the service's failure
        for check in probe.checks:
            print(check.line())
        print(probe.details())
        print("sweep: the command exited before it was ready in the first run: no moment to plan")
        outcome.status = EXIT_FAILED
        return
    last = probe.ms
    ready_ms = outcome.ready_ms or 0.0
    print("sweep: %s at %d moments, 0 to %d ms after the spawn (ready at %d ms in the first run)"
          % (signals.name(options.signo), moments, last, round(ready_ms)))
    for i in range(moments - 1):
        ms = round(i * last / (moments - 1))
        run = Run(ms, before_ready=ms < ready_ms)
        try:
            _at_moment(options, run, marker)
        except (SandboxError, OSError) as problem:  # the check could not be made: which moment, in its first line
            raise SandboxError("at %d ms: %s" % (ms, problem)) from problem
        outcome.runs.append(run)
        print(_line(run))
    print(_line(probe))
    outcome.runs.append(outcome.runs.pop(0))  # the probe, first made, is the last moment
    failed = [run for run in outcome.runs if not run.passed]
    for run in failed:
        print("\nat %d ms%s:" % (run.ms or 0, _late(run)))
        for check in run.checks:
            print(check.line())
        if run.result is not None:
            print(run.details())
    if failed:
        print("\nsweep: %d of %d moments failed: %s"
              % (len(failed), moments, ", ".join("%d ms" % (run.ms or 0) for run in failed)))
    else:
        print("sweep: all %d moments passed" % moments)
    outcome.status = EXIT_FAILED if failed else 0


def _ready_path(options: argparse.Namespace) -> Optional[str]:
    """The --ready-path as the sandbox looks for it, when it does not exist yet: each run's command makes it,
    and it is removed after each run, so that the next run's readiness is its own. None otherwise."""
    if options.ready_path is None:
        return None
    path = os.path.join(options.cwd or os.getcwd(), options.ready_path)
    return None if os.path.lexists(path) else path


def _remove(marker: Optional[str]) -> None:
    if marker is not None:
        with contextlib.suppress(FileNotFoundError):
            if not os.path.isdir(marker) or os.path.islink(marker):
                os.unlink(marker)


def _probe(options: argparse.Namespace, outcome: Outcome, marker: Optional[str]) -> Run:
    """The first run: readiness (outcome.ready_ms), then the signal one second after it: the last moment."""
    probe = Run()
    try:
        _probe_run(options, outcome, probe)
    finally:
        _remove(marker)
    outcome.runs.append(probe)
    return probe


def _probe_run(options: argparse.Namespace, outcome: Outcome, probe: Run) -> None:
    with sandbox(options) as box:
        start = time.monotonic()
        if not wait_until_ready(box, options, probe):
            return
        ready = _readiness_awaited(options)
        outcome.ready_ms = (time.monotonic() - start) * 1000 if ready else 0.0
        probe.ms = round(outcome.ready_ms) + _AFTER_READY_MS
        _sleep_until(start, probe.ms)
        probe.sent_ms = (time.monotonic() - start) * 1000
        stop_and_check(box, options, probe)


def _readiness_awaited(options: argparse.Namespace) -> bool:
    return any(getattr(options, name) is not None for name in ("ready_output", "ready_port", "ready_path", "ready_http"))


def _at_moment(options: argparse.Namespace, run: Run, marker: Optional[str]) -> None:
    """One run: the signal at run.ms after the spawn, without waiting for readiness when that comes before it."""
    try:
        _moment_run(options, run)
    finally:
        _remove(marker)


def _moment_run(options: argparse.Namespace, run: Run) -> None:
    assert run.ms is not None
    with sandbox(options) as box:
        start = time.monotonic()
        if not run.before_ready:
            try:
                if not wait_until_ready(box, options, run):
                    return
            except NotReady as failure:  # it became ready in the first run: in this one it is a failure
                run.checks = [Check("becomes ready", False, failure.reason.splitlines()[0])]
                run.result = failure.result
                return
        _sleep_until(start, run.ms)
        run.sent_ms = (time.monotonic() - start) * 1000
        try:
            stop_and_check(box, options, run)
        except NotReady as failure:  # the command never ran this time
            run.checks = [Check("runs", False, failure.reason.splitlines()[0])]
            run.result = failure.result


def _sleep_until(start: float, ms: int) -> None:
    remaining = start + ms / 1000 - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)


def _line(run: Run) -> str:
    """PASS or FAIL, the moment, and what it did: every check's message when it passed, the failing ones' when not."""
    shown: List[Check] = run.checks if run.passed else [check for check in run.checks if not check.passed]
    return "%s  %5d ms%s  %s" % ("PASS" if run.passed else "FAIL", run.ms or 0, _late(run),
                                 "; ".join(check.message for check in shown))


def _late(run: Run) -> str:
    """' (sent at N ms)' when the signal went well after its moment: readiness came later in that run."""
    if run.sent_ms is None or run.ms is None or run.sent_ms - run.ms < _LATE_MS:
        return ""
    return " (sent at %d ms)" % round(run.sent_ms)
