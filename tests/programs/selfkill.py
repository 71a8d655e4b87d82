"""Die by signal N, sent to itself: the child whose death pyinit must report as 128+N.

The signal's disposition is reset to the default and it is unblocked first,
so death does not depend on what the process inherited; core dumps are
turned off so that SIGSEGV or SIGABRT cost nothing.

usage: selfkill.py SIGNO
"""

import os
import resource
import signal
import sys

signo = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
if signo not in (signal.SIGKILL, signal.SIGSTOP):  # those two cannot be caught or blocked
    signal.signal(signo, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signo})
os.kill(os.getpid(), signo)
sys.exit(99)  # not reached when the signal kills us
