"""The fork server and its spare launcher (issue 20): fast, and every guarantee of a launcher started directly.

The server starts when pyinit.sandbox is imported; it keeps one spare
launcher whose namespaces and PID 1 are made ahead, and hands it the next
sandbox that asks for the same namespaces. Each scenario runs in a caller
process of its own (support.caller), found afterwards by its LEAK_MARKER.
"""

import json
import os
import signal
import subprocess
import sys
import uuid

import pexpect
import pytest

from support import REPO, SYSTEM_PYTHON, TIMEOUT, caller, clean_env, leaked, wait_for

SERVER = """
import json, os, subprocess, sys, time
import pyinit.sandbox
from pyinit.forkserver.client import ForkServer

def parent(pid):
    return int(open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()[1])

def children(pid):
    return [int(child) for child in open("/proc/%d/task/%d/children" % (pid, pid)).read().split()]

server = ForkServer.get().pid
"""


def test_the_server_starts_with_the_import_and_its_spare_is_the_first_sandboxs_launcher():
    """Imported, the test side has a server already, with a spare; the first sandbox runs in that spare."""
    script = SERVER + """
started = ForkServer._current is not None and ForkServer._current.pid == server
deadline = time.monotonic() + 30
while not children(server) and time.monotonic() < deadline:
    time.sleep(0.01)
spare = children(server)
with pyinit.Sandbox(["sleep", "300"]) as box:
    launcher = parent(box.pid)
print(json.dumps({"started": started, "server_parent": parent(server), "me": os.getpid(), "spare": spare,
                  "launcher": launcher}))
"""
    marker = uuid.uuid4().hex
    seen = caller(script, marker)
    assert seen["started"] and seen["server_parent"] == seen["me"], seen
    assert seen["spare"] == [seen["launcher"]], seen  # the spare made as the server started ran the first sandbox
    wait_for(lambda: leaked(marker) == [], "the server to end with its caller")


def test_a_served_sandbox_runs_in_the_callers_working_directory_and_umask_of_now(tmp_path):
    """The server started long before: what the command gets is the caller's at the sandbox's start, as with Popen."""
    script = SERVER + """
pyinit.run(["true"])
os.chdir(sys.argv[1])
os.umask(0o027)
result = pyinit.run(["sh", "-c", "pwd; umask"])
print(json.dumps({"out": result.stdout.split()}))
"""
    assert caller(script, uuid.uuid4().hex, str(tmp_path)) == {"out": [str(tmp_path), "0027"]}


def test_spares_take_the_shape_of_the_namespaces_asked_for():
    """Sandboxes with their own network and without, in turn: each gets what it asked for, each from the server."""
    script = SERVER + """
seen = []
for network in ["private", "host", "private", "private", "host", "host"]:
    with pyinit.Sandbox(["sh", "-c", "cat /proc/net/dev; sleep 300"], network=network) as box:
        box.wait_for_output("lo:")
        launcher = parent(box.pid)
        interfaces = sorted(line.split(":")[0].strip() for line in box.stdout.splitlines() if ":" in line)
        seen.append([network, interfaces, parent(launcher) == server])
print(json.dumps({"seen": seen}))
"""
    for network, interfaces, served in caller(script, uuid.uuid4().hex)["seen"]:
        assert served, (network, interfaces)
        assert (interfaces == ["lo"]) == (network == "private"), (network, interfaces)


@pytest.mark.parametrize("victim", ["launcher", "its PID 1"])
def test_a_spare_killed_while_it_waits_is_replaced(victim):
    """SIGKILL to the idle spare (its launcher, or its PID 1): the next sandboxes run all the same, and are served."""
    script = SERVER + """
deadline = time.monotonic() + 30
while not (children(server) and children(children(server)[0])) and time.monotonic() < deadline:
    time.sleep(0.01)
spare = children(server)[0]
os.kill(spare if sys.argv[1] == "launcher" else children(spare)[0], 9)
time.sleep(0.2)
results = []
for _ in range(3):
    with pyinit.Sandbox(["sh", "-c", "read line; echo ran; exit 3"], stdin=subprocess.PIPE) as box:
        served = parent(parent(box.pid)) == server
        box.stdin.close()
        result = box.wait(30)
        results.append([result.exit_code, result.stdout, served])
print(json.dumps({"results": results}))
"""
    marker = uuid.uuid4().hex
    assert caller(script, marker, victim.split()[-1]) == {"results": [[3, "ran\n", True]] * 3}
    wait_for(lambda: leaked(marker) == [], "nothing left of the killed spare")


