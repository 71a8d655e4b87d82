"""`pyinit: ...` lines on stderr, which never block the init.

A reader that stops reading (a full pipe, a log shipper that stalls, a
terminal held with Ctrl-S) must not stop PID 1: blocked in write(2) it would
neither reap nor forward a signal. So every line is written without
blocking, and a line that does not fit is dropped and counted; the next line
that does fit is preceded by one that says how many were lost, and so is
pyinit's exit (`flush`).

stderr's own open file description is shared with the child and with
whoever else writes to it: setting O_NONBLOCK there would make their writes
fail with EAGAIN. pyinit writes instead through a descriptor of its own,
opened on first use:

- a pipe, FIFO or terminal: opened again through /proc/self/fd/2, which
  gives a new file description of the same pipe or device, made
  non-blocking (and close-on-exec, so the child never sees it);
- a socket (journald's stream, say): the socket's send() with MSG_DONTWAIT;
- a regular file or block device: fd 2 itself, which does not wait for a
  reader;
- anything else, or where it cannot be reopened (no /proc, no descriptor
  left): fd 2, written only when poll says it has room (which another
  writer could take first: the best there is).

Each line is one write of at most PIPE_BUF bytes, so a line is never split
or mixed with another writer's on a pipe, nor held in a buffer when the init
exits with `os._exit`. Once stderr is closed or broken, logging stops and
the init carries on.

Messages take %-style arguments and are only formatted when their level is
enabled, so a disabled `debug()` in the reap loop costs one comparison.
"""

import errno
import os

TYPE_CHECKING = False  # mypy reads the block below; at run time `typing` would cost start-up
if TYPE_CHECKING:
    from typing import Callable

ERROR = 0  # always printed
WARNING = 1  # the default; -q turns these off
INFO = 2  # -v: spawn, every signal and what was done with it, every reap
DEBUG = 3  # -vv: the plumbing (subreaper, working directory, masks)
LINE_LIMIT = 4096  # PIPE_BUF: a write no longer than this to a pipe is all or nothing

level = WARNING
line_end = "\n"  # "\r\n" while the launcher holds the user's terminal raw (no output processing)


def set_level(new_level: int) -> None:
    global level
    level = new_level


_write: "Callable[[bytes], int] | None" = None  # writes one line without blocking; chosen on first use
_stderr_broken = False
_dropped = 0  # lines lost to a full stderr since the last one written


def _choose_writer() -> "Callable[[bytes], int]":
    """How to write to stderr without blocking (see the module's docstring)."""
    try:
        import stat

        mode = os.fstat(2).st_mode
        if stat.S_ISREG(mode) or stat.S_ISBLK(mode):
            return _write_stderr
        if stat.S_ISSOCK(mode):
            import socket

            stream = socket.socket(fileno=os.dup(2))  # dup: closing this object must not close fd 2
            return lambda data: stream.send(data, socket.MSG_DONTWAIT)
        fd = os.open("/proc/self/fd/2", os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        return lambda data: os.write(fd, data)
    except Exception:  # no /proc, or no descriptor left (RLIMIT_NOFILE) to reopen it or load a module with
        return _write_when_ready


def _write_stderr(data: bytes) -> int:
    return os.write(2, data)


def _write_when_ready(data: bytes) -> int:
    """fd 2 itself, written only when poll says there is room (where the module can be loaded)."""
    try:
        import select
    except Exception:  # an extension module: loading it needs a descriptor (OSError), or it is missing
        return os.write(2, data)
    if not select.select([], [2], [], 0)[1]:
        raise BlockingIOError(errno.EAGAIN, "stderr is full")
    return os.write(2, data)


def _line(message: str) -> bytes:
    data = ("pyinit: " + message + line_end).encode(errors="backslashreplace")
    if len(data) > LINE_LIMIT:
        data = data[:LINE_LIMIT - 3 - len(line_end)] + b"..." + line_end.encode()
    return data


def _put(data: bytes) -> bool:
    """Write one line; False if it did not fit. Stops all logging once stderr is closed or broken."""
    global _write, _stderr_broken
    try:
        if _write is None:
            _write = _choose_writer()
        _write(data)
        return True
    except OSError as failure:
        # Nobody reads: every further write would fail the same way (and
        # raise another SIGPIPE), so stop writing. A full stderr (EAGAIN)
        # only loses this line.
        _stderr_broken = failure.errno in (errno.EPIPE, errno.EBADF, errno.EIO, errno.ENXIO)
        return False


def flush() -> None:
    """Say how many lines were dropped, if any were and there is room now (at exit, say)."""
    global _dropped
    if _dropped and not _stderr_broken and _put(_line("%d log line(s) dropped: stderr was full" % _dropped)):
        _dropped = 0


def _emit(message: str, args: tuple) -> None:
    global _dropped
    if _stderr_broken:
        return
    if args:
        message = message % args
    if not message.isprintable():  # a name or path with a newline or escape in it must not forge lines
        message = "".join(char if char.isprintable() else repr(char)[1:-1] for char in message)
    if _dropped:
        flush()
        if _dropped:  # still no room
            _dropped += 1
            return
    if not _put(_line(message)) and not _stderr_broken:
        _dropped += 1


def error(message: str, *args: object) -> None:
    _emit(message, args)


def warning(message: str, *args: object) -> None:
    if level >= WARNING:
        _emit(message, args)


def info(message: str, *args: object) -> None:
    if level >= INFO:
        _emit(message, args)


def debug(message: str, *args: object) -> None:
    if level >= DEBUG:
        _emit(message, args)
