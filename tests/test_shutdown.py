"""Shutdown policy (issue 5): --grace, --drain, the subreaper's clean-up, --term-delay, -p with --grace,
and the --exit-report JSON.

The child is tests/programs/shutdown_tree.py: a main child that ignores or
handles SIGTERM as told, with grandchildren that are `stubborn` (ignore every
terminating signal: only SIGKILL ends them) or `slow` (on SIGTERM print
`cleanup`, take a while, print `done`, exit), some of them double-forked
orphans that pyinit adopts. The main child exits when the test closes its
stdin. Signal-by-signal checks use tests/programs/recorder.py.

Timings are real and checked with generous bounds both ways: a deadline of S
seconds must not pass before EARLY * S, and must have passed before S + SLACK.
"Nothing left" is checked from the host by PID and start time (a reused PID
is another process), right after pyinit has exited.
"""

import contextlib
import fcntl
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from pyinit.report import WRITE_TIMEOUT
from support import PYINIT, TIMEOUT, clean_env, forwarder, program, pyinit_lines, running, start_behind_parent, stat, wait_for

TERM, INT, QUIT, HUP, USR1, USR2, WINCH = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP,
                                           signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH)
EARLY = 0.9  # a deadline of S seconds must not fire before EARLY * S ...
SLACK = 5.0  # ... and must have fired by S + SLACK: a small, noisy machine
IGNORE_ALL = ("--ignore", "TERM,INT,QUIT,HUP")


# --- helpers ------------------------------------------------------------------------------------


def tree(*args: object) -> "list[str]":
    return program("shutdown_tree", *args)


def start_tree(start, placement, options=(), tree_args=(), *, env=None, **more):
    """pyinit OPTIONS -- shutdown_tree.py TREE_ARGS, once the whole family is ready.

    Returns (init, lines, family): the ready lines (the main child's last),
    and (host PID, start time) of every process below pyinit.
    """
    init = start([*options, "--", *tree(*tree_args)], placement, env=env, **more)
    lines = []
    while not (lines and lines[-1].startswith("ready child ")):
        lines.append(init.out.next())
    family = [(pid, info.start_time) for pid, info in ((p, stat(p)) for p in init.tree()) if info]
    expected = 1 + sum(1 for arg in tree_args if arg in ("--grandchild", "--orphan"))
    assert len(family) == expected, "expected %d processes below pyinit, found %s" % (expected, family)
    return init, lines, family


def left(family) -> "list[str]":
    """The processes of `family` that still exist (zombies included)."""
    found = []
    for pid, start_time in family:
        info = stat(pid)
        if info and info.start_time == start_time:
            found.append("%d %s" % (pid, info.state))
    return found


def finish(init, family, timeout=TIMEOUT) -> "tuple[int, float]":
    """Close the main child's stdin (it exits); return pyinit's exit code and how long that took."""
    began = time.monotonic()
    init.close_stdin()
    code = init.wait(timeout)
    elapsed = time.monotonic() - began
    remaining = left(family)
    assert remaining == [], "left behind after pyinit exited: %s" % remaining
    return code, elapsed


def signal_and_wait(init, signo, timeout=TIMEOUT) -> "tuple[int, float]":
    """Send `signo` to pyinit; return its exit code and the seconds from the signal to its exit."""
    began = time.monotonic()
    os.kill(init.pid, signo)
    code = init.wait(timeout)
    return code, time.monotonic() - began


def rest(init, timeout=TIMEOUT) -> "list[str]":
    """The lines still to come on stdout, up to end-of-file (every writer gone)."""
    data = init.out.buffer
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, "stdout still open after %.0fs: %r" % (timeout, data)
        ready, _, _ = select.select([init.out.fd], [], [], remaining)
        if ready:
            chunk = os.read(init.out.fd, 65536)
            if not chunk:
                break
            data += chunk
    init.out.buffer = b""
    return data.decode(errors="replace").splitlines()


def within(elapsed: float, low: float, high: float, what: str) -> None:
    assert low <= elapsed < high, "%s after %.3f s; expected %.2f to %.2f s" % (what, elapsed, low, high)


def own_pid(line: str) -> int:
    """The PID at the end of a `ready ROLE PID` line: as the process sees itself."""
    return int(line.split()[-1])


def start_recorder(start, placement, options=(), exit_on=TERM, **more):
    init = start([*options, "--", *program("recorder", "child", "--exit-on", int(exit_on))], placement, **more)
    assert init.out.next() == "child ready"
    return init


def recorded(init, signo: int) -> str:
    return "child %d %d" % (signo, forwarder(init))


def wait_for_log(init, text: str) -> None:
    wait_for(lambda: text in init.stderr, "pyinit to log %r" % text)


# --- the exit report ----------------------------------------------------------------------------

REPORT_KEYS = {"version", "pid", "command", "child", "exit_code", "signals", "grace", "drain", "settle", "leftovers",
               "zombies_reaped", "timeline"}
TIMELINE_KEYS = {"start", "first_signal", "first_terminating_signal", "child_exit", "exit"}
LEFTOVER_KEYS = {"pid", "ppid", "name", "argv", "state"}


def optional(value, kind) -> bool:
    return value is None or type(value) is kind


def check_schema(report: dict) -> None:
    """Every key of the schema in report.py, each with its type, and nothing else."""
    assert set(report) == REPORT_KEYS, report
    assert report["version"] == 1 and type(report["version"]) is int
    assert type(report["pid"]) is int and report["pid"] > 0
    assert type(report["command"]) is list and all(type(arg) is str for arg in report["command"])
    child = report["child"]
    assert set(child) == {"pid", "exit_code", "signal"}, child
    assert optional(child["pid"], int) and optional(child["exit_code"], int) and optional(child["signal"], str)
    assert child["exit_code"] is None or child["signal"] is None, "both an exit code and a signal: %s" % child
    if child["signal"] is not None:
        assert child["signal"].startswith("SIG"), child
    assert type(report["exit_code"]) is int and 0 <= report["exit_code"] <= 255
    assert set(report["signals"]) == {"received", "forwarded"}
    for table in report["signals"].values():
        assert type(table) is dict
        for name, count in table.items():
            assert name.startswith("SIG") and type(count) is int and count >= 1, table
    for policy in ("grace", "drain"):
        entry = report[policy]
        assert set(entry) == {"seconds", "killed", "processes"} | ({"stopped"} if policy == "drain" else set()), entry
        assert optional(entry["seconds"], float), entry
        assert type(entry["killed"]) is bool and type(entry["processes"]) is int and entry["processes"] >= 0, entry
        assert entry["killed"] == (entry["processes"] > 0), entry
    assert all(type(pid) is int for pid in report["drain"]["stopped"]), report["drain"]
    assert set(report["settle"]) == {"seconds", "waited"} and type(report["settle"]["seconds"]) is float
    assert 0 <= report["settle"]["waited"] <= report["settle"]["seconds"] + SLACK, report["settle"]
    leftovers = report["leftovers"]
    assert leftovers is None or type(leftovers) is list, leftovers
    for entry in leftovers or ():
        assert set(entry) == LEFTOVER_KEYS and entry["state"] not in "ZX", entry
        assert type(entry["pid"]) is int and type(entry["ppid"]) is int and type(entry["name"]) is str, entry
        assert type(entry["argv"]) is list and all(type(arg) is str for arg in entry["argv"]), entry
    assert type(report["zombies_reaped"]) is int and report["zombies_reaped"] >= 0
    timeline = report["timeline"]
    assert set(timeline) == TIMELINE_KEYS, timeline
    assert type(timeline["start"]) is float and type(timeline["exit"]) is float, timeline
    assert optional(timeline["first_terminating_signal"], float) and optional(timeline["child_exit"], float)
    assert optional(timeline["first_signal"], float)
    if timeline["first_terminating_signal"] is not None:
        assert timeline["first_signal"] is not None and timeline["first_signal"] <= timeline["first_terminating_signal"]


