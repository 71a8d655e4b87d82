"""Print "tick N" five times a second, forever (for tests/test_terminal.py).

A program that keeps working: after a stop and a continue, the count goes on.
Ctrl-C (SIGINT, default action) ends it.
"""

import itertools
import signal
import time

signal.signal(signal.SIGINT, signal.SIG_DFL)
for n in itertools.count():
    print("tick", n, flush=True)
    time.sleep(0.2)
