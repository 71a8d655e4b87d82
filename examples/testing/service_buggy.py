"""The same service with a buggy SIGTERM handler: it forgets its worker and exits 1.

    python3 service_buggy.py PORT

Everything but the handler is service.py's. The handler closes the socket
and exits with status 1, as a handler that trips over its own clean-up
does, and never stops the worker, which keeps running (and, in a real
service, holding its ports and files) after the service is gone. Under
test_service.py both faults are named: "exited with exit code 1, expected
exit code 0" and "left 1 process(es) running when it exited".
"""

import socket
import subprocess
import sys

from service import serve


def stop_carelessly(worker: subprocess.Popen, server: socket.socket) -> None:
    server.close()
    print("stopped", flush=True)
    sys.exit(1)  # the bug: a failure status for a requested stop, and the worker left running


if __name__ == "__main__":
    serve(int(sys.argv[1]), stop_carelessly)
