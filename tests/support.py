"""The one helper module of the test suite: run pyinit for real, in either placement, and look at it through /proc.

Every test starts real processes. pyinit runs in one of two placements:

- `pid1`: PID 1 of a fresh PID namespace, under `unshare --fork --pid --mount-proc`
  (what a container runtime does). pyinit is then a host process whose host
  PID is the only child of the unshare process.
- `subreaper`: a plain process of ours; not being PID 1, it makes itself a
  child subreaper.

The test always looks from the host: every PID the helpers return is a host
PID, read from the host's /proc (/proc/PID/task/TID/children, /proc/PID/stat),
so pyinit, its child and its grandchildren are found the same way in both
placements. Waits are bounded by generous deadlines (the machine is small and
noisy) and synchronise on what the processes print or on /proc, not on sleeps.

Everything a test starts is killed at teardown, including processes that
escaped pyinit's tree, so a failing test does not leave processes behind.
"""

import importlib.util
import io
import os
import pwd
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pexpect
import pytest

REPO = Path(__file__).resolve().parent.parent
PROGRAMS = Path(__file__).resolve().parent / "programs"
PYINIT = [sys.executable, "-m", "pyinit"]
UNSHARE = ["unshare", "--fork", "--pid", "--mount-proc"]
PLACEMENTS = ["pid1", "subreaper"]
TIMEOUT = 30.0  # seconds: a bound for things that normally take milliseconds
# Unprivileged runs: a user who cannot read the test interpreter (under /root), so Debian's python3
# and a world-readable copy of the package (the `world_readable_package` fixture).
NOBODY = 65534
SYSTEM_PYTHON = "/usr/bin/python3"


def as_user(uid: int) -> "list[str]":
    """The wrapper that runs a command as `uid`, gid `uid`, with no supplementary groups."""
    return ["setpriv", "--reuid=%d" % uid, "--regid=%d" % uid, "--clear-groups"]


AS_NOBODY = as_user(NOBODY)


def program(name: str, *args: object) -> "list[str]":
    """The command line of a helper program in tests/programs (isolated, no site: quick to start)."""
    return [sys.executable, "-I", "-S", str(PROGRAMS / (name + ".py")), *map(str, args)]


# A caller holding descriptors 3 to 1,100 (inherited, as a busy program leaves them): what the command behind
# this wrapper opens is numbered 1,101 and up, which select(2) cannot take.
HOLDING_1100_DESCRIPTORS = [sys.executable, "-I", "-S", "-c", """if True:
    import os, resource, sys
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, max(4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1])))
    null = os.open("/dev/null", os.O_RDONLY)
    os.set_inheritable(null, True)
    for number in range(3, 1101):
        if number != null:
            os.dup2(null, number)
    os.execvp(sys.argv[1], sys.argv[1:])
"""]


def highest_descriptor(pid: int) -> int:
    """The highest descriptor number `pid` holds now."""
    return max(map(int, os.listdir("/proc/%d/fd" % pid)))


def clean_env(**extra: str) -> "dict[str, str]":
    """The test's environment without any pyinit/tini/dumb-init knob, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYINIT_", "TINI_", "DUMB_INIT_"))}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def command(argv: "list[str]", placement: str, wrapper: "list[str]" = (), pyinit: "list[str]" = PYINIT) -> "list[str]":
    """The full command line that runs `pyinit ARGV` in `placement`, behind an optional wrapper.

    `pyinit` is how pyinit itself is started (another interpreter, other interpreter options).
    """
    prefix = UNSHARE if placement == "pid1" else []
    return [*prefix, *wrapper, *pyinit, *argv]


def forwarder(init) -> int:
    """The sender PID a signal forwarded by pyinit carries, as its child sees it: 1 as PID 1, else pyinit's."""
    return 1 if init.placement == "pid1" else init.pid


def signal_name(signo: int) -> str:
    if signo == signal.SIGRTMIN:
        return "SIGRTMIN"
    if signo == signal.SIGRTMAX:
        return "SIGRTMAX"
    if signal.SIGRTMIN < signo < signal.SIGRTMAX:
        return "SIGRTMIN+%d" % (signo - signal.SIGRTMIN)
    return signal.Signals(signo).name


# --- /proc, from the host's point of view -----------------------------------------------------


