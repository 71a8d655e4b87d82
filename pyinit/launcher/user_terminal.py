"""The user's terminal, as the launcher's pty relay (relay.py) sees it.

Its modes (raw while the relay has the terminal, given back on every way
out), its window size (copied to the pty), whether the launcher is in its
foreground, and whether it stops a background job's output (`stty tostop`).
The relay decides when; this module knows how.
"""

import errno
import os
import termios

from pyinit import linux, log


def _raw(modes: list) -> list:
    """cfmakeraw(3) applied to a copy of tcgetattr's list."""
    iflag, oflag, cflag, lflag, ispeed, ospeed, cc = modes
    iflag &= ~(termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP | termios.INLCR
               | termios.IGNCR | termios.ICRNL | termios.IXON)
    oflag &= ~termios.OPOST
    lflag &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
    cflag = (cflag & ~(termios.CSIZE | termios.PARENB)) | termios.CS8
    cc = list(cc)
    cc[termios.VMIN], cc[termios.VTIME] = 1, 0
    return [iflag, oflag, cflag, lflag, ispeed, ospeed, cc]


class UserTerminal:
    """Standard input, and the stream the pty's output is shown on: the user's side of the relay."""

    def __init__(self) -> None:
        self.is_terminal = os.isatty(0)
        # The terminal the pty's output is shown on: the first standard
        # stream that is a terminal. Streams that are not terminals (a
        # file, a pipe) go to the command directly, as without a pty.
        self.out = next((fd for fd in (1, 2, 0) if os.isatty(fd)), 1)
        self.saved_modes: "list | None" = None  # the user's terminal's modes, while it is raw

    def copy_to(self, slave: int, foreground: bool) -> None:
        """Give a new pty the user's terminal's modes (in the foreground) and window size."""
        if self.is_terminal:
            if foreground:
                # In the background the modes may be the outer shell's line
                # editor's; the pty keeps its sane defaults then.
                termios.tcsetattr(slave, termios.TCSANOW, termios.tcgetattr(0))
            linux.set_window_size(slave, linux.get_window_size(0))

    def in_foreground(self) -> bool:
        """Whether the launcher's process group is the foreground of the user's terminal."""
        if not self.is_terminal:
            return True  # nobody else reads it, the command owns its pty
        try:
            return os.tcgetpgrp(0) == os.getpgrp()
        except OSError as failure:
            return failure.errno == errno.ENOTTY  # a terminal but not our controlling one: no job control applies

    def tostop(self) -> bool:
        """Whether the terminal the output is shown on is set `tostop` (a background job may not write to it)."""
        if not (self.is_terminal and os.isatty(self.out)):
            return False
        try:
            return bool(termios.tcgetattr(self.out)[3] & termios.TOSTOP)
        except termios.error:
            return False

    def enter_raw(self) -> None:
        if not self.is_terminal or self.saved_modes is not None:
            return
        try:
            modes = termios.tcgetattr(0)
            termios.tcsetattr(0, termios.TCSADRAIN, _raw(modes))
        except termios.error as failure:
            log.warning("cannot put the terminal in raw mode: %s", failure.args[-1])
            return
        self.saved_modes = modes
        if os.isatty(2):  # raw mode turns ONLCR off: our own lines on that terminal must not staircase
            log.line_end = "\r\n"

    def leave_raw(self) -> None:
        if self.saved_modes is None:
            return
        try:
            termios.tcsetattr(0, termios.TCSADRAIN, self.saved_modes)
        except termios.error as failure:  # hung up: nothing left to restore
            log.debug("cannot restore the terminal's modes: %s", failure.args[-1])
        self.saved_modes = None
        log.line_end = "\n"

    def forget_modes(self) -> None:
        """In the background: the modes are not ours to touch; the shell has the terminal."""
        self.saved_modes = None

    def copy_window_size(self, master: int) -> None:
        if not self.is_terminal:
            return
        try:
            linux.set_window_size(master, linux.get_window_size(0))
        except OSError as failure:
            log.debug("cannot copy the window size: %s", failure.strerror)
