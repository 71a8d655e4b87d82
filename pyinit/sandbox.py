"""The test-side API: a command under pyinit, in namespaces of its own, watched from outside.

    with pyinit.Sandbox(["my-server", "--port", "8080"]) as box:
        box.wait_for_port(8080)
        result = box.stop("TERM", timeout=5)
    assert result.exit_code == 0 and result.leftovers == []

A Sandbox is an ordinary process of the caller's: it starts pyinit's launcher
(`python -m pyinit --unshare`, LAUNCHER below) as a subprocess, so the command
runs under pyinit as PID 1 of fresh PID and mount namespaces, exactly as it
would in a container. It looks at them from the host's /proc (NSpid gives
every member's PID inside), and tears them down by SIGKILLing that PID 1:
the kernel then kills every member, a double-forked daemon included.

Leftovers. As PID 1 without a drain, pyinit exits as soon as it has reaped
the command, and the kernel kills the rest of the namespace with it: the
processes the command left behind would die unseen. So the sandbox stops
the command at the moment of its exit, before anyone can reap it: the
command is started behind a gate (`/bin/sh` reading a FIFO, then exec'ing
it, so it keeps its PID, its place as the init's only child and the init's
exact treatment), and before the gate opens a thread of the sandbox
attaches to it with ptrace(PTRACE_SEIZE, PTRACE_O_TRACEEXIT |
PTRACE_O_TRACEEXEC); start() returns at the exec past the gate. When the
command exits (by exit or by any signal, SIGKILL included), the kernel
stops it in PTRACE_EVENT_EXIT with its wait status, while the namespace is
whole; the thread takes the snapshot of the members (the leftovers) and
detaches, and the exit carries on: the init reaps it, drains if asked, and
exits. No race, and nothing in the command's tree differs from production
but that ptrace stop, and the brief stop at each signal delivered to the
command (the tracer hands every signal back at once).

A command that cannot be found or executed is started without the gate, so
that pyinit reports it as it would (127, 126) with its own message.

The caller is left undisturbed: no waitpid(-1) (only its own child, the
launcher, and the traced command by PID), no change to its signal
dispositions, mask or subreaper flag, no thread left after close(). The
launcher gets `-p KILL`: if the thread that started the sandbox dies, so do
the launcher and the namespace. Where the kernel refuses namespaces,
isolate="auto" runs pyinit without them, as a subreaper, with an
IsolationWarning; teardown then kills pyinit's descendants one by one.
"""

from __future__ import annotations

import codecs
import json
import os
import re
import select
import shutil
import signal
import site
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import IO, Any, Callable, Iterable, List, Mapping, Optional, Sequence, Union

from pyinit import linux, proc, signals

# How a user's process starts pyinit: the one place that knows it.
LAUNCHER: List[str] = [sys.executable, "-m", "pyinit"]

PIPE = subprocess.PIPE
STDOUT = subprocess.STDOUT
DEVNULL = subprocess.DEVNULL

SignalSpec = Union[int, str, signal.Signals]
Stream = Union[None, int, IO[Any]]

_GATE = 'read -r _ <"$0" || exit 125; exec "$@"'  # $0: the FIFO; "$@": the command
_STOP_SIGNALS = frozenset({signal.SIGSTOP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU})
_START_TIMEOUT = 30.0  # seconds for the launcher to start the init and the gate
_TAIL_LINES = 20


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
    """One member of a sandbox, as the host's /proc showed it."""

    pid: int  # inside the sandbox's PID namespace (the host PID when not isolated)
    host_pid: int
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
        return "PID %d (host %d, ppid %d) %s %s" % (self.pid, self.host_pid, self.ppid, self.state, command)