def children(pid: int) -> "list[int]":
    """The children of every thread of `pid` (/proc/PID/task/TID/children, which needs
    CONFIG_PROC_CHILDREN: every distribution kernel has it); [] when it is gone."""
    found = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            try:
                with open("/proc/%d/task/%s/children" % (pid, tid)) as listing:
                    found += [int(child) for child in listing.read().split()]
            except (FileNotFoundError, ProcessLookupError):
                pass
    except (FileNotFoundError, ProcessLookupError):
        pass
    return found


def descendants(pid: int) -> "list[int]":
    """Every process below `pid`, parents before their children."""
    found, queue = [], [pid]
    while queue:
        for child in children(queue.pop(0)):
            found.append(child)
            queue.append(child)
    return found


class Stat:
    """The fields of /proc/PID/stat that tests use."""

    def __init__(self, pid: int, fields: "list[str]") -> None:
        self.pid = pid
        self.state = fields[0]
        self.ppid, self.pgid, self.sid = int(fields[1]), int(fields[2]), int(fields[3])
        self.tty_nr = int(fields[4])  # the controlling terminal's device number; 0: none
        self.tpgid = int(fields[5])  # the controlling terminal's foreground process group; -1: none
        self.start_time = int(fields[19])


def stat(pid: int) -> "Stat | None":
    """/proc/PID/stat parsed, or None when the process is gone (reaped)."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as file:
            text = file.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return Stat(pid, text.rsplit(b")", 1)[1].decode().split())


def status(pid: int) -> "dict[str, str]":
    """/proc/PID/status as a dict: {'SigBlk': '0000000000000000', ...}."""
    with open("/proc/%d/status" % pid) as file:
        return dict(line.rstrip("\n").split(":\t", 1) for line in file if ":\t" in line)


def signal_set(mask: str) -> "set[int]":
    """The signals of a /proc/PID/status mask (SigBlk, SigIgn: hexadecimal, bit N-1 for signal N)."""
    bits = int(mask, 16)
    return {signo for signo in range(1, 65) if bits >> (signo - 1) & 1}


# glibc's two reserved signals (its threads' cancellation and set*id calls): its posix_spawn(3)
# (2.36) starts every child with them ignored, and pyinit starts the child with posix_spawn
# wherever no terminal is handed over (spawn.py says why that is harmless).
GLIBC_RESERVED = frozenset({32, 33})


def waiting_for_signals(pid: int) -> bool:
    """Whether `pid` is asleep in sigwaitinfo(): pyinit's loop, with everything before it done.

    /proc/PID/wchan names the kernel function it sleeps in. (SigBlk cannot
    tell: while a thread waits in sigwaitinfo, the signals it waits for are
    taken out of its blocked set.)
    """
    try:
        with open("/proc/%d/wchan" % pid) as wchan:
            return "sigtimedwait" in wchan.read()
    except (FileNotFoundError, ProcessLookupError):
        return False


def state(pid: int) -> str:
    """The one-letter state of `pid` (S, R, T...); "gone" once it has exited (a zombie counts as gone)."""
    info = stat(pid)
    return "gone" if info is None or info.state in "ZX" else info.state


def cmdline(pid: int) -> "list[str]":
    """The argv of `pid`; [] when it is gone or a zombie."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as file:
            return [arg.decode(errors="replace") for arg in file.read().split(b"\0")[:-1]]
    except (FileNotFoundError, ProcessLookupError):
        return []


def innermost_pid(pid: int) -> int:
    """`pid`'s number in its own (innermost) PID namespace: 1 for a namespace's init."""
    return int(status(pid)["NSpid"].split()[-1])


