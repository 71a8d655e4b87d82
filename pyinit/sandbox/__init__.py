"""The test-side API: a command under pyinit, in namespaces of its own, watched from outside.

    with pyinit.Sandbox(["my-server", "--port", "8080"]) as box:
        box.wait_for_port(8080)
        result = box.stop("TERM", timeout=5)
    assert result.exit_code == 0 and result.leftovers == []

A Sandbox is an ordinary process of the caller's: it starts pyinit's launcher
(sandbox/launch.py) as a subprocess, so the command runs under pyinit as PID
1 of fresh PID and mount namespaces, exactly as it would in a container, and
tears them down by SIGKILLing that PID 1: the kernel then kills every member,
a double-forked daemon included.

pyinit is the source of the verdict (sandbox/result.py): it reaps the
command, so it knows the exact exit status and moment; after the command's
exit it waits up to `settle` seconds (1 by default) for the rest to exit on
their own, and lists what still runs in its exit report, which it writes to
a pipe the sandbox reads. Nothing traces the command: a debugger, strace or
a sanitizer inside behaves as in production, and a host that forbids ptrace
gets the same verdict. The sandbox watches from the host's /proc only for
processes(), tree() and readiness (sandbox/members.py), and takes the
output as it comes (sandbox/output.py).

The caller is left undisturbed: no waitpid(-1) (only its own child, the
launcher), no change to its signal dispositions, mask or subreaper flag, no
thread left after close(), nothing on disk. The launcher gets `-p KILL`: if
the thread that started the sandbox dies, so do the launcher and the
namespace. Where the kernel refuses namespaces, isolate="auto" runs pyinit
without them, as a subreaper, with an IsolationWarning; teardown then kills
pyinit's descendants one by one, and a caller that dies takes them along
(ORPHANED in sandbox/launch.py).

init=False runs the command without pyinit, as PID 1 itself, as a container
without an init does (`docker run` without `--init`): the question is then
whether it needs one (docs/testing.md, pyinit-check --bare).
"""

from __future__ import annotations

# First: importing it starts the fork server, whose start-up then overlaps the rest of this import.
from pyinit.forkserver import client  # noqa: F401  # isort: skip

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
import warnings
import weakref
from typing import IO, TYPE_CHECKING, Any, Callable, List, Mapping, Optional, Sequence, Union

from pyinit.sandbox import members as members
from pyinit.sandbox.isolation import decide_isolation, namespaces_refused
from pyinit.sandbox.launch import LAUNCHER, SETTLE, START_TIMEOUT, Launcher, Stream, init_options, run_inside
from pyinit.sandbox.members import format_tree
from pyinit.sandbox.network import Network
from pyinit.forkserver.client import SignalsHeld
from pyinit.sandbox.output import TAIL_LINES, Output
from pyinit.sandbox.ready import Readiness
from pyinit.sandbox.result import (CommandExited, IsolationError, IsolationWarning, Process, Result, SandboxError,
                                   SignalSpec, TimeoutExpired, exec_result, make_result, signal_number,
                                   wait_limit)

if TYPE_CHECKING:
    from pyinit.sandbox.traffic import Traffic

PIPE = subprocess.PIPE
STDOUT = subprocess.STDOUT
DEVNULL = subprocess.DEVNULL

__all__ = ["Sandbox", "run", "Process", "Result", "SandboxError", "TimeoutExpired", "CommandExited",
           "IsolationError", "IsolationWarning", "signal_number", "format_tree", "namespaces_refused", "LAUNCHER",
           "PIPE", "STDOUT", "DEVNULL"]


