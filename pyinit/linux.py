"""Thin wrappers over the Linux system calls Python's `os` module lacks.

Each raises OSError with the kernel's errno, like the `os` functions do.
The C library is called through `_ctypes`, the C module under the ctypes
package, loaded on first use: the package itself costs about 3 ms of
start-up and most of half a megabyte of resident memory for type machinery
these few calls do not need, `_ctypes` alone about a tenth of a millisecond,
and the common case (PID 1 of a container, no `-p`) loads neither. An int
goes to C as an `int`; where the kernel reads an unsigned long (prctl's
variadic arguments, mount's flags) or a size_t, the argument is passed as
an UnsignedLong, so no upper half of a 64-bit register is left to chance.
This module imports nothing of pyinit's.
"""

import errno
import os
import sys

TYPE_CHECKING = False  # mypy reads the block below; at run time `typing` would cost start-up
if TYPE_CHECKING:
    from typing import Any

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PR_GET_SECUREBITS = 27

CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REC = 0x4000
MS_PRIVATE = 0x40000

_ctypes: "Any" = None  # the C module, once loaded (typed loosely: it is imported lazily)
_libc = 0  # dlopen(NULL): the handle that finds the C library's functions
_Function: "Any" = None  # a C function returning int, with errno kept for get_errno()
_ULong: "Any" = None  # C unsigned long


class UnsignedLong(int):
    """An argument that goes to C as an unsigned long (size_t too: the same width on Linux)."""


class LoadError(OSError):
    """`_ctypes` could not be loaded, so the C function was never called.

    errno is ELIBACC ("cannot access a needed shared library") whatever the
    cause (a file-descriptor limit too low to open the shared object, say),
    so no caller mistakes it for the system call's own failure.
    """

    def __init__(self, function_name: str, cause: BaseException) -> None:
        reason = getattr(cause, "strerror", None) or str(cause)
        super().__init__(errno.ELIBACC, "%s(2) was not called: loading _ctypes failed: %s" % (function_name, reason))


def _load() -> None:
    """Load `_ctypes` and make the two C types used here: what ctypes.CDLL(None) and c_ulong amount to."""
    global _ctypes, _libc, _Function, _ULong
    import _ctypes as module

    handle = module.dlopen(None)  # type: ignore[arg-type]  # NULL: the program and its C library

    class Function(module.CFuncPtr):
        _flags_ = module.FUNCFLAG_CDECL | module.FUNCFLAG_USE_ERRNO
        _restype_ = type("c_int", (module._SimpleCData,), {"_type_": "i"})

    _ULong = type("c_ulong", (module._SimpleCData,), {"_type_": "L"})
    _Function, _libc, _ctypes = Function, handle, module


def _loaded_for(function_name: str) -> None:
    """Load `_ctypes` if it is not yet; a failure names the function that will not be called."""
    if _ctypes is None:
        try:
            _load()
        except (ImportError, OSError) as failure:
            raise LoadError(function_name, failure) from None


def load() -> None:
    """Load `_ctypes` now rather than at the first call: the test side's fork server does, so that each
    launcher it forks has it already (OSError, as a call would raise, when it cannot be loaded)."""
    _loaded_for("setns")


def _call(function_name: str, *args: object) -> int:
    """Call a libc function; raise OSError on -1, return the result otherwise.

    An int goes to C as an int, an UnsignedLong as an unsigned long, bytes
    as a char pointer, None as NULL, a byref() as the pointer it is.
    """
    _loaded_for(function_name)
    c_args = [_ULong(arg) if isinstance(arg, UnsignedLong) else arg for arg in args]
    result: int = _Function(_ctypes.dlsym(_libc, function_name))(*c_args)
    if result == -1:
        code = _ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def prctl(option: int, argument: int) -> None:
    """prctl(2); the kernel reads all four arguments after `option` as unsigned longs."""
    _call("prctl", option, UnsignedLong(argument), UnsignedLong(0), UnsignedLong(0), UnsignedLong(0))


def securebits() -> int:
    """prctl(PR_GET_SECUREBITS): the thread's securebits flags (capabilities(7)), which fork and exec keep."""
    return _call("prctl", PR_GET_SECUREBITS, UnsignedLong(0), UnsignedLong(0), UnsignedLong(0), UnsignedLong(0))


