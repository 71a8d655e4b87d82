"""The PID-1 loop: spawn the child, wait for signals, forward, reap, exit.

Every signal is blocked and taken synchronously with sigwaitinfo(2), so no
Python handler ever runs between two bytecodes and nothing wakes the init up
while nothing happens. Blocking is also what lets PID 1 of a namespace
receive signals at all: the kernel discards a signal sent to a namespace's
init whose disposition is the default, but never one that is blocked.
"""

import os

from pyinit import linux, log, shutdown, signals, terminal
from pyinit.config import Config
from pyinit.report import Report
from pyinit.spawn import SpawnError, spawn

api = signals.api
_SI_USER = 0  # si_code of kill(2), and of the signal the kernel raises for a failed write
_SI_KERNEL = 0x80  # si_code of what the terminal sends its foreground group
_TO_FOREGROUND = frozenset({api.SIGINT, api.SIGQUIT, api.SIGTSTP, api.SIGWINCH})  # what a terminal sends its foreground group
_TERMINAL_ACCESS = frozenset({api.SIGTTIN, api.SIGTTOU})  # a background process touching the terminal
_WRITE_ERRORS = frozenset({api.SIGPIPE, api.SIGXFSZ})  # what a failed write(2) raises


def block_signals() -> None:
    """Block every signal the init handles; they wait in the queue for sigwaitinfo.

    First, the dispositions pyinit was started with are recorded for the
    child (see spawn.py), before the SIGCHLD reset below changes one.
    """
    signals.remember_inherited_dispositions()
    api.pthread_sigmask(api.SIG_BLOCK, signals.WAITED)
    # An inherited SIG_IGN for SIGCHLD would make the kernel reap our
    # children for us, and the child's exit status would be lost.
    api.signal(signals.SIGCHLD, api.SIG_DFL)


def run(config: Config) -> int:
    """Be the init for `config.command`; return the exit code to exit with."""
    block_signals()
    report = Report(config.command)
    parent = os.getppid()
    drain = config.drain
    if os.getpid() != 1:
        _become_subreaper()
        if drain is None:  # nobody else would stop what we adopted
            drain = shutdown.SUBREAPER_DRAIN
    placement = terminal.prepare(config.single_child)
    try:
        child = spawn(list(config.command), placement)
    except (SpawnError, OSError) as failure:
        log.error("%s", failure)
        code = failure.exit_code if isinstance(failure, SpawnError) else 125
    else:
        log.info("started %s as PID %d", config.command[0], child)
        log.debug("the child is in %s", placement)
        _leave_working_directory()
        policy = shutdown.Policy(child, config.single_child, config.grace, config.term_delay, drain, report)
        code = supervise(child, parent, config, placement, policy)
        terminal.take_back_foreground(placement, child)
        policy.drain()
    if config.exit_report:
        report.write(config.exit_report, code)
    return code


def supervise(child: int, parent: int, config: Config, placement: str, policy: shutdown.Policy) -> int:
    """Forward signals to `child` and reap until it exits; return its exit code.

    `parent` is our parent as seen before the child was started, to notice a
    parent that died before the parent-death signal was armed. `placement`
    says where the child stands towards the terminal (see terminal.py);
    `policy` holds the shutdown timers and the report.
    """
    if config.pdeathsig and not _arm_parent_death_signal(config.pdeathsig, parent):
        _receive(config.pdeathsig, 0, child, config, placement, policy)  # as the kernel would have sent it
    me = os.getpid()
    while True:
        timeout = policy.timeout()
        if timeout is None:
            info = api.sigwaitinfo(signals.WAITED)
        else:
            info = api.sigtimedwait(signals.WAITED, timeout)
        try:
            if info is None:  # a deadline has come
                for signo in policy.expired():
                    _pass_on(signo, child, config, placement, policy)
            elif info.si_signo == signals.SIGCHLD:
                status = _reap(child, config.warn_reaped, policy.report)
                if status is not None and os.WIFSTOPPED(status):
                    _stop_with_child(child, status, placement)
                elif status is not None:
                    return _exit_code(status, config)
            elif info.si_signo in _WRITE_ERRORS and info.si_pid == me and info.si_code == _SI_USER:
                # Our own write to a broken or full stderr raised it: about
                # pyinit, not for the child. Not logged: that write could
                # raise another.
                pass
            elif info.si_code == _SI_KERNEL and info.si_signo in _TO_FOREGROUND and placement == terminal.SAME_GROUP:
                # Ctrl-C and the like, sent by the terminal to the group the
                # child shares with us: it has its own copy already. (Not so
                # a hang-up's SIGHUP, sent to the session leader alone.)
                log.info("received %s from the terminal; the child got it too", signals.name(info.si_signo))
            else:
                _receive(info.si_signo, info.si_pid, child, config, placement, policy)
        except Exception as failure:  # the init must outlive its own bugs
            log.error("internal error, carrying on: %r", failure)