def test_the_server_killed_under_a_running_sandbox_is_an_error_that_names_it_and_leaves_nothing():
    """SIGKILL to the server while its sandbox runs: the launcher dies with it (its orphaned signal); wait() says
    why the status is lost, close() finishes, nothing of the sandbox is left, and the next sandbox runs."""
    script = SERVER + """
from pyinit.sandbox import SandboxError
box = pyinit.Sandbox(["sh", "-c", "sleep 300 & echo up; wait"]).start()
box.wait_for_output("up")
members = [p.host_pid for p in box.processes()]
os.kill(server, 9)
try:
    box.wait(30)
    error = None
except SandboxError as raised:
    error = str(raised)
box.close()
from pyinit import proc
# PID 1 may stay a zombie a while: its parent, the launcher, died, and the host's init reaps it
alive = [pid for pid in members if getattr(proc.stat(pid), "state", "Z") != "Z"]
print(json.dumps({"error": error, "alive": alive, "next": pyinit.run(["sh", "-c", "exit 4"]).exit_code}))
"""
    marker = uuid.uuid4().hex
    assert caller(script, marker) == {
        "error": "pyinit wrote no exit report, and its exit status is lost: the sandboxes' fork server, its parent, "
                 "was killed", "alive": [], "next": 4}
    wait_for(lambda: leaked(marker) == [], "nothing left of the killed server's sandbox")


def test_a_start_given_up_after_its_request_is_ended_and_its_answer_is_not_taken_by_the_next():
    """A Ctrl-C just after a start's request was sent leaves its answer unread: the next start skips it by its
    number and has the server end that launcher (it once took that answer as its own, and the launcher ran on)."""
    script = SERVER + """
from pyinit.forkserver.wire import encode_request, send
pyinit.run(["true"])
given_up = ["sleep", "300.%d" % os.getpid()]
null = os.open(os.devnull, os.O_RDWR)
fork_server = ForkServer.get()
with fork_server._lock:  # what start() does, up to the send, and no further
    fork_server._sequence += 1
    send(fork_server._control, encode_request(fork_server._sequence, ["--unshare", "-p", "KILL", "--exit-report",
                                              "fd:REPORT", "--", *given_up], os.getcwd(), dict(os.environ), 0o22, 9),
         [null] * 4)
os.close(null)
result = pyinit.run(["sh", "-c", "echo mine; exit 5"])

from pyinit import proc
def running(argv):
    return [int(entry) for entry in filter(str.isdigit, os.listdir("/proc")) if proc.cmdline(int(entry)) == argv]
deadline = time.monotonic() + 10
while running(given_up) and time.monotonic() < deadline:
    time.sleep(0.01)
print(json.dumps({"mine": [result.exit_code, result.stdout], "given_up_left": running(given_up)}))
"""
    marker = uuid.uuid4().hex
    assert caller(script, marker) == {"mine": [5, "mine\n"], "given_up_left": []}
    wait_for(lambda: leaked(marker) == [], "nothing left")


def test_the_server_holds_no_descriptor_of_the_callers():
    """An inheritable pipe of the caller's: the server (started by posix_spawn, which closes nothing) closes it."""
    script = """
import json, os, select
read_end, write_end = os.pipe()
os.set_inheritable(write_end, True)
import pyinit
pyinit.run(["true"])
os.close(write_end)
readable = select.select([read_end], [], [], 10)[0]
print(json.dumps({"end_of_file": bool(readable) and os.read(read_end, 1) == b""}))
"""
    assert caller(script, uuid.uuid4().hex) == {"end_of_file": True}


def test_a_fork_of_the_caller_does_not_keep_its_server_alive():
    """A child forked after the import lives on; the caller exits: its server (and spare) go with the caller."""
    script = SERVER + """
pyinit.run(["true"])
child = os.fork()
if child == 0:
    nothing = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(nothing, fd)  # the caller's output is read to its end by the test
    time.sleep(60)
    os._exit(0)
print(json.dumps({"server": server, "child": child}))
"""
    marker = uuid.uuid4().hex
    seen = caller(script, marker)
    try:
        wait_for(lambda: leaked(marker) == [seen["child"]], "the caller's server to end while its forked child lives")
    finally:
        os.kill(seen["child"], signal.SIGKILL)