def check_timeline(report: dict, before: float, after: float) -> None:
    """start <= first_terminating_signal <= child_exit <= exit, for those that happened, within the run."""
    timeline = report["timeline"]
    times = [timeline[event] for event in ("start", "first_terminating_signal", "child_exit", "exit")]
    times = [t for t in times if t is not None]
    assert times == sorted(times), timeline
    assert before <= timeline["start"] and timeline["exit"] <= after, (before, timeline, after)


def parse_report(text: str) -> dict:
    """One JSON object on one line, checked against the schema."""
    assert text.endswith("\n") and text.count("\n") == 1, "not one line: %r" % text
    report = json.loads(text)
    check_schema(report)
    return report


def load_report(path: Path) -> dict:
    return parse_report(path.read_text())


def expected_pid(init) -> int:
    """pyinit's PID in its own namespace."""
    return 1 if init.placement == "pid1" else init.pid


def default_drain(placement: str) -> "float | None":
    return None if placement == "pid1" else 2.0


def cases(table: dict, as_pid1: "set[str]") -> list:
    """Parameters (placement, *values) for each case of `table`: all as subreaper, those named also as PID 1.

    The timers do not depend on the placement; the cases run in both where
    the placement could matter, to keep the file's run time short.
    """
    params = []
    for placement in ("pid1", "subreaper"):
        for name, values in table.items():
            if placement == "subreaper" or name in as_pid1:
                params.append(pytest.param(placement, *values, id="%s-%s" % (placement, name)))
    return params


# --- --grace ------------------------------------------------------------------------------------

GRACE = {
    "TERM": (["--grace", "0.3"], {}, TERM),
    "INT": (["--grace", "0.3"], {}, INT),
    "QUIT": (["--grace", "0.3"], {}, QUIT),
    "HUP": (["--grace", "0.3"], {}, HUP),
    "equals": (["--grace=0.3"], {}, TERM),
    "PYINIT_GRACE": ([], {"PYINIT_GRACE": "0.3"}, TERM),
    "flag-beats-PYINIT_GRACE": (["--grace", "0.3"], {"PYINIT_GRACE": "30"}, TERM),
    "rewritten-USR1:TERM": (["--grace", "0.3", "-r", "USR1:TERM"], {}, USR1),
    "rewritten-TERM:HUP": (["--grace", "0.3", "-r", "TERM:HUP"], {}, TERM),
}


@pytest.mark.parametrize("placement, options, variables, signo", cases(GRACE, {"TERM", "PYINIT_GRACE",
                                                                           "rewritten-USR1:TERM"}))
def test_grace_kills_the_group_of_a_child_that_ignores_the_signal(start, placement, options, variables, signo):
    """A terminating signal (after rewriting) is forwarded; S seconds later the child's whole group is SIGKILLed.

    The grandchild ignores it too, and stays in the child's group: it must
    go with the child's group, not be left for the drain (`--drain 5` would
    hold pyinit 5 s and say so on stderr).
    """
    init, _, family = start_tree(start, placement, [*options, "--drain", "5"],
                                 [*IGNORE_ALL, "--grandchild", "stubborn"], env=clean_env(**variables))
    code, elapsed = signal_and_wait(init, signo)
    assert code == 128 + signal.SIGKILL
    within(elapsed, EARLY * 0.3, 0.3 + SLACK, "SIGKILL")
    assert left(family) == []
    expected = "pyinit: the child did not exit within the 0.3 s grace period: sending SIGKILL"
    assert pyinit_lines(init.stderr) == [expected]


def test_grace_with_single_child_kills_only_the_child(start, placement):
    """With -c the grace SIGKILL goes to the child alone: the grandchild lives on, for the drain to end.

    The grandchild exits on SIGTERM, which under -c only the drain sends it:
    its `cleanup` line proves it outlived the grace period's SIGKILL.
    """
    init, lines, family = start_tree(start, placement, ["-c", "--grace", "0.5", "--drain", "5"],
                                     [*IGNORE_ALL, "--grandchild", "slow:0"])
    grandchild = own_pid(lines[0])
    code, elapsed = signal_and_wait(init, TERM)
    assert code == 128 + signal.SIGKILL
    within(elapsed, EARLY * 0.5, 0.5 + SLACK, "SIGKILL")
    assert left(family) == []
    assert rest(init) == ["cleanup slow %d" % grandchild, "done slow %d" % grandchild]


def test_child_that_exits_in_time_is_not_killed(start, placement):
    """The child takes 0.3 s to exit on SIGTERM, well within a 3 s grace: its own exit code, no SIGKILL."""
    init, lines, family = start_tree(start, placement, ["--grace", "3"], ["--on-term", "42:0.3"])
    code, elapsed = signal_and_wait(init, TERM)
    assert code == 42
    assert rest(init) == ["term child %d" % own_pid(lines[-1])]
    within(elapsed, 0.25, 3, "exit")
    assert init.stderr == ""


NO_GRACE = {
    "no-signal": ([], None, None),
    "USR1": ([], USR1, "forwarded SIGUSR1"),
    "rewritten-TERM:0": (["-r", "TERM:0"], TERM, "dropped SIGTERM"),
    "rewritten-TERM:USR1": (["-r", "TERM:USR1"], TERM, "forwarded SIGUSR1"),
}


@pytest.mark.parametrize("placement, options, signo, logged", cases(NO_GRACE, {"USR1", "rewritten-TERM:USR1"}))
def test_no_grace_timer_without_a_terminating_signal(start, placement, options, signo, logged, tmp_path):
    """--grace 0.1, and the child runs 0.5 s past it: nothing terminating was forwarded, so nothing is killed.

    Terminating is judged after rewriting, in the report's timeline too: a
    SIGTERM rewritten to 0 or to SIGUSR1 is no terminating signal.
    """
    path = tmp_path / "report.json"
    init, _, family = start_tree(start, placement, ["-v", "--grace", "0.1", "--exit-report", str(path), *options],
                                 ["--ignore", "TERM,USR1", "--code", "5"])
    if signo:
        os.kill(init.pid, signo)
        wait_for_log(init, logged)
    time.sleep(0.5)
    assert len(left(family)) == 1 and running(family[0][0]), "the child was killed"
    code, _ = finish(init, family)
    assert code == 5
    assert "grace" not in init.stderr
    report = load_report(path)
    assert report["grace"] == {"seconds": 0.1, "killed": False, "processes": 0}
    assert report["timeline"]["first_terminating_signal"] is None


