"""Traffic through a signal: HTTP requests made beside a sandbox, each one recorded, to judge a rolling deploy.

A rolling deploy signals a service while requests still come: a service that
"stops gracefully" may still cut the downloads it was serving (nginx on
TERM), answer 500 to the requests it had (gunicorn on INT), or refuse new
ones while the load balancer still sends them. What an exit code cannot
show, the requests' records can:

    with box.traffic(8080, slow="http://127.0.0.1:8080/big", in_flight=2, read_rate=1_000_000) as traffic:
        traffic.send_signal("TERM")       # once both downloads have their first bytes
        box.wait(10)
    assert not traffic.failed([BEFORE]) and not traffic.failed(slow=True)

Two kinds of request, each on a connection of its own made with the
sandbox's connect() (so the host's network and a private one alike), and
read with the standard library's http.client:
- steady traffic: GETs of `url` at `rate` per second (None: as fast as
  `concurrency` threads go), at most `limit` of them, from start() to stop();
- slow requests: `in_flight` GETs of `slow` started at once, for an endpoint
  that takes its time, or a large response read at `read_rate` bytes per
  second (the client's receive buffer kept small and, on the host's network,
  its segments Ethernet-sized, so the server cannot hand the whole body to
  the kernel and be done: see _connect_narrow()).

Each Request records its start, end, status, outcome (OK, REFUSED, RESET,
TIMED_OUT, INCOMPLETE, ERROR) and the bytes of body received; its phase is
where it lies against the signal that send_signal() sent: BEFORE (ended
before it), IN_FLIGHT (started before, ended after), AFTER (started after).
send_signal() first waits until every slow request is in progress: its
request sent and, for a download, the first bytes received; for an endpoint,
sent and unanswered for SETTLE seconds, so the service has taken it from its
listen queue. Every thread is joined and every socket closed by stop().

This module is imported only when traffic is asked for (Sandbox.traffic(),
the pyinit.testing helpers, pyinit-check's traffic options).
"""

from __future__ import annotations

import http.client
import itertools
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Set, Union

from pyinit import signals
from pyinit.forkserver.client import SignalsHeld
from pyinit.sandbox.ready import http_target
from pyinit.sandbox.result import SandboxError, SignalSpec, signal_number

if TYPE_CHECKING:
    from pyinit.sandbox import Sandbox

OK, REFUSED, RESET, TIMED_OUT, INCOMPLETE, ERROR = "ok", "refused", "reset", "timed out", "incomplete body", "error"
BEFORE, IN_FLIGHT, AFTER = "before", "in flight", "after"
SETTLE = 0.5  # seconds an endpoint's slow request stays unanswered before it counts as taken by the service
ETHERNET_MSS = 1460  # bytes: the TCP segment of a 1500-byte MTU
LIMIT = 10000  # steady requests at most, by default
WARM_UP = 0.5  # seconds of steady traffic before the signal, by default
_CHUNK = 65536


class Request:
    """One request's record; times are seconds from the traffic's start (time.monotonic() there)."""

    __slots__ = ("number", "slow", "start", "sent", "end", "status", "outcome", "received", "length", "error")

    def __init__(self, number: int, slow: bool, start: float) -> None:
        self.number, self.slow, self.start = number, slow, start
        self.sent: Optional[float] = None  # when the request was written
        self.end: Optional[float] = None
        self.status: Optional[int] = None
        self.outcome: Optional[str] = None
        self.received = 0  # bytes of body
        self.length: Optional[int] = None  # the Content-Length, when there is one
        self.error = ""

    @property
    def served(self) -> bool:
        """Answered with a success status (2xx or 3xx) and the whole body."""
        return self.outcome == OK and self.status is not None and 200 <= self.status < 400

    @property
    def kind(self) -> str:
        return "slow" if self.slow else "steady"

    def result(self) -> str:
        """What came of it, for messages: 'HTTP 200', 'HTTP 200, incomplete body (812 of 3000 KB)', 'refused'."""
        if self.status is None:
            return "%s (%s)" % (self.outcome, self.error) if self.error else str(self.outcome)
        text = "HTTP %d" % self.status
        if self.outcome == INCOMPLETE:
            text += ", incomplete body (%d of %s bytes)" % (self.received, "?" if self.length is None else self.length)
        elif self.outcome != OK:
            text += ", " + (self.error or str(self.outcome))
        return text


