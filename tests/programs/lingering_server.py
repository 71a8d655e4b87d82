"""An HTTP server that keeps serving for LINGER seconds after SIGTERM, then stops and exits 0.

What a service behind a load balancer should do (a Kubernetes preStop sleep, built in): the
balancer takes a moment to drop it, and sends it requests until then. Prints `listening` once
it accepts connections. A ThreadingHTTPServer, one thread per request, HTTP/1.0.

usage: lingering_server.py PORT LINGER
"""

import http.server
import signal
import sys
import threading

port, linger = int(sys.argv[1]), float(sys.argv[2])


class Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"hello\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Hello)
signal.signal(signal.SIGTERM, lambda signo, frame: threading.Timer(linger, server.shutdown).start())
print("listening", flush=True)
server.serve_forever()
server.server_close()