# --- --drain ---------------------------------------------------------------------------------

DRAIN = {
    "--drain": (["--drain", "10"], {}),
    "PYINIT_DRAIN": ([], {"PYINIT_DRAIN": "10"}),
}


@pytest.mark.parametrize("options, variables", DRAIN.values(), ids=DRAIN.keys())
def test_drain_waits_for_slow_grandchildren(start, placement, options, variables, tmp_path):
    """The main child exits 7; its slow grandchild and orphan get SIGTERM, clean up, and pyinit waits for them.

    Without the drain, as PID 1 they would die by the kernel's SIGKILL before
    printing `cleanup`; pyinit exits 7 after their `done`, long before 10 s.
    """
    path = tmp_path / "report.json"
    init, lines, family = start_tree(start, placement, [*options, "--exit-report", str(path)],
                                     ["--code", "7", "--grandchild", "slow:0.3", "--orphan", "slow:0.2"],
                                     env=clean_env(**variables))
    slow = sorted(own_pid(line) for line in lines[:2])
    code, elapsed = finish(init, family)
    assert code == 7
    within(elapsed, 0.25, 10 * EARLY, "exit after the drain")
    output = rest(init)
    assert sorted(output) == sorted(["%s slow %d" % (word, pid) for pid in slow for word in ("cleanup", "done")])
    for pid in slow:
        assert output.index("cleanup slow %d" % pid) < output.index("done slow %d" % pid)
    assert init.stderr == ""
    report = load_report(path)
    assert report["drain"] == {"seconds": 10.0, "killed": False, "processes": 0, "stopped": report["drain"]["stopped"]}
    assert sorted(report["drain"]["stopped"]) == slow
    assert sorted(entry["pid"] for entry in report["leftovers"]) == slow  # what the drain had to stop
    assert report["zombies_reaped"] == 2
    assert report["child"]["exit_code"] == 7 and report["exit_code"] == 7
    assert report["timeline"]["exit"] - report["timeline"]["child_exit"] >= 0.25


def test_drain_reaps_are_counted_and_logged_under_w(start, placement, tmp_path):
    """The drain reaps with the loop's own reaper: under -w each leftover it reaps is logged, and counted.

    The grandchild and the orphan outlive the main child and are reaped
    only during the drain: two lines, zombies_reaped 2.
    """
    path = tmp_path / "report.json"
    init, lines, family = start_tree(start, placement, ["-w", "--drain", "10", "--exit-report", str(path)],
                                     ["--code", "7", "--grandchild", "slow:0.1", "--orphan", "slow:0.1"])
    assert finish(init, family)[0] == 7
    reaped = [line for line in pyinit_lines(init.stderr) if re.fullmatch(r"pyinit: reaped zombie \d+: exit code 0", line)]
    assert len(reaped) == 2, init.stderr
    assert load_report(path)["zombies_reaped"] == 2


def test_drain_kills_stubborn_grandchildren(start, placement, tmp_path):
    """Two stubborn grandchildren (one an adopted orphan) outlive the SIGTERM: SIGKILLed after --drain 1.

    A slow one beside them still gets to clean up. pyinit exits with the
    main child's 7, between 1 s and 1 + SLACK s after it, and nothing is left.
    """
    path = tmp_path / "report.json"
    init, _, family = start_tree(start, placement, ["--drain", "1", "--exit-report", str(path)],
                                 ["--code", "7", "--grandchild", "stubborn", "--orphan", "stubborn",
                                  "--grandchild", "slow:0.2"])
    code, elapsed = finish(init, family)
    assert code == 7
    within(elapsed, EARLY * 1, 1 + SLACK, "exit after the drain")
    assert [line.split()[0] for line in rest(init)] == ["cleanup", "done"]
    assert pyinit_lines(init.stderr) == ["pyinit: drain over: SIGKILL sent to 2 process(es)"]
    report = load_report(path)
    assert report["drain"] == {"seconds": 1.0, "killed": True, "processes": 2, "stopped": report["drain"]["stopped"]}
    assert sorted(report["drain"]["stopped"]) == sorted(entry["pid"] for entry in report["leftovers"])
    assert len(report["leftovers"]) == 3
    assert report["zombies_reaped"] == 3
    assert report["child"] == {"pid": report["child"]["pid"], "exit_code": 7, "signal": None}
    assert report["exit_code"] == 7 and report["grace"] == {"seconds": None, "killed": False, "processes": 0}
    assert report["timeline"]["first_terminating_signal"] is None
    assert report["timeline"]["exit"] - report["timeline"]["child_exit"] >= EARLY * 1


def test_pid1_without_drain_exits_at_once(start, tmp_path):
    """No --drain as PID 1: pyinit exits with the child, and the kernel SIGKILLs the rest (no SIGTERM, no cleanup)."""
    path = tmp_path / "report.json"
    init, _, family = start_tree(start, "pid1", ["--exit-report", str(path)],
                                 ["--code", "7", "--grandchild", "slow:0.5", "--orphan", "stubborn"])
    code, elapsed = finish(init, family)
    assert code == 7
    within(elapsed, 0, SLACK, "exit")
    assert rest(init) == [], "a leftover was sent SIGTERM"
    assert init.stderr == ""
    report = load_report(path)
    assert report["drain"] == {"seconds": None, "killed": False, "processes": 0, "stopped": []}
    assert len(report["leftovers"]) == 2  # the kernel killed them, but they were left


# --- --settle and the leftovers ------------------------------------------------------------------

SETTLE = {
    "--settle": (["--settle", "10"], {}),
    "PYINIT_SETTLE": ([], {"PYINIT_SETTLE": "10"}),
}


@pytest.mark.parametrize("options, variables", SETTLE.values(), ids=SETTLE.keys())
def test_settle_waits_for_workers_dying_of_the_same_signal(start, placement, options, variables, tmp_path):
    """SIGTERM reaches the whole group; the child exits at once, its workers 0.3 s later: not leftovers.

    The slow grandchild and the slow orphan clean up and exit on their own
    within the settle, so the report lists nothing left and pyinit exits as
    soon as the last one is reaped, long before the 10 s are over.
    """
    path = tmp_path / "report.json"
    init, lines, family = start_tree(start, placement, [*options, "--exit-report", str(path)],
                                     ["--on-term", "0", "--grandchild", "slow:0.3", "--orphan", "slow:0.3"],
                                     env=clean_env(**variables))
    os.kill(init.pid, TERM)
    assert init.wait() == 0
    assert left(family) == []
    report = load_report(path)
    assert report["leftovers"] == [] and report["drain"]["stopped"] == []
    assert report["settle"]["seconds"] == 10.0
    within(report["settle"]["waited"], 0.25, 10 * EARLY, "the settle's end")
    assert sorted(line.split()[0] for line in rest(init)) == ["cleanup", "cleanup", "done", "done", "term"]