def _receive(signo: int, sender: int, child: int, config: Config, placement: str, policy: shutdown.Policy) -> None:
    """A signal for the child arrived: count it, let the policy hold or pass it, forward what passes."""
    log.info("received %s from PID %d", signals.name(signo), sender)
    policy.report.count(policy.report.received, signals.name(signo))
    for admitted in policy.admit(signo, config.rewrite.get(signo, signo)):
        _pass_on(admitted, child, config, placement, policy)


def _pass_on(signo: int, child: int, config: Config, placement: str, policy: shutdown.Policy) -> None:
    """Forward one received signal, with what goes with it: the terminal for SIGCONT, the grace timer."""
    if signo == api.SIGCONT:
        terminal.give_foreground(placement, child)
    target = _forward(signo, child, config)
    if target:
        policy.report.count(policy.report.forwarded, signals.name(target))
        policy.forwarded(target)


def _forward(signo: int, child: int, config: Config) -> int:
    """Send `signo`, after rewriting, to the child's group (or the child); return what was sent, or 0."""
    target = config.rewrite.get(signo, signo)
    if target == 0:
        log.info("dropped %s (rewritten to 0)", signals.name(signo))
        return 0
    try:
        if config.single_child:
            os.kill(child, target)
        else:
            os.killpg(child, target)
    except ProcessLookupError:
        log.debug("nobody left to receive %s", signals.name(target))
        return 0
    except OSError as failure:
        log.warning("cannot forward %s: %s", signals.name(target), failure.strerror)
        return 0
    log.info("forwarded %s to %s %d", signals.name(target), "PID" if config.single_child else "group", child)
    return target


def _reap(child: int, warn_reaped: bool, report: Report) -> "int | None":
    """Collect every exited child; return the main child's last wait status, if any.

    One SIGCHLD may stand for many exits (standard signals coalesce), so this
    loops until the kernel has nothing more to give. The main child's stops
    are reported too (WUNTRACED), so that pyinit can stop along with it.
    """
    child_status = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG | os.WUNTRACED)
        except ChildProcessError:
            return child_status
        if pid == 0:
            return child_status
        if pid == child:
            child_status = status
            if os.WIFSTOPPED(status):
                log.info("child %d is stopped: %s", pid, _describe(status))
            else:
                log.info("child %d exited: %s", pid, _describe(status))
                report.child_status = status
                report.mark("child_exit")
        elif os.WIFSTOPPED(status):
            log.debug("process %d is stopped: %s", pid, _describe(status))
        else:
            report.zombies_reaped += 1
            if warn_reaped or log.level >= log.INFO:  # the one log call hot enough to guard
                (log.warning if warn_reaped else log.info)("reaped zombie %d: %s", pid, _describe(status))


def _stop_with_child(child: int, status: int, placement: str) -> None:
    """The child was stopped (Ctrl-Z, `suspend`, a read from the background): stop too, as one job.

    The shell that started pyinit waits for pyinit, not for the child; only
    when pyinit stops does that shell see the job stop and take the terminal
    back. Its `fg` then continues pyinit, which continues the child. One
    exception: a child stopped for touching the terminal while the shell has
    just brought pyinit to the foreground (`fg` of a running job, which
    sends no SIGCONT) is given the terminal and continued instead.
    PID 1 cannot be stopped by its own signal: the child then stays stopped
    until something sends it SIGCONT.
    """
    if os.WSTOPSIG(status) in _TERMINAL_ACCESS and terminal.give_foreground(placement, child):
        os.killpg(child, api.SIGCONT)
    elif os.getpid() != 1:
        os.kill(os.getpid(), signals.SIGSTOP)


def _describe(status: int) -> str:
    if os.WIFSTOPPED(status):
        return "stopped by " + signals.name(os.WSTOPSIG(status))
    if os.WIFSIGNALED(status):
        return "killed by " + signals.name(os.WTERMSIG(status))
    return "exit code %d" % os.WEXITSTATUS(status)


def _exit_code(status: int, config: Config) -> int:
    """The shell's convention: the exit code, or 128+N for death by signal N."""
    code = 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    return 0 if code in config.remap_exit else code


def _become_subreaper() -> None:
    """Not PID 1: ask for the orphans of our descendants, which would otherwise go to the real init."""
    try:
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


def _arm_parent_death_signal(signo: int, parent: int) -> bool:
    """Set PR_SET_PDEATHSIG; False when the parent is already gone.

    The parent may die before prctl(2) is called, and then the signal never
    comes: compare getppid() with the parent seen at start. Inside a new PID
    namespace the parent is outside and getppid() is 0; nothing to compare.
    """
    try:
        linux.set_parent_death_signal(signo)
    except OSError as failure:
        log.warning("cannot set the parent-death signal: %s", failure.strerror)
        return True
    return parent == 0 or os.getppid() == parent
