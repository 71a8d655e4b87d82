"""Names of running namespaces: `--unshare --name NAME` registers one, `--list` shows them, `--enter NAME` finds one.

Where. Root's names live in /run/pyinit, every other user's in
$XDG_RUNTIME_DIR/pyinit (systemd makes that directory per user, private and
on tmpfs, and empties it at logout); a user without XDG_RUNTIME_DIR cannot
name a namespace (125, one line). The directory is made mode 0700 and must be
the caller's own: a name is only ever seen by the user who gave it.

What. One small file per name, the name itself, written to a temporary file
and renamed over it, so a reader sees a whole entry or none:

    pyinit-name 1
    pid 41234                  the host PID of the namespace's PID 1 (0 while the launcher forks it)
    start-time 8812345         that process's start time (/proc/PID/stat field 22, clock ticks after boot)
    launcher 41233             the launcher's PID and start time
    launcher-start-time 8812340
    pid-namespace 4026531836   the inode of the PID namespace those numbers belong to (the launcher's)
    command                    then the command, its arguments separated by NUL bytes

An entry is live while a process with that PID and that start time runs, so
a PID that was reused is never taken for the namespace's PID 1. An entry
whose PID 1 is gone (the launcher was SIGKILLed: the kernel killed PID 1 with
it) is stale: --enter ignores it, and --list and every claim of a name
(--name) remove the caller's own stale entries, so none stays for ever. The
launcher removes its entry on every way out but SIGKILL. What is no entry
(a file of another format or owner, a directory, a FIFO, a symbolic link,
anything that cannot be read) is skipped, never fatal, and never removed.
Claims and removals hold flock(2) on the directory, so two launchers never
both take a name, and a launcher never removes an entry that is not its own.
Entries written from another PID namespace (a launcher nested in one)
cannot be checked from here: they are listed nowhere and their name is refused.

Which namespace a process is in (for --list's member count) comes from
proc.namespace, as for --enter and the sandbox's network.
"""

import errno
import os
import stat

from pyinit import log, proc
from pyinit.config import EXIT_USAGE

TYPE_CHECKING = False  # mypy reads the block below; at run time `typing` would cost start-up
if TYPE_CHECKING:
    from typing import Any

MAX_NAME = 64  # characters
ROOT_DIRECTORY = "/run/pyinit"
_FORMAT = b"pyinit-name 1"
_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class RegistryError(Exception):
    """A name that cannot be registered, listed or found: one line for the user, exit 125."""


def check_name(name: str) -> str:
    """`name` if it can name a namespace; ValueError saying why not.

    1 to 64 ASCII letters, digits, '.', '_' and '-', starting with a letter
    or digit (so neither '.', '..', a hidden file nor an option), and not
    all digits (`--enter 123` means PID 123).
    """
    if not 0 < len(name) <= MAX_NAME:
        raise ValueError("a name is 1 to %d characters long" % MAX_NAME)
    if not set(name) <= _NAME_CHARACTERS or name[0] in ".-_":
        raise ValueError("%r is not a name: use letters, digits, '.', '_' and '-', starting with a letter or digit"
                         % name)
    if name.isdigit():
        raise ValueError("%r is all digits, which --enter would take for a PID: add a letter" % name)
    return name


def directory() -> str:
    """Where the caller's names live: /run/pyinit for root, $XDG_RUNTIME_DIR/pyinit for anyone else."""
    if os.geteuid() == 0:
        return ROOT_DIRECTORY
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if not runtime.startswith("/"):
        raise RegistryError("XDG_RUNTIME_DIR is %s: a user's namespace names are kept in $XDG_RUNTIME_DIR/pyinit "
                            "(root's in %s); set it to a directory of yours"
                            % ("not set" if not runtime else "%r, not an absolute path" % runtime, ROOT_DIRECTORY))
    return os.path.join(runtime, "pyinit")


def _open_directory(create: bool) -> "int | None":
    """A descriptor of the caller's name directory, checked to be theirs; None if it does not exist and `create` is off."""
    path = directory()
    if create:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError as failure:
            raise RegistryError("cannot create %s for the namespace names: %s" % (path, failure.strerror)) from None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        if create:
            raise RegistryError("cannot open %s: it vanished" % path) from None
        return None
    except OSError as failure:
        raise RegistryError("cannot open %s: %s" % (path, failure.strerror)) from None
    info = os.fstat(fd)
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        os.close(fd)
        raise RegistryError("%s belongs to uid %d or others may write to it: it must be yours alone (mode 0700)"
                            % (path, info.st_uid))
    return fd


