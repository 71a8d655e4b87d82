"""`python -m pyinit` and the `pyinit` console script."""

import os
import sys

from pyinit.cli import main


def run() -> None:
    """Exit with main()'s code at once, skipping interpreter finalisation.

    pyinit holds no buffered output and no resources that need closing, and
    when it is PID 1 its exit is what tears the namespace down: there is no
    reason to spend milliseconds on garbage collection first.
    """
    try:
        code = main(sys.argv[1:])
    except KeyboardInterrupt:  # Ctrl-C before pyinit had blocked its signals
        code = 130
    os._exit(code)


if __name__ == "__main__":
    run()
