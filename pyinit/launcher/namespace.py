"""The launcher: new namespaces, and the init running in them as PID 1.

`pyinit --unshare -- CMD` does what `unshare --fork --pid --mount-proc pyinit
-- CMD` does by hand, in one interpreter:

    launcher: block signals, unshare(2), fork ──────────────┐
      │ stays outside; forwards what it receives to the     │ child: PID 1 of the
      │ init; exits with the init's status                  │ new PID namespace,
      ▼                                                     ▼ runs init.run()

unshare(CLONE_NEWPID) does not move the caller: its next child is PID 1, and
that child must mount the new /proc (procfs shows the PID namespace of the
process that mounts it). Mount propagation is made private first, so neither
that mount nor any later one reaches the host.

With --bare there is no init: PID 1 execs the command itself, as a
container started without one runs it (see _exec_command), and the
launcher writes the exit report in the init's place.

With --net the network is the namespace's own too: `lo` alone, brought up
by the launcher (see _unshare). Otherwise this is isolation of the process
table, not a sandbox: the filesystem, network, cgroups and seccomp state are
shared with the host.
"""

import errno
import os

from pyinit import init, linux, log, proc, signals, spawn
from pyinit.config import EXIT_USAGE, Config

TYPE_CHECKING = False  # mypy reads the block below; relay.py is imported only with a pty, registry.py with a name
if TYPE_CHECKING:
    from typing import Callable, Optional

    from pyinit.launcher import registry, relay

    # Given the Config the namespaces were made with, and whether it runs in PID 1: the Config to go on with.
    Completion = Callable[[Config, bool], Config]

MAX_PID_NAMESPACE_DEPTH = 32  # the kernel's MAX_PID_NS_LEVEL
_api = signals.api
# The signals whose default action ends a process without a core dump: the launcher dies of these as its
# command did. (A core of the launcher would be noise; for SIGQUIT and the like it exits 128+N instead.)
_DIE_OF = frozenset({_api.SIGHUP, _api.SIGINT, _api.SIGPIPE, _api.SIGALRM, _api.SIGTERM, _api.SIGUSR1, _api.SIGUSR2,
                     *range(_api.SIGRTMIN, _api.SIGRTMAX + 1)})


class NamespaceError(Exception):
    """The namespaces (or the command's pty) could not be set up: one line for the user, exit 125."""


def launch(config: Config, complete: "Optional[Completion]" = None) -> int:
    """Create the namespaces, start the init in them, relay signals; return its exit code.

    `complete` is for the sandboxes' fork server (forkserver/server.py), which
    makes the namespaces ahead of a sandbox, before its command is known:
    each of the two processes calls it once the namespaces are ready (PID 1
    after its /proc is mounted), and goes on with the Config it returns,
    which must ask for the same namespaces (see made_before_the_command).
    Raising NamespaceError or OSError there makes pyinit exit 125.

    With --name the namespace is registered under it while it runs
    (registry.py): claimed before anything is made, so that a name in use
    is refused before the command runs, and removed on every way out but
    SIGKILL. Without it, registry.py is not even imported.
    """
    if config.name is None:
        return _launch(config, None, complete)
    from pyinit.launcher import registry

    try:
        registration = registry.Registration(config.name, config.command)
    except registry.RegistryError as failure:
        log.error("%s", failure)
        return EXIT_USAGE
    except OSError as failure:
        log.error("cannot register the name %s: %s", config.name, failure.strerror)
        return EXIT_USAGE
    try:
        return _launch(config, registration, complete)
    finally:
        registration.release()


