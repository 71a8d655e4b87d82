"""Starting a sandbox: pyinit's launcher as a subprocess, the pipe of its exit report, its PID 1 and the command.

The launcher runs in an interpreter of its own, isolated from the caller's
environment (`-I -S`: no PYTHON* variable, no site, no working directory on
sys.path), so that the command's `env` is the command's alone: a PYTHONHOME
or a PYTHONPATH holding a `json.py` reaches the command, never pyinit. It
runs the package's __main__.py as a file, which finds the package itself.

pyinit writes its exit report to a pipe whose read end the sandbox holds
(`--exit-report fd:N`; the init keeps that descriptor from the command), so
nothing of a sandbox is ever on disk. The PIDs are found from the host's
/proc: PID 1 is the launcher's only child; the command is PID 2 inside (the
init's first child, started before anything else can fork), or, without
namespaces, pyinit's oldest child. Each is held by a pidfd: signals go to
the right process even after its PID is reused, and a pidfd polls readable
when the whole process has exited, not when its main thread calls
pthread_exit().

A bare sandbox (init=False: `pyinit --unshare --bare`) has no init: PID 1
is the command itself, found once it has exec'd, and the launcher writes
the exit report in the init's place. It starts directly: the fork server's
spare launchers are made for an init. The signals the test sends go
through the launcher, as a container runtime's do, so its report counts
them.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import time
from typing import IO, Any, Callable, List, Mapping, Optional, Union

from pyinit import linux, proc, signals
from pyinit.config import MAX_SECONDS
from pyinit.sandbox.members import inner_pid, kill_below, members, namespace_level, wait_until_gone
from pyinit.forkserver.client import ForkServer, ServedProcess, ServerStopped, SignalsHeld, caller_state
from pyinit.sandbox.result import SIGCHLD_IGNORED, SandboxError, SignalSpec, signal_number

# How a user's process starts pyinit: the one place that knows it. The file
# __main__.py blocks every signal first, and finds its own package.
LAUNCHER: List[str] = [sys.executable, "-I", "-S",
                       os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "__main__.py")]
START_TIMEOUT = 30.0  # seconds for the launcher to start the init and the command
SETTLE = 1.0  # the sandbox's default --settle: what dies of the command's own signal is not a leftover
# Without namespaces, pyinit's parent-death signal: rewritten to SIGKILL for
# the command's group, after which pyinit's drain ends everything it adopted.
# So a caller that dies (SIGKILL included) takes the command's tree along.
ORPHANED = "RTMAX"

Stream = Union[None, int, IO[Any]]


def init_options(grace: Optional[float], drain: Optional[float], settle: Optional[float], single_child: bool,
                 rewrite: Optional[Mapping[SignalSpec, SignalSpec]]) -> List[str]:
    """The init's options for the launcher's command line (ValueError for a bad one)."""
    options = []
    for name, seconds in (("--grace", grace), ("--drain", drain), ("--settle", settle)):
        if seconds is not None:
            if not 0 <= seconds <= MAX_SECONDS:  # as pyinit's command line: it would refuse more
                raise ValueError("%s must be a number of seconds, from 0 to %g" % (name[2:], MAX_SECONDS))
            options += [name, repr(float(seconds))]
    if single_child:
        options.append("--single-child")
    for source, target in (rewrite or {}).items():
        options += ["--rewrite", "%d:%d" % (signal_number(source), 0 if target in (0, "0") else signal_number(target))]
    return options


class Launcher:
    """One launcher process, and the descriptors the sandbox holds on it: report pipe, pidfds of it, PID 1, the command.

    subprocess starts the launcher, but never waits for it: an interrupt
    (Ctrl-C) inside Popen.wait() can leave its lock taken for good, and every
    later wait or poll then says "running" while the process is long gone.
    The launcher's pidfd says when it has ended, and ended() reaps it with
    waitpid(2) itself.
    """

    def __init__(self, isolated: bool, bare: bool = False) -> None:
        self.isolated = isolated
        self.bare = bare  # no init: PID 1 is the command (pyinit --unshare --bare)
        self.popen: "subprocess.Popen | ServedProcess | None" = None
        self.pidfd: Optional[int] = None
        self.report_fd: Optional[int] = None
        self.init_pid: Optional[int] = None
        self.init_pidfd: Optional[int] = None
        self.level: Optional[int] = None  # the sandbox's PID namespace in NSpid; None without namespaces
        self.command_pid: Optional[int] = None
        self.command_pidfd: Optional[int] = None
        self.command_gone = False  # it exited (and was reaped) before a pidfd could hold it
        self.status_lost: Optional[str] = None  # why, when the launcher has ended and its status is lost
        self._init_argv: List[str] = []

    def start(self, command: List[str], options: List[str], streams: "tuple[Stream, Stream, Stream]",
              cwd: Optional[str], env: Mapping[str, str]) -> "subprocess.Popen | ServedProcess":
        """Start the launcher (pyinit as a subreaper without namespaces): forked by this process's fork server
        (forkserver/client.py), or directly where that cannot be; return what holds its pipes, as a Popen does."""
        if not proc.is_own_namespace():
            raise SandboxError("this process's /proc belongs to another PID namespace (one entered without a /proc of "
                               "its own, as `unshare --fork --pid` without --mount-proc gives), where the sandbox "
                               "cannot find its processes: mount a /proc for this namespace")
        if self.isolated:
            # The launcher dies with its parent, PID 1 with it.
            ends = ["--unshare", *(["--bare"] if self.bare else []), "-p", "KILL"]
        else:
            ends = ["-p", ORPHANED, "--rewrite", "%s:KILL" % ORPHANED]
        argv = [*ends, *options, "--exit-report", "fd:REPORT", "--", *command]
        try:
            # This thread's, before SignalsHeld changes its mask. None: started directly, as a bare launcher always is
            # (the server's spares run an init).
            state: "Optional[tuple[object, int]]" = None if self.bare else caller_state()
        except OSError:  # no descriptor to read /proc with: what the server would give cannot be told
            state = None
        with SignalsHeld():  # a Ctrl-C waits until the pipes and the process are kept, for close() to end them
            self.report_fd, write_end = os.pipe2(os.O_CLOEXEC)
            try:
                self.popen = self._served_or_direct(argv, streams, write_end, cwd, env, state)
            except ServerStopped:  # the request is in its socket, with the report's write end: a pipe of its own
                (stale, self.report_fd), (write_end, stale_end) = (self.report_fd, None), (-1, write_end)
                os.close(stale)
                os.close(stale_end)
                self.report_fd, write_end = os.pipe2(os.O_CLOEXEC)
                self.popen = self._served_or_direct(argv, streams, write_end, cwd, env, None)
            finally:
                if write_end >= 0:
                    os.close(write_end)
            # Not reaped yet (by us or by the fork server): its PID is still its own.
            self.pidfd = _pidfd(self.popen.pid)
        return self.popen

    def _served_or_direct(self, argv: List[str], streams: "tuple[Stream, Stream, Stream]", report: int,
                          cwd: Optional[str], env: Mapping[str, str],
                          state: "Optional[tuple[object, int]]") -> "subprocess.Popen | ServedProcess":
        """The launcher, forked by the server where it can (`state`: see _served), else started here directly."""
        child, kept, made = _stream_ends(streams)
        try:
            served = self._served(argv, child, kept, report, cwd, env, state)
            if served is not None:
                return served
            # The streams made here, not by Popen: under EMFILE, its own (/dev/null, a pipe pair) leaked.
            popen = subprocess.Popen([*LAUNCHER, *[arg.replace("fd:REPORT", "fd:%d" % report) for arg in argv]],
                                     stdin=child[0], stdout=child[1], stderr=child[2], cwd=cwd, env=env,
                                     pass_fds=(report,), start_new_session=True)
            popen.stdin, popen.stdout, popen.stderr = kept
            return popen
        except BaseException:
            _close_ends(kept, [])
            raise
        finally:
            _close_ends([], made)

    def _served(self, argv: List[str], child: List[int], kept: "List[Optional[IO[bytes]]]", report: int,
                cwd: Optional[str], env: Mapping[str, str],
                state: "Optional[tuple[object, int]]") -> "Optional[ServedProcess]":
        """The launcher forked by the fork server, with the streams `child`; None where it cannot make the one this
        thread would start now (`state`: caller_state()'s). ServerStopped: it holds the request and its descriptors."""
        if cwd is not None and not os.path.isdir(cwd):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), cwd)  # as subprocess would
        if state is None:
            return None
        server = ForkServer.serving(state[0])
        if server is None:
            return None
        try:
            where = os.getcwd() if cwd is None else os.path.join(os.getcwd(), cwd)  # as Popen's chdir would resolve it
        except OSError:  # this process's directory was removed: a child started directly still runs there
            return None
        try:
            pid = server.start(argv, [*child, report], where, env, state[1],
                               signal.SIGKILL if self.isolated else signals.parse(ORPHANED))
        except ServerStopped:
            raise
        except (OSError, ValueError):  # a server gone or out of processes, an environment too large for one message
            return None
        return ServedProcess(server, pid, kept)

    @property
    def returncode(self) -> Optional[int]:
        """The launcher's status as subprocess gives it (-N for signal N) once ended() has reaped it; None before, or lost."""
        return None if self.popen is None else self.popen.returncode

    def ended(self, timeout: Optional[float] = 0) -> bool:
        """Whether the launcher has ended, waiting up to `timeout` seconds (None: for ever); reaps it when it has.

        Its status is lost where the kernel reaped it first (the caller
        ignores SIGCHLD): returncode stays None, and pyinit's report tells.
        A launcher of the fork server's is reaped there, which sends its status.
        """
        popen = self.popen
        if popen is None or popen.returncode is not None or self.status_lost:
            return True
        if self.pidfd is not None and not linux.ready([self.pidfd], [], timeout)[0]:
            return False
        if isinstance(popen, ServedProcess):
            status = popen.server.status(popen.pid, START_TIMEOUT if timeout is None or self.pidfd else timeout)
            if status is None:  # the server said nothing in time: ended, if its pidfd says so, its status lost
                if self.pidfd is not None:
                    self.status_lost = ("the sandboxes' fork server, its parent, was killed" if popen.server.gone()
                                        else "the sandboxes' fork server, its parent, is stopped"
                                        if popen.server.stopped() else "the sandboxes' fork server did not send it")
                    popen.server.forget(popen.pid)
                return self.status_lost is not None
            popen.returncode = os.waitstatus_to_exitcode(status)
            popen.server.forget(popen.pid)
            return True
        # Without a pidfd (a start that failed for want of one) only a launcher
        # already killed is waited for with a timeout: waitpid(2) has none.
        with SignalsHeld():  # reaped and kept together: a Ctrl-C between would lose the status for good
            try:
                pid, status = os.waitpid(popen.pid, os.WNOHANG if self.pidfd is not None or timeout == 0 else 0)
            except ChildProcessError:
                self.status_lost = SIGCHLD_IGNORED
                return True
            if pid:
                popen.returncode = os.waitstatus_to_exitcode(status)  # so that subprocess never waits for it again
        return pid != 0

    def find(self) -> None:
        """Find PID 1 and the command, each with a pidfd; either stays None when the launcher has ended first."""
        popen = self.popen
        assert popen is not None
        if self.isolated:
            init = self._wait_for(popen.pid, lambda pid: True)
        else:
            init = popen.pid
        if init is None:
            return
        with SignalsHeld():
            self.init_pidfd = _pidfd(init)
        if self.init_pidfd is None:
            return
        if self.isolated:
            info = proc.stat(init)
            if info is None or info.ppid != popen.pid:  # gone, and its PID reused, before the pidfd
                return
            self.level = namespace_level(init)
        self.init_pid = init
        # Bare, PID 1 is the command once it has exec'd, and it may have already: the launcher's argv is its own before.
        self._init_argv = proc.cmdline(popen.pid if self.bare else init)
        command = self._wait_for(popen.pid if self.bare else init, self._is_command)
        if command is not None:
            with SignalsHeld():
                self.command_pidfd = _pidfd(command)
            if self.command_pidfd is not None and self._is_command(command):  # still the one: not reaped first
                self.command_pid = command
            else:
                self.command_gone = True
                if self.command_pidfd is not None:  # another process's now: never to be signalled
                    fd, self.command_pidfd = self.command_pidfd, None
                    os.close(fd)

    def _is_command(self, pid: int) -> bool:
        """Whether `pid` is the command, past its exec: a child not yet exec'd still has the init's argv
        (its session and group not yet its own either), and is not the command yet."""
        if self.level is not None:
            if inner_pid(pid, self.level) != (1 if self.bare else 2):
                return False
        else:
            info = proc.stat(pid)
            if info is None or info.ppid != self.init_pid:
                return False
        return proc.cmdline(pid) != self._init_argv

    def _wait_for(self, parent: int, wanted: Any) -> Optional[int]:
        """The child of `parent` that `wanted` accepts (the oldest), once there; None if the launcher ends first."""
        popen = self.popen
        assert popen is not None
        deadline = time.monotonic() + START_TIMEOUT
        delay = 0.0001  # short steps: a sandbox's start is a few milliseconds, and each step is one /proc read
        while True:
            found = [pid for pid in proc.children(parent) if wanted(pid)]
            if found:
                return min(found, key=lambda pid: (getattr(proc.stat(pid), "start_time", 0), pid))
            if self.ended():
                return None
            if time.monotonic() > deadline:
                raise SandboxError("the launcher did not start the command within %.0f s" % START_TIMEOUT)
            time.sleep(delay)
            delay = min(delay * 1.5, 0.002)

    def send(self, signo: int, to_command: bool = False) -> None:
        """Send `signo` to PID 1 (or to the command); nothing once it has ended.

        Bare, through the launcher, which relays it and counts it in its
        report as the init would; not SIGKILL and SIGSTOP, which would act
        on the launcher: those the kernel delivers to PID 1 from outside.
        """
        pidfd = self.command_pidfd if to_command else self.init_pidfd
        if self.bare and not to_command and pidfd is not None and signo not in (signal.SIGKILL, signal.SIGSTOP):
            pidfd = self.pidfd
        if pidfd is None:
            if not to_command and self.init_pid is None and signo == signal.SIGKILL:
                self._kill()  # PID 1 not seen yet (an interrupted start): its parent-death signal takes it along
            return
        try:
            signal.pidfd_send_signal(pidfd, signo)
        except ProcessLookupError:
            pass

    def init_running(self) -> bool:
        return self.init_pidfd is not None and not linux.pidfd_has_exited(self.init_pidfd)

    def kill_everything(self, remember: Callable[[], object]) -> None:
        """SIGKILL PID 1, which makes the kernel kill every other member; without namespaces, each descendant first."""
        if self.isolated:
            self.send(signal.SIGKILL)
            return
        assert self.popen is not None
        try:
            kill_below(self.popen.pid, remember, START_TIMEOUT)
        except OSError:  # no descriptor left to read /proc with: pyinit ends what it adopted itself, as if orphaned
            if self.pidfd is not None:
                signal.pidfd_send_signal(self.pidfd, signals.parse(ORPHANED))
            return
        self._kill()

    def tear_down(self, processes: Callable[[], object], seen: "dict[int, int]") -> None:
        """SIGKILL everything; return once the launcher and each member in `seen` (host PID -> start time, which
        `processes()` fills) are gone. SandboxError where one outlives it (the kernel guarantees it: this checks)."""
        if not self.ended():
            with contextlib.suppress(OSError):  # no descriptor left to read /proc with: the kill comes first
                processes()
                if self.init_pid is None and self.popen is not None:  # a start interrupted before PID 1 was found:
                    members(self.popen.pid, None, seen)  # a spare's runs already, and dies of the launcher's death
            self.kill_everything(processes)
            if not self.ended(START_TIMEOUT):
                raise SandboxError("the launcher outlived its SIGKILL for %.0f s" % START_TIMEOUT)
        alive = wait_until_gone(seen, START_TIMEOUT)
        if alive:
            raise SandboxError("processes of the sandbox outlived its teardown: %s" % alive)

    def _kill(self) -> None:
        """SIGKILL the launcher: through its pidfd, or by PID while it is an unreaped child of ours."""
        if self.pidfd is not None:
            try:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
        elif self.popen is not None and self.popen.returncode is None:
            self.popen.kill()

    def command_exited(self, timeout: Optional[float] = 0) -> bool:
        """Whether the command has exited (waiting up to `timeout` seconds; None: for ever)."""
        if self.command_gone:
            return True
        if self.command_pidfd is not None:
            return bool(linux.ready([self.command_pidfd], [], timeout)[0])
        return self.ended(timeout)  # never found: it ended before it could be, or pyinit never started it

    def close(self) -> None:
        """Close every descriptor held on the launcher (idempotent)."""
        for name in ("pidfd", "report_fd", "init_pidfd", "command_pidfd"):
            fd = getattr(self, name)
            if fd is not None:
                setattr(self, name, None)  # first: interrupted after it, a second close() cannot close a reused number
                os.close(fd)
        if self.popen is not None:
            for pipe in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
                if pipe is not None:
                    pipe.close()