def _lock(fd: int) -> None:
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_EX)  # released when the descriptor is closed


# ------------------------------------------------------------------ entries


class Entry:
    """One registered name, as read from its file."""

    __slots__ = ("name", "pid", "start_time", "launcher", "launcher_start_time", "pid_namespace", "command", "owner")

    def __init__(self, name: str, fields: "dict[str, int]", command: "list[str]") -> None:
        self.name = name
        self.owner = os.geteuid()  # the uid that owns its file, once read from one
        self.pid = fields["pid"]
        self.start_time = fields["start-time"]
        self.launcher = fields["launcher"]
        self.launcher_start_time = fields["launcher-start-time"]
        self.pid_namespace = fields["pid-namespace"]
        self.command = command

    def encode(self) -> bytes:
        head = [_FORMAT]
        for key, value in (("pid", self.pid), ("start-time", self.start_time), ("launcher", self.launcher),
                           ("launcher-start-time", self.launcher_start_time), ("pid-namespace", self.pid_namespace)):
            head.append(b"%s %d" % (key.encode(), value))
        return b"\n".join(head) + b"\ncommand\n" + b"\0".join(os.fsencode(arg) for arg in self.command)

    @classmethod
    def decode(cls, name: str, data: bytes) -> "Entry | None":
        """The entry in `data`, or None when it is not one (a truncated or foreign file)."""
        head, separator, command = data.partition(b"\ncommand\n")
        lines = head.split(b"\n")
        if not separator or lines[0] != _FORMAT:
            return None
        try:
            fields = {key.decode(): int(value) for key, _, value in (line.partition(b" ") for line in lines[1:])}
            return cls(name, fields, [os.fsdecode(arg) for arg in command.split(b"\0")])
        except (KeyError, ValueError):
            return None

    def state(self, own_namespace: int) -> str:
        """'live', 'starting' (the launcher has not forked PID 1 yet), 'gone', or 'foreign' (another PID namespace's numbers)."""
        if self.pid_namespace != own_namespace:
            return "foreign"
        if self.pid == 0:
            return "starting" if _runs(self.launcher, self.launcher_start_time) else "gone"
        return "live" if _runs(self.pid, self.start_time) else "gone"


def _runs(pid: int, start_time: int) -> bool:
    """Whether the process `pid` started at `start_time` still runs (a zombie has ended)."""
    info = proc.stat(pid)
    return info is not None and info.start_time == start_time and info.state not in "ZX"


def _read_entry(fd: int, name: str) -> "Entry | None":
    """The entry of `name`; None when there is none, or what is there is no entry that can be read.

    O_NONBLOCK and O_NOFOLLOW: a FIFO, a device or a symbolic link put there
    neither hangs nor leads the reader elsewhere; only a regular file is read.
    """
    try:
        entry_fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
    except OSError as failure:
        if failure.errno != errno.ENOENT:
            log.debug("skipping %s among the names: %s", name, failure.strerror)
        return None
    try:
        info = os.fstat(entry_fd)
        entry = Entry.decode(name, proc.read_to_end(entry_fd)) if stat.S_ISREG(info.st_mode) else None
    except OSError as failure:
        log.debug("skipping %s among the names: %s", name, failure.strerror)
        return None
    finally:
        os.close(entry_fd)
    if entry is not None:
        entry.owner = info.st_uid
    return entry


def _remove_stale(fd: int, own_namespace: int) -> "list[Entry]":
    """Remove the caller's own entries whose namespace is gone; return the live ones. Under the directory's lock.

    Gone: its PID 1 (or, before the fork, its launcher) no longer runs with
    the start time recorded, as a SIGKILLed launcher leaves it. Another
    uid's entry, or another PID namespace's, is left alone.
    """
    live = []
    for name in sorted(name for name in os.listdir(fd) if not name.startswith(".")):  # dot files: being written
        entry = _read_entry(fd, name)
        if entry is None:
            continue
        state = entry.state(own_namespace)
        if state == "live":
            live.append(entry)
        elif state == "gone" and entry.owner == os.geteuid():
            try:
                os.unlink(name, dir_fd=fd)
            except OSError as failure:
                log.debug("cannot remove the stale entry of %s: %s", name, failure.strerror)
            else:
                log.debug("removed the stale entry of %s (PID %d is gone)", name, entry.pid or entry.launcher)
    return live


