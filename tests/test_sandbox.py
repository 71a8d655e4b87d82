"""The test-side API: pyinit.Sandbox and pyinit.run, driving the launcher from outside.

Every test starts real commands in real namespaces and checks what the
Sandbox says against the host's own /proc (support.stat, support.status),
against what the commands print, and against their exit codes. Teardown is
checked by host PID and start time: a process counts as gone only when its
/proc entry is gone or belongs to another process.
"""

import ctypes
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings

import pytest

import pyinit
from pyinit.sandbox import CommandExited, IsolationError, IsolationWarning, Sandbox, TimeoutExpired, run
from pyinit.sandbox.launch import Launcher
from pyinit.testing import assert_stops_on
from support import (AS_NOBODY, NOBODY, REPO, SYSTEM_PYTHON, TIMEOUT, clean_env, leaked, program, stat, status,
                     threads, threads_down_to, threads_settled, wait_for)

PR_GET_CHILD_SUBREAPER = 37


def leaver(*args: str) -> "list[str]":
    return program("leaver", *args)


def gone(pid: int, start_time: int) -> bool:
    info = stat(pid)
    return info is None or info.start_time != start_time


def ended(pid: int, argv: "list[str]") -> bool:
    """Whether the process that ran `argv` as `pid` is gone (its PID free, or reused by another command)."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as file:
            return file.read().split(b"\0")[:-1] != [arg.encode() for arg in argv]
    except OSError:
        return True


def host_pids_with_start_times(box: Sandbox) -> "dict[int, int]":
    return {p.host_pid: stat(p.host_pid).start_time for p in box.processes() if stat(p.host_pid)}


def left_line(box: Sandbox) -> "tuple[int, int]":
    """leaver.py's `left CHILD DAEMON`: the two PIDs inside the namespace."""
    _, child, daemon = box.wait_for_output(r"left (\d+) (\d+)\n", timeout=TIMEOUT).group(0).split()
    return int(child), int(daemon)


# --- results ------------------------------------------------------------------------------------


def test_run_gives_exit_code_output_and_report():
    argv = ["sh", "-c", "echo out; echo err >&2; exit 3"]
    result = run(argv, timeout=TIMEOUT)
    assert (result.exit_code, result.signal, result.stdout, result.stderr) == (3, None, "out\n", "err\n")
    assert result.leftovers == [] and result.argv == argv
    assert result.report["command"] == argv and result.report["child"] == {"pid": 2, "exit_code": 3, "signal": None}
    assert result.report["pid"] == 1  # PID 1 of its own namespace
    assert 0 <= result.duration < TIMEOUT and result.stop_duration is None


def test_death_by_signal_is_128_plus_n_with_its_name():
    result = run(["sh", "-c", "kill -USR1 $$"], timeout=TIMEOUT)
    assert (result.exit_code, result.signal) == (128 + signal.SIGUSR1, "SIGUSR1")
    assert result.report["child"]["signal"] == "SIGUSR1"


@pytest.mark.parametrize("argv, code, message", [
    (["no-such-command-here"], 127, "pyinit: cannot run 'no-such-command-here': no such command in PATH"),
    (["/etc/passwd"], 126, "pyinit: cannot run '/etc/passwd': Permission denied"),
])
def test_a_command_that_cannot_run_is_reported_by_pyinit(argv, code, message):
    result = run(argv, timeout=TIMEOUT)
    assert (result.exit_code, result.stderr.strip()) == (code, message)


