"""The test side under faults (issue 17): Ctrl-C anywhere, no descriptor left, a caller SIGKILLed, huge output.

Whatever happens, nothing of a sandbox outlives it: no process (found by a
LEAK_MARKER in its environment), no descriptor of the caller's, no thread,
no file on disk. Each scenario runs in a Python process of its own, so that
the faults (an itimer's KeyboardInterrupt, a lowered RLIMIT_NOFILE, a
SIGKILL) hit a caller and not the test suite.
"""

import os
import re
import subprocess
import sys
import threading
import uuid

import pytest

from pyinit.sandbox import output as sandbox_output
from support import REPO, TIMEOUT, caller, clean_env, leaked, wait_for


STATE = """
import json, os, sys, threading, time
sys.path.insert(0, "tests")  # the caller runs in the repository
import pyinit
from support import threads_down_to

def descriptors():
    return sorted(os.listdir("/proc/self/fd"))

def threads():
    return threads_down_to(1)

def no_fork_server():
    # Every later launcher started here directly, by subprocess.Popen: the fork server refuses.
    from pyinit.forkserver.client import ForkServer
    def refused(cls, state=None):
        raise OSError("no fork server here")
    ForkServer.get = classmethod(refused)

def exhaust():
    # Open /dev/null until no descriptor is left; return them, to be closed again.
    held = []
    try:
        while True:
            held.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        return held

pyinit.run(["true"])  # once per process, outside what is counted: the namespace probe, the fork server's socket
"""

CTRL_C_IN_CLOSE = STATE + """
import signal, time
def interrupt(signo, frame):
    raise KeyboardInterrupt
signal.signal(signal.SIGALRM, interrupt)
before = descriptors()
interrupted = 0
for round in range(40):
    box = pyinit.Sandbox(["sh", "-c", "sleep 300 & setsid sleep 301 & echo up; wait"]).start()
    box.wait_for_output("up")
    try:  # the timer is set and cleared inside: it may fire as close() returns
        signal.setitimer(signal.ITIMER_REAL, 0.0005 * round)
        box.close()
        signal.setitimer(signal.ITIMER_REAL, 0)
    except KeyboardInterrupt:
        interrupted += 1
    box.close()  # finishes what the interrupted one began
    assert box.processes() == [], box.tree()
print(json.dumps({"interrupted": interrupted, "same": descriptors() == before, "threads": threads()}))
"""


def test_a_ctrl_c_inside_close_hangs_nothing_and_a_second_close_finishes():
    marker = uuid.uuid4().hex
    seen = caller(CTRL_C_IN_CLOSE, marker)
    assert seen["interrupted"] > 0 and seen["same"] and seen["threads"] == 1, seen
    assert leaked(marker) == []


RANDOM_CTRL_C = STATE + """
import random, signal
def interrupt(signo, frame):
    raise KeyboardInterrupt
signal.signal(signal.SIGALRM, interrupt)
before = descriptors()
for round in range(60):
    box = None
    try:  # the timer is set and cleared inside: a short one may fire at once, a long one as the block ends
        signal.setitimer(signal.ITIMER_REAL, random.uniform(0, 0.08))
        box = pyinit.Sandbox(["sh", "-c", "sleep 300 & echo up; wait"])
        with box:
            box.wait_for_output("up")
            box.stop(timeout=30)
        signal.setitimer(signal.ITIMER_REAL, 0)
    except KeyboardInterrupt:
        pass
    if box is not None:
        box.close()
print(json.dumps({"same": descriptors() == before, "threads": threads()}))
"""


def test_ctrl_c_at_random_moments_leaks_no_descriptor_and_no_process():
    marker = uuid.uuid4().hex
    seen = caller(RANDOM_CTRL_C, marker)
    assert seen == {"same": True, "threads": 1}
    assert leaked(marker) == []


NO_PIDFD = STATE + """
import errno
from pyinit.sandbox import SandboxError
before = descriptors()
def refused(pid, flags=0):
    raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
os.pidfd_open = refused
try:
    pyinit.Sandbox(["sh", "-c", "sleep 300"]).start()
except SandboxError as error:
    print(json.dumps({"error": str(error), "same": descriptors() == before, "threads": threads()}))
"""


