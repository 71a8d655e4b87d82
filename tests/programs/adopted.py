"""Make one orphan and report who adopted it.

A middle process forks the orphan and exits; this process reaps the middle.
The orphan waits until its parent has changed (the kernel re-parents it when
the middle exits), then prints `orphan PID NEW_PPID`. NEW_PPID is the
adopter: pyinit as a child subreaper, or 1 when pyinit is PID 1. Both
processes then stay alive until stdin is closed.

usage: adopted.py
"""

import os
import time

middle = os.fork()
if middle == 0:
    middle = os.getpid()
    if os.fork() == 0:
        deadline = time.monotonic() + 30
        while os.getppid() == middle and time.monotonic() < deadline:
            time.sleep(0.005)
        os.write(1, b"orphan %d %d\n" % (os.getpid(), os.getppid()))
        while os.read(0, 4096):
            pass
        os._exit(0)
    os._exit(0)
os.waitpid(middle, 0)
while os.read(0, 4096):
    pass