def _stream_ends(streams: "tuple[Stream, Stream, Stream]") -> "tuple[List[int], List[Optional[IO[bytes]]], List[int]]":
    """What a launcher gets for stdin, stdout and stderr, as subprocess.Popen would give them.

    Returns the three descriptors for the launcher, the pipe ends kept here
    (file objects, as Popen's stdin, stdout and stderr), and the descriptors
    made here to close once the launcher has them. None means this
    process's own stream.
    """
    child: List[int] = []
    kept: List[Optional[IO[bytes]]] = []
    made: List[int] = []
    try:
        for index, spec in enumerate(streams):
            pipe: Optional[IO[bytes]] = None
            if spec is None:
                fd = index
            elif spec == subprocess.PIPE:
                read, write = os.pipe2(os.O_CLOEXEC)
                fd, mine = (read, write) if index == 0 else (write, read)
                made.append(fd)
                made.append(mine)  # until a file object holds it
                pipe = open(mine, "wb" if index == 0 else "rb")
                made.remove(mine)
            elif spec == subprocess.DEVNULL:
                fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                made.append(fd)
            elif spec == subprocess.STDOUT and index == 2:
                fd = child[1]
            elif isinstance(spec, int):
                fd = spec
            else:
                fd = spec.fileno()  # type: ignore[union-attr]
            child.append(fd)
            kept.append(pipe)
    except BaseException:  # no descriptor left, say: nothing made here outlives the failure
        for fd in made:
            os.close(fd)
        for pipe in kept:
            if pipe is not None:
                pipe.close()
        raise
    return child, kept, made