def test_without_settle_the_same_workers_are_leftovers(start, tmp_path):
    """The same family as PID 1 with no settle: the report lists both slow workers, running (S), with their argv."""
    path = tmp_path / "report.json"
    init, lines, family = start_tree(start, "pid1", ["--exit-report", str(path)],
                                     ["--on-term", "0", "--grandchild", "slow:2", "--orphan", "slow:2"])
    os.kill(init.pid, TERM)
    assert init.wait() == 0
    report = load_report(path)
    slow = sorted(own_pid(line) for line in lines if line.startswith("ready slow "))
    assert sorted(entry["pid"] for entry in report["leftovers"]) == slow, report["leftovers"]
    for entry in report["leftovers"]:
        assert entry["state"] in "RSD" and entry["argv"] == tree("--on-term", "0", "--grandchild", "slow:2",
                                                                  "--orphan", "slow:2"), entry
    assert report["settle"] == {"seconds": 0.0, "waited": 0.0}


@pytest.mark.parametrize("sent", [TERM, QUIT], ids=["SIGTERM", "SIGQUIT"])
def test_a_terminating_signal_ends_the_settle_at_once_and_the_report_is_written(start, placement, tmp_path, sent):
    """`--settle 20`, the child gone, a stubborn orphan left: `docker stop`'s signal (SIGTERM, or the image's
    STOPSIGNAL) ends the settle at once, so the report is written before the SIGKILL that would follow it."""
    path = tmp_path / "report.json"
    init, lines, family = start_tree(start, placement, ["-v", "--settle", "20", "--drain", "0.2",
                                                        "--exit-report", str(path)],
                                     ["--code", "5", "--orphan", "stubborn"])
    init.close_stdin()
    wait_for(lambda: "exited: exit code 5" in init.stderr, "the child to exit and the settle to begin")
    began = time.monotonic()
    os.kill(init.pid, sent)
    assert init.wait() == 5
    within(time.monotonic() - began, 0, 0.2 + SLACK, "exit after the signal, the drain included")
    assert left(family) == []
    report = load_report(path)
    assert [entry["pid"] for entry in report["leftovers"]] == [own_pid(lines[0])]
    assert report["settle"]["seconds"] == 20.0 and report["settle"]["waited"] < 20 * EARLY
    assert report["signals"]["received"] == {signal.Signals(sent).name: 1} and report["drain"]["killed"]


def test_a_slow_steady_reader_gets_the_whole_report(start, placement):
    """The report's 2 s limit is on idleness: a reader that takes 64 KiB every 0.5 s, 4 s for half a megabyte
    (five leftovers with 100 KB command lines), gets every byte, valid JSON, and pyinit warns of nothing."""
    read_end, write_end = os.pipe()
    try:
        init = start(["--exit-report", "fd:%d" % write_end, "--", sys.executable, "-c", LONG_COMMAND_LINES],
                     placement, pass_fds=(write_end,))
    finally:
        os.close(write_end)
    chunks = []
    with open(read_end, "rb", buffering=0) as report:
        for chunk in iter(lambda: report.read(65536), b""):
            chunks.append(chunk)
            time.sleep(0.5)
    assert init.wait() == 0
    data = b"".join(chunks)
    assert len(data) > 400_000 and len(json.loads(data)["leftovers"]) >= 5
    assert init.stderr == ""


# Five processes left running, each with a command line of a hundred 1,000-byte arguments.
LONG_COMMAND_LINES = """if True:
    import subprocess
    for _ in range(5):
        subprocess.Popen(["sh", "-c", "sleep 1000; :", "sh", *["x" * 1000] * 100], start_new_session=True)
"""


def test_a_settle_that_runs_out_reports_what_still_runs_and_w_names_it(start, placement, tmp_path):
    """A stubborn orphan outlives a 0.3 s settle: it is the one leftover, and -w names it in one line."""
    path = tmp_path / "report.json"
    init, lines, family = start_tree(start, placement, ["-w", "--settle", "0.3", "--drain", "0.2",
                                                        "--exit-report", str(path)],
                                     ["--code", "5", "--orphan", "stubborn"])
    code, elapsed = finish(init, family)
    assert code == 5
    within(elapsed, EARLY * 0.5, 0.5 + SLACK, "exit after the settle and the drain")
    report = load_report(path)
    stubborn = own_pid(lines[0])
    assert [entry["pid"] for entry in report["leftovers"]] == [stubborn]
    assert report["drain"] == {"seconds": 0.2, "killed": True, "processes": 1, "stopped": [stubborn]}
    within(report["settle"]["waited"], EARLY * 0.3, 0.3 + SLACK, "the settle's end")
    warnings = [line for line in pyinit_lines(init.stderr) if " left " in line]
    assert len(warnings) == 1 and re.fullmatch(
        r"pyinit: the child exited and left 1 process\(es\) running: \S+ \(PID %d\)" % stubborn, warnings[0]), warnings


def test_a_zombie_is_not_a_leftover_but_its_running_parent_is(start, tmp_path):
    """A middle process that never reaps its own child: it runs (a leftover), its exited child is a zombie (not one)."""
    path = tmp_path / "report.json"
    code = ("import os, sys, time\n"
            "if os.fork() == 0:\n"
            "    if os.fork() == 0:\n"
            "        os._exit(0)\n"  # the grandchild exits at once and is never reaped
            "    print('middle', os.getpid(), flush=True)\n"
            "    time.sleep(60)\n"
            "    os._exit(0)\n"
            "time.sleep(0.5)\n")
    init = start(["--exit-report", str(path), "--", sys.executable, "-c", code], "pid1")
    assert init.wait() == 0
    report = load_report(path)
    middle = int(rest(init)[0].split()[1])
    assert [(entry["pid"], entry["state"]) for entry in report["leftovers"]] == [(middle, "S")], report["leftovers"]


def test_leftovers_are_unknown_where_proc_is_not_the_namespaces(tmp_path):
    """PID 1 under `unshare --pid` without a fresh /proc cannot tell what is left: null, never a clean []."""
    path = tmp_path / "report.json"
    result = subprocess.run(["unshare", "--fork", "--pid", *PYINIT, "--exit-report", str(path), "--",
                             "sh", "-c", "sleep 5 & exit 3"], env=clean_env(), stdin=subprocess.DEVNULL,
                            capture_output=True, timeout=TIMEOUT)
    assert result.returncode == 3, result.stderr
    assert load_report(path)["leftovers"] is None


def test_a_report_pipe_is_the_callers_not_the_childs(start, placement):
    """--exit-report fd:3: the child does not inherit descriptor 3, so a daemon it leaves cannot hold the pipe open."""
    read_end, write_end = os.pipe()
    try:
        init = start(["--exit-report", "fd:%d" % write_end, "--", "sh", "-c", "ls /proc/self/fd"], placement,
                     pass_fds=(write_end,))
        os.close(write_end)
        assert init.wait() == 0
        report = json.loads(os.read(read_end, 1 << 20))
    finally:
        os.close(read_end)
    assert report["exit_code"] == 0
    assert str(write_end) not in rest(init), "the child inherited the report's descriptor"