def test_a_start_that_cannot_watch_its_processes_raises_and_leaves_nothing():
    """pidfd_open failing with EMFILE: once, a sandbox whose command was parked for ever; now an error, and nothing left."""
    marker = uuid.uuid4().hex
    seen = caller(NO_PIDFD, marker)
    assert seen == {"error": "cannot watch the sandbox's processes: Too many open files", "same": True, "threads": 1}
    assert leaked(marker) == []


FEW_DESCRIPTORS = STATE + """
import resource
from pyinit.sandbox import SandboxError
if sys.argv[1] == "direct":
    no_fork_server()
before = descriptors()
outcomes = []
for spare in range(0, 12):
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(before) + spare, 1024))
    try:
        with pyinit.Sandbox(["sh", "-c", "sleep 300 & exit 3"]) as box:
            outcomes.append(box.wait(30).exit_code)
    except (OSError, SandboxError) as error:
        outcomes.append(type(error).__name__)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
    assert descriptors() == before, (spare, descriptors(), before)
print(json.dumps({"outcomes": outcomes, "threads": threads()}))
"""


@pytest.mark.parametrize("start", ["served", "direct"])
def test_a_start_out_of_descriptors_fails_cleanly_at_every_count(start):
    """With 0 to 11 descriptors to spare: a clean error or a whole run, and the caller's descriptor table as it was
    (a direct start's /dev/null and pipe pair, made by subprocess.Popen, once leaked at some counts)."""
    marker = uuid.uuid4().hex
    seen = caller(FEW_DESCRIPTORS, marker, start)
    outcomes = seen["outcomes"]
    assert outcomes[-1] == 3 and set(outcomes) <= {3, "OSError", "SandboxError"} and seen["threads"] == 1, seen
    assert leaked(marker) == []


KILLED_CALLER = """
import sys, pyinit
box = pyinit.Sandbox(["sh", "-c", "sleep 300 & setsid sleep 301 & trap '' TERM; echo up; wait"],
                     isolate=sys.argv[1] == "isolated").start()
box.wait_for_output("up")
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("isolation", ["isolated", "not-isolated"])
def test_a_caller_killed_with_sigkill_leaves_nothing_running(isolation):
    """Even without namespaces: pyinit's parent-death signal ends the command's group, its drain the rest."""
    marker = uuid.uuid4().hex
    proc = subprocess.Popen([sys.executable, "-c", KILLED_CALLER, isolation], env=clean_env(LEAK_MARKER=marker),
                            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"ready\n"
        assert len(leaked(marker)) >= 5  # the caller, pyinit, sh and both sleeps (and the launcher)
        proc.kill()
        proc.wait(TIMEOUT)
        wait_for(lambda: leaked(marker) == [], "everything of the sandbox to end")
    finally:
        proc.kill()
        proc.wait()


def test_a_sandbox_writes_nothing_on_disk(tmp_path):
    env = clean_env(TMPDIR=str(tmp_path), LEAK_MARKER=uuid.uuid4().hex)
    script = "import pyinit; print(pyinit.run(['sh', '-c', 'sleep 300 & exit 2'], timeout=30).exit_code)"
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=2 * TIMEOUT)
    assert (done.returncode, done.stdout) == (0, "2\n"), done
    assert os.listdir(tmp_path) == []


class CountingPattern:
    """A regex that counts the characters it is asked to search: the cost of a readiness wait, without a clock."""

    def __init__(self, pattern: str) -> None:
        self.regex = re.compile(pattern)
        self.searched = 0

    def search(self, text: str):
        self.searched += len(text)
        return self.regex.search(text)


def test_a_readiness_wait_searches_each_character_a_bounded_number_of_times():
    """Quadratic once (500 MB of output: 67 s); now each arrival is searched with at most CARRY characters before it."""
    lock = threading.RLock()
    output = sandbox_output.Output(threading.Condition(lock), lock)
    output._streams["stdout"] = sandbox_output._Stream()
    pattern, cursor = CountingPattern("ready"), sandbox_output.Cursor()
    total = 0
    for number in range(5000):
        line = "line %d of a chatty start-up\n" % number
        output._streams["stdout"].add(line, None)
        total += len(line)
        assert output.search(pattern, ["stdout"], cursor) is None
    output._streams["stdout"].add("ready\n", None)
    assert output.search(pattern, ["stdout"], cursor).group(0) == "ready"
    assert pattern.searched <= 5001 * sandbox_output.CARRY + total


def test_a_match_that_straddles_two_reads_is_found():
    lock = threading.RLock()
    output = sandbox_output.Output(threading.Condition(lock), lock)
    stream = output._streams["stdout"] = sandbox_output._Stream()
    cursor = sandbox_output.Cursor()
    stream.add("listening on 127.0.", None)
    assert output.search(re.compile(r"listening on ([\d.]+):(\d+)"), ["stdout"], cursor) is None
    stream.add("0.1:8080\n", None)
    assert output.search(re.compile(r"listening on ([\d.]+):(\d+)"), ["stdout"], cursor).groups() == ("127.0.0.1", "8080")


def test_max_output_keeps_the_tail_and_the_wait_still_finds_the_end():
    from pyinit.sandbox import Sandbox

    script = "head -c 3000000 /dev/zero | tr '\\0' x; echo; echo the end; sleep 100"
    with Sandbox(["sh", "-c", script], max_output=1000) as box:
        box.wait_for_output("the end", timeout=TIMEOUT)
        assert len(box.stdout) <= 1000 and box.stdout.endswith("x\nthe end\n")
        assert "the end" in box.output_tail()
        result = box.stop(timeout=TIMEOUT)
    assert len(result.stdout) <= 1000 and result.stdout.endswith("the end\n")


NO_DESCRIPTOR_AT_CLOSE = STATE + """
from pyinit.sandbox import SandboxError
box = pyinit.Sandbox(["sh", "-c", "sleep 300 & setsid sleep 301 & echo up; wait"], isolate=False).start()
box.wait_for_output("up")
held = exhaust()
try:
    box.close()
    outcome = "closed"