def running(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    info = stat(pid)
    return info is not None and info.state != "Z"


def wait_for(predicate, what: str, timeout: float = TIMEOUT):
    """Poll `predicate` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0fs waiting for %s" % (timeout, what))
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def threads() -> int:
    """This process's threads, as the kernel counts them (the test side's reader threads are not threading's)."""
    return len(os.listdir("/proc/self/task"))


def threads_settled() -> int:
    """The kernel's thread count once it has stayed the same for 50 ms (at most 2 s): a count to compare with,
    taken after the reader threads of earlier tests have left the kernel's list."""
    deadline, count, since = time.monotonic() + 2, threads(), time.monotonic()
    while time.monotonic() < min(deadline, since + 0.05):
        time.sleep(0.005)
        if threads() != count:
            count, since = threads(), time.monotonic()
    return count


def threads_down_to(count: int) -> int:
    """The kernel's thread count once it is down to `count`, or as it is after 2 s.

    A reader thread that has returned (its lock released, as a Thread's after join()) is still in the kernel's
    list for the moment its exit takes; one that never returns keeps the count up and fails the comparison.
    """
    deadline = time.monotonic() + 2
    while threads() > count and time.monotonic() < deadline:
        time.sleep(0.001)
    return threads()


def caller(script: str, marker: str, *args: str, timeout: float = 4 * TIMEOUT, python: str = sys.executable) -> dict:
    """Run `script` as a caller of the test-side API, with LEAK_MARKER=marker; it prints one JSON object last.

    Fails on a hang (the timeout), a non-zero exit or a traceback. `python`:
    SYSTEM_PYTHON for a caller that gives up root (everyone may run it).
    """
    import json

    done = subprocess.run([python, "-c", script, *args], env=clean_env(LEAK_MARKER=marker), cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done
    return json.loads(done.stdout.splitlines()[-1])


def leaked(marker: str) -> "list[int]":
    """Host PIDs of live processes whose environment holds LEAK_MARKER=marker."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/environ" % entry, "rb") as environ:
                    if b"LEAK_MARKER=%s\0" % marker.encode() in environ.read():
                        found.append(int(entry))
            except OSError:
                pass
    return found


# --- Output -------------------------------------------------------------------------------------


class Lines:
    """Lines read from a pipe, each within a deadline."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buffer = b""

    def next(self, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("no line within %.0fs (partial: %r)" % (timeout, self.buffer))
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    raise AssertionError("end of output while waiting for a line (partial: %r)" % self.buffer)
                self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode(errors="replace")

    def take(self, count: int, timeout: float = TIMEOUT) -> "list[str]":
        return [self.next(timeout) for _ in range(count)]


def assert_no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr, "pyinit printed a Python traceback:\n" + stderr


# --- Running pyinit -----------------------------------------------------------------------------


class Init:
    """One pyinit run, started in the background.

    `proc` is the process the test started: pyinit itself (subreaper) or
    unshare (pid1). `pid` is pyinit's host PID in both cases, and `child()` its
    child's. Standard output is a pipe read line by line through `out`;
    standard error goes to a file, read whole through `stderr`.
    """

    def __init__(self, argv, placement="subreaper", *, wrapper=(), pyinit=PYINIT, stdin=subprocess.PIPE,
                 stdout=subprocess.PIPE, stderr=None, env=None, cwd=None, pass_fds=()) -> None:
        self.placement = placement
        self._stderr_file = tempfile.TemporaryFile()
        self.stderr_captured = stderr is None
        self.proc = subprocess.Popen(
            command(list(argv), placement, list(wrapper), list(pyinit)),
            stdin=stdin,
            stdout=stdout,
            stderr=self._stderr_file if stderr is None else stderr,
            env=clean_env() if env is None else env,
            cwd=REPO if cwd is None else cwd,
            pass_fds=pass_fds,
        )
        self.out = Lines(self.proc.stdout.fileno()) if stdout is subprocess.PIPE else None
        self._pid = None
        self._seen: "set[tuple[int, int]]" = set()  # (pid, start time) of every descendant seen

    @property
    def pid(self) -> int:
        """pyinit's host PID."""
        if self._pid is None:
            if self.placement == "subreaper":
                self._pid = self.proc.pid
            else:
                self._pid = wait_for(lambda: children(self.proc.pid), "unshare to fork pyinit")[0]
        return self._pid

    def tree(self) -> "list[int]":
        """pyinit's descendants now (host PIDs), remembered for the clean-up."""
        found = descendants(self.pid)
        for pid in found:
            info = stat(pid)
            if info:
                self._seen.add((pid, info.start_time))
        return found

    def child(self) -> int:
        """The main child's host PID (pyinit's only child at start)."""
        return wait_for(lambda: children(self.pid), "pyinit to start its child")[0]

    def remember(self, pid: int) -> None:
        """Kill this process at teardown too, wherever it has gone."""
        info = stat(pid)
        if info:
            self._seen.add((pid, info.start_time))

    def close_stdin(self) -> None:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()

    def wait(self, timeout: float = TIMEOUT) -> int:
        """pyinit's exit code (unshare passes it through); fails after `timeout` seconds."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("pyinit did not exit within %.0fs; stderr:\n%s" % (timeout, self.stderr)) from None

    @property
    def stderr(self) -> str:
        self._stderr_file.seek(0)
        text = self._stderr_file.read().decode(errors="replace")
        assert_no_traceback(text)
        return text

    def kill(self) -> None:
        """Kill the whole tree, bottom first so a live subreaper pyinit reaps it."""
        if self.proc.poll() is None:
            try:
                pid = self.pid
            except AssertionError:
                pid = None
            if pid is not None:
                deadline = time.monotonic() + TIMEOUT
                while time.monotonic() < deadline:
                    below = self.tree()
                    if not any(running(p) for p in below):
                        break
                    for p in reversed(below):
                        _kill(p)
                    time.sleep(0.01)
                _kill(pid)
        for pid, start_time in self._seen:
            info = stat(pid)
            if info and info.start_time == start_time:
                _kill(pid)
        try:
            self.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(TIMEOUT)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream:
                stream.close()


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Result:
    def __init__(self, returncode: int, stdout: bytes, stderr: str) -> None:
        self.returncode = returncode
        self.stdout_bytes = stdout
        self.stdout = stdout.decode(errors="replace")
        self.stderr = stderr

    def __repr__(self) -> str:
        return "Result(returncode=%r, stdout=%r, stderr=%r)" % (self.returncode, self.stdout, self.stderr)


def pyinit_lines(stderr: str) -> "list[str]":
    """The lines of stderr, each checked to carry pyinit's prefix."""
    lines = stderr.splitlines()
    for line in lines:
        assert line.startswith("pyinit: "), "a stderr line without the 'pyinit: ' prefix: %r" % line
    return lines



# --- The signal recorder (tests/programs/recorder.py) --------------------------------------------


def start_recorder(start, placement, options=(), *, grandchild=False, env=None, exit_on=signal.SIGTERM, **more):
    """pyinit OPTIONS -- recorder.py child, once the recorder(s) are ready for signals."""
    recorder = program("recorder", "child", *(["--grandchild"] if grandchild else []), "--exit-on", int(exit_on))
    init = start([*options, "--", *recorder], placement, env=env, **more)
    expected = {"child ready", "child-grandchild ready"} if grandchild else {"child ready"}
    assert set(init.out.take(len(expected))) == expected
    return init


def report(signo: int, sender: int, tag: str = "child") -> str:
    """The line the recorder prints for signal `signo` from PID `sender`."""
    return "%s %d %d" % (tag, signo, sender)


PR_SET_CHILD_SUBREAPER = 36


class Adopter:
    """This test process as a child subreaper: orphans below it come back to it, and it reaps them."""

    def __init__(self) -> None:
        import ctypes

        self.libc = ctypes.CDLL(None, use_errno=True)
        assert self.libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
        self.expected: "list[int]" = []

    def expect(self, pid: int) -> None:
        """`pid` may become our child: reap it at the end whatever happens."""
        self.expected.append(pid)

    def exit_code(self, pid: int) -> int:
        """Wait for adopted `pid` to exit and reap it."""
        wait_for(lambda: stat(pid) is None or stat(pid).state == "Z", "PID %d to exit" % pid)
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    def close(self) -> None:
        self.libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        for pid in self.expected:
            try:
                wait_for(lambda: os.waitpid(pid, os.WNOHANG)[0], "PID %d to be reaped" % pid, timeout=10)
            except ChildProcessError:  # reaped already, or never ours
                pass


def start_behind_parent(start, placement: str, argv: "list[str]", ready: str, **options):
    """pyinit ARGV with a parent the test can kill: middleman.py, or unshare as PID 1.

    Returns (init, parent PID) once the child has printed a line starting
    with `ready` and pyinit waits in its loop, which is after it armed its
    parent-death signal.
    """
    if placement == "subreaper":
        init = start(argv, placement, wrapper=program("middleman"), **options)
        lines = init.out.take(2)  # in either order
        assert any(line.startswith(ready) for line in lines), lines
        (middleman_line,) = [line for line in lines if line.startswith("middleman ")]
        init._pid = int(middleman_line.split()[1])  # pyinit is the middleman's child
    else:
        init = start(argv, placement, **options)
        assert init.out.next().startswith(ready)
    wait_for(lambda: waiting_for_signals(init.pid), "pyinit to wait for signals")
    return init, init.proc.pid


# --- Terminals: a real pty, keystrokes in, screen text out -----------------------------------

BASH = ["bash", "--norc", "--noprofile", "-i"]
INNER_PROMPT = "[inner]$ "  # the shell under pyinit
OUTER_PROMPT = "[outer]$ "  # the shell pyinit is typed into
TERMINAL_ENV = {  # few variables: nothing of the user's shell set-up reaches the shells on the pty
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "TERM": "dumb",
    "PYTHONPATH": str(REPO),
    "PYTHONDONTWRITEBYTECODE": "1",
}


class Terminal:
    """A command on a fresh 24x80 pty made by pexpect, as a person at a terminal runs it.

    `Terminal(argv)` runs `argv` as the pty's session leader; `Terminal.shell()`
    runs an interactive bash (prompt OUTER_PROMPT) into which commands are
    typed. Everything the pty shows is kept in `screen`, for assertions and
    failure messages. The processes are found from the host's /proc.
    """

    def __init__(self, argv: "list[str]", env: "dict[str, str] | None" = None, *, in_shell: bool = False,
                 cwd: "str | None" = None) -> None:
        self.in_shell = in_shell
        self._screen = io.StringIO()
        self._pyinit: "int | None" = None
        self.pty = pexpect.spawn(argv[0], argv[1:], cwd=str(REPO) if cwd is None else cwd, env=dict(TERMINAL_ENV, **(env or {})),
                                 encoding="utf-8", codec_errors="replace", timeout=TIMEOUT, dimensions=(24, 80))
        self.pty.logfile_read = self._screen

    @classmethod
    def shell(cls, env: "dict[str, str] | None" = None) -> "Terminal":
        """An interactive bash, prompting OUTER_PROMPT (wait for it with `at_prompt`)."""
        return cls(BASH, dict(env or {}, PS1=OUTER_PROMPT), in_shell=True)

    def at_prompt(self, setup: "list[str]" = ()) -> None:
        """Wait for the shell's prompt, then run the `setup` commands in it."""
        self.expect_exact(OUTER_PROMPT)
        for line in setup:
            self.sendline(line)
            self.expect_exact(OUTER_PROMPT)

    @property
    def screen(self) -> str:
        return self._screen.getvalue()

    @property
    def tty_rdev(self) -> int:
        """The pty's device number (tty_nr in /proc/PID/stat), from the standard input of the
        process pexpect started, which must still be running."""
        return os.stat(os.readlink("/proc/%d/fd/0" % self.pty.pid)).st_rdev

    # keystrokes in, screen text out
    def expect(self, pattern, timeout: float = -1):
        """Wait for a regular expression on the screen; return the match. Fails showing the screen."""
        try:
            self.pty.expect(pattern, timeout=timeout)
        except (pexpect.TIMEOUT, pexpect.EOF) as what:
            raise AssertionError("%s while waiting for %r on the terminal; it shows:\n%s"
                                 % ("end of output" if isinstance(what, pexpect.EOF) else "timed out",
                                    pattern, self.screen)) from None
        return self.pty.match

    def expect_exact(self, text: str, timeout: float = -1) -> None:
        self.expect(re.escape(text), timeout)

    def sendline(self, text: str = "") -> None:
        self.pty.sendline(text)

    def send(self, text: str) -> None:
        self.pty.send(text)

    def sendcontrol(self, char: str) -> None:
        self.pty.sendcontrol(char)

    def say(self, word: str, prompt: str = INNER_PROMPT) -> None:
        """Have the shell print `word`; wait for it and the next prompt (the echo of `echo w''ord` does not match)."""
        self.sendline("echo %s''%s" % (word[:1], word[1:]))
        self.expect_exact(word + "\r\n")
        self.expect_exact(prompt)

    def exercise_job_control(self) -> None:
        """At an interactive bash's INNER_PROMPT: $- has m; sleep, Ctrl-Z, jobs, fg, Ctrl-Z, bg, jobs,
        fg, Ctrl-C, each seen on the screen and in /proc; the shell prompts again at the end."""
        self.sendline('echo "fl""ags:$-"')
        assert "m" in self.expect(r"flags:(\w+)\r\n").group(1), "no job control in the shell"
        self.expect_exact(INNER_PROMPT)
        self.sendline("sleep 30")
        sleep = self.descendant(["sleep", "30"])
        self.sendcontrol("z")
        self.expect(r"\[1\]\+ +Stopped +sleep 30\r\n")
        self.expect_exact(INNER_PROMPT)
        assert state(sleep) == "T"
        self.sendline("jobs")
        self.expect(r"\[1\]\+ +Stopped +sleep 30\r\n")
        self.expect_exact(INNER_PROMPT)

        self.sendline("fg")
        self.expect_exact("sleep 30\r\n")
        wait_for(lambda: state(sleep) == "S", "sleep to be continued by fg")

        self.sendcontrol("z")
        self.expect(r"\[1\]\+ +Stopped +sleep 30\r\n")
        self.expect_exact(INNER_PROMPT)
        self.sendline("bg")
        self.expect(r"\[1\]\+ sleep 30 &\r\n")
        self.expect_exact(INNER_PROMPT)
        wait_for(lambda: state(sleep) == "S", "sleep to be continued by bg")
        self.sendline("jobs")
        self.expect(r"\[1\]\+ +Running +sleep 30 &\r\n")
        self.expect_exact(INNER_PROMPT)

        self.sendline("fg")
        self.expect_exact("sleep 30\r\n")
        self.sendcontrol("c")
        self.expect_exact(INNER_PROMPT)
        wait_for(lambda: state(sleep) == "gone", "Ctrl-C to end sleep")
        self.say("alive")

    def exit_code(self) -> int:
        """Wait for what runs to finish; its exit code (through `$?` when typed into the shell)."""
        if self.in_shell:
            self.expect_exact(OUTER_PROMPT)
            self.sendline('echo "rc=$?"')
            code = int(self.expect(r"rc=(\d+)\r\n").group(1))
            self.expect_exact(OUTER_PROMPT)
            return code
        self.expect(pexpect.EOF)
        self.pty.wait()
        assert self.pty.signalstatus is None, "killed by signal %s" % self.pty.signalstatus
        return self.pty.exitstatus

    # the processes
    def pyinit(self) -> int:
        """The host PID of the first process of the tree running `python -m pyinit` (the launcher, under --unshare)."""
        if self._pyinit is None:
            def find():
                for pid in [self.pty.pid] + descendants(self.pty.pid):
                    if cmdline(pid)[1:3] == ["-m", "pyinit"]:
                        return pid
                return None
            self._pyinit = wait_for(find, "pyinit to start")
        return self._pyinit

    def child(self, argv0: "str | None" = None, parent: "int | None" = None) -> int:
        """The only child of `parent` (pyinit by default), once it has exec'd a command whose argv[0] is `argv0`."""
        def find():
            kids = [kid for kid in children(self.pyinit() if parent is None else parent)
                    if state(kid) != "gone" and (argv0 is None or cmdline(kid)[:1] == [argv0])]
            return kids[0] if len(kids) == 1 else None
        return wait_for(find, "pyinit's child" + (" " + argv0 if argv0 else ""))

    def descendant(self, argv: "list[str]") -> int:
        """The one process below pyinit running exactly `argv`."""
        def find():
            hits = [pid for pid in descendants(self.pyinit()) if cmdline(pid) == argv]
            return hits[0] if len(hits) == 1 else None
        return wait_for(find, "a process running %r" % argv)

    def hang_up(self) -> None:
        """Close the pty's master side, as a closed terminal window or a dropped ssh does."""
        self.pty.ptyproc.fileobj.close()  # closes the fd; pexpect must not close that number again
        self.pty.ptyproc.closed = True
        self.pty.closed = True

    def kill(self) -> None:
        """Kill whatever is left of this run, by PID; reap the process pexpect started."""
        try:
            alive = self.pty.isalive()  # until reaped here, its PID cannot be reused
        except Exception:
            alive = False
        if alive:
            for pid in descendants(self.pty.pid) + [self.pty.pid]:
                _kill(pid)
            try:
                self.pty.wait()
            except Exception:
                pass
        if not self.pty.closed:
            self.pty.close(force=True)


# --- pyinit as users install it ------------------------------------------------------------------

PACKAGE_FILES = ("pyproject.toml", "README.md", "LICENSE", "bin", "pyinit")  # what pip builds pyinit from


def python_with_os_unshare() -> "str | None":
    """Another CPython 3.12+ on this machine (pyenv keeps several), to run the launcher's os.unshare path."""
    import glob
    import shutil

    for candidate in sorted(glob.glob("/root/.pyenv/versions/3.1[2-9]*/bin/python3")) + [shutil.which("python3.12")]:
        if candidate and subprocess.run([candidate, "-c", "import os; os.unshare"], capture_output=True).returncode == 0:
            return candidate
    return None


def pip(*args: str) -> None:
    """The suite's own pip; it installs into a venv of Debian's python3 with `--python`."""
    result = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, "pip %s failed:\n%s" % (" ".join(args), result.stderr)


def copy_source(destination: Path) -> Path:
    """The files pip builds pyinit from, copied (pip builds in the tree it is given), without bytecode."""
    import shutil

    destination.mkdir(parents=True)
    for name in PACKAGE_FILES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, destination / name)
    return destination


class Venv:
    """A virtual environment made from Debian's python3 with pyinit pip-installed: what a user runs.

    It is made without a pip of its own (`--without-pip`, a tenth of the
    time); the suite's pip installs into it with `--python`, which writes the
    same files the venv's own pip would.
    """

    def __init__(self, root: Path, requirement: str) -> None:
        subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(root)], check=True, timeout=TIMEOUT)
        self.root = root
        self.python = root / "bin" / "python"
        self.pyinit = root / "bin" / "pyinit"
        pip("--python", str(self.python), "install", "--no-deps", requirement)

    def environment(self) -> "dict[str, str]":
        """The test's environment without PYTHONPATH (nothing may come from the source tree), the venv first on PATH."""
        env = clean_env()
        del env["PYTHONPATH"]
        env["PATH"] = "%s:%s" % (self.root / "bin", env.get("PATH", os.defpath))
        return env

    def run(self, argv: "list[str]", **options) -> subprocess.CompletedProcess:
        """Run `argv` with the venv's environment, from / (so `-m` cannot find a source tree)."""
        options.setdefault("timeout", TIMEOUT)
        return subprocess.run(argv, capture_output=True, text=True, cwd="/", env=self.environment(), **options)


