"""No init: the command itself is PID 1 (`pyinit --unshare --bare`, Sandbox(init=False), pyinit-check --bare).

Does this service need an init? As PID 1 of its namespace, the kernel drops every signal sent to it
whose action is the default, and every orphan of the namespace becomes its child to reap. Proved on
real programs: `python -m http.server` has no SIGTERM handler and ignores the signal as PID 1 (it
needs an init); nginx handles it and reaps its workers (it does not); a Python service whose children
leave orphans it never waits for piles up their zombies (it needs one), and the same service reaping
everything below it does not. Each verdict is seen both ways, and each service that needs an init as
PID 1 passes the same check under pyinit.
"""

import json
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest

import pyinit
from support import PYINIT, TIMEOUT, assert_no_traceback, clean_env, free_port, nginx, program, pyinit_lines

CHECK = [sys.executable, "-m", "pyinit.check"]
IGNORED_AS_PID1 = "it ignored SIGTERM as PID 1: the kernel drops a signal with the default action sent to PID 1"


def check(*argv: str) -> subprocess.CompletedProcess:
    done = subprocess.run([*CHECK, *argv], env=clean_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=4 * TIMEOUT)
    assert_no_traceback(done.stderr)
    return done


def verdicts(done: subprocess.CompletedProcess) -> "list[str]":
    """The PASS and FAIL lines of pyinit-check's output, in order."""
    return [line for line in done.stdout.splitlines() if line.startswith(("PASS  ", "FAIL  "))]


