"""Forks for the engine suite's `--pids-limit` scenario, run inside the containers.

Makes COUNT orphans, one at a time: a helper forks a worker and exits at once, so the worker is
re-parented to PID 1 and, when it exits, only PID 1 can reap it. This process waits for its
helpers, never for the workers. A PID 1 that does not reap keeps every worker as a zombie, the
container's pids limit is soon reached, and forks fail: each failed fork is counted (and retried
a little later, COUNT failures at most). Prints `forks COUNT failures N` and exits 0; with --stay
it stays, and exits 0 on SIGTERM after printing `stopping`.

usage: engine_forks.py COUNT [--stay]
"""

import os
import signal
import sys
import time

count, failures, made = int(sys.argv[1]), 0, 0
while made < count and failures < count:
    try:
        helper = os.fork()
    except BlockingIOError:  # EAGAIN: the pids limit
        failures += 1
        time.sleep(0.01)
        continue
    if helper == 0:
        try:
            if os.fork() == 0:
                os._exit(0)  # the worker: exits at once, an orphan
        except BlockingIOError:
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(helper, 0)
    if os.waitstatus_to_exitcode(status) == 0:
        made += 1
        time.sleep(0.002)  # a storm, not a race: a PID 1 that reaps keeps up with it even on a busy machine
    else:
        failures += 1
        time.sleep(0.01)
print("forks %d failures %d" % (count, failures), flush=True)
if "--stay" in sys.argv:
    signal.signal(signal.SIGTERM, lambda signo, frame: (print("stopping", flush=True), os._exit(0)))
    while True:
        time.sleep(3600)