# --- Real services (tests/test_services.py) ------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the kernel's pick for port 0)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


APP_LOADED = "app loaded in process"  # what the app modules below print on stderr once imported

_APP_PROLOGUE = '''\
import os, subprocess, sys, time

# A helper process started when a worker loads the app, in a session of its own (so the signal to the
# server's process group does not reach it), and never stopped: the bug of a broken set-up.
HELPER = subprocess.Popen(["sleep", "300"], start_new_session=True) if %(helper)r else None
SLOW_STARTED = %(slow_started)r  # created when a request for /slow begins
PAUSE = 2  # seconds a request for /pause takes: a slow request that ends
'''

_APP_EPILOGUE = '''\
print("%(loaded)s %%d" %% os.getpid(), file=sys.stderr, flush=True)
'''

_WSGI_APP = '''\
def app(environ, start_response):
    if environ["PATH_INFO"] == "/slow":  # a request that takes five minutes
        open(SLOW_STARTED, "w").close()
        time.sleep(300)
    elif environ["PATH_INFO"] == "/pause":
        time.sleep(PAUSE)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello\\n"]
'''

_ASGI_APP = '''\
async def app(scope, receive, send):
    if scope["type"] != "http":  # lifespan: the defaults
        return
    if scope["path"] == "/pause":
        import asyncio
        await asyncio.sleep(PAUSE)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello\\n"})
'''


