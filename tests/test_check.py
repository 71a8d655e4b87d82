"""`pyinit-check`, installed as users install it, and `python -m pyinit.check`; the CI workflow's step.

The installed command comes from a throwaway venv (the `installed_pyinit`
fixture: Debian's python3, `pip install` of this tree, once per session).
The JUnit files are parsed with xml.etree, as CI systems would read them.
"""

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET

import pytest
import yaml

from support import (REPO, TIMEOUT, assert_no_traceback, clean_env, cmdline, descendants, innermost_pid, leaked,
                     wait_for)

EXAMPLES = REPO / "examples"
SERVICE = EXAMPLES / "testing" / "service.py"
BUGGY = EXAMPLES / "testing" / "service_buggy.py"
CHECK = [sys.executable, "-m", "pyinit.check"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def check(argv, *, env=None, cwd=REPO) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, env=clean_env() if env is None else env, cwd=cwd, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=4 * TIMEOUT)
    assert_no_traceback(done.stderr)
    return done


def junit(path) -> "tuple[ET.Element, list[tuple[str, str | None]]]":
    """The parsed file: (the testsuite, [(test case name, failure message or None)])."""
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    (suite,) = root
    cases = [(case.get("name"), case.find("failure").get("message") if case.find("failure") is not None else None)
             for case in suite.iter("testcase")]
    return suite, cases


def test_installed_check_passes_the_correct_service(installed_pyinit, tmp_path):
    """examples/testing/"service.py" under the venv's `pyinit-check`: every check holds, exit 0."""
    port = free_port()
    done = check([os.path.join(installed_pyinit, "pyinit-check"), "--ready-port", str(port), "--within", "5",
                  "--no-leftovers", "--junit", str(tmp_path / "junit.xml"), "--json", str(tmp_path / "result.json"),
                  "--", os.path.join(installed_pyinit, "python"), str(SERVICE), str(port)])
    assert (done.returncode, done.stderr) == (0, ""), done
    lines = done.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["PASS"] * 3, lines
    assert re.fullmatch(r"PASS  stopped \d+\.\d\d s after SIGTERM \(limit 5 s\)", lines[0])
    assert lines[1:] == ["PASS  exit code 0, expected 0", "PASS  nothing left running when it exited"]
    suite, cases = junit(tmp_path / "junit.xml")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "0", "0")
    assert [failure for _, failure in cases] == [None] * 3
    result = json.loads((tmp_path / "result.json").read_text())
    assert (result["passed"], result["exit_code"], result["leftovers"]) == (True, 0, [])
    assert result["report"]["signals"]["forwarded"] == {"SIGTERM": 1}


def test_installed_check_fails_the_buggy_service_naming_the_faults(installed_pyinit, tmp_path):
    """"service_buggy.py": exit 1, a FAIL line for its exit code and one naming the worker it left."""
    port = free_port()
    marker = uuid.uuid4().hex
    done = check([os.path.join(installed_pyinit, "pyinit-check"), "--ready-output", "listening on", "--within", "5",
                  "--no-leftovers", "--junit", str(tmp_path / "junit.xml"), "--json", str(tmp_path / "result.json"),
                  "--", os.path.join(installed_pyinit, "python"), str(BUGGY), str(port)],
                 env=clean_env(LEAK_MARKER=marker))
    assert done.returncode == 1, done
    lines = done.stdout.splitlines()
    assert lines[0].startswith("PASS  stopped")
    assert lines[1] == "FAIL  exit code 1, expected 0"
    assert re.fullmatch(r"FAIL  left running when it exited: \S+/python -c import signal; signal\.pause\(\) \(PID 3\)",
                        lines[2]), lines[2]
    assert "pyinit received SIGTERM x1, forwarded SIGTERM x1" in done.stdout
    suite, cases = junit(tmp_path / "junit.xml")
    assert (suite.get("tests"), suite.get("failures")) == ("3", "2")
    assert [failure for _, failure in cases][1:] == ["exit code 1, expected 0", cases[2][1]]
    assert cases[2][1].startswith("left running when it exited:")
    result = json.loads((tmp_path / "result.json").read_text())
    assert (result["passed"], result["exit_code"]) == (False, 1)
    assert [entry["pid"] for entry in result["leftovers"]] == [3]
    assert leaked(marker) == []