def _launch(config: Config, registration: "registry.Registration | None", complete: "Optional[Completion]") -> int:
    # Blocked before the fork, so nothing sent to either side is lost or
    # acted on by default while the init gets going; the init inherits it.
    ignored = init.block_signals()
    parent = os.getppid()
    try:
        # Made before the fork: inside the namespace getppid() is 0, and the
        # end of this pipe is how the init learns that the launcher is gone
        # (see _be_pid1). The launcher holds the write end until it exits.
        launcher_alive, launcher_holds = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        # --bare: PID 1 writes to it when the command never ran; its exec closes it unwritten.
        not_started, never_ran = os.pipe2(os.O_CLOEXEC) if config.bare else (-1, -1)
    except OSError as failure:
        log.error("cannot make a pipe for the init: %s", failure.strerror)
        return EXIT_USAGE
    try:
        pty = open_pty(config.pty)
        _unshare(config)
        init_pid = os.fork()
    except NamespaceError as failure:
        log.error("%s", failure)
        return EXIT_USAGE
    except OSError as failure:
        log.error("cannot fork the init into the new namespace: %s", failure.strerror)
        return EXIT_USAGE
    if init_pid == 0:
        os.close(launcher_holds)
        if registration is not None:
            registration.leave()  # its descriptors (the host's /proc among them) stay outside
        code = _be_pid1(config, launcher_alive, ignored, pty, complete)
        if config.bare:  # _be_pid1 returns then only when the command never ran
            os.write(never_ran, b"!")
        os._exit(code)
    os.close(launcher_alive)
    if config.bare:
        os.close(never_ran)
    if complete is not None:
        try:
            config = complete(config, False)
        except (NamespaceError, OSError) as failure:
            log.error("%s", failure)
            return EXIT_USAGE  # the init dies of its parent-death signal
    log.info("started the init as PID %d (PID 1 of its namespace)", init_pid)
    if registration is not None:
        registration.started(init_pid)
    if pty is not None:
        code = pty.relay(init_pid, parent, config.pdeathsig)
    else:
        # The init rewrites, remaps, reaps and keeps the shutdown timers; the
        # launcher relays each signal to it as it came, and exits with its code.
        # To the init alone: until it has called setsid() it leads no group.
        if config.bare:
            child, code = _supervise_command(config, init_pid, parent, not_started)
        else:
            child = init.Child(init_pid, group=False)
            code = init.supervise(child, pdeathsig=config.pdeathsig, parent=parent)
        if code - 128 in child.received:
            if registration is not None:
                registration.release()  # die_of does not return
            die_of(code - 128)
    log.flush()  # the launcher's own dropped lines, announced before it exits as the init's are
    return code


def made_before_the_command(config: Config) -> "tuple[object, ...]":
    """What of `config` the launcher uses before `complete` is called: two Configs equal here make the same namespaces."""
    return (config.unshare, config.user_namespace, config.mount_proc, config.hostname, config.ipc, config.net,
            config.pty, config.name, config.bare)


def die_of(signo: int) -> None:
    """The signal we relayed ended the command (the init, as PID 1, exits 128+N): die of it too, as util-linux unshare does.

    A calling shell then sees a death by the signal, not an exit code, and
    stops its loop on Ctrl-C; its prompt starts on a line of its own. Only
    for the signals in _DIE_OF.
    """
    if signo not in _DIE_OF:
        return
    log.flush()
    _api.signal(signo, _api.SIG_DFL)
    os.kill(os.getpid(), signo)
    _api.pthread_sigmask(_api.SIG_UNBLOCK, {signo})  # delivered here, and the launcher ends


def open_pty(wanted: "bool | None") -> "relay.Pty | None":
    """The command's own pty when asked for; by default when stdin and stdout are terminals (--enter's too).

    Not by default in a pipeline (`pyinit --unshare -- git log | less`):
    the relay reads every key from the terminal while the command runs,
    and there another program reads it too. Opened before the namespaces,
    from the host's /dev/ptmx; the launcher keeps the master side, the init
    the slave (relay.py says why and how).
    """
    if wanted is False or (wanted is None and not (os.isatty(0) and os.isatty(1))):
        return None
    from pyinit.launcher import relay

    try:
        return relay.Pty()
    except OSError as failure:
        if wanted:
            raise NamespaceError("cannot open a pseudo-terminal for the command: %s" % failure.strerror) from None
        log.warning("cannot open a pseudo-terminal (%s): the command runs on yours, without job control",
                    failure.strerror)
        return None


