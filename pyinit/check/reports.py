"""`pyinit-check`'s report files: opened before the command runs, written at the end, as JSON and JUnit XML.

A single check's JSON is one object with its checks and Result; a sweep's
holds a list of moments, each with its own. JUnit gets a test case per check,
and in a sweep per check of each moment ("CMD at 120 ms: stops within 5 s
of SIGTERM").
"""

from __future__ import annotations

import argparse
import json
import os
import re
import stat
import sys
from typing import Any, Dict, List, Optional

from pyinit import signals
from pyinit.check.verdicts import Outcome, Run
from pyinit.sandbox import Process
from pyinit.testing import describe, format_processes


class WriteFailed(Exception):
    """A report could not be written at the end (a full disk): the message says which and why."""


class ReportRefused(Exception):
    """A report file cannot be opened: the message says which and why."""


class Report:
    """A file that --json or --junit names, opened (not yet truncated) when the options are read."""

    def __init__(self, flag: str, path: str) -> None:
        self.name = "%s %s" % (flag, path)
        self.path = path
        self.created = not os.path.lexists(path)
        try:
            # No O_TRUNC: a run refused for another reason leaves an old report as it was.
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as problem:
            raise ReportRefused("cannot write %s: %s" % (self.name, problem.strerror)) from None

    def write(self, data: bytes) -> None:
        try:
            with open(self.fd, "wb") as file:
                if stat.S_ISREG(os.fstat(self.fd).st_mode):  # not /dev/stdout or a pipe: those cannot be truncated
                    file.truncate(0)
                file.write(data)
        except OSError as problem:
            raise WriteFailed("cannot write %s: %s" % (self.name, problem.strerror)) from None

    def discard(self) -> None:
        """Close it, and remove it if it is ours."""
        os.close(self.fd)
        if self.created:
            os.unlink(self.path)


class StandardOutput:
    """`--json -`: the report goes to standard output, after the verdict lines."""

    def write(self, data: bytes) -> None:
        try:
            sys.stdout.flush()  # the verdicts first
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        except OSError as problem:
            raise WriteFailed("cannot write --json -: %s" % problem.strerror) from None

    def discard(self) -> None:
        pass


def write_reports(options: argparse.Namespace, seconds: float, outcome: Outcome) -> None:
    """Write the reports the options opened; WriteFailed says which could not be."""
    if options.json_report is not None:
        data = as_sweep_json(options, outcome) if options.sweep else as_json(options, outcome)
        options.json_report.write((json.dumps(data, indent=1, sort_keys=True) + "\n").encode())
    if options.junit_report is not None:
        options.junit_report.write(as_junit(options, seconds, outcome))
    if options.timeline_report is not None:
        from pyinit.check.timeline import timeline

        options.timeline_report.write(timeline(outcome.runs[0] if outcome.runs else Run(), " ".join(options.command)))


def as_json(options: argparse.Namespace, outcome: Outcome) -> Dict[str, Any]:
    """The single check: its verdicts and its Result (null where not known)."""
    run = outcome.runs[0] if outcome.runs else Run()
    return {**_head_json(options, outcome), **_run_json(run)}


def as_sweep_json(options: argparse.Namespace, outcome: Outcome) -> Dict[str, Any]:
    """A sweep: readiness as the first run found it, and each moment, in time order, with its verdicts and Result."""
    return {
        **_head_json(options, outcome),
        "ready_ms": None if outcome.ready_ms is None else round(outcome.ready_ms, 1),
        "moments": [{"ms": run.ms, "sent_ms": None if run.sent_ms is None else round(run.sent_ms, 1),
                     "before_ready": run.before_ready, "passed": run.passed, **_run_json(run)}
                    for run in _in_time_order(outcome.runs)],
    }


def _head_json(options: argparse.Namespace, outcome: Outcome) -> Dict[str, Any]:
    """What every JSON report begins with: the command, the outcome, and how the check was set up."""
    return {"command": options.command, "passed": outcome.passed, "error": outcome.error,
            "interrupted": outcome.interrupted, "settings": _settings(options)}