def test_sandboxes_from_several_threads_at_once_are_all_served():
    """Eight threads, four sandboxes each, one server: every one runs its own command and ends as it should."""
    script = SERVER + """
import threading
results, lock = [], threading.Lock()
def work(n):
    for i in range(4):
        result = pyinit.run(["sh", "-c", "echo %d-%d; exit %d" % (n, i, n)])
        with lock:
            results.append([result.exit_code, result.stdout])
threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(json.dumps({"results": sorted(results)}))
"""
    marker = uuid.uuid4().hex
    expected = sorted([n, "%d-%d\n" % (n, i)] for n in range(8) for i in range(4))
    assert caller(script, marker) == {"results": expected}
    wait_for(lambda: leaked(marker) == [], "nothing left")


def test_a_sandbox_on_the_callers_terminal_gets_a_pty_of_its_own_not_the_spare():
    """stdin and stdout a terminal: as the launcher started directly, the command gets a pty (a spare has none)."""
    script = ("import pyinit\n"
              "result = pyinit.run(['sh', '-c', 'test -t 0 && test -t 1 && echo ON-A-TTY; tty'], stdin=0, stdout=1)\n"
              "print('EXIT', result.exit_code)\n")
    child = pexpect.spawn(sys.executable, ["-c", script], env=clean_env(), cwd=str(REPO), timeout=TIMEOUT,
                          encoding="utf-8")
    child.expect("ON-A-TTY")
    child.expect(r"/dev/pts/\d+")
    child.expect("EXIT 0")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_a_request_too_large_for_the_server_starts_its_launcher_directly():
    """An environment over the server's message: the sandbox still runs, with every variable, started directly."""
    script = SERVER + """
big = "x" * 70000
result = pyinit.run(["sh", "-c", 'printf %s "$BIG" | wc -c'], env={**os.environ, "BIG": big})
print(json.dumps({"code": result.exit_code, "length": result.stdout.strip()}))
"""
    assert caller(script, uuid.uuid4().hex) == {"code": 0, "length": "70000"}


@pytest.mark.parametrize("ending", ["exit", "os._exit", "after a sandbox"])
def test_a_caller_that_leaves_at_once_leaves_nothing_and_no_traceback(ending):
    """The server (and its spare) end with a caller that imported the API and left, answers unread or not."""
    script = SERVER + """
if sys.argv[1] == "after a sandbox":
    pyinit.run(["true"])
elif sys.argv[1] == "exit":
    time.sleep(0.3)  # the probe's answer, asked at the import, waits unread: the server reads ECONNRESET
print(json.dumps({"server": server}), flush=True)
if sys.argv[1] == "os._exit":
    os._exit(0)
"""
    marker = uuid.uuid4().hex
    caller(script, marker, ending)  # its stderr, which the server shares, holds no traceback
    wait_for(lambda: leaked(marker) == [], "the server and its spare to end with their caller")


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs (in a mount namespace of the caller's own)")
def test_a_mount_made_after_the_spare_is_seen_by_the_next_sandbox(tmp_path):
    """The spare's mounts are a copy made ahead: a mount since makes it stale, and the sandbox gets a fresh one."""
    script = """
import json, subprocess, sys, time
import pyinit
pyinit.run(["true"])
time.sleep(0.2)  # the next spare is made, before the mount
subprocess.run(["mount", "-t", "tmpfs", "pyinit-test", sys.argv[1]], check=True)
inside = pyinit.run(["sh", "-c", "grep -c ' %s ' /proc/self/mountinfo || true" % sys.argv[1]])
print(json.dumps({"seen": inside.stdout.strip(), "code": inside.exit_code}))
"""
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", script,
                           str(tmp_path)], env=clean_env(), cwd=REPO, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done
    assert json.loads(done.stdout.splitlines()[-1]) == {"seen": "1", "code": 0}


@pytest.mark.parametrize("limit", [8, 11])
def test_a_server_out_of_descriptors_makes_no_spare_and_sandboxes_still_run(limit):
    """The server inherits RLIMIT_NOFILE as low as `limit`: no spare can be made, and no traceback comes of it;
    the probe is asked another way, and each sandbox still runs in namespaces of its own."""
    script = """
import json, resource, warnings
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), hard))
import pyinit.sandbox
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    results = [pyinit.run(["sh", "-c", "echo $$"]) for _ in range(3)]
print(json.dumps({"results": [[r.exit_code, r.stdout] for r in results], "warnings": [str(w.message) for w in caught]}))
"""
    marker = uuid.uuid4().hex
    assert caller("import sys\n" + script, marker, str(limit)) == {"results": [[0, "2\n"]] * 3, "warnings": []}
    wait_for(lambda: leaked(marker) == [], "nothing left")


# --- no shared fate (issue 26): a server's stop, death or replacement costs a sandbox at most a SandboxError ---

SERVER_FAULTS = """
import signal

def descriptors():
    return len(os.listdir("/proc/self/fd"))
"""