def http_server(port: int) -> "list[str]":
    return [sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1", str(port)]


def junit_cases(path) -> "dict[str, str | None]":
    """The test cases of a JUnit file: name -> failure message (None when it passed)."""
    return {case.get("name"): (case.find("failure").get("message") if case.find("failure") is not None else None)
            for case in ET.parse(path).getroot().iter("testcase")}


# --- pyinit-check --bare ---------------------------------------------------------------------------

def test_http_server_needs_an_init_it_ignores_sigterm_as_pid1(tmp_path):
    """No handler for SIGTERM: as PID 1 the signal is dropped, it runs on past --within and is SIGKILLed.
    Text, JUnit and JSON all say it needs an init, and why."""
    port = free_port()
    done = check("--bare", "--ready-port", str(port), "--within", "2", "--junit", str(tmp_path / "junit.xml"),
                 "--json", str(tmp_path / "result.json"), "--", *http_server(port))
    assert done.returncode == 1, done
    assert verdicts(done) == ["FAIL  still running 2 s after SIGTERM: SIGKILLed",
                              "PASS  no zombie of PID 1 stayed one more than 1 s (0 seen)",
                              "FAIL  needs an init: " + IGNORED_AS_PID1], done.stdout
    assert re.search(r"^  PID 1 \(host \d+, ppid 0\) S .* -m http.server", done.stdout, re.M), done.stdout
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["bare"] == {"needs_init": True, "zombies_seen": 0, "zombies_unreaped": [],
                              "signal": {"name": "SIGTERM", "disposition": "default", "ignored_as_pid1": True}}
    assert (result["exit_code"], result["signal"], result["leftovers"]) == (137, "SIGKILL", [])
    cases = junit_cases(tmp_path / "junit.xml")
    assert cases[" ".join(http_server(port)) + " runs without an init"] == "needs an init: " + IGNORED_AS_PID1


def test_a_grace_period_that_ends_in_sigkill_is_no_stop():
    """--grace is the launcher's then, as a runtime's stop timeout: its SIGKILL stops the server in time, but
    the signal did not, and the last line says so."""
    port = free_port()
    done = check("--bare", "--ready-port", str(port), "--grace", "1", "--within", "10", "--", *http_server(port))
    assert done.returncode == 1, done
    lines = verdicts(done)
    assert lines[1:] == ["FAIL  exit code 137 (killed by SIGKILL), expected 0",
                         "PASS  no zombie of PID 1 stayed one more than 1 s (0 seen)",
                         "FAIL  needs an init: " + IGNORED_AS_PID1], lines


def test_http_server_under_pyinit_stops_on_sigterm():
    """The same server under pyinit (no --bare): pyinit takes the signal and forwards it, the server dies of it."""
    port = free_port()
    done = check("--ready-port", str(port), "--within", "5", "--expect-exit", "143", "--", *http_server(port))
    assert done.returncode == 0, done
    lines = verdicts(done)
    assert lines[0].startswith("PASS  stopped "), lines
    assert lines[1:] == ["PASS  exit code 143 (killed by SIGTERM), expected 143"], lines


def test_nginx_does_not_need_an_init(tmp_path):
    """nginx's master as PID 1 handles SIGTERM, stops its workers and reaps them: every verdict holds."""
    service = nginx(tmp_path)
    done = service.check("--bare", "--ready-output", service.ready, "--within", "10", "--no-leftovers",
                         "--json", str(tmp_path / "result.json"))
    assert done.returncode == 0, done
    lines = verdicts(done)
    assert lines[0].startswith("PASS  stopped ") and lines[1] == "PASS  exit code 0, expected 0", lines
    assert lines[2:] == [
        "PASS  nothing can be left running: the kernel SIGKILLed every other member when PID 1 exited",
        lines[3],
        "PASS  does not need an init: it stopped on SIGTERM as PID 1, and left no zombie unreaped"], lines
    assert re.fullmatch(r"PASS  no zombie of PID 1 stayed one more than 1 s \(\d+ seen\)", lines[3]), lines
    bare = json.loads((tmp_path / "result.json").read_text())["bare"]
    assert (bare["needs_init"], bare["signal"]["disposition"], bare["zombies_unreaped"]) == (False, "caught", [])


def test_a_service_that_leaves_its_adopted_orphans_unreaped_needs_an_init(tmp_path):
    """It handles SIGTERM and stops in time, but as PID 1 the orphans of its children come to it as zombies."""
    done = check("--bare", "--ready-output", "ready", "--within", "5", "--json", str(tmp_path / "result.json"),
                 "--", *program("orphaner", 5))
    assert done.returncode == 1, done
    lines = verdicts(done)
    assert lines[0].startswith("PASS  stopped ") and lines[1] == "PASS  exit code 0, expected 0", lines
    assert re.fullmatch(r"FAIL  left 5 zombies of PID 1 unreaped more than 1 s: "
                        r"\[python3?[\d.]*\] \(PID \d+, \d+\.\d s\)(; \[python3?[\d.]*\] \(PID \d+, \d+\.\d s\)){4}",
                        lines[2]), lines
    assert lines[3] == "FAIL  needs an init: it left 5 zombies unreaped", lines
    bare = json.loads((tmp_path / "result.json").read_text())["bare"]
    assert bare["needs_init"] and len(bare["zombies_unreaped"]) == 5 and not bare["signal"]["ignored_as_pid1"]
    assert all(zombie["seconds"] >= 1 for zombie in bare["zombies_unreaped"]), bare


def test_the_same_service_reaping_everything_below_it_does_not_need_an_init():
    """With --reap it waits for every child that ends (SIGCHLD, waitpid(-1)): a zombie is one for a moment only."""
    done = check("--bare", "--ready-output", "ready", "--within", "5", "--", *program("orphaner", 5, "--reap"))
    assert done.returncode == 0, done
    assert verdicts(done)[-1] == ("PASS  does not need an init: it stopped on SIGTERM as PID 1, and left no zombie "
                                  "unreaped"), done.stdout


def test_the_service_that_leaves_orphans_passes_under_pyinit():
    """Without --bare pyinit is PID 1: the orphans come to it, and it reaps them."""
    done = check("--ready-output", "ready", "--within", "5", "--no-leftovers", "--", *program("orphaner", 5))
    assert done.returncode == 0, done
    assert not any("zombie" in line or "init" in line for line in verdicts(done)), done.stdout


@pytest.mark.parametrize("trap, does", [("echo caught", "handles"), ("", "ignores")])
def test_a_signal_the_service_handles_or_ignores_itself_is_not_for_want_of_an_init(trap, does):
    """A handler that does not stop, or SIG_IGN: still running at --within, but an init would change nothing."""
    done = check("--bare", "--ready-output", "ready", "--within", "1", "--",
                 "sh", "-c", "trap '%s' TERM; echo ready; while :; do sleep 0.1; done" % trap)
    assert done.returncode == 1, done
    lines = verdicts(done)
    assert lines[0] == "FAIL  still running 1 s after SIGTERM: SIGKILLed", lines
    # A `sleep` that has just exited may be seen as a zombie before sh reaps it: a moment is not a leak.
    assert re.fullmatch(r"PASS  no zombie of PID 1 stayed one more than 1 s \(\d+ seen\)", lines[1]), lines
    assert lines[2:] == ["PASS  does not need an init: it %s SIGTERM itself, as it would under an init, and left "
                         "no zombie unreaped" % does], lines


@pytest.mark.parametrize("argv, message", [
    (["--bare", "--sweep", "3"], "--bare and --sweep: not together"),
    (["--bare", "--single-child"], "--bare and --single-child: not together"),
])
def test_bare_refuses_what_it_cannot_do(argv, message):
    done = check(*argv, "--", "true")
    assert done.returncode == 125 and done.stdout == "", done
    assert done.stderr.startswith("pyinit-check: " + message) and len(done.stderr.splitlines()) == 1, done.stderr


def test_a_command_that_cannot_run_bare_is_named():
    done = check("--bare", "--", "no-such-command-here")
    assert done.returncode == 125, done
    assert done.stderr == "pyinit-check: cannot run 'no-such-command-here': no such command in PATH\n", done.stderr


# --- Sandbox(init=False) and pyinit.run(init=False) ------------------------------------------------

def test_the_command_is_pid1_and_a_signal_with_no_handler_is_dropped():
    """http.server as PID 1: SIGTERM through the launcher is counted and dropped; SIGKILL ends it. Under pyinit
    the same SIGTERM ends it."""
    port = free_port()
    with pyinit.Sandbox(http_server(port), init=False) as box:
        box.wait_for_port(port, timeout=TIMEOUT)
        (only,) = box.processes()
        assert (only.pid, only.ppid, only.host_pid, box.pid) == (1, 0, box.command_pid, box.command_pid)
        with pytest.raises(pyinit.TimeoutExpired):
            box.stop("TERM", timeout=1)
        box.kill_command()
        result = box.wait(TIMEOUT)
    assert (result.exit_code, result.signal, result.leftovers) == (137, "SIGKILL", [])
    assert result.received() == {"SIGTERM": 1}  # through the launcher, which counts it
    assert result.stop_duration > 0.5  # from the launcher's taking SIGTERM to the SIGKILL, 1 s after it was sent
    with pyinit.Sandbox(http_server(port)) as box:
        box.wait_for_port(port, timeout=TIMEOUT)
        assert box.stop("TERM", timeout=TIMEOUT).exit_code == 143


def test_zombies_of_orphans_stay_with_no_init():
    """As PID 1, the service gets its children's orphans, and they stay zombies: it waits for its children only."""
    with pyinit.Sandbox(program("orphaner", 3), init=False) as box:
        box.wait_for_output("ready", timeout=TIMEOUT)
        box.wait_until(lambda: len(zombies_of(box, 1)) == 3, timeout=TIMEOUT, what="the orphans' 3 zombies")
        first = zombies_of(box, 1)
        time.sleep(1)
        assert zombies_of(box, 1) == first  # the same ones, still there
        result = box.stop("TERM", timeout=TIMEOUT)
    assert (result.exit_code, result.leftovers) == (0, [])


def test_under_pyinit_the_orphans_go_to_it_and_are_reaped():
    with pyinit.Sandbox(program("orphaner", 3)) as box:
        box.wait_for_output("ready", timeout=TIMEOUT)
        box.wait_until(lambda: len(box.processes()) == 2, timeout=TIMEOUT, what="pyinit and the command alone")
        result = box.stop("TERM", timeout=TIMEOUT)
    assert (result.exit_code, result.leftovers, result.report["zombies_reaped"]) == (0, [], 3)


def zombies_of(box, parent: int) -> "list[pyinit.Process]":
    return [p for p in box.processes() if p.state == "Z" and p.ppid == parent]


def test_a_handled_signal_reaches_the_command_and_its_exit_is_reported():
    with pyinit.Sandbox(["sh", "-c", "trap 'exit 7' TERM; echo ready; while :; do sleep 0.1; done"], init=False) as box:
        box.wait_for_output("ready", timeout=TIMEOUT)
        result = box.stop("TERM", timeout=TIMEOUT)
    assert (result.exit_code, result.signal, result.received(), result.leftovers) == (7, None, {"SIGTERM": 1}, [])
    assert result.report["child"] == {"pid": 1, "exit_code": 7, "signal": None}
    assert 0 <= result.stop_duration < TIMEOUT


def test_run_without_an_init():
    result = pyinit.run(["sh", "-c", "echo $$; ls /proc/$$/fd; exit 3"], init=False, timeout=TIMEOUT)
    assert (result.exit_code, result.started, result.leftovers) == (3, True, [])
    assert result.stdout.split() == ["1", "0", "1", "2"]  # PID 1, and no descriptor of pyinit's (the report's pipe)
    missing = pyinit.run(["no-such-command-here"], init=False, timeout=TIMEOUT)
    assert (missing.exit_code, missing.started) == (127, False)
    assert missing.stderr == "pyinit: cannot run 'no-such-command-here': no such command in PATH\n"


@pytest.mark.parametrize("options", [{"drain": 1.0}, {"settle": 0.0}, {"single_child": True}])
def test_the_inits_options_are_refused_without_one(options):
    with pytest.raises(ValueError, match="the init's options, and init=False runs none"):
        pyinit.Sandbox(["true"], init=False, **options)


def test_no_init_needs_namespaces():
    with pytest.raises(pyinit.IsolationError, match="init=False needs namespaces"):
        pyinit.Sandbox(["true"], init=False, isolate=False).start()


# --- pyinit --unshare --bare -----------------------------------------------------------------------

def test_the_launcher_execs_the_command_as_pid1_and_reports_its_exit(tmp_path):
    report = tmp_path / "report.json"
    done = subprocess.run([*PYINIT, "--unshare", "--bare", "--exit-report", str(report), "--",
                           "sh", "-c", "echo $$; exit 5"], env=clean_env(), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert (done.returncode, done.stdout, done.stderr) == (5, "1\n", ""), done
    written = json.loads(report.read_text())
    assert written["child"] == {"pid": 1, "exit_code": 5, "signal": None}
    assert (written["exit_code"], written["leftovers"]) == (5, [])


def test_the_launcher_relays_signals_to_the_bare_command():
    process = subprocess.Popen([*PYINIT, "--unshare", "--bare", "--", "sh", "-c",
                                "trap 'exit 9' USR1; echo ready; while :; do sleep 0.1; done"],
                               env=clean_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "ready\n"
        process.send_signal(signal.SIGUSR1)
        assert process.wait(TIMEOUT) == 9
    finally:
        process.kill()
        process.wait()
        process.stdout.close()


@pytest.mark.parametrize("argv, message", [
    (["--bare"], "option '--bare' only applies with --unshare"),
    (["--unshare", "--bare", "--settle", "1"], "option '--settle' needs an init, and --bare runs none"),
    (["--unshare", "--bare", "--drain", "1"], "option '--drain' needs an init, and --bare runs none"),
    (["--unshare", "--bare", "-w"], "option '-w' needs an init, and --bare runs none"),
    (["--unshare", "--bare", "--pty"], "option '--pty' needs an init, and --bare runs none"),
])
def test_the_launcher_refuses_what_needs_an_init(argv, message):
    done = subprocess.run([*PYINIT, *argv, "--", "true"], env=clean_env(), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 125, done
    assert pyinit_lines(done.stderr) == ["pyinit: %s (see 'pyinit --help')" % message]
