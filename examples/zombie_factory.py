"""A careless service: it starts helpers and never waits for them.

Each helper forks a worker and exits at once, so the worker is orphaned and
re-parented to PID 1; when the worker exits, only PID 1 can reap it. Under
pyinit none of them stays a zombie:

    python3 -m pyinit --unshare -- sh -c 'python3 examples/zombie_factory.py 50; ps -o pid,stat,args'

Without an init that reaps, `ps` would show 50 processes in state Z.
"""

import os
import sys
import time

count = int(sys.argv[1]) if len(sys.argv) > 1 else 10
for _ in range(count):
    if os.fork() == 0:  # the helper
        if os.fork() == 0:  # the worker, orphaned when the helper exits
            os._exit(0)
        os._exit(0)
# Reap the helpers (our own children) but not the workers (no longer ours).
for _ in range(count):
    os.wait()
time.sleep(0.5)  # give PID 1 time to reap the orphans
print("made %d orphans" % count, flush=True)
