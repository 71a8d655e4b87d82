"""Starting the child: everything between fork and exec, and exec failures.

The child starts with the signal state a careful caller would give it,
whatever the init did to itself: an empty mask (the init blocks everything,
masks survive exec, and a blocked signal in the child would defeat the
forwarding that is pyinit's job), and every disposition back to the default
but the signals pyinit's caller left ignored (nohup's SIGHUP), which stay
ignored as exec(2) would keep them. SIGPIPE and SIGXFSZ, which Python
ignores at start-up, go back to the default, as subprocess does.
Dispositions are set before the mask is cleared, so a signal that arrived
in between meets its final disposition, not a Python handler that would run
in the child before exec. Only those that differ from what the child is to
have are set: which ones is read before the fork from the signal module's
table (it holds every disposition, read at start-up and kept up to date by
every change made through it), so the child makes a few sigaction(2)
calls (SIGINT, SIGPIPE, SIGXFSZ) instead of one per signal: in the child
every page of the parent's heap that a call touches is copied first, and the
whole loop took it about 0.3 ms before its exec.

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

An exec failure happens in the child, after fork; it travels back to the
parent through a close-on-exec pipe: end-of-file means exec succeeded, a
message means it did not. The parent therefore knows before it returns,
and can exit with 127 or 126 like `env` and `timeout` do.

Not posix_spawn(3), though it would start the child about 1.5 ms sooner (no
page tables copied, no Python run in the child): glibc's (2.36) leaves its
two internal signals, 32 and 33, ignored in every child it starts, and the
child's signal state must be the clean one described above.
"""

import errno
import os

from pyinit import proc, signals, terminal
from pyinit.config import EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND, EXIT_USAGE


class SpawnError(Exception):
    """The command could not be started; carries the exit code to use."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def spawn(argv: "list[str]", placement: terminal.Placement, ignored: "frozenset[int]") -> int:
    """Fork and exec `argv`; return the child's PID or raise SpawnError.

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
    report = _read_all(report_read)
    os.close(report_read)
    if not report:
        return pid
    os.waitpid(pid, 0)
    code_text, _, message = report.decode(errors="replace").partition(" ")
    if int(code_text) != errno.ENOENT:
        raise SpawnError(EXIT_CANNOT_EXECUTE, "cannot run '%s': %s" % (argv[0], message))
    if "/" not in argv[0]:
        message = "no such command in PATH"
    raise SpawnError(EXIT_NOT_FOUND, "cannot run '%s': %s" % (argv[0], message))


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


def _exec_child(argv: "list[str]", placement: terminal.Placement, dispositions: "list[tuple[int, int]]",
                environment: dict, report_fd: int) -> None:
    """In the forked child: prepare, exec, and never return to the caller."""
    try:
        try:
            terminal.take_in_child(placement)
            for signo, disposition in dispositions:
                signals.api.signal(signo, disposition)
            signals.api.pthread_sigmask(signals.api.SIG_SETMASK, ())
            _execvp(argv, environment)
        except BaseException as failure:  # anything at all: report it, then _exit
            code = getattr(failure, "errno", None) or errno.EINVAL
            message = getattr(failure, "strerror", None) or str(failure)
            os.write(report_fd, ("%d %s" % (code, message)).encode(errors="replace"))
    finally:
        os._exit(EXIT_CANNOT_EXECUTE)


def _original_environment() -> dict:
    """The environment pyinit was started with, as the kernel keeps it.

    Python's start-up may have added to os.environ (LC_CTYPE=C.UTF-8, when
    it coerces a C locale: PEP 538); the child must get what pyinit got.
    Where /proc cannot tell, os.environ is the best there is.
    """
    entries = proc.environ()
    if entries is None:
        return dict(os.environb)
    environment: dict = {}
    for entry in entries:
        name, equals, value = entry.partition(b"=")
        if equals and name:
            environment.setdefault(name, value)  # getenv(3) finds the first of duplicates
    return environment


def _execvp(argv: "list[str]", environment: dict) -> None:
    """execvp(3) as the C library does it, which os.execvp does not quite.

    A file that the kernel cannot execute (ENOEXEC: a script without `#!`)
    is run by /bin/sh, as execvp(3), and so env, tini and dumb-init, do.
    Searching PATH goes on past a file that may not be executed (EACCES),
    which is reported only if nothing later is found. A directory without
    the file is passed over on a stat(2): each os.execve converts the whole
    environment again, which made a failed try cost the child some 40 us.
    """
    name = argv[0]
    to_report: OSError = FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT))
    for directory in [""] if "/" in name else _exec_path(environment):
        path = os.path.join(directory, name) if directory else name
        try:
            os.stat(path)
            os.execve(path, argv, environment)
        except OSError as failure:
            if failure.errno == errno.ENOEXEC:
                os.execve("/bin/sh", ["/bin/sh", path, *argv[1:]], environment)
            if failure.errno not in (errno.EACCES, errno.ENOENT, errno.ENOTDIR):
                raise
            if to_report.errno != errno.EACCES:
                to_report = failure
    raise to_report


def _exec_path(environment: dict) -> "list[str]":
    """PATH's directories, as os.get_exec_path gives them for a bytes environment.

    Not os.get_exec_path itself: it imports `warnings`, which would cost the
    child a millisecond between fork and exec.
    """
    path = environment.get(b"PATH")
    return (os.defpath if path is None else os.fsdecode(path)).split(os.pathsep)


def _read_all(fd: int) -> bytes:
    chunks: "list[bytes]" = []
    while True:
        chunk = os.read(fd, 4096)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
