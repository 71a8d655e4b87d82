"""Traffic through a signal, on real services: what a rolling deploy does to the requests in flight.

Each verdict is seen both ways, on the service that shows it: nginx cuts a download in progress on
SIGTERM (its fast shutdown) and completes it on SIGQUIT, and serves through SIGHUP (a reload);
gunicorn's sync workers finish a 2 s request on SIGTERM and answer it 500 on SIGINT; uvicorn
finishes it on SIGTERM; a plain threading `http.server` dies of SIGTERM with the download cut, and of
SIGHUP. A server that lingers after SIGTERM keeps serving; nginx stops accepting at once.

The download is a 6 MB file read at 2 MB/s (3 s), the client's segment as on Ethernet and its
buffer small (pyinit/sandbox/traffic.py says why), so that on SIGTERM megabytes are still at nginx.
Bounds are generous; nothing here depends on a moment but the order of request, signal and exit.
"""

import json
import os
import re
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET

import pytest

from pyinit.testing import assert_drains, assert_serves_through
from support import (REPO, TIMEOUT, WITHIN, Service, clean_env, free_port, gunicorn, need_program, nginx, program,
                     threads_down_to, threads_settled, uvicorn)

pytest_plugins = ["pyinit.pytest_plugin"]

BIG = 6_000_000  # bytes of the download
READ_RATE = 2_000_000  # bytes per second the client reads it at
SVG = "{http://www.w3.org/2000/svg}"


def with_big_file(service: Service) -> Service:
    """Put the BIG file where the service serves /files/big (nginx's alias, http.server's directory)."""
    (service.directory / "files").mkdir(exist_ok=True)
    (service.directory / "files" / "big").write_bytes(os.urandom(BIG))
    return service


def url(service: Service, path: str = "/") -> str:
    return "http://127.0.0.1:%d%s" % (service.port, path)


def http_server(directory) -> Service:
    """`python -m http.server`: a ThreadingHTTPServer with no signal handling at all."""
    port = free_port()
    argv = [sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(directory), str(port)]
    return with_big_file(Service(argv, directory, port, "Serving HTTP on"))


def lingering(directory) -> Service:
    """A server that keeps serving 2 s after SIGTERM (tests/programs/lingering_server.py)."""
    port = free_port()
    return Service(program("lingering_server", port, 2), directory, port, "listening")


def download(service: Service) -> "list[str]":
    """pyinit-check's options for two downloads of the big file in flight at the signal."""
    return ["--in-flight", "2", "--slow", url(service, "/files/big"), "--read-rate", str(READ_RATE)]


def check(service: Service, *options: str):
    """pyinit-check on the service, ready once it says so, with steady traffic, a JSON report and a
    timeline; (exit status, verdict lines as {verdict: PASS/FAIL}, the JSON, the SVG's root)."""
    json_path, svg_path = service.directory / "result.json", service.directory / "timeline.svg"
    done = service.check("--ready-output", service.ready, "--within", str(WITHIN), "--traffic", url(service),
                         "--json", str(json_path), "--timeline", str(svg_path), *options)
    verdicts = [line.split("  ", 1) for line in done.stdout.splitlines() if line[:6] in ("PASS  ", "FAIL  ")]
    result = json.loads(json_path.read_text())
    assert [check["passed"] for check in result["checks"]] == [word == "PASS" for word, _ in verdicts], done.stdout
    names = {check["name"]: ("PASS" if check["passed"] else "FAIL") for check in result["checks"]}
    return done.returncode, names, result, ET.parse(str(svg_path)).getroot(), done.stdout


def bars(svg) -> "list[str]":
    """The fill of each request's bar in the timeline (each has a <title>: the request's line)."""
    return [rect.get("fill") for rect in svg.iter(SVG + "rect") if rect.find(SVG + "title") is not None]


# --- nginx: TERM cuts the download, QUIT completes it, HUP serves through ----------------------------


