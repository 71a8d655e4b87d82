"""Sandbox.exec: a command run inside a running sandbox, through `pyinit --enter` (issue 19).

Checked from inside (the sandbox's own process table, as `ps` shows it) and
from the host's /proc: what exec started is a member while it runs, its
orphans are reaped by PID 1, and nothing of it outlives a timeout.
"""

import uuid

import pytest

import pyinit
from pyinit.sandbox import Sandbox, TimeoutExpired
from support import TIMEOUT, clean_env, leaked, wait_for



def test_exec_runs_inside_beside_pid_1_and_returns_code_and_output(tmp_path):
    with Sandbox(["sleep", "100"], env=clean_env(GREETING="hello")) as box:
        result = box.exec(["sh", "-c", "ps -o pid=,args=; echo $GREETING >&2; exit 3"])
        assert (result.exit_code, result.stderr, result.started) == (3, "hello\n", True)
        rows = [line.split(None, 1) for line in result.stdout.splitlines()]
        assert rows[0][0] == "1" and rows[1] == ["2", "sleep 100"], rows  # the sandbox's own process table
        assert any(args.startswith("ps ") for _, args in rows[2:]), rows
        assert box.exec(["cat"], input="fed\n").stdout == "fed\n"
        assert box.exec(["sh", "-c", "echo $GREETING"], env=clean_env(GREETING="bye")).stdout == "bye\n"
        assert box.exec(["pwd"], cwd=tmp_path).stdout == "%s\n" % tmp_path
        assert (box.exec(["no-such-command-here"]).exit_code, box.exec(["no-such-command-here"]).started) == (127, False)


def test_exec_orphans_are_reaped_by_pid_1():
    with Sandbox(["sleep", "100"]) as box:
        assert box.exec(["sh", "-c", "sleep 0.3 & exit 0"]).exit_code == 0
        wait_for(lambda: [p.argv for p in box.processes()] == [box.processes()[0].argv, ["sleep", "100"]],
                 "the orphaned sleep to end and be reaped")
        assert all(p.state != "Z" for p in box.processes())
        result = box.stop(timeout=TIMEOUT)
    assert result.report["zombies_reaped"] >= 1


def test_exec_timeout_kills_what_it_started_and_a_stopped_sandbox_refuses():
    marker = uuid.uuid4().hex
    with Sandbox(["sleep", "100"]) as box:
        with pytest.raises(TimeoutExpired):
            box.exec(["sleep", "300"], timeout=0.5, env=clean_env(LEAK_MARKER=marker))
        wait_for(lambda: [p.argv for p in box.processes()][1:] == [["sleep", "100"]], "the exec'd sleep to be gone")
        assert leaked(marker) == []  # nowhere on the host either (by its marker: any `sleep 300` is not ours)
    with pytest.raises(pyinit.SandboxError, match="not running"):
        box.exec(["true"])

