"""Readiness: waiting until a sandboxed command is ready (output, a listener, a path, an HTTP answer, a check of yours).

Every wait has the same rule: it ends as soon as what it waits for is
there, fails at once with CommandExited when the command exits first (the
exit code and the output tail in the message), and fails with
TimeoutExpired (the process tree and the output tail) when time runs out;
both messages say what was awaited. `Readiness` is the part of Sandbox that
does this; it asks the rest of the sandbox only for what the abstract
methods below name.
"""

from __future__ import annotations

import math
import os
import re
import socket
import threading
import time
import urllib.parse
from typing import TYPE_CHECKING, Callable, Collection, List, Optional, Union

from pyinit.sandbox import members as members
from pyinit.sandbox.output import Cursor, Output
from pyinit.sandbox.result import CommandExited, Process, Result, TimeoutExpired, wait_limit

if TYPE_CHECKING:
    import http.client  # imported by wait_for_http when it runs: with ssl and email, a third of the API's import

START_TIMEOUT = 30.0
END_TIMEOUT = 30.0  # seconds pyinit gets to end once the command has exited, beyond its settle and drain
StatusSpec = Union[int, Collection[int], Callable[["http.client.HTTPResponse"], bool]]
Description = Union[str, Callable[[], str]]


class Readiness:
    """The waits of a Sandbox (a mixin: the sandbox supplies the methods and attributes below)."""

    cwd: Optional[str]
    network: str
    settle: float
    drain: Optional[float]
    _output: Output
    _changed: threading.Condition
    _lock: "threading.RLock"

    def wait_for_exit(self, timeout: Optional[float] = None) -> bool:
        raise NotImplementedError

    def wait(self, timeout: Optional[float] = None) -> Result:
        raise NotImplementedError

    def processes(self) -> List[Process]:
        raise NotImplementedError

    def tree(self) -> str:
        raise NotImplementedError

    def output_tail(self, lines: int = 20) -> str:
        raise NotImplementedError

    def connect(self, port: int, host: str = "127.0.0.1", timeout: Optional[float] = 10) -> socket.socket:
        raise NotImplementedError

    def _name(self) -> str:
        raise NotImplementedError

    def _end_timeout(self) -> float:
        """Seconds to wait for pyinit once the command has exited: it settles and drains first (--settle 40 was
        a TimeoutExpired after 30 s), then writes its report; a bound all the same, for a pyinit stopped from outside."""
        return self.settle + (self.drain or 0.0) + END_TIMEOUT

    def wait_for_output(self, pattern: Union[str, "re.Pattern[str]"], timeout: Optional[float] = 10,
                        stream: str = "any") -> "re.Match[str]":
        """Wait until the captured output matches the regex; return the match.

        `stream`: "any" (either captured stream: servers such as gunicorn
        and uvicorn log to stderr), "stdout" or "stderr". Each wake-up
        searches only what arrived since the last, so the wait costs time in
        proportion to the output, however long it is.
        """
        if stream not in ("stdout", "stderr", "any"):
            raise ValueError("stream must be 'stdout', 'stderr' or 'any', not %r" % (stream,))
        names = [name for name in ("stdout", "stderr") if stream in (name, "any") and name in self._output.captured]
        if not names:  # name the Sandbox options that exist: there is no any=PIPE
            raise ValueError("%s: start the sandbox with %s" % (
                "neither stdout nor stderr is captured" if stream == "any" else "%s is not captured" % stream,
                "stdout=PIPE or stderr=PIPE" if stream == "any" else "%s=PIPE" % stream))
        regex = re.compile(pattern) if isinstance(pattern, str) else pattern
        cursor = Cursor()
        found: "list[re.Match[str]]" = []

        def matched() -> bool:
            with self._lock:
                match = self._output.search(regex, names, cursor)
            if match:
                found.append(match)
            return match is not None

        self.wait_until(matched, timeout, "output matching %r on %s" % (regex.pattern, stream), poll=0.05)
        return found[0]

    def wait_for_port(self, port: int, host: str = "127.0.0.1", timeout: Optional[float] = 10) -> None:
        """Wait until a member of the sandbox listens on TCP host:port, in the sandbox's network.

        A listener that no member holds (another test's server) is not the
        command's: it never counts, and the timeout's message names it.
        """
        foreign: "list[str]" = []

        def listening() -> bool:
            holders, others = members.listeners(self.processes(), port, host)
            foreign[:] = others
            return bool(holders)

        def what() -> str:
            held = "; a process outside the sandbox listens there: %s" % ", ".join(foreign) if foreign else ""
            return "a listener on %s:%d held by the sandbox%s" % (host, port, held)

        self.wait_until(listening, timeout, what, poll=0.02)

    def wait_for_path(self, path: Union[str, "os.PathLike[str]"], timeout: Optional[float] = 10) -> None:
        """Wait until `path` exists (a relative path is taken from the sandbox's cwd)."""
        full = os.path.join(self.cwd or os.getcwd(), os.fspath(path))
        self.wait_until(lambda: os.path.exists(full), timeout, "the path %s" % full, poll=0.01)

    def wait_for_http(self, port_or_url: Union[int, str], path: str = "/", status: StatusSpec = 200,
                      timeout: Optional[float] = 10) -> "http.client.HTTPResponse":
        """Wait until an HTTP GET answers with `status`, in the sandbox's network; return that response (read).

        `port_or_url`: a port on 127.0.0.1 (with `path`), or a URL
        ("http://127.0.0.1:8080/health"). `status`: a code, a collection of
        codes, or a callable taking the response. A refused connection, a
        reset, a 503 while the service warms up: the wait goes on. On the
        host's network only a listener of a sandbox member is asked (another
        process's server, as for wait_for_port, never counts). The
        response is read whole and its connection closed: the body is in
        `response.body`, and `response.read()` returns b"" (there is
        nothing left to read).
        """
        import http.client

        host, port, target = http_target(port_or_url, path)
        accepts = _status_check(status)
        limit = wait_limit(timeout)
        attempt = 5.0 if limit is None else min(limit, 5.0)  # seconds for one connection
        answers: "list[str]" = []
        found: "list[http.client.HTTPResponse]" = []

        def answered() -> bool:
            if self.network == "host" and not members.listeners(self.processes(), port, host)[0]:
                answers[:] = ["no member of the sandbox listens there"]  # another process's server is not ready
                return False
            try:
                response = _get(self.connect(port, host, timeout=attempt), host, port, target)
            except (OSError, http.client.HTTPException) as failure:
                answers[:] = [str(failure) or type(failure).__name__]
                return False
            answers[:] = ["HTTP %d" % response.status]
            if accepts(response):
                found.append(response)
                return True
            return False

        def what() -> str:
            last = " (the last answer: %s)" % answers[0] if answers else ""
            return "an HTTP answer %s from http://%s:%d%s%s" % (_describe_status(status), host, port, target, last)

        self.wait_until(answered, timeout, what, poll=0.05)
        return found[0]

    def wait_until(self, ready: Callable[[], bool], timeout: Optional[float] = 10, what: Description = "the condition",
                   poll: float = 0.05) -> None:
        """Wait for `ready()`; fail at once when the command exits first, or when `timeout` passes.

        `ready` is called at every arrival of output and at least every
        `poll` seconds (not with any lock held: it may take its time).
        CommandExited and TimeoutExpired say what was awaited (`what`, or
        what it returns when it is a callable).
        """
        limit = wait_limit(timeout)  # None, or too long for the clock to count: no limit
        deadline = math.inf if limit is None else time.monotonic() + limit
        while True:
            if ready():
                return
            if self.wait_for_exit(0):
                self._output.read_available()  # what it wrote before exiting
                if ready():
                    return
                result = self.wait(self._end_timeout())
                raise CommandExited("%s exited with code %d while waiting for %s\n%s"
                                    % (self._name(), result.exit_code, _text(what), self.output_tail()),
                                    result.exit_code)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                tree = self.tree()
                raise TimeoutExpired("waited %g s for %s from %s in vain; the processes:\n%s\n%s"
                                     % (limit or 0.0, _text(what), self._name(), tree, self.output_tail()), limit or 0.0, tree)
            with self._lock:
                self._changed.wait(min(remaining, poll))