except (OSError, SandboxError) as error:
    outcome = type(error).__name__
for fd in held:
    os.close(fd)
box.close()
print(json.dumps({"outcome": outcome, "threads": threads()}))
"""


def test_no_descriptor_at_close_without_namespaces_still_ends_everything():
    """Without /proc to find the tree, the teardown has pyinit end it, as when orphaned: nothing is left, nothing blocks."""
    marker = uuid.uuid4().hex
    seen = caller(NO_DESCRIPTOR_AT_CLOSE, marker)
    assert seen["threads"] == 1, seen
    wait_for(lambda: leaked(marker) == [], "everything of the sandbox to end")


OUT_OF_DESCRIPTORS = STATE + """
box = pyinit.Sandbox(["sh", "-c", "sleep 100 & echo up; read x; exit 5"], stdin=pyinit.sandbox.PIPE).start()
box.wait_for_output("up")
held = exhaust()
box.stdin.write(b"go\\n"); box.stdin.flush()
result = box.wait(30)
for fd in held:
    os.close(fd)
box.close()
print(json.dumps([result.exit_code, [p.argv for p in result.leftovers], result.report is not None]))
"""


def test_a_caller_out_of_descriptors_still_gets_the_whole_verdict():
    """The report comes over a pipe opened at the start: a caller with no descriptor left still learns the leftovers.

    Once, leftovers were silently [] and the report None: a clean result that could not be checked.
    """
    marker = uuid.uuid4().hex
    assert caller(OUT_OF_DESCRIPTORS, marker) == [5, [["sleep", "100"]], True]
    assert leaked(marker) == []


def test_a_caller_whose_proc_is_another_namespaces_is_told_at_once():
    """Under `unshare --fork --pid` without --mount-proc the PIDs in /proc are not the caller's: say so, do not wait 30 s."""
    script = ("import pyinit, time\nstarted = time.monotonic()\ntry:\n    pyinit.run(['true'])\n"
              "except pyinit.SandboxError as error:\n    print(round(time.monotonic() - started), error)\n")
    done = subprocess.run(["unshare", "--fork", "--pid", sys.executable, "-c", script], env=clean_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=2 * TIMEOUT)
    assert done.returncode == 0 and done.stderr == "", done
    assert done.stdout.startswith("0 this process's /proc belongs to another PID namespace"), done.stdout


# --- the fork server: one per process, single-threaded, ended with its caller ----------------------------