def write_app(directory: Path, kind: str, helper: bool = False) -> str:
    """A tiny web app module in `directory`, of `kind` "wsgi" (gunicorn) or "asgi" (uvicorn); its
    `module:app` name. Each process that imports it prints `APP_LOADED PID` on stderr, last, so a
    worker that said so has its signal handlers (both servers install them before loading the app).
    `helper`: it also starts a `sleep 300` in a session of its own that nothing ever stops. The WSGI
    app answers /slow after 300 s, creating `directory`/slow-started when such a request begins; both
    answer /pause after 2 s."""
    fields = {"helper": helper, "slow_started": str(Path(directory) / "slow-started"), "loaded": APP_LOADED}
    body = {"wsgi": _WSGI_APP, "asgi": _ASGI_APP}[kind]
    name = "%s_app%s" % (kind, "_with_helper" if helper else "")
    (Path(directory) / (name + ".py")).write_text(_APP_PROLOGUE % fields + "\n" + body + "\n" + _APP_EPILOGUE % fields)
    return name + ":app"


# --- The services themselves (tests/test_services.py, tests/test_traffic.py) ----------------------

CHECK = [sys.executable, "-m", "pyinit.check"]
WITHIN = 10  # seconds: the bound on a correct stop


def _cannot_run(reason: str) -> None:
    """Skip where a service is not installed; under CI, where it must be, fail instead."""
    if os.environ.get("CI"):
        pytest.fail(reason + " (CI runs these tests: .ci/run must install it)", pytrace=False)
    pytest.skip(reason)


