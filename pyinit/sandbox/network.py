"""A sandbox's network of its own, reached from the caller: sockets connected inside, and forwarded ports.

With network="private" the command runs in a network namespace of its own
(the launcher's --net: only `lo`, up), so any number of sandboxes can bind
127.0.0.1:8080 at once. A socket keeps the network namespace it was made in
and can be handed to another process (SCM_RIGHTS); the caller cannot make
one there itself: setns(2) into the sandbox's user namespace, which an
unprivileged caller must join first, is refused to a process with threads.
So a small helper process joins the sandbox's namespaces (through a pidfd
of its PID 1), connects there on request, and passes each connected socket
back over a Unix socket pair. It is started on the first connection and
ends when the sandbox closes its end (or dies: the kernel closes it then).

`forward(port)` listens on 127.0.0.1 on the caller's side, and a thread
relays each connection accepted there to a socket connected inside, for
HTTP clients that take a host and a port (requests, httpx, urllib); its
sockets are non-blocking, so a client that stops reading holds up only its
own connection. A relay thread that dies (a bug, the caller out of descriptors) closes its listener,
so new clients are refused rather than accepted and never answered, and the
next forward() or url() of that port raises SandboxError saying why.

Run as a file, this module is that helper: `python -I -S sandbox/network.py
FLAGS`, with the control socket on descriptor 3 and the pidfd on 4.
"""

from __future__ import annotations

import array
import os
import selectors
import socket
import subprocess
import sys
import threading
from typing import Dict, Optional

CLONE_NEWNET, CLONE_NEWUSER = 0x40000000, 0x10000000
_REQUEST = 512
_CHUNK = 65536
_BACKLOG = 4 * _CHUNK  # bytes read from one end and not yet sent to the other, at most: then it is not read


def serve(control_fd: int, pidfd: int, flags: int) -> None:
    """The helper: join the namespaces, then connect on each request and send the socket (or the errno) back."""
    from pyinit import linux

    try:
        linux.setns(pidfd, flags)
    except OSError as failure:
        raise SystemExit("pyinit: cannot join the sandbox's network: %s" % failure.strerror) from None
    os.close(pidfd)
    control = socket.socket(fileno=control_fd)
    while True:
        request = control.recv(_REQUEST)
        if not request:
            return  # the sandbox is closed, or gone
        host, port, timeout = request.decode().split()
        try:
            connection = socket.create_connection((host, int(port)), timeout=float(timeout))
        except OSError as failure:
            control.send(b"%d" % (failure.errno or 0))
            continue
        with connection:
            control.sendmsg([b"0"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [connection.fileno()]))])


def _receive_socket(control: socket.socket) -> socket.socket:
    """The helper's answer: a connected socket, or OSError with its errno."""
    fds = array.array("i")
    message, ancillary, _, _ = control.recvmsg(16, socket.CMSG_LEN(fds.itemsize))
    if not message:
        raise ConnectionError("the sandbox's network helper is gone")
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
    if not fds:
        code = int(message)
        raise OSError(code, os.strerror(code))
    return socket.socket(fileno=fds[0])


class Network:
    """The caller's side of a sandbox's private network: the helper process, and the ports forwarded into it."""

    def __init__(self, init_pid: int, init_pidfd: int, held: "type") -> None:
        self._init_pid, self._init_pidfd = init_pid, init_pidfd
        self._held = held  # SignalsHeld: descriptors and threads are made with signals held
        self._lock = threading.Lock()
        self._control: Optional[socket.socket] = None
        self._helper: Optional[subprocess.Popen] = None
        self._forwarders: Dict[int, Forwarder] = {}

    def connect(self, host: str, port: int, timeout: Optional[float]) -> socket.socket:
        """A socket connected to host:port inside the sandbox's network (OSError as connect(2) would give)."""
        with self._lock:
            if self._control is None:
                self._start_helper()
            assert self._control is not None
            self._control.send(b"%s %d %r" % (host.encode(), port, 30.0 if timeout is None else float(timeout)))
            with self._held():
                connection = _receive_socket(self._control)
        connection.settimeout(timeout)
        return connection

    def _start_helper(self) -> None:
        from pyinit import proc

        own_user_namespace = proc.namespace(self._init_pid, "user") == proc.namespace("self", "user")
        flags = CLONE_NEWNET | (0 if own_user_namespace else CLONE_NEWUSER)
        with self._held():
            self._control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                self._helper = subprocess.Popen(
                    [sys.executable, "-I", "-S", os.path.abspath(__file__), str(theirs.fileno()),
                     str(self._init_pidfd), str(flags)], stdin=subprocess.DEVNULL,
                    pass_fds=(theirs.fileno(), self._init_pidfd))
            finally:
                theirs.close()

    def forward(self, port: int) -> "tuple[str, int]":
        """A local address whose connections reach `port` inside (127.0.0.1 there); the same one for the same port.

        SandboxError when the forwarding cannot start, or its relay has died.
        """
        from pyinit.sandbox.result import SandboxError  # not at the top: the helper runs this file alone

        with self._lock:
            if port not in self._forwarders:
                with self._held():
                    try:
                        self._forwarders[port] = Forwarder(self, port)
                    except (OSError, RuntimeError) as failure:  # RuntimeError: no thread can be started
                        raise SandboxError("cannot forward port %d: %s" % (port, failure)) from None
            forwarder = self._forwarders[port]
            if forwarder.failure is not None:
                raise SandboxError("the forwarding of port %d died (%s): its connections are refused"
                                   % (port, forwarder.failure))
            return forwarder.address

    def close(self) -> None:
        """End the forwarding and the helper (it sees its control socket close); idempotent."""
        with self._lock:
            forwarders, self._forwarders = list(self._forwarders.values()), {}
            control, self._control = self._control, None
            helper, self._helper = self._helper, None
        for forwarder in forwarders:
            forwarder.close()
        if control is not None:
            control.close()
        if helper is not None:
            helper.wait(30)


