"""The fork server: one small pyinit process per test process, which forks each sandbox's launcher.

A launcher started as `python -I -S __main__.py` (launch.LAUNCHER)
pays an interpreter's start per sandbox; the server (started by
forkserver/client.py when the test side is imported) pays it once, and forks
each launcher, with the streams and report pipe sent over a Unix socket
(SCM_RIGHTS), and the working directory, umask and environment asked for.

The spare. Making a sandbox's namespaces (the launcher's fork, unshare(2),
PID 1's fork, its private mounts and /proc) does not depend on the command,
so the server does it ahead: one spare launcher and its PID 1 wait for the
rest of their Config (namespace.launch's `complete`). A request for the same
namespaces (namespace.made_before_the_command) is handed to it, and PID 1
has only the command to start; the next spare is made once the server is
idle. Any other request gets a fork of its own, and the next spare its shape.
A spare made stale by a mount or unmount since is not used (Server.mounts).
The first spare is the namespace probe of `isolate="auto"` too: what its
launcher or PID 1 wrote on their stderr (a pipe the server reads) says why.

Every guarantee of a launcher started directly holds:
- nothing outlives the caller: the server's end of the socket pair reads
  end-of-file when the caller's process ends, however it ends (SIGKILL
  included: the kernel closes its descriptors); the server then signals its
  launchers (each with the signal asked for, the spare with SIGKILL) and
  exits. A launcher dies with the server (PR_SET_PDEATHSIG), and its PID 1
  with it, which takes the whole namespace along.
- the caller is left undisturbed: the server is its child (started once, and
  ended with it), no thread of the caller's, one socket; the launchers are
  the server's children, reaped there, their statuses sent back.
- the server has one thread, so each fork can unshare a user namespace: the
  unprivileged case works as before.
- the launcher is the one the calling thread would have started then: it sends its
  directory and umask, and starts directly where the rest differs (client.py).

Its messages are forkserver/wire.py's. Its process is `python -I -S -c "...;
main()" FD` (see forkserver/client.py). Its imports are few (`_socket` and
`_signal`, not their enum-laden wrappers; json, for the reports, once the
server runs): its start-up is what the first sandbox of a process may wait
for.
"""

import _signal
import _socket
import os
import select
import sys

from pyinit import linux
from pyinit.forkserver.wire import decode_request, receive, send

