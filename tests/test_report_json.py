"""The exit report's JSON, in-process: the schema docs/how-it-works.md documents, for each way a child can end."""

import json
import os
import signal
import time

import pytest

from pyinit.report import Report

KEYS = {"version", "pid", "command", "child", "exit_code", "signals", "grace", "drain", "settle", "leftovers",
        "zombies_reaped", "timeline"}


def exited(code: int) -> int:
    """The wait status of a process that exited with `code`."""
    return code << 8


def killed(signo: int) -> int:
    return signo


def test_fresh_report():
    before = time.time()
    report = Report(("my-server", "--port", "8080"))
    data = report.as_dict(125)
    assert set(data) == KEYS
    assert data["version"] == 1 and data["pid"] == os.getpid()
    assert data["command"] == ["my-server", "--port", "8080"]
    assert data["child"] == {"pid": None, "exit_code": None, "signal": None}
    assert data["exit_code"] == 125
    assert data["signals"] == {"received": {}, "forwarded": {}}
    assert data["zombies_reaped"] == 0
    assert data["settle"] == {"seconds": 0.0, "waited": 0.0} and data["leftovers"] == []
    assert before <= data["timeline"]["start"] <= time.time()
    assert {k: v for k, v in data["timeline"].items() if k != "start"} == {
        "first_signal": None, "first_terminating_signal": None, "child_exit": None, "exit": None}


@pytest.mark.parametrize("status, exit_code, signal_name", [
    (exited(0), 0, None), (exited(3), 3, None), (exited(255), 255, None),
    (killed(signal.SIGTERM), None, "SIGTERM"), (killed(signal.SIGKILL), None, "SIGKILL"),
    (killed(signal.SIGRTMIN + 2), None, "SIGRTMIN+2"),
])
def test_child_outcome(status, exit_code, signal_name):
    assert os.WIFEXITED(status) == (exit_code is not None)  # the statuses are what the kernel gives
    report = Report(("x",))
    report.child_pid, report.child_status = 2, status
    assert report.as_dict(0)["child"] == {"pid": 2, "exit_code": exit_code, "signal": signal_name}


def test_counts_and_marks():
    report = Report(("x",))
    for name in ("SIGUSR1", "SIGUSR1", "SIGTERM"):
        report.count(report.received, name)
    report.count(report.forwarded, "SIGQUIT")
    report.mark("child_exit")
    first = report.timeline["child_exit"]
    report.mark("child_exit")  # the first time counts
    data = report.as_dict(0)
    assert data["signals"] == {"received": {"SIGUSR1": 2, "SIGTERM": 1}, "forwarded": {"SIGQUIT": 1}}
    assert data["timeline"]["child_exit"] == first


def test_written_to_a_path_and_to_a_descriptor(tmp_path):
    path = tmp_path / "report.json"
    report = Report(("x",))
    report.child_status = exited(4)
    report.write(str(path), 4)
    from_path = json.loads(path.read_text())
    assert from_path["exit_code"] == 4 and from_path["timeline"]["exit"] is not None
    read_end, write_end = os.pipe()
    try:
        report.write("fd:%d" % write_end, 4)
        os.close(write_end)
        text = os.read(read_end, 1 << 16).decode()
    finally:
        os.close(read_end)
    assert text.endswith("}\n") and text.count("\n") == 1  # one line
    assert json.loads(text)["child"]["exit_code"] == 4


@pytest.mark.parametrize("destination", ["fd:999999", "fd:2147483648", "fd:x", "/nonexistent/dir/report.json"])
def test_unwritable_destination_never_raises(destination):
    Report(("x",)).write(destination, 0)
