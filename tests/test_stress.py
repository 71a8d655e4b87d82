"""Load: pyinit under orphan floods, signal floods and fork storms, and with a stderr nobody reads.

Marked `stress`: the default run and CI (.ci/run) run them; `-m 'not stress'`
leaves them out of a quick local run. The whole file takes about two
minutes on the development machine (2 vCPUs, shared).

Orphans are made by dash loops of `( : & : & ... )`: the subshell starts the
`:` jobs and exits at once, so each job is re-parented to pyinit (PID 1 or
child subreaper), which alone can reap it. That makes several thousand
orphans a second per loop, far more than Python's fork can.
"""

import json
import os
import signal
import socket
import time

import pytest

from support import (
    children,
    forwarder,
    program,
    pyinit_lines,
    report,
    start_recorder,
    status,
    wait_for,
    waiting_for_signals,
)

pytestmark = pytest.mark.stress


def orphan_maker(count: int) -> str:
    """A dash loop that makes `count` orphans (a multiple of 10), ten per subshell."""
    assert count % 10 == 0
    return "i=0; while [ $i -lt %d ]; do ( : & : & : & : & : & : & : & : & : & : & ); i=$((i+10)); done" % count


def rss_kib(pid: int) -> int:
    return int(status(pid)["VmRSS"].split()[0])


# --- orphans ------------------------------------------------------------------------------------

ORPHANS = 100_000


