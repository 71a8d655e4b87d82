"""pyinit-check's work once its signal handlers are in place: the options, the check or the sweep, the reports.

check/__init__.py installs the handlers (check/interruptions.py), then
imports this module and calls check_command(); it dies of the signal that
ended the check, if one did, once the reports are written.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import time
from typing import List

from pyinit import signals
from pyinit.check import bare
from pyinit.check.interruptions import Interruptions
from pyinit.check.options import Usage, parse
from pyinit.check.reports import WriteFailed, write_reports
from pyinit.check.sweep import sweep
from pyinit.check.verdicts import NotReady, Outcome, Run, first_line, sandbox, stop_and_check, wait_until_ready
from pyinit.sandbox import SandboxError

EXIT_FAILED = 1
EXIT_USAGE = 125  # as pyinit's own failures: the check could not be made


def check_command(argv: List[str], description: str, interruptions: Interruptions) -> int:
    """pyinit-check's work, with main()'s handlers installed: the options, the check or the sweep, the
    reports; the exit status. A signal is raised as Interrupted only while the check runs."""
    try:
        options = parse(argv, description)
    except Usage as problem:
        print("pyinit-check: %s" % problem, file=sys.stderr)
        return EXIT_USAGE
    started = time.time()
    outcome = Outcome()
    try:
        try:
            interruptions.arm()  # a signal noted while the options were read is raised here
            if options.sweep:
                sweep(options, outcome)
            else:
                _check(options, outcome)
        finally:
            interruptions.disarm()  # nothing is raised from here on: the reports are written whole
    except NotReady as failure:
        print("pyinit-check: %s" % failure.reason, file=sys.stderr)
        outcome.fail(EXIT_USAGE, failure.reason)
    except (SandboxError, OSError) as problem:  # a wait that ran out, the system refusing something
        print("pyinit-check: %s" % first_line(problem), file=sys.stderr)
        outcome.fail(EXIT_USAGE, str(problem))
    except KeyboardInterrupt:  # on its way here it left the `with` block, which tore the sandbox down
        signo = interruptions.signo or signal.SIGINT  # one that no signal raised is taken for a Ctrl-C
        outcome.interrupted = signals.name(signo)
        outcome.fail(128 + signo, "interrupted by %s" % signals.name(signo))
    if outcome.interrupted is None and interruptions.signo is not None:  # after the check: its verdicts stand
        outcome.interrupted = signals.name(interruptions.signo)
    if outcome.interrupted is not None:
        with contextlib.suppress(OSError):  # a SIGHUP: the terminal may be gone
            print("pyinit-check: interrupted by %s" % outcome.interrupted, file=sys.stderr)
    try:
        write_reports(options, time.time() - started, outcome)
    except WriteFailed as problem:
        print("pyinit-check: %s" % problem, file=sys.stderr)
        return EXIT_USAGE
    return outcome.status


def _check(options: argparse.Namespace, outcome: Outcome) -> None:
    """Start the command, wait until it is ready, signal it, and print the verdicts; NotReady says why
    there are none (its Result, when it has exited, goes to the reports)."""
    run = Run()
    outcome.runs.append(run)
    try:
        with sandbox(options) as box, bare.watching(box, options, run) as watch:
            ready = wait_until_ready(box, options, run)  # False: it exited first, and `run` has its verdicts
            if ready and watch is not None:
                watch.before_signal()
            if ready and (options.traffic_wanted or options.expect_running is not None):
                from pyinit.check.traffic import check_under_traffic  # http.client and threads: only when asked

                check_under_traffic(box, options, run)
            elif ready:
                stop_and_check(box, options, run)
    except NotReady as failure:
        run.result = failure.result
        raise
    for check in run.checks:
        print(check.line())
    if not run.passed:
        print(run.details())
    outcome.status = 0 if run.passed else EXIT_FAILED
