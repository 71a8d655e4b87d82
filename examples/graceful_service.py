"""A service that stops cleanly on SIGTERM, as `docker stop` expects.

Run it under pyinit as PID 1 of a fresh namespace and stop it from outside:

    python3 -m pyinit --unshare -- python3 examples/graceful_service.py &
    kill -TERM $!     # the service says "stopping", and pyinit exits 0

As PID 1 itself, without pyinit, the same service would never see the
SIGTERM if it relied on the default action; this one has a handler, but its
worker child would not get the signal, and zombies would pile up.
"""

import signal
import sys
import time

stopping = False


def stop(signo: int, frame: object) -> None:
    global stopping
    stopping = True


signal.signal(signal.SIGTERM, stop)
print("serving; send SIGTERM to stop", flush=True)
while not stopping:
    time.sleep(0.05)
print("stopping: flushed state, closed connections", flush=True)
sys.exit(0)
