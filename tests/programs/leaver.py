"""Leave processes behind on purpose: a child, and a double-forked daemon in a session of its own.

    leaver.py [--exit CODE] [--stay]

Starts `sleep 300` as an ordinary child (it stays this process's child), and
`sleep 301` as a daemon the classic way: fork, setsid, fork again, the middle
exits, so the daemon is re-parented to the init and leads its own session,
out of reach of a signal to this process's group. Once both have exec'd
(their /proc/PID/cmdline says sleep), prints `left CHILD DAEMON` with their
PIDs as this process sees them, then exits CODE (default 0); with --stay it
waits until killed instead.
Independent of pyinit on purpose: the tool must not depend on the code under test.
"""

import os
import sys
import time


def started(pid: int, word: bytes) -> bool:
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as file:
            return file.read().startswith(word)
    except OSError:
        return False


def main() -> None:
    args = sys.argv[1:]
    code = int(args[args.index("--exit") + 1]) if "--exit" in args else 0
    child = os.fork()
    if child == 0:
        os.execvp("sleep", ["sleep", "300"])
    report_r, report_w = os.pipe()
    middle = os.fork()
    if middle == 0:
        os.setsid()
        daemon = os.fork()
        if daemon == 0:
            os.execvp("sleep", ["sleep", "301"])
        os.write(report_w, b"%d" % daemon)
        os._exit(0)
    os.close(report_w)
    daemon = int(os.read(report_r, 64))
    os.waitpid(middle, 0)
    deadline = time.monotonic() + 30
    while not (started(child, b"sleep") and started(daemon, b"sleep")) and time.monotonic() < deadline:
        time.sleep(0.002)
    print("left %d %d" % (child, daemon), flush=True)
    if "--stay" in args:
        while True:
            time.sleep(3600)
    sys.exit(code)


if __name__ == "__main__":
    main()
