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
before its handler is installed and leaves its workers behind. `--bare` runs
the command with no init, as PID 1 itself, and says whether it needs one
(check/bare.py): it ignored the signal as PID 1, or left zombies unreaped.

The modules, by role: check/options.py (argv, every refusal), check/verdicts.py
(one run in a sandbox: readiness, the signal, the verdicts), check/sweep.py,
check/reports.py (the JSON and JUnit files), check/bare.py (--bare).

Exit status: 0 when every check holds (in a sweep: at every moment), 1 when
one fails, 125 for a usage error (a report file that cannot be written among
them: the files are opened before the command starts), for a command that
never became ready (in a sweep: in its first run), and for a check that
could not be made or reported (one line `pyinit-check: ...` says why).
--signal STOP and KILL are refused: sent from outside, they act on the
sandbox's PID 1 (pyinit), not on the command. Interrupted (SIGINT), it tears
the sandbox down and dies of SIGINT, as util-linux's wrappers do.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import sys
import time
from typing import NoReturn, Optional, Sequence

from pyinit.check import bare
from pyinit.check.options import Usage, parse
from pyinit.check.reports import WriteFailed, write_reports
from pyinit.check.verdicts import NotReady, Outcome, Run, first_line, sandbox, stop_and_check, wait_until_ready
from pyinit.check.sweep import sweep
from pyinit.sandbox import SandboxError

EXIT_FAILED = 1
EXIT_USAGE = 125  # as pyinit's own failures: the check could not be made
EXIT_INTERRUPTED = 128 + signal.SIGINT  # main()'s status after a Ctrl-C; run() dies of SIGINT instead


def main(argv: Optional[Sequence[str]] = None) -> int:
    """pyinit-check with these arguments; the exit status (EXIT_INTERRUPTED after a Ctrl-C)."""
    try:
        options = parse(list(sys.argv[1:] if argv is None else argv), __doc__.split("\n\n")[0])
    except Usage as problem:
        print("pyinit-check: %s" % problem, file=sys.stderr)
        return EXIT_USAGE
    started = time.time()
    outcome = Outcome()
    try:
        if options.sweep:
            sweep(options, outcome)
        else:
            _check(options, outcome)
    except NotReady as failure:
        print("pyinit-check: %s" % failure.reason, file=sys.stderr)
        outcome.fail(EXIT_USAGE, failure.reason)
    except (SandboxError, OSError) as problem:  # a wait that ran out, the system refusing something
        print("pyinit-check: %s" % first_line(problem), file=sys.stderr)
        outcome.fail(EXIT_USAGE, str(problem))
    except KeyboardInterrupt:  # on its way here it left the `with` block, which tore the sandbox down
        print("pyinit-check: interrupted", file=sys.stderr)
        outcome.fail(EXIT_INTERRUPTED, "interrupted")
    try:
        write_reports(options, time.time() - started, outcome)
    except WriteFailed as problem:
        print("pyinit-check: %s" % problem, file=sys.stderr)
        return EXIT_INTERRUPTED if outcome.status == EXIT_INTERRUPTED else EXIT_USAGE
    return outcome.status


def _check(options: argparse.Namespace, outcome: Outcome) -> None:
    """Start the command, wait until it is ready, signal it, and print the verdicts; NotReady says why
    there are none (its Result, when it has exited, goes to the reports)."""
    run = Run()
    outcome.runs.append(run)
    try:
        with sandbox(options) as box, bare.watching(box, options, run) as watch:
            wait_until_ready(box, options)
            if watch is not None:
                watch.before_signal()
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