def test_a_full_report_pipe_costs_at_most_the_write_timeout(start, placement):
    """Nobody reads the report's pipe and it is full: pyinit warns and exits within report.WRITE_TIMEOUT, not never."""
    read_end, write_end = os.pipe()
    try:
        fcntl.fcntl(write_end, fcntl.F_SETFL, os.O_NONBLOCK)
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(write_end, b"x" * 65536)
        fcntl.fcntl(write_end, fcntl.F_SETFL, 0)
        init = start(["--exit-report", "fd:%d" % write_end, "--", "sh", "-c", "exit 4"], placement,
                     pass_fds=(write_end,))
        began = time.monotonic()
        assert init.wait() == 4
        within(time.monotonic() - began, 0, WRITE_TIMEOUT + SLACK, "exit with a full report pipe")
    finally:
        os.close(read_end)
        os.close(write_end)
    lines = pyinit_lines(init.stderr)
    assert len(lines) == 1 and lines[0].startswith("pyinit: cannot write the exit report to fd:"), lines


# --- the subreaper leaves nothing behind ----------------------------------------------------------


@pytest.mark.parametrize("with_report", [True, False], ids=["exit-report", "no-option-at-all"])
def test_subreaper_leaves_nothing_behind_by_default(start, tmp_path, with_report):
    """Not PID 1, no drain option: descendants and adopted orphans get SIGTERM, and the stubborn ones SIGKILL 2 s later.

    Checked by PID right after pyinit's exit: none is left, not even a zombie.
    With no option at all, the drain's policy is made only once the child
    has exited and left processes behind (init.py); it drains alike.
    """
    path = tmp_path / "report.json"
    init, _, family = start_tree(start, "subreaper", ["--exit-report", str(path)] if with_report else [],
                                 ["--code", "7", "--grandchild", "stubborn", "--orphan", "stubborn",
                                  "--orphan", "slow:0.1", "--grandchild", "slow:0.1"])
    code, elapsed = finish(init, family)
    assert code == 7
    within(elapsed, EARLY * 2, 2 + SLACK, "exit after the default drain")
    assert sorted(line.split()[0] for line in rest(init)) == ["cleanup", "cleanup", "done", "done"]
    assert pyinit_lines(init.stderr) == ["pyinit: drain over: SIGKILL sent to 2 process(es)"]
    if with_report:
        report = load_report(path)
        assert report["drain"] == {"seconds": 2.0, "killed": True, "processes": 2,
                                   "stopped": [entry["pid"] for entry in report["leftovers"]]}
        assert len(report["leftovers"]) == 4 and report["zombies_reaped"] == 4


SHORT_DRAIN = {
    "--drain": (["--drain", "0.5"], {}),
    "PYINIT_DRAIN": ([], {"PYINIT_DRAIN": "0.5"}),
}


@pytest.mark.parametrize("options, variables", SHORT_DRAIN.values(), ids=SHORT_DRAIN.keys())
def test_subreaper_drain_option_shortens_the_wait(start, tmp_path, options, variables):
    """--drain 0.5 instead of the default 2 s: the stubborn orphan is SIGKILLed about 0.5 s after the child's exit."""
    path = tmp_path / "report.json"
    init, _, family = start_tree(start, "subreaper", [*options, "--exit-report", str(path)],
                                 ["--code", "7", "--orphan", "stubborn"], env=clean_env(**variables))
    code, elapsed = finish(init, family)
    assert code == 7
    within(elapsed, EARLY * 0.5, 0.5 + SLACK, "exit after the drain")
    report = load_report(path)
    assert report["drain"] == {"seconds": 0.5, "killed": True, "processes": 1,
                               "stopped": [entry["pid"] for entry in report["leftovers"]]}
    assert len(report["leftovers"]) == 1
    # Measured by pyinit itself: the drain, not the default 2 s.
    within(report["timeline"]["exit"] - report["timeline"]["child_exit"], EARLY * 0.5, 1.8, "the drain's end")


# --- --term-delay -------------------------------------------------------------------------------

TERM_DELAY = {
    "--term-delay": (["--term-delay", "0.5"], {}),
    "--term-delay=": (["--term-delay=0.5"], {}),
    "PYINIT_TERM_DELAY": ([], {"PYINIT_TERM_DELAY": "0.5"}),
    "flag-beats-PYINIT_TERM_DELAY": (["--term-delay", "0.5"], {"PYINIT_TERM_DELAY": "30"}),
}


@pytest.mark.parametrize("placement, options, variables", cases(TERM_DELAY, {"--term-delay"}))
def test_term_delay_holds_sigterm(start, placement, options, variables):
    """A SIGTERM to pyinit reaches the child 0.5 s later, not before."""
    init = start_recorder(start, placement, options, env=clean_env(**variables))
    began = time.monotonic()
    os.kill(init.pid, TERM)
    assert init.out.next() == recorded(init, TERM)
    within(time.monotonic() - began, EARLY * 0.5, 0.5 + SLACK, "SIGTERM")
    assert init.wait() == 0


def test_second_sigterm_forwards_at_once(start, placement, tmp_path):
    """A second SIGTERM during a 1 s delay forwards at once, and only once: no other SIGTERM when the delay ends.

    After the delay's end, SIGWINCH (28) is a marker: a second SIGTERM (15)
    would have been forwarded by then, and would come first.
    """
    path = tmp_path / "report.json"
    init = start_recorder(start, placement, ["-v", "--term-delay", "1", "--exit-report", str(path)], exit_on=WINCH)
    began = time.monotonic()
    os.kill(init.pid, TERM)
    wait_for_log(init, "holding SIGTERM for 1 s")
    os.kill(init.pid, TERM)
    assert init.out.next() == recorded(init, TERM)
    within(time.monotonic() - began, 0, EARLY * 1, "SIGTERM")
    time.sleep(max(0.0, began + 1.4 - time.monotonic()))  # past the end of the delay
    os.kill(init.pid, WINCH)
    assert init.out.next() == recorded(init, WINCH), "more than one SIGTERM"
    assert init.wait() == 0
    report = load_report(path)
    assert report["signals"] == {"received": {"SIGTERM": 2, "SIGWINCH": 1}, "forwarded": {"SIGTERM": 1, "SIGWINCH": 1}}


def test_sigint_during_the_delay_forwards_both(start, placement):
    """SIGINT during a 10 s delay: the held SIGTERM goes at once, and the SIGINT with it."""
    init = start_recorder(start, placement, ["-v", "--term-delay", "10"], exit_on=WINCH)
    began = time.monotonic()
    os.kill(init.pid, TERM)
    wait_for_log(init, "holding SIGTERM")
    os.kill(init.pid, INT)
    assert sorted(init.out.take(2)) == sorted([recorded(init, INT), recorded(init, TERM)])
    within(time.monotonic() - began, 0, 10 * EARLY, "SIGTERM")
    os.kill(init.pid, WINCH)  # marker: nothing else came
    assert init.out.next() == recorded(init, WINCH)
    assert init.wait() == 0


