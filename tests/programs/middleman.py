"""Start a command as our child, report its PID, and wait to be killed.

The parent whose death pyinit's `-p SIG` is about: the test SIGKILLs this
process and expects pyinit, its child, to receive SIG.

Prints `middleman CHILD_PID`, then waits for stdin to be closed (it never is:
the test kills this process first).

usage: middleman.py COMMAND [ARG...]
"""

import os
import sys

child = os.posix_spawnp(sys.argv[1], sys.argv[1:], os.environ)
os.write(1, b"middleman %d\n" % child)
while os.read(0, 4096):
    pass
