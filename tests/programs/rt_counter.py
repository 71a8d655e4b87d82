"""Count real-time signals until EXPECTED have come, while a forker makes orphans beside it.

Blocks every real-time signal, starts ORPHAN_MAKER (a dash loop, in a session
of its own, so that signals sent to this process's group do not reach it)
making orphans for pyinit to reap until this process has exited, prints
`ready`, then takes signals with sigwaitinfo() until it has EXPECTED of them
or none came for 10 s. Prints one JSON object {signal number: count} and
exits 0.

usage: rt_counter.py EXPECTED
"""

import json
import os
import signal
import sys

ORPHAN_MAKER = "while kill -0 $PPID 2>/dev/null; do ( : & : & : & : & ); done"

expected = int(sys.argv[1])
realtime = set(range(signal.SIGRTMIN, signal.SIGRTMAX + 1))
signal.pthread_sigmask(signal.SIG_BLOCK, realtime)
os.posix_spawnp("setsid", ["setsid", "dash", "-c", ORPHAN_MAKER], os.environ)
os.write(1, b"ready\n")
counts: "dict[int, int]" = {}
total = 0
# The counting loop is benchmarks/bench.py's RT_COUNTER's: that one must stay a
# standalone string the benchmark runs with `python -I -S -c`.
while total < expected:
    info = signal.sigtimedwait(realtime, 10.0)
    if info is None:
        break
    counts[info.si_signo] = counts.get(info.si_signo, 0) + 1
    total += 1
os.write(1, (json.dumps(counts) + "\n").encode())