def test_other_signals_pass_during_the_delay(start, placement):
    """SIGUSR1 during the delay is forwarded at once and does not release the SIGTERM, which comes after 0.8 s."""
    init = start_recorder(start, placement, ["-v", "--term-delay", "0.8"])
    began = time.monotonic()
    os.kill(init.pid, TERM)
    wait_for_log(init, "holding SIGTERM")
    os.kill(init.pid, USR1)
    assert init.out.next() == recorded(init, USR1)
    assert init.out.next() == recorded(init, TERM)
    within(time.monotonic() - began, EARLY * 0.8, 0.8 + SLACK, "SIGTERM")
    assert init.wait() == 0


def test_grace_starts_when_the_held_sigterm_is_forwarded(start, tmp_path):
    """--term-delay 0.3 --grace 0.3: the SIGKILL comes about 0.6 s after the SIGTERM; the timeline marks its receipt."""
    path = tmp_path / "report.json"
    init, _, family = start_tree(start, "subreaper", ["--term-delay", "0.3", "--grace", "0.3",
                                                      "--exit-report", str(path)], IGNORE_ALL)
    before = time.time()
    code, elapsed = signal_and_wait(init, TERM)
    assert code == 128 + signal.SIGKILL
    within(elapsed, EARLY * 0.6, 0.6 + SLACK, "SIGKILL")
    report = load_report(path)
    timeline = report["timeline"]
    assert None not in (timeline["first_terminating_signal"], timeline["child_exit"]), timeline
    assert before <= timeline["first_terminating_signal"]
    within(timeline["child_exit"] - timeline["first_terminating_signal"], EARLY * 0.6, 0.6 + SLACK, "child exit")
    assert report["grace"] == {"seconds": 0.3, "killed": True, "processes": 1}


# --- -p / --pdeathsig with --grace ----------------------------------------------------------------

def start_tree_behind_parent(start, placement, options, tree_args):
    """pyinit OPTIONS -- shutdown_tree.py, behind a parent the test can kill (see support.py)."""
    init, parent = start_behind_parent(start, placement, [*options, "--", *tree(*tree_args)], "ready child ")
    init.tree()  # remembered for the clean-up
    return init, parent


def test_parent_death_signal_starts_the_grace(adopter, start, placement, tmp_path):
    """-p TERM --grace 0.5: the parent's death delivers SIGTERM, forwarded and terminating: SIGKILL 0.5 s later."""
    path = tmp_path / "report.json"
    init, parent = start_tree_behind_parent(start, placement, ["-p", "TERM", "--grace", "0.5", "--exit-report",
                                                               str(path)], IGNORE_ALL)
    adopter.expect(init.pid)
    before = time.time()
    began = time.monotonic()
    os.kill(parent, signal.SIGKILL)
    assert adopter.exit_code(init.pid) == 128 + signal.SIGKILL
    within(time.monotonic() - began, EARLY * 0.5, 0.5 + SLACK, "SIGKILL")
    report = load_report(path)
    assert report["signals"] == {"received": {"SIGTERM": 1}, "forwarded": {"SIGTERM": 1}}
    assert report["grace"] == {"seconds": 0.5, "killed": True, "processes": 1}
    assert report["child"]["signal"] == "SIGKILL" and report["exit_code"] == 137
    assert report["timeline"]["first_terminating_signal"] is not None
    assert before <= report["timeline"]["first_terminating_signal"]
    check_timeline(report, before - 60, time.time())


def test_non_terminating_parent_death_signal_starts_no_grace(adopter, start, tmp_path):
    """-p USR1 --grace 0.1: the signal arrives and is forwarded, but nothing is killed; the child exits 5 by itself."""
    path = tmp_path / "report.json"
    init, parent = start_tree_behind_parent(start, "subreaper", ["-v", "-p", "USR1", "--grace", "0.1",
                                                                 "--exit-report", str(path)],
                                            ["--ignore", "TERM,USR1", "--code", "5"])
    adopter.expect(init.pid)
    os.kill(parent, signal.SIGKILL)
    wait_for_log(init, "forwarded SIGUSR1")
    time.sleep(0.6)
    assert running(init.pid)
    init.close_stdin()
    assert adopter.exit_code(init.pid) == 5
    report = load_report(path)
    assert report["signals"] == {"received": {"SIGUSR1": 1}, "forwarded": {"SIGUSR1": 1}}
    assert report["grace"] == {"seconds": 0.1, "killed": False, "processes": 0}
    assert report["timeline"]["first_terminating_signal"] is None


# --- --exit-report ------------------------------------------------------------------------------


def fd3_wrapper(path: Path) -> "list[str]":
    """A wrapper that execs pyinit with fd 3 open for writing on `path`."""
    return ["sh", "-c", 'exec "$@" 3>"$0"', str(path)]


DESTINATIONS = {name: (name,) for name in ("path", "path-equals", "PYINIT_EXIT_REPORT", "flag-beats-PYINIT_EXIT_REPORT",
                                           "fd:3", "PYINIT_EXIT_REPORT-fd:1")}


@pytest.mark.parametrize("placement, destination", cases(DESTINATIONS, {"path", "fd:3"}))
def test_report_of_a_normal_exit(start, placement, destination, tmp_path):
    """The child exits 3 by itself: every key of the schema, with what happened and nulls for what did not."""
    path = tmp_path / "report.json"
    options, variables, wrapper = [], {}, []
    if destination == "path":
        options = ["--exit-report", str(path)]
    elif destination == "path-equals":
        options = ["--exit-report=%s" % path]
    elif destination == "PYINIT_EXIT_REPORT":
        variables = {"PYINIT_EXIT_REPORT": str(path)}
    elif destination == "flag-beats-PYINIT_EXIT_REPORT":
        options = ["--exit-report", str(path)]
        variables = {"PYINIT_EXIT_REPORT": str(tmp_path / "not-this.json")}
    elif destination == "fd:3":
        options = ["--exit-report", "fd:3"]
        wrapper = fd3_wrapper(path)
    else:
        variables = {"PYINIT_EXIT_REPORT": "fd:1"}
    before = time.time()
    init, lines, family = start_tree(start, placement, options, ["--code", "3"], env=clean_env(**variables),
                                     wrapper=wrapper)
    code, _ = finish(init, family)
    assert code == 3
    assert init.stderr == ""
    if destination == "PYINIT_EXIT_REPORT-fd:1":
        output = rest(init)
        assert len(output) == 1, output
        report = parse_report(output[0] + "\n")
    else:
        report = load_report(path)
    assert sorted(os.listdir(tmp_path)) == (["report.json"] if destination != "PYINIT_EXIT_REPORT-fd:1" else [])
    assert report == {
        "version": 1,
        "pid": expected_pid(init),
        "command": tree("--code", "3"),
        "child": {"pid": own_pid(lines[-1]), "exit_code": 3, "signal": None},
        "exit_code": 3,
        "signals": {"received": {}, "forwarded": {}},
        "grace": {"seconds": None, "killed": False, "processes": 0},
        "drain": {"seconds": default_drain(placement), "killed": False, "processes": 0, "stopped": []},
        "settle": {"seconds": 0.0, "waited": 0.0},
        "leftovers": [],
        "zombies_reaped": 0,
        "timeline": report["timeline"],
    }
    check_timeline(report, before, time.time())
    assert report["timeline"]["first_terminating_signal"] is None and report["timeline"]["child_exit"] is not None