def test_nginx_term_cuts_the_downloads_in_flight(tmp_path):
    service = with_big_file(nginx(tmp_path))
    status, verdicts, result, svg, text = check(service, "--signal", "TERM", *download(service))
    assert status == 1, text
    assert verdicts == {"stops within 10 s of SIGTERM": "PASS", "exit code 0": "PASS",
                        "no request failed before SIGTERM": "PASS",
                        "2 request(s) in flight at SIGTERM completed": "FAIL"}, text
    slow = [request for request in result["traffic"]["requests"] if request["kind"] == "slow"]
    assert [(r["phase"], r["status"], r["outcome"]) for r in slow] == [("in flight", 200, "incomplete body")] * 2, slow
    assert all(0 < r["received"] < BIG for r in slow), slow
    assert "incomplete body" in text and "before SIGTERM, ended" in text, text  # the failed requests, with timing
    assert bars(svg).count("#d62f2f") >= 2 and "#2e9e44" in bars(svg), bars(svg)


def test_nginx_quit_completes_the_downloads_in_flight(tmp_path):
    service = with_big_file(nginx(tmp_path))
    status, verdicts, result, svg, text = check(service, "--signal", "QUIT", *download(service))
    assert status == 0, text
    assert set(verdicts.values()) == {"PASS"} and len(verdicts) == 4, text
    slow = [request for request in result["traffic"]["requests"] if request["kind"] == "slow"]
    assert [(r["phase"], r["received"], r["served"]) for r in slow] == [("in flight", BIG, True)] * 2, slow
    assert result["traffic"]["signal_at"] < result["traffic"]["exit_at"], result["traffic"]
    judged = [fill for fill, r in zip(bars(svg), result["traffic"]["requests"]) if r["phase"] != "after"]
    assert judged == ["#2e9e44"] * len(judged), judged  # green; only requests after the exit may be red


def test_nginx_serves_through_a_reload(tmp_path):
    service = with_big_file(nginx(tmp_path))
    status, verdicts, result, _, text = check(service, "--signal", "HUP", "--expect-running", *download(service))
    assert status == 0, text
    assert verdicts == {"still running and ready 2 s after SIGHUP": "PASS",
                        "no request failed through SIGHUP": "PASS",
                        "2 request(s) in flight at SIGHUP completed": "PASS"}, text
    steady = [request for request in result["traffic"]["requests"] if request["kind"] == "steady"]
    assert sum(request["phase"] == "after" for request in steady) >= 20, steady  # 2 s at 50 a second, served


def test_nginx_stops_accepting_at_once_so_keep_serving_fails(tmp_path):
    """SIGQUIT is graceful for what nginx has, not for what comes: it closes its listeners at once."""
    service = nginx(tmp_path)
    status, verdicts, result, _, text = check(service, "--signal", "QUIT", "--keep-serving", "1")
    assert status == 1, text
    assert verdicts["no request failed before SIGQUIT"] == "PASS", text
    assert verdicts["requests served for 1 s after SIGQUIT"] == "FAIL", text
    assert "refused" in text, text


# --- gunicorn (sync workers) and uvicorn: a 2 s request in flight -------------------------------------


@pytest.mark.parametrize("sig, status", [("TERM", 0), ("INT", 1)])
def test_gunicorn_finishes_a_request_on_term_and_fails_it_on_int(tmp_path, sig, status):
    service = gunicorn(tmp_path)
    code, verdicts, result, _, text = check(service, "--signal", sig, "--in-flight", "1", "--slow",
                                            url(service, "/pause"))
    assert code == status, text
    slow = [request for request in result["traffic"]["requests"] if request["kind"] == "slow"]
    assert [request["phase"] for request in slow] == ["in flight"], slow
    if sig == "TERM":
        assert set(verdicts.values()) == {"PASS"}, text
        assert slow[0]["status"] == 200 and slow[0]["received"] == len(b"hello\n"), slow
    else:
        assert verdicts["1 request(s) in flight at SIGINT completed"] == "FAIL", text
        assert not slow[0]["served"], slow  # gunicorn answers 500 (or the worker dies under it)


