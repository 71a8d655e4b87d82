"""The launcher's pseudo-terminal: a terminal of its own for the command, relayed to the user's.

Why a pty. The init leads a session of its own in the namespace, and the
user's terminal belongs to the outer shell's session: it cannot become the
controlling terminal of another session without being taken from that
shell. Without a controlling terminal an interactive shell has no job
control, /dev/tty cannot be opened (so ssh, sudo, git cannot prompt), a
password prompt cannot turn echo off, and Ctrl-Z stops nothing. So, as
`sudo` (use_pty), `docker run -it` and `script` do, the launcher opens a
pseudo-terminal; the init makes its slave side the controlling terminal of
the session it leads, with the command as the foreground job (terminal.py),
and the launcher relays bytes between the master side and the user's
terminal, which it puts in raw mode: every key, Ctrl-C and Ctrl-Z included,
goes to the pty's line discipline, which turns it into a signal for the
pty's foreground group, as a terminal does.

    user's terminal ── raw ── launcher ══ master ┊ slave ── init: PID 1, leads the pty's session
                                                 ┊            └─ command: the pty's foreground group

Outer job control. The outer shell sees the launcher only. When the command
stops (Ctrl-Z, a read from the background), the init writes the stop signal
to a pipe; the launcher gives the user's terminal its modes back and stops
itself with that signal, so the shell shows the job stopped and takes the
terminal. On SIGCONT (`fg` or `bg`) it looks whether it is in the
foreground of the user's terminal: if so it goes raw again, copies the
window size and reads the terminal again; either way it writes the
command's place (foreground or background of the pty) to a second pipe and
sends the init SIGCONT, then SIGWINCH so that a full-screen program redraws.
A launcher in the background never reads the user's terminal or changes its
modes; its command runs in the background of the pty, so a read stops it
with SIGTTIN, and the launcher then stops in turn (the shell says "Stopped
(tty input)"), unless the shell has meanwhile brought it to the foreground
(`fg` of a running job sends no SIGCONT): then it takes the terminal and
continues the command at once. It also takes the terminal when the command
writes something and the launcher finds itself in the foreground; in the
background under `stty tostop` it stops (SIGTTOU) rather than write. A stop signal the kernel discards (the
launcher's process group orphaned: no job-control shell above) leaves
nothing stopped: the command is continued.

One thread, one loop. The launcher waits at once for the user's terminal,
the pty master, the init's stop reports and signals. Python has neither
ppoll nor pselect; its signal.set_wakeup_fd needs Python-level handlers,
run between bytecodes with the signals unblocked; a relay thread beside the
sigwaitinfo loop would have two threads agree on the terminal's state at
every stop and continue. Instead the signals stay blocked, as they are for
the init, and are read from a signalfd(2) (one ctypes call) in the same
poll(2) as the bytes (poll: select(2) cannot take the descriptors numbered
1,024 and up that a caller holding many files leaves us): the whole state
lives in one loop. The signalfd is opened after the fork, so the init never
holds it, and the command gets its clean signal state from spawn.py as ever.

The user's terminal itself (its modes, raw mode and back, its window size,
whether the launcher is in its foreground, `tostop`) is user_terminal.py's:
this module decides when, that one knows how.
"""

import errno
import os
import termios
import time

from pyinit import init, linux, log, signals, terminal
from pyinit.launcher.user_terminal import UserTerminal

api = signals.api
_CHUNK = 1 << 14  # bytes read at a time
_BACKLOG = 1 << 16  # stop reading a side while this much waits to be written to the other
_DRAIN_SECONDS = 2.0  # bound on collecting what the pty still holds once the init has exited
_STOP_SIGNALS = frozenset({api.SIGTSTP, api.SIGTTIN, api.SIGTTOU, api.SIGSTOP})
_END_OF_FILE = b"\x04"  # VEOF of a fresh pty: how end of a piped input is told to the command