class Sandbox(Readiness):
    """A command under pyinit as PID 1 of fresh PID and mount namespaces; a context manager.

    See the module's docstring for how it works, docs/testing.md for a
    tutorial and the reference. stdin=None means /dev/null: a test's service
    has no business reading the terminal. `settle`: seconds pyinit gives
    what the command left to exit on its own before listing the leftovers.
    `max_output`: characters kept of each captured stream (its tail); None
    keeps everything. `init=False`: no init, the command is PID 1 itself
    (it needs namespaces); pyinit's launcher relays the signals, applies
    `grace` and `rewrite`, and reports the exit; `drain`, `settle` and
    `single_child` are the init's and cannot be given, and nothing is left
    over: the kernel kills every other member when PID 1 exits.
    """

    def __init__(self, argv: Sequence[Union[str, "os.PathLike[str]"]], *, env: Optional[Mapping[str, str]] = None,
                 cwd: Union[str, "os.PathLike[str]", None] = None, stdin: Stream = None, stdout: Stream = PIPE,
                 stderr: Stream = PIPE, grace: Optional[float] = None, drain: Optional[float] = None,
                 settle: float = SETTLE, single_child: bool = False,
                 rewrite: Optional[Mapping[SignalSpec, SignalSpec]] = None, isolate: Union[bool, str] = "auto",
                 max_output: Optional[int] = None, network: str = "host", init: bool = True) -> None:
        _refuse_bad_arguments(argv, isolate, max_output, network, init, drain is not None or settle != SETTLE
                              or single_child)
        self.argv = [os.fspath(arg) for arg in argv]
        self.env = dict(os.environ if env is None else env)
        self.cwd = None if cwd is None else os.fspath(cwd)
        self.settle, self.drain = settle, drain  # pyinit's, after the command's exit: the waits then allow them
        self._options = init_options(grace, drain, settle if init else None, single_child, rewrite)
        self.init = init
        self._streams = (DEVNULL if stdin is None else stdin, stdout, stderr)
        self._isolate = isolate
        self.network = network
        self.isolated: Optional[bool] = None  # known once started
        self._network: Optional[Network] = None  # the private network's helper and forwarding
        self._launcher: Optional[Launcher] = None
        # Taken with `with self._lock`, never `with self._changed`: Condition.__enter__ is Python, and a Ctrl-C
        # raised in it just after the acquire left the lock held for good (the output reader then waited on
        # it, and close() on the reader). The lock's own __enter__ is C: acquired and protected at once.
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._output = Output(self._changed, self._lock, max_output)
        self._start_time = 0.0
        self._seen: "dict[int, int]" = {}  # host PID -> start time, of every member ever seen
        self._result: Optional[Result] = None
        self._abandoned: "Optional[weakref.finalize]" = None  # closes a sandbox garbage-collected unclosed

    # --- life cycle ----------------------------------------------------------------------------

    def __enter__(self) -> "Sandbox":
        if self._launcher is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.close()
        except KeyboardInterrupt:  # one that came as close() was entered, before any statement of it ran
            self.close()
            raise

    def start(self) -> "Sandbox":
        """Start the command; return once it runs (or has ended). Called by `with`.

        A start that cannot complete raises, and leaves nothing: no process,
        no descriptor, no thread.
        """
        if self._launcher is not None:
            raise SandboxError("this sandbox was started already")
        self.isolated = decide_isolation(self._isolate)
        if self.network == "private" and not self.isolated:
            raise IsolationError("network='private' needs namespaces, and this sandbox runs without them")
        if not self.init and not self.isolated:
            raise IsolationError("init=False needs namespaces (the command is their PID 1), and this sandbox runs "
                                 "without them")
        self._launcher = launcher = Launcher(self.isolated, bare=not self.init)
        try:
            options = [*self._options, *(["--net"] if self.network == "private" else [])]
            popen = launcher.start(self.argv, options, self._streams, self.cwd, self.env)
            assert launcher.report_fd is not None
            self._output.start(popen.stdout, popen.stderr, launcher.report_fd)
            self._start_time = time.monotonic()
            launcher.find()
            if self.network == "private" and launcher.init_pid is not None and launcher.init_pidfd is not None:
                self._network = Network(launcher.init_pid, launcher.init_pidfd, SignalsHeld)
            self.processes()  # remembered, for teardown
            self._abandoned = weakref.finalize(self, _abandoned, self._name(), launcher, self._output, self._network)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Tear everything down: SIGKILL to PID 1, and return once every member is gone. Called by `with`.
        Signals are held meanwhile (see _held): a Ctrl-C arrives after the kill and the clean-up."""
        _held(self._close)

    def _close(self) -> None:
        """close(), signals held."""
        launcher = self._launcher
        if launcher is None:
            return
        try:
            launcher.tear_down(self.processes, self._seen)
            if self._result is None and launcher.popen is not None:
                with contextlib.suppress(SandboxError):  # no report, and SIGCHLD ignored: a later wait() says so
                    self.wait(0)
        finally:
            if _let_go(launcher, self._output, self._network) and self._abandoned is not None:
                self._abandoned.detach()

    # --- what is inside ------------------------------------------------------------------------

    @property
    def pid(self) -> Optional[int]:
        """The host PID of the sandbox's PID 1 (pyinit; the command itself with init=False).

        None if the launcher failed before it started."""
        return None if self._launcher is None else self._launcher.init_pid

    @property
    def command_pid(self) -> Optional[int]:
        """The host PID of the command; None if it could not be started, or ended before it was seen."""
        return None if self._launcher is None else self._launcher.command_pid

    @property
    def stdin(self) -> Optional[IO[bytes]]:
        """The command's standard input, with stdin=PIPE; closed by close()."""
        launcher = self._launcher
        return None if launcher is None or launcher.popen is None else launcher.popen.stdin

    def processes(self) -> List[Process]:
        """Every member of the sandbox now, its PID 1 first; [] once it has ended."""
        launcher = self._launcher
        if launcher is None or launcher.init_pid is None or not launcher.init_running():
            return []
        return members.members(launcher.init_pid, launcher.level, self._seen)

    def tree(self) -> str:
        """processes() as indented text, for failure messages."""
        try:
            return format_tree(self.processes())
        except OSError as failure:  # no descriptor left to read /proc with
            return "(the processes cannot be read: %s)" % failure.strerror

    # --- signals and waiting -------------------------------------------------------------------

    def send_signal(self, sig: SignalSpec) -> None:
        """Send `sig` to the sandbox's PID 1, as `docker stop` and the kubelet do.

        `sig`: a number, a signal.Signals, or a name ("TERM", "SIGTERM",
        "RTMIN+2"). Nothing happens once the sandbox has ended.
        """
        number = signal_number(sig)
        if self._launcher is not None:
            self._launcher.send(number)

    def exec(self, argv: Sequence[Union[str, "os.PathLike[str]"]], *, timeout: Optional[float] = None,
             input: Optional[str] = None, env: Optional[Mapping[str, str]] = None,
             cwd: Union[str, "os.PathLike[str]", None] = None) -> Result:
        """Run `argv` inside the running sandbox (`pyinit --enter`), as `docker exec` does; its Result, text output.

        It is a member of the sandbox's namespaces, its orphans go to PID 1.
        `env` and `cwd`: the sandbox's by default (with no cwd given to the
        sandbox, PID 1's: /). Raises SandboxError when the sandbox
        does not run, TimeoutExpired (after killing what it started) when
        `timeout` passes.
        """
        timeout = wait_limit(timeout)
        if self._launcher is None or self._launcher.init_pid is None or not self._launcher.init_running():
            raise SandboxError("%s is not running: nothing to exec in" % self._name())
        args, started = [os.fspath(arg) for arg in argv], time.monotonic()
        try:
            code, stdout, stderr = run_inside(self._launcher.init_pid, args, timeout=timeout, input=input,
                                              env=self.env if env is None else env,
                                              cwd=self.cwd if cwd is None else os.fspath(cwd))
        except subprocess.TimeoutExpired:
            raise TimeoutExpired("%s did not end within %g s in %s" % (args, timeout or 0.0, self._name()),
                                 timeout or 0.0, self.tree()) from None
        return exec_result(args, code, stdout, stderr, time.monotonic() - started)

    def kill_command(self) -> None:
        """SIGKILL the command itself (not PID 1): pyinit then ends the normal way and writes its exit report."""
        if self._launcher is not None:
            self._launcher.send(signal.SIGKILL, to_command=True)

    def wait(self, timeout: Optional[float] = None) -> Result:
        """Wait for the command, and pyinit after it (its settle included), to end; return the Result.

        Raises TimeoutExpired (its message holds the process tree) when
        `timeout` seconds pass first; the sandbox then keeps running.
        """
        timeout = wait_limit(timeout)  # None, or longer than the clock can count: no limit
        if self._result is not None:
            return self._result
        launcher = self._launcher
        if launcher is None or launcher.popen is None:
            raise SandboxError("the sandbox was not started")
        if not launcher.ended(timeout):
            tree = self.tree()
            raise TimeoutExpired("%s did not end within %g s; the processes:\n%s"
                                 % (self._name(), timeout or 0.0, tree), timeout or 0.0, tree)
        if not self._output.finish(START_TIMEOUT):  # held open by something outside the sandbox: stop anyway
            self._output.stop()
        self._result = self._make_result()
        return self._result

    def stop(self, sig: SignalSpec = signal.SIGTERM, timeout: Optional[float] = 10) -> Result:
        """send_signal(sig), then wait(timeout)."""
        timeout = wait_limit(timeout)  # a bad one is refused before the signal goes
        self.send_signal(sig)
        return self.wait(timeout)

    def wait_for_exit(self, timeout: Optional[float] = None) -> bool:
        """Wait until the command (the whole process, not only its main thread) has exited; False if `timeout` passed first."""
        launcher = self._launcher
        return launcher is None or launcher.command_exited(wait_limit(timeout))

    # --- the network ---------------------------------------------------------------------------

    def connect(self, port: int, host: str = "127.0.0.1", timeout: Optional[float] = 10) -> socket.socket:
        """A TCP socket connected to host:port in the sandbox's network (the host's, or its own with network="private").

        Raises OSError as connect(2) would (ConnectionRefusedError: nothing
        listens there), SandboxError when the sandbox does not run.
        """
        timeout = wait_limit(timeout)
        if self._network is None and self.network == "host":
            return socket.create_connection((host, port), timeout=timeout)
        if self._launcher is None or self._network is None or not self._launcher.init_running():
            raise SandboxError("%s is not running: nothing to connect to" % self._name())
        return self._network.connect(host, port, timeout)

    def forward(self, port: int) -> "tuple[str, int]":
        """(host, port) on this side that reaches 127.0.0.1:`port` in the sandbox's network, until it closes.

        For clients that take an address (requests, httpx, urllib): with the
        host's network that is the port itself; with a private one, a local
        port whose connections are relayed inside.
        """
        if self._network is None and self.network == "host":
            return "127.0.0.1", port
        if self._launcher is None or self._network is None or not self._launcher.init_running():
            raise SandboxError("%s is not running: nothing to forward to" % self._name())
        return self._network.forward(port)

    def url(self, port: int, path: str = "/", scheme: str = "http") -> str:
        """forward(port) as a URL: url(8080, "/health") is "http://127.0.0.1:PORT/health"."""
        host, local = self.forward(port)
        return "%s://%s:%d%s" % (scheme, host, local, path if path.startswith("/") else "/" + path)

    def traffic(self, url: Union[int, str, None] = None, **options: Any) -> "Traffic":
        """HTTP requests made beside the sandbox, each recorded through a signal (pyinit.sandbox.traffic.Traffic).

        `url`: a port (path /) or an http:// URL in the sandbox's network, for
        steady requests; `slow=`, `in_flight=`, `read_rate=`: requests in
        flight at the signal. A context manager: `with box.traffic(8080) as t:`.
        """
        from pyinit.sandbox.traffic import Traffic  # http.client and the threads only for those who ask

        return Traffic(self, url, **options)

    # --- output and the result -----------------------------------------------------------------

    @property
    def stdout(self) -> str:
        """The standard output captured so far (its tail, with max_output; "" when not piped)."""
        return self._output.text("stdout") or ""

    @property
    def stderr(self) -> str:
        return self._output.text("stderr") or ""

    def output_tail(self, lines: int = TAIL_LINES) -> str:
        """The last lines of each captured stream, labelled, for failure messages."""
        return self._output.tail(lines)

    def _make_result(self) -> Result:
        launcher = self._launcher
        assert launcher is not None and launcher.popen is not None
        return make_result(self.argv, self._output.report(), launcher.returncode,
                           started=launcher.command_pid is not None or launcher.command_gone,
                           duration=time.monotonic() - self._start_time, stdout=self._output.text("stdout"),
                           stderr=self._output.text("stderr"), lost=launcher.status_lost)

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
        return "<pyinit.Sandbox %s pid=%s>" % (self._name(), self.pid)


