"""Shutdown policy: the grace period, the SIGTERM delay, and draining what is left.

Orchestrators stop a container with SIGTERM and, a grace period later,
SIGKILL. Three timers let pyinit fit in between:

- `--term-delay`: hold a received SIGTERM before forwarding it, so a load
  balancer can stop sending traffic first; a second SIGTERM or a SIGINT cuts
  the wait short.
- `--grace`: once a terminating signal has been forwarded, SIGKILL the
  child's process group if the child has not exited in time.
- `--drain`: once the child has exited, SIGTERM whatever it left behind,
  reap for a while, SIGKILL the rest. As PID 1 this is optional, because the
  kernel kills the rest of the namespace when PID 1 exits; as a subreaper
  nobody would, so it is on by default (SUBREAPER_DRAIN seconds).

The timers are deadlines on the monotonic clock; the PID-1 loop sleeps in
sigtimedwait(2) until the nearest one, and in sigwaitinfo(2), with no timeout
at all, while none is set.
"""

import os
import time

from pyinit import log, proc, signals
from pyinit.report import Report

api = signals.api
TERMINATING = frozenset({api.SIGTERM, api.SIGINT, api.SIGQUIT, api.SIGHUP})
SUBREAPER_DRAIN = 2.0  # seconds a subreaper gives leftovers between SIGTERM and SIGKILL


class Policy:
    """The timers of one supervised child, and the report of what they did."""

    def __init__(self, child: int, single_child: bool, grace: "float | None", term_delay: float,
                 drain: "float | None", report: Report) -> None:
        self.child = child
        self.single_child = single_child
        self.grace = grace
        self.term_delay = term_delay
        self.drain_seconds = drain
        self.report = report
        report.child_pid = child
        report.grace["seconds"] = grace
        report.drain["seconds"] = drain
        self.kill_at: "float | None" = None  # when --grace runs out
        self.release_at: "float | None" = None  # when a held SIGTERM is due

    def timeout(self) -> "float | None":
        """Seconds until the nearest deadline, or None to wait without one."""
        deadlines = [d for d in (self.kill_at, self.release_at) if d is not None]
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def admit(self, signo: int, rewritten: int) -> "list[int]":
        """The signals to forward now for received `signo` (none while a SIGTERM is held).

        `rewritten` is what `signo` will be forwarded as: it decides whether
        this is the first terminating signal, as it does for the grace timer.
        """
        if rewritten in TERMINATING:
            self.report.mark("first_terminating_signal")
        if self.release_at is not None and signo in (api.SIGTERM, api.SIGINT):
            log.info("%s cuts the SIGTERM delay short", signals.name(signo))
            self.release_at = None
            return [api.SIGTERM] if signo == api.SIGTERM else [api.SIGTERM, signo]
        if signo == api.SIGTERM and self.term_delay and self.release_at is None:
            log.info("holding SIGTERM for %g s", self.term_delay)
            self.release_at = time.monotonic() + self.term_delay
            return []
        return [signo]

    def forwarded(self, target: int) -> None:
        """A signal went to the child: start the grace period if it asks the child to end."""
        if target in TERMINATING and self.grace is not None and self.kill_at is None:
            self.kill_at = time.monotonic() + self.grace

    def expired(self) -> "list[int]":
        """Act on the deadlines that have passed; return the signals now due for forwarding."""
        now = time.monotonic()
        due = []
        if self.release_at is not None and now >= self.release_at:
            self.release_at = None
            due.append(api.SIGTERM)
        if self.kill_at is not None and now >= self.kill_at:
            self.kill_at = None
            self._kill_child()
        return due

    def _kill_child(self) -> None:
        if self.single_child:
            count = 1
        else:
            count = sum(1 for pid in descendants() if _process_group(pid) == self.child)
        log.warning("the child did not exit within the %g s grace period: sending SIGKILL", self.grace)
        try:
            if self.single_child:
                os.kill(self.child, api.SIGKILL)
            else:
                os.killpg(self.child, api.SIGKILL)
        except ProcessLookupError:
            return
        self.report.grace.update(killed=True, processes=count)

    def drain(self) -> None:
        """After the child's exit: SIGTERM what is left, reap, SIGKILL what outlives the drain."""
        if self.drain_seconds is None or not _signal_leftovers(api.SIGTERM):
            return
        log.info("draining: SIGTERM sent to what the child left, %g s before SIGKILL", self.drain_seconds)
        deadline = time.monotonic() + self.drain_seconds
        while _reap_leftovers(self.report):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            api.sigtimedwait({api.SIGCHLD}, remaining)
        else:
            return
        killed = _signal_leftovers(api.SIGKILL)
        log.warning("drain over: SIGKILL sent to %d process(es)", killed)
        self.report.drain.update(killed=True, processes=killed)
        while _reap_leftovers(self.report):
            api.sigtimedwait({api.SIGCHLD}, 0.1)
            _signal_leftovers(api.SIGKILL)  # one may have forked while we killed


def descendants() -> "list[int]":
    """Every process below pyinit; empty when /proc is not our own namespace's (see proc.py)."""
    return proc.descendants(os.getpid()) if proc.is_own_namespace() else []


def _process_group(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except OSError:
        return 0


def _signal_leftovers(signo: int) -> int:
    """Send `signo` to every descendant; return how many there were.

    As PID 1, kill(-1) reaches everything in the namespace but us, with no
    race against processes being created while we look.
    """
    leftovers = descendants()
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


def _reap_leftovers(report: Report) -> bool:
    """Reap what has exited; return whether any child is left."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True
        report.zombies_reaped += 1
