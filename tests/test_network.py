"""Parallel-safe sandboxes and real readiness (issue 18): a network of its own, HTTP, custom waits, shared sandboxes.

Servers here are real (`python -m http.server`, small scripts written for
the test) in real network namespaces; every client goes through the
sandbox's connect(), forward() and url(), or through urllib, as a user's
test would.
"""

import contextlib
import json
import os
import resource
import socket
import subprocess
import sys
import textwrap
import urllib.request

import pytest

from pyinit.sandbox import CommandExited, IsolationError, Sandbox, SandboxError, TimeoutExpired
from support import AS_NOBODY, SYSTEM_PYTHON, TIMEOUT, clean_env, free_port, leaked

FIXED_PORT = 8080  # every private sandbox binds the same one
HTTP_SERVER = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(FIXED_PORT)]

# Answers 503 to its first WARM_UP requests, 200 after: a service that warms up.
WARMING = textwrap.dedent("""
    import http.server, sys
    answered = [0]
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            answered[0] += 1
            code = 503 if answered[0] <= int(sys.argv[2]) else 200
            self.send_response(code)
            self.end_headers()
            self.wfile.write(b"answer %d" % answered[0])
        def log_message(self, *args):
            pass
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
""")


def warming(port: int, warm_up: int) -> "list[str]":
    return [sys.executable, "-c", WARMING, str(port), str(warm_up)]


def get(url: str) -> "tuple[int, bytes]":
    with urllib.request.urlopen(url, timeout=TIMEOUT) as response:
        return response.status, response.read()


# --- a network of its own -------------------------------------------------------------------------


def test_two_private_sandboxes_serve_the_same_fixed_port_at_once():
    with Sandbox(HTTP_SERVER, network="private") as first, Sandbox(HTTP_SERVER, network="private") as second:
        first.wait_for_port(FIXED_PORT, timeout=TIMEOUT)
        second.wait_for_port(FIXED_PORT, timeout=TIMEOUT)
        assert first.url(FIXED_PORT) != second.url(FIXED_PORT)
        for box in (first, second):
            assert get(box.url(FIXED_PORT, "/"))[0] == 200
            with box.connect(FIXED_PORT) as connection:
                connection.sendall(b"HEAD / HTTP/1.0\r\n\r\n")
                assert connection.recv(64).startswith(b"HTTP/1.0 200")
        net = {os.readlink("/proc/%d/ns/net" % box.command_pid) for box in (first, second)}
        assert len(net) == 2 and os.readlink("/proc/self/ns/net") not in net
        forwarded = first.forward(FIXED_PORT)
        assert first.forward(FIXED_PORT) == forwarded  # one forwarding per port
    with pytest.raises(OSError):  # forwarding ends with the sandbox
        socket.create_connection(forwarded, timeout=TIMEOUT)


def test_a_private_network_is_not_the_hosts():
    """A listener on the host's 127.0.0.1:PORT is invisible inside, and the command's own is invisible outside."""
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        with Sandbox(["sleep", "100"], network="private") as box:
            with pytest.raises(ConnectionRefusedError):
                box.connect(port, timeout=TIMEOUT)
        with Sandbox([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)], network="private") as box:
            box.wait_for_port(port, timeout=TIMEOUT)  # bound inside though the host's port is taken
            assert get(box.url(port))[0] == 200


def test_the_hosts_network_is_the_default_and_forward_is_the_port_itself():
    port = free_port()
    with Sandbox([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]) as box:
        box.wait_for_port(port, timeout=TIMEOUT)
        assert box.network == "host" and box.forward(port) == ("127.0.0.1", port)
        assert box.url(port, "x") == "http://127.0.0.1:%d/x" % port
        assert get(box.url(port))[0] == 200


def test_a_private_network_needs_namespaces():
    with pytest.raises(IsolationError, match="network='private' needs namespaces"):
        Sandbox(["true"], network="private", isolate=False).start()
    with pytest.raises(ValueError):
        Sandbox(["true"], network="public")


def test_a_forwarded_port_answers_every_request_of_many():
    """300 requests through url() to http.server inside: each is answered. The relay thread used to die of a
    KeyError when both ends of a connection were ready in one round, and every later request then timed out."""
    with Sandbox(HTTP_SERVER, network="private") as box:
        box.wait_for_port(FIXED_PORT, timeout=TIMEOUT)
        url = box.url(FIXED_PORT)
        # .status alone, as a quick check is written: the response is dropped unread, its socket closed at once
        assert [urllib.request.urlopen(url, timeout=TIMEOUT).status for _ in range(300)] == [200] * 300


