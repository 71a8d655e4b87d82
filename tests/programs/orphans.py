"""Make COUNT orphans in bursts, of two kinds, and check that someone reaps them all.

Nobody but pyinit (PID 1, or the nearest child subreaper) can ever reap these
processes: each is the child of a short-lived middle process that this
process forks and reaps, so when the middle exits they are re-parented. The
bursts alternate between the two ways a process reaches an init:

- live orphans: the middle forks BATCH children and exits at once; they block
  on one pipe until this process closes it, then all exit together. Their
  exits reach pyinit as a flood of SIGCHLDs that coalesce.
- dead orphans: the middle forks BATCH children that exit at once, waits until
  all are zombies (never reaping them), then exits. The kernel hands the whole
  batch of zombies to pyinit in one go, which makes ONE pending SIGCHLD stand
  for BATCH exits: pyinit must loop waitpid() until nothing is left.

The middle reports each orphan's PID and start time (field 22 of
/proc/PID/stat). After the last burst, this process polls its /proc until
every orphan has gone, meaning it was reaped: a zombie keeps its /proc entry.
A PID reused since by some other process has another start time, so reuse
cannot pass for a zombie, nor a zombie for a reused PID.

Prints `reaped COUNT` on success, or `NOT REAPED: <pid> <state> ...` and
exits 1 after TIMEOUT seconds. With --hold it then stays alive until stdin is
closed, so the test can inspect pyinit while its child still runs.

usage: orphans.py COUNT [--batch BATCH] [--timeout SECONDS] [--hold]
"""

import os
import sys
import time


def stat_fields(pid: int) -> "list[str] | None":
    """Fields of /proc/PID/stat after the command name: [state, ppid, ...]; None when gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].decode().split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def burst(size: int, dead: bool) -> "list[tuple[int, str]]":
    """Make `size` orphans through one middle process; return their (pid, start time)s."""
    release_read, release_write = os.pipe()
    report_read, report_write = os.pipe()
    middle = os.fork()
    if middle == 0:
        os.close(report_read)
        os.close(release_write)
        orphans = []
        for _ in range(size):
            orphan = os.fork()
            if orphan == 0:
                os.close(report_write)
                if not dead:
                    os.read(release_read, 1)  # returns at end-of-file: the release
                os._exit(0)
            orphans.append(orphan)
        lines = []
        for orphan in orphans:
            fields = stat_fields(orphan)
            while dead and fields[0] != "Z":  # wait for the zombie, without reaping it
                time.sleep(0.001)
                fields = stat_fields(orphan)
            lines.append(b"%d %s\n" % (orphan, fields[19].encode()))
        os.write(report_write, b"".join(lines))
        os._exit(0)  # the orphans, alive or zombies, go to pyinit now
    os.close(report_write)
    os.close(release_read)
    reports = b""
    while True:
        chunk = os.read(report_read, 65536)
        if not chunk:
            break
        reports += chunk
    os.close(report_read)
    os.waitpid(middle, 0)
    os.close(release_write)  # the live orphans wake up and exit together
    orphans = [(int(pid), start) for pid, start in (line.split() for line in reports.decode().splitlines())]
    assert len(orphans) == size, "only %d of %d orphans reported" % (len(orphans), size)
    return orphans


def main() -> None:
    args = sys.argv[1:]
    count = int(args[0])
    batch = int(args[args.index("--batch") + 1]) if "--batch" in args else 200
    timeout = float(args[args.index("--timeout") + 1]) if "--timeout" in args else 60.0
    orphans = []
    while len(orphans) < count:
        dead = len(orphans) // batch % 2 == 1
        orphans += burst(min(batch, count - len(orphans)), dead)
    deadline = time.monotonic() + timeout
    while True:
        left = []
        for pid, start in orphans:
            fields = stat_fields(pid)
            if fields is not None and fields[19] == start:
                left.append("%d %s" % (pid, fields[0]))
        if not left:
            break
        if time.monotonic() > deadline:
            os.write(1, ("NOT REAPED: %s\n" % ", ".join(left[:20])).encode())
            sys.exit(1)
        time.sleep(0.02)
    os.write(1, b"reaped %d\n" % count)
    if "--hold" in args:
        while os.read(0, 4096):
            pass


if __name__ == "__main__":
    main()
