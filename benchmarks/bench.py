#!/usr/bin/env python3
"""pyinit side by side with tini, dumb-init and catatonit, each as PID 1 of a fresh namespace.

    python3 benchmarks/bench.py [--quick] [--json PATH] [--only NAME,...]

Needs root (for `unshare --pid --mount-proc`) and installs the missing inits
with apt-get. Every contender runs as `unshare --fork --pid --mount-proc INIT
-- CMD`; contenders take turns round-robin in every measurement so machine
drift hits them all alike; results are medians and ratios from this one run.
benchmarks/README.md says what each row measures and why it is fair.
Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
UNSHARE = ("unshare", "--fork", "--pid", "--mount-proc")
PY = sys.executable  # the interpreter the targets are judged on
CLEAN_PY = "/usr/bin/python3"  # Debian's, without site-packages hooks: extra information
HELPER = (PY, "-I", "-S", "-c")  # the child programs below: the same for every init
APT_PACKAGES = ("tini", "dumb-init", "catatonit", "strace")  # Debian package name == program name; strace: the start-up window
INSTALLED = "installed"  # the judged table: pyinit as users install it (see installed_start_up)
SOURCE_TREE = "source tree"  # the information table: `PY -m pyinit` from the repository

# Settings per mode: (default, --quick).
SETTINGS = {
    "startup_rounds": (100, 15),
    "memory_rounds": (3, 1),
    "idle_window_s": (5.0, 2.0),
    "reap_rounds": (24, 4),
    "orphans": (1000, 1000),
    "round_trips": (1000, 200),
    "teardown_rounds": (40, 6),
    "group_size": (50, 50),
    "rt_copies": (10, 4),
    "window_rounds": (30, 6),
    "storm_rounds": (3, 1),
    "storm_seconds": (10.0, 10.0),
    "traffic_rounds": (5, 2),
    "traffic_seconds": (2.0, 1.0),
}


# ---------------------------------------------------------------- contenders

@dataclass(frozen=True)
class Contender:
    """One column: `prefix + CMD` runs CMD under this init, as PID 1 of a new namespace.

    The init is always the first child of the process we start (unshare's
    forked child, which execs the init). A launcher (`pyinit --unshare --`)
    fits the same shape: its first child is the init too.
    """

    name: str
    prefix: tuple

    def argv(self, *cmd: str) -> list:
        return [*self.prefix, *cmd]


def pyinit(python: str) -> tuple:
    return (*UNSHARE, python, "-m", "pyinit", "--")


def has_clean_python() -> bool:
    return os.path.exists(CLEAN_PY) and os.path.realpath(CLEAN_PY) != os.path.realpath(PY)


def inits() -> list:
    found = [
        Contender("tini", (*UNSHARE, "tini", "--")),
        Contender("dumb-init", (*UNSHARE, "dumb-init")),
        Contender("catatonit", (*UNSHARE, "catatonit", "--")),
        Contender("pyinit", pyinit(PY)),
    ]
    if has_clean_python():
        found.append(Contender("pyinit (clean py)", pyinit(CLEAN_PY)))
    return found


# The bare interpreter each pyinit column is compared with (same prefix, same flags).
BARE = {"pyinit": ("python", PY), "pyinit (clean py)": ("python (clean)", CLEAN_PY)}


def bare_pythons() -> dict:
    return {BARE[c.name][0]: BARE[c.name][1] for c in inits() if c.name in BARE}


def interleaved(names: list, rounds: int, warmup: int = 1):
    """Yield (round, name): every name once per round, the starting one rotating.

    Rounds below 0 are warm-up rounds, to be thrown away.
    """
    for r in range(-warmup, rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            yield r, name


# ------------------------------------------------------------------ plumbing

def read_text(path: str) -> str:
    with open(path) as f:
        return f.read()


def children(pid: int) -> list:
    try:
        return [int(p) for p in read_text("/proc/%d/task/%d/children" % (pid, pid)).split()]
    except FileNotFoundError:
        return []


def status_field(pid: int, key: str) -> int:
    """A number from /proc/PID/status (VmRSS in kB, ctxt switches...)."""
    for line in read_text("/proc/%d/status" % pid).splitlines():
        name, _, value = line.partition(":")
        if name == key:
            return int(value.split()[0])
    raise KeyError(key)


def context_switches(pid: int) -> int:
    return status_field(pid, "voluntary_ctxt_switches") + status_field(pid, "nonvoluntary_ctxt_switches")


def comm(pid: int) -> str:
    try:
        return read_text("/proc/%d/comm" % pid).strip()
    except FileNotFoundError:
        return ""


def wait_for(condition, what: str, timeout: float = 30.0, step: float = 0.005):
    """Poll `condition()` until it returns something true; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for " + what)
        time.sleep(step)


def readable(fd: int, timeout: float, what: str) -> None:
    if not select.select([fd], [], [], timeout)[0]:
        raise RuntimeError("timed out waiting for " + what)


class Run:
    """A contender running in its namespace: the top process, and the init's host PID.

    A command that does not start with `unshare` is the init itself (pyinit
    as a subreaper, a bare interpreter): no namespace, the top process is it.
    """

    def __init__(self, argv: list, capture: bool = False, quiet: bool = False) -> None:
        self.argv = argv
        in_namespace = tuple(argv[:len(UNSHARE)]) == UNSHARE
        self.what = " ".join(argv[len(UNSHARE) if in_namespace else 0:])[:60]  # for messages
        self.proc = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL if quiet else None)
        self.top_fd = os.pidfd_open(self.proc.pid)
        self.pid = (wait_for(lambda: children(self.proc.pid)[:1], "the init of " + self.what)[0] if in_namespace
                    else self.proc.pid)
        # A pidfd, so a signal can never hit a recycled PID (1000 orphans a run go fast).
        self.init_fd = os.pidfd_open(self.pid)

    def signal(self, signo: int) -> None:
        signal.pidfd_send_signal(self.init_fd, signo)

    def read(self, size: int = 1, timeout: float = 30.0) -> bytes:
        """Up to `size` bytes the command wrote on its stdout (b"" at end of file)."""
        fd = self.proc.stdout.fileno()
        readable(fd, timeout, "output of " + self.what)
        return os.read(fd, size)

    def ready(self) -> None:
        """Wait for the command's "R" on stdout; fail clearly if the init ended instead."""
        if self.read() != b"R":
            raise RuntimeError("%s ended before its command was ready (exit status %s)"
                               % (self.what, self.proc.wait()))

    def read_all(self, timeout: float = 60.0) -> bytes:
        chunks = [self.read(65536, timeout)]
        while chunks[-1]:
            chunks.append(self.read(65536, timeout))
        return b"".join(chunks)

    def wait_exit(self, timeout: float = 30.0) -> float:
        """Block until the top process exits; return perf_counter() at that moment."""
        readable(self.top_fd, timeout, self.what + " to exit")
        moment = time.perf_counter()
        self.proc.wait()
        return moment

    def close(self) -> None:
        """Kill the init's children (so every init exits its ordinary way), then the init."""
        if self.proc.poll() is None and children(self.pid):
            for pid in children(self.pid):
                with contextlib.suppress(OSError):
                    child_fd = os.pidfd_open(pid)
                    signal.pidfd_send_signal(child_fd, signal.SIGKILL)
                    os.close(child_fd)
            with contextlib.suppress(RuntimeError):
                self.wait_exit(timeout=5)
        if self.proc.poll() is None:
            # SIGKILL to PID 1 empties the namespace; unshare then complains that it
            # cannot re-raise SIGKILL on itself ("sigprocmask unblock failed").
            with contextlib.suppress(ProcessLookupError):
                self.signal(signal.SIGKILL)
            self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        os.close(self.init_fd)
        os.close(self.top_fd)


@contextlib.contextmanager
def running(argvs: dict, capture: bool = False, quiet: tuple = ()):
    """Start every command of {name: argv} at once; yield {name: Run}; kill what is left.

    The names in `quiet` get no stderr (the bare interpreters, killed by SIGKILL).
    """
    with contextlib.ExitStack() as stack:
        runs = {}
        for name, argv in argvs.items():
            runs[name] = Run(argv, capture, quiet=name in quiet)
            stack.callback(runs[name].close)
        yield runs