@pytest.mark.stress
@pytest.mark.parametrize("forwarding, status", [(["--single-child"], 0), ([], 1)], ids=["to-the-master", "to-the-group"])
def test_gunicorn_serves_through_a_reload_sent_to_its_master_alone(tmp_path, forwarding, status):
    """gunicorn reloads on SIGHUP to its master: new workers, the old ones finish their requests. Its
    workers do not handle SIGHUP, though: pyinit's default forwarding, to the process group (as tini -g
    and dumb-init do), kills them, and the request in flight with them; --single-child serves through."""
    service = gunicorn(tmp_path)
    code, verdicts, _, _, text = check(service, "--signal", "HUP", "--expect-running", "3", "--in-flight", "1",
                                       "--slow", url(service, "/pause"), *forwarding)
    assert code == status, text
    assert verdicts["still running and ready 3 s after SIGHUP"] == "PASS", text
    assert verdicts["1 request(s) in flight at SIGHUP completed"] == ("PASS" if status == 0 else "FAIL"), text
    if status:
        assert "reset" in text and "was sent SIGHUP" in text, text  # the worker killed under the request


@pytest.mark.stress
def test_uvicorn_finishes_the_requests_in_flight_on_term(tmp_path):
    service = uvicorn(tmp_path)
    status, verdicts, _, _, text = check(service, "--signal", "TERM", "--in-flight", "2", "--slow",
                                         url(service, "/pause"))
    assert status == 0, text
    assert verdicts["2 request(s) in flight at SIGTERM completed"] == "PASS" and set(verdicts.values()) == {"PASS"}, text


# --- a plain threading http.server, and one that lingers ------------------------------------------------


def test_a_plain_http_server_dies_of_term_with_the_download_cut(tmp_path):
    service = http_server(tmp_path)
    status, verdicts, _, _, text = check(service, "--signal", "TERM", "--expect-exit", "143", *download(service))
    assert status == 1, text
    assert verdicts["exit code 143"] == "PASS", text  # it stopped as expected, and dropped the work
    assert verdicts["2 request(s) in flight at SIGTERM completed"] == "FAIL", text


def test_a_plain_http_server_dies_of_a_reload(tmp_path):
    service = http_server(tmp_path)
    status, verdicts, _, _, text = check(service, "--signal", "HUP", "--expect-running")
    assert status == 1, text
    assert verdicts["still running and ready 2 s after SIGHUP"] == "FAIL", text
    assert verdicts["no request failed through SIGHUP"] == "FAIL", text  # refused once it had died
    assert "exit code 129 (killed by SIGHUP)" in text and "refused" in text, text


def test_expect_running_alone_judges_the_reload_without_traffic(tmp_path):
    service = http_server(tmp_path)
    done = service.check("--ready-port", str(service.port), "--signal", "HUP", "--expect-running", "1",
                         "--json", str(tmp_path / "result.json"))
    assert done.returncode == 1, done
    assert done.stdout.startswith("FAIL  exited ") and "it did not keep running" in done.stdout, done.stdout
    result = json.loads((tmp_path / "result.json").read_text())
    assert [check["name"] for check in result["checks"]] == ["still running and ready 1 s after SIGHUP"]
    assert "traffic" not in result and result["exit_code"] == 129, result


def test_a_server_that_lingers_keeps_serving_after_term(tmp_path):
    service = lingering(tmp_path)
    status, verdicts, result, _, text = check(service, "--signal", "TERM", "--keep-serving", "1")
    assert status == 0, text
    assert verdicts["requests served for 1 s after SIGTERM"] == "PASS", text
    window = [r for r in result["traffic"]["requests"] if r["phase"] == "after" and r["start"]
              < result["traffic"]["signal_at"] + 1]
    assert len(window) >= 20 and all(r["served"] for r in window), window


# --- what pyinit-check refuses, and what it judges ----------------------------------------------------


def test_an_unreachable_url_is_a_failed_verdict_not_a_usage_error(tmp_path):
    service = nginx(tmp_path)
    nobody = "http://127.0.0.1:%d/" % free_port()
    done = service.check("--ready-output", service.ready, "--traffic", nobody, "--slow", nobody)
    assert done.returncode == 1, done
    assert "FAIL  0 of" not in done.stdout and done.stdout.count("FAIL") == 2, done.stdout
    assert "refused" in done.stdout, done.stdout