class Records:
    """The requests of a traffic and the signal's moment, judged: phases, failures, lines for messages, JSON."""

    url: Union[int, str, None]
    slow_url: Union[int, str, None]
    read_rate: Optional[int]
    requests: List[Request]
    signal_name: Optional[str]
    signal_at: Optional[float]  # seconds from the start

    def phase(self, request: Request) -> str:
        """BEFORE, IN_FLIGHT or AFTER the signal (BEFORE for every request when none was sent)."""
        signal_at = self.signal_at
        if signal_at is None or (request.end is not None and request.end <= signal_at):
            return BEFORE
        return IN_FLIGHT if request.start < signal_at else AFTER

    def failed(self, phases: Sequence[str] = (BEFORE, IN_FLIGHT, AFTER), slow: Optional[bool] = None) -> List[Request]:
        """The requests not served (see Request.served) among those of `phases` (and kind: slow True/False)."""
        return [request for request in self.requests if not request.served and self.phase(request) in phases
                and (slow is None or request.slow == slow)]

    def in_window(self, seconds: float) -> List[Request]:
        """The steady requests started within `seconds` after the signal."""
        signal_at = self.signal_at
        if signal_at is None:
            return []
        return [r for r in self.requests if not r.slow and signal_at <= r.start < signal_at + seconds]

    def slow_requests(self) -> List[Request]:
        return [request for request in self.requests if request.slow]

    def describe(self, requests: Sequence[Request], most: int = 20) -> str:
        """One line per request, its timing against the signal: for failure messages (the first `most`)."""
        lines = [self.line(request) for request in requests[:most]]
        if len(requests) > most:
            lines.append("... and %d more" % (len(requests) - most))
        return "\n".join(lines)

    def line(self, request: Request) -> str:
        path = self.slow_url if request.slow else self.url
        when = "started %s, ended %s" % (self._moment(request.start), self._moment(request.end))
        late = request.slow and self.signal_at is not None and self.phase(request) == BEFORE
        return "#%d %s %s %s: %s%s" % (request.number, request.kind, _shown(path), when, request.result(),
                                       "; not in flight at %s" % self.signal_name if late else "")

    def _moment(self, at: Optional[float]) -> str:
        if at is None:
            return "never"
        if self.signal_at is None:
            return "at %.3f s" % at
        offset = at - self.signal_at
        return "%.3f s %s %s" % (abs(offset), "before" if offset < 0 else "after", self.signal_name)

    def summary(self) -> str:
        """'120 requests (118 served), 2 slow (0 served)'."""
        steady = [r for r in self.requests if not r.slow]
        slow = self.slow_requests()
        text = "%d requests (%d served)" % (len(steady), sum(r.served for r in steady))
        return text + (", %d slow (%d served)" % (len(slow), sum(r.served for r in slow)) if slow else "")

    def as_json(self) -> Dict[str, Any]:
        """Every request, for a report: times in seconds from the traffic's start."""
        return {
            "url": None if self.url is None else _shown(self.url),
            "slow": None if self.slow_url is None else _shown(self.slow_url),
            "read_rate": self.read_rate,
            "signal": self.signal_name,
            "signal_at": _round(self.signal_at),
            "requests": [{"number": r.number, "kind": r.kind, "phase": self.phase(r), "start": _round(r.start),
                          "sent": _round(r.sent), "end": _round(r.end), "status": r.status, "outcome": r.outcome,
                          "served": r.served, "received": r.received, "length": r.length, "error": r.error or None}
                         for r in self.requests],
        }


