"""How a sandboxed command ended, as pyinit's exit report says, and the test side's errors.

pyinit (PID 1 of the sandbox, or a subreaper) reaps the command itself, so
its exit report is the source of every fact of a Result: the exit status,
the moment of the exit, the signals it received, and the processes still
running once its settle period was over (the leftovers). The sandbox only
adds what pyinit cannot see: the captured output and its own clock.
"""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass, field
from typing import List, Optional, Union

from pyinit import signals

SignalSpec = Union[int, str, signal.Signals]

# The longest wait poll(2) and epoll_wait(2) can count: milliseconds in a C int, about 24.8 days (select(2) and
# the thread locks go further). A longer timeout, infinity among them, is no limit in practice: it is taken as None.
LONGEST_WAIT = (2**31 - 1) / 1000

# Why a launcher's exit status can be lost: the kernel reaps the children of a process that ignores SIGCHLD.
SIGCHLD_IGNORED = "this process ignores SIGCHLD, so the kernel reaped pyinit in its place"


class SandboxError(Exception):
    """Something about a Sandbox went wrong (the base of the other errors here)."""


class TimeoutExpired(SandboxError, TimeoutError):
    """A wait ran out of time; the message holds the process tree at that moment."""

    def __init__(self, message: str, timeout: float, tree: str) -> None:
        super().__init__(message)
        self.timeout = timeout
        self.tree = tree