def set_child_subreaper() -> None:
    """Make orphaned descendants re-parent to us instead of to PID 1.

    Inherited by neither fork nor exec's children: it marks this process only.
    """
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_parent_death_signal(signo: int) -> None:
    """Ask for `signo` when the thread that created us exits.

    Only arms for the future: a parent that already died is not reported, so
    callers check for it afterwards. Cleared by fork, kept across exec.
    """
    prctl(PR_SET_PDEATHSIG, signo)


def unshare(flags: int) -> None:
    """unshare(2): os.unshare on Python 3.12+, the C library's before that."""
    if hasattr(os, "unshare"):
        os.unshare(flags)
    else:
        unshare_with_ctypes(flags)


def unshare_with_ctypes(flags: int) -> None:
    """The pre-3.12 path, kept callable on its own so tests cover it everywhere."""
    _call("unshare", flags)


def mount(source: "str | None", target: str, fstype: "str | None", flags: int) -> None:
    def c_string(text: "str | None") -> "bytes | None":
        return None if text is None else os.fsencode(text)

    _call("mount", c_string(source), c_string(target), c_string(fstype), UnsignedLong(flags), None)


def setns(fd: int, nstype: int) -> None:
    """setns(2): os.setns on Python 3.12+, the C library's before that. `fd` may be a pidfd (Linux 5.8+):
    then every namespace of that process named in `nstype` is joined at once."""
    if hasattr(os, "setns"):
        os.setns(fd, nstype)
    else:
        _call("setns", fd, nstype)


def sethostname(name: str) -> None:
    encoded = os.fsencode(name)  # the bytes given on the command line, whatever they are
    _call("sethostname", encoded, UnsignedLong(len(encoded)))


def pidfd_open(pid: int) -> int:
    """pidfd_open(2) (Linux 5.3+): a descriptor that stands for process `pid` and no other, close-on-exec.

    It stays valid after the process has exited and its PID is reused, and
    it can be held across a fork into another PID namespace.
    """
    return os.pidfd_open(pid)


def pidfd_has_exited(pidfd: int) -> bool:
    """Whether the process behind a pidfd has exited: the fd polls readable then.

    Unlike kill(pid, 0) this cannot be fooled by a zombie or a recycled PID,
    and it works across PID namespaces, where getppid() says 0.
    """
    return bool(ready([pidfd], [], 0)[0])


def ready(readers: "list[int]", writers: "list[int]", timeout: "float | None" = None) -> "tuple[set[int], set[int]]":
    """poll(2) asked select(2)'s question: which of `readers` can be read and `writers` written, within `timeout` s.

    select(2) cannot take a descriptor numbered 1,024 or more, which a caller
    holding many files hands on; poll takes any. An end or an error counts
    as ready, as select has it: the read or the write then says which.
    None waits without a limit.
    """
    import select

    wanted: "dict[int, int]" = {}
    for fd in readers:
        wanted[fd] = wanted.get(fd, 0) | select.POLLIN
    for fd in writers:
        wanted[fd] = wanted.get(fd, 0) | select.POLLOUT
    poller = select.poll()
    for fd, events in wanted.items():
        poller.register(fd, events)
    readable, writable = set(), set()
    for fd, events in poller.poll(None if timeout is None else timeout * 1000):
        if events & select.POLLNVAL:
            raise OSError(errno.EBADF, "poll: descriptor %d is not open" % fd)
        done = events & (select.POLLHUP | select.POLLERR)
        if wanted[fd] & select.POLLIN and (events & select.POLLIN or done):
            readable.add(fd)
        if wanted[fd] & select.POLLOUT and (events & select.POLLOUT or done):
            writable.add(fd)
    return readable, writable


def release_controlling_terminal(fd: int) -> None:
    """TIOCNOTTY: a session leader lets its controlling terminal go.

    The kernel then sends SIGHUP and SIGCONT to the terminal's foreground
    process group, as if the leader had exited.
    """
    import fcntl
    import termios

    fcntl.ioctl(fd, termios.TIOCNOTTY)


