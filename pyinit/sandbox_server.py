"""The fork server: one small pyinit process per test process, which forks each sandbox's launcher.

Started as `python -I -S __main__.py` (sandbox_launch.LAUNCHER), a launcher
pays an interpreter's start for every sandbox: most of a sandbox's cost. The
fork server pays it once per process. Started with the first sandbox, it has
pyinit's launcher imported, and for each sandbox it forks and runs the
launcher in the fork, in its own interpreter, with the standard streams and
the report's pipe it was sent over a Unix socket (SCM_RIGHTS), the working
directory and the environment asked for.

Every guarantee of a launcher started directly holds:
- nothing outlives the caller: the server's end of the socket pair reads
  end-of-file when the caller's process ends, however it ends (SIGKILL
  included: the kernel closes its descriptors); the server then SIGKILLs its
  launchers and exits. A launcher dies with the server (PR_SET_PDEATHSIG),
  and its PID 1 with it, which takes the whole namespace along.
- the caller is left undisturbed: the server is its child (started once, and
  ended with it), no thread of the caller's, one socket; the launchers are
  the server's children, reaped there, their statuses sent back.
- the server has one thread, so each fork can unshare a user namespace: the
  unprivileged case works as before.
One thing differs: a launcher forked by the server starts with the server's
signal dispositions, not the caller's at that moment (a disposition the
caller set to SIG_IGN after the server started does not reach the command).

Messages (SOCK_SEQPACKET, one per datagram): the caller sends a request as
JSON, with the launcher's four descriptors (stdin, stdout, stderr, the
report's write end); the server answers `started PID` or `error TEXT`, and
later, for each launcher that has ended, `exit PID STATUS` (a wait status).

Run as a file, this module is the server: `python -I -S sandbox_server.py FD`.
"""

from __future__ import annotations

import array
import atexit
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
from typing import IO, Any, Dict, List, Mapping, Optional

_MESSAGE = 1 << 16
START_TIMEOUT = 30.0
_DESCRIPTORS = 4  # stdin, stdout, stderr, the report's write end


# --- the server --------------------------------------------------------------------------------------


def serve(control_fd: int) -> None:
    """Fork a launcher for each request; send back each one's start and exit; end everything at end-of-file."""
    # Imported once here, not in every fork: what a launcher and its init load (the report's json too), _ctypes.
    from pyinit import cli, init, linux, namespace, report, shutdown, spawn  # noqa: F401
    linux.load()

    # Only SIGCHLD is taken (through a wake-up pipe); the rest is blocked: the
    # server's life is its socket's, and a fork starts with everything blocked.
    signal.pthread_sigmask(signal.SIG_SETMASK, signal.valid_signals() - {signal.SIGCHLD})
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda signo, frame: None)
    control = socket.socket(fileno=control_fd)
    launchers: "dict[int, int]" = {}  # PID -> the signal that ends it when the caller has gone
    poller = select.poll()
    poller.register(control, select.POLLIN)
    poller.register(wake_read, select.POLLIN)
    while True:
        for fd, _ in _poll(poller):
            if fd == wake_read:
                _drain(wake_read)
                _reap(launchers, control)
                continue
            request, fds = _receive(control)
            if not request:  # the caller has gone: its sandboxes go too
                for pid, signo in launchers.items():
                    os.kill(pid, signo)
                return
            try:
                parsed = json.loads(request)
                pid = _fork_launcher(parsed, fds, (control.fileno(), wake_read, wake_write))
            except Exception as failure:  # one line back; the server goes on
                control.send(("error %s" % failure).encode(errors="replace"))
            else:
                launchers[pid] = parsed["orphaned"]
                control.send(b"started %d" % pid)
            finally:
                for received in fds:
                    os.close(received)


def _poll(poller: "select.poll") -> "list[tuple[int, int]]":
    try:
        return poller.poll()
    except InterruptedError:  # SIGCHLD's handler ran: the wake-up pipe says so next time round
        return []


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _reap(launchers: "dict[int, int]", control: socket.socket) -> None:
    while launchers:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if not pid:
            return
        launchers.pop(pid, None)
        control.send(b"exit %d %d" % (pid, status))


def _receive(control: socket.socket) -> "tuple[bytes, List[int]]":
    fds = array.array("i")
    message, ancillary, _, _ = control.recvmsg(_MESSAGE, socket.CMSG_LEN(_DESCRIPTORS * fds.itemsize))
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
    return message, list(fds)


