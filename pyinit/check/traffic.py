"""`pyinit-check` under traffic: --traffic, --in-flight/--slow/--read-rate, --keep-serving, --expect-running, --timeline.

The run (check/verdicts.py) is the same, with requests made beside it
(pyinit/sandbox/traffic.py): steady GETs of the --traffic URL from readiness
until the command has exited, and --in-flight slow GETs in progress when the
signal is sent. Each option adds a verdict of its own:
- --traffic: no steady request that ended before the signal failed;
- --in-flight N: the N slow requests were in flight at the signal, and each
  was answered with a success status (2xx, 3xx) and its whole body;
- --keep-serving S: the steady requests started in the first S seconds after
  the signal were served (a service that keeps accepting until its load
  balancer has dropped it);
- --expect-running [S]: the signal is a reload: the command still runs S
  seconds after it (2 by default) and is ready (its --ready-port or
  --ready-http answers again); with --traffic, no request made through the
  window failed. It is then stopped with SIGTERM, and that stop is not judged.
A URL that nothing answers makes its requests fail: a failed verdict, not a
usage error. --timeline draws every request (check/timeline.py).
"""

from __future__ import annotations

import argparse
import math
import signal
import textwrap
from typing import TYPE_CHECKING, Callable, List, Optional, Type

from pyinit import signals
from pyinit.check.verdicts import END_TIMEOUT, Check, NotReady, Run, stop_and_check, why_not_run
from pyinit.sandbox import CommandExited, Sandbox, SandboxError, TimeoutExpired
from pyinit.sandbox.ready import http_target
from pyinit.testing import how_it_ended, not_in_flight

if TYPE_CHECKING:
    from pyinit.sandbox.traffic import Request, Traffic

RATE = 50.0  # steady requests per second
READY_AGAIN = 5.0  # seconds a reloaded service has to answer its readiness probe
LISTEN_TIMEOUT = 10.0  # seconds to wait for the requests' port, without a --ready-* option


def add_options(parser: argparse.ArgumentParser) -> None:
    """The traffic options, as one group of pyinit-check's --help."""
    group = parser.add_argument_group("traffic through the signal (docs/traffic.md)")
    group.add_argument("--traffic", metavar="URL",
                       help="steady GETs of URL (%g a second) from readiness until the command has exited; "
                            "verdict: none that ended before the signal failed" % RATE)
    group.add_argument("--in-flight", metavar="N", type=int,
                       help="N slow GETs of the --slow URL in progress at the signal; verdict: each completed "
                            "with a success status and its whole body")
    group.add_argument("--slow", metavar="URL", help="the slow requests' URL: an endpoint that takes time, "
                                                     "or a large body read at --read-rate")
    group.add_argument("--read-rate", metavar="BYTES_PER_S", type=int,
                       help="read the slow requests' bodies at this rate (a download in progress)")
    group.add_argument("--keep-serving", metavar="SECONDS", type=float,
                       help="verdict: the --traffic requests started in the first SECONDS after the signal succeed")
    group.add_argument("--expect-running", metavar="SECONDS", type=float, nargs="?", const=2.0,
                       help="the signal is a reload: verdict: the command still runs and is ready SECONDS after it "
                            "(default 2), and no --traffic request failed through it; its stop is not judged")
    group.add_argument("--timeline", metavar="FILE.svg",
                       help="draw every request over time as an SVG picture (green served, red failed)")


def check_options(options: argparse.Namespace, usage: Type[Exception], http_url: Callable[[str, str], None]) -> None:
    """Refuse what cannot go together (`usage`: the Usage exception; `http_url(flag, url)` checks a URL)."""
    wanted = options.traffic is not None or options.slow is not None or options.in_flight is not None
    options.traffic_wanted = wanted
    if options.traffic is not None:
        http_url("--traffic", options.traffic)
    if options.slow is not None:
        http_url("--slow", options.slow)
    for flag, value, needs in (("--in-flight", options.in_flight, options.slow), ("--read-rate", options.read_rate,
                               options.slow), ("--keep-serving", options.keep_serving, options.traffic)):
        if value is not None and needs is None:
            raise usage("%s: only with %s" % (flag, "--traffic" if flag == "--keep-serving" else "--slow URL"))
    for flag, number in (("--in-flight", options.in_flight), ("--read-rate", options.read_rate)):
        if number is not None and number < 1:
            raise usage("%s %d: not a number, 1 or more" % (flag, number))
    if options.slow is not None and options.in_flight is None:
        options.in_flight = 1
    for flag, seconds in (("--keep-serving", options.keep_serving), ("--expect-running", options.expect_running)):
        if seconds is not None and not 0 <= seconds < math.inf:
            raise usage("%s %g: not a number of seconds (finite, 0 or more)" % (flag, seconds))
    if options.expect_running is not None:
        for flag, given in (("--keep-serving", options.keep_serving is not None),
                            ("--no-leftovers", options.no_leftovers)):
            if given:
                raise usage("%s judges a stop: not with --expect-running (a reload, whose stop is not judged)" % flag)
    if options.timeline is not None and not wanted:
        raise usage("--timeline: only with --traffic or --slow (it draws their requests)")
    if options.sweep is not None and (wanted or options.expect_running is not None):
        raise usage("--sweep: not with the traffic options or --expect-running")