def test_a_root_caller_that_switches_its_euid_leaves_its_running_sandboxes_alone():
    """Root runs a sandbox, becomes nobody for another, and root again: the first runs on, and ends as asked."""
    script = SERVER + """
import signal, warnings
from pyinit import proc
box = pyinit.Sandbox(["sh", "-c", "trap 'exit 7' TERM; echo up; while :; do sleep 0.05; done"]).start()
box.wait_for_output("up")
os.setegid(65534)
os.seteuid(65534)
with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # where nobody cannot make namespaces, it runs without them
    with pyinit.Sandbox(["sleep", "300"]) as other:
        as_nobody = proc.status(other.command_pid)["Uid"].split()[1]  # its effective uid, seen from here
os.seteuid(0)
os.setegid(0)
print(json.dumps({"as_nobody": as_nobody, "first": box.stop("TERM", timeout=30).exit_code,
                  "same_server": ForkServer.get().pid == server}))
"""
    marker = uuid.uuid4().hex
    assert caller(script, marker, python=SYSTEM_PYTHON) == {"as_nobody": "65534", "first": 7, "same_server": True}
    wait_for(lambda: leaked(marker) == [], "nothing left of the caller")


def test_a_stopped_server_costs_a_new_sandbox_nothing_and_blocks_no_close():
    """SIGSTOP to the server under a running sandbox: a new run() keeps its timeout (here it starts directly),
    the running sandbox's close() returns at once (its status lost: the server reaps nothing), nothing leaks."""
    script = SERVER + """
from pyinit.sandbox import SandboxError
before = descriptors()
box = pyinit.Sandbox(["sh", "-c", "echo up; sleep 300"]).start()
box.wait_for_output("up")
os.kill(server, signal.SIGSTOP)
started = time.monotonic()
try:
    outcome = pyinit.run(["sh", "-c", "exit 3"], timeout=5).exit_code
except SandboxError as raised:
    outcome = type(raised).__name__
run_took = time.monotonic() - started
started = time.monotonic()
try:
    box.close()
    box.wait(5)
    closed = "closed"
except SandboxError as raised:
    closed = str(raised)
close_took = time.monotonic() - started
try:
    os.kill(server, signal.SIGCONT)
except ProcessLookupError:
    pass
after = pyinit.run(["sh", "-c", "exit 4"], timeout=30).exit_code
print(json.dumps({"outcome": outcome, "run": run_took < 5, "closed": closed, "close": close_took < 5, "after": after,
                  "descriptors": descriptors() - before}))
"""
    marker = uuid.uuid4().hex
    seen = caller(SERVER_FAULTS + script, marker)
    assert seen["outcome"] in (3, "SandboxError", "TimeoutExpired") and seen["run"] and seen["close"], seen
    assert seen["closed"] in ("closed", "pyinit wrote no exit report, and its exit status is lost: the sandboxes' "
                                        "fork server, its parent, is stopped"), seen
    assert seen["after"] == 4 and seen["descriptors"] == 0, seen  # the old server's two replaced by the new one's
    wait_for(lambda: leaked(marker) == [], "nothing left of the stopped server")


def test_a_killed_server_replaced_by_a_new_one_leaves_its_sandboxes_a_sandbox_error_and_no_descriptor():
    script = SERVER + """
from pyinit.sandbox import SandboxError
pyinit.run(["true"])
before = descriptors()
boxes = [pyinit.Sandbox(["sh", "-c", "echo up; sleep 300"]).start() for _ in range(3)]
for box in boxes:
    box.wait_for_output("up")
os.kill(server, signal.SIGKILL)
after = pyinit.run(["sh", "-c", "exit 4"], timeout=30).exit_code  # a new server
with pyinit.Sandbox(["sleep", "300"]) as fresh:
    served = parent(parent(fresh.pid)) == ForkServer.get().pid  # by the new one: it has the caller's state
errors = []
for box in boxes:
    for step in (lambda: box.wait(30), box.close):
        try:
            step()
            errors.append(None)
        except SandboxError:
            errors.append("SandboxError")
print(json.dumps({"after": after, "errors": sorted(set(errors), key=str), "descriptors": descriptors() - before,
                  "new_server": ForkServer.get().pid != server, "served": served}))
"""
    marker = uuid.uuid4().hex
    assert caller(SERVER_FAULTS + script, marker) == {"after": 4, "errors": [None, "SandboxError"], "descriptors": 0,
                                                      "new_server": True, "served": True}
    wait_for(lambda: leaked(marker) == [], "nothing left of the killed server's sandboxes")
