"""A service that ignores SIGTERM, and so cannot be stopped gracefully.

Some services do (a library that masks signals, a shell script that traps
TERM and waits, a busy loop that never looks): `docker stop` then ends them
only by force. Under pyinit with `--grace S`, pyinit SIGKILLs the child's
process group S seconds after forwarding the SIGTERM, and exits 137.

Ignores SIGTERM, starts WORKERS children (which inherit the ignored SIGTERM
and share the process group), prints `ready PID` once for itself and once
per worker, and sleeps until it is killed.

usage: container_stubborn.py [WORKERS]
"""

import os
import signal
import sys

signal.signal(signal.SIGTERM, signal.SIG_IGN)
for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 0):
    if os.fork() == 0:
        break
os.write(1, b"ready %d\n" % os.getpid())
while True:
    signal.pause()