def _refuse_bad_arguments(argv: object, isolate: object, max_output: Optional[int], network: str, init: bool,
                          init_options_given: bool) -> None:
    """Sandbox's ValueError for arguments that make no sandbox; the init's options are checked by init_options."""
    if isinstance(argv, (str, bytes)) or not argv:
        raise ValueError("argv must be a non-empty list of strings, like subprocess's")
    if isolate not in (True, False, "auto"):
        raise ValueError("isolate must be True, False or 'auto'")
    if max_output is not None and max_output < 1:
        raise ValueError("max_output must be a number of characters, 1 or more, or None")
    if network not in ("host", "private"):
        raise ValueError("network must be 'host' or 'private'")
    if not init and init_options_given:
        raise ValueError("drain, settle and single_child are the init's options, and init=False runs none")


def _held(action: Callable[[], None]) -> None:
    """`action` with every signal held (milliseconds; at most its timeouts): an interrupt (Ctrl-C) arrives as it
    returns. One that came just before the block (nothing done) or as it ended (all done) has `action` run once
    more, which finishes what the first began or does nothing, before it is raised."""
    try:
        with SignalsHeld():
            action()
    except KeyboardInterrupt:
        with SignalsHeld():
            action()
        raise


def _let_go(launcher: Launcher, output: Output, network: Optional[Network]) -> bool:
    """Stop the reader and the forwarding, and close what is held on a launcher that has ended; whether it had."""
    output.stop()
    if network is not None:
        network.close()  # forwarding ends with the sandbox
    if not launcher.ended():  # a second close() needs its pidfds to finish the teardown
        return False
    launcher.close()
    return True


def _abandoned(name: str, launcher: Launcher, output: Output, network: Optional[Network]) -> None:
    """A sandbox garbage-collected without close(): ended now, with a ResourceWarning (as an unclosed file is).
    A finalizer that close() detaches, not __del__, which would run at every sandbox's end, where a Ctrl-C
    could only be printed and lost.

    Its namespace ends (PID 1 is killed), its reader thread stops, its
    descriptors are closed: nothing of it can touch the next sandbox's.
    """
    warnings.warn("the sandbox of %s was never closed: it is closed now" % name, ResourceWarning, stacklevel=2)
    with SignalsHeld():
        if output.in_reader():  # collected by its own reader thread, which cannot wait for itself
            launcher.kill_everything(lambda: None)
            return
        try:
            launcher.tear_down(lambda: None, {})
        except SandboxError:  # what could not be ended: nothing more to do from a finalizer
            pass
        finally:
            _let_go(launcher, output, network)


def run(argv: Sequence[Union[str, "os.PathLike[str]"]], *, timeout: Optional[float] = None, **options: Any) -> Result:
    """Run `argv` in a Sandbox to the end and return its Result (the one-shot form)."""
    with Sandbox(argv, **options) as box:
        return box.wait(timeout)


