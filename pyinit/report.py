"""The exit report: what happened, as one JSON object written when pyinit exits.

Counting costs a dictionary update per signal and an addition per reap, so
it is always on; `json` is imported only when a report is written. Times are
wall-clock seconds since the epoch (float), so a report can be lined up with
an orchestrator's own logs.

Schema (version 1):

    {
      "version": 1,
      "pid": 1,                           # pyinit's PID, in its own namespace
      "command": ["my-server", "--port", "8080"],
      "child": {"pid": 2, "exit_code": null, "signal": "SIGTERM"},
                                          # exit_code when it exited, signal when killed;
                                          # both null if it never ran or never exited
      "exit_code": 143,                   # pyinit's own exit code
      "signals": {"received": {"SIGTERM": 1}, "forwarded": {"SIGTERM": 1}},
      "grace": {"seconds": 10.0, "killed": false, "processes": 0},
      "drain": {"seconds": 2.0, "killed": true, "processes": 1, "stopped": [7]},
                                          # seconds null when not in force; killed: whether
                                          # it ended in SIGKILL, and for how many processes;
                                          # stopped: the leftovers it sent SIGTERM
      "settle": {"seconds": 1.0, "waited": 0.21},
                                          # how long the rest could take to exit on their
                                          # own after the child, and how long they took
      "leftovers": [{"pid": 7, "ppid": 1, "name": "worker", "argv": ["worker"], "state": "S"}],
                                          # what still ran once the settle was over (zombies
                                          # do not run); null where /proc could not tell
      "zombies_reaped": 12,               # processes reaped other than the child
      "timeline": {"start": 1790000000.0, "first_signal": 1790000005.0,
                   "first_terminating_signal": 1790000005.1,
                   "child_exit": 1790000005.3, "exit": 1790000005.3}
                                          # null for what did not happen
    }

Written to `fd:N`, the descriptor is the caller's, not the child's: the
init marks it close-on-exec before the child starts, so the child never
holds the report's pipe open (see init.run).
"""

import os
import time

WRITE_TIMEOUT = 2.0  # seconds a full pipe or FIFO may go unread, holding pyinit's exit up, before the report is given up


class Report:
    """Counters and timestamps gathered while pyinit runs."""

    def __init__(self, command: "tuple[str, ...]") -> None:
        self.command = command
        self.child_pid: "int | None" = None
        self.child_status: "int | None" = None
        self.received: "dict[str, int]" = {}
        self.forwarded: "dict[str, int]" = {}
        self.grace: "dict[str, object]" = {"seconds": None, "killed": False, "processes": 0}
        self.drain: "dict[str, object]" = {"seconds": None, "killed": False, "processes": 0, "stopped": []}
        self.settle: "dict[str, float]" = {"seconds": 0.0, "waited": 0.0}
        self.leftovers: "list[dict] | None" = []
        self.zombies_reaped = 0
        self.timeline: "dict[str, float | None]" = {
            "start": time.time(), "first_signal": None, "first_terminating_signal": None, "child_exit": None,
            "exit": None,
        }

    def count(self, table: "dict[str, int]", signal_name: str) -> None:
        table[signal_name] = table.get(signal_name, 0) + 1

    def mark(self, event: str) -> None:
        """Record the time of `event` the first time it happens."""
        if self.timeline[event] is None:
            self.timeline[event] = time.time()

    def as_dict(self, exit_code: int) -> dict:
        from pyinit import signals

        status = self.child_status
        exited = status is not None and os.WIFEXITED(status)
        killed = status is not None and os.WIFSIGNALED(status)
        return {
            "version": 1,
            "pid": os.getpid(),
            "command": list(self.command),
            "child": {
                "pid": self.child_pid,
                "exit_code": os.WEXITSTATUS(status) if status is not None and exited else None,
                "signal": signals.name(os.WTERMSIG(status)) if status is not None and killed else None,
            },
            "exit_code": exit_code,
            "signals": {"received": self.received, "forwarded": self.forwarded},
            "grace": self.grace,
            "drain": self.drain,
            "settle": self.settle,
            "leftovers": self.leftovers,
            "zombies_reaped": self.zombies_reaped,
            "timeline": self.timeline,
        }

    def write(self, destination: str, exit_code: int) -> None:
        """Write the report to a file path, or to `fd:N`; never raise, never hang."""
        from pyinit import log

        self.mark("exit")
        try:
            # Imported here, so that pyinit pays for json only when it writes
            # a report, and inside the try: the import opens files, and fails
            # when the descriptors have run out (RLIMIT_NOFILE).
            import json

            data = (json.dumps(self.as_dict(exit_code), sort_keys=True) + "\n").encode()
            if destination.startswith("fd:"):
                fd = int(destination[3:])
                os.set_blocking(fd, False)  # a full pipe must not hold the exit up for good (see _write_all)
                _write_all(fd, data)
                return
            # O_NONBLOCK: a FIFO that nobody reads fails at once (ENXIO)
            # instead of blocking pyinit's exit for good, deaf to signals.
            fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)
        except Exception as failure:  # OSError, a bad fd number: the exit code must get out all the same
            log.warning("cannot write the exit report to %s: %s", destination, failure)


def _write_all(fd: int, data: bytes) -> None:
    """Write `data` to the non-blocking `fd`, giving up once WRITE_TIMEOUT seconds pass with no room made.

    The limit is on idleness, not on the whole: a reader that reads
    steadily, however slowly, gets the whole report, however large (a
    total deadline cut a large one short, into invalid JSON). One that
    stops reading (a full pipe, a FIFO nobody drains) costs pyinit
    WRITE_TIMEOUT, then a warning, never a hang: an init that cannot exit
    keeps its namespace up.
    """
    import select

    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    while data:
        try:
            data = data[os.write(fd, data):]
        except BlockingIOError:
            if not poller.poll(WRITE_TIMEOUT * 1000):
                raise TimeoutError("nobody read it for %g s" % WRITE_TIMEOUT) from None
