"""Shutdown policy: the grace period, the SIGTERM delay, settling and draining what is left.

Orchestrators stop a container with SIGTERM and, a grace period later,
SIGKILL. Four timers let pyinit fit in between:

- `--term-delay`: hold a received SIGTERM before forwarding it, so a load
  balancer can stop sending traffic first; a second SIGTERM or a SIGINT cuts
  the wait short.
- `--grace`: once a terminating signal has been forwarded, SIGKILL the
  child's process group if the child has not exited in time.
- `--settle`: once the child has exited, give what it left a moment to exit
  on its own (workers dying of the same signal), reaping it, before the
  exit report lists what still runs and before the drain.
- `--drain`: once the child has exited, SIGTERM whatever it left behind,
  reap for a while, SIGKILL the rest. As PID 1 this is optional, because the
  kernel kills the rest of the namespace when PID 1 exits; as a subreaper
  nobody would, so it is on by default (SUBREAPER_DRAIN seconds).

`Policy` only decides: it keeps the deadlines on a clock it is given (the
monotonic clock; tests pass their own) and says what is due, and the PID-1
loop in init.py does the sending and the reaping. The loop sleeps in
sigtimedwait(2) until the nearest deadline, and in sigwaitinfo(2), with no
timeout at all, while none is set. The functions below the class are what
the loop needs of /proc and kill(2) for the grace period and the drain.
"""

import os
import time

from pyinit import log, proc, signals
from pyinit.report import Report

api = signals.api
TERMINATING = frozenset({api.SIGTERM, api.SIGINT, api.SIGQUIT, api.SIGHUP})
SUBREAPER_DRAIN = 2.0  # seconds a subreaper gives leftovers between SIGTERM and SIGKILL
# The longest single wait: a deadline further away is waited for in steps,
# since sigtimedwait(2) cannot take every float (9.3e9 s overflows it).
LONGEST_WAIT = 86400.0


class Policy:
    """The timers of one supervised child, and the report of what happened."""

    def __init__(self, grace: "float | None", term_delay: float, drain: "float | None", report: Report,
                 clock=time.monotonic, settle: float = 0.0) -> None:
        self.grace = grace
        self.term_delay = term_delay
        self.drain_seconds = drain
        self.settle_seconds = settle
        self.report = report
        self.clock = clock
        report.grace["seconds"] = grace
        report.drain["seconds"] = drain
        report.settle["seconds"] = settle
        self.kill_at: "float | None" = None  # when --grace runs out
        self.release_at: "float | None" = None  # when the held SIGTERM is due
        self.held = 0  # what the held SIGTERM is forwarded as (after rewriting); 0: none held

    def timeout(self) -> "float | None":
        """Seconds until the nearest deadline (at most LONGEST_WAIT), or None to wait without one."""
        if self.kill_at is None and self.release_at is None:
            return None
        nearest = min(d for d in (self.kill_at, self.release_at) if d is not None)
        return min(max(0.0, nearest - self.clock()), LONGEST_WAIT)

    def admit(self, signo: int, target: int) -> "list[int]":
        """What to send the child now for received `signo`, forwarded as `target` (nothing while it holds a SIGTERM).

        The term delay holds the received SIGTERM, whatever it is rewritten
        to; what is terminating is judged on `target`, as for the grace.
        """
        if target in TERMINATING:
            self.report.mark("first_terminating_signal")
        if self.held and signo in (api.SIGTERM, api.SIGINT):
            log.info("%s cuts the SIGTERM delay short", signals.name(signo))
            held, self.held, self.release_at = self.held, 0, None
            return [held] if signo == api.SIGTERM else [held, target]
        if signo == api.SIGTERM and self.term_delay:
            log.info("holding SIGTERM for %g s", self.term_delay)
            self.held, self.release_at = target, self.clock() + self.term_delay
            return []
        return [target]

    def forwarded(self, target: int) -> None:
        """`target` went to the child: start the grace period if it asks the child to end."""
        if target in TERMINATING and self.grace is not None and self.kill_at is None:
            self.kill_at = self.clock() + self.grace

    def expired(self) -> "list[int]":
        """What is due now the clock has moved: the held SIGTERM, and SIGKILL once the grace is over."""
        now = self.clock()
        due = []
        if self.release_at is not None and now >= self.release_at:
            due.append(self.held)
            self.held, self.release_at = 0, None
        if self.kill_at is not None and now >= self.kill_at:
            self.kill_at = None
            due.append(api.SIGKILL)
        return due


def descendants() -> "list[int] | None":
    """Every process below pyinit; None where /proc cannot tell (not our own namespace's, see proc.py, or no descriptor left).

    A process with no child at all has nothing below it: the kernel says so
    (waitid's ECHILD, asked with WNOWAIT so that nothing is reaped here) with
    no /proc to read, which is the common end of a drain.
    """
    try:
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WSTOPPED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return []
    try:
        return proc.descendants(os.getpid()) if proc.is_own_namespace() else None
    except OSError:
        return None


def running() -> "list[dict] | None":
    """What still runs below pyinit, as the exit report lists it; None where /proc cannot tell.

    A zombie is not running: it has exited, and only waits for a parent
    that is still alive (and listed) to reap it.
    """
    below = descendants()
    if below is None:
        return None
    found = []
    try:
        for pid in below:
            info = proc.stat(pid)
            if info is not None and info.state not in "ZX":
                found.append({"pid": pid, "ppid": info.ppid, "name": info.name, "argv": proc.cmdline(pid),
                              "state": info.state})
    except OSError:  # no descriptor left: an incomplete list would pass for a complete one
        return None
    return found


def count_group(pgid: int) -> int:
    """How many of our descendants are in process group `pgid`, for the report (at least 1: its leader)."""
    return max(1, sum(1 for pid in descendants() or () if _process_group(pid) == pgid))


def _process_group(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except OSError:
        return 0


def signal_leftovers(signo: int) -> int:
    """Send `signo` to every descendant; return how many there were.

    As PID 1, kill(-1) reaches everything in the namespace but us, with no
    race against processes being created while we look, and even where
    /proc cannot tell what there is.
    """
    leftovers = descendants() or []
    if os.getpid() == 1:
        try:
            os.kill(-1, signo)
        except ProcessLookupError:  # nobody left
            return 0
        return max(len(leftovers), 1)  # at least one, even where /proc cannot count them
    for pid in leftovers:
        try:
            os.kill(pid, signo)
        except ProcessLookupError:
            pass
    return len(leftovers)