@dataclass(frozen=True)
class Result:
    """How a sandboxed command ended."""

    exit_code: int  # pyinit's: the command's exit code, 128+N when signal N killed it
    signal: Optional[str]  # the name of the signal that killed the command ("SIGTERM"), or None
    duration: float  # seconds from the command's start to its exit
    stdout: Optional[str]  # the captured text, where piped
    stderr: Optional[str]
    leftovers: List[Process]  # the command's processes still running when it exited
    report: Optional[dict]  # pyinit's exit report (README: "The exit report"), None if it wrote none
    stop_duration: Optional[float] = None  # seconds from the first send_signal() to the exit
    argv: List[str] = field(default_factory=list)

    def received(self) -> dict:
        """Signals pyinit received, by name: {"SIGTERM": 1}."""
        return dict(self.report["signals"]["received"]) if self.report else {}

    def forwarded(self) -> dict:
        """Signals pyinit forwarded (after rewriting), by name."""
        return dict(self.report["signals"]["forwarded"]) if self.report else {}


class Sandbox:
    """A command under pyinit as PID 1 of fresh PID and mount namespaces; a context manager.

    See the module's docstring for how it works, README.md ("Testing a
    service") for a tutorial. stdin=None means /dev/null: a test's service
    has no business reading the terminal.
    """

    def __init__(self, argv: Sequence[Union[str, "os.PathLike[str]"]], *, env: Optional[Mapping[str, str]] = None,
                 cwd: Union[str, "os.PathLike[str]", None] = None, stdin: Stream = None, stdout: Stream = PIPE,
                 stderr: Stream = PIPE, grace: Optional[float] = None, drain: Optional[float] = None,
                 single_child: bool = False, rewrite: Optional[Mapping[SignalSpec, SignalSpec]] = None,
                 isolate: Union[bool, str] = "auto") -> None:
        if isinstance(argv, (str, bytes)) or not argv:
            raise ValueError("argv must be a non-empty list of strings, like subprocess's")
        if isolate not in (True, False, "auto"):
            raise ValueError("isolate must be True, False or 'auto'")
        self.argv = [os.fspath(arg) for arg in argv]
        self.env = dict(os.environ if env is None else env)
        self.cwd = None if cwd is None else os.fspath(cwd)
        self._options = _init_options(grace, drain, single_child, rewrite)
        self._streams = (DEVNULL if stdin is None else stdin, stdout, stderr)
        self._isolate = isolate
        self.isolated: Optional[bool] = None  # known once started
        self._launcher: Optional[subprocess.Popen] = None
        self._init_pid: Optional[int] = None
        self._init_pidfd: Optional[int] = None
        self._level = 0  # index of the sandbox's namespace in NSpid
        self._command_pid: Optional[int] = None
        self._directory: Optional[str] = None
        self._gate: Optional[int] = None
        self._changed = threading.Condition()
        self._output: "dict[str, List[str]]" = {}
        self._decoders: "dict[int, tuple[str, Any]]" = {}  # fd -> (stream name, incremental decoder)
        self._wake: Optional[tuple] = None
        self._reader: Optional[threading.Thread] = None
        self._watcher: Optional[threading.Thread] = None
        self._attached = threading.Event()  # the tracer is attached: the gate may open
        self._past_gate = threading.Event()  # the command runs (exec'd), or has ended
        self._exited = False
        self._group_stopped = False  # the traced command is in a group-stop (SIGSTOP, SIGTSTP, ...)
        self._exit_status: Optional[int] = None  # the command's wait status, from its exit stop
        self._exit_time: Optional[float] = None
        self._start_time = 0.0
        self._first_signal_time: Optional[float] = None
        self._leftovers: List[Process] = []
        self._seen: "dict[int, int]" = {}  # host PID -> start time, of every member ever seen
        self._result: Optional[Result] = None
        self._closed = False

    # --- life cycle ----------------------------------------------------------------------------

    def __enter__(self) -> "Sandbox":
        if self._launcher is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(self) -> "Sandbox":
        """Start the command; return once it runs (behind no gate any more). Called by `with`."""
        if self._launcher is not None:
            raise SandboxError("this sandbox was started already")
        self.isolated = _decide_isolation(self._isolate, self.env)
        self._directory = tempfile.mkdtemp(prefix="pyinit-sandbox-")
        try:
            self._launch()
        except BaseException:
            self.close()
            raise
        return self

    def _launch(self) -> None:
        assert self._directory is not None
        report = os.path.join(self._directory, "report.json")
        command = list(self.argv)
        gated = _can_run(command[0], self.env, self.cwd)
        if gated:
            fifo = os.path.join(self._directory, "gate")
            os.mkfifo(fifo, 0o600)
            # Held open for reading and writing until close(): the gate's open
            # never blocks, its read waits for our line (kept in the FIFO while
            # we hold it), and a close before the line ends the gate.
            self._gate = os.open(fifo, os.O_RDWR | os.O_CLOEXEC)
            command = ["/bin/sh", "-c", _GATE, fifo, *command]
        argv = [*LAUNCHER, *(["--unshare"] if self.isolated else []), *self._options,
                "-p", "KILL", "--exit-report", report, "--", *command]
        stdin, stdout, stderr = self._streams
        self._launcher = subprocess.Popen(argv, stdin=stdin, stdout=stdout, stderr=stderr, cwd=self.cwd,
                                          env=_launcher_environment(self.env), start_new_session=True)
        self._start_reader()
        self._start_time = time.monotonic()
        self._init_pid = self._find_init()
        if self._init_pid is None:
            return  # the launcher failed: wait() tells how
        if gated:
            self._command_pid = self._find_child(self._init_pid)
            if self._command_pid is None:
                return
            self._watcher = threading.Thread(target=self._watch, args=(self._command_pid, command),
                                             name="pyinit-sandbox-tracer", daemon=True)
            self._watcher.start()
            self._attached.wait()
            assert self._gate is not None
            os.write(self._gate, b"go\n")
            if not self._past_gate.wait(_START_TIMEOUT):
                raise SandboxError("%s did not start within %.0f s" % (self._name(), _START_TIMEOUT))
        self._start_time = time.monotonic()

    def _find_init(self) -> Optional[int]:
        """The host PID of the sandbox's PID 1 (pyinit itself when not isolated), with a pidfd on it."""
        launcher = self._launcher
        assert launcher is not None
        if not self.isolated:
            pid: Optional[int] = launcher.pid
        else:
            pid = self._find_child(launcher.pid)
        if pid is None:
            return None
        try:
            self._init_pidfd = os.pidfd_open(pid)
        except OSError:
            return None
        if self.isolated:
            info = proc.stat(pid)
            if info is None or info.ppid != launcher.pid:  # gone, and its PID reused, before the pidfd
                return None
            self._level = len(proc.status(pid).get("NSpid", "").split()) - 1
        return pid

    def _find_child(self, parent: int) -> Optional[int]:
        """The first child of `parent`, once it has one; None if the launcher exits first."""
        launcher = self._launcher
        assert launcher is not None
        deadline = time.monotonic() + _START_TIMEOUT
        delay = 0.0005
        while True:
            found = proc.children(parent)
            if found:
                return found[0]
            if launcher.poll() is not None:
                return None
            if time.monotonic() > deadline:
                raise SandboxError("the launcher did not start %s within %.0f s" % (self.argv[0], _START_TIMEOUT))
            time.sleep(delay)
            delay = min(delay * 2, 0.005)

    def close(self) -> None:
        """Tear everything down: SIGKILL to PID 1, and return once every member is gone. Called by `with`."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._launcher is not None and self._launcher.poll() is None:
                self._remember(self._members())
                self._kill_everything()
                self._launcher.wait()
            self._wait_until_gone()
            if self._launcher is not None and self._result is None:  # for a wait() after the block
                if self._watcher is not None:
                    self._watcher.join()
                self._stop_reader()
                code = self._launcher.returncode
                self._result = self._make_result(code if code >= 0 else 128 - code)
        finally:
            if self._gate is not None:
                os.close(self._gate)
                self._gate = None
            self._attached.set()
            if self._watcher is not None:
                self._watcher.join()
            self._stop_reader()
            if self._init_pidfd is not None:
                os.close(self._init_pidfd)
                self._init_pidfd = None
            if self._directory is not None:
                shutil.rmtree(self._directory, ignore_errors=True)

    def _kill_everything(self) -> None:
        launcher = self._launcher
        assert launcher is not None
        if self.isolated:
            if self._init_pidfd is not None:
                self._send(signal.SIGKILL)  # the kernel kills every other member
            else:  # PID 1 not seen yet (interrupted start): its parent-death signal takes it along
                launcher.kill()
            return
        # A subreaper's tree: kill from the leaves while pyinit reaps (and adopts orphans), then pyinit.
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            below = [pid for pid in proc.descendants(launcher.pid) if _alive(pid)]
            if not below:
                break
            self._remember(self._members())
            for pid in reversed(below):
                _kill(pid)
            time.sleep(0.005)
        launcher.kill()

    def _wait_until_gone(self) -> None:
        """Every member ever seen has ended (the kernel guarantees it for a namespace: this checks)."""
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            alive = [pid for pid, start in list(self._seen.items()) if _alive(pid, start)]
            if not alive:
                return
            if time.monotonic() > deadline:
                for pid in alive:
                    _kill(pid)
                raise SandboxError("processes of the sandbox outlived its teardown: %s" % alive)
            time.sleep(0.002)

    # --- what is inside ------------------------------------------------------------------------

    @property
    def pid(self) -> Optional[int]:
        """The host PID of the sandbox's PID 1 (pyinit); None if the launcher failed before."""
        return self._init_pid

    @property
    def stdin(self) -> Optional[IO[bytes]]:
        """The command's standard input, with stdin=PIPE; closed by close()."""
        return None if self._launcher is None else self._launcher.stdin

    @property
    def command_pid(self) -> Optional[int]:
        """The host PID of the command; None if it could not be started (see wait())."""
        return self._command_pid

    def processes(self) -> List[Process]:
        """Every member of the sandbox now, its PID 1 first; [] once it has ended."""
        members = self._members()
        self._remember(members)
        return members

    def tree(self) -> str:
        """processes() as indented text, for failure messages."""
        return format_tree(self.processes())

    def _members(self) -> List[Process]:
        root = self._init_pid
        if root is None or self._init_pidfd is None or linux.pidfd_has_exited(self._init_pidfd):
            return []
        raw = []
        for host_pid in [root, *proc.descendants(root)]:
            info = proc.stat(host_pid)
            if info is None:
                continue
            if self.isolated:
                levels = proc.status(host_pid).get("NSpid", "").split()
                if len(levels) <= self._level:
                    continue  # gone and reused between the two reads
                inside = int(levels[self._level])
            else:
                inside = host_pid
            state = info.state
            if host_pid == self._command_pid and state == "t":  # our own trace stop: say what it stands for
                state = "T" if self._group_stopped else "R"
            raw.append((inside, info, state, proc.cmdline(host_pid)))
        by_host = {info.pid: inside for inside, info, _, _ in raw}
        members = []
        for inside, info, state, argv in raw:
            ppid = 0 if info.pid == root and self.isolated else by_host.get(info.ppid, info.ppid)
            members.append(Process(inside, info.pid, ppid, state, info.name, argv))
        return members

    def _remember(self, members: Iterable[Process]) -> None:
        for member in members:
            info = proc.stat(member.host_pid)
            if info is not None:
                self._seen[member.host_pid] = info.start_time

    # --- signals and waiting -------------------------------------------------------------------

    def send_signal(self, sig: SignalSpec) -> None:
        """Send `sig` to the sandbox's PID 1, as `docker stop` and the kubelet do.

        `sig`: a number, a signal.Signals, or a name ("TERM", "SIGTERM",
        "RTMIN+2"). Nothing happens once the sandbox has ended.
        """
        number = signal_number(sig)
        if self._first_signal_time is None:
            self._first_signal_time = time.monotonic()
        self._send(number)

    def _send(self, number: int) -> None:
        if self._init_pidfd is None:
            return
        try:
            signal.pidfd_send_signal(self._init_pidfd, number)
        except ProcessLookupError:
            pass

    def kill_command(self) -> None:
        """SIGKILL the command itself (not PID 1): pyinit then ends the normal way and writes its exit report."""
        if self._command_pid is not None and not self._exited:
            _kill(self._command_pid)

    def wait(self, timeout: Optional[float] = None) -> Result:
        """Wait for the command, and pyinit after it, to end; return the Result.

        Raises TimeoutExpired (its message holds the process tree) when
        `timeout` seconds pass first; the sandbox then keeps running.
        """
        if self._result is not None:
            return self._result
        launcher = self._launcher
        if launcher is None:
            raise SandboxError("the sandbox was not started")
        try:
            code = launcher.wait(timeout)
        except subprocess.TimeoutExpired:
            tree = self.tree()
            raise TimeoutExpired("%s did not end within %g s; the processes:\n%s"
                                 % (self._name(), timeout or 0.0, tree), timeout or 0.0, tree) from None
        if self._watcher is not None:
            self._watcher.join()
        self._finish_reading()
        self._result = self._make_result(code if code >= 0 else 128 - code)
        return self._result

    def stop(self, sig: SignalSpec = signal.SIGTERM, timeout: Optional[float] = 10) -> Result:
        """send_signal(sig), then wait(timeout)."""
        self.send_signal(sig)
        return self.wait(timeout)

    def wait_for_exit(self, timeout: Optional[float] = None) -> bool:
        """Wait until the command (not pyinit) has exited; False when `timeout` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._changed:
            while not self._command_done():
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._changed.wait(0.05 if remaining is None else min(remaining, 0.05))
        return True

    def _command_done(self) -> bool:
        if self._exited:
            return True
        if self._watcher is not None:
            return False
        return self._launcher is None or self._launcher.poll() is not None

    def _exit_code_so_far(self) -> int:
        if self._exit_status is not None:
            return _exit_code(self._exit_status)
        code = self._launcher.poll() if self._launcher is not None else None
        return -1 if code is None else code

    # --- readiness -----------------------------------------------------------------------------

    def wait_for_output(self, pattern: Union[str, "re.Pattern[str]"], timeout: float = 10,
                        stream: str = "stdout") -> "re.Match[str]":
        """Wait until the captured output matches the regex; return the match.

        `stream`: "stdout", "stderr", or "any" (either of the two captured).
        """
        names = [name for name in ("stdout", "stderr") if stream in (name, "any") and name in self._output]
        if stream not in ("stdout", "stderr", "any") or not names:
            raise ValueError("%s is not captured: start the sandbox with %s=PIPE" % (stream, stream))
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        found: "list[re.Match[str]]" = []

        def matched() -> bool:
            for name in names:
                match = regex.search("".join(self._output[name]))
                if match:
                    found.append(match)
                    return True
            return False

        self._wait_until(matched, timeout, "output matching %r on %s" % (regex.pattern, stream))
        return found[0]

    def wait_for_port(self, port: int, host: str = "127.0.0.1", timeout: float = 10) -> None:
        """Wait until a TCP connection to host:port succeeds (the network is the host's)."""
        def accepting() -> bool:
            try:
                with socket.create_connection((host, port), timeout=1):
                    return True
            except OSError:
                return False

        self._wait_until(accepting, timeout, "a listener on %s:%d" % (host, port), poll=0.02)

    def wait_for_path(self, path: Union[str, "os.PathLike[str]"], timeout: float = 10) -> None:
        """Wait until `path` exists (a relative path is taken from the sandbox's cwd)."""
        full = os.path.join(self.cwd or os.getcwd(), os.fspath(path))
        self._wait_until(lambda: os.path.exists(full), timeout, "the path %s" % full, poll=0.01)

    def _wait_until(self, ready: Callable[[], bool], timeout: float, what: str, poll: float = 0.05) -> None:
        """Wait for `ready()`; fail at once when the command exits first, or when `timeout` passes."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                if ready():
                    return
                if self._command_done():
                    self._read_available()  # what it wrote before exiting
                    if ready():
                        return
                    raise CommandExited("%s exited with code %d while waiting for %s\n%s"
                                        % (self._name(), self._exit_code_so_far(), what, self.output_tail()),
                                        self._exit_code_so_far())
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    tree = self.tree()
                    raise TimeoutExpired("no %s within %g s from %s; the processes:\n%s\n%s"
                                         % (what, timeout, self._name(), tree, self.output_tail()), timeout, tree)
                self._changed.wait(min(remaining, poll))

    # --- output --------------------------------------------------------------------------------

    @property
    def stdout(self) -> str:
        """The standard output captured so far ("" when not piped)."""
        with self._changed:
            return "".join(self._output.get("stdout", []))

    @property
    def stderr(self) -> str:
        with self._changed:
            return "".join(self._output.get("stderr", []))

    def output_tail(self, lines: int = _TAIL_LINES) -> str:
        """The last lines of each captured stream, labelled, for failure messages."""
        with self._changed:
            parts = []
            for name, pieces in self._output.items():
                text = "".join(pieces).splitlines()[-lines:]
                parts.append("%s (last %d lines):\n%s" % (name, len(text), "\n".join("  " + line for line in text))
                             if text else "%s: (empty)" % name)
            return "\n".join(parts) if parts else "(output not captured)"

    def _start_reader(self) -> None:
        launcher = self._launcher
        assert launcher is not None
        for name, pipe in (("stdout", launcher.stdout), ("stderr", launcher.stderr)):
            if pipe is not None:
                fd = pipe.fileno()
                os.set_blocking(fd, False)
                self._output[name] = []
                self._decoders[fd] = (name, codecs.getincrementaldecoder("utf-8")(errors="replace"))
        if self._decoders:
            self._wake = os.pipe2(os.O_CLOEXEC)
            self._reader = threading.Thread(target=self._read, name="pyinit-sandbox-output", daemon=True)
            self._reader.start()

    def _read(self) -> None:
        """The reader thread: take output as it is written, so the command never blocks on a full pipe."""
        assert self._wake is not None
        poller = select.poll()
        for fd in [*self._decoders, self._wake[0]]:
            poller.register(fd, select.POLLIN)
        while self._decoders:
            events = poller.poll()
            if any(fd == self._wake[0] for fd, _ in events):
                return
            with self._changed:
                for fd, _ in events:
                    if fd in self._decoders and not self._read_from(fd):
                        poller.unregister(fd)

    def _read_from(self, fd: int) -> bool:
        """Append what `fd` has now (with the lock held); False at end-of-file."""
        name, decoder = self._decoders[fd]
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                return True
            self._output[name].append(decoder.decode(chunk, final=not chunk))
            self._changed.notify_all()
            if not chunk:
                del self._decoders[fd]
                return False

    def _read_available(self) -> None:
        with self._changed:
            for fd in list(self._decoders):
                self._read_from(fd)

    def _finish_reading(self) -> None:
        """After the end: the reader sees end-of-file once the last member is gone."""
        if self._reader is not None:
            self._reader.join(_START_TIMEOUT)
            if self._reader.is_alive():  # held open by something outside the sandbox: stop anyway
                self._stop_reader()

    def _stop_reader(self) -> None:
        if self._reader is not None and self._wake is not None:
            os.write(self._wake[1], b"x")
            self._reader.join()
            self._read_available()
        if self._wake is not None:
            for fd in self._wake:
                os.close(fd)
            self._wake = None
        self._reader = None
        launcher = self._launcher
        if launcher is not None:
            for pipe in (launcher.stdin, launcher.stdout, launcher.stderr):
                if pipe is not None:
                    pipe.close()
        self._decoders.clear()

    # --- the tracer ----------------------------------------------------------------------------

    def _watch(self, command: int, gate_argv: List[str]) -> None:
        """The tracer thread: attach to the gated command, see it pass the gate, hand its signals back, catch its exit.

        The command has passed the gate at the first exec(2) into anything
        but the gate itself (the tracer may attach before or after the
        init's exec of /bin/sh).
        """
        try:
            linux.ptrace(linux.PTRACE_SEIZE, command, linux.PTRACE_O_TRACEEXIT | linux.PTRACE_O_TRACEEXEC)
        except OSError as failure:
            warnings.warn(IsolationWarning("cannot trace the command (%s): its leftovers are not observed"
                                           % failure.strerror))
            self._attached.set()
            self._past_gate.set()
            self._watch_untraced(command)
            return
        finally:
            self._attached.set()
        while True:
            try:
                _, status = os.waitpid(command, linux.WALL)
            except ChildProcessError:
                return
            if not os.WIFSTOPPED(status):  # ended without an exit stop
                self._command_exited(status, [])
                return
            event, signo = status >> 16, os.WSTOPSIG(status)
            self._group_stopped = event == linux.PTRACE_EVENT_STOP and signo in _STOP_SIGNALS
            try:
                if event == linux.PTRACE_EVENT_EXIT:
                    members = self._members()
                    self._remember(members)
                    leftovers = [m for m in members if m.host_pid not in (self._init_pid, command)]
                    self._command_exited(linux.ptrace_event_message(command), leftovers)
                    linux.ptrace(linux.PTRACE_DETACH, command)
                    return
                if event == linux.PTRACE_EVENT_EXEC:
                    if proc.cmdline(command) != gate_argv:
                        self._past_gate.set()
                    linux.ptrace(linux.PTRACE_CONT, command)
                elif event == linux.PTRACE_EVENT_STOP:  # a group-stop: stay stopped, but traced
                    linux.ptrace(linux.PTRACE_LISTEN if signo in _STOP_SIGNALS else linux.PTRACE_CONT, command)
                else:  # a signal on its way to the command: deliver it
                    linux.ptrace(linux.PTRACE_CONT, command, signo)
            except ProcessLookupError:  # SIGKILLed while stopped: the next wait tells
                pass

    def _watch_untraced(self, command: int) -> None:
        """Where ptrace is refused: learn of the exit through a pidfd (the status then comes from the report)."""
        try:
            pidfd = os.pidfd_open(command)
        except ProcessLookupError:
            self._command_exited(None, [])
            return
        try:
            select.select([pidfd], [], [])
        finally:
            os.close(pidfd)
        self._command_exited(None, [])

    def _command_exited(self, status: Optional[int], leftovers: List[Process]) -> None:
        self._past_gate.set()
        with self._changed:
            self._exited = True
            self._exit_status = status
            self._exit_time = time.monotonic()
            self._leftovers = leftovers
            self._changed.notify_all()

    # --- the result ----------------------------------------------------------------------------

    def _make_result(self, code: int) -> Result:
        report = None
        if self._directory is not None:
            text = proc.read(os.path.join(self._directory, "report.json"))
            if text:
                report = json.loads(text)
                report["command"] = list(self.argv)  # not the gate's command line
        status = self._exit_status
        killed_by = None
        if status is not None and os.WIFSIGNALED(status):
            killed_by = signals.name(os.WTERMSIG(status))
        elif report is not None:
            killed_by = report["child"]["signal"]
        end = self._exit_time if self._exit_time is not None else time.monotonic()
        return Result(
            exit_code=code,
            signal=killed_by,
            duration=max(0.0, end - self._start_time),
            stdout="".join(self._output["stdout"]) if "stdout" in self._output else None,
            stderr="".join(self._output["stderr"]) if "stderr" in self._output else None,
            leftovers=list(self._leftovers),
            report=report,
            stop_duration=None if self._first_signal_time is None else max(0.0, end - self._first_signal_time),
            argv=list(self.argv),
        )

    @property
    def label(self) -> str:
        """The command line for messages: the program's base name, the whole shortened to 100 characters."""
        text = " ".join([os.path.basename(self.argv[0]), *self.argv[1:]])
        return text if len(text) <= 100 else text[:97] + "..."

    @property
    def result(self) -> Optional[Result]:
        """The Result once wait() has returned it, else None."""
        return self._result

    def _name(self) -> str:
        return repr(self.label)

    def __repr__(self) -> str:
        return "<pyinit.Sandbox %s pid=%s>" % (self._name(), self._init_pid)


def run(argv: Sequence[Union[str, "os.PathLike[str]"]], *, timeout: Optional[float] = None, **options: Any) -> Result:
    """Run `argv` in a Sandbox to the end and return its Result (the one-shot form)."""
    with Sandbox(argv, **options) as box:
        return box.wait(timeout)


def signal_number(sig: SignalSpec) -> int:
    """A signal from a number, a signal.Signals, or a name ("TERM", "SIGTERM", "RTMIN+2")."""
    if isinstance(sig, str):
        return signals.parse(sig)
    number = int(sig)
    if number not in signals.VALID:
        raise ValueError("%d is not a signal number this system knows" % number)
    return number


def format_tree(members: Sequence[Process]) -> str:
    """Processes as an indented tree, children under their parent."""
    if not members:
        return "(no process: the sandbox has ended)"
    pids = {member.pid for member in members}
    below: "dict[int, list[Process]]" = {}
    for member in members:
        below.setdefault(member.ppid if member.ppid in pids else -1, []).append(member)
    lines: "list[str]" = []

    def add(member: Process, depth: int) -> None:
        lines.append("  " * depth + str(member))
        for child in sorted(below.get(member.pid, []), key=lambda m: m.pid):
            add(child, depth + 1)

    for root in sorted(below.get(-1, []), key=lambda m: m.pid):
        add(root, 0)
    return "\n".join(lines)


def _exit_code(status: int) -> int:
    return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _init_options(grace: Optional[float], drain: Optional[float], single_child: bool,
                  rewrite: Optional[Mapping[SignalSpec, SignalSpec]]) -> List[str]:
    """The init's options for the launcher's command line."""
    options = []
    for name, seconds in (("--grace", grace), ("--drain", drain)):
        if seconds is not None:
            if not 0 <= seconds < float("inf"):
                raise ValueError("%s must be a number of seconds, 0 or more" % name[2:])
            options += [name, repr(float(seconds))]
    if single_child:
        options.append("--single-child")
    for source, target in (rewrite or {}).items():
        options += ["--rewrite", "%d:%d" % (signal_number(source), 0 if target in (0, "0") else signal_number(target))]
    return options


def _launcher_environment(env: Mapping[str, str]) -> "dict[str, str]":
    """`env`, plus this package's directory on PYTHONPATH when a fresh interpreter would not find it.

    So a sandbox started from a source tree runs the same pyinit; an
    installed pyinit needs (and gets) nothing.
    """
    environment = dict(env)
    home = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    installed = {os.path.realpath(path) for path in [*site.getsitepackages(), site.getusersitepackages()]}
    if os.path.realpath(home) not in installed:
        paths = [path for path in environment.get("PYTHONPATH", "").split(os.pathsep) if path]
        if home not in paths:
            environment["PYTHONPATH"] = os.pathsep.join([home, *paths])
    return environment


def _can_run(name: str, env: Mapping[str, str], cwd: Optional[str]) -> bool:
    """Whether exec would find `name` as execvp(3) does, so the gate can exec it."""
    if "/" in name:
        path = os.path.join(cwd or os.getcwd(), name)
        return os.path.isfile(path) and os.access(path, os.X_OK)
    return shutil.which(name, path=env.get("PATH", os.defpath)) is not None


_refusals: "dict[int, Optional[str]]" = {}
_refusals_lock = threading.Lock()


def _decide_isolation(isolate: Union[bool, str], env: Mapping[str, str]) -> bool:
    """Whether to use namespaces; raise or warn, as `isolate` asks, where the kernel refuses them."""
    if isolate is False:
        return False
    reason = namespaces_refused(env)
    if reason is None:
        return True
    if isolate is True:
        raise IsolationError("cannot run in namespaces of its own: %s" % reason)
    warnings.warn(IsolationWarning("namespaces refused (%s): running under pyinit as a subreaper instead, "
                                   "which cannot stop a process that leaves its tree" % reason), stacklevel=4)
    return False


def namespaces_refused(env: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """Why the launcher cannot create namespaces here, or None when it can (asked once per user ID)."""
    with _refusals_lock:
        uid = os.geteuid()
        if uid not in _refusals:
            probe = subprocess.run([*LAUNCHER, "--unshare", "--", "true"], stdin=DEVNULL, stdout=DEVNULL,
                                   stderr=PIPE, env=_launcher_environment(os.environ if env is None else env),
                                   timeout=_START_TIMEOUT)
            message = probe.stderr.decode(errors="replace").strip()
            if message.startswith("pyinit: "):
                message = message[len("pyinit: "):]
            _refusals[uid] = None if probe.returncode == 0 else (message or "exit code %d" % probe.returncode)
        return _refusals[uid]


def _alive(pid: int, start_time: Optional[int] = None) -> bool:
    """Whether `pid` runs (not a zombie), and is the same process as the one that started at `start_time`."""
    info = proc.stat(pid)
    return info is not None and info.state not in "ZX" and (start_time is None or info.start_time == start_time)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
