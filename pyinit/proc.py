"""The one reader of /proc: process trees, stat, status, command lines, the environment.

Every function reads the /proc it is given (the init reads its own
namespace's, the test-side API the host's) and treats a process that
vanished while being read as absent, never as an error: processes come and
go between any two reads. What it does not treat as absent is a /proc that
could not be asked: no descriptor left, no memory (NO_RESOURCES). That
raises OSError, so that a caller never takes "cannot look" for "nothing
there" (a clean verdict it could not check). This module imports nothing
of pyinit's.
"""

import errno
import io
import os

# The errors that say nothing about the process, only that we could not look.
NO_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM})


def read(path: str) -> "bytes | None":
    """The whole file, or None when it (or its process) is gone.

    Read with os.read until end-of-file: /proc files have no size to ask
    for, and open() would wrap the descriptor in two buffered objects and
    make four more system calls (fstat, an ioctl, two lseeks) per file. The
    descriptor is held by a raw FileIO (one fstat more), which owns it from
    the moment it is opened: an exception raised just after (a Ctrl-C in
    the test side's caller) still closes it, where a bare number would leak.
    """
    try:
        file = io.FileIO(path)
    except OSError as failure:
        _raise_if_ours(failure)
        return None
    with file:
        try:
            return read_to_end(file.fileno())
        except OSError as failure:
            _raise_if_ours(failure)
            return None


def _raise_if_ours(failure: OSError) -> None:
    """A failed read means the process is gone, unless the failure is ours (NO_RESOURCES): then it raises."""
    if failure.errno in NO_RESOURCES:
        raise failure


def read_to_end(fd: int) -> bytes:
    """Everything `fd` gives until end-of-file (spawn.py reads its exec-failure pipe with it too)."""
    chunks: "list[bytes]" = []
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def children(pid: int, proc: str = "/proc") -> "list[int]":
    """The children of every thread of `pid` (/proc/PID/task/TID/children); [] when it is gone."""
    try:
        threads = os.listdir("%s/%d/task" % (proc, pid))
    except OSError as failure:
        _raise_if_ours(failure)
        return []
    found: "list[int]" = []
    for thread in threads:
        listing = read("%s/%d/task/%s/children" % (proc, pid, thread))
        if listing:
            found += [int(child) for child in listing.split()]
    return found


def descendants(pid: int, proc: str = "/proc") -> "list[int]":
    """Every process below `pid`, parents before their children."""
    found: "list[int]" = []
    parents = [pid]
    while parents:
        below = children(parents.pop(0), proc)
        found += below
        parents += below
    return found


class Stat:
    """The fields of /proc/PID/stat that pyinit uses (proc(5) names them)."""

    __slots__ = ("pid", "name", "state", "ppid", "pgid", "sid", "start_time")

    def __init__(self, pid: int, text: bytes) -> None:
        # The name is in parentheses and may itself hold spaces and ')'.
        head, _, tail = text.rpartition(b")")
        fields = tail.split()
        self.pid = pid
        self.name = head.partition(b"(")[2].decode(errors="replace")
        self.state = fields[0].decode()
        self.ppid, self.pgid, self.sid = int(fields[1]), int(fields[2]), int(fields[3])
        self.start_time = int(fields[19])  # clock ticks after boot: tells a reused PID apart


def stat(pid: int, proc: str = "/proc") -> "Stat | None":
    """/proc/PID/stat parsed, or None when the process is gone (reaped).

    The state is the process's, not its main thread's: a main thread that
    called pthread_exit() shows Z while the other threads run on, and then
    the state of a running thread is taken. Only a process whose every
    thread has exited is a zombie.
    """
    text = read("%s/%d/stat" % (proc, pid))
    if text is None:
        return None
    info = Stat(pid, text)
    if info.state == "Z":
        info.state = _live_thread_state(pid, proc) or "Z"
    return info


def _live_thread_state(pid: int, proc: str) -> "str | None":
    """The state of a thread of `pid` other than its (exited) main thread, or None when there is none."""
    try:
        threads = os.listdir("%s/%d/task" % (proc, pid))
    except OSError as failure:
        _raise_if_ours(failure)
        return None
    for thread in threads:
        text = read("%s/%d/task/%s/stat" % (proc, pid, thread)) if thread != str(pid) else None
        if text is not None:
            state = Stat(pid, text).state
            if state not in "ZX":
                return state
    return None


def status(pid: int, proc: str = "/proc") -> "dict[str, str]":
    """/proc/PID/status as {'NSpid': '4711\\t1', ...}; {} when the process is gone."""
    text = read("%s/%d/status" % (proc, pid))
    if text is None:
        return {}
    fields = {}
    for line in text.decode(errors="replace").splitlines():
        name, colon, value = line.partition(":")
        if colon:
            fields[name] = value.strip()
    return fields