def _settings(options: argparse.Namespace) -> Dict[str, Any]:
    """The settings the verdicts depend on: the signal, the limits, pyinit's periods (None: pyinit's default)."""
    return {"signal": signals.name(options.signo), "within": options.within, "expect_exit": options.expect_exit,
            "settle": options.settle, "grace": options.grace, "ready_timeout": options.ready_timeout}


def _run_json(run: Run) -> Dict[str, Any]:
    result = run.result
    return {
        "checks": [{"name": c.name, "passed": c.passed, "message": c.message} for c in run.checks],
        "exit_code": None if result is None else result.exit_code,
        "signal": None if result is None else result.signal,
        "stop_duration": None if result is None else result.stop_duration,
        "leftovers": _processes_json(None if result is None else result.leftovers),  # null: not known
        "report": None if result is None else result.report,
        **({} if run.traffic is None else {"traffic": dict(run.traffic.as_json(), exit_at=run.exit_at)}),
        "bare": run.bare,  # --bare: whether it needs an init, and why (check/bare.py); null without
    }


def _processes_json(processes: Optional[List[Process]]) -> Optional[List[dict]]:
    """The JSON entries of processes (the leftovers); None, "unknown", stays None."""
    if processes is None:
        return None
    return [{"pid": p.pid, "ppid": p.ppid, "name": p.name, "state": p.state, "argv": p.argv} for p in processes]


def _in_time_order(runs: List[Run]) -> List[Run]:
    return sorted(runs, key=lambda run: run.ms or 0)


def as_junit(options: argparse.Namespace, seconds: float, outcome: Outcome) -> bytes:
    import xml.etree.ElementTree as ET

    command = " ".join(options.command)
    runs = _in_time_order(outcome.runs)
    cases = [(run, check) for run in runs for check in run.checks]
    error = outcome.error
    suite = ET.Element("testsuite", name="pyinit-check", tests=str(max(len(cases) + (error is not None), 1)),
                       failures=str(sum(not check.passed for _, check in cases)),
                       errors=str(int(error is not None)), time="%.3f" % seconds)
    properties = ET.SubElement(suite, "properties")  # first, as the JUnit schema has it
    for name, value in _settings(options).items():
        if value is not None:
            ET.SubElement(properties, "property", name=name, value=value if isinstance(value, str) else "%g" % value)
    if error is not None:
        cut = "interrupted by %s" % outcome.interrupted
        what = cut if error == cut else "becomes ready"  # the check cut short, or the command never ready
        case = ET.SubElement(suite, "testcase", classname="pyinit-check", name="%s %s" % (command, what))
        ET.SubElement(case, "error", message=error.splitlines()[0]).text = error
    for run, check in cases:
        at = "" if run.ms is None else " at %d ms:" % run.ms
        case = ET.SubElement(suite, "testcase", classname="pyinit-check", name="%s%s %s" % (command, at, check.name))
        if not check.passed:
            ET.SubElement(case, "failure", message=check.message).text = check.message + "\n" + _details(run)
    left = [(run, run.result.leftovers) for run in runs if run.result is not None and run.result.leftovers]
    if left:
        ET.SubElement(suite, "system-out").text = "\n".join(
            ("" if run.ms is None else "at %d ms:\n" % run.ms) + format_processes(processes) for run, processes in left)
    root = ET.Element("testsuites")
    root.append(suite)
    for element in root.iter():
        element.text = element.text and _xml_safe(element.text)
        for key, value in element.attrib.items():
            element.set(key, _xml_safe(value))
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def _details(run: Run) -> str:
    """describe() of the run, without the tree at the deadline (the verdict lines show that)."""
    return describe(run.result) if run.result is not None else ""


# What XML 1.0 forbids even as a &#...; reference: control characters but tab, newline and carriage
# return (a service's colours are ESC sequences), lone surrogates (a command line that is not UTF-8,
# as Python decodes it), U+FFFE and U+FFFF. ElementTree writes them as they are: no parser reads that.
_XML_FORBIDDEN = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _xml_safe(text: str) -> str:
    """`text` with each character XML forbids written as Python escapes it (ESC as \\x1b), visible in a CI's view."""
    return _XML_FORBIDDEN.sub(lambda match: ascii(match.group())[1:-1], text)
