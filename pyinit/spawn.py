"""Starting the child: posix_spawn, or fork and exec, and what to do when exec fails.

The child starts with the signal state a careful caller would give it,
whatever the init did to itself: an empty mask (the init blocks everything,
masks survive exec, and a blocked signal in the child would defeat the
forwarding that is pyinit's job), and every disposition back to the default
but the signals pyinit's caller left ignored (nohup's SIGHUP), which stay
ignored as exec(2) would keep them. SIGPIPE and SIGXFSZ, which Python
ignores at start-up, go back to the default, as subprocess does. Only the
dispositions that differ from what the child is to have are set: which ones
is read before the child starts from the signal module's table (it holds
every disposition, read at start-up and kept up to date by every change made
through it), so a few sigaction(2) calls are made (SIGINT, SIGPIPE, SIGXFSZ)
instead of one per signal: in a forked child every page of the parent's heap
that a call touches is copied first, and the whole loop took it about 0.3 ms
before its exec. Where the child is forked (below), its dispositions are set
before its mask is cleared, so a signal that arrived in between meets its
final disposition, not a Python handler that would run in the child before
exec.

The mask is empty even when pyinit's caller had signals blocked (dumb-init
does the same; tini gives the child the caller's mask back). Decided so
because the two inheritances are not alike. An ignored disposition is a
convention with a purpose (nohup; sh ignoring SIGINT and SIGQUIT for a
background job), and it gives way as soon as the program installs a handler
of its own. A blocked signal is nearly always a leak (a supervisor that
blocks signals to wait for them, as pyinit does, and forks without undoing
it), and it defeats even a program with a handler, since hardly any program
unblocks what it did not block itself: every signal pyinit forwards would
stay pending, and `docker stop` would end in SIGKILL. A command that is
meant to start with signals blocked can still have it, by its own wrapper
after pyinit: `pyinit -- env --block-signal=INT COMMAND`.

Where no terminal is handed over (no terminal at all, the container's
case, or -c) and every disposition the child needs is the default or an
inherited SIG_IGN, the child is started with posix_spawn(3): glibc clones
it sharing the parent's memory (CLONE_VM | CLONE_VFORK), so no page table
is copied and no Python runs in the child, and the call returns once the
exec has succeeded or with its errno. A fork of the interpreter costs about
1 ms more before the exec (the benchmark's start-up rows). Its attributes
give the same state: a new session (setsid), an empty mask (setsigmask),
and SIG_DFL for the signals Python itself changed (setsigdef); glibc sets
every handled signal back to the default on its own. One difference stays:
glibc (2.36) starts the child with its two reserved signals, 32 and 33,
ignored, and does not let a caller ask otherwise. pyinit never forwards
them (no glibc program can block or wait for them), and the C libraries
that use them (glibc's threads, musl) install their handlers with
sigaction(2) when they first need them, which overrides SIG_IGN.
Everything else (a terminal to hand over, a SIG_IGN the caller gave to
SIGCHLD, which the init had to take back) goes through fork and exec.

An exec failure then happens in the child, after fork; it travels back to
the parent through a close-on-exec pipe: end-of-file means exec succeeded,
a message means it did not. Either way the parent knows before `spawn`
returns, and can exit with 127 or 126 like `env` and `timeout` do.
"""

import errno
import os

from pyinit import proc, signals, terminal
from pyinit.config import EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND, EXIT_USAGE

TYPE_CHECKING = False  # mypy reads the block below; at run time `typing` would cost start-up
if TYPE_CHECKING:
    from typing import Callable