def cmdline(pid: int, proc: str = "/proc") -> "list[str]":
    """The process's argv; [] for a zombie, a kernel thread, or one that is gone."""
    text = read("%s/%d/cmdline" % (proc, pid))
    return [os.fsdecode(arg) for arg in text.split(b"\0")[:-1]] if text else []


def environ(pid: "int | str" = "self", proc: str = "/proc") -> "list[bytes] | None":
    """The environment the process was started with (NAME=VALUE entries), or None where /proc cannot tell."""
    text = read("%s/%s/environ" % (proc, pid))
    return None if text is None else [entry for entry in text.split(b"\0") if entry]


def namespace(pid: "int | str", kind: str, proc: str = "/proc") -> "tuple[int, int]":
    """(device, inode) of the namespace of `kind` ('pid', 'net', 'user', 'pid_for_children'...) that `pid` is in.

    Two processes are in the same namespace when these are equal. Raises
    OSError: FileNotFoundError when the process is gone or the kernel lacks
    the kind, PermissionError when it is not ours to look at (ptrace rules).
    """
    info = os.stat("%s/%s/ns/%s" % (proc, pid, kind))
    return info.st_dev, info.st_ino


def namespaces(pid: "int | str", kinds: "tuple[str, ...]", proc: str = "/proc") -> "list[str]":
    """The namespaces of each of `kinds` that `pid` ("thread-self": the calling thread) is in, as their links say
    ("net:[4026531840]"; "" for a kind this kernel lacks): equal lists, the same namespaces.

    One open of the ns directory, then a readlink relative to it per kind:
    half the cost of a stat of each whole path. OSError when the process is
    gone or not ours to look at. The directory's descriptor is a bare number
    until the try: a caller whose handlers raise (a Ctrl-C) holds signals.
    """
    directory = os.open("%s/%s/ns" % (proc, pid), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        links = []
        for kind in kinds:
            try:
                links.append(os.readlink(kind, dir_fd=directory))
            except FileNotFoundError:
                links.append("")
        return links
    finally:
        os.close(directory)


def is_own_namespace(proc: str = "/proc") -> bool:
    """Whether `proc` is the procfs of our own PID namespace: only then are its PIDs ours to signal.

    Not so under `unshare --pid` without --mount-proc, where /proc still
    shows the namespace above.
    """
    try:
        return int(os.readlink(proc + "/self")) == os.getpid()
    except (OSError, ValueError):
        return False


TCP_LISTEN = "0A"  # the `st` column of /proc/net/tcp for a listening socket (include/net/tcp_states.h)


def listening_sockets(pid: int, port: int, proc: str = "/proc") -> "list[tuple[str, int]]":
    """TCP sockets listening on `port` in the network namespace of `pid`: (local address, socket inode).

    The address is as /proc/net/tcp and tcp6 give it (hexadecimal, in the
    kernel's byte order; see local_address below). Every socket of the
    namespace is listed, whoever holds it: match the inodes with
    socket_inodes() to find the holder.
    """
    found = []
    for table in ("tcp", "tcp6"):
        text = read("%s/%d/net/%s" % (proc, pid, table))
        for line in (text or b"").decode().splitlines()[1:]:
            fields = line.split()
            address, _, hex_port = fields[1].partition(":")
            if fields[3] == TCP_LISTEN and int(hex_port, 16) == port:
                found.append((address, int(fields[9])))
    return found


def local_address(address: str) -> str:
    """A /proc/net/tcp{,6} address as text ("0100007F" -> "127.0.0.1"): 32-bit words in the host's byte order."""
    import ipaddress
    import sys

    raw = bytes.fromhex(address)
    words = [raw[i:i + 4] for i in range(0, len(raw), 4)]
    if sys.byteorder == "little":
        words = [word[::-1] for word in words]
    return str(ipaddress.ip_address(b"".join(words)))


def socket_inodes(pid: int, proc: str = "/proc") -> "set[int]":
    """The inodes of the sockets `pid` holds open (its /proc/PID/fd links `socket:[N]`); empty when it is gone."""
    directory = "%s/%d/fd" % (proc, pid)
    try:
        descriptors = os.listdir(directory)
    except OSError as failure:
        _raise_if_ours(failure)
        return set()
    inodes = set()
    for fd in descriptors:
        try:
            target = os.readlink("%s/%s" % (directory, fd))
        except OSError as failure:
            _raise_if_ours(failure)
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes
