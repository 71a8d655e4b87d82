"""The fork server's messages: requests as NUL-separated fields, descriptors passed with SCM_RIGHTS.

On SOCK_SEQPACKET sockets, one message per datagram. The caller
(forkserver/client.py) sends a request (encode_request), with the launcher's
four descriptors (stdin, stdout, stderr, the report's write end); the server
(forkserver/server.py) answers `started SEQUENCE PID` or `error SEQUENCE TEXT`
(the request's number; `-` for a message that was no request), and later,
for each launcher that has ended, `exit PID STATUS` (a wait status). The
number lets the caller tell the answer to a start it gave up (a Ctrl-C
after the request was sent) from its own; it sends `end PID` for such a
launcher, which the server ends as if the caller had gone. `probe` is
answered `namespaces ok`, `namespaces refused WHY`, or `namespaces error WHY`
(the server itself could not find out). The server hands a
spare launcher and its PID 1 the request as it came.

NUL-separated, not JSON: neither argv nor the environment can hold a NUL,
and the server, whose start-up the first sandbox may wait for, need not
import json to read it. Only C modules are imported here.
"""

import _socket
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Mapping

MESSAGE = 1 << 16  # the longest request: a longer one (a huge environment) gets a launcher started directly
DESCRIPTORS = 4  # stdin, stdout, stderr, the report's write end
_INT = 4  # bytes of a C int: a descriptor in SCM_RIGHTS


def encode_request(sequence: int, argv: "List[str]", cwd: str, env: "Mapping[str, str]", umask: int,
                   orphaned: int) -> bytes:
    """A request to start a launcher: `orphaned` is the signal it gets should the caller go first."""
    fields = ["start", str(sequence), str(orphaned), "%o" % umask, cwd, str(len(argv)), *argv,
              *("%s=%s" % item for item in env.items())]
    encoded = [os.fsencode(field) for field in fields]
    message = b"\0".join(encoded)
    if len(message) > MESSAGE or any(b"\0" in field for field in encoded):
        raise ValueError("a request the fork server cannot take: over %d bytes, or a NUL in it" % MESSAGE)
    return message


def decode_request(message: bytes) -> "Dict[str, Any]":
    """encode_request's arguments, by name (ValueError for a message that is not one)."""
    kind, sequence, orphaned, umask, cwd, count, *rest = [os.fsdecode(field) for field in message.split(b"\0")]
    if kind != "start" or len(rest) < int(count):
        raise ValueError("not a request: %r" % message[:40])
    argv, env = rest[:int(count)], rest[int(count):]
    return {"sequence": int(sequence), "argv": argv, "cwd": cwd, "umask": int(umask, 8), "orphaned": int(orphaned),
            "env": dict(item.split("=", 1) for item in env)}


def send(channel: "_socket.socket", message: bytes, fds: "List[int]") -> None:
    """One datagram, with `fds` attached (SCM_RIGHTS)."""
    attached = b"".join(fd.to_bytes(_INT, sys.byteorder, signed=True) for fd in fds)
    channel.sendmsg([message], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, attached)])


def receive(channel: "_socket.socket") -> "tuple[bytes, List[int]]":
    """One datagram and the descriptors attached to it (a truncated one is refused: ValueError)."""
    message, ancillary, flags, _ = channel.recvmsg(MESSAGE + 1, _socket.CMSG_LEN(DESCRIPTORS * _INT))
    fds = [int.from_bytes(data[start:start + _INT], sys.byteorder, signed=True)
           for level, kind, data in ancillary if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS
           for start in range(0, len(data) - len(data) % _INT, _INT)]
    if flags & (_socket.MSG_TRUNC | _socket.MSG_CTRUNC) or len(message) > MESSAGE:
        for fd in fds:
            os.close(fd)
        raise ValueError("a message too long for the fork server")
    return message, fds