def need_program(name: str, package: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/local/sbin:/usr/sbin:/sbin")
    if path is None:
        _cannot_run("%s is not installed (Debian package %s)" % (name, package))
    return path


def need_module(name: str) -> None:
    if importlib.util.find_spec(name) is None:
        _cannot_run("%s is not installed (it comes with the test extra: pip install -e '.[test]')" % name)


class Service:
    """A server's command line, its files in `directory`, its port, and the output that says it is ready."""

    def __init__(self, argv: "list[str]", directory, port: int, ready: "str | None") -> None:
        self.argv, self.directory, self.port, self.ready = argv, directory, port, ready
        self.env = dict(os.environ, HOME=str(directory))  # gunicorn puts its control socket under ~

    def start(self, sandbox):
        """The service in a sandbox, once it says it is ready."""
        box = sandbox(self.argv, cwd=self.directory, env=self.env)
        if self.ready is not None:
            box.wait_for_output(self.ready, timeout=TIMEOUT, stream="any")
        return box

    def check(self, *options: str) -> subprocess.CompletedProcess:
        """`pyinit-check OPTIONS -- the service`, as a CI step runs it."""
        done = subprocess.run([*CHECK, *options, "--", *self.argv], cwd=self.directory,
                              env=clean_env(HOME=str(self.directory)), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=4 * TIMEOUT)
        assert_no_traceback(done.stderr)
        return done


def gunicorn(directory, helper: bool = False) -> Service:
    """gunicorn with two sync workers serving a tiny WSGI app; ready once both workers have loaded it
    (gunicorn's own "Booting worker" comes before a worker's signal handlers are set)."""
    need_module("gunicorn")
    port = free_port()
    argv = [sys.executable, "-m", "gunicorn", "--workers", "2", "--bind", "127.0.0.1:%d" % port,
            "--chdir", str(directory), "--graceful-timeout", "60", write_app(directory, "wsgi", helper)]
    return Service(argv, directory, port, r"(?s)(%s \d+.*){2}" % APP_LOADED)


def uvicorn(directory, helper: bool = False) -> Service:
    """uvicorn --workers 2 serving a tiny ASGI app; ready once both workers have started it."""
    need_module("uvicorn")
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "--workers", "2", "--host", "127.0.0.1", "--port", str(port),
            "--app-dir", str(directory), write_app(directory, "asgi", helper)]
    return Service(argv, directory, port, r"(?s)(Application startup complete.*){2}")


