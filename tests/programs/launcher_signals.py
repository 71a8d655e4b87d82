"""The command for the launcher's signal tests: says which signals reached it.

usage: launcher_signals.py SPEC...   SPEC is a signal name without SIG, e.g.
USR1 (report it and carry on) or TERM=7 (report it, then exit 7).

The named signals are blocked and taken with sigwait(), so none has its
default effect. Prints `ready` once they are blocked (a test that waits for
it cannot lose a signal), then `got SIGNAME` for each one, each line a single
unbuffered write.
"""

import os
import signal
import sys


def main() -> None:
    exits = {}
    for spec in sys.argv[1:]:
        name, _, code = spec.partition("=")
        exits[signal.Signals["SIG" + name]] = int(code) if code else None
    signal.pthread_sigmask(signal.SIG_BLOCK, exits)
    os.write(1, b"ready\n")
    while True:
        signo = signal.Signals(signal.sigwait(exits))
        os.write(1, ("got %s\n" % signo.name).encode())
        if exits[signo] is not None:
            os._exit(exits[signo])


if __name__ == "__main__":
    main()