@pytest.mark.parametrize("signo", [USR1, TERM], ids=["USR1", "TERM"])
def test_report_of_a_child_killed_by_a_signal(start, placement, signo, tmp_path):
    """A forwarded signal kills the child: its name, a null exit code; a terminating one is in the timeline."""
    path = tmp_path / "report.json"
    before = time.time()
    init, lines, family = start_tree(start, placement, ["--exit-report", str(path)])
    code, _ = signal_and_wait(init, signo)
    assert code == 128 + signo
    report = load_report(path)
    name = signal.Signals(signo).name
    assert report["child"] == {"pid": own_pid(lines[-1]), "exit_code": None, "signal": name}
    assert report["exit_code"] == 128 + signo
    assert report["signals"] == {"received": {name: 1}, "forwarded": {name: 1}}
    assert report["grace"]["killed"] is False and report["drain"]["killed"] is False
    check_timeline(report, before, time.time())
    if signo == TERM:
        assert report["timeline"]["first_terminating_signal"] is not None
    else:
        assert report["timeline"]["first_terminating_signal"] is None
    assert report["timeline"]["child_exit"] is not None


def test_report_of_a_grace_kill(start, placement, tmp_path):
    """The grace SIGKILL: grace.killed, and the processes of the group (child, grandchild, orphan: 3)."""
    path = tmp_path / "report.json"
    before = time.time()
    init, lines, family = start_tree(start, placement, ["--grace", "0.5", "--drain", "5", "--exit-report", str(path)],
                                     [*IGNORE_ALL, "--grandchild", "stubborn", "--orphan", "stubborn"])
    code, _ = signal_and_wait(init, TERM)
    assert code == 137
    report = load_report(path)
    assert report["child"] == {"pid": own_pid(lines[-1]), "exit_code": None, "signal": "SIGKILL"}
    assert report["exit_code"] == 137
    assert report["grace"] == {"seconds": 0.5, "killed": True, "processes": 3}
    assert report["drain"] == {"seconds": 5.0, "killed": False, "processes": 0,
                               "stopped": [entry["pid"] for entry in report["leftovers"]]}
    assert report["zombies_reaped"] == 2
    assert report["signals"] == {"received": {"SIGTERM": 1}, "forwarded": {"SIGTERM": 1}}
    check_timeline(report, before, time.time())
    timeline = report["timeline"]
    assert None not in (timeline["first_terminating_signal"], timeline["child_exit"]), timeline
    within(timeline["child_exit"] - timeline["first_terminating_signal"], EARLY * 0.5, 0.5 + SLACK, "child exit")


def test_report_counts_reaped_zombies(start, placement, tmp_path):
    """orphans.py makes exactly 3 orphans that pyinit reaps: zombies_reaped is 3 (the child is not counted)."""
    path = tmp_path / "report.json"
    init = start(["--exit-report", str(path), "--", *program("orphans", 3)], placement)
    assert init.out.next() == "reaped 3"
    assert init.wait() == 0
    report = load_report(path)
    assert report["zombies_reaped"] == 3
    assert report["child"]["exit_code"] == 0 and report["drain"]["killed"] is False


def test_report_counts_signals_received_and_forwarded(start, placement, tmp_path):
    """Received counts every signal taken; forwarded only what went on (SIGUSR2 is dropped by -r USR2:0)."""
    path = tmp_path / "report.json"
    before = time.time()
    init = start_recorder(start, placement, ["-r", "USR2:0", "--exit-report", str(path)])
    for _ in range(2):  # one at a time: two pending SIGUSR1s would be one
        os.kill(init.pid, USR1)
        assert init.out.next() == recorded(init, USR1)
    os.kill(init.pid, USR2)
    os.kill(init.pid, WINCH)  # marker: pyinit has taken the SIGUSR2 (12 < 28) once this arrives
    assert init.out.next() == recorded(init, WINCH)
    os.kill(init.pid, TERM)
    assert init.out.next() == recorded(init, TERM)
    assert init.wait() == 0
    report = load_report(path)
    assert report["signals"] == {
        "received": {"SIGUSR1": 2, "SIGUSR2": 1, "SIGWINCH": 1, "SIGTERM": 1},
        "forwarded": {"SIGUSR1": 2, "SIGWINCH": 1, "SIGTERM": 1},
    }
    assert report["child"]["exit_code"] == 0 and report["exit_code"] == 0
    check_timeline(report, before, time.time())
    assert report["timeline"]["first_terminating_signal"] <= report["timeline"]["child_exit"]


def test_report_of_an_exec_failure(run, placement, tmp_path):
    """The command is not found: 127, and a report with a null child and no child exit."""
    path = tmp_path / "report.json"
    before = time.time()
    result = run(["--exit-report", str(path), "--", "/nonexistent/command"], placement)
    assert result.returncode == 127
    assert len(pyinit_lines(result.stderr)) == 1
    report = load_report(path)
    assert report["exit_code"] == 127
    assert report["child"]["exit_code"] is None and report["child"]["signal"] is None
    assert report["command"] == ["/nonexistent/command"]
    assert report["timeline"]["child_exit"] is None and report["timeline"]["first_terminating_signal"] is None
    assert report["zombies_reaped"] == 0
    check_timeline(report, before, time.time())


UNWRITABLE = {
    "missing-directory": "/nonexistent-pyinit-dir/report.json",
    "a-directory": "{tmp}",
    "closed-fd": "fd:97",
}


@pytest.mark.parametrize("destination", UNWRITABLE.values(), ids=UNWRITABLE.keys())
def test_unwritable_report_is_a_warning(run, placement, destination, tmp_path):
    """A report that cannot be written: one warning line; the exit code is still the child's; no traceback."""
    destination = destination.format(tmp=tmp_path)
    result = run(["--exit-report", destination, "--", "sh", "-c", "exit 3"], placement)
    assert result.returncode == 3
    lines = pyinit_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("pyinit: cannot write the exit report to %s" % destination), lines


def test_relative_report_path_is_the_working_directory(run, tmp_path):
    """A relative path is relative to the directory pyinit was started in, though the init moves to / at start.

    (It used to land in /: this test cleans up there in case it does again.)
    """
    name = "pyinit-shutdown-test-%s.json" % uuid.uuid4().hex
    try:
        result = run(["--exit-report", name, "--", "sh", "-c", "exit 3"], cwd=tmp_path)
        assert result.returncode == 3
        assert (tmp_path / name).exists(), "no report in the working directory; in /: %s" % Path("/", name).exists()
    finally:
        Path("/", name).unlink(missing_ok=True)


def test_relative_report_path_in_a_removed_working_directory(start, tmp_path):
    """A relative path where the working directory no longer exists: a usage error (125, one `pyinit: ` line).

    os.path.abspath raises FileNotFoundError there, which once escaped as a
    traceback and exit 1.
    """
    gone = tmp_path / "gone"
    gone.mkdir()
    errors = tmp_path / "stderr"
    with open(errors, "wb") as stderr:  # read here: the fixture's own check would fail in the teardown
        init = start(["--exit-report", "report.json", "--", "sh", "-c", "echo COMMAND RAN"], "subreaper",
                     stderr=stderr, wrapper=["sh", "-c", 'cd "$0" && rmdir "$0" && exec "$@"', str(gone)])
        code = init.wait()
    text = errors.read_text()
    assert "Traceback" not in text, text
    assert code == 125 and rest(init) == [], text
    lines = pyinit_lines(text)
    assert len(lines) == 1 and "--exit-report" in lines[0], lines


