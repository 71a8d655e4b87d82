"""SIGINT, SIGTERM and SIGHUP while pyinit-check runs: the sandbox torn down, the reports written, then death.

A CI system cancels a job with SIGTERM (then SIGKILL after a grace period),
`timeout` sends SIGTERM, a closed terminal SIGHUP, Ctrl-C SIGINT. Their
default action would end pyinit-check at once, leaving the report files it
opened empty and the sandbox to its launcher's death signal. Instead, while
the check runs, the first of them is raised as Interrupted (a
KeyboardInterrupt, as Ctrl-C's is), which leaves the sandbox's `with` block
and so tears it down; any other, and any that comes while the options are
read or the reports written, is only noted: an exception raised there would
cut a report short or leave a teardown half done. check/__init__.py then
writes the reports, saying which signal ended the check, and dies of it.

A signal ignored when pyinit-check started (SIGHUP under `nohup`, SIGINT in a
shell's background job) stays ignored.
"""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any, Dict, Optional


class Interrupted(KeyboardInterrupt):
    """The check was ended by SIGTERM or SIGHUP: unwound as a Ctrl-C is."""

    def __init__(self, signo: int) -> None:
        super().__init__(signo)
        self.signo = signo


class Interruptions:
    """The handlers of SIGINT, SIGTERM and SIGHUP for as long as the `with` block runs, then the old ones again.

    `signo` is the first signal received (None: none). Between arm() and
    disarm() the first one raises Interrupted; a signal noted before arm()
    is raised by arm() itself.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.signo: Optional[int] = None
        self._armed = False
        self._raised = False
        self._previous: Dict[int, Any] = {}

    def __enter__(self) -> "Interruptions":
        for signo in self.SIGNALS:
            previous = signal.getsignal(signo)
            if previous != signal.SIG_IGN:
                self._previous[signo] = signal.signal(signo, self._received)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signo, previous in self._previous.items():
            signal.signal(signo, previous)

    def arm(self) -> None:
        self._armed = True
        self._raise()

    def disarm(self) -> None:
        self._armed = False

    def _received(self, signo: int, frame: Optional[FrameType]) -> None:
        if self.signo is None:
            self.signo = signo
        self._raise()

    def _raise(self) -> None:
        """Raise Interrupted for the first signal, once, if armed."""
        if self._armed and self.signo is not None and not self._raised:
            self._raised = True
            raise Interrupted(self.signo)
