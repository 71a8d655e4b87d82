"""A service for the engine suite (tests/test_engines.py), run inside the containers.

It prints one line for each signal it takes, `got SIGNAME`, and `ready` once its handlers are in
place; on the signal named by --exit-on it prints `stopping on SIGNAME` and exits 0. With
--no-handler it installs no handler at all (as `sleep` or a shell script), so the default
action of each signal applies: SIGTERM kills it, unless it is PID 1, where the kernel drops it.

usage: engine_service.py [--exit-on SIGNAME] [--report SIGNAME,...] [--no-handler]
"""

import signal
import sys
import time

args = sys.argv[1:]
exit_on = signal.Signals[args[args.index("--exit-on") + 1]] if "--exit-on" in args else signal.SIGTERM
report = [signal.Signals[name] for name in args[args.index("--report") + 1].split(",")] if "--report" in args else []


def handler(signo: int, frame: object) -> None:
    name = signal.Signals(signo).name
    if signo == exit_on:
        print("stopping on %s" % name, flush=True)
        sys.exit(0)
    print("got %s" % name, flush=True)


if "--no-handler" not in args:
    for signo in {exit_on, *report}:
        signal.signal(signo, handler)
print("ready", flush=True)
while True:
    time.sleep(3600)