def test_without_a_ready_option_the_traffic_starts_once_its_port_listens(tmp_path):
    """No --ready-*: had the requests begun at the spawn, those made while gunicorn's interpreter starts
    would be refused, and a correct service would fail."""
    service = gunicorn(tmp_path)
    done = service.check("--traffic", url(service))
    assert done.returncode == 0, done
    assert re.match(r"PASS  .*\nPASS  .*\nPASS  \d+ request\(s\) ended before SIGTERM: all served$", done.stdout.strip()), \
        done.stdout


@pytest.mark.parametrize("options, message", [
    (["--in-flight", "2"], "--in-flight: only with --slow URL"),
    (["--slow", "http://127.0.0.1:1/", "--in-flight", "0"], "--in-flight 0: not a number, 1 or more"),
    (["--read-rate", "100"], "--read-rate: only with --slow URL"),
    (["--keep-serving", "1"], "--keep-serving: only with --traffic"),
    (["--traffic", "ftp://x/"], "--traffic ftp://x/: not an http:// URL"),
    (["--traffic", "http://127.0.0.1:1/", "--expect-running", "--keep-serving", "1"], "not with --expect-running"),
    (["--expect-running", "--no-leftovers"], "--no-leftovers judges a stop"),
    (["--expect-running", "nan"], "--expect-running nan: not a number of seconds"),
    (["--timeline", "x.svg"], "--timeline: only with --traffic or --slow"),
    (["--traffic", "http://127.0.0.1:1/", "--sweep", "3"], "--sweep: not with the traffic options"),
], ids=["in-flight-alone", "in-flight-0", "read-rate-alone", "keep-serving-alone", "not-http", "keep-and-running",
        "running-and-leftovers", "running-nan", "timeline-alone", "sweep"])
def test_pyinit_check_refuses_traffic_options_that_do_not_go_together(tmp_path, options, message):
    service = Service(["true"], tmp_path, 1, None)
    done = service.check(*options)
    assert done.returncode == 125, done
    assert message in done.stderr and done.stderr.count("\n") == 1, done.stderr
    assert not (tmp_path / "x.svg").exists()


# --- the Python API -------------------------------------------------------------------------------------


def test_assert_drains_passes_nginx_on_quit_with_every_request_recorded(sandbox, tmp_path):
    service = with_big_file(nginx(tmp_path))
    box = service.start(sandbox)
    traffic = assert_drains(box, "QUIT", service.port, slow=url(service, "/files/big"), in_flight=2,
                            read_rate=READ_RATE)
    phases = [traffic.phase(request) for request in traffic.requests]
    assert phases.count("before") >= 10 and phases.count("in flight") >= 2, phases
    assert [(r.received, r.status) for r in traffic.slow_requests()] == [(BIG, 200)] * 2
    assert all(r.start <= r.end for r in traffic.requests)


def test_assert_drains_fails_nginx_on_term_listing_the_requests_cut(sandbox, tmp_path):
    service = with_big_file(nginx(tmp_path))
    box = service.start(sandbox)
    with pytest.raises(AssertionError) as failure:
        assert_drains(box, "TERM", service.port, slow=url(service, "/files/big"), in_flight=2, read_rate=READ_RATE)
    message = str(failure.value)
    assert "failed 2 request(s) through SIGTERM" in message, message
    lines = [line for line in message.splitlines() if line.lstrip().startswith("#")]
    assert len(lines) == 2 and all("s before SIGTERM, ended" in line and "incomplete body" in line
                                   for line in lines), message


def test_assert_serves_through_nginx_reload_and_not_a_plain_http_server(sandbox, tmp_path):
    (tmp_path / "nginx").mkdir()
    service = nginx(tmp_path / "nginx")
    box = service.start(sandbox)
    traffic = assert_serves_through(box, "HUP", service.port, seconds=2)
    assert sum(traffic.phase(r) == "after" for r in traffic.requests) >= 20 and not traffic.failed()
    (tmp_path / "plain").mkdir()
    plain = http_server(tmp_path / "plain")
    box = plain.start(sandbox)
    with pytest.raises(AssertionError, match=r"exited on SIGHUP, exit code 129 \(killed by SIGHUP\)"):
        assert_serves_through(box, "HUP", plain.port)