def _fork_launcher(request: Dict[str, Any], fds: List[int], own: "tuple[int, ...]") -> int:
    """Fork, and in the fork run the launcher as `pyinit ARGV` would, with the streams, directory and environment asked for.

    The launcher's own -p (in ARGV) ties it to the server, as it would be tied
    to the caller: SIGKILL with namespaces, the orphaned signal without.
    """
    pid = os.fork()
    if pid:
        return pid
    code = 125
    try:
        from pyinit import cli, spawn

        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})  # everything blocked, as bin/pyinit starts
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for fd in own:
            os.close(fd)
        stdin, stdout, stderr, report = fds
        for target, source in ((0, stdin), (1, stdout), (2, stderr)):
            os.dup2(source, target)  # inheritable, as the command's
        for source in {stdin, stdout, stderr} - {0, 1, 2, report}:
            os.close(source)  # the command gets exactly what a launcher started directly would
        os.setsid()
        if request["cwd"] is not None:
            os.chdir(request["cwd"])
        environment = {os.fsencode(name): os.fsencode(value) for name, value in request["env"].items()}
        os.environ.clear()
        os.environ.update(request["env"])
        spawn.ENVIRONMENT = environment
        argv = [arg.replace("fd:REPORT", "fd:%d" % report) for arg in request["argv"]]
        code = cli.main(argv)
    except BaseException as failure:  # one line on the sandbox's stderr, never a traceback
        os.write(2, ("pyinit: the fork server could not run the launcher: %r\n" % failure).encode(errors="replace"))
    finally:
        os._exit(code)


# --- the caller's side -------------------------------------------------------------------------------


class ServedProcess:
    """A launcher forked by the server: what the sandbox uses of a subprocess.Popen (pid, the pipes, returncode)."""

    def __init__(self, server: "ForkServer", pid: int, pipes: "List[Optional[IO[bytes]]]") -> None:
        self.server, self.pid = server, pid
        self.stdin, self.stdout, self.stderr = pipes
        self.returncode: Optional[int] = None

    def kill(self) -> None:
        """SIGKILL it while it is still the server's child (not reaped yet, so the PID is still its own)."""
        from pyinit import proc

        info = proc.stat(self.pid)
        if info is not None and info.ppid == self.server.process.pid:
            os.kill(self.pid, signal.SIGKILL)


class ForkServer:
    """The caller's end of its process's fork server: start launchers, learn how they ended."""

    _lock = threading.Lock()
    _current: "Optional[ForkServer]" = None

    @classmethod
    def get(cls) -> "ForkServer":
        """This process's server, started on first use (a fork of the caller gets a server of its own)."""
        with cls._lock:
            server = cls._current
            if server is None or server.owner != os.getpid() or server.process.poll() is not None:
                server = cls._current = ForkServer()
            return server

    def __init__(self) -> None:
        from pyinit.sandbox_output import SignalsHeld

        self.owner = os.getpid()
        self._lock = threading.Lock()
        self._statuses: Dict[int, int] = {}
        with SignalsHeld():
            self._control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
            try:
                self.process = subprocess.Popen([sys.executable, "-I", "-S", os.path.abspath(__file__),
                                                 str(theirs.fileno())], stdin=subprocess.DEVNULL,
                                                pass_fds=(theirs.fileno(),), start_new_session=True)
            finally:
                theirs.close()
        atexit.register(self.close)

    def close(self) -> None:
        """End the server (its socket closes; it ends any launcher left) and reap it: at this process's exit."""
        self._control.close()
        try:
            self.process.wait(START_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def start(self, argv: List[str], fds: List[int], cwd: Optional[str], env: Mapping[str, str], orphaned: int) -> int:
        """Have the server fork a launcher running `pyinit ARGV` ("fd:REPORT" stands for the report's descriptor).

        `orphaned`: the signal the server sends it if this process ends first.
        """
        request = json.dumps({"argv": argv, "cwd": cwd, "env": dict(env), "orphaned": orphaned}).encode()
        with self._lock:
            self._control.sendmsg([request], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
            while True:
                word, _, rest = self._next(None).partition(b" ")
                if word == b"started":
                    return int(rest)
                if word == b"error":
                    raise OSError("the sandboxes' fork server: %s" % rest.decode(errors="replace"))

    def status(self, pid: int, timeout: float) -> Optional[int]:
        """The wait status of launcher `pid` once the server has reaped it; None if it does not say within `timeout`."""
        with self._lock:
            while pid not in self._statuses:
                try:
                    self._next(timeout)
                except TimeoutError:
                    return None
            return self._statuses.pop(pid)

    def _next(self, timeout: Optional[float]) -> bytes:
        """The next message that is not an exit (those are kept); the lock held."""
        while True:
            if timeout is not None and not select.select([self._control], [], [], timeout)[0]:
                raise TimeoutError("the sandboxes' fork server did not answer")
            message = self._control.recv(_MESSAGE)
            if not message:
                raise ConnectionError("the sandboxes' fork server has gone")
            word, _, rest = message.partition(b" ")
            if word != b"exit":
                return message
            pid, status = rest.split()
            self._statuses[int(pid)] = int(status)
            if timeout is not None:
                return message


if __name__ == "__main__":
    sys.path.append(__file__.rsplit("/", 2)[0])  # run as a file, under -I -S: the package is beside it
    serve(int(sys.argv[1]))