NGINX_CONF = """\
user {user};
worker_processes 2;
pid {d}/nginx.pid;
error_log stderr notice;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "hello\\n"; }}
        location /files/ {{ alias {d}/files/; }}
    }}
}}
"""


def nginx(directory, daemon: bool = False) -> Service:
    """nginx with two workers, every file of it in `directory`; in the foreground (`daemon off;`, as
    in a container) unless `daemon`. Ready once the master has started both workers (it listens,
    then sets its signal handlers, then starts them)."""
    binary = need_program("nginx", "nginx")
    port = free_port()
    conf = directory / "nginx.conf"
    # The workers run as the caller, not nobody: the test's files are under its private tmp_path.
    conf.write_text(NGINX_CONF.format(d=directory, port=port, user=pwd.getpwuid(os.getuid()).pw_name))
    argv = [binary, "-p", str(directory), "-e", "stderr", "-c", str(conf), *([] if daemon else ["-g", "daemon off;"])]
    return Service(argv, directory, port, None if daemon else r"(?s)(start worker process \d+.*){2}")


def redis(directory, daemonize: bool = False) -> Service:
    """redis-server with no persistence, its files in `directory`; in the foreground unless `daemonize`."""
    binary = need_program("redis-server", "redis-server")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(directory), "--pidfile", str(directory / "redis.pid"),
            "--daemonize", "yes" if daemonize else "no"]
    return Service(argv, directory, port, None if daemonize else "Ready to accept connections")
