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

The modules, by role: check/command.py (the options, the check or the sweep,
the reports), check/options.py (argv, every refusal), check/verdicts.py
(one run in a sandbox: readiness, the signal, the verdicts), check/sweep.py,
check/reports.py (the JSON and JUnit files), check/interruptions.py (the
signals that end it), check/bare.py (--bare).

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

# Only what the handlers need is imported here: the console script imports this package before run() can
# install them, and a Ctrl-C during the rest of the imports (a third of a second on a busy machine) was a
# KeyboardInterrupt traceback. main() imports the check itself once they are in place.
import contextlib
import io
import os
import signal
import sys
from typing import NoReturn, Optional, Sequence

from pyinit.check.interruptions import Interruptions

EXIT_INTERRUPTED = 128 + signal.SIGINT  # main()'s status after a Ctrl-C (128+N after signal N); run() dies of it


def main(argv: Optional[Sequence[str]] = None) -> int:
    """pyinit-check with these arguments; the exit status: 128+N when signal N (SIGINT, SIGTERM, SIGHUP)
    ended it, once the reports are written."""
    with Interruptions() as interruptions:  # first: the options create the report files
        from pyinit.check.command import check_command

        status = check_command(list(sys.argv[1:] if argv is None else argv), __doc__.split("\n\n")[0], interruptions)
    if interruptions.signo is not None:
        return 128 + interruptions.signo
    return status


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
