"""The terminal: handing it to the child, and being suspended with it.

The terminal's foreground process group decides who gets Ctrl-C and Ctrl-Z,
and who may read it; only a group of the terminal's own session can be the
foreground. When pyinit's standard input is its controlling terminal, the
child is placed in one of these ways:

- pyinit leads the terminal's session (PID 1 of a container started with a
  pty, `docker run -it`): pyinit lets the terminal go (TIOCNOTTY) and the
  child, leading a new session, takes it as its controlling terminal
  (TIOCSCTTY). The child is a session leader that owns the terminal.
- pyinit runs in another process's session (started from a shell): the
  terminal cannot change session without being taken from that shell, so the
  child leads a new process group of pyinit's session, made the foreground
  group if pyinit's is (a pyinit started with `&` hands it over on `fg`).
- pyinit leads the session of the pty its launcher made (`pyinit --unshare`
  in a terminal, see relay.py): pyinit keeps the terminal, and the child
  leads a new process group of that session, in its foreground. Being the
  child of a process of another group of the same session, that group is
  not orphaned, so the terminal's Ctrl-Z stops any program, not only a
  shell (`sudo`'s use_pty monitor stands in the same place). PID 1 cannot
  stop itself: it tells the launcher through a pipe, and the launcher stops
  in its place; the launcher tells it back, before a SIGCONT, whether it
  continues in the foreground (the child gets the pty) or the background.
- pyinit's own process group lies outside its PID namespace (PID 1 under
  `unshare --fork --pid` in a terminal): getpgrp() is 0, and so is
  tcgetpgrp() whenever the foreground is not a group of the namespace, so
  pyinit cannot tell whether its job is in the foreground. The child then
  stays in pyinit's process group and pyinit never touches the terminal:
  the outer shell's job control acts on the child directly, as it does on
  a command run by `unshare` itself. See `report_stop` for the one thing
  pyinit still does there.

With `-c` the child shares pyinit's process group, and with it whatever place
in the foreground the outer shell gave pyinit.

Letting the terminal go makes the kernel send SIGHUP and SIGCONT to the
foreground group, which is pyinit alone at that point: they are taken off
the queue at once, so they neither stop pyinit nor reach the child.
"""

import os

from pyinit import log, signals

TERMINAL_FD = 0

# What the launcher writes to the init before a SIGCONT (and once before the
# fork): where the child is to continue. The last byte written counts.
TO_FOREGROUND = b"F"
TO_BACKGROUND = b"B"


class LauncherLink:
    """The init's two pipes to the launcher that made its pty (see relay.py).

    `stops` carries one byte, the signal number, each time the child stops;
    `places` carries TO_FOREGROUND or TO_BACKGROUND and is read without
    blocking. `foreground` is the last place read.
    """

    __slots__ = ("stops", "places", "foreground")

    def __init__(self, stops: int, places: int) -> None:
        self.stops = stops
        self.places = places
        self.foreground = False
        self.read_place()

    def read_place(self) -> bool:
        """Take what the launcher wrote since the last call; return where the child is to be."""
        try:
            written = os.read(self.places, 64)
        except BlockingIOError:
            written = b""
        except OSError as failure:
            log.debug("cannot read the launcher's pipe: %s", failure.strerror)
            written = b""
        if written:
            self.foreground = written[-1:] == TO_FOREGROUND
        return self.foreground


class Placement:
    """How the child stands towards the terminal: one of the kinds below, and the launcher's pipes if any."""

    __slots__ = ("kind", "link")

    def __init__(self, kind: str, link: "LauncherLink | None" = None) -> None:
        self.kind = kind
        self.link = link

    @property
    def shares_group(self) -> bool:
        """Whether the child is in pyinit's process group (and so gets the terminal's signals with it)."""
        return self.kind == SAME_GROUP

    def __str__(self) -> str:
        return self.kind + (" on the launcher's pty" if self.link else "")


# The kinds of placement, decided before the child is started (see spawn.py).
NEW_SESSION = "a new session"
NEW_SESSION_WITH_TERMINAL = "a new session owning the terminal"
FOREGROUND_GROUP = "a new process group, given the terminal"
SAME_GROUP = "pyinit's process group"

DETACHED = Placement(NEW_SESSION)  # what the loop supervises when no terminal is concerned (the launcher's init)


def prepare(single_child: bool, link: "LauncherLink | None" = None) -> Placement:
    """Choose the child's placement; let the terminal go if the child is to take it."""
    if link is not None:
        # We lead the pty's session: keep it, and stand in for the launcher.
        # Even with -c the child leads a group of its own there: one that
        # shared ours, whose parent (the launcher) is in another session,
        # would be orphaned, and the kernel would discard Ctrl-Z for it.
        # (-c still sends what pyinit forwards to the child alone.)
        return Placement(FOREGROUND_GROUP, link)
    if single_child:
        return Placement(SAME_GROUP)
    try:
        os.tcgetpgrp(TERMINAL_FD)  # fails unless stdin is our controlling terminal
    except OSError:
        return Placement(NEW_SESSION)
    if os.getpgrp() == 0:
        # Our group, and the outer shell's, lie outside our PID namespace:
        # the foreground cannot be told from the background (module doc).
        return Placement(SAME_GROUP)
    if os.getsid(0) != os.getpid():
        return Placement(FOREGROUND_GROUP)
    from pyinit import linux  # here, with a terminal to hand over, and not before: its import costs start-up

    try:
        linux.release_controlling_terminal(TERMINAL_FD)
    except OSError as failure:
        log.warning("cannot hand the terminal over (%s): the child runs without it", failure.strerror)
        return Placement(NEW_SESSION)
    _discard_hand_off_signals()
    return Placement(NEW_SESSION_WITH_TERMINAL)