def http_target(port_or_url: Union[int, str], path: str = "/") -> "tuple[str, int, str]":
    """(host, port, path with its query) from a port and a path, or from an http:// URL (ValueError otherwise)."""
    if isinstance(port_or_url, int):
        return "127.0.0.1", _port(port_or_url), path if path.startswith("/") else "/" + path
    parts = urllib.parse.urlsplit(port_or_url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError("%r is not an http:// URL with a host" % port_or_url)
    target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    return parts.hostname, _port(parts.port or 80), target


def _port(port: int) -> int:
    if not 1 <= port <= 65535:
        raise ValueError("%d is not a TCP port (1 to 65535)" % port)
    return port


def _get(connection: socket.socket, host: str, port: int, target: str) -> "http.client.HTTPResponse":
    """GET `target` over an open connection; the response is read whole (its body kept in `body`)."""
    import http.client

    client = http.client.HTTPConnection(host, port)
    client.sock = connection  # made by the sandbox, in its network: connect() is not called
    try:
        client.request("GET", target, headers={"Connection": "close"})
        response = client.getresponse()
        response.body = response.read()  # type: ignore[attr-defined]
        return response
    finally:
        client.close()


def _status_check(status: StatusSpec) -> Callable[["http.client.HTTPResponse"], bool]:
    if callable(status):
        return status
    codes = {status} if isinstance(status, int) else set(status)
    return lambda response: response.status in codes


def _describe_status(status: StatusSpec) -> str:
    if callable(status):
        return "accepted by %s" % getattr(status, "__name__", "the check")
    if isinstance(status, int):
        return "with status %d" % status
    return "with a status in %s" % sorted(status)


def _text(what: Description) -> str:
    return what if isinstance(what, str) else what()