class CommandExited(SandboxError):
    """The command exited while a readiness wait was waiting for it."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class IsolationError(SandboxError):
    """isolate=True, and the kernel refuses the namespaces (the message says why)."""


class IsolationWarning(UserWarning):
    """isolate="auto" ran the command without namespaces: the message says why."""


@dataclass(frozen=True)
class Process:
    """One member of a sandbox, as the host's /proc showed it, or as pyinit's exit report named it."""

    pid: int  # inside the sandbox's PID namespace (the host PID when not isolated)
    host_pid: Optional[int]  # None for a leftover named by the exit report: it was killed with the namespace
    ppid: int  # inside; 0 for the sandbox's PID 1
    state: str  # the letter of /proc/PID/stat: R, S, D, Z, T, t, ...
    name: str  # the command name (comm), up to 15 characters
    argv: List[str]  # empty for a zombie

    @property
    def command(self) -> str:
        """The command line as one line (newlines escaped), or `[name]` for a zombie; for messages."""
        return " ".join(self.argv).replace("\n", "\\n") if self.argv else "[%s]" % self.name

    def __str__(self) -> str:
        command = self.command if len(self.command) <= 160 else self.command[:157] + "..."
        host = "" if self.host_pid is None else "host %d, " % self.host_pid
        return "PID %d (%sppid %d) %s %s" % (self.pid, host, self.ppid, self.state, command)


@dataclass(frozen=True)
class Result:
    """How a sandboxed command ended."""

    exit_code: int  # pyinit's: the command's exit code, 128+N when signal N killed it
    signal: Optional[str]  # the name of the signal that killed the command ("SIGTERM"), or None
    duration: float  # seconds from the command's start to its exit
    stdout: Optional[str]  # the captured text (its tail, with max_output), where piped
    stderr: Optional[str]
    # What still ran once pyinit's settle period after the command's exit was
    # over; None when unknown (pyinit wrote no report, or /proc could not tell).
    leftovers: Optional[List[Process]]
    report: Optional[dict]  # pyinit's exit report (docs/how-it-works.md, "The exit report"), None if it wrote none
    stop_duration: Optional[float] = None  # seconds from the first signal pyinit received to the exit
    argv: List[str] = field(default_factory=list)
    started: bool = True  # False when the command never ran (not found, not executable, pyinit failed)

    def received(self) -> dict:
        """Signals pyinit received, by name: {"SIGTERM": 1}."""
        return dict(self.report["signals"]["received"]) if self.report else {}

    def forwarded(self) -> dict:
        """Signals pyinit forwarded (after rewriting), by name."""
        return dict(self.report["signals"]["forwarded"]) if self.report else {}

    @property
    def exit_time(self) -> Optional[float]:
        """When the command exited, wall-clock seconds since the epoch, as pyinit saw it; None if unknown."""
        return self.report["timeline"]["child_exit"] if self.report else None


def make_result(argv: List[str], report_text: bytes, returncode: Optional[int], *, started: bool,
                duration: float, stdout: Optional[str], stderr: Optional[str], lost: Optional[str]) -> Result:
    """The Result from pyinit's report; without one, from what the sandbox saw (the launcher's `returncode` and all).

    The returncode is not to be trusted where the caller ignores SIGCHLD:
    the kernel reaps its children, and subprocess then says 0 whatever the
    status was. `lost`: why the launcher's status is lost, if it is.
    """
    try:
        report = json.loads(report_text) or None
    except ValueError:  # none, or cut short (pyinit killed while writing)
        report = None
    launcher_code = None
    if returncode is not None and signal.getsignal(signal.SIGCHLD) != signal.SIG_IGN:
        launcher_code = returncode if returncode >= 0 else 128 - returncode
    if report is not None:
        code = report["exit_code"]
        timeline = report["timeline"]
        exit_time, first_signal = timeline["child_exit"], timeline["first_signal"]
        if exit_time is not None:
            duration = max(0.0, exit_time - timeline["start"])
        stop = None if first_signal is None or exit_time is None else max(0.0, exit_time - first_signal)
        return Result(exit_code=code, signal=report["child"]["signal"], duration=duration, stdout=stdout,
                      stderr=stderr, leftovers=_leftovers(report), report=report, stop_duration=stop,
                      argv=list(argv), started=report["child"]["pid"] is not None)
    if launcher_code is None:
        raise SandboxError("pyinit wrote no exit report, and its exit status is lost: %s" % (lost or SIGCHLD_IGNORED))
    return Result(exit_code=launcher_code, signal=None, duration=duration, stdout=stdout, stderr=stderr,
                  leftovers=None, report=None, argv=list(argv), started=started)


def exec_result(argv: List[str], returncode: int, stdout: str, stderr: str, duration: float) -> Result:
    """The Result of a command run inside a sandbox (Sandbox.exec): no report, so no leftovers to speak of."""
    code = returncode if returncode >= 0 else 128 - returncode
    return Result(exit_code=code, signal=signals.name(-returncode) if returncode < 0 else None, duration=duration,
                  stdout=stdout, stderr=stderr, leftovers=None, report=None, argv=list(argv),
                  started=code not in (125, 126, 127))


def _leftovers(report: dict) -> Optional[List[Process]]:
    entries = report["leftovers"]
    if entries is None:
        return None
    return [Process(entry["pid"], None, entry["ppid"], entry["state"], entry["name"], list(entry["argv"]))
            for entry in entries]


def wait_limit(timeout: Optional[float], name: str = "timeout") -> Optional[float]:
    """A caller's timeout (the argument `name`) as the waits take it: seconds, or None for no limit (also
    for one longer than LONGEST_WAIT, which the clock primitives refuse with OverflowError); ValueError
    for nan or a negative number, which no wait can mean."""
    if timeout is None:
        return None
    seconds = float(timeout)  # TypeError for what is not a number
    if not seconds >= 0:  # nan fails every comparison
        raise ValueError("%s must be a number of seconds, 0 or more, or None for no limit, not %r" % (name, timeout))
    return None if seconds > LONGEST_WAIT else seconds


def signal_number(sig: SignalSpec) -> int:
    """A signal from a number, a signal.Signals, or a name ("TERM", "SIGTERM", "RTMIN+2")."""
    if isinstance(sig, str):
        return signals.parse(sig)
    number = int(sig)
    if number not in signals.VALID:
        raise ValueError("%d is not a signal number this system knows" % number)
    return number
