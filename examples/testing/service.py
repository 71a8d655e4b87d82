"""A small HTTP service with a worker process: the correct version, which stops cleanly on SIGTERM.

    python3 service.py PORT

Listens on 127.0.0.1:PORT and answers every HTTP request, whatever its path
(`/`, `/health`), with status 200 and `hello`, one connection at a time. It runs
a worker in a session of its own (as services start helpers and daemons), so
a signal to the service's process group does not reach it: stopping it is
the service's job. Prints `listening on PORT` once it accepts connections.
On SIGTERM it stops the worker and waits for it, closes the socket, prints
`stopped` and exits 0. service_buggy.py gets this wrong; test_service.py and
`pyinit-check` tell the two apart.
"""

import signal
import socket
import subprocess
import sys
from typing import Callable

WORKER = [sys.executable, "-c", "import signal; signal.pause()"]


def stop_cleanly(worker: subprocess.Popen, server: socket.socket) -> None:
    worker.terminate()
    worker.wait()
    server.close()
    print("stopped", flush=True)
    sys.exit(0)


def answer(connection: socket.socket) -> None:
    """Read the request's head (a client that sees its request unread gets a reset), then answer 200."""
    connection.settimeout(5)  # a client that never sends its request does not hold the service
    try:
        request = b""
        while b"\r\n\r\n" not in request and len(request) < 65536:
            chunk = connection.recv(4096)
            if not chunk:
                return
            request += chunk
        connection.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n")
    except OSError:  # the client went away, or timed out: the next one
        pass


def serve(port: int, on_sigterm: Callable[[subprocess.Popen, socket.socket], None]) -> None:
    worker = subprocess.Popen(WORKER, start_new_session=True)
    server = socket.create_server(("127.0.0.1", port))
    signal.signal(signal.SIGTERM, lambda signo, frame: on_sigterm(worker, server))
    print("listening on %d" % port, flush=True)
    while True:
        connection, _ = server.accept()
        with connection:
            answer(connection)


if __name__ == "__main__":
    serve(int(sys.argv[1]), stop_cleanly)
