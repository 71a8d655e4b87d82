"""The PID-1 loop: spawn the child, wait for signals, forward, reap, exit.

Every signal is blocked and taken synchronously with sigwaitinfo(2), so no
Python handler ever runs between two bytecodes and nothing wakes the init up
while nothing happens. Blocking is also what lets PID 1 of a namespace
receive signals at all: the kernel discards a signal sent to a namespace's
init whose disposition is the default, but never one that is blocked.

The loop's state is the supervised `Child` (its `status` is None until the
reaper has collected its exit) and, when there is one, the shutdown
`Policy`'s deadlines. The reaper stores the child's status the moment
waitpid(2) returns it, so nothing that fails afterwards can lose it: the
loop runs until that status is there, and every way out of `run`, the drain
included, ends with the exit code made from it.
"""

import os

from pyinit import log, signals, terminal
from pyinit.config import Config
from pyinit.spawn import SpawnError, spawn

TYPE_CHECKING = False  # mypy reads the block below; at run time the import waits for a policy (see _shutdown_policy)
if TYPE_CHECKING:
    from pyinit import shutdown

api = signals.api
_SI_KERNEL = 0x80  # si_code of what the terminal sends its foreground group
_TO_FOREGROUND = frozenset({api.SIGINT, api.SIGQUIT, api.SIGTSTP, api.SIGWINCH})  # what a terminal sends its foreground group
_TERMINAL_ACCESS = frozenset({api.SIGTTIN, api.SIGTTOU})  # a background process touching the terminal
_WAIT_FLAGS = os.WNOHANG | os.WUNTRACED  # reap without blocking; report stops too (the child's, to stop with it)
_SUSPEND = (api.SIGTSTP, api.SIGTTIN, api.SIGTTOU)  # stop a process only if its group is not orphaned
# Placements where the child leads a session of its own: its process group is
# orphaned (no member has a parent in another group of the same session).
_ORPHANED_GROUP = frozenset({terminal.NEW_SESSION, terminal.NEW_SESSION_WITH_TERMINAL})  # placement kinds


class Child:
    """What the loop supervises: a process, how a signal reaches it, and what its end becomes.

    `group`: signals go to its process group (it leads one), or to it alone.
    `rewrite`: received signal -> the signal sent, 0 to drop it (looked up
    once per signal). `remap_exit`: exit codes reported as 0. `placement`:
    where it stands towards the terminal (terminal.py).
    The loop's state: `status`, its wait status once it has exited (None
    before), `stopped`, the wait status of a stop not yet acted on, and
    `received`, the signals that came for it (the launcher dies of the one
    that ended its init, see namespace.py).
    """

    __slots__ = ("pid", "group", "rewrite", "remap_exit", "placement", "status", "stopped", "received")

    def __init__(self, pid: int, *, group: bool, placement: terminal.Placement = terminal.DETACHED,
                 rewrite: "dict[int, int] | None" = None, remap_exit: "frozenset[int]" = frozenset()) -> None:
        self.pid = pid
        self.group = group
        self.rewrite = rewrite or {}
        self.remap_exit = remap_exit
        self.placement = placement
        self.status: "int | None" = None
        self.stopped = 0
        self.received: "set[int]" = set()

    def send(self, signo: int) -> None:
        """The one way anything is sent to the child: to its group, or to it alone."""
        if self.group:
            os.killpg(self.pid, signo)
        else:
            os.kill(self.pid, signo)

    def exit_code(self) -> int:
        """The shell's convention for its status: the exit code, or 128+N for death by signal N."""
        status = self.status
        assert status is not None
        code = 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        return 0 if code in self.remap_exit else code


def block_signals() -> "frozenset[int]":
    """Block every signal the init handles; return the ones pyinit's caller left ignored.

    Blocked signals wait in the queue for sigwaitinfo. The ignored ones are
    for the child (see spawn.py), read before the SIGCHLD reset below
    changes one.
    """
    ignored = signals.inherited_ignored()
    api.pthread_sigmask(api.SIG_BLOCK, signals.WAITED)
    # An inherited SIG_IGN for SIGCHLD would make the kernel reap our
    # children for us, and the child's exit status would be lost.
    api.signal(signals.SIGCHLD, api.SIG_DFL)
    return ignored