def set_controlling_terminal(fd: int) -> None:
    """TIOCSCTTY: a session leader without a terminal takes `fd` as its own.

    The argument 0 means "do not steal": it fails if the terminal is still
    another session's.
    """
    import fcntl
    import termios

    fcntl.ioctl(fd, termios.TIOCSCTTY, 0)


def get_window_size(fd: int) -> bytes:
    """TIOCGWINSZ: the terminal's `struct winsize` (rows, columns, pixels), as the kernel keeps it."""
    import fcntl
    import termios

    return fcntl.ioctl(fd, termios.TIOCGWINSZ, bytes(8))


def set_window_size(fd: int, size: bytes) -> None:
    """TIOCSWINSZ: set a `struct winsize` taken by get_window_size.

    When it differs from the terminal's, the kernel sends SIGWINCH to the
    terminal's foreground process group.
    """
    import fcntl
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, size)


SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
_IFNAMSIZ = 16  # struct ifreq opens with the interface name, then a union: ifr_flags (a short) for these two
_IFREQ_SIZE = 40  # sizeof(struct ifreq) on 64-bit (32 on 32-bit): the kernel copies that much in and out


def bring_up_loopback() -> None:
    """Set IFF_UP on `lo` in the calling process's network namespace, as `ip link set lo up` does.

    A new network namespace has `lo` and nothing else, and it is down:
    127.0.0.1 cannot even be bound until it is up. The flags are read with
    SIOCGIFFLAGS and written back with IFF_UP added (SIOCSIFFLAGS needs
    CAP_NET_ADMIN in the user namespace that owns the network namespace),
    through a datagram socket that exists only for the two ioctls.
    `_socket`, the C module under socket.py, because the package imports
    enum and costs about 5 ms where `_socket` costs a tenth of a millisecond.
    """
    import _socket
    import fcntl

    probe = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
    try:
        request = b"lo".ljust(_IFNAMSIZ, b"\0") + bytes(_IFREQ_SIZE - _IFNAMSIZ)
        answer = fcntl.ioctl(probe.fileno(), SIOCGIFFLAGS, request)
        flags = int.from_bytes(answer[_IFNAMSIZ:_IFNAMSIZ + 2], sys.byteorder) | IFF_UP
        fcntl.ioctl(probe.fileno(), SIOCSIFFLAGS,
                    answer[:_IFNAMSIZ] + flags.to_bytes(2, sys.byteorder) + answer[_IFNAMSIZ + 2:])
    finally:
        probe.close()


_SFD_NONBLOCK = os.O_NONBLOCK
_SFD_CLOEXEC = os.O_CLOEXEC
_SIGNALFD_SIGINFO_SIZE = 128  # sizeof(struct signalfd_siginfo)


def signalfd(signal_numbers: "frozenset[int]") -> int:
    """signalfd(2): a non-blocking, close-on-exec file descriptor that reads these signals.

    The signals must stay blocked: the descriptor takes them off the queue,
    so they can be waited for in poll(2) beside other descriptors, which
    Python's signal module cannot do without running handlers.
    """
    words = [0] * 16  # glibc's sigset_t: 1024 bits in 64-bit words, of which the kernel reads 64
    for signo in signal_numbers:
        words[(signo - 1) // 64] |= 1 << ((signo - 1) % 64)
    mask = b"".join(word.to_bytes(8, sys.byteorder) for word in words)  # bytes go to C as a pointer
    return _call("signalfd", -1, mask, _SFD_NONBLOCK | _SFD_CLOEXEC)


def read_signalfd(fd: int) -> "list[tuple[int, int, int]]":
    """The signals waiting on a signalfd, as (signal number, si_code, sender PID); [] when none."""
    import struct

    try:
        data = os.read(fd, _SIGNALFD_SIGINFO_SIZE * 32)
    except BlockingIOError:
        return []
    found = []
    for offset in range(0, len(data), _SIGNALFD_SIGINFO_SIZE):
        # ssi_signo (u32), ssi_errno (s32), ssi_code (s32), ssi_pid (u32) open the structure.
        signo, _, code, sender = struct.unpack_from("=IiiI", data, offset)
        found.append((signo, code, sender))
    return found