SPARE_WAIT = 30.0  # seconds a request or the probe waits for a spare being made
PROBE_ATTEMPTS = 3  # spares made for the probe, where each dies without a word
# The next spare is made once the server has been idle this long (or by the request that needs it): not at
# once, when it would take a core from the sandbox that has just started.
SPARE_DELAY = 0.001
# What a sandbox asks of the launcher by default (the command aside): the spare made first, and the probe.
PROBE = ["--unshare", "-p", "KILL", "--exit-report", "fd:0", "--", "true"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Mapping, Optional

    from pyinit.config import Config


class Spare:
    """A launcher forked ahead of its sandbox; its PID 1 says `ready` on `channel` once its /proc is mounted.

    Each of the two has a channel of its own: PID 1 is sent the request
    first, the launcher (which only relays and waits) after.
    """

    def __init__(self, pid: int, shape: "tuple[object, ...]", channel: "_socket.socket",
                 launcher_channel: "_socket.socket", stderr: int) -> None:
        self.pid, self.shape, self.stderr = pid, shape, stderr
        self.channel, self.launcher_channel = channel, launcher_channel
        self.ready = False
        self.failure: "Optional[str]" = None  # once it has failed: what it wrote on its stderr ("" for nothing)

    def watched(self) -> "List[int]":
        """What tells that it is ready, or has failed."""
        return [self.channel.fileno(), self.stderr]

    def fds(self) -> "List[int]":
        """Every descriptor the server holds on it: no other fork may keep them."""
        return [*self.watched(), self.launcher_channel.fileno()]

    def check(self, timeout: "Optional[float]") -> None:
        """Take in what the spare has sent (waiting up to `timeout` s for it to be ready or to fail)."""
        poller = select.poll()
        for fd in self.watched():
            poller.register(fd, select.POLLIN)
        while not self.ready and self.failure is None:
            events = poller.poll(None if timeout is None else timeout * 1e3)
            if not events:
                return
            for fd, _ in events:
                if fd == self.stderr:  # written to, or closed: either way it is dying
                    self.failure = os.read(self.stderr, 4096).decode(errors="replace").strip()  # "": not a word
                elif self.channel.recv(16) == b"ready":
                    self.ready = True

    def usable(self) -> bool:
        """Ready, and nothing written on its stderr since (a PID 1 that died after `ready` closes it)."""
        self.check(SPARE_WAIT)
        if self.ready and linux.ready([self.stderr], [], 0)[0]:
            self.failure = "it ended after it was ready"
        return self.ready and self.failure is None

    def hand_over(self, request: bytes, fds: "List[int]") -> None:
        """Send the request to PID 1, then to the launcher."""
        send(self.channel, request, fds)
        send(self.launcher_channel, request, fds)
        self.close()

    def discard(self) -> None:
        """SIGKILL it (its PID 1 follows by its parent-death signal); the server's loop reaps it."""
        try:
            os.kill(self.pid, _signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.close()

    def close(self) -> None:
        self.channel.close()
        self.launcher_channel.close()
        if self.stderr >= 0:
            os.close(self.stderr)
            self.stderr = -1


def serve(control_fd: int) -> None:
    """Answer each request (a launcher, or the probe); send back each launcher's exit; end everything at end-of-file."""
    # Imported once here, not in every fork: what a launcher and its init load (the report's json too), _ctypes.
    import json  # noqa: F401
    from pyinit import cli, init, report, shutdown, spawn  # noqa: F401
    from pyinit.launcher import namespace  # noqa: F401
    linux.load()
    os.closerange(3, control_fd)  # what the caller had not marked close-on-exec is not the server's
    os.closerange(control_fd + 1, 1 << 20)

    # Only SIGCHLD is taken (through a wake-up pipe); the rest is blocked: the
    # server's life is its socket's, and a fork starts with everything blocked.
    _signal.pthread_sigmask(_signal.SIG_SETMASK, _signal.valid_signals() - {_signal.SIGCHLD})
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    _signal.set_wakeup_fd(wake_write)
    _signal.signal(_signal.SIGCHLD, lambda signo, frame: None)
    Server(_socket.socket(fileno=control_fd), wake_read, wake_write).run()


class Server:
    """The server's state, and its loop: one request at a time, the launchers' exits, the spare."""

    def __init__(self, control: "_socket.socket", wake_read: int, wake_write: int) -> None:
        self.control, self.wake = control, wake_read
        self.own = [control.fileno(), wake_read, wake_write]  # what no fork keeps
        self.launchers: "Dict[int, int]" = {}  # PID -> the signal that ends it when the caller has gone
        # A spare's mount namespace is a copy of the mounts as they were when it was made: a mount or
        # unmount since (a test's tmpfs, say) makes it stale. /proc/self/mountinfo polls POLLPRI once
        # for each change of this namespace's mounts (proc(5)); where it cannot be opened, no spare is
        # trusted for long: each request gets one made for it.
        try:
            self.mounts = os.open("/proc/self/mountinfo", os.O_RDONLY | os.O_CLOEXEC)
            self.own.append(self.mounts)
        except OSError:
            self.mounts = -1
        self.spare: "Optional[Spare]" = None
        self.next_spare: "Optional[Config]" = None  # made once the server has been idle for SPARE_DELAY
        self.caller_gone = False
        self._new_spare(_probe_config())

    def run(self) -> None:
        """Until the caller has gone: then its launchers and the spare go too."""
        while not self.caller_gone:
            spare = self.spare
            making = spare is not None and not spare.ready  # watched until it is ready, or has failed
            watched = [self.control.fileno(), self.wake, *(spare.watched() if spare and making else [])]
            readable = linux.ready(watched, [], None if self.next_spare is None else SPARE_DELAY)[0]  # poll: fds > 1023
            if not readable and self.next_spare is not None:
                self._new_spare(self.next_spare)
                self.next_spare = None
            if self.wake in readable:
                _drain(self.wake)
                self._reap()
            if spare is not None and making and set(spare.watched()) & set(readable):
                spare.check(0)
                if spare.failure is not None:  # made again by the next request that could use it
                    self._replace_spare(None)
            if self.control.fileno() in readable:
                self._answer()
        for pid, signo in self.launchers.items():
            os.kill(pid, signo)
        self._replace_spare(None)

    def _say(self, message: bytes) -> None:
        """Send the caller a message; a caller gone (its socket closed, answers unread) ends the loop."""
        try:
            self.control.send(message)
        except OSError:
            self.caller_gone = True

    def _reap(self) -> None:
        """Reap every child that has ended; tell the caller of each of its launchers (a spare's end is nobody's news)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if not pid:
                return
            if self.launchers.pop(pid, None) is not None:
                self._say(b"exit %d %d" % (pid, status))

    def _answer(self) -> None:
        """Take one message and answer it; end-of-file means the caller has gone."""
        try:
            request, fds = receive(self.control)
        except ValueError as failure:
            self._say(("error - %s" % failure).encode())
            return
        except ConnectionResetError:  # the caller went with answers unread: gone all the same
            request, fds = b"", []
        if not request:
            self.caller_gone = True
            return
        if request == b"probe":
            self._probe()
            return
        if request.startswith(b"end "):  # a launcher whose start the caller gave up: ended as at the caller's end
            self._end(int(request[4:]))
            return
        parsed: "Dict[str, Any]" = {"sequence": "-"}
        try:
            parsed = decode_request(request)
            self._start(request, parsed, fds)
        except Exception as failure:  # one line back; the server goes on
            self._say(("error %s %s" % (parsed["sequence"], failure)).encode(errors="replace"))
        finally:
            for received in fds:  # closed before the next fork: no spare may hold a sandbox's pipe
                os.close(received)

    def _start(self, request: bytes, parsed: "Dict[str, Any]", fds: "List[int]") -> None:
        """A launcher for the request (the spare, where it makes the namespaces asked for; else a fork of its own),
        and `started SEQUENCE PID` back."""
        from pyinit.launcher import namespace

        prepared = _spare_could_serve(parsed["argv"], parsed["env"], fds)
        if prepared is not None:
            if (self.spare is None or self.spare.shape != namespace.made_before_the_command(prepared)
                    or self._mounts_changed()):
                self._new_spare(prepared)
            spare = self.spare
            if spare is not None and spare.usable():
                self.spare, self.next_spare = None, prepared  # the next request is likely alike
                self._started(spare.pid, parsed)
                # Answered first: the caller sets up its side while the launcher and PID 1 take the request in.
                # A launcher that cannot be handed it is SIGKILLed, and the caller sees it end.
                try:
                    spare.hand_over(request, fds)
                except OSError:
                    spare.discard()
                return
            self._replace_spare(None)
        self._started(_fork_launcher(parsed, fds, self.own + (self.spare.fds() if self.spare else [])), parsed)

    def _started(self, pid: int, parsed: "Dict[str, Any]") -> None:
        self.launchers[pid] = parsed["orphaned"]
        self._say(b"started %d %d" % (parsed["sequence"], pid))

    def _end(self, pid: int) -> None:
        """Send launcher `pid` the signal it gets when the caller goes; it is still ours (not reaped): its PID too."""
        if pid in self.launchers:
            os.kill(pid, self.launchers[pid])

    def _probe(self) -> None:
        """Answer `probe`: whether the spare of a default sandbox could be made (made now if need be).

        Only a spare that said why it failed (pyinit's one line: unshare(2)
        refused, a /proc that cannot be mounted) is a refusal. One that died
        without a word (SIGKILLed, say) tells nothing: another is made, a
        few times, before the answer is that the server cannot tell.
        """
        from pyinit.launcher import namespace

        config = _probe_config()
        shape = namespace.made_before_the_command(config)
        for _ in range(PROBE_ATTEMPTS):
            if self.spare is None or self.spare.shape != shape:
                unmade = self._new_spare(config)
                if unmade is not None:  # the server's want, not the kernel's refusal: the caller probes another way
                    self._say(("namespaces error %s" % unmade).encode(errors="replace"))
                    return
            spare = self.spare
            assert spare is not None
            spare.check(SPARE_WAIT)
            if spare.ready and spare.failure is None:
                self._say(b"namespaces ok")
                return
            self._replace_spare(None)
            if spare.failure:  # what it said
                self._say(("namespaces refused %s" % spare.failure).encode(errors="replace"))
                return
        self._say(b"namespaces error its spare launchers died without a word, or never got ready")

    def _new_spare(self, config: "Config") -> "Optional[str]":
        """Make a spare for `config` (any other discarded), after the mount changes seen so far; or say why not.

        Out of processes or descriptors, there is no spare, and the request
        that wanted one gets a fork of its own, which fails with the reason
        on the sandbox's stderr, or a spare next time.
        """
        self._mounts_changed()
        self._replace_spare(None)
        try:
            self.spare = _make_spare(config, self.own)
        except OSError as failure:
            return "cannot make a launcher ahead: %s" % (failure.strerror or failure)
        return None

    def _mounts_changed(self) -> bool:
        """Whether this namespace's mounts have changed since the last call (True where that cannot be told)."""
        if self.mounts < 0:
            return True
        poller = select.poll()
        poller.register(self.mounts, select.POLLPRI)
        return bool(poller.poll(0))

    def _replace_spare(self, spare: "Optional[Spare]") -> None:
        if self.spare is not None:
            self.spare.discard()
        self.spare = spare


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except BlockingIOError:
        pass


def _prepared(argv: "List[str]", env: "Dict[str, str]") -> "Optional[Config]":
    """The Config of `argv` where a spare could serve it (namespaces, no pty, no name); None otherwise."""
    from pyinit import cli

    try:
        config = cli.parse([arg.replace("fd:REPORT", "fd:0") for arg in argv], env)
    except cli.UsageError:
        return None  # a fork of its own says why, on the sandbox's stderr
    if isinstance(config, str) or not config.unshare or config.pty or config.name is not None:
        return None
    return config


def _spare_could_serve(argv: "List[str]", env: "Dict[str, str]", fds: "List[int]") -> "Optional[Config]":
    """The Config of a request a spare could serve; None for one that needs a fork of its own.

    A pty is opened when the sandbox's stdin and stdout are terminals
    (config.pty None): a spare has neither, so such a request is not its.
    """
    config = _prepared(argv, env)
    if config is None or (config.pty is None and os.isatty(fds[0]) and os.isatty(fds[1])):
        return None
    return config


def _probe_config() -> "Config":
    config = _prepared(PROBE, {})
    assert config is not None
    return config


def _make_spare(config: "Config", own: "List[int]") -> Spare:
    """Fork a launcher that makes the namespaces `config` asks for, its PID 1 too, and waits for its command."""
    from pyinit.launcher import namespace

    made: "List[Any]" = []  # closed again if the fork cannot be made
    try:
        channel, init_end = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
        made += [channel, init_end]
        launcher_channel, launcher_end = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET | _socket.SOCK_CLOEXEC)
        made += [launcher_channel, launcher_end]
        stderr, their_stderr = os.pipe2(os.O_CLOEXEC)
        made += [stderr, their_stderr]
        pid = os.fork()
    except OSError:
        for thing in made:
            if isinstance(thing, int):
                os.close(thing)
            else:
                thing.close()
        raise
    if pid:
        init_end.close()
        launcher_end.close()
        os.close(their_stderr)
        return Spare(pid, namespace.made_before_the_command(config), channel, launcher_channel, stderr)
    code = 125
    try:
        for fd in [*own, channel.fileno(), launcher_channel.fileno(), stderr]:
            os.close(fd)
        _as_launcher()
        nothing = os.open(os.devnull, os.O_RDWR)
        for target, source in ((0, nothing), (1, nothing), (2, their_stderr)):
            os.dup2(source, target)
        os.close(nothing)
        os.close(their_stderr)
        from pyinit import cli

        code = cli.start(config, lambda prepared, in_init: _complete(init_end if in_init else launcher_end,
                                                                    launcher_end if in_init else init_end,
                                                                    prepared, in_init))
    except BaseException as failure:  # one line to the server, never a traceback
        os.write(2, ("pyinit: the fork server could not make a spare launcher: %r\n" % failure).encode(errors="replace"))
    finally:
        os._exit(code)


def _complete(channel: "_socket.socket", the_others: "_socket.socket", prepared: "Config", in_init: bool) -> "Config":
    """In the spare's launcher and in its PID 1: wait for the request on `channel`, take it in, return its Config."""
    from pyinit import cli, log
    from pyinit.launcher import namespace

    the_others.close()
    if in_init:
        channel.send(b"ready")
    else:  # PID 1 is made: from now on the server's pipe is PID 1's alone, and its end says that PID 1 died
        nothing = os.open(os.devnull, os.O_WRONLY)
        os.dup2(nothing, 2)
        os.close(nothing)
    request, fds = receive(channel)
    channel.close()
    if not request:
        raise namespace.NamespaceError("the fork server has gone")
    parsed = decode_request(request)
    argv = _take(parsed, fds, keep_report=in_init)
    try:
        config = cli.parse(argv, parsed["env"])
    except cli.UsageError as problem:
        raise namespace.NamespaceError(str(problem)) from None
    if isinstance(config, str) or namespace.made_before_the_command(config) != namespace.made_before_the_command(prepared):
        raise namespace.NamespaceError("the fork server gave a spare launcher a sandbox that needs other namespaces")
    log.set_level(config.verbosity)
    return config


def _as_launcher() -> None:
    """In a fork of the server: signals as bin/pyinit starts (everything blocked, no handler), a session of its own."""
    _signal.pthread_sigmask(_signal.SIG_BLOCK, {_signal.SIGCHLD})
    _signal.set_wakeup_fd(-1)
    _signal.signal(_signal.SIGCHLD, _signal.SIG_DFL)
    os.setsid()


def _take(request: "Dict[str, Any]", fds: "List[int]", keep_report: bool) -> "List[str]":
    """Take the request's streams, directory, umask and the command's environment (spawn.ENVIRONMENT); return its
    argv with the report's descriptor in it."""
    from pyinit import spawn

    stdin, stdout, stderr, report = fds
    for target, source in ((0, stdin), (1, stdout), (2, stderr)):
        os.dup2(source, target)  # inheritable, as the command's
    kept = {0, 1, 2, report} if keep_report else {0, 1, 2}
    for source in {stdin, stdout, stderr, report} - kept:
        os.close(source)  # the command gets exactly what a launcher started directly would
    os.chdir(request["cwd"])
    os.umask(request["umask"])
    spawn.ENVIRONMENT = {os.fsencode(name): os.fsencode(value) for name, value in request["env"].items()}
    return [arg.replace("fd:REPORT", "fd:%d" % report) for arg in request["argv"]]


def _fork_launcher(request: "Dict[str, Any]", fds: "List[int]", own: "List[int]") -> int:
    """Fork, and in the fork run the launcher as `pyinit ARGV` would, with the streams, directory and environment asked for.

    The launcher's own -p (in ARGV) ties it to the server, as it would be tied
    to the caller: SIGKILL with namespaces, the orphaned signal without.
    """
    pid = os.fork()
    if pid:
        return pid
    code = 125
    try:
        from pyinit import cli

        for fd in own:
            os.close(fd)
        _as_launcher()
        argv = _take(request, fds, keep_report=True)
        os.environ.clear()  # what cli.main reads the PYINIT_* variables from
        os.environ.update(request["env"])
        code = cli.main(argv)
    except BaseException as failure:  # one line on the sandbox's stderr, never a traceback
        os.write(2, ("pyinit: the fork server could not run the launcher: %r\n" % failure).encode(errors="replace"))
    finally:
        os._exit(code)


def main() -> None:
    """`python -I -S -c "...; main()" FD`, as forkserver/client.py starts it: serve on socket FD."""
    serve(int(sys.argv[1]))
