"""The caller's end of the fork server (forkserver/server.py): start launchers there, learn how they ended.

The server is started when this module is imported (by pyinit.sandbox,
so by the first use of pyinit.Sandbox or pyinit.run, or a test module's
import of them), not by the first sandbox: its interpreter's start and
its first spare launcher are made while the caller goes on (its own
imports, collecting tests), and the first sandbox finds it ready. Where it
cannot start, nothing is said: each sandbox then starts its launcher
directly (sandbox/launch.py), as before the server.

Its socket is close-on-exec, and a fork of this process (multiprocessing,
say) closes its copy at once, so the server's end reads end-of-file when
this process ends, and takes every sandbox along; a fork that makes
sandboxes gets a server of its own.

A served launcher is the one the calling thread would have started
directly at that moment: the request carries the working directory and
umask, and the rest of what a child inherits is compared (caller_state)
with what it was when the server started; where it differs, the sandbox
starts directly. So no identity gets a server of its own, and no server
is ever replaced under running sandboxes: one that has gone, or is found
stopped, is retired, and closed once its last launcher has ended.
"""

from __future__ import annotations

# Few imports, and light ones, before the server is started: this module is
# the first that pyinit.sandbox imports, so the server's start-up overlaps
# all the rest of that import.
import _signal
import _socket
import _thread
import atexit
import os
import sys
import time

from pyinit import linux, proc
from pyinit.forkserver.wire import MESSAGE, encode_request, send

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Dict, List, Mapping, Optional

# The server's command: a file run as a script is compiled at each start (no .pyc for __main__); imported,
# the module's .pyc is used. Under -I -S the package's directory is put on sys.path by hand.
_SERVER = ["-I", "-S", "-c", "import sys; sys.path.append(%r); from pyinit.forkserver.server import main; main()"
           % os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))]
_ALL_SIGNALS = _signal.valid_signals()
START_TIMEOUT = 30.0
ANSWER_WAIT = 0.05  # seconds without an answer after which the server is looked at: stopped, or gone?
# What a launcher inherits from the thread that starts it and the server cannot set for it: the lines of
# /proc/thread-self/status (affinity included), and below, the cgroup, namespaces, root, securebits, limits, nice.
_INHERITED = (b"Uid", b"Gid", b"Groups", b"CapInh", b"CapPrm", b"CapEff", b"CapBnd", b"CapAmb", b"NoNewPrivs",
              b"Seccomp", b"Seccomp_filters", b"SigBlk", b"SigIgn", b"Cpus_allowed", b"Mems_allowed")
_RLIMITS = 16  # Linux's RLIM_NLIMITS: RLIMIT_CPU (0) to RLIMIT_RTTIME (15); the resource module does not say
# A thread cannot leave its own PID and time namespaces, only choose its children's.
_NAMESPACES = ("user", "mnt", "pid_for_children", "net", "uts", "ipc", "cgroup", "time_for_children")


class SignalsHeld:
    """Block every signal in this thread for the few statements that make a descriptor and keep it.

    An exception from a signal handler (a KeyboardInterrupt) raised between
    the system call that returns a descriptor and the statement that stores
    it would lose the descriptor. Held back, the signal arrives as the block
    ends, once the descriptor is kept where close() finds it. The thread's
    mask is restored exactly; a thread started inside inherits the full mask
    (the output reader: signals are never delivered to it).

    Python runs a handler in the main thread whichever thread the signal
    reached: in a caller with other threads that take signals, a handler can
    still run inside. What is done inside is therefore also made to survive
    an exception at any point (the start requests' numbers, the reader's
    `_finished`).
    """

    def __enter__(self) -> None:
        # _signal's, not signal's: the latter turns each set into Signals members, a third of a sandbox's
        # start-up once per call (the profile showed it).
        self._mask = _signal.pthread_sigmask(_signal.SIG_BLOCK, ())  # the mask to restore, changing nothing
        try:
            _signal.pthread_sigmask(_signal.SIG_BLOCK, _ALL_SIGNALS)
        except BaseException:
            # A signal that came just before the block has its Python handler run at the first check after
            # it, here: its KeyboardInterrupt leaves before the block is entered, and must not leave every
            # signal blocked behind it (it once did, one time in 150 under an itimer).
            _signal.pthread_sigmask(_signal.SIG_SETMASK, self._mask)
            raise

    def __exit__(self, *exc_info: object) -> None:
        _signal.pthread_sigmask(_signal.SIG_SETMASK, self._mask)