SERVED = STATE + """
from pyinit.forkserver.client import ForkServer

def parent(pid):
    return int(open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()[1])

server = ForkServer.get().pid
boxes = [pyinit.Sandbox(["sleep", "300"]).start() for _ in range(3)]
launchers = {parent(box.pid) for box in boxes}  # each PID 1's parent: its launcher
threads = open("/proc/%d/status" % server).read().split("Threads:")[1].split()[0]
print(json.dumps({"launchers": len(launchers), "their_parents": sorted({parent(pid) for pid in launchers}),
                  "server": server, "server_parent": parent(server), "me": os.getpid(), "threads": threads}),
      flush=True)
if sys.argv[1] == "exit-at-once":
    os._exit(0)
"""


@pytest.mark.parametrize("ending", ["exit-at-once", "normal-exit"])
def test_sandboxes_are_forked_by_one_single_threaded_server_that_ends_with_its_caller(ending):
    """Three sandboxes, one fork server (a child of the caller, one thread), parent of their launchers.

    The caller ends without closing them, by os._exit (no clean-up at all) or a normal exit (atexit):
    the server sees its socket close, ends every launcher, and nothing is left.
    """
    marker = uuid.uuid4().hex
    seen = caller(SERVED, marker, ending)
    assert (seen["launchers"], seen["their_parents"], seen["server_parent"], seen["threads"]) == (
        3, [seen["server"]], seen["me"], "1"), seen
    wait_for(lambda: leaked(marker) == [], "the server and every sandbox to end with their caller")


FALLBACK = STATE + """
no_fork_server()
with pyinit.Sandbox(["sh", "-c", "echo direct; exit 4"]) as box:
    result = box.wait(30)
print(json.dumps({"code": result.exit_code, "out": result.stdout, "report": result.report is not None}))
"""


def test_without_a_fork_server_a_sandbox_starts_its_launcher_directly():
    marker = uuid.uuid4().hex
    assert caller(FALLBACK, marker) == {"code": 4, "out": "direct\n", "report": True}
    assert leaked(marker) == []


# --- the life cycle under faults (issue 26) ----------------------------------------------------------------

ABANDONED = STATE + """
import gc, warnings
before = descriptors()
reports, warned = 0, 0
for round in range(20):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        box = pyinit.Sandbox(["sh", "-c", "echo up; sleep 300"]).start()
        box.wait_for_output("up")
        del box  # never closed
        gc.collect()
    warned += sum(issubclass(warning.category, ResourceWarning) for warning in caught)
    result = pyinit.run(["sh", "-c", "echo next; exit 3"], timeout=30)
    reports += result.report is not None and result.exit_code == 3 and result.stdout == "next\\n"
print(json.dumps({"reports": reports, "warned": warned, "same": descriptors() == before, "threads": threads()}))
"""


def test_an_abandoned_sandbox_is_ended_with_a_warning_and_never_touches_the_next_ones_descriptors():
    """Twenty sandboxes never closed, each followed by one that is: every one of those gets its whole report,
    each abandoned one a ResourceWarning, and its namespace, thread and descriptors end with it."""
    marker = uuid.uuid4().hex
    assert caller(ABANDONED, marker) == {"reports": 20, "warned": 20, "same": True, "threads": 1}
    assert leaked(marker) == []


NO_THREAD = STATE + """
import _thread, time, types
from pyinit.sandbox import SandboxError, output
def refused(function, args):
    raise RuntimeError("can't start new thread")
output._thread = types.SimpleNamespace(**{**vars(_thread), "start_new_thread": refused})  # as at RLIMIT_NPROC
before = descriptors()
started = time.monotonic()
try:
    pyinit.Sandbox(["sh", "-c", "sleep 300"]).start()
    error = None
except SandboxError as raised:
    error = str(raised)
print(json.dumps({"error": error, "seconds": time.monotonic() - started, "same": descriptors() == before,
                  "threads": threads()}))
"""


def test_a_reader_thread_that_cannot_start_is_an_error_at_once_and_leaves_nothing():
    marker = uuid.uuid4().hex
    seen = caller(NO_THREAD, marker)
    assert seen["error"] == "cannot start the thread that reads the sandbox's output: can't start new thread", seen
    assert seen["seconds"] < TIMEOUT / 2 and seen["same"] and seen["threads"] == 1, seen
    assert leaked(marker) == []


