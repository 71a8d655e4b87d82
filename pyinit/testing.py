"""Assertion helpers for tests of a service's signal semantics, on top of pyinit.Sandbox.

Each raises AssertionError with a message that says what was expected, what
happened, the process tree, and what pyinit received and forwarded, so that
a failing CI log alone tells why.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, List, Optional, Union

from pyinit.sandbox import Process, Result, Sandbox, SignalSpec, signal_number
from pyinit.sandbox.result import wait_limit
from pyinit import signals

if TYPE_CHECKING:
    from pyinit.sandbox.traffic import Request, Traffic


def assert_stops_on(box: Sandbox, sig: SignalSpec, within: float, exit_code: int = 0,
                    traffic: Optional["Traffic"] = None) -> Result:
    """Send `sig` to the sandbox's PID 1; the command must exit within `within` seconds, with `exit_code`.

    When it does not, the tree is taken as it was at the deadline, then the
    command is SIGKILLed so that pyinit writes its exit report, which says
    what pyinit received and forwarded. A command that had exited before the
    signal was sent (a daemon's parent, gone at start-up) fails too: it did
    not stop on anything. Returns the Result. With `traffic` (box.traffic()),
    its send_signal() sends the signal, once its slow requests are in flight.
    """
    name = signals.name(signal_number(sig))
    wait_limit(within, "within")  # a bad one is refused before the signal goes
    sent = time.time() if traffic is None else traffic.send_signal(sig)
    if traffic is None:
        box.send_signal(sig)
    if not box.wait_for_exit(within):
        tree = box.tree()
        box.kill_command()
        result = box.wait(box._end_timeout())
        raise AssertionError("%s did not exit within %g s of %s\n%s" % (_command(box), within, name,
                                                                       describe(result, tree=tree)))
    result = box.wait(box._end_timeout())
    before = exited_before(result, sent, name)
    if before is not None:
        raise AssertionError("%s had already exited, %s, %.2f s before %s was sent: it did not stop on it\n%s"
                             % (_command(box), how_it_ended(result), before, name, describe(result)))
    if result.exit_code != exit_code:
        raise AssertionError("%s exited with %s after %s, expected exit code %d\n%s"
                             % (_command(box), how_it_ended(result), name, exit_code, describe(result)))
    return result


def exited_before(result: Result, sent: float, signal_name: str) -> Optional[float]:
    """How long before wall-clock time `sent` the command had exited, as pyinit saw it; None if it had not.

    Judged once the command has ended, from pyinit's exit report: when its
    exit came before `sent`, or when pyinit never took `signal_name` while
    the command ran (it arrived after the exit: during --settle, which it
    ends, or later), the command ended on its own, whatever the clocks say.
    """
    if result.report is None or result.exit_time is None:
        return None
    first_signal = result.report["timeline"]["first_signal"]  # taken while the command ran, or never: None
    taken_while_running = (signal_name in result.received() and first_signal is not None
                           and first_signal <= result.exit_time)
    if result.exit_time <= sent or not taken_while_running:
        return max(0.0, sent - result.exit_time)
    return None


def assert_no_leftovers(box: Union[Sandbox, Result]) -> Result:
    """After the command has exited, nothing of it was left running once pyinit had settled (1 s by default)."""
    if isinstance(box, Sandbox):
        if not box.wait_for_exit(0):
            raise AssertionError("%s is still running: leftovers are known once it has exited\n%s"
                                 % (_command(box), box.tree()))
        result = box.wait(box._end_timeout())
    else:
        result = box
    if result.leftovers is None:
        raise AssertionError("%s: leftovers unknown, pyinit could not list them (no exit report, or /proc could not "
                             "tell)\n%s" % (_name(result), describe(result)))
    if result.leftovers:
        raise AssertionError("%s left %d process(es) running after it exited\n%s"
                             % (_name(result), len(result.leftovers), describe(result)))
    return result


def assert_exit_code(result: Result, code: int) -> None:
    """The command's exit code (128+N for death by signal N) is `code`."""
    if result.exit_code != code:
        raise AssertionError("%s exited with %s, expected exit code %d\n%s"
                             % (_name(result), how_it_ended(result), code, describe(result)))


def describe(result: Result, tree: Optional[str] = None) -> str:
    """What happened, for a failure message: signals received and forwarded, leftovers, output tail."""
    lines = []
    if tree is not None:
        lines += ["processes at the deadline:", _indent(tree)]
    if result.report is not None:
        lines.append("pyinit received %s, forwarded %s" % (_counts(result.received()), _counts(result.forwarded())))
        for timer in ("grace", "drain"):
            entry = result.report[timer]
            if entry["killed"]:
                lines.append("pyinit's %s period (%g s) ended in SIGKILL for %d process(es)"
                             % (timer, entry["seconds"], entry["processes"]))
    else:
        lines.append("pyinit wrote no exit report (it was killed)")
    if result.leftovers:
        settle = result.report["settle"]["seconds"] if result.report else 0.0
        lines += ["still running %g s after the command exited:" % settle, _indent(format_processes(result.leftovers))]
    for name, text in (("stdout", result.stdout), ("stderr", result.stderr)):
        if text:
            tail = text.splitlines()[-20:]
            lines += ["%s (last %d lines):" % (name, len(tail)), _indent("\n".join(tail))]
    return "\n".join(lines)


def format_processes(processes: List[Process]) -> str:
    return "\n".join(str(process) for process in processes)


def how_it_ended(result: Result) -> str:
    """'exit code 3', or 'exit code 143 (killed by SIGTERM)': for messages."""
    return "exit code %d" % result.exit_code + (" (killed by %s)" % result.signal if result.signal else "")


def _counts(table: dict) -> str:
    return ", ".join("%s x%d" % item for item in sorted(table.items())) or "nothing"


def _command(box: Sandbox) -> str:
    return "the command %r" % " ".join(box.argv)


def _name(result: Result) -> str:
    return "the command %r" % " ".join(result.argv)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


# --- traffic through a signal (pyinit.sandbox.traffic) --------------------------------------------

def assert_drains(box: Sandbox, sig: SignalSpec, url: Union[int, str, None] = None, *, within: float = 10,
                  exit_code: int = 0, slow: Union[int, str, None] = None, in_flight: Optional[int] = None,
                  read_rate: Optional[int] = None, keep_serving: float = 0.0, rate: float = 50.0) -> "Traffic":
    """Stop the service with `sig` under traffic, as a rolling deploy does; no request may be dropped.

    Steady GETs of `url` (a port or an http:// URL in the sandbox's network)
    run from now until the command has exited; `in_flight` (1) GETs of `slow`
    (an endpoint that takes its time, or a large body read at `read_rate`
    bytes per second) are in progress when the signal is sent. Then, as
    assert_stops_on(): the command exits within `within` s with `exit_code`;
    and every steady request that ended before the signal was served, every
    slow one was in flight at the signal and was served whole, and (with
    `keep_serving` seconds) every steady request started that long after the
    signal was served too. The message lists each failed request with its
    timing against the signal. Returns the Traffic, with every record.
    """
    with box.traffic(url, rate=rate, slow=slow, in_flight=in_flight, read_rate=read_rate) as traffic:
        traffic.warm_up()
        assert_stops_on(box, sig, within, exit_code, traffic=traffic)
        traffic.go_on(keep_serving)
    from pyinit.sandbox.traffic import BEFORE

    window = [request for request in traffic.in_window(keep_serving) if not request.served]
    _assert_none_dropped(box, traffic, traffic.failed([BEFORE], slow=False) + window + traffic.failed(slow=True))
    return traffic


def assert_serves_through(box: Sandbox, sig: SignalSpec, url: Union[int, str, None] = None, *, seconds: float = 2.0,
                          slow: Union[int, str, None] = None, in_flight: Optional[int] = None,
                          read_rate: Optional[int] = None, rate: float = 50.0) -> "Traffic":
    """Send `sig` (a reload: HUP) under traffic; the command must still run `seconds` after it, and every
    request made through it (steady GETs of `url`, and the `in_flight` slow ones) must be served.

    The traffic ends `seconds` after the signal; the command runs on (the
    test's sandbox stops it). The message lists each failed request with
    its timing. Returns the Traffic, with every record.
    """
    with box.traffic(url, rate=rate, slow=slow, in_flight=in_flight, read_rate=read_rate) as traffic:
        traffic.warm_up()
        traffic.send_signal(sig)
        if box.wait_for_exit(seconds):
            result = box.wait(box._end_timeout())
            raise AssertionError("%s exited on %s, %s: it did not keep running\n%s"
                                 % (_command(box), traffic.signal_name, how_it_ended(result), describe(result)))
    _assert_none_dropped(box, traffic, traffic.failed())
    return traffic


def _assert_none_dropped(box: Sandbox, traffic: "Traffic", failed: "List[Request]") -> None:
    """AssertionError listing `failed` and the slow requests that were not in flight at the signal, if any."""
    dropped = sorted(set(failed + not_in_flight(traffic)), key=lambda request: request.start)
    if dropped:
        raise AssertionError("%s failed %d request(s) through %s (%s):\n%s"
                             % (_command(box), len(dropped), traffic.signal_name, traffic.summary(),
                                _indent(traffic.describe(dropped))))


def not_in_flight(traffic: "Traffic") -> "List[Request]":
    """The slow requests that ended before the signal: not slow enough to be in flight at it."""
    from pyinit.sandbox.traffic import BEFORE

    return [request for request in traffic.slow_requests() if traffic.phase(request) == BEFORE]