def _unshare(config: Config) -> None:
    flags = linux.CLONE_NEWPID | linux.CLONE_NEWNS
    if config.hostname is not None:
        flags |= linux.CLONE_NEWUTS
    if config.ipc:
        flags |= linux.CLONE_NEWIPC
    if config.net:
        flags |= linux.CLONE_NEWNET
    uid, gid = os.geteuid(), os.getegid()
    # Without CAP_SYS_ADMIN only a user namespace gives the right to make
    # the others; it is created first, and owns the ones made with it.
    with_user = config.user_namespace or uid != 0
    if with_user:
        flags |= linux.CLONE_NEWUSER
    try:
        linux.unshare(flags)
    except OSError as failure:
        raise NamespaceError(_explain_unshare(failure, with_user)) from None
    if with_user:
        _map_to_root(uid, gid)
    if config.net:
        # Unlike CLONE_NEWPID, CLONE_NEWNET moves the caller at once: the
        # launcher is in the new network already, with the capabilities the
        # user namespace (when there is one) gives it there. So lo comes up
        # here, before the fork: the init and the command never see it down,
        # a failure is reported before anything runs inside (like a refused
        # unshare), and the init's path stays free of the socket plumbing.
        try:
            linux.bring_up_loopback()
        except OSError as failure:
            problem = "cannot bring up the loopback interface lo in the new network namespace: %s" % failure.strerror
            if failure.errno == errno.EPERM and not with_user:
                problem += "; that needs CAP_NET_ADMIN, which this process lacks: add --user"
            raise NamespaceError(problem) from None
    log.debug("unshared namespaces (flags %#x)", flags)


def _map_to_root(uid: int, gid: int) -> None:
    """Map our uid and gid to 0 inside, as `unshare -r` does.

    An unprivileged process may write its gid_map only after denying
    setgroups(2), which could otherwise drop groups that deny it access.
    """
    for path, text in (("/proc/self/setgroups", "deny"), ("/proc/self/uid_map", "0 %d 1" % uid),
                       ("/proc/self/gid_map", "0 %d 1" % gid)):
        try:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)
        except OSError as failure:
            if path.endswith("setgroups") and failure.errno == errno.ENOENT:
                continue  # kernels before 3.19 have no such file and need no denial
            raise NamespaceError("cannot write %s in the new user namespace: %s" % (path, failure.strerror)) from None


def _be_pid1(config: Config, launcher_alive: int, ignored: "frozenset[int]", pty: "relay.Pty | None",
             complete: "Optional[Completion]") -> int:
    """In the fork's child, PID 1: bind our life to the launcher, set up, run the init.

    The launcher may die before PR_SET_PDEATHSIG is armed, and then the
    signal never comes. `launcher_alive` is the read end of a pipe whose
    only write end the launcher holds: the kernel closes a dying process's
    files before it re-parents its children (exit_files, then exit_notify),
    so end-of-file after arming means the launcher is gone or going, and a
    launcher still there when we read will send the signal when it goes.
    """
    link = None
    try:
        linux.set_parent_death_signal(signals.SIGKILL)
        if _launcher_gone(launcher_alive):
            return EXIT_USAGE  # the launcher died before the signal was armed: nobody is waiting
        os.close(launcher_alive)
        # A session of our own: the user's terminal's signals (Ctrl-C) reach
        # the launcher, which relays them once, instead of reaching both of
        # us. With a pty, the pty is this session's controlling terminal.
        os.setsid()
        if pty is not None:
            link = pty.in_init()
        _mount_private_proc(config.mount_proc)
        if config.hostname is not None:
            linux.sethostname(config.hostname)
        if complete is not None:
            config = complete(config, True)
    except NamespaceError as failure:
        log.error("%s", failure)
        return EXIT_USAGE
    except OSError as failure:
        log.error("cannot set up the namespace: %s", failure.strerror)
        return EXIT_USAGE
    if config.bare:
        return _exec_command(config, ignored)
    # The launcher, not the init, owns -p: its own parent is the one meant.
    return init.run(config.replace(pdeathsig=0), ignored, link)