CTRL_C_AROUND_CLOSE = STATE + """
import random, signal
from pyinit import proc
def interrupt(signo, frame):
    raise KeyboardInterrupt
def commands():  # this caller's sleep 3001, still running
    return [pid for pid in proc.descendants(os.getpid())
            if proc.cmdline(pid) == ["sleep", "3001"] and getattr(proc.stat(pid), "state", "Z") != "Z"]
signal.signal(signal.SIGALRM, interrupt)
limit = float(sys.argv[1])
before = descriptors()
running_on = 0
for round in range(300):
    try:  # no second close(): the one of the with block must have ended everything, interrupted or not
        signal.setitimer(signal.ITIMER_REAL, random.uniform(0, limit))
        with pyinit.Sandbox(["sh", "-c", "sleep 3001 & echo up; wait"]) as box:
            box.wait_for_output("up")
            time.sleep(random.uniform(0, limit))
        signal.setitimer(signal.ITIMER_REAL, 0)
    except KeyboardInterrupt:
        signal.setitimer(signal.ITIMER_REAL, 0)
    # An interrupt as __exit__ is entered, before its first statement, skips it (1 round in about 2,000): no
    # Python code can catch that one; the sandbox's finalizer ends it once the program lets go of it.
    box = None
    running_on += bool(commands())
print(json.dumps({"running_on": running_on, "same": descriptors() == before, "threads": threads()}))
"""


@pytest.mark.stress
@pytest.mark.parametrize("limit", [0.04, 0.08, 0.15])
def test_300_ctrl_c_at_random_moments_around_the_with_block_leave_nothing_running_and_no_descriptor(limit):
    marker = uuid.uuid4().hex
    assert caller(CTRL_C_AROUND_CLOSE, marker, str(limit), timeout=600) == {
        "running_on": 0, "same": True, "threads": 1}
    assert leaked(marker) == []


MANY_DESCRIPTORS = """
import json, os, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
held = [os.open("/dev/null", os.O_RDONLY) for _ in range(1100)]  # every new descriptor is over 1,023 now
sys.path.insert(0, "tests")
import pyinit  # its fork server's socket too
from support import threads_down_to
codes = []
for isolate in (True, False):
    with pyinit.Sandbox(["sh", "-c", "echo up; read line; exit 3"], stdin=pyinit.sandbox.PIPE, isolate=isolate) as box:
        box.wait_for_output("up")
        box.stdin.write(b"go\\n")
        box.stdin.flush()
        result = box.wait(30)
        codes.append([result.exit_code, result.report is not None])
for fd in held:
    os.close(fd)
print(json.dumps({"codes": codes, "threads": threads_down_to(1)}))
"""


def test_a_caller_holding_more_than_1024_descriptors_gets_its_sandboxes():
    """select() cannot take a descriptor over 1,023: every wait of the test side and its fork server polls."""
    marker = uuid.uuid4().hex
    assert caller(MANY_DESCRIPTORS, marker) == {"codes": [[3, True], [3, True]], "threads": 1}
    assert leaked(marker) == []


EMFILE_IN_THREADS = STATE + """
import resource
from pyinit.sandbox import SandboxError
if sys.argv[1] == "direct":
    no_fork_server()
before = descriptors()
outcomes = {}
def work():
    for round in range(15):
        try:
            with pyinit.Sandbox(["sh", "-c", "exit 3"]) as box:
                outcome = box.wait(30).exit_code
        except (OSError, SandboxError) as error:
            outcome = type(error).__name__
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
resource.setrlimit(resource.RLIMIT_NOFILE, (len(before) + 40, 1024))  # too few for 8 sandboxes at once
workers = [threading.Thread(target=work) for _ in range(8)]
for worker in workers:
    worker.start()
for worker in workers:
    worker.join()
resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
print(json.dumps({"outcomes": sorted(map(str, outcomes)), "same": descriptors() == before, "threads": threads()}))
"""


@pytest.mark.stress
@pytest.mark.parametrize("start", ["served", "direct"])
def test_sandboxes_in_threads_out_of_descriptors_fail_cleanly_and_leak_nothing(start):
    """8 threads, descriptors for a few sandboxes at a time: each one runs or fails with a clean error (the
    direct start's streams included, which Popen used to leak), and the caller's table ends as it began."""
    marker = uuid.uuid4().hex
    seen = caller(EMFILE_IN_THREADS, marker, start, timeout=300)
    assert set(seen["outcomes"]) <= {"3", "OSError", "SandboxError"} and seen["same"] and seen["threads"] == 1, seen
    assert leaked(marker) == []