def test_lazy_exports_cost_the_init_nothing():
    """`import pyinit` loads no test-side module; the names load on first use; the PID-1 path never."""
    probe = ("import sys, pyinit; before = sorted(m for m in sys.modules if m.startswith('pyinit')); "
             "pyinit.Sandbox, pyinit.run, pyinit.Process, pyinit.Result, pyinit.TimeoutExpired, pyinit.IsolationWarning; "
             "print(before, 'pyinit.sandbox' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], env=clean_env(), capture_output=True, text=True)
    assert done.stdout.split() == ["['pyinit']", "True"], done
    imports = subprocess.run([sys.executable, "-S", "-X", "importtime", "-m", "pyinit", "--", "true"], env=clean_env(),
                             capture_output=True, text=True)
    assert imports.returncode == 0
    loaded = {line.split("|")[-1].strip() for line in imports.stderr.splitlines() if "|" in line}
    assert {"pyinit", "pyinit.init"} <= loaded and not loaded & {"pyinit.sandbox", "pyinit.testing", "typing"}
    with pytest.raises(AttributeError):
        pyinit.NoSuchName  # noqa: B018


# --- what is inside -----------------------------------------------------------------------------


def test_processes_and_tree_match_the_hosts_proc():
    with Sandbox(leaver("--stay")) as box:
        child, daemon = left_line(box)
        members = box.processes()
        by_pid = {p.pid: p for p in members}
        assert members[0].pid == 1 and members[0].ppid == 0 and members[0].host_pid == box.pid
        assert stat(box.pid).ppid == box._launcher.popen.pid  # PID 1 is the launcher's child
        command = by_pid[2]
        assert command.host_pid == box.command_pid and command.ppid == 1
        assert command.argv == leaver("--stay") and command.state in "RS"
        assert (by_pid[child].argv, by_pid[child].ppid) == (["sleep", "300"], 2)
        assert (by_pid[daemon].argv, by_pid[daemon].ppid, by_pid[daemon].name) == (["sleep", "301"], 1, "sleep")
        assert sorted(by_pid) == [1, 2, child, daemon]
        for member in members:  # the PID inside is the last of the host's NSpid
            assert status(member.host_pid)["NSpid"].split()[-1] == str(member.pid)
            assert stat(member.host_pid).state == member.state or member.state in "RS"
        lines = box.tree().splitlines()
        assert lines[0].startswith("PID 1 (host %d, ppid 0)" % box.pid)
        assert any(line.startswith("  PID 2 ") for line in lines)
        assert any(line.startswith("    PID %d " % child) and "sleep 300" in line for line in lines)
        assert any(line.startswith("  PID %d " % daemon) and "sleep 301" in line for line in lines)
    assert box.processes() == [] and "ended" in box.tree()


def test_leftovers_are_what_still_ran_once_pyinit_had_settled():
    """Listed by pyinit after its 1 s settle: the command's child (re-parented to PID 1 by then) and the daemon."""
    with Sandbox(leaver("--exit", "4")) as box:
        child, daemon = left_line(box)
        hosts = {p.pid: (p.host_pid, stat(p.host_pid).start_time) for p in box.processes() if p.pid in (child, daemon)}
        result = box.wait(TIMEOUT)
    assert result.exit_code == 4
    left = {p.pid: (p.argv, p.ppid, p.host_pid) for p in result.leftovers}
    assert left == {child: (["sleep", "300"], 1, None), daemon: (["sleep", "301"], 1, None)}
    assert result.report["settle"]["seconds"] == 1.0 and result.report["settle"]["waited"] >= 0.9
    assert all(gone(*hosts[pid]) for pid in (child, daemon))  # the kernel ended them with PID 1


def test_drain_sees_the_same_leftovers_and_reports_its_work():
    """With --drain the init signals what is left; the leftovers are still taken before that."""
    with Sandbox(leaver(), drain=20) as box:
        child, daemon = left_line(box)
        result = box.wait(TIMEOUT)
    assert sorted(p.pid for p in result.leftovers) == sorted([child, daemon])
    assert result.report["drain"] == {"seconds": 20.0, "killed": False, "processes": 0,  # sleep dies on SIGTERM
                                      "stopped": [p.pid for p in result.leftovers]}
    assert result.report["zombies_reaped"] >= 2
    assert result.duration < 20


def test_a_command_that_cleans_up_has_no_leftovers():
    result = run(["sh", "-c", "sleep 300 & kill $!; wait; exit 0"], timeout=TIMEOUT)
    assert (result.exit_code, result.leftovers) == (0, [])


# --- signals ------------------------------------------------------------------------------------


def test_send_signal_takes_numbers_enums_and_names():
    with Sandbox(program("recorder", "rec")) as box:
        box.wait_for_output("rec ready")
        for sig, signo in ((signal.SIGUSR1.value, signal.SIGUSR1), (signal.SIGUSR2, signal.SIGUSR2),
                           ("RTMIN+2", signal.SIGRTMIN + 2), ("HUP", signal.SIGHUP), ("SIGTERM", signal.SIGTERM)):
            box.send_signal(sig)  # one at a time: the recorder would take pending signals lowest first
            box.wait_for_output(r"rec %d 1\n" % signo, timeout=TIMEOUT)
        result = box.wait(TIMEOUT)
    received = [line.split()[1:] for line in result.stdout.splitlines()[1:]]
    expected = [signal.SIGUSR1, signal.SIGUSR2, signal.SIGRTMIN + 2, signal.SIGHUP, signal.SIGTERM]
    assert received == [[str(int(signo)), "1"] for signo in expected]  # each forwarded by PID 1
    assert result.exit_code == 0
    assert result.report["signals"]["received"] == {"SIGUSR1": 1, "SIGUSR2": 1, "SIGRTMIN+2": 1, "SIGHUP": 1,
                                                    "SIGTERM": 1}
    with pytest.raises(ValueError):
        box.send_signal("NOPE")


def test_stop_returns_the_result_with_the_time_it_took():
    with Sandbox(["sh", "-c", "trap 'echo bye; exit 0' TERM; echo ready; while :; do sleep 0.05; done"]) as box:
        box.wait_for_output("ready")
        result = box.stop("TERM", timeout=TIMEOUT)
    assert (result.exit_code, result.stdout) == (0, "ready\nbye\n")
    assert result.forwarded() == {"SIGTERM": 1} == result.received()
    assert 0 <= result.stop_duration < 5 and result.stop_duration <= result.duration


def test_grace_kills_a_command_that_ignores_sigterm():
    with Sandbox(["sh", "-c", "trap '' TERM; echo ready; sleep 100"], grace=0.5) as box:
        box.wait_for_output("ready")
        result = box.stop(signal.SIGTERM, timeout=TIMEOUT)
    assert (result.exit_code, result.signal) == (137, "SIGKILL")
    assert result.report["grace"]["killed"] is True and 0.5 <= result.stop_duration < TIMEOUT


def test_single_child_and_rewrite_reach_the_init():
    script = "trap 'echo usr1; exit 0' USR1; echo ready; while :; do sleep 0.05; done"
    with Sandbox(["sh", "-c", script], single_child=True, rewrite={"TERM": signal.SIGUSR1}) as box:
        box.wait_for_output("ready")
        assert stat(box.command_pid).pgid == stat(box.pid).pgid  # -c: the init's group
        result = box.stop("TERM", timeout=TIMEOUT)
    assert (result.exit_code, result.stdout) == (0, "ready\nusr1\n")
    assert (result.received(), result.forwarded()) == ({"SIGTERM": 1}, {"SIGUSR1": 1})
    with Sandbox(["sleep", "100"]) as box:
        assert stat(box.command_pid).pgid == box.command_pid != stat(box.pid).pgid  # default: its own group


def test_a_stopped_command_shows_as_stopped_and_continues():
    """A SIGSTOPped command is T, as ps would say, and pyinit carries on."""
    with Sandbox(["sh", "-c", "echo ready; while :; do sleep 0.05; done"]) as box:
        box.wait_for_output("ready")
        os.kill(box.command_pid, signal.SIGSTOP)
        wait_for(lambda: [p.state for p in box.processes()][1:2] == ["T"], "the command to show as stopped")
        os.kill(box.command_pid, signal.SIGCONT)
        wait_for(lambda: [p.state for p in box.processes()][1:2] in (["S"], ["R"]), "the command to run again")
        result = box.stop("TERM", timeout=TIMEOUT)
    assert (result.exit_code, result.signal) == (143, "SIGTERM")


def test_stdin_pipe_and_a_result_after_the_block():
    with Sandbox(["sh", "-c", "read line; echo got $line; sleep 300"], stdin=subprocess.PIPE) as box:
        box.stdin.write(b"hello\n")
        box.stdin.flush()
        box.wait_for_output("got hello")
    result = box.wait()  # after the block: what the teardown's SIGKILL to PID 1 did
    assert (result.exit_code, result.stdout, result.report) == (128 + signal.SIGKILL, "got hello\n", None)
    assert box.stdin.closed and box.result is result


# --- waiting ------------------------------------------------------------------------------------


def test_wait_timeout_shows_the_tree_and_keeps_the_sandbox():
    with Sandbox(["sleep", "100"]) as box:
        started = time.monotonic()
        with pytest.raises(TimeoutExpired) as raised:
            box.wait(0.3)
        assert time.monotonic() - started < TIMEOUT
        assert "PID 2 (host %d, ppid 1) S sleep 100" % box.command_pid in str(raised.value)
        assert raised.value.timeout == 0.3 and "sleep 100" in raised.value.tree
        assert stat(box.command_pid).state == "S"
        with pytest.raises(TimeoutExpired, match="output matching 'never'"):
            box.wait_for_output("never", timeout=0.2)


def test_wait_for_output_port_and_path(tmp_path):
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ("import socket, time; time.sleep(0.3); s = socket.socket(); "
              "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', %d)); s.listen(); "
              "open('ready-file', 'w').close(); print('listening', flush=True); time.sleep(100)" % port)
    with Sandbox([sys.executable, "-I", "-S", "-c", server], cwd=tmp_path) as box:
        box.wait_for_port(port, timeout=TIMEOUT)
        box.wait_for_path("ready-file", timeout=TIMEOUT)
        assert box.wait_for_output(r"listen\w+").group(0) == "listening"
        assert box.stop(timeout=TIMEOUT).exit_code == 128 + signal.SIGTERM


# Timeouts longer than poll(2) and select(2) can count: every one of them used to be an OverflowError.
BEYOND_THE_CLOCK = [1e10, 1e12, 1e300, float("inf")]


@pytest.mark.parametrize("timeout", BEYOND_THE_CLOCK)
def test_a_timeout_too_long_for_the_clock_is_no_limit(timeout, tmp_path):
    """run(timeout=1e10), wait(1e12) and every other wait of the API: no limit, as None is."""
    assert run(["sh", "-c", "exit 3"], timeout=timeout).exit_code == 3
    (tmp_path / "ready").touch()
    server = [sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1", "8080"]
    with Sandbox(server, cwd=tmp_path, network="private") as box:
        box.wait_for_output("Serving HTTP", timeout=timeout)
        box.wait_for_port(8080, timeout=timeout)
        box.wait_for_path("ready", timeout=timeout)
        box.wait_until(lambda: True, timeout=timeout)
        assert box.wait_for_http(8080, timeout=timeout).status == 200
        box.connect(8080, timeout=timeout).close()
        assert box.exec(["true"], timeout=timeout).exit_code == 0
        assert not box.wait_for_exit(0.1)
        assert_stops_on(box, "TERM", within=timeout, exit_code=128 + signal.SIGTERM)
        assert box.stop("TERM", timeout=timeout).exit_code == 128 + signal.SIGTERM
        assert box.wait_for_exit(timeout) and box.wait(timeout).exit_code == 128 + signal.SIGTERM


@pytest.mark.parametrize("timeout", [float("nan"), -1, -0.5])
def test_a_timeout_that_is_no_number_of_seconds_is_a_clear_error(timeout):
    with Sandbox(["sleep", "100"]) as box:
        waits = [lambda: box.wait(timeout), lambda: box.stop(timeout=timeout), lambda: box.wait_for_exit(timeout),
                 lambda: box.exec(["true"], timeout=timeout), lambda: box.connect(1, timeout=timeout),
                 lambda: box.wait_for_output("x", timeout=timeout), lambda: box.wait_for_port(1, timeout=timeout),
                 lambda: box.wait_for_path("x", timeout=timeout), lambda: box.wait_for_http(1, timeout=timeout),
                 lambda: box.wait_until(lambda: False, timeout=timeout)]
        for wait in waits:
            with pytest.raises(ValueError, match=r"^timeout must be a number of seconds, 0 or more, or None for no "
                                                 r"limit, not %s$" % re.escape(repr(timeout))):
                wait()
        with pytest.raises(ValueError, match=r"^within must be a number of seconds"):
            assert_stops_on(box, "TERM", within=timeout)
        assert not box.wait_for_exit(0.2)  # neither stop() nor assert_stops_on() sent a signal


def test_the_waits_after_an_exit_allow_pyinits_settle_and_drain(monkeypatch):
    """A readiness wait that sees the command exit, and assert_stops_on, wait for pyinit's settle and drain
    (with the 30 s margin cut to 0.3 s here, settle=1 and drain=1 were a TimeoutExpired instead)."""
    import pyinit.sandbox.ready

    monkeypatch.setattr(pyinit.sandbox.ready, "END_TIMEOUT", 0.3)
    # The daemon outlives the settle, not the drain; the command lives long enough to be seen exit.
    daemon = ["sh", "-c", "setsid sh -c 'trap \"\" TERM; sleep 100' & sleep 0.3; exit 3"]
    with Sandbox(daemon, settle=1, drain=1) as box:
        with pytest.raises(CommandExited, match="exited with code 3"):
            box.wait_for_port(1, timeout=TIMEOUT)
    assert box.result.leftovers and box.result.report["drain"]["seconds"] == 1
    with Sandbox(["sh", "-c", "setsid sh -c 'echo in its session; exec sleep 100' & exec sleep 100"], settle=1.5) as box:
        box.wait_for_output("in its session")  # out of reach of the SIGTERM to the command's group
        assert_stops_on(box, "TERM", within=TIMEOUT, exit_code=128 + signal.SIGTERM)
    assert [process.name for process in box.result.leftovers] == ["sleep"]


def test_wait_for_http_returns_the_response_read_whole_as_its_docstring_says(tmp_path):
    (tmp_path / "health").write_text("fine\n")
    with Sandbox([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "8080"], cwd=tmp_path,
                 network="private") as box:
        response = box.wait_for_http(8080, "/health", timeout=TIMEOUT)
    assert (response.status, response.body, response.read()) == (200, b"fine\n", b"")
    assert 'the body is in\n        `response.body`, and `response.read()` returns b""' in Sandbox.wait_for_http.__doc__


def test_wait_for_output_names_the_options_that_exist():
    """There is no any=PIPE: a wait on streams that are not captured names the Sandbox options that are."""
    with Sandbox(["sleep", "100"], stdout=None, stderr=None) as box:
        for stream, message in [("any", "neither stdout nor stderr is captured: start the sandbox with stdout=PIPE "
                                        "or stderr=PIPE"),
                                ("stdout", "stdout is not captured: start the sandbox with stdout=PIPE"),
                                ("stderr", "stderr is not captured: start the sandbox with stderr=PIPE"),
                                ("both", "stream must be 'stdout', 'stderr' or 'any', not 'both'")]:
            with pytest.raises(ValueError, match="^%s$" % re.escape(message)):
                box.wait_for_output("x", stream=stream)


@pytest.mark.parametrize("wait", ["output", "port", "path"])
def test_a_command_that_exits_ends_a_readiness_wait_at_once(wait, tmp_path):
    with Sandbox(["sh", "-c", "echo starting; echo trouble >&2; exit 3"], cwd=tmp_path) as box:
        started = time.monotonic()
        with pytest.raises(CommandExited) as raised:
            if wait == "output":
                box.wait_for_output("ready", timeout=TIMEOUT)
            elif wait == "port":
                box.wait_for_port(1, timeout=TIMEOUT)
            else:
                box.wait_for_path("never", timeout=TIMEOUT)
        assert time.monotonic() - started < TIMEOUT / 2
    assert raised.value.exit_code == 3
    assert "exited with code 3" in str(raised.value) and "starting" in str(raised.value) and "trouble" in str(raised.value)


def test_a_chatty_command_never_blocks_on_a_full_pipe():
    script = "head -c 5000000 /dev/zero | tr '\\0' x; echo; echo done >&2; sleep 100"
    with Sandbox(["sh", "-c", script]) as box:
        box.wait_for_output("done", stream="stderr", timeout=TIMEOUT)
        assert len(box.stdout) == 5000001
        box.wait_for_output("x$", stream="any")


# --- teardown -----------------------------------------------------------------------------------


@pytest.mark.parametrize("error", [RuntimeError, AssertionError, KeyboardInterrupt])
def test_leaving_the_block_on_an_error_kills_everything_daemon_included(error):
    seen, threads_before = {}, threads_settled()
    with pytest.raises(error, match="inside the block"):
        with Sandbox(leaver("--stay")) as box:
            seen["left"] = left_line(box)
            seen["members"] = host_pids_with_start_times(box)
            seen["hosts"] = {p.pid: p.host_pid for p in box.processes()}
            raise error("inside the block")
    child, daemon = seen["left"]
    members, hosts = seen["members"], seen["hosts"]
    assert sorted(hosts) == [1, 2, child, daemon] and len(members) == 4
    assert [pid for pid, start in members.items() if not gone(pid, start)] == []
    assert box._launcher.popen.returncode is not None and threads_down_to(threads_before) == threads_before


def test_an_interrupted_start_leaves_nothing(monkeypatch):
    """Ctrl-C before the sandbox has even found its PID 1: killing the launcher takes the namespace along."""
    marker = uuid.uuid4().hex

    def interrupted(self):
        wait_for(lambda: leaked(marker), "the command to start")  # the sandbox is running by then
        raise KeyboardInterrupt

    monkeypatch.setattr(Launcher, "find", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Sandbox(["sh", "-c", "sleep 300"], env=clean_env(LEAK_MARKER=marker)).start()
    assert leaked(marker) == []


def test_the_daemon_leads_another_session_and_is_killed_at_teardown():
    with Sandbox(leaver("--stay")) as box:
        child, daemon = left_line(box)
        hosts = {p.pid: p.host_pid for p in box.processes()}
        start = stat(hosts[daemon]).start_time
        assert stat(hosts[daemon]).sid not in (stat(hosts[2]).sid, stat(hosts[1]).sid)  # out of the group's reach
        assert stat(hosts[daemon]).ppid == box.pid
    assert gone(hosts[daemon], start)


def test_the_callers_signal_state_subreaper_flag_and_threads_are_unchanged():
    libc = ctypes.CDLL(None, use_errno=True)

    def state():
        flag = ctypes.c_int(-1)
        assert libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) == 0
        lines = {k: v for k, v in status(os.getpid()).items() if k in ("SigBlk", "SigIgn", "SigCgt")}
        return (lines, signal.pthread_sigmask(signal.SIG_BLOCK, []), flag.value,
                {signo: signal.getsignal(signo) for signo in signal.valid_signals()}, threading.enumerate())

    before, threads_before = state(), threads_settled()
    with Sandbox(leaver("--stay")) as box:
        left_line(box)
        box.send_signal("USR1")
        assert threads() == threads_before + 1  # the output reader
        assert threading.active_count() == 1  # and no threading.Thread
    with Sandbox(leaver()) as box:
        left_line(box)
        assert len(box.wait(TIMEOUT).leftovers) == 2
    assert state() == before and threads_down_to(threads_before) == threads_before


def test_subprocess_keeps_working_beside_it():
    earlier = subprocess.Popen(["sh", "-c", "sleep 0.5; exit 5"])
    with Sandbox(["sh", "-c", "echo ready; sleep 100"]) as box:
        box.wait_for_output("ready")
        assert subprocess.run(["sh", "-c", "exit 7"]).returncode == 7
    assert earlier.wait(TIMEOUT) == 5


def test_several_sandboxes_at_once_from_several_threads():
    threads_before = threads_settled()
    with Sandbox(["sh", "-c", "echo one; sleep 100"]) as first, Sandbox(["sh", "-c", "echo two; sleep 100"]) as second:
        first.wait_for_output("one")
        second.wait_for_output("two")
        assert first.pid != second.pid and status(first.pid)["NSpid"].split()[-1] == "1"
        assert os.readlink("/proc/%d/ns/pid" % first.pid) != os.readlink("/proc/%d/ns/pid" % second.pid)
        results: "dict[int, object]" = {}

        def one(code: int) -> None:
            results[code] = run(["sh", "-c", "sleep 0.%d; exit %d" % (code, code)], timeout=TIMEOUT).exit_code

        workers = [threading.Thread(target=one, args=(code,)) for code in range(1, 5)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(TIMEOUT)
        assert results == {code: code for code in range(1, 5)}
        assert first.stop(timeout=TIMEOUT).exit_code == second.stop(timeout=TIMEOUT).exit_code == 143
    assert threads_down_to(threads_before) == threads_before


# --- privileges and refusals --------------------------------------------------------------------

REPORT_RUN = """
import json, sys, warnings
import pyinit
from pyinit.sandbox import IsolationError
isolate = {"auto": "auto", "true": True, "false": False}[sys.argv[1]]
argv = ["sh", "-c", "cat /proc/self/uid_map; id -u; sleep 300 & echo $!; exec sleep 0.2"]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    try:
        with pyinit.Sandbox(argv, isolate=isolate) as box:
            box.wait_for_output("(.*\\n){3}")
            members = [(p.pid, p.host_pid) for p in box.processes()]
            result = box.wait(30)
    except IsolationError as error:
        print(json.dumps({"error": str(error)}))
        sys.exit(0)
print(json.dumps({"isolated": box.isolated, "exit_code": result.exit_code, "stdout": result.stdout,
                  "leftovers": [(p.pid, p.name) for p in result.leftovers], "members": members,
                  "warnings": [(w.category.__name__, str(w.message)) for w in caught]}))
"""


def report_run(argv, *, env, cwd=REPO) -> dict:
    done = subprocess.run(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=2 * TIMEOUT)
    if done.returncode == 77:
        pytest.skip("no seccomp filter for this architecture (%s)" % os.uname().machine)
    assert (done.returncode, done.stderr) == (0, ""), done
    return json.loads(done.stdout)


@pytest.mark.skipif(not os.access(SYSTEM_PYTHON, os.X_OK), reason="needs Debian's python3 for uid 65534")
def test_unprivileged_goes_through_a_user_namespace(world_readable_package):
    top, env = world_readable_package
    seen = report_run([*AS_NOBODY, SYSTEM_PYTHON, "-c", REPORT_RUN, "auto"], env=env, cwd=top)
    assert (seen["isolated"], seen["warnings"], seen["exit_code"]) == (True, [], 0)
    uid_map, uid, sleeper = seen["stdout"].splitlines()
    assert uid_map.split() == ["0", str(NOBODY), "1"] and uid == "0"
    assert seen["leftovers"] == [[int(sleeper), "sleep"]]
    assert [pid for pid, _ in seen["members"]][:2] == [1, 2]


def test_refused_namespaces_fall_back_to_a_subreaper_with_a_warning():
    """unshare(2) answered with EPERM (a seccomp filter, as Docker's default profile does)."""
    env = clean_env()
    seen = report_run([*program("launcher_no_unshare"), sys.executable, "-c", REPORT_RUN, "auto"], env=env)
    (category, message), = seen["warnings"]
    assert category == "IsolationWarning" and "cannot create the namespaces" in message and "subreaper" in message
    assert (seen["isolated"], seen["exit_code"]) == (False, 0)
    assert all(pid == host for pid, host in seen["members"])  # no namespace: host PIDs
    uid_map, uid, sleeper = seen["stdout"].splitlines()
    assert seen["leftovers"] == [[int(sleeper), "sleep"]]  # and the drain (2 s as a subreaper) then ended it
    assert ended(int(sleeper), ["sleep", "300"])
    refused = report_run([*program("launcher_no_unshare"), sys.executable, "-c", REPORT_RUN, "true"], env=env)
    assert refused["error"].startswith("cannot run in namespaces of its own: cannot create the namespaces")


def test_refused_ptrace_changes_nothing():
    """Where ptrace(2) is refused (a seccomp profile, Yama), the verdict is whole: nothing traces the command.

    (unshare is refused as well here: the subreaper's own leftovers, from its own /proc.)
    """
    seen = report_run([*program("launcher_no_unshare"), "--ptrace", sys.executable, "-c", REPORT_RUN, "auto"],
                      env=clean_env())
    assert [category for category, _ in seen["warnings"]] == ["IsolationWarning"]  # the namespaces' only
    _, _, sleeper = seen["stdout"].splitlines()
    assert (seen["isolated"], seen["exit_code"], seen["leftovers"]) == (False, 0, [[int(sleeper), "sleep"]])


def test_subreaper_teardown_kills_a_double_forked_daemon():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # isolate=False asks for no namespace: no warning
        with Sandbox(leaver("--stay"), isolate=False) as box:
            child, daemon = left_line(box)
            members = host_pids_with_start_times(box)
            assert box.isolated is False and daemon in members and child in members
            assert stat(daemon).ppid == box.pid  # the daemon came back to pyinit, the subreaper
    assert [pid for pid, start in members.items() if not gone(pid, start)] == []


def test_isolation_errors_and_warnings_are_exported():
    assert pyinit.IsolationWarning is IsolationWarning and issubclass(IsolationWarning, UserWarning)
    assert pyinit.IsolationError is IsolationError and pyinit.Sandbox is Sandbox and pyinit.run is run
    with pytest.raises(ValueError):
        Sandbox("sleep 1")
    with pytest.raises(ValueError):
        Sandbox(["true"], isolate="maybe")
    with pytest.raises(ValueError):
        Sandbox(["true"], grace=-1)