def _write_entry(fd: int, entry: Entry) -> None:
    """Write the entry to a temporary file, then rename it over the name: readers see all of it or nothing."""
    temporary = ".%s.%d.tmp" % (entry.name, os.getpid())
    try:
        entry_fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                           dir_fd=fd)
        try:
            data = entry.encode()
            while data:
                data = data[os.write(entry_fd, data):]
        finally:
            os.close(entry_fd)
        os.rename(temporary, entry.name, src_dir_fd=fd, dst_dir_fd=fd)
    except OSError as failure:
        try:
            os.unlink(temporary, dir_fd=fd)
        except OSError:
            pass
        raise RegistryError("cannot write the entry of %s in %s: %s" % (entry.name, directory(), failure.strerror)) from None


def _own_pid_namespace() -> int:
    if not proc.is_own_namespace():
        raise RegistryError("this process's /proc shows another PID namespace than its own, so PIDs cannot be "
                            "checked: mount a /proc of its own (as pyinit --unshare does)")
    return proc.namespace("self", "pid")[1]


# ------------------------------------------------------------------ the launcher's registration


class Registration:
    """The launcher's entry: claimed before the namespaces are made, completed once PID 1 exists, released at the end."""

    def __init__(self, name: str, command: "tuple[str, ...]") -> None:
        self.owner = os.getpid()
        self.released = False
        own_namespace = _own_pid_namespace()
        # The host's /proc, held open: once PID 1 has mounted the namespace's
        # own procfs on /proc (the launcher shares that mount namespace), the
        # path shows the namespace's PIDs and no longer the launcher's.
        self.proc_fd = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.fd = -1
        try:
            fd = _open_directory(create=True)
            assert fd is not None  # made if it was missing
            self.fd = fd
            launcher_start = _stat_through(self.proc_fd, "self").start_time
            self.entry = Entry(name, {"pid": 0, "start-time": 0, "launcher": self.owner,
                                      "launcher-start-time": launcher_start, "pid-namespace": own_namespace},
                               list(command))
            _lock(self.fd)
            try:
                existing = _read_entry(self.fd, name)
                if existing is not None:
                    _refuse_if_held(existing, own_namespace)
                _remove_stale(self.fd, own_namespace)
                _write_entry(self.fd, self.entry)
            finally:
                _unlock(self.fd)
        except BaseException:
            self._close()
            raise

    def started(self, init_pid: int) -> None:
        """PID 1 exists: write its PID and start time in (a failure is a warning: the namespace runs, unnamed)."""
        try:
            self.entry.start_time = _stat_through(self.proc_fd, str(init_pid)).start_time
            self.entry.pid = init_pid
            _lock(self.fd)
            try:
                _write_entry(self.fd, self.entry)
            finally:
                _unlock(self.fd)
        except (OSError, RegistryError) as failure:
            log.warning("cannot register the namespace as %s: %s", self.entry.name,
                        getattr(failure, "strerror", None) or failure)

    def leave(self) -> None:
        """In PID 1, just forked: close the launcher's descriptors, which no process inside may reach."""
        self.released = True
        self._close()

    def release(self) -> None:
        """Remove the entry if it is still ours; only in the launcher, and once."""
        if self.released or os.getpid() != self.owner:
            return  # PID 1, forked from the launcher, never removes it
        self.released = True
        try:
            _lock(self.fd)
            current = _read_entry(self.fd, self.entry.name)
            if current is not None and (current.launcher, current.launcher_start_time) == (
                    self.entry.launcher, self.entry.launcher_start_time):
                os.unlink(self.entry.name, dir_fd=self.fd)
        except (OSError, RegistryError) as failure:
            log.warning("cannot remove the entry of %s: %s", self.entry.name,
                        getattr(failure, "strerror", None) or failure)
        finally:
            try:
                _unlock(self.fd)
            except OSError:
                pass
            self._close()

    def _close(self) -> None:
        for fd in (self.fd, self.proc_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.proc_fd = -1


def _unlock(fd: int) -> None:
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)


def _stat_through(proc_fd: int, pid: str) -> proc.Stat:
    """/proc/PID/stat read through a descriptor of a procfs (the host's, whatever /proc shows now)."""
    fd = os.open("%s/stat" % pid, os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc_fd)
    try:
        return proc.Stat(0, proc.read_to_end(fd))
    finally:
        os.close(fd)


