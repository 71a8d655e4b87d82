"""`pyinit-check --sweep N`: the signal at N moments from the spawn to one second after ready (issue 18, item 5).

The scenario the sweep exists for: a master starts a worker, and installs
its SIGTERM handler (which stops the worker, then exits 0) only 0.4 s later.
A SIGTERM in that window kills the master by default action and leaves the
worker running; a single check after readiness never sees it. The worker
ignores SIGTERM, as a worker that waits for its master's word does, so the
signal to the group does not end it.
"""

import json
import os
import re
import subprocess
import sys
import textwrap
import uuid
import xml.etree.ElementTree as ET

import pytest

from support import REPO, TIMEOUT, assert_no_traceback, clean_env, leaked

CHECK = [sys.executable, "-m", "pyinit.check"]

MASTER = textwrap.dedent("""
    import os, signal, subprocess, sys, time

    HANDLER_FIRST = sys.argv[1] == "handler-first"
    stopping = []

    def stop(signo, frame):
        stopping.append(signo)  # the main loop acts on it: a worker started meanwhile is stopped too

    if HANDLER_FIRST:
        signal.signal(signal.SIGTERM, stop)
    worker = subprocess.Popen([sys.executable, "-I", "-S", os.path.join(os.path.dirname(__file__), "worker.py")],
                              preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN))
    time.sleep(0.4)
    if not HANDLER_FIRST:
        signal.signal(signal.SIGTERM, stop)
    print("ready", flush=True)
    while not stopping:
        time.sleep(0.02)
    worker.kill()
    worker.wait()
    sys.exit(0)
""")


@pytest.fixture
def master(tmp_path):
    """The command line of the master, given "handler-late" or "handler-first"."""
    (tmp_path / "master.py").write_text(MASTER)
    (tmp_path / "worker.py").write_text("import signal\nsignal.pause()\n")
    return lambda order: [sys.executable, "-I", "-S", str(tmp_path / "master.py"), order]


def check(*argv, marker: str = "", cwd=REPO) -> subprocess.CompletedProcess:
    done = subprocess.run([*CHECK, *argv], env=clean_env(LEAK_MARKER=marker or uuid.uuid4().hex), cwd=cwd,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10 * TIMEOUT)
    assert_no_traceback(done.stderr)
    return done


MOMENT = re.compile(r"^(PASS|FAIL) +(\d+) ms(?: \(sent at \d+ ms\))?  (.*)$")


def moments(stdout: str) -> "list[tuple[str, int, str]]":
    """The sweep's moment lines: (PASS or FAIL, ms after the spawn, what it says)."""
    found = [MOMENT.match(line) for line in stdout.splitlines()]
    return [(match.group(1), int(match.group(2)), match.group(3)) for match in found if match]


def test_the_sweep_finds_the_window_before_the_handler_that_a_single_check_passes(master, tmp_path):
    marker = uuid.uuid4().hex
    single = check("--ready-output", "ready", "--no-leftovers", "--", *master("handler-late"), marker=marker)
    assert single.returncode == 0, single

    done = check("--ready-output", "ready", "--no-leftovers", "--sweep", "8", "--json", str(tmp_path / "sweep.json"),
                 "--junit", str(tmp_path / "junit.xml"), "--", *master("handler-late"), marker=marker)
    assert done.returncode == 1, done
    header = re.match(r"sweep: SIGTERM at 8 moments, 0 to (\d+) ms after the spawn \(ready at (\d+) ms in the first "
                      r"run\)\n", done.stdout)
    assert header, done.stdout
    last, ready = int(header.group(1)), int(header.group(2))
    assert last == ready + 1000 and ready >= 400
    found = moments(done.stdout)
    assert [ms for _, ms, _ in found] == [round(i * last / 7) for i in range(8)], done.stdout
    failed = [(ms, says) for verdict, ms, says in found if verdict == "FAIL"]
    assert failed and all(ms < ready for ms, _ in failed), done.stdout  # after ready, the handler holds
    assert any(re.search(r"left running when it exited: \S+ -I -S \S+/worker\.py \(PID 3\)", says)
               for _, says in failed), done.stdout
    assert [verdict for verdict, ms, _ in found if ms >= ready] == ["PASS"] * sum(ms >= ready for _, ms, _ in found)
    assert "\nat %d ms:\n" % failed[0][0] in done.stdout  # the details of the failing moment
    assert done.stdout.endswith("\nsweep: %d of 8 moments failed: %s\n"
                                % (len(failed), ", ".join("%d ms" % ms for ms, _ in failed)))

    result = json.loads((tmp_path / "sweep.json").read_text())
    assert (result["passed"], result["error"]) == (False, None)
    assert [moment["ms"] for moment in result["moments"]] == [ms for _, ms, _ in found]
    early = [moment for moment in result["moments"] if moment["ms"] == failed[0][0]][0]
    assert (early["passed"], early["before_ready"], [entry["pid"] for entry in early["leftovers"]]) == (False, True, [3])
    assert early["exit_code"] == 143 and early["checks"][1]["passed"]  # death by SIGTERM before ready is no failure

    suite = ET.parse(tmp_path / "junit.xml").getroot()[0]
    cases = {case.get("name"): case.find("failure") for case in suite.iter("testcase")}
    assert (suite.get("tests"), suite.get("failures")) == ("24", str(len(failed)))
    command = " ".join(master("handler-late"))
    assert "%s at %d ms: stops within 10 s of SIGTERM" % (command, last) in cases
    failure = cases["%s at %d ms: no leftovers" % (command, failed[0][0])]
    assert failure is not None and "worker.py (PID 3)" in failure.get("message")
    assert leaked(marker) == []


