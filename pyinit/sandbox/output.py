"""What a sandboxed command writes, taken as it comes: its stdout and stderr, and pyinit's exit report.

One thread reads every pipe of a sandbox (poll(2) on all of them), so the
command never blocks on a full pipe and pyinit's report, written to a pipe
of its own (`--exit-report fd:N`), never touches the disk.

Readiness waits are linear in the output: a `Cursor` remembers how far it
has searched, and each wake-up searches only what arrived since, with the
last CARRY characters before it, so that a match may straddle two reads.
`max_output` bounds what is kept of each stream (its tail is kept, for
failure reports); the report is always kept whole.
"""

from __future__ import annotations

import _thread
import codecs
import collections
import os
import re
import select
import threading
from typing import IO, Deque, Dict, List, Optional, Sequence

from pyinit.forkserver.client import SignalsHeld
from pyinit.sandbox.result import SandboxError

CARRY = 4096  # characters searched again before what is new: the longest match that may straddle two reads
TAIL_LINES = 20
_READ = 65536


class _Stream:
    """The decoded chunks kept of one stream, oldest first; `first` is the number of the oldest."""

    def __init__(self) -> None:
        self.chunks: Deque[str] = collections.deque()
        self.first = 0  # chunks dropped to stay within max_output
        self.size = 0
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def add(self, text: str, limit: Optional[int]) -> None:
        if not text:
            return
        self.chunks.append(text)
        self.size += len(text)
        while limit is not None and self.size > limit:  # drop the oldest text: whole chunks, then the head of one
            excess, oldest = self.size - limit, self.chunks[0]
            if len(oldest) <= excess:
                self.chunks.popleft()
                self.first += 1
                self.size -= len(oldest)
            else:
                self.chunks[0] = oldest[excess:]
                self.size -= excess

    def text(self) -> str:
        return "".join(self.chunks)


class Cursor:
    """How far a readiness wait has searched each stream: (number of the next chunk, the text carried over)."""

    def __init__(self) -> None:
        self.positions: Dict[str, "tuple[int, str]"] = {}