def test_report_to_a_fifo_without_reader_does_not_hang(start, tmp_path):
    """A FIFO nobody reads: a warning, and pyinit exits with the child's code at once.

    A blocking open(2) would wait for a reader for good, and pyinit, with
    every signal blocked, would not even hear SIGTERM.
    """
    fifo = tmp_path / "report.fifo"
    os.mkfifo(fifo)
    init = start(["--exit-report", str(fifo), "--", "sh", "-c", "exit 3"], "subreaper")
    assert init.wait(timeout=1.5) == 3
    lines = pyinit_lines(init.stderr)
    assert len(lines) == 1 and lines[0].startswith("pyinit: cannot write the exit report"), lines


def test_report_timeline_marks_a_rewritten_terminating_signal(start, tmp_path):
    """-r USR1:TERM: the SIGUSR1 is forwarded as SIGTERM and starts the grace, so it is the first terminating signal."""
    path = tmp_path / "report.json"
    init, _, family = start_tree(start, "subreaper", ["-r", "USR1:TERM", "--grace", "0.3", "--exit-report", str(path)],
                                 IGNORE_ALL)
    code, _ = signal_and_wait(init, USR1)
    assert code == 137
    report = load_report(path)
    assert report["grace"]["killed"] is True
    assert report["timeline"]["first_terminating_signal"] is not None


# --- bad values ---------------------------------------------------------------------------------

BAD_VALUES = {
    "grace-negative": (["--grace", "-1"], {}, "--grace"),
    "grace-word": (["--grace", "abc"], {}, "--grace"),
    "grace-nan": (["--grace=nan"], {}, "--grace"),
    "grace-empty": (["--grace="], {}, "--grace"),
    "drain-inf": (["--drain", "inf"], {}, "--drain"),
    "drain-overflow": (["--drain", "1e400"], {}, "--drain"),
    "term-delay-missing-value": (["--term-delay"], {}, "--term-delay"),
    "term-delay-negative": (["--term-delay=-0.5"], {}, "--term-delay"),
    "exit-report-fd-word": (["--exit-report", "fd:x"], {}, "--exit-report"),
    "exit-report-fd-empty": (["--exit-report", "fd:"], {}, "--exit-report"),
    "exit-report-empty": (["--exit-report="], {}, "--exit-report"),
    "PYINIT_GRACE": ([], {"PYINIT_GRACE": "abc"}, "PYINIT_GRACE"),
    "PYINIT_DRAIN": ([], {"PYINIT_DRAIN": "-2"}, "PYINIT_DRAIN"),
    "PYINIT_TERM_DELAY": ([], {"PYINIT_TERM_DELAY": "inf"}, "PYINIT_TERM_DELAY"),
    "PYINIT_EXIT_REPORT": ([], {"PYINIT_EXIT_REPORT": "fd:-1"}, "PYINIT_EXIT_REPORT"),
}


@pytest.mark.parametrize("options, variables, named", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_bad_values_are_usage_errors(run, options, variables, named):
    """Exit 125, one `pyinit: ` line naming the option or variable, the command never run, no traceback."""
    argv = options if options == ["--term-delay"] else [*options, "--", "sh", "-c", "echo COMMAND RAN"]
    result = run(argv, env=clean_env(**variables))
    assert (result.returncode, result.stdout) == (125, "")
    lines = pyinit_lines(result.stderr)
    assert len(lines) == 1 and named in lines[0], lines


# --- the launcher -------------------------------------------------------------------------------


def test_launcher_passes_grace_and_exit_report_to_the_init(start, tmp_path):
    """pyinit --unshare --grace 1 --exit-report: SIGTERM to the launcher reaches the TERM-ignoring child
    through the init, which SIGKILLs the group after 1 s and writes the report (the launcher does not)."""
    path = tmp_path / "report.json"
    argv = ["--unshare", "--grace", "1", "--exit-report", str(path), "--", *tree(*IGNORE_ALL, "--grandchild",
                                                                                 "stubborn")]
    init = start(argv, "subreaper")
    lines = init.out.take(2)
    assert lines == ["ready stubborn 3", "ready child 2"], "not in a new PID namespace: %s" % lines
    family = [(pid, stat(pid).start_time) for pid in init.tree()]
    assert len(family) == 3  # the init, the child, the grandchild
    code, elapsed = signal_and_wait(init, TERM)
    assert code == 137
    within(elapsed, EARLY * 1, 1 + SLACK, "SIGKILL")
    assert left(family) == []
    report = load_report(path)  # one line: written once
    assert report["pid"] == 1 and report["exit_code"] == 137
    assert report["child"] == {"pid": 2, "exit_code": None, "signal": "SIGKILL"}
    assert report["grace"] == {"seconds": 1.0, "killed": True, "processes": 2}
    assert report["signals"] == {"received": {"SIGTERM": 1}, "forwarded": {"SIGTERM": 1}}
    assert report["drain"]["seconds"] is None  # PID 1: no default drain


def test_launcher_parent_death_signal_starts_the_init_grace(adopter, start, tmp_path):
    """pyinit --unshare -p TERM --grace 0.5: the launcher owns -p; it relays the SIGTERM to the init, whose grace
    timer SIGKILLs the TERM-ignoring child 0.5 s later."""
    path = tmp_path / "report.json"
    init, parent = start_tree_behind_parent(start, "subreaper", ["--unshare", "-p", "TERM", "--grace", "0.5",
                                                                 "--exit-report", str(path)], IGNORE_ALL)
    adopter.expect(init.pid)
    began = time.monotonic()
    os.kill(parent, signal.SIGKILL)
    assert adopter.exit_code(init.pid) == 137
    within(time.monotonic() - began, EARLY * 0.5, 0.5 + SLACK, "SIGKILL")
    report = load_report(path)
    assert report["pid"] == 1 and report["child"] == {"pid": 2, "exit_code": None, "signal": "SIGKILL"}
    assert report["signals"] == {"received": {"SIGTERM": 1}, "forwarded": {"SIGTERM": 1}}
    assert report["grace"] == {"seconds": 0.5, "killed": True, "processes": 1}


def test_launcher_passes_drain_to_the_init(start):
    """pyinit --unshare --drain 10: the init, PID 1, drains the slow grandchild before exiting with the child's 7."""
    init = start(["--unshare", "--drain", "10", "--", *tree("--code", "7", "--grandchild", "slow:0.3")], "subreaper")
    assert init.out.take(2) == ["ready slow 3", "ready child 2"]
    family = [(pid, stat(pid).start_time) for pid in init.tree()]
    code, elapsed = finish(init, family)
    assert code == 7
    within(elapsed, 0.25, 10 * EARLY, "exit after the drain")
    assert rest(init) == ["cleanup slow 3", "done slow 3"]
