"""The pytest side: the `sandbox` fixture, failure reports, and pyinit.testing's assertion helpers.

The plugin is loaded with `-p pyinit.pytest_plugin` in a separate pytest run
(pytester's runpytest_subprocess): in a source tree it is not installed by
its entry point (test_check.py runs it installed). Processes started by the
inner runs carry LEAK_MARKER in their environment, so anything left over
afterwards is found by scanning the host's /proc.
"""

import os
import re
import subprocess
import sys
import uuid

import pytest

from pyinit.sandbox import Sandbox
from pyinit.testing import assert_exit_code, assert_no_leftovers, assert_stops_on
from support import REPO, TIMEOUT, clean_env, leaked, program, stat

pytest_plugins = ["pytester"]

EXAMPLES = REPO / "examples" / "testing"


def run_inner(pytester, *args: str, **env: str):
    """pytest in a subprocess, with the plugin, the source tree importable, and a leak marker; (result, marker)."""
    marker = uuid.uuid4().hex
    for name, value in clean_env(LEAK_MARKER=marker, **env).items():
        pytester._monkeypatch.setenv(name, value)
    result = pytester.runpytest_subprocess("-p", "pyinit.pytest_plugin", "-p", "no:cacheprovider", *args,
                                           timeout=4 * TIMEOUT)
    return result, marker


def host_pids(text: str) -> "list[int]":
    return [int(pid) for pid in re.findall(r"\(host (\d+),", text)]


def test_example_tests_pass_on_the_correct_service(pytester):
    """examples/testing: "test_service.py" against "service.py"."""
    result, marker = run_inner(pytester, str(EXAMPLES / "test_service.py"), SERVICE="service.py")
    result.assert_outcomes(passed=2)
    assert leaked(marker) == []


def test_example_tests_fail_on_the_buggy_service_naming_the_fault(pytester):
    """The same tests against "service_buggy.py": both fail, each naming its fault; nothing is left."""
    result, marker = run_inner(pytester, str(EXAMPLES / "test_service.py"), SERVICE="service_buggy.py")
    result.assert_outcomes(failed=2)
    output = result.stdout.str()
    assert "exited with exit code 1 after SIGTERM, expected exit code 0" in output
    assert "pyinit received SIGTERM x1, forwarded SIGTERM x1" in output
    assert "left 1 process(es) running after it exited" in output
    assert re.search(r"PID 3 \(ppid 1\) \w .*python.* -c import signal; signal.pause\(\)", output), output
    for title in ("processes at the failure", "output", "exit report"):
        assert re.search(r"pyinit sandbox 1 \(.*service_buggy\.py.*\): %s" % title, output), title
    assert '"exit_code": 1' in output
    assert leaked(marker) == []


INNER = """
import sys

def test_a_test_without_sandboxes_loads_nothing():
    assert "pyinit.sandbox" not in sys.modules

def test_fails_on_purpose(sandbox):
    first = sandbox({leaver!r})
    first.wait_for_output("left")
    second = sandbox(["sh", "-c", "echo second here; sleep 300"])
    second.wait_for_output("second here")
    assert False, "on purpose"

def test_passes(sandbox):
    box = sandbox(["sh", "-c", "exit 0"])
    assert box.wait(30).exit_code == 0
"""


def test_a_failing_test_reports_each_sandbox_and_leaks_nothing(pytester):
    pytester.makepyfile(test_inner=INNER.format(leaver=program("leaver", "--stay")))
    result, marker = run_inner(pytester, "-v")
    result.assert_outcomes(passed=2, failed=1)
    output = result.stdout.str()
    assert "AssertionError: on purpose" in output
    tree_1 = output.split("pyinit sandbox 1 (")[1]
    assert re.search(r"^PID 1 \(host \d+, ppid 0\) S .*pyinit(/__main__\.py|\.forkserver\.server)", tree_1, re.M)
    assert re.search(r"^  PID 2 \(host \d+, ppid 1\) \w .*leaver\.py --stay", tree_1, re.M)
    assert re.search(r"^    PID \d+ \(host \d+, ppid 2\) S sleep 300", tree_1, re.M)
    assert re.search(r"^  PID \d+ \(host \d+, ppid 1\) S sleep 301", tree_1, re.M)
    assert "(none yet: pyinit was still running)" in output
    assert re.search(r"pyinit sandbox 2 \(sh -c echo second here; sleep 300\): output", output)
    assert "second here" in output.split("pyinit sandbox 2 (")[-1]
    pids = host_pids(output)
    assert len(pids) >= 6 and all(stat(pid) is None or pid not in leaked(marker) for pid in pids)
    assert leaked(marker) == []


