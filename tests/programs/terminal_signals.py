"""Record the signals this process receives (for tests/test_terminal.py).

Usage: terminal_signals.py [RECORD_FILE]

Blocks SIGHUP, SIGCONT, SIGTTIN, SIGTTOU and SIGTSTP from its first line (a
blocked signal waits in the queue: none can be missed or act behind our
back), prints READY, then:

- without RECORD_FILE: waits for a line on standard input (the terminal),
  prints "RECEIVED: " and the names of the pending signals ("none" if none)
  and exits 0. A SIGHUP that arrived before the mask was set kills it (129).
- with RECORD_FILE: takes each signal as it comes and appends its name to
  RECORD_FILE, forever, without touching the terminal again.
"""

import signal
import sys

WATCHED = {signal.SIGHUP, signal.SIGCONT, signal.SIGTTIN, signal.SIGTTOU, signal.SIGTSTP}
signal.pthread_sigmask(signal.SIG_BLOCK, WATCHED)

print("READY", flush=True)
if len(sys.argv) > 1:
    while True:
        info = signal.sigwaitinfo(WATCHED)
        with open(sys.argv[1], "a") as record:
            record.write(signal.Signals(info.si_signo).name + "\n")
sys.stdin.readline()
pending = sorted(signal.Signals(s).name for s in signal.sigpending())
print("RECEIVED:", ",".join(pending) or "none", flush=True)