def _discard_hand_off_signals() -> None:
    """Take the SIGHUP and SIGCONT that TIOCNOTTY just queued, before the loop could forward them.

    The kernel sent them to our process group, which is pyinit alone, and
    the child does not exist yet: they are about us. Standard signals do
    not queue, so one of each sent by someone else in the same instant is
    indistinguishable from ours, and goes with them.
    """
    for signo in (signals.api.SIGHUP, signals.api.SIGCONT):
        signals.api.sigtimedwait({signo}, 0)


def take_in_child(placement: Placement) -> None:
    """In the forked child, before exec: take the place `prepare` chose.

    The child still has every signal blocked here, so making itself the
    foreground from the background does not stop it with SIGTTOU.
    """
    if placement.kind == SAME_GROUP:
        return
    try:
        if placement.kind == FOREGROUND_GROUP:
            # A pyinit started in the background (`pyinit ... &`) must not
            # take the terminal from the shell: the child gets it on `fg`.
            if placement.link is not None:
                in_foreground = placement.link.foreground
            else:
                in_foreground = os.tcgetpgrp(TERMINAL_FD) == os.getpgrp()
            os.setpgid(0, 0)
            if in_foreground:
                os.tcsetpgrp(TERMINAL_FD, os.getpid())
            return
        os.setsid()
        if placement.kind == NEW_SESSION_WITH_TERMINAL:
            from pyinit import linux  # prepare() imported it, before the fork

            linux.set_controlling_terminal(TERMINAL_FD)
    except OSError as failure:
        log.warning("cannot hand the terminal to the child (%s): it runs without job control", failure.strerror)


def give_foreground(placement: Placement, child: int) -> bool:
    """Pass the terminal on to the child's group if the outer shell just gave it to us.

    Called before SIGCONT is forwarded: `fg` in the outer shell makes
    pyinit's group the foreground and continues it; `bg` continues it
    without the terminal, and then the child must not take it either.
    On the launcher's pty, the launcher says which it was, and the pty's
    foreground goes to the child's group or back to pyinit's.
    Returns whether the child's group now has the terminal.
    """
    if placement.kind != FOREGROUND_GROUP:
        return False
    try:
        if placement.link is not None:
            to_child = placement.link.read_place()
            os.tcsetpgrp(TERMINAL_FD, child if to_child else os.getpgrp())
            return to_child
        if os.tcgetpgrp(TERMINAL_FD) == os.getpgrp():
            os.tcsetpgrp(TERMINAL_FD, child)
            return True
    except OSError as failure:
        log.debug("cannot give the terminal back to the child: %s", failure.strerror)
    return False


def take_back_foreground(placement: Placement, child: int) -> None:
    """When the child is gone, make pyinit's group the foreground again.

    Otherwise the terminal would be left to a process group that no longer
    exists, and a parent that is not a job-control shell could not read it.
    """
    if placement.kind != FOREGROUND_GROUP or placement.link is not None:
        return  # (the launcher's pty goes away with us)
    try:
        if os.tcgetpgrp(TERMINAL_FD) == child:
            os.tcsetpgrp(TERMINAL_FD, os.getpgrp())
    except OSError as failure:
        log.debug("cannot take the terminal back: %s", failure.strerror)


_STOP_SIGNALS = frozenset({signals.api.SIGTSTP, signals.api.SIGTTIN, signals.api.SIGTTOU})


def report_stop(placement: Placement, stop_signal: int) -> bool:
    """The child stopped: have the job it belongs to stop in our place, where pyinit cannot stop itself.

    - On the launcher's pty: tell the launcher, which stops (the outer
      shell sees its job stop) and later continues us with SIGCONT.
    - Under `unshare --fork --pid` (our group outside our namespace, the
      child in it): stop our own process group, which holds `unshare` and
      whatever else the outer shell started as this job, with the same kind
      of signal (SIGTSTP for a SIGSTOP, as bash's `suspend` sends). Our own
      copy, blocked, is taken off the queue. When the terminal stopped the
      whole group already, this is a stop of stopped processes.
    Returns False where neither applies and the caller decides.
    """
    if placement.link is not None:
        try:
            os.write(placement.link.stops, bytes((stop_signal,)))
        except OSError as failure:
            log.warning("cannot tell the launcher that the child stopped: %s", failure.strerror)
        return True
    if placement.kind == SAME_GROUP and os.getpgrp() == 0:
        signo = stop_signal if stop_signal in _STOP_SIGNALS else signals.api.SIGTSTP
        try:
            os.kill(0, signo)
        except OSError as failure:
            log.debug("cannot stop our process group: %s", failure.strerror)
        signals.api.sigtimedwait({signo}, 0)
        return True
    return False


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