def test_hundred_thousand_orphans(start, tmp_path):
    """100,000 orphans, two makers at once, pyinit as PID 1: every one reaped and counted, memory flat.

    Resident memory after the flood is within 5 % of what it was before.
    """
    path = tmp_path / "report.json"
    half = orphan_maker(ORPHANS // 2)
    script = "echo ready; read go; (%s) & (%s) & wait; echo made; read end; exit 0" % (half, half)
    init = start(["--exit-report", str(path), "--", "dash", "-c", script], "pid1")
    assert init.out.next() == "ready"
    child = init.child()
    wait_for(lambda: waiting_for_signals(init.pid), "pyinit to wait for signals")
    before = rss_kib(init.pid)
    init.proc.stdin.write(b"go\n")
    init.proc.stdin.flush()
    assert init.out.next(timeout=300) == "made"
    wait_for(lambda: children(init.pid) == [child], "pyinit to reap every orphan (none left, not even a zombie)")
    after = rss_kib(init.pid)
    assert after <= before * 1.05, "resident memory grew from %d to %d KiB" % (before, after)
    init.close_stdin()
    assert init.wait() == 0
    assert json.loads(path.read_text())["zombies_reaped"] == ORPHANS


# --- real-time signals while orphans are reaped -------------------------------------------------

RT_SIGNALS = 10_000
MODES = {
    "plain": [],
    "single-child": ["-c"],
    "launcher": ["--unshare"],
}


@pytest.mark.parametrize("options", MODES.values(), ids=MODES.keys())
def test_ten_thousand_realtime_signals_while_orphans_are_reaped(start, options):
    """10,000 real-time signals, every one delivered, while a loop beside the counter makes orphans.

    Real-time signals queue: each copy sent must arrive, through pyinit (and
    the launcher's relay) however busy reaping keeps it.
    """
    init = start([*options, "--", *program("rt_counter", RT_SIGNALS)], "subreaper")
    assert init.out.next() == "ready"
    numbers = list(range(signal.SIGRTMIN, signal.SIGRTMAX + 1))
    sent: "dict[int, int]" = {}
    for i in range(RT_SIGNALS):
        signo = numbers[i % len(numbers)]
        os.kill(init.pid, signo)
        sent[signo] = sent.get(signo, 0) + 1
    counts = {int(k): v for k, v in json.loads(init.out.next(timeout=120)).items()}
    assert counts == sent
    assert init.wait() == 0


# --- a fork storm ---------------------------------------------------------------------------------

PIDS_CGROUP = "/sys/fs/cgroup/pids"  # cgroup v1 controllers
CPU_CGROUP = "/sys/fs/cgroup/cpu"
CAP = 12_000
STORM_SECONDS = 10
FORKERS = 2
# Zombies never pile up beyond this: benchmarks/bench.py's fork-storm row
# measured peaks of 60 to 200 tasks for pyinit and tini alike on the busy
# development machine; the bound leaves room for a busier one, and is a
# twelfth of what the cap allows.
BOUND = 1_000
FOREVER_MAKER = "while :; do ( : & : & : & : & : & : & : & : & ); done"


@pytest.fixture
def cgroups():
    """A pids cgroup (v1) capped at CAP tasks and a cpu cgroup, as a container runtime gives a container.

    The cpu cgroup matters: see benchmarks/bench.py's fork_storm (without
    one, the kernel's autogroups would pit pyinit against the whole host).
    """
    for controller in (PIDS_CGROUP, CPU_CGROUP):
        if not os.path.isdir(controller):
            pytest.skip("no cgroup v1 %s controller" % controller)
    name = "pyinit-stress-%d" % os.getpid()
    pids, cpu = os.path.join(PIDS_CGROUP, name), os.path.join(CPU_CGROUP, name)
    for path in (pids, cpu):
        os.mkdir(path)
    with open(os.path.join(pids, "pids.max"), "w") as limit:
        limit.write(str(CAP))
    yield pids, cpu
    wait_for(lambda: not open(os.path.join(pids, "cgroup.procs")).read(), "the cgroup to empty")
    for path in (pids, cpu):
        os.rmdir(path)


def test_fork_storm_never_piles_up_zombies(start, cgroups):
    """Two loops make orphans as fast as they can for 10 s, in a pids cgroup capped at 12,000.

    pids.current counts every task of the cgroup, zombies included (a task
    is uncharged when it is reaped): sampled every millisecond, it never
    passes BOUND, and the cap is never hit.
    """
    pids, cpu = cgroups
    join = 'echo $$ > %s/cgroup.procs; echo $$ > %s/cgroup.procs; exec "$@"' % (pids, cpu)
    script = "for i in %s; do (%s) & done; echo ready; read x; kill 0" % (" ".join("x" * FORKERS), FOREVER_MAKER)
    init = start(["--", "dash", "-c", script], "pid1", wrapper=["sh", "-c", join, "sh"])
    assert init.out.next() == "ready"
    began = time.monotonic()
    peak = 0
    while time.monotonic() - began < STORM_SECONDS:
        with open(os.path.join(pids, "pids.current")) as current:
            peak = max(peak, int(current.read()))
        time.sleep(0.001)
    init.close_stdin()
    init.wait(timeout=60)
    with open(os.path.join(pids, "pids.events")) as events:
        cap_hits = int(events.read().split()[1])
    assert cap_hits == 0, "the cap of %d tasks was hit %d times" % (CAP, cap_hits)
    assert peak <= BOUND, "%d tasks at the peak (zombies and the storm's own)" % peak


# --- pyinit's stderr full ---------------------------------------------------------------------------


def full_stream(kind: str) -> "tuple[int, int]":
    """(read end, write end) of a pipe, or of a Unix stream socket (journald's kind of stderr), already full.

    The next write to the write end would block. pyinit writes a pipe through
    a non-blocking descriptor of its own, and a socket with send(2) and
    MSG_DONTWAIT (log.py): both are exercised.
    """
    if kind == "pipe":
        read_end, write_end = os.pipe()
    else:
        reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        read_end, write_end = reader.detach(), writer.detach()
    os.set_blocking(write_end, False)
    try:
        while True:
            os.write(write_end, b"x" * 4096)
    except BlockingIOError:
        pass
    os.set_blocking(write_end, True)
    return read_end, write_end


STDERR_KINDS = pytest.mark.parametrize("stderr_kind", ["pipe", "socket"])


def drain(fd: int) -> bytes:
    os.set_blocking(fd, False)
    chunks = []
    try:
        while True:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    except BlockingIOError:
        pass
    return b"".join(chunks)


@STDERR_KINDS
def test_full_stderr_never_blocks_the_loop(start, placement, stderr_kind):
    """stderr a pipe or socket nobody reads, already full: with -w, 1,000 orphans are reaped all the same.

    The lines that do not fit are dropped and counted, and once there is room
    again (here: at exit) pyinit says how many: all 1,000.
    """
    read_end, write_end = full_stream(stderr_kind)
    try:
        init = start(["-w", "--", *program("orphans", 1000, "--hold")], placement, stderr=write_end)
    finally:
        os.close(write_end)
    try:
        assert init.out.next(timeout=120) == "reaped 1000"
        drain(read_end)
        init.close_stdin()
        assert init.wait() == 0
        lines = [line for line in drain(read_end).decode().splitlines() if line.strip("x")]
    finally:
        os.close(read_end)
    assert pyinit_lines("\n".join(lines)) == ["pyinit: 1000 log line(s) dropped: stderr was full"]


@STDERR_KINDS
def test_full_stderr_never_delays_a_signal(start, placement, stderr_kind):
    """With -v, every signal is logged: with stderr full, each still reaches the child at once."""
    read_end, write_end = full_stream(stderr_kind)
    try:
        init = start_recorder(start, placement, ["-v"], stderr=write_end)
    finally:
        os.close(write_end)
    try:
        for signo in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGHUP):
            os.kill(init.pid, signo)
            assert init.out.next() == report(signo, forwarder(init))
        os.kill(init.pid, signal.SIGTERM)
        assert init.out.next() == report(signal.SIGTERM, forwarder(init))
        assert init.wait() == 0
    finally:
        os.close(read_end)
