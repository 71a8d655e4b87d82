"""Exec a command with signal N ignored: SIG_IGN survives execve(), so the command inherits it.

A caller may hand pyinit an ignored SIGCHLD (some shells, supervisors and
container runtimes do). With SIGCHLD ignored the kernel reaps children by
itself and their exit status is lost, so pyinit must restore the default
before it starts its child, or it cannot report how the child ended.

usage: ignoring.py SIGNO COMMAND [ARG...]
"""

import os
import signal
import sys

signal.signal(int(sys.argv[1]), signal.SIG_IGN)
os.execvp(sys.argv[2], sys.argv[2:])
