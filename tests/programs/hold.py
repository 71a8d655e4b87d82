"""Report who we are, then stay alive until stdin is closed.

Prints `ready PID PPID` (as this process sees them: inside pyinit's PID
namespace that is `ready 2 1`), then reads stdin to end-of-file, so the test
can look at this process in /proc for as long as it needs, and decides when
it ends. Exits with CODE (default 0).

usage: hold.py [CODE]
"""

import os
import sys

code = int(sys.argv[1]) if len(sys.argv) > 1 else 0
os.write(1, b"ready %d %d\n" % (os.getpid(), os.getppid()))
while os.read(0, 4096):
    pass
sys.exit(code)