def check_under_traffic(box: Sandbox, options: argparse.Namespace, run: Run) -> None:
    """The run with traffic beside it: the stop's verdicts (or the reload's), then the traffic's."""
    if not options.traffic_wanted:  # --expect-running alone: a reload, no requests
        _reload(box, options, run, None)
        return
    _wait_for_listener(box, options)
    traffic = run.traffic = box.traffic(options.traffic, rate=RATE, slow=options.slow,
                                        in_flight=options.in_flight, read_rate=options.read_rate)
    with traffic:
        traffic.warm_up(timeout=options.ready_timeout)
        if options.expect_running is None:
            stop_and_check(box, options, run, send=traffic.send_signal)
            traffic.go_on(options.keep_serving or 0.0)
        else:
            _reload(box, options, run, traffic)
    checks, failed = _verdicts(traffic, options)
    run.checks += checks
    if failed:
        run.notes.append("the requests that failed (%s):\n%s"
                         % (traffic.summary(), textwrap.indent(traffic.describe(failed), "  ")))
    if traffic.signal_at is not None and run.result is not None and run.result.exit_time is not None:
        run.exit_at = run.result.exit_time - traffic.started_wall


def _wait_for_listener(box: Sandbox, options: argparse.Namespace) -> None:
    """With no --ready-* option, readiness is the requests' port listening: wait for it (LISTEN_TIMEOUT s at
    most; a URL that nothing answers then fails its verdicts, it is no usage error)."""
    if any(getattr(options, "ready_" + name) is not None for name in ("output", "port", "path", "http")):
        return
    host, port, _ = http_target(options.traffic or options.slow)
    try:
        box.wait_for_port(port, host, timeout=min(options.ready_timeout, LISTEN_TIMEOUT))
    except (TimeoutExpired, CommandExited):
        pass  # judged by the verdicts: requests refused, a command that had exited before the signal


def _reload(box: Sandbox, options: argparse.Namespace, run: Run, traffic: "Optional[Traffic]") -> None:
    """--expect-running: send the signal, judge the command SECONDS later, end the traffic, stop it unjudged."""
    if traffic is None:
        box.send_signal(options.signo)
    else:
        traffic.send_signal(options.signo)
    name, seconds = signals.name(options.signo), options.expect_running
    verdict = "still running and ready %g s after %s" % (seconds, name)
    if box.wait_for_exit(seconds):
        if traffic is not None:
            traffic.go_on(seconds)  # the window judged whole: its requests after the exit are refused
        run.result = result = box.wait(END_TIMEOUT)
        if not result.started:
            raise NotReady(why_not_run(result), result)
        run.checks.append(Check(verdict, False, "exited %.2f s after %s, %s: it did not keep running"
                                % (result.stop_duration or 0.0, name, how_it_ended(result))))
        return
    problem = _not_ready(box, options)
    run.checks.append(Check(verdict, problem is None, "still running %g s after %s%s" % (
        seconds, name, ", and ready" if problem is None else ", but not ready: %s" % problem)))
    if traffic is not None:
        traffic.stop()  # before the stop below, which is no part of the reload
    box.send_signal(signal.SIGTERM)  # the usual stop, not judged
    if not box.wait_for_exit(options.within):
        box.kill_command()
    run.result = box.wait(END_TIMEOUT)


def _not_ready(box: Sandbox, options: argparse.Namespace) -> Optional[str]:
    """Why the readiness probe (--ready-port, --ready-http) does not answer again; None when it does (or
    when readiness was a line of output or a path, which a reload cannot take back)."""
    try:
        if options.ready_port is not None:
            box.wait_for_port(options.ready_port, timeout=READY_AGAIN)
        elif options.ready_http is not None:
            box.wait_for_http(options.ready_http, status=options.ready_status, timeout=READY_AGAIN)
    except (TimeoutExpired, SandboxError) as failure:
        return str(failure).splitlines()[0]
    return None


def _verdicts(traffic: "Traffic", options: argparse.Namespace) -> "tuple[List[Check], List[Request]]":
    """The traffic's verdicts, and the requests that failed them."""
    from pyinit.sandbox.traffic import BEFORE

    name = traffic.signal_name or signals.name(options.signo)
    checks, failed = [], []
    steady = [request for request in traffic.requests if not request.slow]
    judged = []
    if options.traffic is not None and options.expect_running is None:
        judged.append(("no request failed before %s" % name, [r for r in steady if traffic.phase(r) == BEFORE],
                       "ended before %s" % name))
    if options.keep_serving is not None:
        judged.append(("requests served for %g s after %s" % (options.keep_serving, name),
                       traffic.in_window(options.keep_serving),
                       "started in the %g s after %s" % (options.keep_serving, name)))
    if options.traffic is not None and options.expect_running is not None:
        judged.append(("no request failed through %s" % name, steady, "made through %s" % name))
    if options.in_flight:
        judged.append(("%d request(s) in flight at %s completed" % (options.in_flight, name),
                       traffic.slow_requests(), "in flight at %s" % name))
    for verdict, requests, which in judged:
        bad = [request for request in requests if not request.served] + [
            request for request in not_in_flight(traffic) if request in requests]
        checks.append(_count_check(traffic, verdict, requests, sorted(set(bad), key=lambda r: r.start), which))
        failed += bad
    return checks, sorted(set(failed), key=lambda request: request.start)


def _count_check(traffic: "Traffic", verdict: str, judged: "List[Request]", failed: "List[Request]",
                 which: str) -> Check:
    if not judged:
        return Check(verdict, False, "no request %s: nothing to judge" % which)
    if not failed:
        return Check(verdict, True, "%d request(s) %s: all served%s"
                     % (len(judged), which, ", whole body" if judged[0].slow else ""))
    what = sorted({traffic.line(request).split(": ", 1)[1] for request in failed})
    return Check(verdict, False, "%d of %d request(s) %s failed: %s%s" % (
        len(failed), len(judged), which, "; ".join(what[:3]), "; ..." if len(what) > 3 else ""))