class Pty:
    """The pty and the two pipes, made before the fork; `in_init` and `relay` then split them."""

    def __init__(self) -> None:
        self.user = UserTerminal()
        self.slave_streams = [0] + [fd for fd in (1, 2) if os.isatty(fd)]
        self.master, self.slave = os.openpty()
        try:
            self._copy_user_terminal()
        except (OSError, termios.error) as failure:
            os.close(self.master)
            os.close(self.slave)
            raise OSError(*failure.args) from None
        self.stops_read, self.stops_write = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.places_read, self.places_write = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        os.write(self.places_write, terminal.TO_FOREGROUND if self.foreground else terminal.TO_BACKGROUND)

    def _copy_user_terminal(self) -> None:
        self.foreground = self.user.in_foreground()
        self.user.copy_to(self.slave, self.foreground)

    # ------------------------------------------------------------ the init's side

    def in_init(self) -> terminal.LauncherLink:
        """In the init, a new session's leader: make the slave its controlling terminal and the standard streams."""
        for fd in (self.master, self.stops_read, self.places_write):
            os.close(fd)
        linux.set_controlling_terminal(self.slave)
        for fd in self.slave_streams:
            os.dup2(self.slave, fd)
        os.close(self.slave)
        return terminal.LauncherLink(self.stops_write, self.places_read)

    # ------------------------------------------------------------ the launcher's side

    def relay(self, init_pid: int, parent: int, pdeathsig: int) -> int:
        """In the launcher: relay until the init has exited and the pty is drained; return the init's exit code."""
        for fd in (self.slave, self.stops_write, self.places_read):
            os.close(fd)
        os.set_blocking(self.master, False)
        self.init = init_pid
        self.signal_fd = linux.signalfd(signals.WAITED)
        self.to_pty = bytearray()
        self.to_user = bytearray()
        self.master_open = True
        self.user_in_open = True
        self.user_out_open = True
        if pdeathsig and not init.arm_parent_death_signal(pdeathsig, parent):
            self._forward(pdeathsig)  # the parent died before: as the kernel would have sent it
        try:
            if self.foreground:
                self.user.enter_raw()
            code = None
            while code is None:
                code = self._step()
            self._drain()
            return code
        finally:
            self.user.leave_raw()

    def _step(self) -> "int | None":
        """Wait for anything, handle it; the init's exit code once it has exited."""
        readers = [self.signal_fd]
        if self.stops_read >= 0:
            readers.append(self.stops_read)
        if self.master_open and len(self.to_user) < _BACKLOG:
            readers.append(self.master)
        if self.user_in_open and self.foreground and len(self.to_pty) < _BACKLOG:
            readers.append(0)
        writers = []
        if self.to_pty and self.master_open:
            writers.append(self.master)
        if self.to_user:
            writers.append(self.user.out)
        readable, writable = linux.ready(readers, writers)
        if not self.foreground and self.master in readable and self.user.in_foreground():
            # `fg` of a running job sends no SIGCONT: the first output after
            # it is when we find out, and take the terminal.
            self._resume()
        if self.master in writable:
            self._write_pty()
        if self.user.out in writable:
            self._write_user()
        if self.master in readable:
            self._read_pty()
        if 0 in readable:
            self._read_user()
        if self.stops_read in readable:
            self._read_stops()
        if self.signal_fd in readable:
            for signo, code, sender in linux.read_signalfd(self.signal_fd):
                exit_code = self._signal(signo, code, sender)
                if exit_code is not None:
                    return exit_code
        return None

    def _signal(self, signo: int, code: int, sender: int) -> "int | None":
        if signo == api.SIGCHLD:
            return self._reap()
        if signo == api.SIGWINCH:
            self.user.copy_window_size(self.master)  # the pty then sends SIGWINCH to its foreground group itself
        elif signo == api.SIGCONT:
            log.info("continued")
            self._resume()
        elif signals.raised_by_own_write(signo, code, sender):
            pass  # our own write to a closed stream raised it; the write's error says the rest
        else:
            log.info("received %s from PID %d", signals.name(signo), sender)
            self._forward(signo)
        return None

    def _forward(self, signo: int) -> None:
        try:
            os.kill(self.init, signo)
        except OSError as failure:
            log.debug("cannot forward %s to the init: %s", signals.name(signo), failure.strerror)
        else:
            log.info("forwarded %s to the init, PID %d", signals.name(signo), self.init)

    def _reap(self) -> "int | None":
        try:
            pid, status = os.waitpid(self.init, os.WNOHANG)
        except ChildProcessError:
            return None
        if pid != self.init or os.WIFSTOPPED(status):
            return None
        log.info("the init exited: %s", "killed by " + signals.name(os.WTERMSIG(status))
                 if os.WIFSIGNALED(status) else "exit code %d" % os.WEXITSTATUS(status))
        return 128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)

    # ------------------------------------------------------------ bytes

    def _read_pty(self) -> None:
        try:
            data = os.read(self.master, _CHUNK)
        except BlockingIOError:
            return
        except OSError:  # EIO: every slave descriptor is closed
            data = b""
        if data:
            self.to_user += data
        else:
            self.master_open = False

    def _write_pty(self) -> None:
        try:
            written = os.write(self.master, self.to_pty)
        except BlockingIOError:
            return
        except OSError as failure:
            log.debug("cannot write to the pty: %s", failure.strerror)
            written = len(self.to_pty)
        del self.to_pty[:written]

    def _read_user(self) -> None:
        try:
            data = os.read(0, _CHUNK)
        except BlockingIOError:
            return
        except OSError as failure:
            if failure.errno == errno.EIO and not self.user.in_foreground():
                # Put in the background without a stop we saw (the shell
                # took the terminal): wait for the next SIGCONT to read again.
                self.foreground = False
                return
            data = b""
        if data:
            self.to_pty += data
            return
        self.user_in_open = False
        if self.user.is_terminal:
            # The terminal hung up (a closed window, a dropped ssh): the
            # command's terminal is as good as gone, and it must hear so.
            log.info("the terminal hung up")
            self._forward(api.SIGHUP)
        else:
            self.to_pty += _END_OF_FILE  # the end of a piped input, told as a terminal tells it

    def _write_user(self) -> None:
        if not self.user_out_open:
            self.to_user.clear()
            return
        if not self.foreground and self._stopped_by_tostop():
            return
        try:
            written = os.write(self.user.out, self.to_user)
        except BlockingIOError:
            return
        except OSError as failure:  # nobody can see it any more
            log.debug("cannot write to the terminal: %s", failure.strerror)
            self.user_out_open = False
            written = len(self.to_user)
        del self.to_user[:written]

    def _show_pending_output(self) -> None:
        """Write out everything the pty holds now, without waiting for more."""
        while self.master_open and linux.ready([self.master], [], 0)[0]:
            self._read_pty()
            self._flush_to_user()
        self._flush_to_user()

    def _flush_to_user(self) -> None:
        while self.to_user and self.user_out_open:
            if not linux.ready([], [self.user.out], _DRAIN_SECONDS)[1]:
                return  # a terminal that takes nothing (held by Ctrl-S): no reason to hang here
            self._write_user()

    def _drain(self) -> None:
        """Show what the command wrote just before the end: read the pty until every slave is closed (EIO)."""
        deadline = time.monotonic() + _DRAIN_SECONDS
        while self.master_open:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not linux.ready([self.master], [], remaining)[0]:
                break
            self._read_pty()
            self._flush_to_user()
        self._flush_to_user()

    # ------------------------------------------------------------ outer job control

    def _stopped_by_tostop(self) -> bool:
        """A background job may not write to a terminal set `tostop`: stop as the kernel would stop it.

        Our own writes would not stop us (SIGTTOU is blocked), so the check
        is made here; the command's output waits in the pty meanwhile.
        """
        if not self.user.tostop() or self.user.in_foreground():
            return False
        self._stop_self(api.SIGTTOU)
        return True

    def _read_stops(self) -> None:
        try:
            reported = os.read(self.stops_read, 64)
        except BlockingIOError:
            return
        if not reported:  # the init is gone
            os.close(self.stops_read)
            self.stops_read = -1
            return
        stop_signal = reported[-1]
        log.info("the command stopped: %s", signals.name(stop_signal))
        if stop_signal in (api.SIGTTIN, api.SIGTTOU) and self.user.in_foreground():
            self._resume()  # brought to the foreground while running (`fg` sends no SIGCONT then)
        else:
            self._stop_self(stop_signal)

    def _stop_self(self, stop_signal: int) -> None:
        """Stop as the command did, so the outer shell sees the job stop; continue it when we are continued."""
        if self.foreground:
            self._show_pending_output()  # the pty's echo of the Ctrl-Z comes before the shell's "Stopped"
        self.user.leave_raw()
        signo = stop_signal if stop_signal in _STOP_SIGNALS else api.SIGTSTP
        os.kill(os.getpid(), signo)
        # Pending and blocked: unblocking it delivers it here, and its default
        # action stops the process, until SIGCONT. The kernel discards it
        # instead if our process group is orphaned (no job-control shell).
        api.pthread_sigmask(api.SIG_UNBLOCK, {signo})
        api.pthread_sigmask(api.SIG_BLOCK, {signo})
        api.sigtimedwait({api.SIGCONT}, 0)  # the SIGCONT that continued us, handled here and now
        self._resume()

    def _resume(self) -> None:
        """Continue the command: in the pty's foreground if we are in the user's terminal's, else in its background."""
        self.foreground = self.user.in_foreground()
        if self.foreground and self.user.is_terminal:
            self.user.enter_raw()
            self.user.copy_window_size(self.master)
        else:
            self.user.forget_modes()
        try:
            os.write(self.places_write, terminal.TO_FOREGROUND if self.foreground else terminal.TO_BACKGROUND)
        except OSError as failure:
            log.debug("cannot tell the init where the command continues: %s", failure.strerror)
        self._forward(api.SIGCONT)
        if self.foreground:
            self._forward(api.SIGWINCH)  # a full-screen program redraws