class Output:
    """The captured streams of one sandbox and the thread that reads them.

    `changed` is the sandbox's condition: notified whenever something
    arrives; its `lock` is held while the streams are touched.
    """

    def __init__(self, changed: threading.Condition, lock: "threading.RLock", max_output: Optional[int] = None) -> None:
        self._changed, self._lock = changed, lock
        self._limit = max_output
        self._streams: Dict[str, _Stream] = {}
        self._report: List[bytes] = []
        # The reader's own duplicates of the pipes' read ends: nobody else closes them (a garbage-collected
        # Popen or file object would), so no number it polls is ever another owner's.
        self._owned: "set[int]" = set()
        self._fds: Dict[int, str] = {}  # those of _owned not at end-of-file yet -> "stdout", "stderr" or "report"
        self._wake: Optional["tuple[int, int]"] = None
        self._running: Optional[_thread.LockType] = None  # held by the reader thread until it returns
        # Set by the reader as it returns: what waits on `running` looks here first. Acquiring and releasing
        # the lock to wait for the reader is not atomic: a Ctrl-C between the two once left it held for good,
        # and the next close() waited on it for ever.
        self._finished = False
        self._reader = -1  # the reader thread's ident

    def start(self, stdout: Optional[IO[bytes]], stderr: Optional[IO[bytes]], report: int) -> None:
        """Read the captured pipes (None: not captured) and the report's read end, in a thread, until end-of-file."""
        for name, pipe in (("stdout", stdout), ("stderr", stderr)):
            if pipe is not None:
                self._streams[name] = _Stream()
        with SignalsHeld():  # each descriptor kept as it is made, for stop() to close
            for name, fd in (("stdout", None if stdout is None else stdout.fileno()),
                             ("stderr", None if stderr is None else stderr.fileno()), ("report", report)):
                if fd is not None:
                    mine = os.dup(fd)  # close-on-exec
                    self._owned.add(mine)
                    self._fds[mine] = name
                    os.set_blocking(mine, False)  # the pipe's: nothing else reads it
            self._wake = os.pipe2(os.O_CLOEXEC)
            running = _thread.allocate_lock()
            running.acquire()
            self._running = running
            # A bare thread, not threading.Thread, whose start() waits for the new thread to be scheduled:
            # while the sandbox's launcher and PID 1 take the request, both cores are busy, and that wait was
            # up to 0.7 ms of a sandbox's start. Nothing here needs it to run yet: the pipes keep what comes.
            try:
                self._reader = _thread.start_new_thread(self._read_all, (running,))
            except RuntimeError as failure:  # out of threads (RLIMIT_NPROC, the system's limit): never started
                self._finished = True
                running.release()
                raise SandboxError("cannot start the thread that reads the sandbox's output: %s" % failure) from None

    def in_reader(self) -> bool:
        """Whether this is the reader thread (running): it cannot wait for itself."""
        return _thread.get_ident() == self._reader and not self._finished

    @property
    def captured(self) -> List[str]:
        return list(self._streams)

    def _read_all(self, running: _thread.LockType) -> None:
        try:
            assert self._wake is not None
            poller = select.poll()
            for fd in [*self._fds, self._wake[0]]:
                poller.register(fd, select.POLLIN)
            while self._fds:
                events = poller.poll()
                if any(fd == self._wake[0] for fd, _ in events):
                    return
                with self._lock:
                    for fd, _ in events:
                        if fd not in self._fds or not self._read_from(fd):  # at its end (read_available saw it)
                            poller.unregister(fd)
                            self._owned.discard(fd)
                            os.close(fd)
        finally:
            self._finished = True
            running.release()

    def _read_from(self, fd: int) -> bool:
        """Take what `fd` has now (the lock held); False at its end-of-file."""
        name = self._fds[fd]
        while True:
            try:
                chunk = os.read(fd, _READ)
            except BlockingIOError:
                return True
            if name == "report":
                self._report.append(chunk)
            else:
                stream = self._streams[name]
                stream.add(stream.decoder.decode(chunk, final=not chunk), self._limit)
            self._changed.notify_all()
            if not chunk:
                del self._fds[fd]
                return False

    def read_available(self) -> None:
        """Take what the pipes hold now, in the caller's thread (what a command wrote just before exiting).

        A pipe at its end is left for the reader thread (or stop()) to close:
        the thread may be polling its number.
        """
        with self._lock:
            for fd in list(self._fds):
                self._read_from(fd)

    def finish(self, timeout: float) -> bool:
        """Wait until every pipe has reached end-of-file (every writer is gone); False if `timeout` passed first."""
        running = self._running
        if running is None or self._finished:
            return True
        if running.acquire(timeout=timeout):
            running.release()
        return self._finished

    def stop(self) -> None:
        """Stop the thread and take what is left; idempotent."""
        if self._running is not None and self._wake is not None:
            if not self._finished:
                os.write(self._wake[1], b"x")
                self._running.acquire()
                self._running.release()
            self.read_available()
        self._running = None
        wake, self._wake = self._wake, None  # first: an interrupted stop() is finished by the next, never closes twice
        for fd in wake or ():
            os.close(fd)
        with self._lock, SignalsHeld():  # no read_available() in between; each taken from the set and closed together
            self._fds.clear()
            while self._owned:
                os.close(self._owned.pop())

    def report(self) -> bytes:
        with self._lock:
            return b"".join(self._report)

    def text(self, name: str) -> Optional[str]:
        """What is kept of stream `name`; None when it is not captured."""
        with self._lock:
            stream = self._streams.get(name)
            return None if stream is None else stream.text()

    def tail(self, lines: int = TAIL_LINES) -> str:
        """The last lines of each captured stream, labelled, for failure messages."""
        parts = []
        with self._lock:
            for name, stream in self._streams.items():
                text = _last_lines(stream, lines)
                parts.append("%s (last %d lines):\n%s" % (name, len(text), "\n".join("  " + line for line in text))
                             if text else "%s: (empty)" % name)
        return "\n".join(parts) if parts else "(output not captured)"

    def search(self, regex: "re.Pattern[str]", names: Sequence[str], cursor: Cursor) -> "Optional[re.Match[str]]":
        """The first match of `regex` in what arrived on `names` since `cursor` last looked (the lock held).

        The match's positions are in the text it was found in (the carried
        text and the new chunks), not in the whole stream.
        """
        for name in names:
            stream = self._streams[name]
            number, carried = cursor.positions.get(name, (stream.first, ""))
            end = len(stream.chunks)
            # Indexed from the end, where the new chunks are: a deque is quick there.
            new = [stream.chunks[index] for index in range(max(0, number - stream.first), end)]
            if not new:
                continue
            text = carried + "".join(new)
            match = regex.search(text)
            cursor.positions[name] = (stream.first + end, text[-CARRY:])
            if match:
                return match
        return None


def _last_lines(stream: _Stream, count: int) -> List[str]:
    """The last `count` lines of `stream`, joining only the chunks they are in."""
    taken: List[str] = []
    newlines = 0
    for chunk in reversed(stream.chunks):
        taken.append(chunk)
        newlines += chunk.count("\n")
        if newlines > count:
            break
    return "".join(reversed(taken)).splitlines()[-count:]