def test_a_master_that_installs_its_handler_first_passes_the_whole_sweep(master):
    done = check("--ready-output", "ready", "--no-leftovers", "--sweep", "6", "--", *master("handler-first"))
    assert done.returncode == 0, done
    found = moments(done.stdout)
    assert [verdict for verdict, _, _ in found] == ["PASS"] * 6, done.stdout
    assert done.stdout.endswith("\nsweep: all 6 moments passed\n")


def test_without_readiness_the_moments_run_from_0_to_1000_ms():
    """No --ready-* option: the command counts as ready at its spawn, and every moment checks the exit code as is."""
    done = check("--sweep", "3", "--expect-exit", "143", "--json", "-", "--", "sleep", "300")
    assert done.returncode == 0, done
    text, _, report = done.stdout.partition("\n{")
    assert [(verdict, ms) for verdict, ms, _ in moments(text)] == [("PASS", 0), ("PASS", 500), ("PASS", 1000)], text
    result = json.loads("{" + report)
    assert result["ready_ms"] == 0 and [moment["before_ready"] for moment in result["moments"]] == [False] * 3
    assert [moment["checks"][1]["name"] for moment in result["moments"]] == ["exit code 143"] * 3


def test_a_moment_after_ready_waits_for_readiness_in_its_own_run(tmp_path):
    """The first run is ready at once, the others 0.6 s late: the moment after the first run's readiness waits
    for its own, and says when the signal went; the one before it does not wait."""
    script = "if [ -e seen ]; then sleep 0.6; fi; touch seen; echo ready; exec sleep 300"
    done = check("--sweep", "3", "--ready-output", "ready", "--expect-exit", "143", "--", "sh", "-c", script,
                 cwd=tmp_path)
    assert done.returncode == 0, done
    lines = done.stdout.splitlines()
    ready = int(re.search(r"\(ready at (\d+) ms", lines[0]).group(1))
    assert ready < 300, lines[0]
    assert re.fullmatch(r"PASS +0 ms  stopped .*", lines[1]), lines[1]
    late = re.fullmatch(r"PASS +(\d+) ms \(sent at (\d+) ms\)  stopped .*", lines[2])
    assert late and int(late.group(2)) >= 600 > int(late.group(1)) + 50, lines[2]


def test_a_ready_path_made_by_one_run_does_not_make_the_next_ready(tmp_path):
    """The path the first run made is removed after it: the next run waits for its own (0.6 s late), not for
    what the first left; a path that was there before the sweep is left alone."""
    (tmp_path / "work").mkdir()
    (tmp_path / "kept").touch()
    script = "if [ -e seen ]; then sleep 0.6; fi; touch seen up; exec sleep 300"
    done = check("--sweep", "3", "--cwd", "work", "--ready-path", "up", "--expect-exit", "143", "--",
                 "sh", "-c", script, cwd=tmp_path)
    assert done.returncode == 0, done
    assert re.fullmatch(r"PASS +\d+ ms \(sent at (\d+) ms\)  stopped .*", done.stdout.splitlines()[2]), done.stdout
    assert sorted(os.listdir(tmp_path / "work")) == ["seen"]
    kept = check("--sweep", "2", "--ready-path", "kept", "--expect-exit", "143", "--", "sleep", "300", cwd=tmp_path)
    assert kept.returncode == 0 and (tmp_path / "kept").exists(), kept


def test_never_ready_in_the_first_run_is_125():
    done = check("--sweep", "4", "--ready-output", "never", "--ready-timeout", "0.3", "--json", "-", "--",
                 "sleep", "300")
    assert done.returncode == 125, done
    assert done.stderr.startswith("pyinit-check: never ready: waited 0.3 s for output matching 'never'"), done.stderr
    result = json.loads(done.stdout)
    assert (result["passed"], result["moments"]) == (False, [])
    assert result["error"].startswith("never ready: ")


def test_a_command_that_exits_before_it_is_ready_in_the_first_run_fails_the_sweep():
    """The service's failure, as in a single check: exit 1 with that run's verdicts; no moment can be planned."""
    done = check("--sweep", "4", "--ready-port", "1", "--json", "-", "--", "sh", "-c", "echo bye; exit 4")
    assert (done.returncode, done.stderr) == (1, ""), done
    lines = done.stdout.splitlines()
    assert lines[0] == ("FAIL  exited before it was ready (while waiting for a listener on port 1), exit code 4: "
                        "SIGTERM was never sent"), done.stdout
    assert "sweep: the command exited before it was ready in the first run: no moment to plan" in lines
    result = json.loads(done.stdout[done.stdout.index("\n{") + 1:])
    assert (result["passed"], result["error"], len(result["moments"])) == (False, None, 1)
    assert (result["moments"][0]["exit_code"], result["moments"][0]["checks"][0]["passed"]) == (4, False)


def test_a_command_that_cannot_run_is_125_with_pyinits_reason():
    done = check("--sweep", "2", "--", "/nonexistent/command")
    assert (done.returncode, done.stdout) == (125, ""), done
    assert done.stderr.startswith("pyinit-check: ") and "/nonexistent/command" in done.stderr, done.stderr
