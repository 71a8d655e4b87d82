"""`pyinit-check --bare`: the command itself is PID 1 (no init), and the question is whether it needs one.

An init does two things for a service that a PID 1 must otherwise do
itself (DESIGN.md, the kernel facts):

- the kernel drops a signal whose action is the default when it is sent
  to PID 1 of a namespace: a service with no handler for the stop signal
  ignores it as PID 1, and `docker stop` SIGKILLs it at the end of its
  grace period;
- orphans of the namespace are re-parented to PID 1: one that never waits
  for processes it did not start collects their zombies.

There is no init to say so, so this is judged from outside. The sandbox
runs without one (Sandbox(init=False)): the launcher reaps the command and
reports its exit. A Watch samples the members from the host's /proc every
INTERVAL seconds, from the start to the exit, and pyinit-check watches for
WATCH seconds after readiness before it sends the signal:

- ignored the signal as PID 1: the stop failed (still running at
  --within, or SIGKILLed at the end of --grace) and the last sample of
  PID 1's /proc/PID/status shows the signal neither caught (SigCgt), nor
  ignored (SigIgn), nor blocked (SigBlk), and its default action ends a
  process. (Caught, ignored or blocked, it would not
  stop under an init either: that is the service's own doing.)
- left zombies unreaped: zombies whose parent is PID 1 (its adopted
  orphans; /proc cannot tell them from children it started and never
  waited for, which an init would not reap either, but which are as much a
  leak) seen as zombies in samples MOMENT seconds apart or more.

No leftovers are possible: the kernel SIGKILLs every other member when
PID 1 exits, and the launcher reaps PID 1 after they are all gone.
"""

from __future__ import annotations

import argparse
import contextlib
import threading
import time
from typing import Dict, Iterator, List, Optional, Tuple

from pyinit import proc, signals
from pyinit.check.verdicts import Check, Run
from pyinit.sandbox import Process, Sandbox

WATCH = 2.0  # seconds the members are watched from readiness before the signal: enough to see a zombie stay
MOMENT = 1.0  # seconds a zombie of PID 1 may stay one before it counts as left unreaped
INTERVAL = 0.1  # seconds between two samples of the members
# The signals whose default action does not end a process: ignored by default, or stopping it. Unhandled,
# these would not have stopped it under an init either.
_DEFAULT_KEEPS_RUNNING = frozenset(signals.parse(name) for name in
                                   ("CHLD", "CONT", "URG", "WINCH", "STOP", "TSTP", "TTIN", "TTOU"))
DROPPED_AS_PID1 = "the kernel drops a signal with the default action sent to PID 1"


class Watch:
    """Samples a bare sandbox's members on a thread: its PID 1's signal masks, the zombies whose parent it is."""

    def __init__(self, box: Sandbox, signo: int) -> None:
        self.box, self.signo = box, signo
        self.masks: Dict[str, int] = {}  # SigCgt, SigIgn, SigBlk of PID 1, as last sampled
        self.at_signal: Dict[str, int] = {}  # the same, as sampled last before the signal
        self.zombies: Dict[Tuple[int, int], Tuple[float, float, Process]] = {}  # (host PID, start) -> first, last seen
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pyinit-check bare watch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._done.is_set():
            try:
                self.sample()
            except OSError:  # no descriptor left to read /proc with: the next sample may have one
                pass
            self._done.wait(INTERVAL)

    def sample(self) -> None:
        """One look at the members: PID 1's masks, and every zombie child of it, told apart by its start time."""
        found = self.box.processes()
        now = time.monotonic()
        if not found or found[0].host_pid is None:
            return  # it has ended
        status = proc.status(found[0].host_pid)
        if status:
            self.masks = {name: int(status.get(name, "0"), 16) for name in ("SigCgt", "SigIgn", "SigBlk")}
        for member in found[1:]:
            if member.state != "Z" or member.ppid != 1 or member.host_pid is None:
                continue
            info = proc.stat(member.host_pid)
            if info is None or info.state != "Z":
                continue  # reaped since
            key = (member.host_pid, info.start_time)
            first = self.zombies[key][0] if key in self.zombies else now
            self.zombies[key] = (first, now, member)

    def before_signal(self) -> None:
        """Watch WATCH seconds more before the signal: a zombie has to be seen staying one."""
        time.sleep(WATCH)
        self.at_signal = self.masks

    def unreaped(self) -> List[Tuple[Process, float]]:
        """The zombies of PID 1 seen MOMENT seconds apart or more, and for how long, in the order they came."""
        return [(member, last - first) for first, last, member in sorted(self.zombies.values(), key=lambda z: z[0])
                if last - first >= MOMENT]

    def disposition(self, masks: Dict[str, int]) -> Optional[str]:
        """What PID 1 did with the signal by `masks`: "caught", "ignored", "blocked", "default"; None if never seen."""
        if not masks:
            return None
        bit = 1 << (self.signo - 1)
        for name, mask in (("caught", "SigCgt"), ("ignored", "SigIgn"), ("blocked", "SigBlk")):
            if masks[mask] & bit:
                return name
        return "default"


