"""pyinit with a bug put in on purpose, to show that its child's exit status still gets out.

usage: faulty_init.py FAULT PYINIT-ARGUMENT...

FAULT is one of:
  reap-log   the reaper's log line about the main child's exit raises, just
             after waitpid(2) has handed over the child's status
  drain      sending the drain's SIGTERM to what the child left raises
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from pyinit import cli, log, shutdown  # noqa: E402  (after the path is set)


class Injected(Exception):
    pass


def raising_info(message: str, *args: object) -> None:
    if message.startswith("child %d exited"):
        raise Injected("the reaper's log line")
    real_info(message, *args)


def raising_leftovers(signo: int) -> int:
    raise Injected("the drain")


fault, arguments = sys.argv[1], sys.argv[2:]
real_info = log.info
if fault == "reap-log":
    log.info = raising_info
elif fault == "drain":
    shutdown.signal_leftovers = raising_leftovers
else:
    sys.exit("faulty_init.py: unknown fault %r" % fault)
os._exit(cli.main(arguments))