class SpawnError(Exception):
    """The command could not be started; carries the exit code to use."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def spawn(argv: "list[str]", placement: terminal.Placement, ignored: "frozenset[int]") -> int:
    """Start `argv`; return the child's PID once it has exec'd, or raise SpawnError.

    `placement` is one of terminal.py's: but for SAME_GROUP the child leads a
    new process group, so a signal to the group reaches it and everything it
    starts, and nothing else. `ignored`: the signals the child starts with
    ignored (those pyinit's caller left ignored); every other one gets the
    default disposition.
    """
    if not argv[0]:
        raise SpawnError(EXIT_NOT_FOUND, "the command name is empty")
    environment = _original_environment()
    dispositions = _dispositions_to_set(ignored)
    if placement.kind in _SPAWNABLE and all(disposition == signals.api.SIG_DFL for _, disposition in dispositions):
        return _posix_spawn(argv, placement.kind == terminal.NEW_SESSION, [signo for signo, _ in dispositions],
                            environment)
    return _fork_and_exec(argv, placement, dispositions, environment)


# Placements that need nothing done between fork and exec but what posix_spawn's attributes do.
_SPAWNABLE = frozenset({terminal.NEW_SESSION, terminal.SAME_GROUP})
# What posix_spawn fails with when the process could not be made at all (clone(2)'s errors).
_NO_PROCESS = frozenset({errno.EAGAIN, errno.ENOMEM, errno.ENOSPC})


def _posix_spawn(argv: "list[str]", new_session: bool, to_default: "list[int]", environment: dict) -> int:
    """The child by posix_spawn(3): a new session or not, an empty mask, `to_default` back to SIG_DFL."""
    def start(path: str, args: "list[str]") -> int:
        return os.posix_spawn(path, args, environment, setsid=new_session, setsigmask=(), setsigdef=to_default)

    try:
        return _execvp(start, argv, environment)
    except OSError as failure:
        if failure.errno in _NO_PROCESS:
            raise SpawnError(EXIT_USAGE, "cannot start '%s': posix_spawn: %s" % (argv[0], failure.strerror)) from None
        raise _exec_failure(argv[0], failure.errno or errno.EINVAL, failure.strerror or str(failure)) from None


def _fork_and_exec(argv: "list[str]", placement: terminal.Placement, dispositions: "list[tuple[int, int]]",
                   environment: dict) -> int:
    """The child by fork(2), which takes its place towards the terminal and sets its dispositions before exec."""
    report_read, report_write = _call("pipe", argv[0], os.pipe2, os.O_CLOEXEC)
    try:
        pid = _call("fork", argv[0], os.fork)
    except SpawnError:
        os.close(report_read)
        os.close(report_write)
        raise
    if pid == 0:
        os.close(report_read)
        _exec_child(argv, placement, dispositions, environment, report_write)
    os.close(report_write)
    report = proc.read_to_end(report_read)
    os.close(report_read)
    if not report:
        return pid
    os.waitpid(pid, 0)
    code_text, _, message = report.decode(errors="replace").partition(" ")
    raise _exec_failure(argv[0], int(code_text), message)


def _exec_failure(command: str, code: int, message: str) -> SpawnError:
    """What exec's errno `code` means: exit 127 for a command that is not there, 126 for one that cannot run."""
    if code != errno.ENOENT:
        return SpawnError(EXIT_CANNOT_EXECUTE, "cannot run '%s': %s" % (command, message))
    if "/" not in command:
        message = "no such command in PATH"
    return SpawnError(EXIT_NOT_FOUND, "cannot run '%s': %s" % (command, message))


def _call(syscall: str, command: str, function, *args):
    """`function(*args)`, its failure (no descriptors, no processes left) named as what stopped the command."""
    try:
        return function(*args)
    except OSError as failure:
        raise SpawnError(EXIT_USAGE, "cannot start '%s': %s: %s" % (command, syscall, failure.strerror)) from None


def _dispositions_to_set(ignored: "frozenset[int]") -> "list[tuple[int, int]]":
    """(signal, disposition) for each signal whose disposition the child must change: SIG_IGN for `ignored`, SIG_DFL for the rest.

    What the signal module holds for a signal is SIG_DFL, SIG_IGN, a handler
    set through it (Python's SIGINT handler), or None for one set outside
    it: all but the wanted one are changed.
    """
    api = signals.api
    wanted = {signo: api.SIG_IGN if signo in ignored else api.SIG_DFL for signo in signals.WAITED}
    return [(signo, disposition) for signo, disposition in wanted.items() if api.getsignal(signo) != disposition]


def become(argv: "list[str]", ignored: "frozenset[int]") -> SpawnError:
    """Exec `argv` in this very process, with the signal state spawn() gives a child; return only why it could not.

    For a process that is to be the command rather than its parent: the
    launcher's PID 1 under --bare (launcher/namespace.py). It stays where it
    is towards the terminal, and `ignored` is as for spawn().
    """
    if not argv[0]:
        return SpawnError(EXIT_NOT_FOUND, "the command name is empty")
    try:
        _exec(argv, _dispositions_to_set(ignored), _original_environment())
    except Exception as failure:  # anything at all (a ValueError too): the caller must get to its exit, as _exec_child
        return _exec_failure(argv[0], getattr(failure, "errno", None) or errno.EINVAL,
                             getattr(failure, "strerror", None) or str(failure))
    raise AssertionError("execve returned")  # not reached: it returns only by raising


def _exec(argv: "list[str]", dispositions: "list[tuple[int, int]]", environment: dict) -> None:
    """The child's dispositions, then its empty mask (so a signal in between meets its final disposition), then exec."""
    def start(path: str, args: "list[str]") -> int:
        os.execve(path, args, environment)
        return 0  # not reached: execve returns only by raising

    for signo, disposition in dispositions:
        signals.api.signal(signo, disposition)
    signals.api.pthread_sigmask(signals.api.SIG_SETMASK, ())
    _execvp(start, argv, environment)


def _exec_child(argv: "list[str]", placement: terminal.Placement, dispositions: "list[tuple[int, int]]",
                environment: dict, report_fd: int) -> None:
    """In the forked child: prepare, exec, and never return to the caller."""
    try:
        try:
            terminal.take_in_child(placement)
            _exec(argv, dispositions, environment)
        except BaseException as failure:  # anything at all: report it, then _exit
            code = getattr(failure, "errno", None) or errno.EINVAL
            message = getattr(failure, "strerror", None) or str(failure)
            os.write(report_fd, ("%d %s" % (code, message)).encode(errors="replace"))
    finally:
        os._exit(EXIT_CANNOT_EXECUTE)


# The child's environment where it is not the one pyinit was started with: the test side's fork
# server runs the launcher in a fork of itself (forkserver/server.py), not from an exec.
ENVIRONMENT: "dict | None" = None


def _original_environment() -> dict:
    """The environment pyinit was started with, as the kernel keeps it (or ENVIRONMENT, where set).

    Python's start-up may have added to os.environ (LC_CTYPE=C.UTF-8, when
    it coerces a C locale: PEP 538); the child must get what pyinit got.
    Where /proc cannot tell, os.environ is the best there is.
    """
    if ENVIRONMENT is not None:
        return ENVIRONMENT
    entries = proc.environ()
    if entries is None:
        return dict(os.environb)
    environment: dict = {}
    for entry in entries:
        name, equals, value = entry.partition(b"=")
        if equals and name:
            environment.setdefault(name, value)  # getenv(3) finds the first of duplicates
    return environment


def _execvp(start: "Callable[[str, list[str]], int]", argv: "list[str]", environment: dict) -> int:
    """execvp(3) as the C library does it, which os.execvp does not quite, with `start(path, argv)` as the exec.

    `start` is execve(2) in a forked child, posix_spawn(3) in the init.
    A file that the kernel cannot execute (ENOEXEC: a script without `#!`)
    is run by /bin/sh, as execvp(3), and so env, tini and dumb-init, do.
    Searching PATH goes on past a file that may not be executed (EACCES),
    which is reported only if nothing later is found. A directory without
    the file is passed over on a stat(2), before any exec is tried: each try
    converts the whole environment again, and under posix_spawn makes a
    process.
    """
    name = argv[0]
    to_report: OSError = FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
    for directory in [""] if "/" in name else _exec_path(environment):
        path = os.path.join(directory, name) if directory else name
        try:
            os.stat(path)
            return start(path, argv)
        except OSError as failure:
            if failure.errno == errno.ENOEXEC:
                return start("/bin/sh", ["/bin/sh", path, *argv[1:]])
            if failure.errno not in (errno.EACCES, errno.ENOENT, errno.ENOTDIR):
                raise
            if to_report.errno != errno.EACCES:
                to_report = failure
    raise to_report


def _exec_path(environment: dict) -> "list[str]":
    """PATH's directories, as os.get_exec_path gives them for a bytes environment.

    Not os.get_exec_path itself: it imports `warnings`, which costs about a
    millisecond, before the exec of every child.
    """
    path = environment.get(b"PATH")
    return (os.defpath if path is None else os.fsdecode(path)).split(os.pathsep)