@contextlib.contextmanager
def watching(box: Sandbox, options: argparse.Namespace, run: Run) -> Iterator[Optional[Watch]]:
    """With --bare, a Watch of `box` for the whole block, and its verdicts added to `run` after it; else None."""
    if not options.bare:
        yield None
        return
    watch = Watch(box, options.signo)
    watch.start()
    try:
        yield watch
    finally:
        watch.stop()
    if run.result is not None and run.checks:
        judge(watch, options, run)


def judge(watch: Watch, options: argparse.Namespace, run: Run) -> None:
    """Add the bare verdicts to `run`: no leftovers said as it is, the zombies, and last whether it needs an init."""
    name = signals.name(options.signo)
    for index, check in enumerate(run.checks):
        if check.name == "no leftovers" and check.passed:
            run.checks[index] = Check(check.name, True, "nothing can be left running: the kernel SIGKILLed every "
                                                        "other member when PID 1 exited")
    unreaped = watch.unreaped()
    if unreaped:
        named = "; ".join("%s (PID %d, %.1f s)" % (zombie.command, zombie.pid, seconds) for zombie, seconds in unreaped)
        zombies = Check("reaps the zombies it adopts", False,
                        "left %s of PID 1 unreaped more than %g s: %s" % (_zombies(len(unreaped)), MOMENT, named))
    else:
        zombies = Check("reaps the zombies it adopts", True, "no zombie of PID 1 stayed one more than %g s (%d seen)"
                        % (MOMENT, len(watch.zombies)))
    missed = _ran_on(run)
    # Still running, as last seen; else as it was at the signal (a Python service that exits on it resets its handlers).
    disposition = watch.disposition(watch.masks if missed else watch.at_signal)
    ignored = missed and disposition == "default" and options.signo not in _DEFAULT_KEEPS_RUNNING
    reasons = (["it ignored %s as PID 1: %s" % (name, DROPPED_AS_PID1)] if ignored else []) + \
              (["it left %s unreaped" % _zombies(len(unreaped))] if unreaped else [])
    if reasons:
        verdict = "needs an init: " + ", and ".join(reasons)
    else:
        verdict = "does not need an init: %s, and left no zombie unreaped" % _how_it_took(name, run, disposition)
    run.checks += [zombies, Check("runs without an init", not reasons, verdict)]
    run.bare = {
        "needs_init": bool(reasons),
        "signal": {"name": name, "disposition": disposition, "ignored_as_pid1": ignored},
        "zombies_unreaped": [{"pid": zombie.pid, "name": zombie.name, "seconds": round(seconds, 2)}
                             for zombie, seconds in unreaped],
        "zombies_seen": len(watch.zombies),
    }


def _ran_on(run: Run) -> bool:
    """Whether the signal did not stop it: still running at --within (the tree at a missed deadline), or
    SIGKILLed by the launcher at the end of --grace, as a runtime's stop timeout does."""
    report = run.result.report if run.result is not None else None
    return run.tree is not None or bool(report and report["grace"]["killed"])


def _zombies(count: int) -> str:
    return "%d zombie%s" % (count, "" if count == 1 else "s")


_DOES = {"caught": "handles", "ignored": "ignores", "blocked": "blocks"}


def _how_it_took(name: str, run: Run, disposition: Optional[str]) -> str:
    """What the service did with the signal, when that did not call for an init."""
    assert run.result is not None
    if name not in run.result.received():  # the launcher never relayed it: the command had ended
        return "it had exited before %s" % name
    if not _ran_on(run):
        return "it stopped on %s as PID 1" % name
    if disposition in _DOES:
        return "it %s %s itself, as it would under an init" % (_DOES[disposition], name)
    if disposition is None:
        return "what it did with %s is not known (it was never seen running)" % name
    return "%s does not end a process by default, under an init either" % name
