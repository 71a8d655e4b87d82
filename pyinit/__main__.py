"""`python -m pyinit`, and `run` for the `pyinit` command (bin/pyinit).

Every signal is blocked first, before anything of pyinit is imported (bin/pyinit does the same
before it imports this module): from then on a signal waits in the queue until the init takes
it with sigwaitinfo and forwards it to the child. Python installs a SIGINT handler of its own
at start-up, before any code of ours runs; a SIGINT caught by it comes out of pthread_sigmask
as KeyboardInterrupt, and pyinit exits 130, as a Ctrl-C would have ended it, before it has
started anything. Once the mask is set, no KeyboardInterrupt can happen any more. What is left
unprotected is the interpreter's own start-up; the benchmark measures that window.
"""

try:
    import _signal

    _signal.pthread_sigmask(_signal.SIG_BLOCK, _signal.valid_signals())
except KeyboardInterrupt:
    raise SystemExit(130) from None

import os
import sys

from pyinit.cli import main


def run() -> None:
    """Exit with main()'s code at once, skipping interpreter finalisation.

    pyinit holds no buffered output and no resources that need closing, and
    when it is PID 1 its exit is what tears the namespace down: there is no
    reason to spend milliseconds on garbage collection first.
    """
    os._exit(main(sys.argv[1:]))


if __name__ == "__main__":
    run()