def run(config: Config, inherited_ignored: "frozenset[int] | None" = None,
        launcher: "terminal.LauncherLink | None" = None) -> int:
    """Be the init for `config.command`; return the exit code to exit with.

    `inherited_ignored` is what block_signals() returned, where the caller
    (the launcher) has already called it. `launcher` is given when pyinit
    leads the session of a pty its launcher made and relays (see terminal.py).
    """
    if inherited_ignored is None:
        inherited_ignored = block_signals()
    parent = os.getppid()
    subreaper = os.getpid() != 1
    if subreaper:
        _become_subreaper()
    _keep_report_descriptor(config.exit_report)
    policy = _shutdown_policy(config, subreaper) if _asks_for_policy(config) else None
    placement = terminal.prepare(config.single_child, launcher)
    try:
        pid = spawn(list(config.command), placement, inherited_ignored)
    except (SpawnError, OSError) as failure:
        log.error("%s", failure)
        code = failure.exit_code if isinstance(failure, SpawnError) else 125
    else:
        log.info("started %s as PID %d", config.command[0], pid)
        log.debug("the child is in %s", placement)
        _leave_working_directory()
        child = Child(pid, group=not placement.shares_group and not config.single_child, placement=placement,
                      rewrite=rewrite_table(config.rewrite, placement), remap_exit=config.remap_exit)
        if policy is not None:
            policy.report.child_pid = pid
        code = supervise(child, policy, config.warn_reaped, config.pdeathsig, parent)
        if policy is not None:
            policy.report.child_status = child.status
            policy.report.mark("child_exit")
        try:
            terminal.take_back_foreground(placement, pid)
            left = reap(None, policy, config.warn_reaped)
            if left and policy is not None and policy.settle_seconds:
                left = _settle(policy, config.warn_reaped)
            if left and (config.exit_report or config.warn_reaped):
                _note_leftovers(policy, config.warn_reaped)
            if policy is None and subreaper and left:
                policy = _shutdown_policy(config, subreaper)  # the child left processes: a subreaper drains them
            if policy is not None:
                _drain(policy, config.warn_reaped)
        except Exception as failure:  # the child's status is known: nothing may change the exit code now
            log.error("internal error while draining: %r", failure)
    if policy is not None and config.exit_report:
        policy.report.write(config.exit_report, code)
    log.flush()
    return code


def _keep_report_descriptor(destination: "str | None") -> None:
    """`--exit-report fd:N` is for whoever started pyinit: close-on-exec, so the child neither sees nor holds it.

    A child (or a daemon it leaves) holding the write end of a report pipe
    would keep the reader from ever seeing its end. The standard streams
    (0 to 2) are the child's as well, and stay as they are.
    """
    if destination is not None and destination.startswith("fd:") and int(destination[3:]) > 2:
        try:
            os.set_inheritable(int(destination[3:]), False)
        except OSError as failure:  # not open: the report's write says so at the end
            log.debug("cannot make the exit report's descriptor close-on-exec: %s", failure.strerror)


def _asks_for_policy(config: Config) -> bool:
    """Whether an option asks for a timer or the exit report, so that the loop needs the policy from the start."""
    return bool(config.exit_report or config.grace is not None or config.drain is not None or config.term_delay
                or config.settle)


def _shutdown_policy(config: Config, subreaper: bool) -> "shutdown.Policy":
    """The timers, the drain and the exit report.

    Made before the child starts where an option asks for one, so that no
    import (which opens files, and fails when descriptors have run out) can
    stand between the running child and the loop. Otherwise the loop runs
    without one, and shutdown.py and report.py are not even imported (every
    module costs start-up time and memory): as PID 1 nothing is drained,
    since the kernel ends the namespace with us, and a subreaper makes it
    only if the child left processes behind (a process with no child has
    none below it), to drain them with its default.
    """
    from pyinit import shutdown
    from pyinit.report import Report

    drain = config.drain
    if drain is None and subreaper:  # nobody else would stop what we adopted
        drain = shutdown.SUBREAPER_DRAIN
    return shutdown.Policy(config.grace, config.term_delay, drain, Report(config.command), settle=config.settle)


def rewrite_table(rewrite: "dict[int, int]", placement: terminal.Placement) -> "dict[int, int]":
    """The -r rules, and SIGSTOP for the suspending signals where the child's group is orphaned.

    The kernel discards SIGTSTP, SIGTTIN and SIGTTOU sent to an orphaned
    group when their action is the default, so forwarded as they are they
    would suspend nothing: `kill -TSTP <pyinit>` and `docker kill -s TSTP`
    stop the child's group with SIGSTOP instead, as dumb-init does. A -r rule
    for them still wins. With -c the child is in pyinit's group, and gets
    them as they are.
    """
    if placement.kind not in _ORPHANED_GROUP:
        return rewrite
    return {**{signo: signals.SIGSTOP for signo in _SUSPEND}, **rewrite}