class Forwarder:
    """One forwarded port: a listener on 127.0.0.1 and a thread relaying each connection to one made inside."""

    def __init__(self, network: Network, port: int) -> None:
        self._network, self._port = network, port
        self.failure: Optional[str] = None  # why the relay died, once it has
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address: "tuple[str, int]" = self._listener.getsockname()[:2]
        try:
            self._wake = socket.socketpair()
        except OSError:
            self._listener.close()
            raise
        self._thread = threading.Thread(target=self._relay, name="pyinit-sandbox-forward-%d" % port, daemon=True)
        try:
            self._thread.start()
        except RuntimeError:
            for end in (*self._wake, self._listener):
                end.close()
            raise

    def _relay(self) -> None:
        """The thread: relay until woken; if it dies, refuse every later client, and say why."""
        try:
            self._relay_connections()
        except Exception as failure:  # a dead relay must not leave its listener accepting clients nobody answers
            self.failure = "%s: %s" % (type(failure).__name__, failure)
            self._listener.close()

    def _relay_connections(self) -> None:
        selector = selectors.DefaultSelector()
        selector.register(self._listener, selectors.EVENT_READ)
        selector.register(self._wake[0], selectors.EVENT_READ)
        ends: Dict[socket.socket, _End] = {}
        try:
            while True:
                for key, events in selector.select():
                    if key.fileobj is self._wake[0]:
                        return
                    if key.fileobj is self._listener:
                        self._accept(selector, ends)
                    elif key.fileobj in ends:  # not a socket closed earlier in this round, with its peer
                        _move(ends[key.fileobj], events, selector, ends)  # type: ignore[index]
        finally:
            for connection in ends:
                connection.close()
            selector.close()

    def _accept(self, selector: selectors.BaseSelector, ends: "Dict[socket.socket, _End]") -> None:
        outside, _ = self._listener.accept()
        try:
            inside = self._network.connect("127.0.0.1", self._port, timeout=None)
        except OSError:  # nothing listens inside (yet): the client sees its connection closed
            outside.close()
            return
        pair = _End(outside), _End(inside)
        pair[0].peer, pair[1].peer = pair[1], pair[0]
        for end in pair:
            end.sock.setblocking(False)
            ends[end.sock] = end
            selector.register(end.sock, selectors.EVENT_READ)

    def close(self) -> None:
        self._wake[1].send(b"x")
        self._thread.join()
        for end in (*self._wake, self._listener):
            end.close()


class _End:
    """One socket of a relayed connection: what waits to be sent to it, and whether it still sends anything.

    Non-blocking, with a bounded backlog each way: a client that stops
    reading holds up its own connection, never the relay of the others.
    """

    __slots__ = ("sock", "peer", "outbox", "reading", "shut")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.peer = self  # the other end: set by _accept, once both exist
        self.outbox = bytearray()  # read from the peer, not yet sent to this socket
        self.reading = True  # until this socket's end of file
        self.shut = False  # whether our writing side is shut down (the peer's end of file passed on)

    def events(self) -> int:
        """What to wait for: input while the peer has room for it, output while some waits."""
        wanted = selectors.EVENT_READ if self.reading and len(self.peer.outbox) < _BACKLOG else 0
        return wanted | (selectors.EVENT_WRITE if self.outbox else 0)


def _move(end: _End, events: int, selector: selectors.BaseSelector, ends: "Dict[socket.socket, _End]") -> None:
    """Read what `end` has for its peer, send what waits for it; half-close each side once its peer has ended
    and all has passed; close the pair once both have, or at a reset."""
    try:
        if events & selectors.EVENT_READ and end.reading:
            data = end.sock.recv(_CHUNK)
            end.peer.outbox += data
            end.reading = bool(data)
        if events & selectors.EVENT_WRITE and end.outbox:
            del end.outbox[:end.sock.send(end.outbox)]
        for side in (end, end.peer):
            if not (side.shut or side.outbox or side.peer.reading):
                side.sock.shutdown(socket.SHUT_WR)
                side.shut = True
    except BlockingIOError:
        pass
    except OSError:  # reset either way: nothing more can pass
        end.shut = end.peer.shut = True
    for side in (end, end.peer):
        wanted = 0 if end.shut and end.peer.shut else side.events()
        if side.sock not in selector.get_map():
            if wanted:
                selector.register(side.sock, wanted)
        elif wanted:
            selector.modify(side.sock, wanted)
        else:
            selector.unregister(side.sock)
    if end.shut and end.peer.shut:
        for side in (end, end.peer):
            side.sock.close()
            del ends[side.sock]


if __name__ == "__main__":
    sys.path.append(__file__.rsplit("/", 3)[0])  # run as a file, under -I -S: the package is two folders up
    serve(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))