def test_a_fixture_that_fails_in_setup_reports_its_sandbox_with_the_exit_report(pytester):
    pytester.makepyfile(test_setup="""
import pytest

@pytest.fixture
def service(sandbox):
    box = sandbox(["sh", "-c", "echo starting; exit 3"])
    box.wait_for_output("ready")
    return box

def test_never_runs(service):
    pass
""")
    result, marker = run_inner(pytester)
    result.assert_outcomes(errors=1)
    output = result.stdout.str()
    assert "CommandExited" in output and "exited with code 3 while waiting for output matching 'ready'" in output
    report = output.split("pyinit sandbox 1 (sh -c echo starting; exit 3): exit report")[1]
    assert '"exit_code": 3' in report and '"signal": null' in report
    assert leaked(marker) == []


def test_the_plugin_registers_once_through_p_and_pytest_plugins(pytester):
    """The entry point's name is the module's: `-p` plus a conftest's pytest_plugins load it once."""
    pytester.makeconftest('pytest_plugins = ["pyinit.pytest_plugin"]')
    pytester.makepyfile(test_once="def test_fixture(sandbox):\n    assert sandbox(['true']).wait(30).exit_code == 0\n")
    result, _ = run_inner(pytester)
    result.assert_outcomes(passed=1)


def test_the_plugin_module_imports_only_pytest():
    probe = "import sys, pyinit.pytest_plugin; print(sorted(m for m in sys.modules if m.startswith('pyinit')))"
    done = subprocess.run([sys.executable, "-c", probe], env=clean_env(), capture_output=True, text=True)
    assert done.stdout.strip() == "['pyinit', 'pyinit.pytest_plugin']", done


# --- pyinit.testing, in process -------------------------------------------------------------------


def test_assert_stops_on_a_command_that_ignores_the_signal():
    """The tree at the deadline, then the command SIGKILLed so pyinit's report says what it forwarded."""
    with Sandbox(["sh", "-c", "trap '' TERM; echo ready; sleep 300"]) as box:
        box.wait_for_output("ready")
        with pytest.raises(AssertionError) as raised:
            assert_stops_on(box, "TERM", within=0.5)
        result = box.result
    message = str(raised.value)
    assert message.splitlines()[0] == "the command %r did not exit within 0.5 s of SIGTERM" % " ".join(box.argv)
    assert re.search(r"processes at the deadline:\n  PID 1 .*\n    PID 2 .* S sh -c trap", message)
    assert "pyinit received SIGTERM x1, forwarded SIGTERM x1" in message
    assert "  PID 3 " in message.split("still running 1 s after the command exited:")[1]  # sleep: TERM ignored too
    assert (result.exit_code, result.signal) == (137, "SIGKILL")


def test_assert_stops_on_passes_and_returns_the_result():
    with Sandbox(["sh", "-c", "trap 'exit 3' TERM; echo ready; while :; do sleep 0.05; done"]) as box:
        box.wait_for_output("ready")
        assert assert_stops_on(box, "SIGTERM", within=TIMEOUT, exit_code=3).exit_code == 3
        assert_exit_code(box.result, 3)
        assert_no_leftovers(box)


def test_assert_exit_code_and_no_leftovers_messages():
    with Sandbox(["sh", "-c", "sleep 300 & echo $!; exit 2"]) as box:
        sleeper = box.wait_for_output(r"(\d+)\n").group(1)
        with pytest.raises(AssertionError, match=r"exited with exit code 2, expected exit code 0"):
            assert_exit_code(box.wait(TIMEOUT), 0)
        with pytest.raises(AssertionError) as raised:
            assert_no_leftovers(box)
    assert "left 1 process(es) running after it exited" in str(raised.value)
    assert re.search(r"PID %s \(ppid 1\) \w " % sleeper, str(raised.value))
    with Sandbox(["sleep", "300"]) as running:
        with pytest.raises(AssertionError, match="is still running"):
            assert_no_leftovers(running)


def test_the_installed_plugin_is_turned_off_by_its_obvious_name(installed_pyinit, tmp_path):
    """`-p no:pyinit` (the entry point's name) turns the plugin off, as `-p no:pyinit.pytest_plugin` does."""
    (tmp_path / "test_it.py").write_text("def test_it(sandbox):\n    pass\n")
    for off in ("no:pyinit", "no:pyinit.pytest_plugin"):
        done = subprocess.run([os.path.join(installed_pyinit, "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               "-p", off, "test_it.py"], env=clean_env(PYTHONPATH=""), cwd=tmp_path,
                              capture_output=True, text=True, timeout=TIMEOUT)
        assert done.returncode == 1 and "fixture 'sandbox' not found" in done.stdout, done
