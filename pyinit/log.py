"""`pyinit: ...` lines on stderr.

Written with a single `os.write` each, so a line is never split or held in a
buffer when the init exits with `os._exit`, and a closed or broken stderr can
never raise out of the PID-1 loop: once a line cannot be written, logging
stops and the init carries on.

Messages take %-style arguments and are only formatted when their level is
enabled, so a disabled `debug()` in the reap loop costs one comparison.
"""

import errno
import os

ERROR = 0  # always printed
WARNING = 1  # the default; -q turns these off
INFO = 2  # -v: spawn, every signal and what was done with it, every reap
DEBUG = 3  # -vv: the plumbing (subreaper, working directory, masks)

level = WARNING


def set_level(new_level: int) -> None:
    global level
    level = new_level


_stderr_broken = False


def _emit(message: str, args: tuple) -> None:
    global _stderr_broken
    if _stderr_broken:
        return
    if args:
        message = message % args
    if not message.isprintable():  # a name or path with a newline or escape in it must not forge lines
        message = "".join(char if char.isprintable() else repr(char)[1:-1] for char in message)
    try:
        os.write(2, ("pyinit: " + message + "\n").encode(errors="backslashreplace"))
    except OSError as failure:
        # Nobody reads: every further write would fail the same way (and
        # raise another SIGPIPE), so stop writing. A full non-blocking pipe
        # (EAGAIN) only loses this line.
        _stderr_broken = failure.errno in (errno.EPIPE, errno.EBADF, errno.EIO)


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
