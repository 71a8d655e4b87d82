"""A main child with a family, for the shutdown policy: who ignores SIGTERM, who takes time to leave.

The main child (this process) first starts its grandchildren, each of which
sets its own signal dispositions and says ready; then it sets its own and
prints `ready child PID` last, so a test that has read that line knows the
whole family is in place. It then reads stdin to end-of-file and exits with
CODE (the test closes stdin to make the main child exit).

    --ignore SIGS        ignore these signals (comma-separated names or
                         numbers: TERM,INT,QUIT,HUP)
    --on-term CODE[:S]   on SIGTERM print `term child PID`, take S seconds
                         (default 0), then exit CODE
    --code CODE          exit code at end-of-file on stdin (default 0)
    --grandchild KIND    fork a grandchild: it stays in this process's group
                         and session (repeatable)
    --orphan KIND        fork a grandchild through a middle process that
                         exits at once: it is re-parented to pyinit, PID 1 or
                         child subreaper (repeatable)

KIND is one of:

    stubborn     ignores SIGTERM, SIGINT, SIGQUIT and SIGHUP: only SIGKILL ends it
    slow:S       on SIGTERM prints `cleanup KIND PID`, takes S seconds,
                 prints `done KIND PID` and exits 0

Every process prints `ready ROLE PID` (ROLE: child, stubborn, slow; PID as
the process sees itself) once its dispositions are set. Each line is one
os.write() of less than PIPE_BUF bytes, so lines of the family never mix.
Nothing here lives longer than LIFETIME seconds, whatever happens to the test.

usage: shutdown_tree.py [OPTIONS]
"""

import os
import signal
import sys
import time

LIFETIME = 60.0
TERMINATING = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP)


def say(*words: object) -> None:
    os.write(1, (" ".join(map(str, words)) + "\n").encode())


def parse_signal(text: str) -> int:
    if text.isdigit():
        return int(text)
    return int(getattr(signal, text if text.startswith("SIG") else "SIG" + text))


def live_out() -> None:
    """Sleep until killed (or until LIFETIME, the safety net)."""
    deadline = time.monotonic() + LIFETIME
    while time.monotonic() < deadline:
        time.sleep(0.5)
    os._exit(99)


def be_grandchild(kind: str, ready_fd: int, middle: int = 0) -> None:
    """In a forked grandchild: set the dispositions of KIND, say ready, live until ended."""
    role, _, seconds = kind.partition(":")
    if role == "stubborn":
        for signo in TERMINATING:
            signal.signal(signo, signal.SIG_IGN)
    elif role == "slow":
        delay = float(seconds or 0)

        def clean_up(signo, frame):
            say("cleanup", role, os.getpid())
            time.sleep(delay)
            say("done", role, os.getpid())
            os._exit(0)

        signal.signal(signal.SIGTERM, clean_up)
    else:
        raise SystemExit("unknown kind %r" % kind)
    if middle:  # wait until the kernel has handed us to our new parent
        deadline = time.monotonic() + 30
        while os.getppid() == middle and time.monotonic() < deadline:
            time.sleep(0.002)
    say("ready", role, os.getpid())
    os.write(ready_fd, b".")
    os.close(ready_fd)
    live_out()


def fork_grandchild(kind: str, orphan: bool, ready_fd: int) -> None:
    if not orphan:
        if os.fork() == 0:
            be_grandchild(kind, ready_fd)
        return
    middle = os.fork()
    if middle == 0:
        middle = os.getpid()
        if os.fork() == 0:
            be_grandchild(kind, ready_fd, middle)
        os._exit(0)
    os.waitpid(middle, 0)


def main() -> None:
    args = sys.argv[1:]
    ignore: "list[int]" = []
    on_term = None
    code = 0
    family: "list[tuple[str, bool]]" = []
    while args:
        option, value, args = args[0], args[1], args[2:]
        if option == "--ignore":
            ignore += [parse_signal(name) for name in value.split(",")]
        elif option == "--on-term":
            exit_code, _, seconds = value.partition(":")
            on_term = (int(exit_code), float(seconds or 0))
        elif option == "--code":
            code = int(value)
        elif option in ("--grandchild", "--orphan"):
            family.append((value, option == "--orphan"))
        else:
            raise SystemExit("unknown option %r" % option)
    ready_read, ready_write = os.pipe()
    for kind, orphan in family:
        fork_grandchild(kind, orphan, ready_write)
    os.close(ready_write)
    count = 0
    while count < len(family):
        chunk = os.read(ready_read, 64)
        if not chunk:
            raise SystemExit("a grandchild died before it was ready")
        count += len(chunk)
    os.close(ready_read)
    for signo in ignore:
        signal.signal(signo, signal.SIG_IGN)
    if on_term is not None:
        exit_code, delay = on_term

        def leave(signo, frame):
            say("term child", os.getpid())
            time.sleep(delay)
            os._exit(exit_code)

        signal.signal(signal.SIGTERM, leave)
    say("ready child", os.getpid())
    deadline = time.monotonic() + LIFETIME
    while os.read(0, 4096):
        if time.monotonic() > deadline:
            os._exit(99)
    sys.exit(code)


if __name__ == "__main__":
    main()
