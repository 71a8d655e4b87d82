"""`pyinit --enter NAME|PID -- COMMAND`: run COMMAND inside the namespaces of a running PID 1, as a member.

    pyinit --enter: find the PID 1 (by name: registry.py), join its
      │ namespaces with one setns(2) on a pidfd, take its root and working
      │ directory; stays outside its PID namespace, forwards what it
      │ receives, exits with the command's status
      └─ fork ─ COMMAND: a member of the PID namespace (`ps` inside shows
                it, its parent outside shows as 0); its orphans go to that
                PID 1, which reaps them

What is joined, as `nsenter --all --target PID -r -w` would: each of user,
mount, pid, UTS, IPC, network, cgroup and time namespaces of the target that
differs from ours (/proc/PID/ns/KIND against /proc/self/ns/KIND; setns(2)
refuses to join the user namespace we are in), in one call on a pidfd of
the target, which the kernel applies user first; then its root directory
(chroot) and its working directory (/ for pyinit's init, which leaves its
own). Where a user namespace was joined, the credentials become uid and gid
0 in it, as nsenter's: the user who made the namespace (the supplementary
groups are dropped where setgroups(2) is allowed there). This process joins
too (setns(CLONE_NEWPID) moves only children), so what it does afterwards
is done inside: that is why it opens a pty, if any, before.

The target must be the PID 1 of a PID namespace (NSpid ends in 1), a
launcher's or any other (a container's): an entered process is only reaped
if its namespace has an init. It is held by a pidfd from the first look, so
a PID reused meanwhile is never entered, and a name's PID 1 must have the
start time its entry records.

Nothing in between is a child subreaper (neither this process, outside, nor
the pty's session leader inside), so the kernel re-parents the command's
orphans to the namespace's PID 1. When that PID 1 exits, the kernel kills
every member, the command included: this process then exits 137.

In a terminal (by default when stdin and stdout are terminals; --pty,
--no-pty) the command gets a pty of its own, as under the launcher: a
forked member of the namespace leads the pty's session and supervises the
command as the init does (init.supervise, without becoming a subreaper),
and this process relays the pty (relay.Pty), the window size and the outer
job control.
"""

import errno
import os

from pyinit import init, linux, log, proc, signals, terminal
from pyinit.launcher import namespace
from pyinit.config import EXIT_USAGE, Config
from pyinit.spawn import SpawnError, spawn

TYPE_CHECKING = False  # mypy reads the block below; relay.py is imported only with a pty
if TYPE_CHECKING:
    from pyinit.launcher import relay

# (our /proc/self/ns entry, the target's /proc/PID/ns entry, the setns flag). Ours is what our children
# get where the two differ (pid, time): the command is the one that must be in the target's.
_KINDS = (("user", "user", linux.CLONE_NEWUSER), ("mnt", "mnt", linux.CLONE_NEWNS),
          ("pid_for_children", "pid", linux.CLONE_NEWPID), ("uts", "uts", linux.CLONE_NEWUTS),
          ("ipc", "ipc", linux.CLONE_NEWIPC), ("net", "net", linux.CLONE_NEWNET),
          ("cgroup", "cgroup", linux.CLONE_NEWCGROUP), ("time_for_children", "time", linux.CLONE_NEWTIME))


class EnterError(Exception):
    """The namespace cannot be entered: one line for the user, exit 125."""