def supervise(child: Child, policy: "shutdown.Policy | None" = None, warn_reaped: bool = False,
              pdeathsig: int = 0, parent: int = 0) -> int:
    """Forward signals to `child` and reap until it has exited; return its exit code.

    `policy`: the shutdown timers and the report, if any. `pdeathsig`: the
    signal to receive when our parent dies (0: none); `parent` is that
    parent as seen before the child started, to notice one that died before
    the signal was armed.
    """
    if pdeathsig and not arm_parent_death_signal(pdeathsig, parent):
        _receive(pdeathsig, 0, child, policy)  # as the kernel would have sent it
    while child.status is None:
        timeout = policy.timeout() if policy else None
        if timeout is None:
            info = api.sigwaitinfo(signals.WAITED)
        else:
            info = api.sigtimedwait(signals.WAITED, timeout)
        try:
            if info is None and policy is not None:  # a deadline: the held SIGTERM, or the grace is over
                for target in policy.expired():
                    if target == signals.SIGKILL:
                        _kill_after_grace(child, policy)
                    else:
                        _pass_on(target, child, policy)
            elif info.si_signo == signals.SIGCHLD:
                reap(child, policy, warn_reaped)
                if child.stopped and child.status is None:
                    _stop_with_child(child)
            elif signals.raised_by_own_write(info.si_signo, info.si_code, info.si_pid):
                # Our own write to a broken or full stderr raised it: about
                # pyinit, not for the child. Not logged: that write could
                # raise another.
                pass
            elif info.si_code == _SI_KERNEL and info.si_signo in _TO_FOREGROUND and child.placement.shares_group:
                # Ctrl-C and the like, sent by the terminal to the group the
                # child shares with us: it has its own copy already. (Not so
                # a hang-up's SIGHUP, sent to the session leader alone.)
                log.info("received %s from the terminal; the child got it too", signals.name(info.si_signo))
            elif policy is None or (reap(child, policy, warn_reaped) and child.status is None):
                _receive(info.si_signo, info.si_pid, child, policy)
            else:
                # The child had exited before we took the signal (its SIGCHLD
                # waits behind any lower-numbered signal): the signal could not
                # have ended it, and is neither forwarded nor counted. Asked
                # only where a report counts signals: it costs a waitpid(2).
                log.info("received %s after the child exited: not forwarded", signals.name(info.si_signo))
        except Exception as failure:  # the init must outlive its own bugs
            log.error("internal error, carrying on: %r", failure)
    return child.exit_code()


def _receive(signo: int, sender: int, child: Child, policy: "shutdown.Policy | None") -> None:
    """A signal for the child arrived: rewrite it, count it, let the policy hold or pass it, send what passes."""
    log.info("received %s from PID %d", signals.name(signo), sender)
    child.received.add(signo)
    target = child.rewrite.get(signo, signo)
    if policy is not None:
        policy.report.count(policy.report.received, signals.name(signo))
        policy.report.mark("first_signal")
    if target == 0:
        log.info("dropped %s (rewritten to 0)", signals.name(signo))
        return
    for admitted in policy.admit(signo, target) if policy is not None else (target,):
        _pass_on(admitted, child, policy)


def _pass_on(target: int, child: Child, policy: "shutdown.Policy | None") -> None:
    """Send `target` (already rewritten) to the child, with what goes with it: the terminal for SIGCONT, the timers, the counts."""
    if target == api.SIGCONT:
        terminal.give_foreground(child.placement, child.pid)
    try:
        child.send(target)
    except ProcessLookupError:
        log.debug("nobody left to receive %s", signals.name(target))
        return
    except OSError as failure:
        log.warning("cannot forward %s: %s", signals.name(target), failure.strerror)
        return
    log.info("forwarded %s to %s %d", signals.name(target), "group" if child.group else "PID", child.pid)
    if policy is not None:
        policy.report.count(policy.report.forwarded, signals.name(target))
        policy.forwarded(target)


