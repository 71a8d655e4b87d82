"""`pyinit-check`: does a command stop cleanly on a signal? For CI jobs in any language.

    pyinit-check --ready-port 8080 --within 5 --no-leftovers --junit report.xml -- ./my-server

Starts the command in a pyinit.Sandbox, waits until it is ready, sends the
signal (SIGTERM by default) to the sandbox's PID 1 as `docker stop` does, and
checks that the command exits within the time, with the expected code, and
(with --no-leftovers) that nothing of it was left running when it exited.
One verdict line per check; on failure the process tree and the output tail.
`--json -` writes the JSON result to standard output, after those lines.
--env, --cwd, --grace, --rewrite, --single-child and --network set up the
sandbox as pyinit.Sandbox's options do. `--sweep N` makes the check N times,
the signal sent at N moments from the spawn to one second after ready
(check/sweep.py): it finds the start-up window where a signal kills a master
before its handler is installed and leaves its workers behind.

The modules, by role: check/options.py (argv, every refusal), check/verdicts.py
(one run in a sandbox: readiness, the signal, the verdicts), check/sweep.py,
check/reports.py (the JSON and JUnit files), check/interruptions.py (the
signals that end it).

Exit status: 0 when every check holds (in a sweep: at every moment), 1 when
one fails (a command that exits before it is ready fails: the service's
fault), 125 for a usage error (a report file that cannot be written among
them: the files are opened before the command starts), for a command that
never became ready in time or never ran (in a sweep: in its first run), and
for a check that could not be made or reported (one line `pyinit-check: ...`
says why).
--signal STOP and KILL are refused: sent from outside, they act on the
sandbox's PID 1 (pyinit), not on the command.

Ended by SIGINT (Ctrl-C), SIGTERM (a CI job cancelled, `timeout`) or SIGHUP
(the terminal gone), it tears the sandbox down, writes its reports, saying
it was interrupted by which signal, with the verdicts it had, and then
dies of that signal, as util-linux's wrappers do: the calling shell, or
`timeout`, sees a death by the signal it sent (check/interruptions.py).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import sys
import time
from typing import NoReturn, Optional, Sequence

from pyinit import signals
from pyinit.check.interruptions import Interruptions
from pyinit.check.options import Usage, parse
from pyinit.check.reports import WriteFailed, write_reports
from pyinit.check.verdicts import NotReady, Outcome, Run, first_line, sandbox, stop_and_check, wait_until_ready
from pyinit.check.sweep import sweep
from pyinit.sandbox import SandboxError

EXIT_FAILED = 1
EXIT_USAGE = 125  # as pyinit's own failures: the check could not be made
EXIT_INTERRUPTED = 128 + signal.SIGINT  # main()'s status after a Ctrl-C (128+N after signal N); run() dies of it


def main(argv: Optional[Sequence[str]] = None) -> int:
    """pyinit-check with these arguments; the exit status: 128+N when signal N (SIGINT, SIGTERM, SIGHUP)
    ended it, once the reports are written."""
    with Interruptions() as interruptions:  # first: parse() creates the report files
        status = _main(argv, interruptions)
    if interruptions.signo is not None:
        return 128 + interruptions.signo
    return status


def _main(argv: Optional[Sequence[str]], interruptions: Interruptions) -> int:
    """main() with its handlers installed: a signal is noted, and raised as Interrupted only while the check runs."""
    try:
        options = parse(list(sys.argv[1:] if argv is None else argv), __doc__.split("\n\n")[0])
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
        signo = interruptions.signo or signal.SIGINT  # or Python's own SIGINT handler, before ours was installed
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
        with sandbox(options) as box:
            if wait_until_ready(box, options, run):
                stop_and_check(box, options, run)
    except NotReady as failure:
        run.result = failure.result
        raise
    for check in run.checks:
        print(check.line())
    if not run.passed:
        print(run.details())
    outcome.status = 0 if run.passed else EXIT_FAILED


def run() -> None:
    """The console script, and `python -m pyinit.check`."""
    if isinstance(sys.stdout, io.TextIOWrapper) and sys.stdout.errors == "strict":
        # A command line is bytes: one that is not UTF-8 (a leftover's) is decoded with surrogates,
        # which a strict stdout (a UTF-8 locale but C.UTF-8) refuses to write. Written as \udcff instead.
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        status = main()
    except KeyboardInterrupt:  # a Ctrl-C before main() installed its handlers, or after it restored them
        print("pyinit-check: interrupted by SIGINT", file=sys.stderr)
        status = EXIT_INTERRUPTED
    if status - 128 in Interruptions.SIGNALS:
        _die_of(status - 128)
    sys.exit(status)


def _die_of(signo: int) -> NoReturn:
    """Die of signal `signo`, as util-linux's wrappers do: a shell stops its loop when a command dies of
    SIGINT, not when it exits 130, and `timeout --preserve-status` passes the death on."""
    with contextlib.suppress(OSError):  # the default action ends the process without Python's own flushing
        sys.stdout.flush()
        sys.stderr.flush()
    signal.signal(signo, signal.SIG_DFL)
    os.kill(os.getpid(), signo)
    sys.exit(128 + signo)  # only if the signal is blocked: it stays pending