class Traffic(Records):
    """Requests made beside a running sandbox, recorded; see the module's docstring. A context manager:
    `with` calls start(), and stop() at the end (abort() when the block raised)."""

    def __init__(self, box: "Sandbox", url: Union[int, str, None] = None, *, rate: Optional[float] = 50.0,
                 limit: int = LIMIT, concurrency: int = 4, timeout: float = 5.0, slow: Union[int, str, None] = None,
                 in_flight: Optional[int] = None, read_rate: Optional[int] = None, slow_timeout: float = 60.0) -> None:
        if url is None and slow is None:
            raise ValueError("traffic needs a url (steady requests) or slow (requests in flight), or both")
        if rate is not None and not rate > 0:
            raise ValueError("rate must be a number of requests per second above 0, or None (no limit)")
        if in_flight is None:
            in_flight = 0 if slow is None else 1
        if (in_flight > 0) != (slow is not None):
            raise ValueError("in_flight requests need a slow URL, and a slow URL 1 or more in_flight")
        if limit < 0 or concurrency < 1:
            raise ValueError("limit must be 0 or more, concurrency 1 or more")
        if read_rate is not None and (read_rate < 1 or slow is None):
            raise ValueError("read_rate must be a number of bytes per second, 1 or more, with a slow URL")
        self._box = box
        self._steady = None if url is None else _target(url)
        self._slow = None if slow is None else _target(slow)
        self.url, self.slow_url = url, slow
        self.rate, self.limit, self.concurrency, self.timeout = rate, limit, concurrency, timeout
        self.in_flight, self.read_rate, self.slow_timeout = in_flight, read_rate, slow_timeout
        self.requests: List[Request] = []  # appended by the threads as each request starts (list.append is atomic)
        self.signal_name: Optional[str] = None
        self.signal_at: Optional[float] = None
        self.started_wall = 0.0  # time.time() at the start: to place pyinit's exit moment on the same axis
        self._zero = 0.0
        self._numbers = itertools.count()
        self._stopping = threading.Event()
        self._threads: List[threading.Thread] = []
        self._progress: List[threading.Event] = []
        self._open: Set[socket.socket] = set()  # the slow requests' sockets, for abort()
        self._open_lock = threading.Lock()
        self._aborted = False

    # --- life cycle ----------------------------------------------------------------------------

    def __enter__(self) -> "Traffic":
        return self.start()

    def __exit__(self, kind: object, *rest: object) -> None:
        if kind is not None:
            self.abort()
        self.stop()

    def start(self) -> "Traffic":
        """Start the threads: `concurrency` for the steady traffic, one per slow request."""
        if self._threads:
            raise SandboxError("this traffic was started already")
        self.started_wall, self._zero = time.time(), time.monotonic()
        with SignalsHeld():  # each thread kept as it starts (for stop()'s join), and never given a signal
            if self._steady is not None and self.limit:
                schedule = itertools.count()
                for index in range(self.concurrency):
                    self._spawn(self._steady_loop, "steady-%d" % index, schedule)
            for index in range(self.in_flight):
                progress = threading.Event()
                self._progress.append(progress)
                self._spawn(self._slow_request, "slow-%d" % index, progress)
        return self

    def _spawn(self, target: Any, name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name="pyinit-traffic-" + name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def wait_in_flight(self, timeout: float = 30.0) -> None:
        """Return once every slow request is in progress (or has ended: the verdicts will say it was not in
        flight); TimeoutError when `timeout` passes first."""
        deadline = time.monotonic() + timeout
        for progress in self._progress:
            if not progress.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError("the slow requests were not all in progress within %g s" % timeout)
        sent = [request.sent for request in self.slow_requests() if request.sent is not None]
        if sent and self.read_rate is None:  # unanswered for a moment: the service has taken it from its queue
            time.sleep(max(0.0, max(sent) + SETTLE - self.elapsed))

    def warm_up(self, seconds: float = WARM_UP, timeout: float = 30.0) -> None:
        """Return once the slow requests are in flight and the steady traffic has run `seconds` (so that
        "before the signal" has requests); TimeoutError as wait_in_flight()."""
        self.wait_in_flight(timeout)
        if self._steady is not None:
            time.sleep(max(0.0, seconds - self.elapsed))

    def send_signal(self, sig: SignalSpec) -> float:
        """Wait until the slow requests are in flight, then send `sig` to the sandbox (Sandbox.send_signal),
        noting the moment; returns it as time.time()."""
        self.wait_in_flight()
        number = signal_number(sig)
        self.signal_name = signals.name(number)
        self.signal_at = time.monotonic() - self._zero
        sent = time.time()
        self._box.send_signal(number)
        return sent

    def go_on(self, seconds: float) -> None:
        """Return once `seconds` have passed since the signal: the steady traffic runs until then (a window
        judged whole, even when the service has exited within it)."""
        if self.signal_at is not None:
            time.sleep(max(0.0, self.signal_at + seconds - self.elapsed))

    def stop(self) -> List[Request]:
        """No new steady request; wait for those under way (each ends within `timeout`) and for the slow
        ones (within `slow_timeout`); join every thread. Returns the requests, in the order they started."""
        self._stopping.set()
        for thread in self._threads:
            thread.join()
        self.requests.sort(key=lambda request: request.start)
        return self.requests

    def abort(self) -> None:
        """Cut the slow requests short (their sockets shut down) so that stop() returns at once."""
        self._stopping.set()
        with self._open_lock:
            self._aborted = True
            for connection in self._open:
                try:
                    connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._zero

    # --- the requests ----------------------------------------------------------------------------

    def _steady_loop(self, schedule: "itertools.count[int]") -> None:
        """Take the next slot of the schedule, wait for its time, make the request; until stopped or the limit."""
        assert self._steady is not None
        interval = None if self.rate is None else 1.0 / self.rate
        zero, stopping, limit = self._zero, self._stopping, self.limit
        while not stopping.is_set():
            slot = next(schedule)
            if slot >= limit:
                return
            if interval is not None:
                delay = zero + slot * interval - time.monotonic()
                if delay > 0 and stopping.wait(delay):
                    return
            self._exchange(self._steady, False, self.timeout, None)

    def _slow_request(self, progress: threading.Event) -> None:
        assert self._slow is not None
        try:
            self._exchange(self._slow, True, self.slow_timeout, progress)
        finally:
            progress.set()  # ended without being in progress: the waiter need not wait for it

    def _exchange(self, target: "tuple[str, int, bytes]", slow: bool, timeout: float,
                  progress: Optional[threading.Event]) -> None:
        """One GET on a connection of its own, recorded from the connect to the body's last byte."""
        host, port, message = target
        zero = self._zero
        record = Request(next(self._numbers), slow, time.monotonic() - zero)
        self.requests.append(record)
        connection: Optional[socket.socket] = None
        response: Optional[http.client.HTTPResponse] = None
        try:
            if slow:
                connection = self._hold(self._connect_narrow(host, port, timeout))
            else:
                connection = self._box.connect(port, host, timeout)
            connection.sendall(message)
            record.sent = time.monotonic() - zero
            if progress is not None and self.read_rate is None:
                progress.set()
            response = http.client.HTTPResponse(connection, method="GET")
            response.begin()
            record.status, record.length = response.status, response.length
            if progress is not None:
                progress.set()
            if slow and self.read_rate is not None:
                _read_slowly(response, self.read_rate, record)
            else:
                record.received = len(response.read())
            record.outcome = OK
        except http.client.IncompleteRead as failure:
            record.received += len(failure.partial)
            record.outcome = INCOMPLETE
        except ConnectionRefusedError:
            record.outcome = REFUSED
        except SandboxError as failure:  # a private network's sandbox that has ended: nothing listens
            record.outcome, record.error = REFUSED, str(failure)
        except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError) as failure:
            # http.client's RemoteDisconnected (closed before any answer) is a ConnectionResetError
            record.outcome, record.error = RESET, str(failure) or type(failure).__name__
        except socket.timeout:
            record.outcome, record.error = TIMED_OUT, "no answer within %g s" % timeout
        except Exception as failure:  # OSError, HTTPException, a header that does not decode: a thread must not die
            record.outcome, record.error = ERROR, str(failure) or type(failure).__name__
        finally:
            record.end = time.monotonic() - zero
            if response is not None:
                response.close()  # its file holds the socket open past connection.close() otherwise
            if connection is not None:
                if slow:
                    with self._open_lock:
                        self._open.discard(connection)
                connection.close()

    def _connect_narrow(self, host: str, port: int, timeout: float) -> socket.socket:
        """A slow request's connection. For a download at a limited rate on the host's network, made as
        Sandbox.connect() makes it but with the segment size of an Ethernet link and a small receive
        buffer: on loopback (a 64 KB segment) the sender's kernel sizes its buffer to megabytes, takes the
        whole body from the server at once, and delivers it even after the server has died, so nothing
        would be in flight at the server. (On a private network the sandbox's helper makes the socket:
        only the receive buffer is narrowed, once connected.)"""
        if self.read_rate is None:
            return self._box.connect(port, host, timeout)
        buffer = min(_CHUNK, max(4096, self.read_rate // 10))
        if self._box.network != "host":
            connection = self._box.connect(port, host, timeout)
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
            return connection
        connection = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        try:
            connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, ETHERNET_MSS)
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer)
            connection.settimeout(timeout)
            connection.connect((host, port))
        except BaseException:
            connection.close()
            raise
        return connection

    def _hold(self, connection: socket.socket) -> socket.socket:
        """A slow request's socket, known to abort() until it is closed."""
        with self._open_lock:
            if self._aborted:
                connection.close()
                raise ConnectionAbortedError("the traffic was stopped")
            self._open.add(connection)
        return connection

def _target(url: Union[int, str]) -> "tuple[str, int, bytes]":
    """(host, port, the request's bytes), for a port on 127.0.0.1 (path /) or an http:// URL."""
    host, port, path = http_target(url)
    request = "GET %s HTTP/1.1\r\nHost: %s:%d\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n"
    return host, port, (request % (path, host, port)).encode("ascii")


def _read_slowly(response: http.client.HTTPResponse, rate: int, record: Request) -> None:
    """Read the body at `rate` bytes per second at most, counting it in record.received."""
    chunk = max(1, min(_CHUNK, rate // 20))
    began = time.monotonic()
    while True:
        data = response.read(chunk)
        if not data:
            break
        record.received += len(data)
        ahead = began + record.received / rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    if response.length:  # read(amt) returns b"" at a premature end of a Content-Length body, where read() raises
        raise http.client.IncompleteRead(b"", response.length)


def _shown(url: Union[int, str, None]) -> str:
    return "" if url is None else "http://127.0.0.1:%d/" % url if isinstance(url, int) else url


def _round(seconds: Optional[float]) -> Optional[float]:
    return None if seconds is None else round(seconds, 4)
