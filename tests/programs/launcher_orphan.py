"""Inside the launcher's namespace: make an orphan, watch PID 1 adopt it and reap it.

A middle process forks the orphan and exits at once; this process reaps the
middle, so only PID 1 of the namespace (pyinit) can ever wait for the orphan.
The orphan blocks on a pipe until this process closes its end, so it is
released only once its adoption by PID 1 has been seen. Then this process
polls /proc until the orphan's entry is gone: a zombie keeps its entry, and
a reused PID would have another start time.

Prints one JSON object: {"orphan": PID, "adopted_by": PPID, "reaped": bool,
"zombies": [PIDs of every zombie left in the namespace's /proc]}. Exits 0.
"""

import json
import os
import time

DEADLINE = 20.0  # seconds; normally milliseconds


def stat(pid):
    """(state, ppid, start time) of `pid`, or None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as file:
            fields = file.read().rsplit(b")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return fields[0].decode(), int(fields[1]), int(fields[19])


def poll(predicate):
    deadline = time.monotonic() + DEADLINE
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def main():
    release_r, release_w = os.pipe()
    report_r, report_w = os.pipe()
    middle = os.fork()
    if middle == 0:
        orphan = os.fork()
        if orphan == 0:
            os.close(release_w)
            os.read(release_r, 1)  # end of file when the main process lets go
            os._exit(0)
        os.write(report_w, b"%d" % orphan)
        os._exit(0)
    os.close(report_w)
    os.close(release_r)
    os.waitpid(middle, 0)
    orphan = int(os.read(report_r, 64))
    first = stat(orphan)
    poll(lambda: (stat(orphan) or ("", 0, 0))[1] == 1)
    adopted_by = (stat(orphan) or ("", -1, 0))[1]
    os.close(release_w)
    reaped = poll(lambda: (stat(orphan) or ("", 0, None))[2] != first[2])
    zombies = [int(pid) for pid in os.listdir("/proc") if pid.isdigit() and (stat(int(pid)) or "?")[0] == "Z"]
    print(json.dumps({"orphan": orphan, "adopted_by": adopted_by, "reaped": reaped, "zombies": zombies}))


if __name__ == "__main__":
    main()