class Target:
    """The PID 1 to enter, held by a pidfd, and what joining it takes."""

    def __init__(self, pid: int, what: str, start_time: "int | None") -> None:
        self.pid = pid
        self.what = what  # "PID 123" or "the namespace NAME", for messages
        self.pidfd = -1
        self.root_fd = -1
        self.cwd_fd = -1
        self.flags = 0
        self._hold(start_time)

    def _hold(self, start_time: "int | None") -> None:
        if not proc.is_own_namespace():
            raise EnterError("this process's /proc shows another PID namespace than its own, so PID %d cannot be "
                             "found: mount a /proc of its own" % self.pid)
        try:
            self.pidfd = linux.pidfd_open(self.pid)
        except ProcessLookupError:
            raise self._gone() from None
        except OSError as failure:
            raise EnterError("cannot hold %s: pidfd_open: %s" % (self.what, failure.strerror)) from None
        before = proc.stat(self.pid)
        if before is None or (start_time is not None and before.start_time != start_time):
            raise self._gone()
        nspid = proc.status(self.pid).get("NSpid", "").split()
        if nspid[-1:] != ["1"]:
            raise EnterError("PID %d (%s) is not the PID 1 of a PID namespace (its PIDs, outermost first: %s); "
                             "give a namespace's PID 1, as pyinit --list shows"
                             % (self.pid, before.name, " ".join(nspid) or "none"))
        for ours, theirs, flag in _KINDS:
            if self._differs(ours, theirs):
                self.flags |= flag
        self.root_fd = self._open("root")
        self.cwd_fd = self._open("cwd")
        after = proc.stat(self.pid)
        if after is None or after.start_time != before.start_time or linux.pidfd_has_exited(self.pidfd):
            raise self._gone()

    def _differs(self, ours: str, theirs: str) -> bool:
        try:
            return proc.namespace(self.pid, theirs) != proc.namespace("self", ours)
        except FileNotFoundError:
            if linux.pidfd_has_exited(self.pidfd):
                raise self._gone() from None
            return False  # a kind this kernel lacks
        except PermissionError:
            raise self._refused("cannot look at the namespaces") from None

    def _open(self, link: str) -> int:
        try:
            return os.open("/proc/%d/%s" % (self.pid, link), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except PermissionError:
            raise self._refused("cannot open the %s directory" % link) from None
        except OSError as failure:
            if linux.pidfd_has_exited(self.pidfd):
                raise self._gone() from None
            raise EnterError("cannot open the %s directory of %s: %s" % (link, self.what, failure.strerror)) from None

    def _gone(self) -> EnterError:
        if self.what.startswith("PID"):
            return EnterError("no process has PID %d" % self.pid)
        return EnterError("%s is gone: its PID 1 (%d) has exited" % (self.what, self.pid))

    def _refused(self, what: str) -> EnterError:
        label = self.what if self.what.startswith("PID") else "%s (PID %d)" % (self.what, self.pid)
        return EnterError("permission denied: %s of %s, which is another user's: run as its owner or as root"
                          % (what, label))

    def join(self) -> None:
        """Join the namespaces, then the root and working directory; uid and gid 0 where a user namespace was joined."""
        if self.flags:
            try:
                linux.setns(self.pidfd, self.flags)
            except OSError as failure:
                if failure.errno == errno.ESRCH or linux.pidfd_has_exited(self.pidfd):
                    raise self._gone() from None
                if failure.errno == errno.EPERM:
                    raise self._refused("cannot join the namespaces") from None
                raise EnterError("cannot join the namespaces of %s: setns: %s%s" % (
                    self.what, failure.strerror,
                    " (setns on a pidfd needs Linux 5.8)" if failure.errno == errno.EINVAL else "")) from None
        try:
            root = os.fstat(self.root_fd)
            here = os.stat("/")
            if (root.st_dev, root.st_ino) != (here.st_dev, here.st_ino):
                os.fchdir(self.root_fd)
                os.chroot(".")
            os.fchdir(self.cwd_fd)
        except OSError as failure:
            raise EnterError("cannot take the root and working directory of %s: %s" % (self.what, failure.strerror)) from None
        finally:
            os.close(self.root_fd)
            os.close(self.cwd_fd)
        if self.flags & linux.CLONE_NEWUSER:
            _become_root_inside()
        log.debug("joined the namespaces of PID %d (setns flags %#x)", self.pid, self.flags)

    def gone(self) -> bool:
        return linux.pidfd_has_exited(self.pidfd)

    def ending(self) -> bool:
        """Whether PID 1 has exited or is exiting (the namespace is over), after a member was SIGKILLed.

        An exiting PID 1 first disables PID allocation in its namespace,
        SIGKILLs every member, and waits until each has been reaped (the
        command by us), before its own exit shows on the pidfd: so a fork
        into the namespace (we joined it) answers sooner. It costs a fork,
        only on this path.
        """
        if self.gone():
            return True
        try:
            probe = os.fork()
        except OSError as failure:
            return failure.errno == errno.ENOMEM  # what fork(2) says in a PID namespace whose init has gone
        if probe == 0:
            os._exit(0)
        os.waitpid(probe, 0)
        return False


def _become_root_inside() -> None:
    """uid and gid 0 of the user namespace just joined, as nsenter does (0 unmapped there: the credentials stay)."""
    try:
        os.setgroups([])
    except OSError:
        pass  # setgroups is denied in a namespace an unprivileged user made: nothing to drop there
    try:
        os.setgid(0)
        os.setuid(0)
    except OSError as failure:
        log.debug("keeping our credentials in the user namespace: %s", failure.strerror)


def _take_environment(entries: "list[bytes]") -> None:
    """Make os.environ the environment we were started with, which spawn.py gives the command.

    spawn.py reads it from /proc/self/environ, which the namespace's /proc
    does not show us once we have joined its mount namespace; it then takes
    os.environ, to which Python's start-up may have added (LC_CTYPE, PEP 538).
    """
    wanted: "dict[bytes, bytes]" = {}
    for entry in entries:
        name, equals, value = entry.partition(b"=")
        if equals and name:
            wanted.setdefault(name, value)  # getenv(3) finds the first of duplicates
    for name in [name for name in os.environb if name not in wanted]:
        del os.environb[name]
    os.environb.update(wanted)


def find(spec: str) -> Target:
    """The PID 1 that `spec` names: a PID (digits), or a name registered by a launcher."""
    if spec.isdigit():
        return Target(int(spec), "PID %s" % spec, None)
    from pyinit.launcher import registry

    try:
        entry = registry.find(spec)
    except registry.RegistryError as failure:
        raise EnterError(str(failure)) from None
    return Target(entry.pid, "the namespace %s" % spec, entry.start_time)


def enter(config: Config) -> int:
    """Run config.command inside the namespaces of config.enter; return the exit code to exit with."""
    assert config.enter is not None
    ignored = init.block_signals()
    parent = os.getppid()
    try:
        target = find(config.enter)
        pty = namespace.open_pty(config.pty)  # the user's side's /dev/ptmx: before the mount namespace changes
        environment = proc.environ()  # the /proc that shows us: inside, /proc/self is another PID namespace's
        target.join()
        if environment is not None:
            _take_environment(environment)
    except (EnterError, namespace.NamespaceError) as failure:
        log.error("%s", failure)
        return EXIT_USAGE
    except OSError as failure:
        log.error("cannot enter: %s", failure.strerror)
        return EXIT_USAGE
    if pty is not None:
        code = _run_on_pty(config, target, pty, ignored, parent)
    else:
        code = _run(config, target, ignored, parent)
    if code == 128 + signals.SIGKILL and target.ending():
        log.warning("the namespace ended (its PID 1 exited), and the kernel killed the command with it")
    log.flush()
    return code


def _run(config: Config, target: Target, ignored: "frozenset[int]", parent: int) -> int:
    """The command as our child, in the terminal's place the init would give it; supervised from outside."""
    placement = terminal.prepare(config.single_child)
    try:
        pid = spawn(list(config.command), placement, ignored)
    except (SpawnError, OSError) as failure:
        return _not_started(failure, target)
    log.info("started %s as PID %d in %s", config.command[0], pid, target.what)
    child = init.Child(pid, group=not placement.shares_group and not config.single_child, placement=placement,
                       rewrite=init.rewrite_table(config.rewrite, placement), remap_exit=config.remap_exit)
    code = init.supervise(child, pdeathsig=config.pdeathsig, parent=parent)
    terminal.take_back_foreground(placement, pid)
    if code - 128 in child.received:
        namespace.die_of(code - 128)  # the signal we relayed ended it: die of it too, as the launcher does
    return code


def _not_started(failure: Exception, target: Target) -> int:
    if target.gone():
        log.error("%s ended while entering it: its PID 1 (%d) has exited", target.what, target.pid)
        return EXIT_USAGE
    log.error("%s", failure)
    return failure.exit_code if isinstance(failure, SpawnError) else EXIT_USAGE




def _run_on_pty(config: Config, target: Target, pty: "relay.Pty", ignored: "frozenset[int]", parent: int) -> int:
    """Fork the pty's session leader into the namespace, and relay the pty until it has exited."""
    try:
        us = linux.pidfd_open(os.getpid())
        leader = os.fork()
    except OSError as failure:
        return _not_started(SpawnError(EXIT_USAGE, "cannot start the session leader of the command's pty: %s"
                                       % failure.strerror), target)
    if leader == 0:
        os._exit(_lead_session(config, pty, ignored, us))
    os.close(us)
    log.info("started the pty's session leader as PID %d in %s", leader, target.what)
    return pty.relay(leader, parent, config.pdeathsig)


def _lead_session(config: Config, pty: "relay.Pty", ignored: "frozenset[int]", enterer: int) -> int:
    """In the forked member: lead the pty's session, start the command as its foreground job, supervise it.

    What the launcher's init does on its pty, without being a subreaper, a
    PID 1 or mounting anything: the command's orphans go to the namespace's
    PID 1. Its life is bound to ours (`enterer`, a pidfd of this process's
    parent, checked after arming the parent-death signal).
    """
    try:
        linux.set_parent_death_signal(signals.SIGKILL)
        if linux.pidfd_has_exited(enterer):
            return EXIT_USAGE
        os.close(enterer)
        os.setsid()
        link = pty.in_init()
    except OSError as failure:
        log.error("cannot set up the command's terminal: %s", failure.strerror)
        return EXIT_USAGE
    placement = terminal.prepare(config.single_child, link)
    try:
        pid = spawn(list(config.command), placement, ignored)
    except (SpawnError, OSError) as failure:
        log.error("%s", failure)
        return failure.exit_code if isinstance(failure, SpawnError) else EXIT_USAGE
    child = init.Child(pid, group=not config.single_child, placement=placement,
                       rewrite=init.rewrite_table(config.rewrite, placement), remap_exit=config.remap_exit)
    code = init.supervise(child)
    log.flush()
    return code
