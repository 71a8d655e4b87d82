"""Thin wrappers over the Linux system calls Python's `os` module lacks.

Each raises OSError with the kernel's errno, like the `os` functions do.
`ctypes` is imported on first use only: it costs start-up time and about half
a megabyte of resident memory, and the common case (PID 1 of a container, no
`-p`) never needs it. This module imports nothing of pyinit's.
"""

import os

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

_ctypes = None
_libc = None


def _call(function_name: str, *args: int) -> int:
    global _ctypes, _libc
    if _libc is None:
        import ctypes

        _ctypes, _libc = ctypes, ctypes.CDLL(None, use_errno=True)
    result = getattr(_libc, function_name)(*args)
    if result == -1:
        errno = _ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))
    return result


def prctl(option: int, argument: int) -> None:
    _call("prctl", option, argument, 0, 0, 0)


def set_child_subreaper() -> None:
    """Make orphaned descendants re-parent to us instead of to PID 1.

    Inherited by neither fork nor exec's children: it marks this process only.
    """
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_parent_death_signal(signo: int) -> None:
    """Ask for `signo` when the thread that created us exits.

    Only arms for the future: a parent that already died is not reported, so
    callers check for it afterwards.
    """
    prctl(PR_SET_PDEATHSIG, signo)