def _close_ends(kept: "List[Optional[IO[bytes]]]", made: List[int]) -> None:
    """Close what _stream_ends made: the pipe ends kept here, and the descriptors made for the launcher."""
    for pipe in kept:
        if pipe is not None:
            pipe.close()
    for fd in made:
        os.close(fd)


def _pidfd(pid: int) -> Optional[int]:
    """A pidfd on `pid`; None when it has been reaped already. (Call with signals held: see SignalsHeld.)"""
    try:
        return os.pidfd_open(pid)
    except ProcessLookupError:
        return None
    except OSError as failure:
        raise SandboxError("cannot watch the sandbox's processes: %s" % failure.strerror) from None


# The working directory of an entered command: pyinit --enter takes the sandbox's own (as nsenter -w);
# a test that names one gets this shell line around its command.
_IN_DIRECTORY = 'cd -- "$1" && shift && exec "$@"'


def run_inside(init_pid: int, argv: List[str], *, timeout: Optional[float], input: Optional[str],
               env: Mapping[str, str], cwd: Optional[str]) -> "tuple[int, str, str]":
    """Run `argv` in the namespaces of the sandbox whose PID 1 is `init_pid` (`pyinit --enter`), to its end.

    Returns (returncode as subprocess gives it, stdout, stderr); raises
    subprocess.TimeoutExpired when `timeout` passes first. Whatever ends the
    wait early (the timeout, a Ctrl-C), what was started is SIGKILLed, the
    entered command first: it is the `--enter` process's child, and would
    otherwise run on inside.
    """
    command = argv if cwd is None else ["/bin/sh", "-c", _IN_DIRECTORY, "sh", cwd, *argv]
    with SignalsHeld():
        process = subprocess.Popen([*LAUNCHER, "--enter", str(init_pid), "--", *command],
                                   stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
                                   start_new_session=True)
    try:
        stdout, stderr = process.communicate(input, timeout)
    finally:
        if process.returncode is None:  # out of time, or interrupted: end what was started
            kill_below(process.pid, lambda: None, START_TIMEOUT)
            process.kill()
            process.communicate()
    return process.returncode, stdout, stderr