def _kill_after_grace(child: Child, policy: "shutdown.Policy") -> None:
    """The grace period is over and the child still runs: SIGKILL it, or its whole group."""
    from pyinit import shutdown  # imported with the policy (_shutdown_policy)

    log.warning("the child did not exit within the %g s grace period: sending SIGKILL", policy.grace)
    processes = shutdown.count_group(child.pid) if child.group else 1
    try:
        child.send(signals.SIGKILL)
    except ProcessLookupError:
        return
    policy.report.grace.update(killed=True, processes=processes)


def reap(child: "Child | None", policy: "shutdown.Policy | None", warn_reaped: bool) -> bool:
    """The one reaper: collect every child that has exited; return whether any child is left.

    One SIGCHLD may stand for many exits (standard signals coalesce), so this
    loops until the kernel has nothing more to give. The main child's exit
    goes into `child.status` before anything else is done with it, and its
    stops into `child.stopped` (WUNTRACED), so that pyinit can stop along
    with it. Every other process is counted, and logged under -w.
    In a fork storm this runs thousands of times a second: what can be
    decided once per call is, so that a zombie costs one waitpid(2) and a
    few comparisons.
    """
    main = child.pid if child is not None else 0
    logged = warn_reaped or log.level >= log.INFO
    reaped = 0
    try:
        while True:
            pid, status = os.waitpid(-1, _WAIT_FLAGS)
            if pid == 0:
                return True
            if pid == main and child is not None:
                if os.WIFSTOPPED(status):
                    child.stopped = status
                    log.info("child %d is stopped: %s", pid, _describe(status))
                else:
                    child.status = status
                    log.info("child %d exited: %s", pid, _describe(status))
            elif os.WIFSTOPPED(status):
                log.debug("process %d is stopped: %s", pid, _describe(status))
            else:
                reaped += 1
                if logged:
                    (log.warning if warn_reaped else log.info)("reaped zombie %d: %s", pid, _describe(status))
    except ChildProcessError:
        return False
    finally:
        if policy is not None:
            policy.report.zombies_reaped += reaped


def _settle(policy: "shutdown.Policy", warn_reaped: bool) -> bool:
    """--settle: give what the child left up to that long to exit on its own, reaping it; return whether any is left.

    Workers that die of the signal the child died of, a helper that exits
    a moment after its parent: none of them is left over, and none should
    be reported as such. Ends as soon as nothing is left, so it costs
    nothing when the child took everything with it; and at once on a
    terminating signal (`docker stop`'s, whichever its STOPSIGNAL), so that
    the report is written before the SIGKILL that follows it.
    """
    from pyinit import shutdown  # imported with the policy (_shutdown_policy)

    started = policy.clock()
    left = _reap_until(started + policy.settle_seconds, policy, warn_reaped, ended_by=shutdown.TERMINATING)
    policy.report.settle["waited"] = round(policy.clock() - started, 6)
    return left


def _note_leftovers(policy: "shutdown.Policy | None", warn_reaped: bool) -> None:
    """Put what still runs into the report, and under -w name it in one warning line."""
    from pyinit import shutdown  # a leftover is rare: not on the common path

    leftovers = shutdown.running()
    if policy is not None:
        policy.report.leftovers = leftovers
    if not warn_reaped:
        return
    if leftovers is None:
        log.warning("the child exited and left processes running; /proc cannot tell which")
    elif leftovers:
        names = ["%s (PID %d)" % (entry["name"], entry["pid"]) for entry in leftovers]
        more = " and %d more" % (len(names) - 10) if len(names) > 10 else ""
        log.warning("the child exited and left %d process(es) running: %s%s", len(names), ", ".join(names[:10]), more)


def _reap_until(deadline: float, policy: "shutdown.Policy", warn_reaped: bool,
                ended_by: "frozenset[int]" = frozenset()) -> bool:
    """Reap as processes exit, until none is left, `deadline` passes or a signal of `ended_by` comes; return whether any is left."""
    from pyinit import shutdown  # imported with the policy (_shutdown_policy)

    awaited = ended_by | {signals.SIGCHLD}
    while reap(None, policy, warn_reaped):
        remaining = deadline - policy.clock()
        if remaining <= 0:
            return True
        info = api.sigtimedwait(awaited, min(remaining, shutdown.LONGEST_WAIT))
        if info is not None and info.si_signo in ended_by:
            log.info("received %s from PID %d: the wait ends", signals.name(info.si_signo), info.si_pid)
            policy.report.count(policy.report.received, signals.name(info.si_signo))
            return reap(None, policy, warn_reaped)
    return False