def test_a_client_that_stops_reading_holds_up_no_other(tmp_path):
    """One client asks a forwarded http.server for 64 MB and reads none of it: the others are answered all
    the same (the relay thread used to block in sendall() to it, and every later client waited)."""
    (tmp_path / "big").write_bytes(b"x" * (64 << 20))
    with Sandbox(HTTP_SERVER, network="private", cwd=tmp_path) as box:
        box.wait_for_port(FIXED_PORT, timeout=TIMEOUT)
        with socket.create_connection(box.forward(FIXED_PORT), timeout=TIMEOUT) as stalled:
            stalled.sendall(b"GET /big HTTP/1.0\r\n\r\n")
            assert stalled.recv(12) == b"HTTP/1.0 200"
            assert [get(box.url(FIXED_PORT))[0] for _ in range(3)] == [200] * 3


def test_a_dead_forwarding_refuses_clients_and_says_so():
    """The relay thread dies (here: the caller has no descriptor left for accept()): the client waiting is cut
    off, not left unanswered; later clients are refused; url() and forward() raise SandboxError."""
    with Sandbox(HTTP_SERVER, network="private") as box:
        box.wait_for_port(FIXED_PORT, timeout=TIMEOUT)
        address = box.forward(FIXED_PORT)
        with socket.socket() as client, no_descriptor_left():
            client.settimeout(TIMEOUT)
            with contextlib.suppress(ConnectionResetError):  # reset at once, or ended: never left waiting
                client.connect(address)  # the kernel accepts it; the relay's accept(2) fails
                assert client.recv(1) == b""
        with pytest.raises(SandboxError, match="forwarding of port %d died" % FIXED_PORT):
            box.url(FIXED_PORT)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, timeout=TIMEOUT)
        with box.connect(FIXED_PORT) as connection:  # the sandbox itself is fine
            connection.sendall(b"HEAD / HTTP/1.0\r\n\r\n")
            assert connection.recv(64).startswith(b"HTTP/1.0 200")


@contextlib.contextmanager
def no_descriptor_left():
    """While inside: RLIMIT_NOFILE at this process's highest descriptor, every lower number taken."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fillers = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(map(int, os.listdir("/proc/self/fd"))) + 1, hard))
    try:
        with contextlib.suppress(OSError):
            while True:
                fillers.append(os.open("/dev/null", os.O_RDONLY))
        yield
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_private_network_is_not_reached_before_the_start():
    """connect() and url() of a private-network sandbox not yet started: SandboxError, not the host's port."""
    port = free_port()
    with socket.create_server(("127.0.0.1", port)):
        box = Sandbox(["sleep", "100"], network="private")
        with pytest.raises(SandboxError, match="not running"):
            box.connect(port, timeout=TIMEOUT)
        with pytest.raises(SandboxError, match="not running"):
            box.url(port)


PRIVATE_AS_NOBODY = """
import json, sys, urllib.request
import pyinit
server = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "8080"]
with pyinit.Sandbox(server, network="private") as a, pyinit.Sandbox(server, network="private") as b:
    a.wait_for_port(8080, timeout=30)
    b.wait_for_port(8080, timeout=30)
    codes = [urllib.request.urlopen(box.url(8080), timeout=30).status for box in (a, b)]
    answer = a.wait_for_http(8080).status
print(json.dumps({"codes": codes, "answer": answer, "isolated": a.isolated}))
"""


@pytest.mark.skipif(not os.access(SYSTEM_PYTHON, os.X_OK), reason="needs Debian's python3 for uid 65534")
def test_private_networks_work_unprivileged(world_readable_package):
    """The helper that connects inside joins the sandbox's user namespace first, as nobody can."""
    top, env = world_readable_package
    done = subprocess.run([*AS_NOBODY, SYSTEM_PYTHON, "-c", PRIVATE_AS_NOBODY], env=env, cwd=top,
                          capture_output=True, text=True, timeout=4 * TIMEOUT)
    assert done.returncode == 0, done
    assert json.loads(done.stdout) == {"codes": [200, 200], "answer": 200, "isolated": True}


# --- readiness ------------------------------------------------------------------------------------


@pytest.mark.parametrize("network", ["host", "private"])
def test_wait_for_http_waits_through_503_until_200(network):
    port = FIXED_PORT if network == "private" else free_port()
    with Sandbox(warming(port, 3), network=network) as box:
        response = box.wait_for_http(port, "/health", timeout=TIMEOUT)
        assert (response.status, response.body) == (200, b"answer 4")


def test_wait_for_http_takes_a_url_a_set_of_codes_or_a_check():
    port = free_port()
    with Sandbox(warming(port, 2)) as box:
        assert box.wait_for_http("http://127.0.0.1:%d/" % port, status={503}, timeout=TIMEOUT).status == 503
        assert box.wait_for_http(port, status=lambda r: r.body == b"answer 3", timeout=TIMEOUT).status == 200
        with pytest.raises(TimeoutExpired, match=r"an HTTP answer with status 418 .*\(the last answer: HTTP 200\)"):
            box.wait_for_http(port, status=418, timeout=0.5)
    with pytest.raises(ValueError):
        Sandbox(["true"]).wait_for_http("ftp://example")


