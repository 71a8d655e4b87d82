"""A service that handles SIGTERM, but whose children leave orphans it never waits for.

Starts COUNT children, each of which forks a grandchild and exits at once
(the double fork of a daemon, a shell's `cmd &`): this process waits for
each child, as subprocess does for its own, and never for anything else.
The grandchildren exit a moment later. Under an init they are not ours: re-
parented to the init, they are reaped there. As PID 1 of its namespace they
are re-parented to us, and stay zombies. With --reap it also reaps whatever
ends below it (SIGCHLD, waitpid(-1)): the well-behaved PID 1.

Prints `ready` once the grandchildren have been made; exits 0 on SIGTERM.

usage: orphaner.py COUNT [--reap]
"""

import os
import signal
import sys
import time


def leave_an_orphan() -> None:
    child = os.fork()
    if child == 0:
        if os.fork() == 0:
            time.sleep(0.05)  # the orphan: re-parented once its parent has gone, then it exits
        os._exit(0)
    try:
        os.waitpid(child, 0)  # our own child, and only it
    except ChildProcessError:  # with --reap, the SIGCHLD handler was first
        pass


def reap_everything(signo, frame) -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def main() -> None:
    signal.signal(signal.SIGTERM, lambda signo, frame: sys.exit(0))
    if "--reap" in sys.argv[2:]:
        signal.signal(signal.SIGCHLD, reap_everything)
    for _ in range(int(sys.argv[1])):
        leave_an_orphan()
    print("ready", flush=True)
    while True:
        signal.pause()


main()