def test_assert_drains_keep_serving_passes_a_lingering_server_and_fails_nginx(sandbox, tmp_path):
    (tmp_path / "lingering").mkdir()
    service = lingering(tmp_path / "lingering")
    traffic = assert_drains(service.start(sandbox), "TERM", service.port, keep_serving=1)
    assert len(traffic.in_window(1)) >= 20 and all(request.served for request in traffic.in_window(1))
    (tmp_path / "nginx").mkdir()
    service = nginx(tmp_path / "nginx")
    with pytest.raises(AssertionError, match=r"(?s)through SIGQUIT.*s after SIGQUIT: refused"):
        assert_drains(service.start(sandbox), "QUIT", service.port, keep_serving=1)


def test_traffic_on_a_private_network_goes_through_the_sandbox(sandbox, tmp_path):
    """The sandbox's own loopback: nothing on this side listens on the port, the requests still arrive."""
    service = with_big_file(nginx(tmp_path))
    box = sandbox(service.argv, cwd=service.directory, env=service.env, network="private")
    box.wait_for_output(service.ready, timeout=TIMEOUT, stream="any")
    traffic = assert_drains(box, "QUIT", service.port, slow=url(service, "/files/big"), in_flight=1,
                            read_rate=4 * READ_RATE)
    assert traffic.requests and traffic.slow_requests()[0].received == BIG


def test_traffic_leaves_no_thread_and_no_socket(sandbox, tmp_path):
    service = with_big_file(nginx(tmp_path))
    box = service.start(sandbox)
    box.wait_for_port(service.port, timeout=TIMEOUT)
    threads, kernel_threads, sockets = threading.active_count(), threads_settled(), _sockets()
    with box.traffic(service.port, slow=url(service, "/files/big"), in_flight=2, read_rate=READ_RATE) as traffic:
        traffic.wait_in_flight()
        assert threading.active_count() == threads + 4 + 2
        traffic.abort()  # the downloads cut short: stop() does not wait for them
    assert threading.active_count() == threads and threads_down_to(kernel_threads) == kernel_threads
    assert _sockets() == sockets
    assert len(traffic.slow_requests()) == 2 and traffic.requests


def _sockets() -> int:
    return sum(os.readlink("/proc/self/fd/%s" % fd).startswith("socket:") for fd in os.listdir("/proc/self/fd")
               if os.path.exists("/proc/self/fd/%s" % fd))


def test_the_pytest_example_of_the_docs_runs_as_written(tmp_path):
    """docs/traffic.md's pytest example, run by pytest: QUIT drains, TERM cuts, HUP serves through."""
    need_program("nginx", "nginx")
    code = re.search(r"```python\n(.*?)```", (REPO / "docs" / "traffic.md").read_text(), re.S).group(1)
    (tmp_path / "test_example.py").write_text(code)
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "pyinit.pytest_plugin", "-p", "no:cacheprovider",
                           "test_example.py"], cwd=tmp_path, env=clean_env(PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=4 * TIMEOUT)
    assert done.returncode == 0 and "3 passed" in done.stdout, done.stdout + done.stderr


@pytest.mark.parametrize("options, message", [
    ({}, "needs a url"),
    ({"url": 8080, "in_flight": 2}, "in_flight requests need a slow URL"),
    ({"slow": 8080, "in_flight": 0}, "a slow URL 1 or more in_flight"),
    ({"url": 8080, "read_rate": 1000}, "read_rate must be"),
    ({"url": 8080, "rate": 0}, "rate must be"),
    ({"url": "ftp://x/"}, "not an http:// URL"),
])
def test_traffic_refuses_what_it_cannot_do(options, message):
    from pyinit import Sandbox

    with pytest.raises(ValueError, match=message):
        Sandbox(["true"]).traffic(**options)