def caller_state() -> "tuple[object, int]":
    """What a launcher started now by this thread would inherit, and this process's umask.

    The first part is compared with the same taken when the server was
    started: where they differ, the server (which has the caller's state of
    then) cannot make the launcher the caller would, and it is started
    directly. The umask and working directory travel with each request.
    0.1 to 0.3 ms (measured on a busy 2-core machine, where a sandbox's
    start and stop take 12 to 15 ms; the benchmark's ratio to mirakuru did
    not move): a read of /proc/thread-self/status and of its cgroup, a
    readlink per namespace, a system call per limit.
    """
    import resource

    status = proc.read("/proc/thread-self/status") or b""
    lines = status.split(b"\n")
    inherited = [line for line in lines if line.partition(b":")[0] in _INHERITED]
    umask = [line for line in lines if line.startswith(b"Umask:")]
    root = os.stat("/")
    limits = [resource.getrlimit(number) for number in range(_RLIMITS)]
    with SignalsHeld():  # after the status, whose SigBlk is the thread's own: the ns directory's descriptor is closed
        namespaces = proc.namespaces("thread-self", _NAMESPACES)  # again whatever comes (it once leaked at a Ctrl-C)
    state = (inherited, proc.read("/proc/thread-self/cgroup"), namespaces, (root.st_dev, root.st_ino),
             linux.securebits(), limits, os.getpriority(os.PRIO_PROCESS, 0))
    return state, int(umask[0].split()[1], 8) if umask else 0o022


class ServedProcess:
    """A launcher forked by the server: what the sandbox uses of a subprocess.Popen (pid, the pipes, returncode)."""

    def __init__(self, server: "ForkServer", pid: int, pipes: "List[Optional[IO[bytes]]]") -> None:
        self.server, self.pid = server, pid
        self.stdin, self.stdout, self.stderr = pipes
        self.returncode: Optional[int] = None

    def kill(self) -> None:
        """SIGKILL it while it is still the server's child (not reaped yet, so the PID is still its own)."""
        info = proc.stat(self.pid)
        if info is not None and info.ppid == self.server.pid:
            os.kill(self.pid, _signal.SIGKILL)


class ServerStopped(OSError):
    """The server does not answer: stopped (SIGSTOP, a debugger) or busy past the wait; a sandbox starts directly."""