def test_wait_for_http_names_a_refused_connection_and_ends_when_the_command_exits():
    port = free_port()
    with Sandbox(["sleep", "100"], network="private") as box:
        with pytest.raises(TimeoutExpired, match=r"the last answer: \[Errno 111\] Connection refused"):
            box.wait_for_http(port, timeout=0.3)
    with Sandbox(["sh", "-c", "sleep 0.3; exit 4"]) as box:
        with pytest.raises(CommandExited, match="exited with code 4 while waiting for an HTTP answer"):
            box.wait_for_http(port, timeout=TIMEOUT)


def test_wait_until_is_public_with_the_same_rules(tmp_path):
    marker = tmp_path / "count"
    with Sandbox(["sh", "-c", "for i in 1 2 3; do echo $i >> %s; sleep 0.1; done; sleep 100" % marker]) as box:
        box.wait_until(lambda: marker.exists() and marker.read_text().split() == ["1", "2", "3"], timeout=TIMEOUT,
                       what="three lines in %s" % marker)
        with pytest.raises(TimeoutExpired, match="waited 0.2 s for four lines"):
            box.wait_until(lambda: False, timeout=0.2, what=lambda: "four lines")
    with Sandbox(["sh", "-c", "exit 6"]) as box:
        with pytest.raises(CommandExited, match="exited with code 6 while waiting for the moon"):
            box.wait_until(lambda: False, timeout=TIMEOUT, what="the moon")


def test_wait_for_output_looks_at_both_streams_by_default():
    """gunicorn and uvicorn log to stderr: the default is what pyinit-check --ready-output reads too."""
    with Sandbox(["sh", "-c", "echo booted >&2; sleep 100"]) as box:
        assert box.wait_for_output("booted", timeout=TIMEOUT).group(0) == "booted"
        with pytest.raises(TimeoutExpired):
            box.wait_for_output("booted", timeout=0.2, stream="stdout")


# --- shared sandboxes -----------------------------------------------------------------------------

SHARED = """
import os, sys
import pytest

SERVER = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "8080"]

@pytest.fixture(scope="module")
def service(sandbox_factory):
    box = sandbox_factory(SERVER, network="private")
    box.wait_for_http(8080, timeout=30)
    return box

@pytest.mark.parametrize("round", range(3))
def test_served(service, round):
    with service.connect(8080) as connection:
        connection.sendall(b"HEAD / HTTP/1.0\\r\\n\\r\\n")
        assert connection.recv(12) == b"HTTP/1.0 200"
    print("PID 1 is", service.pid)
    with open(os.environ["PIDS_FILE"], "a") as pids:
        pids.write("%d\\n" % service.pid)

def test_fails_with_the_shared_sandbox(service):
    assert False, "on purpose"
"""


def inner_pytest(directory, name: str, text: str, *options: str, **env: str) -> subprocess.CompletedProcess:
    """A pytest session of its own on one test file, with the plugin (as a user's suite runs)."""
    (directory / name).write_text(text)
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "pyinit.pytest_plugin", "-q", "-p", "no:cacheprovider",
                           *options, name], env=clean_env(**env), cwd=directory, capture_output=True, text=True,
                          timeout=4 * TIMEOUT)


def test_a_module_fixture_on_sandbox_factory_serves_many_tests_from_one_tree(tmp_path):
    pids = tmp_path / "pids"
    marker = os.urandom(8).hex()
    done = inner_pytest(tmp_path, "test_shared.py", SHARED, PIDS_FILE=str(pids), LEAK_MARKER=marker)
    assert "1 failed, 3 passed" in done.stdout, done.stdout
    assert len(set(pids.read_text().split())) == 1  # one process tree served all three
    assert "pyinit sandbox 1 (python" in done.stdout and "processes at the failure" in done.stdout, done.stdout
    assert leaked(marker) == []


PARALLEL = """
import sys
SERVER = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "8080"]

def test_one(sandbox):
    box = sandbox(SERVER, network="private")
    assert box.wait_for_http(8080, timeout=30).status == 200

def test_two(sandbox):
    box = sandbox(SERVER, network="private")
    assert box.wait_for_http(8080, timeout=30).status == 200
"""


def test_the_same_fixed_port_in_two_tests_under_pytest_n_2(tmp_path):
    pytest.importorskip("xdist")
    done = inner_pytest(tmp_path, "test_parallel.py", PARALLEL, "-n", "2")
    assert "2 passed" in done.stdout, done.stdout


def test_wait_for_http_on_the_hosts_network_never_asks_another_processes_server():
    """Another test's server answers 200 on the port: it is not this sandbox's, so the wait times out naming why."""
    port = free_port()
    with Sandbox(warming(port, 0)) as other:
        other.wait_for_http(port, timeout=TIMEOUT)
        with Sandbox(["sleep", "100"]) as box:
            with pytest.raises(TimeoutExpired, match="no member of the sandbox listens there"):
                box.wait_for_http(port, timeout=0.5)