def _drain(policy: "shutdown.Policy", warn_reaped: bool) -> None:
    """After the child's exit: SIGTERM what is left, reap it as it goes, SIGKILL what outlives the drain."""
    from pyinit import shutdown  # imported with the policy (_shutdown_policy)

    if policy.drain_seconds is None or not shutdown.signal_leftovers(api.SIGTERM):
        return
    log.info("draining: SIGTERM sent to what the child left, %g s before SIGKILL", policy.drain_seconds)
    policy.report.drain["stopped"] = [entry["pid"] for entry in policy.report.leftovers or ()]
    if not _reap_until(policy.clock() + policy.drain_seconds, policy, warn_reaped):
        return
    killed = shutdown.signal_leftovers(signals.SIGKILL)
    log.warning("drain over: SIGKILL sent to %d process(es)", killed)
    policy.report.drain.update(killed=True, processes=killed)
    while reap(None, policy, warn_reaped):
        api.sigtimedwait({signals.SIGCHLD}, 0.1)
        shutdown.signal_leftovers(signals.SIGKILL)  # one may have forked while we killed


def _stop_with_child(child: Child) -> None:
    """The child was stopped (Ctrl-Z, `suspend`, SIGSTOP): stop too, as one job, if a job-control shell will continue us.

    The shell that started pyinit waits for pyinit, not for the child; only
    when pyinit stops does that shell see the job stop and take the terminal
    back. Its `fg` then continues pyinit, which continues the child. One
    exception: a child stopped for touching the terminal while the shell has
    just brought pyinit to the foreground (`fg` of a running job, which
    sends no SIGCONT) is given the terminal and continued instead.
    Where pyinit is not such a shell's job (terminal.is_shell_job), it keeps
    running, so that it never stays stopped
    while its child runs or has exited: stopped, it could neither reap the
    child nor exit with it, and no shell would continue it. (Under a shell,
    a child continued by someone else while pyinit is stopped runs on until
    the shell's `fg` or `bg` continues pyinit too: that is the shell's job.)
    As PID 1 it cannot be stopped by its own signal: where someone can stop
    in its place (the launcher of its pty; the rest of its job under
    `unshare --fork --pid`), terminal.report_stop has them do it.
    """
    status, child.stopped = child.stopped, 0
    if terminal.report_stop(child.placement, os.WSTOPSIG(status)):
        return  # someone else stops in our place, and continues us with SIGCONT
    if os.WSTOPSIG(status) in _TERMINAL_ACCESS and terminal.give_foreground(child.placement, child.pid):
        child.send(api.SIGCONT)
    elif os.getpid() != 1 and terminal.is_shell_job():
        os.kill(os.getpid(), signals.SIGSTOP)
    else:
        log.info("the child is stopped; pyinit carries on (no job-control shell would continue it)")


def _describe(status: int) -> str:
    if os.WIFSTOPPED(status):
        return "stopped by " + signals.name(os.WSTOPSIG(status))
    if os.WIFSIGNALED(status):
        return "killed by " + signals.name(os.WTERMSIG(status))
    return "exit code %d" % os.WEXITSTATUS(status)


def _become_subreaper() -> None:
    """Not PID 1: ask for the orphans of our descendants, which would otherwise go to the real init."""
    try:
        from pyinit import linux  # not on PID 1's path, nor is the _ctypes it loads (linux.py)

        linux.set_child_subreaper()
    except OSError as failure:
        log.warning("cannot become a child subreaper (%s): orphans will not be reaped by pyinit", failure.strerror)
    else:
        log.debug("not PID 1: registered as a child subreaper")


def _leave_working_directory() -> None:
    """Move to / so the init does not keep the child's directory's mount busy."""
    try:
        os.chdir("/")
    except OSError as failure:
        log.debug("cannot change to /: %s", failure.strerror)


def arm_parent_death_signal(signo: int, parent: int) -> bool:
    """Set PR_SET_PDEATHSIG; False when the parent is already gone.

    The parent may die before prctl(2) is called, and then the signal never
    comes: compare getppid() with the parent seen at start. Inside a new PID
    namespace the parent is outside and getppid() is 0; nothing to compare.
    """
    try:
        from pyinit import linux  # an import that fails (no descriptor left) is an OSError too

        linux.set_parent_death_signal(signo)
    except OSError as failure:
        log.warning("cannot set the parent-death signal: %s", failure.strerror)
        return True
    return parent == 0 or os.getppid() == parent
