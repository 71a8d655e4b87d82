"""The terminal: handing it to the child, and being suspended with it.

The terminal's foreground process group decides who gets Ctrl-C and Ctrl-Z,
and who may read it; only a group of the terminal's own session can be the
foreground. When pyinit's standard input is its controlling terminal, the
child gets the terminal in one of two ways:

- pyinit leads the terminal's session (PID 1 of a container started with a
  pty, `docker run -it`): pyinit lets the terminal go (TIOCNOTTY) and the
  child, leading a new session, takes it as its controlling terminal
  (TIOCSCTTY). The child is a session leader that owns the terminal.
- pyinit runs in another process's session (started from a shell): the
  terminal cannot change session without being taken from that shell, so the
  child leads a new process group of pyinit's session, made the foreground
  group if pyinit's is (a pyinit started with `&` hands it over on `fg`).

With `-c` the child shares pyinit's process group, and with it whatever place
in the foreground the outer shell gave pyinit.

Letting the terminal go makes the kernel send SIGHUP and SIGCONT to the
foreground group, which is pyinit alone at that point: they are taken off
the queue at once, so they neither stop pyinit nor reach the child.
"""

import os

from pyinit import linux, log, signals

# How the child is placed, decided before the fork (see spawn.py).
NEW_SESSION = "a new session"
NEW_SESSION_WITH_TERMINAL = "a new session owning the terminal"
FOREGROUND_GROUP = "a new process group, given the terminal"
SAME_GROUP = "pyinit's process group"

TERMINAL_FD = 0


def prepare(single_child: bool) -> str:
    """Choose the child's placement; let the terminal go if the child is to take it."""
    if single_child:
        return SAME_GROUP
    try:
        os.tcgetpgrp(TERMINAL_FD)  # fails unless stdin is our controlling terminal
    except OSError:
        return NEW_SESSION
    if os.getsid(0) != os.getpid():
        return FOREGROUND_GROUP
    try:
        linux.release_controlling_terminal(TERMINAL_FD)
    except OSError as failure:
        log.warning("cannot hand the terminal over (%s): the child runs without it", failure.strerror)
        return NEW_SESSION
    _discard_hand_off_signals()
    return NEW_SESSION_WITH_TERMINAL


def _discard_hand_off_signals() -> None:
    """Take the SIGHUP and SIGCONT that TIOCNOTTY just queued, before the loop could forward them.

    The kernel sent them to our process group, which is pyinit alone, and
    the child does not exist yet: they are about us. Standard signals do
    not queue, so one of each sent by someone else in the same instant is
    indistinguishable from ours, and goes with them.
    """
    for signo in (signals.api.SIGHUP, signals.api.SIGCONT):
        signals.api.sigtimedwait({signo}, 0)


def take_in_child(placement: str) -> None:
    """In the forked child, before exec: take the place `prepare` chose.

    The child still has every signal blocked here, so making itself the
    foreground from the background does not stop it with SIGTTOU.
    """
    if placement == SAME_GROUP:
        return
    try:
        if placement == FOREGROUND_GROUP:
            # A pyinit started in the background (`pyinit ... &`) must not
            # take the terminal from the shell: the child gets it on `fg`.
            in_foreground = os.tcgetpgrp(TERMINAL_FD) == os.getpgrp()
            os.setpgid(0, 0)
            if in_foreground:
                os.tcsetpgrp(TERMINAL_FD, os.getpid())
            return
        os.setsid()
        if placement == NEW_SESSION_WITH_TERMINAL:
            linux.set_controlling_terminal(TERMINAL_FD)
    except OSError as failure:
        log.warning("cannot hand the terminal to the child (%s): it runs without job control", failure.strerror)


def give_foreground(placement: str, child: int) -> bool:
    """Pass the terminal on to the child's group if the outer shell just gave it to us.

    Called before SIGCONT is forwarded: `fg` in the outer shell makes
    pyinit's group the foreground and continues it; `bg` continues it
    without the terminal, and then the child must not take it either.
    Returns whether the child's group now has the terminal.
    """
    if placement != FOREGROUND_GROUP:
        return False
    try:
        if os.tcgetpgrp(TERMINAL_FD) == os.getpgrp():
            os.tcsetpgrp(TERMINAL_FD, child)
            return True
    except OSError as failure:
        log.debug("cannot give the terminal back to the child: %s", failure.strerror)
    return False


def take_back_foreground(placement: str, child: int) -> None:
    """When the child is gone, make pyinit's group the foreground again.

    Otherwise the terminal would be left to a process group that no longer
    exists, and a parent that is not a job-control shell could not read it.
    """
    if placement != FOREGROUND_GROUP or os.getpgrp() == 0:
        # 0: our group lies outside our PID namespace (`unshare --fork
        # --pid` in a terminal) and cannot be named; the shell above must
        # take the terminal back itself.
        return
    try:
        if os.tcgetpgrp(TERMINAL_FD) == child:
            os.tcsetpgrp(TERMINAL_FD, os.getpgrp())
    except OSError as failure:
        log.debug("cannot take the terminal back: %s", failure.strerror)



def is_shell_job() -> bool:
    """Whether pyinit runs as a job of a job-control shell, which will continue it if it stops.

    A job-control shell puts each job in a process group of its own in the
    shell's session on the terminal: pyinit then leads its group, does not
    lead its session, and has stdin as its controlling terminal. In the
    foreground or in the background, the shell shows the job stopped and
    continues it on `fg` or `bg`. Anywhere else (no terminal, pyinit leading
    the session, a parent without job control, or a group outside our PID
    namespace, which getpgrp() gives as 0) nobody would.
    """
    try:
        os.tcgetpgrp(TERMINAL_FD)  # fails unless stdin is our controlling terminal
    except OSError:
        return False
    return os.getpgrp() == os.getpid() != os.getsid(0)