def wait_idle(pid: int, child: str = "") -> None:
    """Until `pid` sleeps with a steady resident set (and runs a child called `child`)."""
    last = []

    def settled() -> bool:
        if child and child not in [comm(c) for c in children(pid)]:
            return False
        state = read_text("/proc/%d/stat" % pid).rpartition(")")[2].split()[0]
        last.append(status_field(pid, "VmRSS") if state == "S" else -1)
        return len(last) >= 4 and len(set(last[-4:])) == 1 and last[-1] > 0

    wait_for(settled, "pid %d to settle" % pid, step=0.1)


NULL_STDIO = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
              (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)]


def time_command(argv: list) -> "tuple[float, float]":
    """Run `argv` in the repository; return (wall seconds, CPU seconds of it and all it waited for)."""
    start = time.perf_counter()
    pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=NULL_STDIO)
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - start
    if status != 0:
        raise RuntimeError("%s failed: wait status %d" % (" ".join(argv), status))
    return elapsed, usage.ru_utime + usage.ru_stime


def quantile(values: list, q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# ---------------------------------------------------------------------- rows

@dataclass
class Row:
    """One line of a table: a summary value per column, raw samples, and the verdict.

    `subject` is pyinit's column, the one the ratio and the target are about.
    `table` says which table the row goes in: the judged rows are those of
    pyinit installed as users install it; the rest are about pyinit run from
    the source tree, on the benchmark's own interpreter.
    """

    key: str
    label: str
    fmt: str  # how a value is printed, e.g. "{:.1f}"
    samples: dict = field(default_factory=dict)  # column -> [raw values]
    values: dict = field(default_factory=dict)  # column -> summary
    ratio: "float | None" = None  # pyinit against its reference, judged on the target
    clean_ratio: "float | None" = None  # the same for pyinit on the clean interpreter
    reference: str = ""  # what the ratio divides by
    target: str = ""
    passed: "bool | None" = None
    extra: dict = field(default_factory=dict)  # more raw data, for the JSON only
    subject: str = "pyinit"
    table: str = SOURCE_TREE

    def summarise(self, how=statistics.median) -> "Row":
        self.values = {name: how(values) for name, values in self.samples.items()}
        return self

    def compare(self, reference: str, clean_reference: str = "") -> "Row":
        """Ratios pyinit / reference, and pyinit on the clean interpreter / its reference."""
        self.reference = reference
        self.ratio = _ratio(self.values[self.subject], self.values[reference])
        if "pyinit (clean py)" in self.values:
            self.clean_ratio = _ratio(self.values["pyinit (clean py)"], self.values[clean_reference or reference])
        return self

    def versus(self, reference: str, limit: float, clean_reference: str = "") -> "Row":
        """Judge pyinit / reference <= limit; the clean-interpreter ratio is information."""
        self.compare(reference, clean_reference)
        return self.judge(limit)

    def judge(self, limit: float) -> "Row":
        self.target = "<= %.2f x %s" % (limit, self.reference)
        self.passed = self.ratio is not None and self.ratio <= limit
        return self


def _ratio(value: float, reference: float) -> "float | None":
    """value / reference; None where the reference measured 0 (a CPU time below one clock tick, say)."""
    return value / reference if reference else None


# -------------------------------------------------------------- measurements

def start_up_commands() -> dict:
    """What the start-up rows time: every init over `true`, and each bare interpreter."""
    argvs = {c.name: c.argv("true") for c in inits()}
    for name, python in bare_pythons().items():
        argvs[name] = [*UNSHARE, python, "-c", "pass"]
    return argvs


def start_up(s: dict) -> list:
    """`INIT -- true` beside the bare interpreter `PY -c pass`, both under the same unshare."""
    argvs = start_up_commands()
    wall = Row("startup", "start-up `INIT -- true`, wall (ms)", "{:.1f}")
    cpu = Row("startup_cpu", "start-up, CPU user+sys (ms)", "{:.1f}")
    wall.samples = {name: [] for name in argvs}
    cpu.samples = {name: [] for name in argvs}
    for r, name in interleaved(list(argvs), s["startup_rounds"]):
        elapsed, used = time_command(argvs[name])  # cwd: main() moved to REPO
        if r >= 0:
            wall.samples[name].append(elapsed * 1e3)
            cpu.samples[name].append(used * 1e3)
    return [wall.summarise().compare("python", "python (clean)"),
            cpu.summarise().compare("python", "python (clean)")]


def launcher_start_up(s: dict) -> list:
    """`pyinit --unshare -- true` against what it replaces: util-linux unshare plus one interpreter start.

    The launcher makes the namespaces and forks the init in the same
    interpreter, so its cost should be one bare interpreter start (`PY -c
    pass`, no namespace) plus the namespace work that `unshare --fork --pid
    --mount-proc true` measures; `unshare ... tini -- true` is shown beside it.
    """
    argvs = {
        "pyinit --unshare": [PY, "-m", "pyinit", "--unshare", "--", "true"],
        "unshare": [*UNSHARE, "true"],
        "unshare + tini": [*UNSHARE, "tini", "--", "true"],
        "python, no namespace": [PY, "-c", "pass"],
    }
    row = Row("launcher_startup", "launcher start-up `--unshare -- true`, wall (ms)", "{:.1f}")
    row.samples = {name: [] for name in argvs}
    for r, name in interleaved(list(argvs), s["startup_rounds"]):
        elapsed, _ = time_command(argvs[name])
        if r >= 0:
            row.samples[name].append(elapsed * 1e3)
    row.summarise()
    budget = row.values["python, no namespace"] + row.values["unshare"]
    row.ratio = row.values["pyinit --unshare"] / budget
    row.reference = "(python + unshare)"
    return [row]


IDLE_PYTHON = "import time; time.sleep(1000)"


def idle_memory(s: dict) -> list:
    """VmRSS of the init idling over `sleep 1000`, beside a bare idle interpreter."""
    argvs = {c.name: c.argv("sleep", "1000") for c in inits()}
    for name, python in bare_pythons().items():
        argvs[name] = [*UNSHARE, python, "-c", IDLE_PYTHON]
    row = Row("memory", "idle resident memory, VmRSS (MiB)", "{:.2f}")
    row.samples = {name: [] for name in argvs}
    row.extra["RssAnon_MiB"] = anon = {name: [] for name in argvs}  # the private part
    with_sleep = {c.name for c in inits()}
    for _ in range(s["memory_rounds"]):  # all at once: idle processes do not disturb each other
        with running(argvs, quiet=tuple(bare_pythons())) as runs:
            for name, run in runs.items():
                wait_idle(run.pid, child="sleep" if name in with_sleep else "")
            for name, run in runs.items():
                row.samples[name].append(status_field(run.pid, "VmRSS") / 1024)
                anon[name].append(status_field(run.pid, "RssAnon") / 1024)
    return [row.summarise().compare("python", "python (clean)")]


def idle_wakeups(s: dict) -> list:
    """Context switches of each init, idle over `sleep 1000`, during the same window."""
    window = s["idle_window_s"]
    row = Row("wakeups", "context switches while idle (per %g s)" % window, "{:.0f}")
    with running({c.name: c.argv("sleep", "1000") for c in inits()}) as runs:
        for run in runs.values():
            wait_idle(run.pid, child="sleep")
        before = {name: context_switches(run.pid) for name, run in runs.items()}
        time.sleep(window)
        row.samples = {name: [context_switches(run.pid) - before[name]] for name, run in runs.items()}
    row.summarise()
    row.target = "= 0"
    row.passed = row.values["pyinit"] == 0
    return [row]


# The child: hands N orphans to PID 1 twice and times, each time, until PID 1
# has reaped them all (only this program is left among PID 1's children).
# 1. "stream": N living orphans (a helper forks them, then exits) that exit one
#    after another when released, like falling dominoes: orphan i holds the
#    only write end of the pipe orphan i+1 waits on, so its exit releases the
#    next. A steady stream of exits, one SIGCHLD each if the init keeps up.
# 2. "zombies": N processes that have already exited, unreaped, handed to PID 1
#    at once by their parent's exit: one SIGCHLD, the init's reap loop alone.
# Prints per phase: wall ns, PID 1's CPU ns (schedstat), PID 1's wake-ups.
ORPHANS = r"""
import os, select, sys, time
n = int(sys.argv[1])
me = [str(os.getpid())]
def children():
    with open("/proc/1/task/1/children") as f:
        return f.read().split()
def cpu_ns():
    with open("/proc/1/schedstat") as f:
        return int(f.read().split()[0])
def wakeups():
    with open("/proc/1/status") as f:
        return int([l for l in f if l.startswith("voluntary_ctxt_switches")][0].split()[1])
def timed(release, until_released=lambda: None):
    t0, c0, w0 = time.perf_counter_ns(), cpu_ns(), wakeups()
    release()
    until_released()
    while children() != me:
        time.sleep(0.0002)
    return time.perf_counter_ns() - t0, cpu_ns() - c0, wakeups() - w0
def fork(child):
    pid = os.fork()
    if pid == 0:
        child()
        os._exit(0)
    return pid
def stream():
    go_r, go_w = os.pipe()  # closing go_w releases the first orphan
    end_r, end_w = os.pipe()  # the last orphan holds end_w: end of file when it has exited
    ready_r, ready_w = os.pipe()
    def maker():
        os.close(go_w)
        os.close(end_r)
        wait_on = go_r
        for i in range(n):
            next_r, next_w = os.pipe() if i < n - 1 else (None, end_w)
            def orphan():
                os.write(ready_w, b".")
                os.read(wait_on, 1)  # end of file when the previous one has exited
            fork(orphan)  # it holds next_w: its exit releases the next orphan
            os.close(wait_on)
            os.close(next_w)
            wait_on = next_r
    os.waitpid(fork(maker), 0)  # its exit handed every orphan to PID 1
    for fd in (go_r, end_w, ready_w):
        os.close(fd)
    got = 0
    while got < n:
        got += len(os.read(ready_r, n))
    return timed(lambda: os.close(go_w), lambda: os.read(end_r, 1))
def zombies():
    go_r, go_w = os.pipe()
    ready_r, ready_w = os.pipe()
    def maker():
        os.close(go_w)
        for pid in [fork(lambda: None) for _ in range(n)]:
            fd = os.pidfd_open(pid)  # readable once the child has exited; not reaped
            select.select([fd], [], [])
            os.close(fd)
        os.write(ready_w, b"Z")
        os.read(go_r, 1)
    pid = fork(maker)
    os.close(go_r)
    os.read(ready_r, 1)
    return timed(lambda: (os.close(go_w), os.waitpid(pid, 0)))  # re-parenting is in its exit
print(*stream(), *zombies())
"""


def reaping(s: dict) -> list:
    """1000 orphans reaped by the init: wall time, init CPU per reap, init wake-ups."""
    n = s["orphans"]
    contenders = {c.name: c for c in inits()}
    rows = [
        Row("reap_wall", "reap %d orphans exiting one by one, wall (ms)" % n, "{:.1f}"),
        Row("reap_cpu", "orphans one by one: init CPU per reap (us)", "{:.2f}"),
        Row("reap_wakeups", "orphans one by one: init wake-ups", "{:.0f}"),
        Row("zombie_wall", "reap %d zombies handed over at once, wall (ms)" % n, "{:.2f}"),
        Row("zombie_cpu", "zombies at once: init CPU per reap (us)", "{:.2f}"),
    ]
    scale = [1e-6, 1e-3 / n, 1, 1e-6, 1e-3 / n]  # ns -> ms, ns -> us per reap, count
    for row in rows:
        row.samples = {name: [] for name in contenders}
    for r, name in interleaved(list(contenders), s["reap_rounds"]):
        with running({name: contenders[name].argv(*HELPER, ORPHANS, str(n))}, capture=True) as runs:
            numbers = [int(x) for x in runs[name].read_all().split()]
        if r >= 0:
            for row, factor, number in zip(rows, scale, numbers):
                row.samples[name].append(number * factor)
    for row in rows:
        row.summarise()
    return [rows[0].versus("tini", 1.2), rows[1].versus("tini", 2.5),
            *[row.compare("tini") for row in rows[2:]]]


# The child: SIGUSR1 blocked, answers every one with a byte on stdout.
RESPONDER = r"""
import os, signal
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
os.write(1, b"R")
while True:
    signal.sigwaitinfo({signal.SIGUSR1})
    os.write(1, b".")
"""


def round_trip(s: dict) -> list:
    """SIGUSR1 to the init's host PID -> forwarded -> the child answers: median and p90."""
    median = Row("rtt_median", "signal round trip, median (us)", "{:.0f}")
    p90 = Row("rtt_p90", "signal round trip, p90 (us)", "{:.0f}")
    with running({c.name: c.argv(*HELPER, RESPONDER) for c in inits()}, capture=True) as runs:
        for run in runs.values():
            run.ready()
        samples = {name: [] for name in runs}
        for r, name in interleaved(list(runs), s["round_trips"], warmup=5):
            start = time.perf_counter()
            runs[name].signal(signal.SIGUSR1)
            answer = runs[name].read(timeout=10)
            elapsed = time.perf_counter() - start
            if answer != b".":
                raise RuntimeError("%s answered %r instead of a byte" % (name, answer))
            if r >= 0:
                samples[name].append(elapsed * 1e6)
    median.samples = p90.samples = samples
    return [median.summarise().versus("tini", 1.5),
            p90.summarise(lambda values: quantile(values, 0.9)).compare("tini")]


# The child: a process group of N (sh + N-1 background sleeps) that says when it is complete.
GROUP = 'i=1; while [ $i -lt {n} ]; do sleep 1000 & i=$((i+1)); done; echo R; wait'


def teardown(s: dict) -> list:
    """SIGTERM to the init while a 50-process group runs: time until `unshare` has exited."""
    contenders = {c.name: c for c in inits()}
    command = ("sh", "-c", GROUP.format(n=s["group_size"]))
    row = Row("teardown", "teardown of %d processes on SIGTERM (ms)" % s["group_size"], "{:.2f}")
    row.samples = {name: [] for name in contenders}
    for r, name in interleaved(list(contenders), s["teardown_rounds"]):
        with running({name: contenders[name].argv(*command)}, capture=True) as runs:
            run = runs[name]
            run.ready()
            start = time.perf_counter()
            run.signal(signal.SIGTERM)
            elapsed = run.wait_exit() - start
        if r >= 0:
            row.samples[name].append(elapsed * 1e3)
    return [row.summarise().versus("tini", 3.0)]


# The child: every real-time signal blocked; counts what arrives until it has
# `expected` of them or none came for 2 s; prints {signal: count}.
RT_COUNTER = r"""
import json, os, signal, sys
expected = int(sys.argv[1])
realtime = set(range(signal.SIGRTMIN, signal.SIGRTMAX + 1))
signal.pthread_sigmask(signal.SIG_BLOCK, realtime)
os.write(1, b"R")
counts, total = {}, 0
while total < expected:
    info = signal.sigtimedwait(realtime, 2.0)
    if info is None:
        break
    counts[info.si_signo] = counts.get(info.si_signo, 0) + 1
    total += 1
print(json.dumps(counts))
"""


def realtime_signals(s: dict) -> list:
    """Every real-time signal, several copies each, to the init: how many reach the child."""
    numbers = range(signal.SIGRTMIN, signal.SIGRTMAX + 1)
    sent = len(numbers) * s["rt_copies"]
    row = Row("realtime", "real-time signals delivered (of %d sent)" % sent, "{:.0f}")
    row.extra.update(signals=list(numbers), copies=s["rt_copies"], per_signal={})
    per_signal = row.extra["per_signal"]
    for c in inits():  # one at a time: the pending-signal limit is per user
        with running({c.name: c.argv(*HELPER, RT_COUNTER, str(sent))}, capture=True) as runs:
            run = runs[c.name]
            run.ready()
            for _ in range(s["rt_copies"]):
                for signo in numbers:
                    run.signal(signo)
            counts = json.loads(run.read_all())
        per_signal[c.name] = {int(k): v for k, v in counts.items()}
        row.samples[c.name] = [sum(counts.values())]
    row.summarise()
    row.target = "= %d (all)" % sent
    row.passed = row.values["pyinit"] == sent
    return [row]


def sandbox_cost(s: dict) -> list:
    """pyinit.run(["true"]) in this process (a Sandbox started, waited for, torn down), reported without a target.

    Beside it, from the same process: `subprocess.run(["true"])` (what a test
    pays without any isolation) and `subprocess.run(unshare --fork --pid
    --mount-proc true)` (a namespace by hand, with no init, no readiness, no
    teardown, no leftovers). The sandbox adds the launcher's interpreter start
    (`-I -S`, no site), finding PID 1 and the command in /proc, and reading
    pyinit's exit report from its pipe.
    """
    sys.path.insert(0, str(REPO))  # this tree's pyinit, whose launcher runs this tree's __main__.py
    from pyinit import sandbox

    sandbox.run(["true"])  # the one-time probe for namespaces, outside the timings
    runs = {
        "Sandbox (pyinit.run)": lambda: sandbox.run(["true"]).exit_code,
        "subprocess.run": lambda: subprocess.run(["true"]).returncode,
        "subprocess.run unshare": lambda: subprocess.run([*UNSHARE, "true"]).returncode,
    }
    row = Row("sandbox", "Sandbox start + stop of `true`, wall (ms)", "{:.1f}")
    row.samples = {name: [] for name in runs}
    for r, name in interleaved(list(runs), s["startup_rounds"]):
        start = time.perf_counter()
        if runs[name]() != 0:
            raise RuntimeError("%s of true failed" % name)
        if r >= 0:
            row.samples[name].append((time.perf_counter() - start) * 1e3)
    row.summarise()
    row.ratio = row.values["Sandbox (pyinit.run)"] / row.values["subprocess.run unshare"]
    row.reference = "subprocess.run unshare"
    return [row]


NGINX_CONF = """worker_processes 2; pid {d}/nginx.pid; error_log stderr; events {{ worker_connections 256; }}
http {{ access_log off; client_body_temp_path {d}/b; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f;
  uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;
  server {{ listen 127.0.0.1:{port}; location / {{ return 200 "hello\\n"; }} }} }}
"""


def traffic_rate(s: dict) -> list:
    """The load generator (`Sandbox.traffic`, issue 27) beside a plain http.client loop, against one nginx.

    nginx (two workers) runs in a Sandbox on the host's network. Each round,
    for `traffic_seconds`: the generator with no rate limit (its default four
    threads, each request on a new connection through the sandbox's
    connect(), every request recorded), and a loop in this thread making the
    same requests with http.client (a new HTTPConnection each, `Connection:
    close`, the body read). Requests served per second; target: the generator
    at least half the loop's rate.
    """
    sys.path.insert(0, str(REPO))
    import http.client
    from pyinit import sandbox

    nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if nginx is None:
        raise RuntimeError("traffic needs nginx (apt-get install nginx-light)")
    seconds = s["traffic_seconds"]

    def generator(box: "sandbox.Sandbox", port: int) -> float:
        with box.traffic(port, rate=None, limit=10**7) as traffic:
            time.sleep(seconds)
            traffic.stop()
            elapsed = max(request.end or 0.0 for request in traffic.requests)
        return sum(request.served for request in traffic.requests) / elapsed

    def loop(box: "sandbox.Sandbox", port: int) -> float:
        served, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/", headers={"Connection": "close"})
            response = connection.getresponse()
            served += response.status == 200 and response.read() == b"hello\n"
            connection.close()
        return served / (time.perf_counter() - start)

    runs = {"load generator (box.traffic)": generator, "http.client loop": loop}
    row = Row("traffic", "HTTP requests served per second, nginx on the host's network", "{:.0f}",
              subject="load generator (box.traffic)")
    row.samples = {name: [] for name in runs}
    with tempfile.TemporaryDirectory(prefix="pyinit-bench-nginx-") as directory:
        port = free_port()
        Path(directory, "nginx.conf").write_text(NGINX_CONF.format(d=directory, port=port))
        argv = [nginx, "-p", directory, "-e", "stderr", "-c", directory + "/nginx.conf", "-g", "daemon off;"]
        with sandbox.Sandbox(argv) as box:
            box.wait_for_http(port, timeout=30)
            for r, name in interleaved(list(runs), s["traffic_rounds"]):
                rate = runs[name](box, port)
                if r >= 0:
                    row.samples[name].append(rate)
    row.summarise().compare("http.client loop")
    row.target = ">= 0.50 x http.client loop"
    row.passed = row.ratio is not None and row.ratio >= 0.5
    return [row]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# ------------------------------------------------- pyinit as users install it (the judged rows)

class Venv:
    """A virtual environment made from Debian's python3, pyinit `pip install`ed into it: what users run.

    Made once per run, in a temporary directory, with the venv's own pip,
    from a copy of the source tree (pip builds in the tree it is given; the
    repository may be a shared checkout). pip fetches setuptools from PyPI
    to build the package. Removed when the run ends.
    """

    _made: "Venv | None" = None

    def __init__(self) -> None:
        self.top = Path(tempfile.mkdtemp(prefix="pyinit-bench-"))
        self.root = self.top / "venv"
        self.python = str(self.root / "bin" / "python")
        self.pyinit = str(self.root / "bin" / "pyinit")
        self.added: set = set()  # what add() installed
        source = self.top / "source"
        source.mkdir()
        for name in ("pyproject.toml", "README.md", "LICENSE", "bin", "pyinit"):
            copy = shutil.copytree if (REPO / name).is_dir() else shutil.copy2
            copy(REPO / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                                 if (REPO / name).is_dir() else {}))
        subprocess.run([CLEAN_PY, "-m", "venv", str(self.root)], check=True)
        subprocess.run([self.python, "-m", "pip", "install", "-q", "--disable-pip-version-check", str(source)],
                       check=True, stdout=subprocess.DEVNULL)

    def add(self, *requirements: str) -> None:
        """`pip install` benchmark-only packages (mirakuru) into the venv, once per run; pyinit is left as it is."""
        missing = [name for name in requirements if name not in self.added]
        if not missing:
            return
        done = subprocess.run([self.python, "-m", "pip", "install", "-q", "--disable-pip-version-check", *missing],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError("pip could not install %s into the venv: %s" % (
                " ".join(missing), " ".join((done.stderr or done.stdout).strip().splitlines()[-3:])))
        self.added.update(missing)

    @classmethod
    def made(cls) -> "Venv":
        if cls._made is None:
            if not os.path.exists(CLEAN_PY):
                raise RuntimeError("no %s to make the users' virtual environment from" % CLEAN_PY)
            cls._made = cls()
        return cls._made

    @classmethod
    def remove(cls) -> None:
        if cls._made is not None:
            shutil.rmtree(cls._made.top, ignore_errors=True)
            cls._made = None


def timed_rounds(argvs: dict, rounds: int) -> "tuple[dict, dict]":
    """Run every command of {name: argv} `rounds` times, taking turns; return wall and CPU samples (ms)."""
    wall = {name: [] for name in argvs}
    cpu = {name: [] for name in argvs}
    for r, name in interleaved(list(argvs), rounds):
        elapsed, used = time_command(argvs[name])
        if r >= 0:
            wall[name].append(elapsed * 1e3)
            cpu[name].append(used * 1e3)
    return wall, cpu


def hyperfine_means(argvs: dict, runs: int) -> dict:
    """{name: mean ms} from hyperfine over the same commands, run one after the other; {} without hyperfine."""
    if shutil.which("hyperfine") is None:
        return {}
    with tempfile.NamedTemporaryFile(suffix=".json") as exported:
        subprocess.run(["hyperfine", "-N", "--warmup", "3", "--runs", str(runs), "--export-json", exported.name,
                        *[shlex.join(argv) for argv in argvs.values()]], check=True, cwd=REPO,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        results = json.load(exported)["results"]
    return {name: result["mean"] * 1e3 for name, result in zip(argvs, results)}


def installed_start_up(s: dict) -> list:
    """The installed `pyinit -- true` beside the same venv's bare `python -c pass`, not PID 1 and as PID 1.

    This is what users get: Debian's interpreter in a venv, the command pip
    installed (bin/pyinit). The C inits run with what they need not to be
    PID 1 (`tini -s`), for scale; `python -m pyinit` is shown too.
    """
    venv = Venv.made()
    plain = {
        "pyinit (venv)": [venv.pyinit, "--", "true"],
        "python (venv)": [venv.python, "-c", "pass"],
        "python -m pyinit (venv)": [venv.python, "-m", "pyinit", "--", "true"],
        "tini": ["tini", "-s", "--", "true"],
        "dumb-init": ["dumb-init", "true"],
        "catatonit": ["catatonit", "--", "true"],
    }
    as_pid1 = {name: [*UNSHARE, *argv] for name, argv in plain.items() if name != "tini"}
    as_pid1["tini"] = [*UNSHARE, "tini", "--", "true"]
    argvs = {**{("plain", n): a for n, a in plain.items()}, **{("pid1", n): a for n, a in as_pid1.items()}}
    wall, cpu = timed_rounds(argvs, s["startup_rounds"])
    rows = []
    for placement, label in (("plain", "not PID 1"), ("pid1", "as PID 1 (`unshare --fork --pid --mount-proc`)")):
        row = Row("installed_startup_" + placement, "start-up `pyinit -- true`, %s, wall (ms)" % label, "{:.1f}",
                  subject="pyinit (venv)", table=INSTALLED)
        row.samples = {name: samples for (where, name), samples in wall.items() if where == placement}
        row.extra["cpu_ms"] = {name: statistics.median(samples) for (where, name), samples in cpu.items()
                               if where == placement}
        rows.append(row.summarise().versus("python (venv)", 1.15))
    pair = ("pyinit (venv)", "python (venv)")
    for placement, commands, row in (("plain", plain, rows[0]), ("pid1", as_pid1, rows[1])):
        means = hyperfine_means({name: commands[name] for name in pair}, max(10, s["startup_rounds"] // 2))
        if means:
            row.extra["hyperfine_mean_ms"] = means
            row.extra["hyperfine_ratio"] = means[pair[0]] / means[pair[1]]
    return rows


def installed_launcher(s: dict) -> list:
    """The installed `pyinit --unshare -- true` beside a bare start of the venv's python plus util-linux's unshare."""
    venv = Venv.made()
    argvs = {
        "pyinit --unshare (venv)": [venv.pyinit, "--unshare", "--", "true"],
        "python (venv)": [venv.python, "-c", "pass"],
        "unshare": [*UNSHARE, "true"],
        "unshare + pyinit (venv)": [*UNSHARE, venv.pyinit, "--", "true"],
    }
    wall, _ = timed_rounds(argvs, s["startup_rounds"])
    row = Row("installed_launcher", "launcher `pyinit --unshare -- true`, wall (ms)", "{:.1f}",
              subject="pyinit --unshare (venv)", table=INSTALLED)
    row.samples = wall
    row.summarise()
    row.ratio = row.values[row.subject] / (row.values["python (venv)"] + row.values["unshare"])
    row.reference = "(python + unshare)"
    return [row.judge(1.15)]


def private_memory(pid: int) -> float:
    """USS in MiB: the pages only this process maps (Private_* of /proc/PID/smaps_rollup)."""
    total = 0
    for line in read_text("/proc/%d/smaps_rollup" % pid).splitlines():
        name, _, value = line.partition(":")
        if name in ("Private_Clean", "Private_Dirty", "Private_Hugetlb"):
            total += int(value.split()[0])
    return total / 1024


def installed_memory(s: dict) -> list:
    """Idle VmRSS and USS of the installed pyinit over `sleep 1000`, as PID 1 and not, beside the bare idle venv python."""
    venv = Venv.made()
    idle_python = [venv.python, "-c", IDLE_PYTHON]
    argvs = {
        ("pid1", "pyinit (venv)"): [*UNSHARE, venv.pyinit, "--", "sleep", "1000"],
        ("pid1", "python (venv)"): [*UNSHARE, *idle_python],
        ("plain", "pyinit (venv)"): [venv.pyinit, "--", "sleep", "1000"],
        ("plain", "python (venv)"): idle_python,
        **{("pid1", c.name): c.argv("sleep", "1000") for c in inits() if c.name in APT_PACKAGES},
    }
    rss = {key: [] for key in argvs}
    uss = {key: [] for key in argvs}
    bare = tuple(key for key in argvs if key[1] == "python (venv)")
    for _ in range(s["memory_rounds"]):  # all at once: idle processes do not disturb each other
        with running(argvs, quiet=bare) as runs:
            for key, run in runs.items():
                wait_idle(run.pid, child="" if key in bare else "sleep")
            for key, run in runs.items():
                rss[key].append(status_field(run.pid, "VmRSS") / 1024)
                uss[key].append(private_memory(run.pid))
    rows = []
    for placement, label in (("pid1", "as PID 1"), ("plain", "not PID 1")):
        row = Row("installed_memory_" + placement, "idle resident memory, %s, VmRSS (MiB)" % label, "{:.2f}",
                  subject="pyinit (venv)", table=INSTALLED)
        row.samples = {name: samples for (where, name), samples in rss.items() if where == placement}
        rows.append(row.summarise().versus("python (venv)", 1.05))
    row = Row("installed_uss", "idle private memory (USS), as PID 1 (MiB)", "{:.2f}",
              subject="pyinit (venv)", table=INSTALLED)
    row.samples = {name: samples for (where, name), samples in uss.items() if where == "pid1"}
    row.summarise().compare("python (venv)")
    row.extra["ratio_to_tini"] = row.values[row.subject] / row.values["tini"]
    return rows + [row]


# The sandbox against a plain process helper (issue 20), on the venv's interpreter: a long-lived
# worker, like a test process, that does one thing per line it reads on stdin (a name of OPS) and
# answers on its stdout with one JSON line, {"ms": wall milliseconds} or {"error": the traceback's
# end}. Its own fd 1 is its stderr, so nothing that a command prints can be taken for an answer.
SANDBOX_WORKER = r"""
import json, os, subprocess, sys, time, traceback
answers = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)
unshare = json.loads(sys.argv[1])
import pyinit
import mirakuru
from mirakuru import SimpleExecutor

def sandbox_sleep():
    box = pyinit.Sandbox(["sleep", "60"])
    try:
        box.start()
        code = box.stop("TERM", timeout=10).exit_code
    finally:
        box.close()
    if code != 128 + 15:
        raise RuntimeError("the sandbox's `sleep 60` ended with exit code %d, not 143 (SIGTERM)" % code)

def mirakuru_sleep():
    executor = SimpleExecutor(["sleep", "60"], sleep=0.001, timeout=10)
    executor.start()
    executor.stop()  # SIGTERM to its process group, polled every `sleep` s; raises unless SIGTERM ended it

def pyinit_true():
    code = pyinit.run(["true"]).exit_code
    if code:
        raise RuntimeError("pyinit.run(['true']) exited %d" % code)

OPS = {
    "sandbox sleep": sandbox_sleep,
    "mirakuru sleep": mirakuru_sleep,
    "pyinit.run true": pyinit_true,
    "subprocess.run true": lambda: subprocess.run(["true"], check=True),
    "subprocess.run unshare true": lambda: subprocess.run([*unshare, "true"], check=True),
}
pyinit.run(["true"])  # the first sandbox of the process (the one-time probe), outside the timings
try:
    from importlib.metadata import version
    mirakuru_version = version("mirakuru")
except Exception:
    mirakuru_version = getattr(mirakuru, "__version__", "?")
answers.write(json.dumps({"pyinit": pyinit.__file__, "pyinit_version": pyinit.__version__,
                          "mirakuru": mirakuru_version, "python": sys.version.split()[0]}) + "\n")
for line in iter(sys.stdin.readline, ""):
    try:
        start = time.perf_counter()
        OPS[line.strip()]()
        answers.write(json.dumps({"ms": (time.perf_counter() - start) * 1e3}) + "\n")
    except Exception:
        answers.write(json.dumps({"error": " | ".join(traceback.format_exc().strip().splitlines()[-3:])}) + "\n")
"""

# The first sandboxes of a fresh process: `from pyinit import run` (the import of pyinit.sandbox, which
# starts the fork server), timed as "import", then `run(["true"])` three times, each timed. The import is
# a library's import, paid once whether a sandbox is made or not (at a test module's collection, say),
# and is reported beside; the first run is timed from the moment the import returns, with no pause: the
# fork server may still be starting.
FIRST_SANDBOX = r"""
import json, sys, time

def ms_since(start):
    return (time.perf_counter() - start) * 1e3

times = {"runs": []}
start = time.perf_counter()
import pyinit
from pyinit import run
times["import"] = ms_since(start)
for i in range(3):
    start = time.perf_counter()
    code = run(["true"]).exit_code
    times["runs"].append(ms_since(start))
    if code:
        sys.exit("pyinit.run(['true']) exited %d" % code)
times["pyinit"] = pyinit.__file__
print(json.dumps(times))
"""

WORKER_TIMEOUT = 120.0  # seconds for one answer: a sandbox's start and close may each take 30 s at the worst
SANDBOX_BUDGET = 600.0  # seconds for all of sandbox_vs's rounds (about 15 s here, in the default mode)


class VenvWorker:
    """SANDBOX_WORKER running on the venv's interpreter, in a session of its own; a context manager."""

    def __init__(self, venv: "Venv", script: str, *args: str) -> None:
        self.errors = tempfile.TemporaryFile()
        self.buffer = b""
        self.proc = subprocess.Popen([venv.python, script, *args], cwd=venv.top, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.errors, start_new_session=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin, self.stdout = self.proc.stdin, self.proc.stdout

    def __enter__(self) -> "VenvWorker":
        return self

    def __exit__(self, exc_type: object, *exc_info: object) -> None:
        self.close(grace=30.0 if exc_type is None else 2.0)  # after a failure it may well be stuck

    def stderr_tail(self) -> str:
        self.errors.seek(0)
        lines = self.errors.read().decode(errors="replace").strip().splitlines()
        return " | ".join(lines[-3:]) or "nothing on its stderr"

    def answer(self, what: str, timeout: "float | None" = None) -> dict:
        """The worker's next JSON line; RuntimeError if it reports an error, ends, or stays silent `timeout` s."""
        timeout = WORKER_TIMEOUT if timeout is None else timeout
        fd = self.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
                raise RuntimeError("the venv's worker gave no answer to %r within %.0f s" % (what, timeout))
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError("the venv's worker ended (exit status %s) at %r: %s"
                                   % (self.proc.wait(), what, self.stderr_tail()))
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError("the venv's worker failed at %r: %s" % (what, reply["error"]))
        return reply

    def time(self, name: str) -> float:
        """Milliseconds the worker took for OPS[name]."""
        try:
            self.stdin.write(name.encode() + b"\n")
            self.stdin.flush()
        except OSError as failure:
            raise RuntimeError("the venv's worker is gone (%s): %s" % (failure, self.stderr_tail()))
        return self.answer(name)["ms"]

    def close(self, grace: float = 30.0) -> None:
        """End of input ends the worker; a worker still there `grace` s later is killed, with its process group."""
        with contextlib.suppress(OSError):
            self.stdin.close()
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.stdout.close()
        self.errors.close()


def first_sandbox(venv: "Venv", script: str) -> dict:
    """One fresh process of the venv's python running FIRST_SANDBOX: {"import": ms, "runs": [ms, ms, ms]}.

    Its output goes to files, not pipes: the wait is for the process, not for whatever it left holding them.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            code = subprocess.run([venv.python, script], cwd=venv.top, stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=err, timeout=WORKER_TIMEOUT, start_new_session=True).returncode
        except subprocess.TimeoutExpired:
            raise RuntimeError("a fresh process's first three pyinit.run(['true']) took over %.0f s"
                               % WORKER_TIMEOUT)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    if code != 0 or not stdout.strip():
        raise RuntimeError("a fresh process's first pyinit.run(['true']) failed (exit status %d): %s" % (
            code, " | ".join(stderr.strip().splitlines()[-3:]) or "nothing on its stderr"))
    times = json.loads(stdout.strip().splitlines()[-1])
    if not times["pyinit"].startswith(str(venv.root)):
        raise RuntimeError("the fresh process imported pyinit from %s, not from the venv" % times["pyinit"])
    return times


def sandbox_versus(s: dict) -> list:
    """Issue 20's rows, on the venv's interpreter, in one set of interleaved rounds.

    1. `pyinit.Sandbox(["sleep", "60"])`: start(), stop("TERM", timeout=10), close(), beside mirakuru's
       `SimpleExecutor(["sleep", "60"], sleep=0.001)`: start(), stop(); both in one long-lived worker
       process that has made its first sandbox already (what a test suite pays per test).
    2. The first `pyinit.run(["true"])` of a fresh process beside its third.
    3. `pyinit.run(["true"])` beside `subprocess.run(["true"])` and `subprocess.run(unshare ... true)`,
       in the worker.
    mirakuru is a benchmark-only dependency, pip-installed into the venv here (pyproject's `bench` extra).
    """
    venv = Venv.made()
    worker_script, first_script = venv.top / "sandbox_worker.py", venv.top / "first_sandbox.py"
    worker_script.write_text(SANDBOX_WORKER)
    first_script.write_text(FIRST_SANDBOX)
    fresh = "fresh process"  # a round of the first-sandbox row; the others are asked of the worker
    ops = {"Sandbox (venv)": "sandbox sleep", "mirakuru (venv)": "mirakuru sleep", fresh: "",
           "pyinit.run (venv)": "pyinit.run true", "subprocess.run (venv)": "subprocess.run true",
           "subprocess.run unshare (venv)": "subprocess.run unshare true"}
    samples: "dict[str, list]" = {name: [] for name in ops}
    firsts = []
    try:
        print("sandbox_vs: pip install mirakuru into the venv", file=sys.stderr, flush=True)
        venv.add("mirakuru")
        with VenvWorker(venv, str(worker_script), json.dumps(UNSHARE)) as worker:
            info = worker.answer("its start (import pyinit and mirakuru, a first pyinit.run(['true']))")
            if not info["pyinit"].startswith(str(venv.root)):
                raise RuntimeError("the worker imported pyinit from %s, not from the venv" % info["pyinit"])
            deadline = time.monotonic() + SANDBOX_BUDGET
            for r, name in interleaved(list(ops), s["startup_rounds"]):
                if time.monotonic() > deadline:
                    raise RuntimeError("the rounds took over %.0f s (at round %d of %d): a sandbox, mirakuru or "
                                       "a fresh process is far slower than it should be"
                                       % (SANDBOX_BUDGET, r + 1, s["startup_rounds"]))
                if name == fresh:
                    times = first_sandbox(venv, str(first_script))
                    if r >= 0:
                        firsts.append(times)
                else:
                    elapsed = worker.time(ops[name])
                    if r >= 0:
                        samples[name].append(elapsed)
    except (OSError, subprocess.SubprocessError, KeyError) as failure:
        raise RuntimeError("the venv's sandbox rounds: %s: %s" % (type(failure).__name__, failure))
    versions = "mirakuru %s, pyinit %s, python %s" % (info["mirakuru"], info["pyinit_version"], info["python"])

    stop = Row("installed_sandbox_sleep", "Sandbox start + stop of `sleep 60` (SIGTERM), wall (ms)", "{:.1f}",
               subject="Sandbox (venv)", table=INSTALLED)
    stop.samples = {name: samples[name] for name in ("Sandbox (venv)", "mirakuru (venv)")}
    stop.extra["versions"] = versions
    stop.summarise().versus("mirakuru (venv)", 1.0)

    first = Row("installed_sandbox_first", "the first sandbox of a process, `pyinit.run([\"true\"])`, wall (ms)",
                "{:.1f}", subject="first sandbox (venv)", table=INSTALLED)
    first.samples = {"first sandbox (venv)": [t["runs"][0] for t in firsts],
                     "later sandbox (venv)": [t["runs"][2] for t in firsts]}
    first.extra.update(import_ms=[t["import"] for t in firsts], second_ms=[t["runs"][1] for t in firsts],
                       per_process_ratio=statistics.median(t["runs"][0] / t["runs"][2] for t in firsts))
    first.summarise().versus("later sandbox (venv)", 1.5)
    first.extra["note"] = ("the later one is the third of the process; the first is timed from the end of "
                           "`from pyinit import run`, which took %.1f ms (it starts the fork server); the second "
                           "run %.1f ms; the median of each process's own first / third is %.2f" % (
                               statistics.median(first.extra["import_ms"]), statistics.median(first.extra["second_ms"]),
                               first.extra["per_process_ratio"]))

    true = Row("installed_sandbox_true", "Sandbox start + stop of `true`, `pyinit.run([\"true\"])`, wall (ms)",
               "{:.1f}", subject="pyinit.run (venv)", table=INSTALLED)
    true.samples = {name: samples[name] for name in
                    ("pyinit.run (venv)", "subprocess.run (venv)", "subprocess.run unshare (venv)")}
    true.summarise().compare("subprocess.run unshare (venv)")
    stop.extra["note"] = "%s; %d rounds, each contender once a round" % (versions, len(stop.samples["Sandbox (venv)"]))
    return [stop, first, true]


def signal_window(trace: str) -> "float | None":
    """Milliseconds from the traced command's exec to its first rt_sigprocmask that blocks SIGTERM, from
    `strace -f -ttt` output; None if it never blocks."""
    start = pid = None
    for line in trace.splitlines():
        fields = line.split(None, 2)
        if len(fields) < 3:
            continue
        if start is None and fields[2].startswith("execve("):
            pid, start = fields[0], float(fields[1])
        elif fields[0] == pid and fields[2].startswith("rt_sigprocmask(SIG_"):
            how, _, rest = fields[2][len("rt_sigprocmask("):].partition(", ")
            new_set = rest[:rest.index("]") + 1]
            blocks_term = new_set.startswith("~[") != (" TERM" in new_set.replace("[", " "))
            if how in ("SIG_BLOCK", "SIG_SETMASK") and blocks_term:
                return (float(fields[1]) - start) * 1e3
    return None


def start_up_window(s: dict) -> list:
    """How long after exec each init still takes signals the default way: exec to its first block of SIGTERM.

    Measured with `strace -f --seccomp-bpf -ttt -e trace=execve,rt_sigprocmask`:
    only those two system calls stop the process (seccomp filters the rest
    in the kernel), and the timestamps are strace's, taken at each call's
    entry. The trace adds the same few stops to every init's exec and block.
    """
    if shutil.which("strace") is None:
        raise RuntimeError("strace is needed for the start-up window (apt-get install strace)")
    venv = Venv.made()
    argvs = {
        "pyinit (venv)": [venv.pyinit, "--", "true"],
        "python -m pyinit (venv)": [venv.python, "-m", "pyinit", "--", "true"],
        "tini": ["tini", "-s", "--", "true"],
        "dumb-init": ["dumb-init", "true"],
        "catatonit": ["catatonit", "--", "true"],
    }
    row = Row("installed_window", "start-up window: exec to signals blocked, under strace (ms)", "{:.2f}",
              subject="pyinit (venv)", table=INSTALLED)
    row.samples = {name: [] for name in argvs}
    with tempfile.TemporaryDirectory() as scratch:
        output = os.path.join(scratch, "trace")
        for r, name in interleaved(list(argvs), s["window_rounds"]):
            subprocess.run(["strace", "-f", "--seccomp-bpf", "-ttt", "-e", "trace=execve,rt_sigprocmask",
                            "-o", output, *argvs[name]], check=True, stdout=subprocess.DEVNULL)
            window = signal_window(read_text(output))
            if window is None:
                raise RuntimeError("%s never blocked SIGTERM under strace" % name)
            if r >= 0:
                row.samples[name].append(window)
    return [row.summarise().compare("tini")]


# The child: FORKERS shell loops that make orphans as fast as a shell can (each
# subshell starts eight `:` jobs and exits, leaving them to PID 1) for SECONDS,
# then the whole group is killed.
STORM = ("for i in {forkers}; do (while :; do ( : & : & : & : & : & : & : & : & ); done) & done; "
         "echo R; sleep {seconds}; kill 0")
PIDS_CGROUP = "/sys/fs/cgroup/pids"  # cgroup v1 controllers, as mounted on the development machine
CPU_CGROUP = "/sys/fs/cgroup/cpu"
STORM_CAP = 12000


def fork_storm(s: dict) -> list:
    """A fork storm of 1 and of 2 forking loops for 10 s, each init in a pids cgroup capped at 12,000.

    Each run gets fresh cgroups: pids (cgroup v1), capped at STORM_CAP tasks,
    whose pids.current counts every task, zombies included (a task is
    uncharged when it is reaped), sampled every millisecond: its peak is the
    backlog plus the storm's own few live processes; pids.events counts the
    forks the cap refused. And cpu, as every container runtime gives a
    container: without one, on a host with kernel.sched_autogroup_enabled,
    a child that leads a session of its own (pyinit's default, dumb-init's)
    gets a scheduling autogroup of its own, and the init then competes for
    the CPU with everything else on the host instead of with the storm: tini
    whose child calls setsid piles up zombies the same way (docs/performance.md).
    """
    for controller in (PIDS_CGROUP, CPU_CGROUP):
        if not os.path.isdir(controller):
            raise RuntimeError("no cgroup v1 %s (the fork storm needs it)" % controller)
    contenders = {c.name: c for c in inits() if c.name in ("tini", "pyinit", "pyinit (clean py)")}
    rows = []
    for forkers in (1, 2):
        peak = Row("storm%d_peak" % forkers, "fork storm, %d loop(s) 10 s: peak tasks (zombies + storm), median run" % forkers,
                   "{:.0f}")
        hits = Row("storm%d_cap" % forkers, "fork storm, %d loop(s): runs that hit the 12,000 cap" % forkers, "{:.0f}")
        cpu = Row("storm%d_cpu" % forkers, "fork storm, %d loop(s): init CPU (ms)" % forkers, "{:.0f}")
        for row in (peak, hits, cpu):
            row.samples = {name: [] for name in contenders}
        command = ("sh", "-c", STORM.format(forkers=" ".join("x" * forkers), seconds=s["storm_seconds"]))
        for r, name in interleaved(list(contenders), s["storm_rounds"], warmup=0):
            top, refused, used = storm_run(contenders[name].argv(*command), s["storm_seconds"])
            peak.samples[name].append(top)
            hits.samples[name].append(1 if refused else 0)
            cpu.samples[name].append(used * 1e3)
        peak.summarise().versus("tini", 2.0)
        hits.summarise(sum)
        hits.target = "<= tini's"
        hits.passed = hits.values["pyinit"] <= hits.values["tini"]
        rows += [peak, hits, cpu.summarise().compare("tini")]
    return rows


def storm_run(argv: list, seconds: float) -> "tuple[int, int, float]":
    """One storm in fresh cgroups: (peak pids.current, forks refused by the cap, init CPU seconds)."""
    name = "pyinit-bench-%d" % os.getpid()
    pids, cpu = os.path.join(PIDS_CGROUP, name), os.path.join(CPU_CGROUP, name)
    for path in (pids, cpu):
        os.makedirs(path, exist_ok=True)
    with open(os.path.join(pids, "pids.max"), "w") as limit:
        limit.write(str(STORM_CAP))
    join = 'echo $$ > %s/cgroup.procs; echo $$ > %s/cgroup.procs; exec "$@"' % (pids, cpu)
    with open(os.path.join(pids, "pids.events")) as events:
        refused_before = int(events.read().split()[1])
    top = used = 0
    try:
        with running({"storm": ["sh", "-c", join, "sh", *argv]}, capture=True) as runs:
            run = runs["storm"]
            run.ready()
            # The top process is the sh that joins the cgroups and execs unshare: the init is its child.
            init = children(run.pid)[0]
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                top = max(top, int(read_text(os.path.join(pids, "pids.current"))))
                used = cpu_seconds(init) or used
                time.sleep(0.001)
            run.wait_exit(timeout=60)
        with open(os.path.join(pids, "pids.events")) as events:
            refused = int(events.read().split()[1]) - refused_before
    finally:
        wait_for(lambda: not read_text(os.path.join(pids, "cgroup.procs")), "the storm's cgroup to empty")
        for path in (pids, cpu):
            os.rmdir(path)
    return top, refused, used


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid`, 0 once it is gone."""
    try:
        fields = read_text("/proc/%d/stat" % pid).rpartition(")")[2].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


MEASUREMENTS = {
    "installed_startup": installed_start_up,
    "installed_launcher": installed_launcher,
    "installed_memory": installed_memory,
    "window": start_up_window,
    "startup": start_up,
    "launcher": launcher_start_up,
    "memory": idle_memory,
    "wakeups": idle_wakeups,
    "reap": reaping,
    "rtt": round_trip,
    "teardown": teardown,
    "realtime": realtime_signals,
    "sandbox": sandbox_cost,
    "sandbox_vs": sandbox_versus,
    "storm": fork_storm,
    "traffic": traffic_rate,
}


# ------------------------------------------------------------------- report

def columns(rows: list) -> list:
    order = ["tini", "dumb-init", "catatonit", "pyinit", "python", "pyinit (clean py)", "python (clean)",
             "pyinit (venv)", "python (venv)", "python -m pyinit (venv)", "pyinit --unshare (venv)"]
    seen = {name for row in rows for name in row.values}
    return [name for name in order if name in seen] + sorted(seen - set(order))


def markdown_table(rows: list) -> str:
    cols = columns(rows)
    clean = any(row.clean_ratio is not None for row in rows)
    header = ["measurement", *cols, "pyinit ratio", "target", "result", *(["clean-py ratio"] if clean else [])]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.label]
        cells += [row.fmt.format(row.values[c]) if c in row.values else "" for c in cols]
        cells.append("%.2f x %s" % (row.ratio, row.reference) if row.ratio is not None else "")
        cells.append(row.target)
        cells.append({True: "PASS", False: "**FAIL**", None: ""}[row.passed])
        if clean:
            cells.append("%.2f" % row.clean_ratio if row.clean_ratio is not None else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def version_of(argv: list) -> str:
    try:
        done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=30)
    except OSError as failure:
        return "unavailable (%s)" % failure
    return (done.stdout + done.stderr).strip().splitlines()[0] if (done.stdout + done.stderr).strip() else ""


def machine_info(mode: str) -> dict:
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": mode,
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "python": "%s (%s)" % (PY, platform.python_version()),
        "tini": version_of(["tini", "--version"]),
        "dumb-init": version_of(["dumb-init", "--version"]),
        "catatonit": version_of(["catatonit", "--version"]),
        "pyinit": "%s, tree %s" % (version_of([PY, "-m", "pyinit", "--version"]), git_state()),
    }
    if has_clean_python():
        info["clean python"] = "%s (%s)" % (CLEAN_PY, version_of([CLEAN_PY, "-c", "import platform; print(platform.python_version())"]))
    return info


def report(rows: list, info: dict) -> str:
    lines = ["# pyinit benchmark", ""]
    lines += ["- %s: %s" % (key, value) for key, value in info.items()]
    installed = [row for row in rows if row.table == INSTALLED]
    if installed:
        lines += ["", "## pyinit as users install it (judged)", "", markdown_table(installed), ""]
        lines.append("`(venv)`: a virtual environment made from `%s`, pyinit `pip install`ed into it; "
                     "`pyinit (venv)` is the command pip installed. Ratios divide pyinit's median by the "
                     "reference column's, from this same run." % CLEAN_PY)
        for row in installed:
            if "hyperfine_ratio" in row.extra:
                means = row.extra["hyperfine_mean_ms"]
                lines.append("- hyperfine, %s: %s; ratio %.2f." % (row.label, ", ".join(
                    "%s %.1f ms" % (name, mean) for name, mean in means.items()), row.extra["hyperfine_ratio"]))
            if "ratio_to_tini" in row.extra:
                lines.append("- %s: pyinit %.2f x tini." % (row.label, row.extra["ratio_to_tini"]))
            if "note" in row.extra:
                lines.append("- %s: %s." % (row.label, row.extra["note"]))
    others = [row for row in rows if row.table != INSTALLED]
    if others:
        lines += ["", "## pyinit from the source tree, `%s -m pyinit`" % PY, "", markdown_table(others), ""]
        lines.append("Values are medians over interleaved rounds (p90 where the row says so). "
                     "Ratios divide pyinit's value by the reference column of this same run; "
                     "targets are judged on pyinit under `%s`; start-up and memory here are information "
                     "(the judged ones are above). The clean-py ratio is pyinit under `%s` over the same "
                     "reference (for start-up and memory: the clean bare interpreter)." % (PY, CLEAN_PY))
    for row in rows:
        if "per_signal" in row.extra:
            lines += ["", "Real-time signals, %d copies of each of %d sent: %s." % (
                row.extra["copies"], len(row.extra["signals"]),
                "; ".join("%s %s" % (name, realtime_summary(per, row.extra)) for name, per in row.extra["per_signal"].items()))]
    return "\n".join(lines) + "\n"


def realtime_summary(per_signal: dict, extra: dict) -> str:
    """'all arrived', or which signals came short and how many copies of each arrived."""
    short = ["%d: %d" % (signo, per_signal.get(signo, 0)) for signo in extra["signals"]
             if per_signal.get(signo, 0) != extra["copies"]]
    return "all arrived" if not short else "short (signal: copies) " + ", ".join(short)


def to_json(rows: list, info: dict) -> dict:
    out = {"meta": info, "rows": {}}
    for row in rows:
        entry = {
            "label": row.label, "values": row.values, "samples": row.samples,
            "ratio": row.ratio, "reference": row.reference, "target": row.target,
            "passed": row.passed, "clean_ratio": row.clean_ratio, "subject": row.subject, "table": row.table,
            **row.extra,
        }
        out["rows"][row.key] = entry
    return out


# -------------------------------------------------------------------- setup

def ensure_inits() -> None:
    """apt-get install whichever of tini, dumb-init, catatonit and strace is missing."""
    missing = [name for name in APT_PACKAGES if shutil.which(name) is None]
    if not missing:
        return
    print("installing %s with apt-get" % " ".join(missing), file=sys.stderr)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", *missing], check=True, env=env, stdout=subprocess.DEVNULL)


def fresh_bytecode() -> None:
    """Bring pyinit's __pycache__ up to date, as any install or first import would.

    With PYTHONDONTWRITEBYTECODE set, or sources edited since the last write,
    every start would compile pyinit from source: milliseconds that no user pays.
    """
    for python in {PY, CLEAN_PY} if has_clean_python() else {PY}:
        subprocess.run([python, "-m", "compileall", "-q", "pyinit"], cwd=REPO, check=True,
                       stdout=subprocess.DEVNULL)


def git_state() -> str:
    done = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO,
                          capture_output=True, text=True)
    return done.stdout.strip() or "unknown"


def check_machine() -> None:
    if os.geteuid() != 0:
        sys.exit("bench.py: needs root (it runs `unshare --pid --mount-proc`); try sudo")
    if shutil.which("unshare") is None:
        sys.exit("bench.py: `unshare` (util-linux) is missing")
    ensure_inits()
    if subprocess.call([*UNSHARE, "true"]) != 0:
        sys.exit("bench.py: `%s true` failed: no PID namespaces here?" % " ".join(UNSHARE))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of about a minute")
    parser.add_argument("--json", type=Path, default=RESULTS / "latest.json", help="raw numbers go here")
    parser.add_argument("--markdown", type=Path, default=RESULTS / "latest.md", help="the table goes here")
    parser.add_argument("--only", default="", help="comma-separated subset of: " + ", ".join(MEASUREMENTS))
    args = parser.parse_args()
    chosen = args.only.split(",") if args.only else list(MEASUREMENTS)
    unknown = set(chosen) - set(MEASUREMENTS)
    if unknown:
        parser.error("unknown measurement(s): " + ", ".join(sorted(unknown)))

    os.chdir(REPO)  # `-m pyinit` finds the package in the working directory
    check_machine()
    mode = "quick" if args.quick else "default"
    settings = {key: pair[args.quick] for key, pair in SETTINGS.items()}
    started = time.monotonic()
    rows = []
    try:
        for name in chosen:
            print("%s ..." % name, file=sys.stderr, flush=True)
            step = time.monotonic()
            fresh_bytecode()  # others may edit pyinit/ while this runs
            try:
                rows += MEASUREMENTS[name](settings)
            except (RuntimeError, ValueError, subprocess.CalledProcessError) as failure:
                sys.exit("bench.py: %s: %s" % (name, failure))
            print("%s done in %.0f s" % (name, time.monotonic() - step), file=sys.stderr, flush=True)
    finally:
        Venv.remove()
    info = machine_info(mode)
    info["runtime"] = "%.0f s" % (time.monotonic() - started)
    info["settings"] = settings

    text = report(rows, info)
    print(text)
    for path, content in ((args.markdown, text), (args.json, json.dumps(to_json(rows, info), indent=1) + "\n")):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    print("wrote %s and %s" % (args.markdown, args.json), file=sys.stderr)
    return 0 if all(row.passed is not False for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