def _exec_command(config: Config, ignored: "frozenset[int]") -> int:
    """--bare, in PID 1: become the command, with the signal state the init gives its child; else the exit code.

    The command is then PID 1 as in a container without an init: the kernel
    drops every signal whose action is the default that is sent to it, and
    the orphans of the namespace are its to reap. Its parent-death signal
    (SIGKILL, armed in _be_pid1) survives the exec: it still dies with the
    launcher. The launcher writes the exit report: the command must not
    hold the report's pipe.
    """
    report = config.exit_report
    if report is not None and report.startswith("fd:") and int(report[3:]) > 2:
        try:
            os.close(int(report[3:]))
        except OSError:  # not open: the launcher's write says so
            pass
    failure = spawn.become(list(config.command), ignored)
    log.error("%s", failure)
    return failure.exit_code


def _supervise_command(config: Config, pid: int, parent: int, not_started: int) -> "tuple[init.Child, int]":
    """--bare, in the launcher: relay signals to the command (PID 1), reap it, and write the exit report for it.

    The launcher does what a container runtime does: each signal it gets
    goes to PID 1 (after --rewrite), SIGKILL follows --grace, and the exit
    status is PID 1's. Its report has the exit status and moment; no
    leftovers, ever: the kernel SIGKILLs every other member when PID 1
    exits, and PID 1 cannot be reaped before they are all gone. (What they
    were, and the zombies PID 1 left, only a watch from outside sees:
    pyinit-check --bare, check/bare.py.)
    """
    from pyinit import shutdown
    from pyinit.report import Report

    report = Report(config.command)
    policy = shutdown.Policy(config.grace, config.term_delay, None, report)
    child = init.Child(pid, group=False, rewrite=config.rewrite, remap_exit=config.remap_exit)
    code = init.supervise(child, policy, pdeathsig=config.pdeathsig, parent=parent)
    report.mark("child_exit")
    if not proc.read_to_end(not_started):  # end-of-file: the exec closed it, the command ran
        report.child_pid, report.child_status = 1, child.status
    os.close(not_started)
    if config.exit_report:
        report.write(config.exit_report, code)
    return child, code


def _launcher_gone(launcher_alive: int) -> bool:
    """End-of-file on the launcher's pipe (it never writes to it): every write end is closed."""
    try:
        return os.read(launcher_alive, 1) == b""
    except BlockingIOError:
        return False


def _mount_private_proc(mount_proc: bool) -> None:
    try:
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
    except OSError as failure:
        raise NamespaceError("cannot make the mounts private: %s" % failure.strerror) from None
    if not mount_proc:
        return
    try:
        linux.mount("proc", "/proc", "proc", linux.MS_NOSUID | linux.MS_NODEV | linux.MS_NOEXEC)
    except OSError as failure:
        raise NamespaceError(
            "cannot mount a fresh /proc: %s; a container's /proc is often partly masked, "
            "which forbids it: use --no-mount-proc" % failure.strerror
        ) from None


def _explain_unshare(failure: OSError, with_user: bool) -> str:
    """What went wrong with unshare(2), and what the user can do about it."""
    problem = "cannot create the namespaces: %s" % failure.strerror
    if failure.errno in (errno.EPERM, errno.EACCES) and with_user:
        return problem + (
            "; unprivileged user namespaces look disabled: check the sysctls kernel.unprivileged_userns_clone "
            "and kernel.apparmor_restrict_unprivileged_userns, or run as root"
        )
    if failure.errno == errno.EPERM:
        return problem + "; creating namespaces needs CAP_SYS_ADMIN, which this process lacks: add --user"
    if failure.errno in (errno.ENOSPC, errno.EUSERS):
        return problem + (
            "; namespaces nest at most %d deep, or the sysctl user.max_pid_namespaces, user.max_net_namespaces "
            "or user.max_user_namespaces is used up (0 disables them)" % MAX_PID_NAMESPACE_DEPTH
        )
    if failure.errno == errno.EINVAL:
        return problem + "; this kernel lacks a namespace type asked for (CONFIG_PID_NS, CONFIG_USER_NS, CONFIG_NET_NS, ...)"
    return problem