def _refuse_if_held(existing: Entry, own_namespace: int) -> None:
    state = existing.state(own_namespace)
    if state == "live":
        raise RegistryError("the name %s is taken by the running namespace of PID %d (see pyinit --list): "
                            "choose another" % (existing.name, existing.pid))
    if state == "starting":
        raise RegistryError("the name %s is being taken by launcher PID %d: choose another"
                            % (existing.name, existing.launcher))
    if state == "foreign":
        raise RegistryError("the name %s was registered from another PID namespace, which cannot be checked from "
                            "here: choose another, or remove %s if it is stale"
                            % (existing.name, os.path.join(directory(), existing.name)))


# ------------------------------------------------------------------ --enter and --list


def find(name: str) -> Entry:
    """The live entry of `name`; RegistryError saying why there is none."""
    own_namespace = _own_pid_namespace()
    fd = _open_directory(create=False)
    entry = None
    if fd is not None:
        try:
            entry = _read_entry(fd, name)
        finally:
            os.close(fd)
    if entry is None:
        raise RegistryError("no namespace is named %s (pyinit --list shows yours)" % name)
    state = entry.state(own_namespace)
    if state == "gone":
        raise RegistryError("the namespace %s is gone: its PID 1 (%d) has exited" % (name, entry.pid or entry.launcher))
    if state == "starting":
        raise RegistryError("the namespace %s is still starting: try again" % name)
    if state == "foreign":
        raise RegistryError("the namespace %s was registered from another PID namespace: enter it from there" % name)
    return entry


def live_entries() -> "list[Entry]":
    """The caller's live namespaces, by name; its stale entries are removed on the way."""
    own_namespace = _own_pid_namespace()
    fd = _open_directory(create=False)
    if fd is None:
        return []
    try:
        _lock(fd)
        return _remove_stale(fd, own_namespace)
    finally:
        os.close(fd)  # and the lock with it


def members(pid: int) -> int:
    """How many processes the PID namespace of `pid` (its PID 1) holds now, as `ps` inside would list them.

    PID 1 and its descendants (those of nested namespaces included, which
    are visible inside too), and every process in that same PID namespace
    whatever its parent (a command started by --enter has its parent
    outside). Processes we may not look at are not counted.
    """
    try:
        target = proc.namespace(pid, "pid")
    except OSError:
        return 0
    found = set(proc.descendants(pid))
    found.add(pid)
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) not in found:
            try:
                if proc.namespace(name, "pid") == target:
                    found.add(int(name))
            except OSError:
                pass
    return len(found)


def _uptime() -> float:
    text = proc.read("/proc/uptime") or b"0"
    return float(text.split()[0])


def _age(seconds: float) -> str:
    """As ps's etime: [[DD-]HH:]MM:SS."""
    whole = int(max(seconds, 0))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    text = "%02d:%02d" % (minutes, secs)
    if hours or days:
        text = "%02d:%s" % (hours, text)
    if days:
        text = "%d-%s" % (days, text)
    return text


def _printable(text: str) -> str:
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def describe(entries: "list[Entry]") -> "list[dict[str, Any]]":
    """What --list shows of each entry, with the age and the member count as they are now."""
    ticks = os.sysconf("SC_CLK_TCK")
    uptime = _uptime()
    return [{"name": entry.name, "pid": entry.pid, "launcher": entry.launcher,
             "age": round(max(uptime - entry.start_time / ticks, 0.0), 2), "procs": members(entry.pid),
             "command": entry.command} for entry in entries]


def show(as_json: bool) -> int:
    """`pyinit --list [--json]`: print the caller's live namespaces; return the exit code."""
    try:
        rows = describe(live_entries())
    except RegistryError as failure:
        log.error("%s", failure)
        return EXIT_USAGE
    except OSError as failure:
        log.error("cannot list the namespaces: %s", failure.strerror)
        return EXIT_USAGE
    if as_json:
        import json

        text = json.dumps(rows, indent=2) + "\n"
    else:
        table = [("NAME", "PID", "AGE", "PROCS", "COMMAND")]
        table += [(row["name"], str(row["pid"]), _age(row["age"]), str(row["procs"]),
                   _printable(" ".join(row["command"]))) for row in rows]
        widths = [max(len(line[column]) for line in table) for column in range(4)]
        text = "".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)) + "  " + line[4] + "\n"
                       for line in table)
    data = text.encode(errors="surrogateescape")
    try:
        while data:
            data = data[os.write(1, data):]
    except OSError as failure:
        if failure.errno != errno.EPIPE:
            log.error("cannot write the list: %s", failure.strerror)
        return EXIT_USAGE
    return 0