def test_the_installed_plugin_registers_by_its_entry_point(installed_pyinit, tmp_path):
    """pytest in the venv finds the `sandbox` fixture with no -p; with -p as well it still loads once."""
    (tmp_path / "test_it.py").write_text("def test_it(sandbox):\n    assert sandbox(['true']).wait(30).exit_code == 0\n")
    for extra in ([], ["-p", "pyinit.pytest_plugin"]):
        done = check([os.path.join(installed_pyinit, "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                      *extra, "test_it.py"], env=clean_env(PYTHONPATH=""), cwd=tmp_path)
        assert done.returncode == 0 and "1 passed" in done.stdout, done


def test_a_command_that_ignores_the_signal_is_killed_and_shown():
    done = check([*CHECK, "--ready-output", "ready", "--within", "0.5", "--",
                  "sh", "-c", "trap '' TERM; echo ready; sleep 300"])
    assert done.returncode == 1, done
    lines = done.stdout.splitlines()
    assert lines[:2] == ["FAIL  still running 0.5 s after SIGTERM: SIGKILLed", "processes at the deadline:"]
    assert re.search(r"^    PID 2 \(host \d+, ppid 1\) S sh -c trap '' TERM", done.stdout, re.M)
    assert "pyinit received SIGTERM x1, forwarded SIGTERM x1" in done.stdout


def test_ready_by_path_and_a_chosen_signal(tmp_path):
    done = check([*CHECK, "--ready-path", "up", "--signal", "SIGUSR1", "--expect-exit", "138", "--",
                  "sh", "-c", "sleep 0.2; touch up; sleep 300"], cwd=tmp_path)
    assert done.returncode == 0, done
    assert done.stdout.splitlines()[1] == "PASS  exit code 138 (killed by SIGUSR1), expected 138"


def test_junit_is_well_formed_whatever_the_command_prints(tmp_path):
    """Colour escapes, NUL, form feed and bytes that are not UTF-8, in the output and in the command line:
    characters XML 1.0 forbids are shown escaped, as Python writes them."""
    script = r'printf "\033[31mred\033[0m \000\014\377 ready\n"; exec sleep 300'
    done = check([*CHECK, "--ready-output", "ready", "--junit", str(tmp_path / "junit.xml"), "--",
                  "sh", "-c", script, b"name-\xff\x0c"])
    assert done.returncode == 1, done
    suite, cases = junit(tmp_path / "junit.xml")
    assert [failure for _, failure in cases] == [None, "exit code 143 (killed by SIGTERM), expected 0"]
    assert cases[0][0].endswith(" name-\\udcff\\x0c stops within 10 s of SIGTERM"), cases[0][0]
    # (the form feed ends a line for str.splitlines, which takes the output's tail)
    assert "  \\x1b[31mred\\x1b[0m \\x00\n  \ufffd ready" in suite.find("testcase/failure").text


def test_a_command_line_that_is_not_utf8_is_printed_escaped():
    """A leftover's argv holds whatever bytes it was given: on a strict UTF-8 standard output
    (PYTHONIOENCODING=utf-8, or a UTF-8 locale other than C.UTF-8) it is written escaped, not a traceback."""
    script = """sh -c 'trap "" TERM; echo ready; sleep 300; exit' "$0" & wait"""
    done = check([*CHECK, "--ready-output", "ready", "--expect-exit", "143", "--no-leftovers", "--",
                  "sh", "-c", script, b"name-\xff"], env=clean_env(PYTHONIOENCODING="utf-8"))
    assert done.returncode == 1, done
    assert re.search(r"^FAIL  left running when it exited: .*name-\\udcff", done.stdout, re.M), done.stdout


def test_json_dash_is_standard_output_after_the_verdicts(tmp_path):
    done = check([*CHECK, "--ready-output", "ready", "--expect-exit", "143", "--json", "-", "--",
                  "sh", "-c", "echo ready; exec sleep 300"], cwd=tmp_path)
    assert done.returncode == 0, done
    verdicts, text = done.stdout.split("\n", 2)[:2], done.stdout.split("\n", 2)[2]
    assert [line.split()[0] for line in verdicts] == ["PASS", "PASS"], done.stdout
    assert (json.loads(text)["passed"], json.loads(text)["exit_code"]) == (True, 143)
    never = check([*CHECK, "--ready-path", "never", "--ready-timeout", "0.2", "--json", "-", "--", "sleep", "300"],
                  cwd=tmp_path)
    assert never.returncode == 125 and json.loads(never.stdout)["error"].startswith("never ready: "), never
    assert os.listdir(tmp_path) == []


def test_never_ready_is_125_with_the_reason(tmp_path):
    """The wait ran out: the check could not be made."""
    done = check([*CHECK, "--ready-output", "never", "--ready-timeout", "0.3", "--junit", str(tmp_path / "junit.xml"),
                  "--", "sleep", "300"])
    assert (done.returncode, done.stdout) == (125, ""), done
    assert done.stderr.startswith("pyinit-check: never ready: waited 0.3 s for output matching 'never' on any "
                                  "from 'sleep 300' in vain"), done.stderr
    suite, _ = junit(tmp_path / "junit.xml")
    assert suite.get("errors") == "1"


def test_a_command_that_exits_before_it_is_ready_fails_its_check(tmp_path):
    """A crash at start-up is the service's failure, not the check's: exit 1, the verdict line, the output."""
    done = check([*CHECK, "--ready-port", "1", "--junit", str(tmp_path / "junit.xml"), "--",
                  "sh", "-c", "echo bye; exit 4"])
    assert (done.returncode, done.stderr) == (1, ""), done
    assert done.stdout.startswith("FAIL  exited before it was ready (while waiting for a listener on port 1), "
                                  "exit code 4: SIGTERM was never sent\n"), done.stdout
    assert "bye" in done.stdout
    suite, cases = junit(tmp_path / "junit.xml")
    assert (suite.get("failures"), suite.get("errors")) == ("1", "0")
    assert cases == [("sh -c echo bye; exit 4 stops within 10 s of SIGTERM", done.stdout.splitlines()[0][6:])]


def test_exited_before_ready_json_carries_the_exit_and_the_leftovers_the_text_names(tmp_path):
    """A daemon that forks and exits before it is ready: its exit code and what it left, in the text and the JSON."""
    marker = uuid.uuid4().hex
    done = check([*CHECK, "--ready-path", "never", "--no-leftovers", "--json", str(tmp_path / "result.json"), "--",
                  "sh", "-c", "sleep 300 & exit 3"], env=clean_env(LEAK_MARKER=marker), cwd=tmp_path)
    assert (done.returncode, done.stderr) == (1, ""), done
    lines = done.stdout.splitlines()
    assert lines[:2] == ["FAIL  exited before it was ready (while waiting for the path never), exit code 3: "
                         "SIGTERM was never sent", "FAIL  left running when it exited: sleep 300 (PID 3)"], done.stdout
    assert re.search(r"^  PID 3 ", done.stdout, re.M), done.stdout  # what it left, as describe() lists it
    result = json.loads((tmp_path / "result.json").read_text())
    assert (result["passed"], result["exit_code"], result["signal"], result["error"]) == (False, 3, None, None)
    assert [entry["pid"] for entry in result["leftovers"]] == [3]
    assert [check["passed"] for check in result["checks"]] == [False, False] and result["report"] is not None
    assert leaked(marker) == []


@pytest.mark.parametrize("argv, message", [
    ([], "no command given"),
    (["--"], "no command given"),
    (["--signal", "NOPE", "--", "true"], "--signal: 'NOPE' is not a signal name or number"),
    (["--within", "soon", "--", "true"], "argument --within: invalid float value: 'soon'"),
    (["--within", "-1", "--", "true"], "--within -1: not a number of seconds (finite, 0 or more)"),
    (["--within", "inf", "--", "true"], "--within inf: not a number of seconds (finite, 0 or more)"),
    (["--ready-timeout", "nan", "--", "true"], "--ready-timeout nan: not a number of seconds (finite, 0 or more)"),
    (["--within", "1e300", "--", "true"], "--within 1e+300: longer than pyinit-check can wait (at most 1000000000 s"),
    (["--ready-timeout", "1e10", "--", "true"], "--ready-timeout 1e+10: longer than pyinit-check can wait"),
    (["--grace", "9.3e9", "--", "true"], "--grace 9.3e+09: longer than pyinit-check can wait"),
    (["--settle", "1e300", "--", "true"], "--settle 1e+300: longer than pyinit-check can wait"),
    (["--settle", "-1", "--", "true"], "--settle -1: not a number of seconds (finite, 0 or more)"),
    (["--settle", "nan", "--", "true"], "--settle nan: not a number of seconds (finite, 0 or more)"),
    (["--ready-port", "0", "--", "true"], "--ready-port 0: not a TCP port (1 to 65535)"),
    (["--ready-port", "70000", "--", "true"], "--ready-port 70000: not a TCP port (1 to 65535)"),
    (["--ready-port", "-1", "--", "true"], "--ready-port -1: not a TCP port (1 to 65535)"),
    (["--expect-exit", "999", "--", "true"], "--expect-exit 999: not an exit code (0 to 255)"),
    (["--expect-exit", "-1", "--", "true"], "--expect-exit -1: not an exit code (0 to 255)"),
    (["--signal", "STOP", "--", "true"], "--signal SIGSTOP: it would stop pyinit itself (the sandbox's PID 1), "
                                         "not the service: use TSTP"),
    (["--signal", "19", "--", "true"], "--signal SIGSTOP: it would stop pyinit itself"),
    (["--signal", "SIGKILL", "--", "true"], "--signal SIGKILL: it would kill the sandbox's PID 1 and every member "
                                            "at once: there is nothing to check"),
    (["--ready-port", "1", "--ready-path", "x", "--", "true"], "not allowed with argument"),
    (["--ready-output", "(", "--", "true"], "--ready-output: not a regular expression"),
    (["--bogus", "--", "true"], "unrecognized arguments: --bogus"),
    (["--sweep", "1", "--", "true"], "--sweep 1: not a number of moments (2 or more)"),
    (["--sweep", "many", "--", "true"], "argument --sweep: invalid int value: 'many'"),
    (["--ready-http", "http://127.0.0.1:1/", "--ready-port", "1", "--", "true"], "not allowed with argument"),
])
def test_usage_errors_are_one_line_and_125(argv, message):
    done = check([*CHECK, *argv])
    assert (done.returncode, done.stdout) == (125, ""), done
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("pyinit-check: ")
    assert message in done.stderr


@pytest.mark.parametrize("flag", ["--junit", "--json"])
@pytest.mark.parametrize("where, reason", [("a-directory", "Is a directory"),
                                           ("missing/out", "No such file or directory")])
def test_a_report_that_cannot_be_written_is_refused_before_the_command_runs(flag, where, reason, tmp_path):
    (tmp_path / "a-directory").mkdir()
    ran = tmp_path / "ran"
    done = check([*CHECK, flag, str(tmp_path / where), "--", "touch", str(ran)])
    assert (done.returncode, done.stdout) == (125, ""), done
    assert done.stderr == "pyinit-check: cannot write %s %s: %s\n" % (flag, tmp_path / where, reason)
    assert not ran.exists()


def test_a_report_that_cannot_be_written_at_the_end_is_one_line_and_125():
    """/dev/full opens, and refuses the write: the verdicts stand, the line says which report failed."""
    done = check([*CHECK, "--json", "/dev/full", "--expect-exit", "143", "--", "sleep", "300"])
    assert (done.returncode, [line.split()[0] for line in done.stdout.splitlines()]) == (125, ["PASS"] * 2), done
    assert done.stderr == "pyinit-check: cannot write --json /dev/full: No space left on device\n"


def test_a_refused_run_leaves_the_report_files_as_they_were(tmp_path):
    """No new file is left behind, an old one keeps its contents, whichever usage error it is."""
    (tmp_path / "old.json").write_text("old")
    for argv in (["--json", "new.json", "--junit", "missing/out.xml"], ["--json", "old.json", "--junit", "."],
                 ["--json", "new.json", "--signal", "NOPE"]):
        done = check([*CHECK, *argv, "--", "true"], cwd=tmp_path)
        assert done.returncode == 125, done
        assert sorted(os.listdir(tmp_path)) == ["old.json"], (argv, done)
        assert (tmp_path / "old.json").read_text() == "old"


def unique_sleep() -> "list[str]":
    """A sleep command line no other test runs, to be found in /proc (GNU sleep takes fractions)."""
    return ["sleep", "1000.%d" % uuid.uuid4().int]


def running(argv) -> "list[int]":
    """Host PIDs of the processes running exactly `argv`."""
    return [int(pid) for pid in os.listdir("/proc") if pid.isdigit() and cmdline(int(pid)) == argv]


def sandbox_init(check_pid: int, argv) -> "int | None":
    """The host PID of the sandbox's PID 1 under pyinit-check `check_pid`, once `argv` runs under it."""
    below = descendants(check_pid)
    if not any(cmdline(pid) == argv for pid in below):
        return None
    for pid in below:
        try:
            if innermost_pid(pid) == 1:
                return pid
        except OSError:  # gone meanwhile
            pass
    return None


def test_a_check_that_cannot_be_made_is_one_line_and_125(tmp_path):
    """pyinit stopped from outside cannot end once the command is SIGKILLed: a SandboxError (TimeoutExpired)
    in the middle of the check is one line and 125, not a traceback, and nothing is left running."""
    sleep = unique_sleep()
    code = "import pyinit.check as c, pyinit.check.verdicts as r; r.END_TIMEOUT = 1.0; c.run()"  # not 30 s
    with subprocess.Popen([sys.executable, "-c", code, "--ready-path", "go", "--within", "0.2", "--settle", "0", "--",
                           *sleep],
                          cwd=tmp_path, env=clean_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as started:
        init = os.pidfd_open(wait_for(lambda: sandbox_init(started.pid, sleep), "the sandbox to start"))
        try:
            signal.pidfd_send_signal(init, signal.SIGSTOP)
            (tmp_path / "go").touch()
            out, err = started.communicate(timeout=4 * TIMEOUT)
        finally:
            started.kill()
            try:  # a stopped PID 1 must not outlive a failed test (a pidfd: its number may be reused)
                signal.pidfd_send_signal(init, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.close(init)
    assert_no_traceback(err)
    assert (started.returncode, out) == (125, ""), (out, err)
    assert err == "pyinit-check: %r did not end within 1 s\n" % " ".join(sleep)
    assert running(sleep) == []


@pytest.mark.parametrize("signo", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_signal_tears_the_sandbox_down_writes_the_reports_and_is_died_of(signo, tmp_path):
    """Ctrl-C, a cancelled CI job's SIGTERM, a closed terminal's SIGHUP while waiting for readiness: one line, the
    command gone, both reports whole and saying so (they were left empty), and pyinit-check dies of the signal
    (as util-linux's wrappers do, so that a calling shell's loop stops)."""
    sleep = unique_sleep()
    name = signal.Signals(signo).name
    with subprocess.Popen([*CHECK, "--ready-path", "never", "--json", str(tmp_path / "result.json"),
                           "--junit", str(tmp_path / "junit.xml"), "--", *sleep],
                          cwd=tmp_path, env=clean_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as started:
        try:
            wait_for(lambda: sandbox_init(started.pid, sleep), "the sandbox to start")
            os.kill(started.pid, signo)
            out, err = started.communicate(timeout=4 * TIMEOUT)
        finally:
            started.kill()
    assert_no_traceback(err)
    assert (started.returncode, out, err) == (-signo, "", "pyinit-check: interrupted by %s\n" % name)
    assert running(sleep) == []
    result = json.loads((tmp_path / "result.json").read_text())
    assert (result["passed"], result["error"], result["interrupted"]) == (False, "interrupted by " + name, name)
    assert result["command"] == sleep and result["settings"]["signal"] == "SIGTERM"
    suite, cases = junit(tmp_path / "junit.xml")
    assert (suite.get("errors"), cases) == ("1", [(" ".join(sleep) + " interrupted by " + name, None)])


def test_timeout_ending_a_sweep_keeps_the_moments_it_checked(tmp_path):
    """`timeout` sends SIGTERM: the JSON and JUnit keep each moment made before it, and `timeout` says 124."""
    done = subprocess.run(["timeout", "3", *CHECK, "--sweep", "100", "--settle", "0", "--json",
                           str(tmp_path / "result.json"), "--junit", str(tmp_path / "junit.xml"), "--", "sleep", "100"],
                          cwd=tmp_path, env=clean_env(), stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=4 * TIMEOUT)
    assert_no_traceback(done.stderr)
    assert (done.returncode, done.stderr) == (124, "pyinit-check: interrupted by SIGTERM\n"), done
    result = json.loads((tmp_path / "result.json").read_text())
    assert (result["error"], result["interrupted"], result["settings"]["settle"]) == (
        "interrupted by SIGTERM", "SIGTERM", 0)
    checked = [moment for moment in result["moments"] if moment["checks"]]
    assert len(checked) >= 2 and all(moment["passed"] is False for moment in checked), result  # sleep: 143, not 0
    suite, cases = junit(tmp_path / "junit.xml")
    assert suite.get("errors") == "1" and len(cases) == 1 + sum(len(moment["checks"]) for moment in checked)


def test_unknown_leftovers_fail_the_no_leftovers_check():
    """Result.leftovers is None when pyinit wrote no exit report: --no-leftovers cannot pass on what it does not know."""
    from pyinit.check.verdicts import leftovers_check as _leftovers_check

    assert _leftovers_check(None).line() == "FAIL  leftovers unknown: pyinit wrote no exit report"
    assert _leftovers_check([]).line() == "PASS  nothing left running when it exited"


def test_help_exits_0():
    done = check([*CHECK, "--help"])
    assert done.returncode == 0 and "--ready-output REGEX" in done.stdout and "--no-leftovers" in done.stdout


def test_the_ci_workflow_checks_the_service_with_pyinit_check(installed_pyinit, tmp_path):
    """examples/ci/"github-actions.yml": its pyinit-check step, run as written (on a free port), passes."""
    workflow = yaml.safe_load((EXAMPLES / "ci" / "github-actions.yml").read_text())
    (job,) = workflow["jobs"].values()
    (step,) = [step for step in job["steps"] if step.get("run", "").startswith("pyinit-check")]
    words = shlex.split(step["run"])
    assert words[-3:-1] == ["python3", "examples/testing/service.py"] and "--no-leftovers" in words
    script = step["run"].replace(words[-1], str(free_port()))
    (tmp_path / "examples").symlink_to(EXAMPLES)  # the checkout, as the step sees it
    env = clean_env(PATH=installed_pyinit + os.pathsep + os.environ["PATH"])
    done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=tmp_path, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=4 * TIMEOUT)
    assert done.returncode == 0, done
    suite, _ = junit(tmp_path / words[words.index("--junit") + 1])
    assert (suite.get("tests"), suite.get("failures")) == ("3", "0")


# --- the sandbox's options: each is refused when bad, and each reaches the command -----------------


@pytest.mark.parametrize("argv, message", [
    (["--cwd", "missing"], "pyinit-check: --cwd missing: no such directory"),
    (["--cwd", "a-file"], "pyinit-check: --cwd a-file: not a directory"),
    (["--env", "NOEQUALS"], "pyinit-check: --env NOEQUALS: not NAME=VALUE (see pyinit-check --help)"),
    (["--env", "=value"], "pyinit-check: --env =value: not NAME=VALUE"),
    (["--rewrite", "TERM"], "pyinit-check: --rewrite: rewrite 'TERM' is not of the form SIGNAL:SIGNAL"),
    (["--rewrite", "NOPE:QUIT"], "pyinit-check: --rewrite: 'NOPE' is not a signal name or number"),
    (["--rewrite", "TERM:99"], "pyinit-check: --rewrite: '99' is not a signal number this system knows"),
    (["--rewrite", "KILL:TERM"], "pyinit-check: --rewrite: rewrite 'KILL:TERM': SIGKILL is never forwarded"),
    (["--grace", "-1"], "pyinit-check: --grace -1: not a number of seconds (finite, 0 or more)"),
    (["--grace", "nan"], "pyinit-check: --grace nan: not a number of seconds"),
    (["--grace", "inf"], "pyinit-check: --grace inf: not a number of seconds"),
    (["--network", "bridge"], "pyinit-check: argument --network: invalid choice: 'bridge' (choose from"),
    (["--ready-http", "http://127.0.0.1:1/", "--ready-status", "99"],
     "pyinit-check: --ready-status 99: not an HTTP status (100 to 599)"),
    (["--ready-http", "http://127.0.0.1:1/", "--ready-status", "600"], "pyinit-check: --ready-status 600: not"),
    (["--ready-status", "200"], "pyinit-check: --ready-status: only with --ready-http"),
    (["--ready-http", "https://127.0.0.1/"], "pyinit-check: --ready-http https://127.0.0.1/: not an http:// URL"),
    (["--ready-http", "localhost:8080"], "pyinit-check: --ready-http localhost:8080: not an http:// URL"),
    (["--ready-http", "http://:8080/"], "pyinit-check: --ready-http http://:8080/: not an http:// URL"),
    (["--ready-http", "http://127.0.0.1:99999/"], "pyinit-check: --ready-http http://127.0.0.1:99999/: not an"),
    (["--ready-http", "http://127.0.0.1/a b"], "pyinit-check: --ready-http http://127.0.0.1/a b: not an"),
])
def test_a_bad_sandbox_option_is_one_line_and_125_before_anything_runs(argv, message, tmp_path):
    (tmp_path / "a-file").touch()
    done = check([*CHECK, *argv, "--json", "result.json", "--", "touch", "ran"], cwd=tmp_path)
    assert (done.returncode, done.stdout) == (125, ""), done
    assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith(message), done.stderr
    assert sorted(os.listdir(tmp_path)) == ["a-file"]  # neither the command nor a report


def test_env_is_added_to_pyinit_checks_own_environment():
    """--env NAME=VALUE reaches the command: a new name, one it overrides, a value with "=" in it; the rest stays."""
    done = check([*CHECK, "--env", "GREETING=hello", "--env", "EQUATION=a=b", "--env", "EMPTY=",
                  "--ready-output", "^kept hello a=b set$", "--ready-timeout", "10", "--expect-exit", "143", "--",
                  "sh", "-c", 'echo "$KEPT $GREETING $EQUATION ${EMPTY+set}"; exec sleep 300'],
                 env=clean_env(KEPT="kept", GREETING="overridden"))
    assert done.returncode == 0, done


def test_cwd_is_the_commands_working_directory_and_where_a_ready_path_is(tmp_path):
    (tmp_path / "work dir").mkdir()
    where = tmp_path / "work dir"
    done = check([*CHECK, "--cwd", "work dir", "--ready-path", "up", "--ready-timeout", "10", "--expect-exit", "143",
                  "--", "sh", "-c", "pwd > where; touch up; exec sleep 300"], cwd=tmp_path)
    assert done.returncode == 0, done
    assert (where / "where").read_text() == "%s\n" % where


def test_grace_kills_a_command_that_ignores_the_signal():
    """pyinit's grace period ends in SIGKILL: 137 is what --expect-exit then asks, well within --within."""
    done = check([*CHECK, "--grace", "0.3", "--within", "5", "--expect-exit", "137", "--ready-output", "ready",
                  "--json", "-", "--", "sh", "-c", "trap '' TERM; echo ready; exec sleep 300"])
    assert done.returncode == 0, done
    verdicts, report = done.stdout.split("\n", 2)[:2], json.loads(done.stdout.split("\n", 2)[2])
    assert verdicts[1] == "PASS  exit code 137 (killed by SIGKILL), expected 137", verdicts
    assert report["stop_duration"] < 5 and report["report"]["grace"]["killed"], report["report"]["grace"]


# A service whose helper outlives it by about a second, in a session of its own: a leftover or not, by the settle.
# Ready once the helper has its session (the service's SIGTERM, sent to its group, would end it before).
SLOW_HELPER = ("rm -f helped; setsid sh -c 'touch helped; exec sleep 1.%d' & trap 'exit 0' TERM; "
               "until [ -e helped ]; do sleep 0.01; done; echo ready; while :; do sleep 0.05; done")


def test_settle_is_pyinits_and_the_reports_say_it(tmp_path):
    """--settle 4 gives the helper the time to end on its own, --settle 0 lists it as left running; the JSON and the
    JUnit properties say which settle the verdict was made with, as pyinit's report does."""
    helper = SLOW_HELPER % (uuid.uuid4().int % 10**6)
    patient = check([*CHECK, "--cwd", str(tmp_path), "--settle", "4", "--ready-output", "ready", "--no-leftovers", "--json", "-", "--junit",
                     str(tmp_path / "junit.xml"), "--", "sh", "-c", helper])
    assert patient.returncode == 0, patient
    report = json.loads(patient.stdout.split("\n", 3)[3])
    assert (report["settings"]["settle"], report["report"]["settle"]["seconds"], report["leftovers"]) == (4, 4, [])
    suite, _ = junit(tmp_path / "junit.xml")
    assert {p.get("name"): p.get("value") for p in suite.find("properties")}["settle"] == "4"
    hasty = check([*CHECK, "--cwd", str(tmp_path), "--settle", "0", "--ready-output", "ready", "--no-leftovers", "--json", "-", "--",
                   "sh", "-c", helper])
    assert hasty.returncode == 1 and "FAIL  left running when it exited: sleep 1." in hasty.stdout, hasty
    assert json.loads(hasty.stdout[hasty.stdout.index("\n{") + 1:])["settings"]["settle"] == 0


def test_a_settle_longer_than_the_end_timeout_is_waited_for(tmp_path):
    """The wait for pyinit after the command's exit allows its settle: with the 30 s margin cut to 0.5 s here,
    --settle 2 was a "did not end within 0.5 s", 125; it is the verdict, 1, naming the daemon left."""
    code = ("import pyinit.check as c, pyinit.check.verdicts as r, pyinit.sandbox.ready as s; "
            "r.END_TIMEOUT = s.END_TIMEOUT = 0.5; c.run()")
    service = "setsid sh -c 'echo in its session; exec sleep 100.%d' & sleep 0.3; exit 3" % (uuid.uuid4().int % 10**6)
    # The exit seen while waiting for readiness, and after the signal (the daemon out of its reach by then).
    for ready in (["--ready-path", "never"], ["--ready-output", "in its session"]):
        done = check([sys.executable, "-c", code, *ready, "--settle", "2", "--no-leftovers", "--", "sh", "-c", service],
                     cwd=tmp_path)
        assert (done.returncode, done.stderr) == (1, ""), done
        assert "FAIL  left running when it exited: sleep 100." in done.stdout, done.stdout


TRAPPING = "trap 'exit 3' QUIT; trap 'exit 4' TERM; echo ready; while :; do sleep 0.05; done"


@pytest.mark.parametrize("spec", ["TERM:QUIT", "15:3", "SIGTERM:SIGQUIT"])
def test_rewrite_reaches_pyinit(spec):
    """pyinit forwards the SIGTERM as SIGQUIT: the shell's QUIT trap answers (3), not its TERM trap (4)."""
    done = check([*CHECK, "--rewrite", spec, "--rewrite", "HUP:0", "--expect-exit", "3", "--ready-output", "ready",
                  "--json", "-", "--", "sh", "-c", TRAPPING])
    assert done.returncode == 0, done
    report = json.loads(done.stdout.split("\n", 2)[2])
    assert report["report"]["signals"]["forwarded"] == {"SIGQUIT": 1}, report["report"]["signals"]


def test_rewrite_to_0_drops_the_signal():
    done = check([*CHECK, "--rewrite", "TERM:0", "--within", "0.5", "--ready-output", "ready", "--",
                  "sh", "-c", TRAPPING])
    assert done.returncode == 1, done
    assert done.stdout.startswith("FAIL  still running 0.5 s after SIGTERM: SIGKILLed\n"), done.stdout
    assert "pyinit received SIGTERM x1, forwarded nothing" in done.stdout


def test_single_child_leaves_the_group_alone():
    """The shell alone gets the SIGTERM: its background sleep runs on, and --no-leftovers names it. Without
    --single-child the group gets it and nothing is left."""
    sleep = unique_sleep()
    script = "%s & echo ready; wait" % " ".join(sleep)
    argv = ["--no-leftovers", "--expect-exit", "143", "--ready-output", "ready", "--", "sh", "-c", script]
    alone = check([*CHECK, "--single-child", *argv])
    assert alone.returncode == 1, alone
    assert alone.stdout.splitlines()[2] == "FAIL  left running when it exited: %s (PID 3)" % " ".join(sleep)
    group = check([*CHECK, *argv])
    assert group.returncode == 0, group
    assert running(sleep) == []


def test_ready_http_waits_for_the_status(tmp_path):
    """--ready-http with the default 200, and with --ready-status 404 for a path the server does not have;
    a status that never comes is 'never ready', 125."""
    port = free_port()
    server = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]
    url = "http://127.0.0.1:%d" % port
    for options in (["--ready-http", url + "/"], ["--ready-http", url + "/missing", "--ready-status", "404"]):
        done = check([*CHECK, *options, "--expect-exit", "143", "--", *server], cwd=tmp_path)
        assert done.returncode == 0, (options, done)
    never = check([*CHECK, "--ready-http", url + "/", "--ready-status", "201", "--ready-timeout", "1", "--",
                   *server], cwd=tmp_path)
    assert (never.returncode, never.stdout) == (125, ""), never
    assert never.stderr.startswith("pyinit-check: never ready: waited 1 s for an HTTP answer "), never.stderr


def test_network_private_gives_the_command_a_port_the_host_holds(tmp_path):
    """The host holds the port: in a network of its own the server binds it all the same, and --ready-http
    looks inside that network. With --network host the server cannot bind it, and exits before it is ready."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)]
        options = ["--ready-http", "http://127.0.0.1:%d/" % port, "--ready-timeout", "10", "--expect-exit", "143"]
        private = check([*CHECK, "--network", "private", *options, "--", *server], cwd=tmp_path)
        assert private.returncode == 0, private
        host = subprocess.run([*CHECK, "--network", "host", *options, "--", *server], env=clean_env(), cwd=tmp_path,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=4 * TIMEOUT)
        assert host.returncode == 1, host  # (the traceback on its stderr is the server's)
        assert host.stdout.startswith("FAIL  exited before it was ready "), host.stdout
        assert "Address already in use" in host.stdout
