"""Exec a command with signal N already pending (blocked, sent, not yet taken).

Blocked signals stay pending across execve(), and so does the mask: the
command starts with N waiting for it before its first instruction. Started as
`pending.py 15 pyinit -- CMD`, this is the earliest a signal can possibly
reach pyinit, and proves that a signal sent while pyinit starts up is not lost
but forwarded to the child once it exists. It works as PID 1 of a namespace
too: the kernel drops a signal sent to PID 1 with the default disposition,
but never one that is blocked.

The signal is sent by a separate process, as in life (a runtime stopping a
container that is still starting), not by this process to itself: a signal
whose sender is pyinit's own PID is one pyinit may take for its own doing.
With --self it is sent by this process (the same PID pyinit will have).

usage: pending.py SIGNO [--self] COMMAND [ARG...]
"""

import os
import signal
import sys

signo = int(sys.argv[1])
command = sys.argv[2:]
signal.pthread_sigmask(signal.SIG_BLOCK, {signo})
if command[0] == "--self":
    command = command[1:]
    os.kill(os.getpid(), signo)
else:
    me = os.getpid()
    sender = os.fork()
    if sender == 0:
        os.kill(me, signo)
        os._exit(0)
    os.waitpid(sender, 0)
assert signo in signal.sigpending(), "the signal is not pending"
os.execvp(command[0], command)