class ForkServer:
    """The caller's end of its process's fork server: start launchers, learn how they ended."""

    _lock = _thread.allocate_lock()
    _current: "Optional[ForkServer]" = None
    _open: "List[ForkServer]" = []  # every server of this process not closed yet: the current one, and retired ones

    @classmethod
    def get(cls, state: object = None) -> "ForkServer":
        """This process's server, started if need be (OSError where it cannot be).

        `state`: this thread's caller_state(), taken before any SignalsHeld
        (whose mask a new server must not take for the caller's).
        """
        with cls._lock:
            server = cls._current
            if server is None or server.pid_owner != os.getpid() or server.unusable():
                if server is not None and server.pid_owner == os.getpid():
                    server.retire()  # gone or stopped: its sandboxes keep it until they end; none is killed
                server = cls._current = ForkServer(caller_state()[0] if state is None else state)
            return server

    @classmethod
    def serving(cls, state: object) -> "Optional[ForkServer]":
        """The server, where it makes exactly the launcher this thread would (`state`: caller_state()'s); else None."""
        try:
            server = cls.get(state)
        except OSError:
            return None
        return server if server.state == state else None

    @classmethod
    def prestart(cls) -> None:
        """Start this process's server now, so that the first sandbox finds it ready; silent where it cannot."""
        try:
            cls.get()
        except OSError:
            pass

    @classmethod
    def _forget_in_fork(cls) -> None:
        """In a fork of this process: close the inherited sockets, which must not keep the parent's servers alive."""
        servers, cls._current, cls._open = cls._open, None, []
        cls._lock = _thread.allocate_lock()  # another thread may have held it at the fork, and no thread of that name is here
        for server in servers:
            server._lock = _thread.allocate_lock()
            server._closed = True
            server._control.close()
            if server.pidfd >= 0:
                os.close(server.pidfd)
            server.pidfd = -1

    def __init__(self, state: object) -> None:
        """Start a server, which inherits `state` (caller_state()'s, taken just before) from this thread."""
        self.pid_owner, self.state = os.getpid(), state
        self._lock = _thread.allocate_lock()
        self._closed = False  # its socket closed, its process reaped: every later question is ConnectionError
        self._retired = False  # replaced by another server: closed once its last launcher is known to have ended
        self._statuses: Dict[int, int] = {}
        self._verdict: Optional[str] = None  # the probe's answer, once it has come
        self._asked = False  # a probe sent and not answered yet
        self._sequence = 0  # the number of the last start request
        self._awaited = b""  # the number whose answer start() waits for
        self._launchers: "set[int]" = set()  # started, and not yet forgotten
        self.pidfd = self.pid = -1
        with SignalsHeld():
            self._control, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
            try:
                # Not subprocess (whose import would come first): posix_spawn, with what Popen would give it
                # (SIGPIPE and SIGXFSZ to their defaults, a session of its own, no signal blocked), and
                # /dev/null for stdin and stdout: it holds no pipe of the caller's but stderr, for a last
                # word. The server closes every other descriptor it inherits.
                fd = theirs.fileno()
                self.pid = os.posix_spawn(sys.executable, [sys.executable, *_SERVER, str(fd)], os.environ,
                                          file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                                                        (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                                                        (os.POSIX_SPAWN_DUP2, fd, fd)],  # dup2 onto itself: no CLOEXEC
                                          setsid=True, setsigmask=(), setsigdef=(_signal.SIGPIPE, _signal.SIGXFSZ))
                self.pidfd = os.pidfd_open(self.pid)
                self._control.send(b"probe")  # answered once the server has made its first spare
                self._asked = True
            except BaseException:
                self._control.close()  # a server started already reads end-of-file, and exits
                if self.pidfd >= 0:
                    os.close(self.pidfd)
                if self.pid >= 0:
                    try:
                        os.waitpid(self.pid, 0)
                    except ChildProcessError:  # this process ignores SIGCHLD: the kernel reaped it
                        pass
                raise
            finally:
                theirs.close()
        ForkServer._open.append(self)
        atexit.register(self.close)

    def gone(self) -> bool:
        """Whether the server has exited (or was killed)."""
        return self.pidfd < 0 or linux.pidfd_has_exited(self.pidfd)

    def stopped(self) -> bool:
        """Whether the server is stopped (SIGSTOP, SIGTSTP, a debugger): it answers nothing until continued."""
        info = proc.stat(self.pid)
        return info is not None and info.state in "Tt"

    def unusable(self) -> bool:
        """Closed, retired (found stopped by a start) or gone: the next sandbox needs another server."""
        return self._closed or self._retired or self.gone()

    def retire(self) -> None:
        """Replaced by another server: close this one once none of its launchers runs (now, where none does).

        Closing it earlier would end the sandboxes it serves: its end of the
        socket would read end-of-file, and it would signal every launcher.
        """
        self._retired = True
        self._close_if_idle()

    def _close_if_idle(self) -> None:
        if self._retired and not self._launchers and self._lock.acquire(blocking=False):
            try:
                self._close()
            finally:
                self._lock.release()

    def close(self) -> None:
        """End the server (its socket closes; it ends any launcher left) and reap it: at this process's exit."""
        with self._lock:
            self._close()

    def _close(self) -> None:
        """close(), the lock held."""
        with SignalsHeld():  # closed and forgotten together, whatever comes (a Ctrl-C in a wait() that retires it)
            self._close_held()

    def _close_held(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._control.close()
        if self in ForkServer._open:
            ForkServer._open.remove(self)
        if self.pid_owner != os.getpid() or self.pidfd < 0:
            return  # a fork's: the server is its parent's child
        if self.stopped() or not linux.ready([self.pidfd], [], START_TIMEOUT)[0]:  # stopped, it never reads the end
            _signal.pidfd_send_signal(self.pidfd, _signal.SIGKILL)
        os.close(self.pidfd)
        self.pidfd = -1
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:  # reaped by the kernel: this process ignores SIGCHLD
            pass

    def start(self, argv: List[str], fds: List[int], cwd: str, env: Mapping[str, str], umask: int, orphaned: int,
              timeout: float = START_TIMEOUT) -> int:
        """Have the server fork a launcher running `pyinit ARGV` ("fd:REPORT" stands for the report's descriptor).

        It runs in `cwd` (an absolute path: the caller resolves it), with
        `umask`. `orphaned`: the signal the server sends it if this process
        ends first. A server stopped, or silent for `timeout`, raises
        ServerStopped: the request is given up (its launcher, should one
        come, is ended), and the sandbox starts directly.
        """
        if not self._lock.acquire(timeout=timeout):
            raise ServerStopped("the sandboxes' fork server is busy")
        try:
            if self._closed:
                raise ConnectionError("the sandboxes' fork server has gone")
            deadline = time.monotonic() + timeout
            self._sequence += 1
            request = encode_request(self._sequence, argv, cwd, env, umask, orphaned)
            self._awaited = b"%d" % self._sequence
            try:
                send(self._control, request, fds)
                while True:
                    try:
                        message = self._next(ANSWER_WAIT)
                    except TimeoutError:
                        if self.stopped() or time.monotonic() > deadline:
                            self._retired = True  # the next sandbox gets a server of its own
                            raise ServerStopped("the sandboxes' fork server does not answer") from None
                        continue
                    word, _, rest = message.partition(b" ")
                    if word == b"started":
                        self._launchers.add(int(rest))
                        return int(rest)
                    if word == b"error":
                        raise OSError("the sandboxes' fork server: %s" % rest.decode(errors="replace"))
            finally:  # from now on, an answer to this request is to a start given up: _next ends its launcher
                self._awaited = b""
        finally:
            self._lock.release()

    def namespaces_refused(self) -> Optional[str]:
        """Why the server could not make the namespaces of a default sandbox; None if it could.

        The first question is asked as the server starts (its answer waits
        in the socket); each later call asks again.
        """
        if not self._lock.acquire(timeout=START_TIMEOUT):
            raise ServerStopped("the sandboxes' fork server is busy")
        try:
            if self._closed:
                raise ConnectionError("the sandboxes' fork server has gone")
            if not self._asked:
                with SignalsHeld():  # sent and noted together
                    self._control.send(b"probe")
                    self._asked = True
            while self._verdict is None:
                try:
                    self._next(ANSWER_WAIT)
                except TimeoutError:
                    if self.stopped():
                        raise ServerStopped("the sandboxes' fork server is stopped") from None
            with SignalsHeld():  # taken and cleared together: a Ctrl-C between would leave a probe noted, never answered
                answer, self._verdict, self._asked = self._verdict, None, False
        finally:
            self._lock.release()
        word, _, why = answer.partition(" ")
        if word == "error":
            raise OSError("the sandboxes' fork server: %s" % why)
        return None if word == "ok" else why or answer

    def status(self, pid: int, timeout: float) -> Optional[int]:
        """The wait status of launcher `pid` once the server has reaped it; None if it does not say within `timeout`.

        None too when the server has gone (killed under a running sandbox:
        the launcher, its child, went to another parent, and its status with
        it) or is stopped (it reaps nothing). The status is kept until
        forget(pid): a Ctrl-C between this return and the caller keeping it
        loses nothing.
        """
        deadline = time.monotonic() + timeout
        if not self._lock.acquire(timeout=timeout):
            return None
        try:
            while pid not in self._statuses:
                try:
                    self._next(min(ANSWER_WAIT, max(0.0, deadline - time.monotonic())))
                except TimeoutError:
                    if self.stopped() or time.monotonic() >= deadline:
                        return None
                except ConnectionError:
                    return None
            return self._statuses[pid]
        finally:
            self._lock.release()

    def forget(self, pid: int) -> None:
        """Drop launcher `pid` and its status, kept by its caller now (or lost for good)."""
        self._statuses.pop(pid, None)
        self._launchers.discard(pid)
        self._close_if_idle()

    def _next(self, timeout: Optional[float]) -> bytes:
        """The next message but an exit (exits are kept, and so is the probe's verdict); the lock held.

        It waits with signals open, so that a Ctrl-C ends a long wait, and
        takes the message and keeps what it says with them held: a Ctrl-C
        between the two once lost an exit that close() then waited 30 s for.
        """
        while True:
            if self._closed:
                raise ConnectionError("the sandboxes' fork server has gone")
            if not linux.ready([self._control.fileno()], [], timeout)[0]:
                raise TimeoutError("the sandboxes' fork server did not answer")
            with SignalsHeld():
                message = self._control.recv(MESSAGE)
                word, _, rest = message.partition(b" ")
                if word == b"namespaces":  # the probe's verdict: "ok", "refused WHY" or "error WHY"
                    self._verdict = rest.decode(errors="replace")
                elif word == b"exit":
                    pid, status = rest.split()
                    self._statuses[int(pid)] = int(status)
                elif word in (b"started", b"error"):
                    answered, _, rest = rest.partition(b" ")
                    if answered not in (self._awaited, b"-"):  # a start given up after its request was sent
                        if word == b"started":
                            self._control.send(b"end " + rest)
                        continue
                    message = word + b" " + rest
            if not message:
                raise ConnectionError("the sandboxes' fork server has gone")
            if word != b"exit" or timeout is not None:
                return message

os.register_at_fork(after_in_child=ForkServer._forget_in_fork)
ForkServer.prestart()
