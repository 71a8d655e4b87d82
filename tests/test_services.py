"""Real services that people run, judged by the test-side API and by `pyinit-check`: the verdicts hold.

gunicorn with two workers, uvicorn with `--workers 2`, nginx in the foreground and as a daemon,
redis in the foreground and daemonized. Each verdict is seen both ways: a correct set-up passes
(it stops on the signal within the bound, exits 0, leaves nothing running), and a broken one fails
and says why: a helper process that the workers start and never stop, a request in flight that
holds up a graceful stop, a server that daemonizes away from whatever supervises it.

The programs come from the test extra (gunicorn, uvicorn) and from Debian (nginx, redis-server).
Where one is missing its tests are skipped with the reason, except under CI (CI set), where that
is an error: .ci/run installs them. Ports are free ones picked by the kernel, each service's files
live in the test's tmp_path, and every bound is generous: the servers stop in well under a second.
"""

import json
import re
import socket

import pytest

from pyinit.testing import assert_no_leftovers, assert_stops_on
from support import CHECK, TIMEOUT, WITHIN, gunicorn, nginx, redis, uvicorn

pytest_plugins = ["pyinit.pytest_plugin"]  # the `sandbox` fixture, whether pyinit is installed or not

def workers(box) -> list:
    """The command's children now (pyinit.Process)."""
    members = box.processes()
    (command,) = [p for p in members if p.host_pid == box.command_pid]
    return [p for p in members if p.ppid == command.pid]


def commands(processes) -> "list[str]":
    return sorted(" ".join(p.argv).strip() for p in processes)


def names_each(text: str, processes) -> bool:
    """Whether `text` has, for each process (a pyinit.Process or its JSON entry), a line with its
    PID in the sandbox and its name."""
    entries = [(p["pid"], p["name"]) if isinstance(p, dict) else (p.pid, p.name) for p in processes]
    lines = text.splitlines()
    return bool(entries) and all(any(re.search(r"\bPID %d\b" % pid, line) and name in line for line in lines)
                                 for pid, name in entries)


# --- gunicorn ----------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", ["TERM", "QUIT"])
def test_gunicorn_stops_on_the_signal_and_leaves_nothing(sandbox, tmp_path, sig):
    """SIGTERM (its graceful stop) and SIGQUIT (its quick shutdown) each end the master and both
    workers: gunicorn exits 0 on either, within the bound, nothing left running."""
    service = gunicorn(tmp_path)
    box = service.start(sandbox)
    box.wait_for_port(service.port, timeout=TIMEOUT)
    assert len(workers(box)) == 2, box.tree()
    result = assert_stops_on(box, sig, within=WITHIN, exit_code=0)
    assert_no_leftovers(result)


def test_a_request_in_flight_holds_up_gunicorns_graceful_stop(sandbox, tmp_path):
    """A 300 s request is being served: on SIGTERM gunicorn waits for it (up to its graceful timeout,
    60 s here), so "stops within 3 s" fails, and the message shows the worker still serving."""
    service = gunicorn(tmp_path)
    box = service.start(sandbox)
    with socket.create_connection(("127.0.0.1", service.port), timeout=TIMEOUT) as client:
        client.sendall(b"GET /slow HTTP/1.0\r\n\r\n")
        box.wait_for_path(tmp_path / "slow-started", timeout=TIMEOUT)
        with pytest.raises(AssertionError, match=r"within 3 s of SIGTERM") as failure:
            assert_stops_on(box, "TERM", within=3)
    assert "gunicorn" in str(failure.value)  # the tree at the deadline: master and the busy worker


def test_a_helper_that_gunicorns_workers_never_stop_is_a_leftover(sandbox, tmp_path):
    """Each worker starts a `sleep 300` when it loads the app and never stops it: gunicorn itself
    stops fine, but both helpers run on, and the verdict names them."""
    box = gunicorn(tmp_path, helper=True).start(sandbox)
    result = assert_stops_on(box, "TERM", within=WITHIN, exit_code=0)
    assert commands(result.leftovers) == ["sleep 300", "sleep 300"], result.leftovers
    with pytest.raises(AssertionError) as failure:
        assert_no_leftovers(result)
    assert names_each(str(failure.value), result.leftovers), failure.value


# --- uvicorn -----------------------------------------------------------------------------------


def test_uvicorn_with_two_workers_stops_on_sigterm_with_no_false_leftover(sandbox, tmp_path):
    """uvicorn's parent also runs multiprocessing's resource tracker, which exits on its own about
    0.2 s after the parent: not a leftover (the sandbox's settle period waits for it)."""
    box = uvicorn(tmp_path).start(sandbox)
    assert any("resource_tracker" in " ".join(p.argv) for p in workers(box)), box.tree()
    result = assert_stops_on(box, "TERM", within=WITHIN, exit_code=0)
    assert_no_leftovers(result)


def test_a_helper_that_uvicorns_workers_never_stop_is_still_a_leftover(sandbox, tmp_path):
    """The settle period waits for what exits on its own, and no more: the workers' `sleep 300`
    helpers are named, the resource tracker is not."""
    box = uvicorn(tmp_path, helper=True).start(sandbox)
    result = assert_stops_on(box, "TERM", within=WITHIN, exit_code=0)
    assert commands(result.leftovers) == ["sleep 300", "sleep 300"], result.leftovers


# --- nginx -------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", ["QUIT", "TERM"], ids=["QUIT-graceful", "TERM-fast"])
def test_nginx_in_the_foreground_stops_and_leaves_nothing(sandbox, tmp_path, sig):
    """`daemon off;`: SIGQUIT (graceful shutdown) and SIGTERM (fast shutdown) each end the master and
    both workers, exit 0, nothing left running."""
    service = nginx(tmp_path)
    box = service.start(sandbox)
    box.wait_for_port(service.port, timeout=TIMEOUT)
    assert [p.name for p in workers(box)] == ["nginx", "nginx"], box.tree()
    result = assert_stops_on(box, sig, within=WITHIN, exit_code=0)
    assert_no_leftovers(result)


def test_nginx_as_a_daemon_leaves_its_master_and_workers_running(sandbox, tmp_path):
    """Without `daemon off;` the command forks nginx's master into the background and exits 0 at once:
    the master (and its workers) are left running, and the verdict names them."""
    box = nginx(tmp_path, daemon=True).start(sandbox)
    result = box.wait(TIMEOUT)
    assert result.exit_code == 0
    assert {p.name for p in result.leftovers} == {"nginx"}, result.leftovers  # the master, and its workers
    with pytest.raises(AssertionError) as failure:
        assert_no_leftovers(result)
    assert names_each(str(failure.value), result.leftovers), failure.value


def test_a_stop_check_of_nginx_as_a_daemon_fails_because_it_had_exited(sandbox, tmp_path):
    """"Stops on SIGTERM within 5 s, exit 0" must not pass for a command that had exited before the
    signal was sent (pyinit had nothing to forward it to): it fails, saying with what code and how
    long before the signal."""
    box = nginx(tmp_path, daemon=True).start(sandbox)
    assert box.wait_for_exit(TIMEOUT)
    with pytest.raises(AssertionError, match=r"had already exited, exit code 0, \d+\.\d+ s before SIGTERM"):
        assert_stops_on(box, "TERM", within=5)


# --- redis -------------------------------------------------------------------------------------


def test_redis_in_the_foreground_stops_on_sigterm_and_leaves_nothing(sandbox, tmp_path):
    box = redis(tmp_path).start(sandbox)
    result = assert_stops_on(box, "TERM", within=WITHIN, exit_code=0)
    assert_no_leftovers(result)


def test_redis_daemonized_is_left_running(sandbox, tmp_path):
    """`--daemonize yes`: the command exits 0 at once, the server it forked runs on, and is named."""
    box = redis(tmp_path, daemonize=True).start(sandbox)
    result = box.wait(TIMEOUT)
    assert result.exit_code == 0
    assert [p.name for p in result.leftovers] == ["redis-server"], result.leftovers
    with pytest.raises(AssertionError) as failure:
        assert_no_leftovers(result)
    assert names_each(str(failure.value), result.leftovers), failure.value


# --- pyinit-check, as a CI step --------------------------------------------------------------------


@pytest.mark.parametrize("make, sig", [(gunicorn, "TERM"), (gunicorn, "QUIT"), (uvicorn, "TERM"), (nginx, "QUIT"),
                                       (nginx, "TERM"), (redis, "TERM")],
                         ids=["gunicorn-TERM", "gunicorn-QUIT", "uvicorn-TERM", "nginx-QUIT", "nginx-TERM", "redis-TERM"])
def test_pyinit_check_passes_a_correct_service(tmp_path, make, sig):
    service = make(tmp_path)
    done = service.check("--ready-output", service.ready, "--signal", sig, "--within", str(WITHIN), "--no-leftovers",
                         "--json", str(tmp_path / "result.json"))
    assert done.returncode == 0, done
    assert [line.split()[0] for line in done.stdout.splitlines()] == ["PASS"] * 3, done.stdout  # stop, exit code, leftovers
    result = json.loads((tmp_path / "result.json").read_text())
    assert (result["passed"], result["exit_code"], result["leftovers"]) == (True, 0, []), result


@pytest.mark.parametrize("make", [gunicorn, uvicorn], ids=["gunicorn", "uvicorn"])
def test_pyinit_check_fails_workers_that_leave_a_helper_naming_it(tmp_path, make):
    """The stop and the exit code pass; the leftovers check fails and names the two `sleep 300`
    helpers, and nothing else (uvicorn's resource tracker exits on its own)."""
    service = make(tmp_path, helper=True)
    done = service.check("--ready-output", service.ready, "--within", str(WITHIN), "--no-leftovers",
                         "--json", str(tmp_path / "result.json"))
    assert done.returncode == 1, done
    assert [line.split()[0] for line in done.stdout.splitlines()[:3]] == ["PASS", "PASS", "FAIL"], done.stdout
    result = json.loads((tmp_path / "result.json").read_text())
    assert sorted(" ".join(entry["argv"]) for entry in result["leftovers"]) == ["sleep 300"] * 2, result
    assert names_each(done.stdout, result["leftovers"]), done.stdout


@pytest.mark.parametrize("make, name", [
    (lambda d: nginx(d, daemon=True), "nginx"),
    (lambda d: redis(d, daemonize=True), "redis-server"),
], ids=["nginx-daemon", "redis-daemonize"])
def test_pyinit_check_fails_a_daemon_naming_it(tmp_path, make, name):
    """The command exits 0 at once, leaving its daemon: the check fails and says the command had exited
    (before the signal, once the daemon listened; or before it was ready, when the daemon listens only
    after the command's exit, as redis may): exit 1 either way, and the text and the JSON name the
    daemon left running."""
    service = make(tmp_path)
    done = service.check("--ready-port", str(service.port), "--no-leftovers", "--json", str(tmp_path / "result.json"))
    text = done.stdout + done.stderr
    assert done.returncode == 1, done
    assert re.match(r"FAIL  (had already exited, exit code 0, \d+\.\d+ s before SIGTERM|exited before it was ready "
                    r"\(while waiting for a listener on port \d+\), exit code 0: SIGTERM was never sent)", text), text
    assert "PASS" not in text, text
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["passed"] is False
    assert result["leftovers"] and {entry["name"] for entry in result["leftovers"]} == {name}, result
    assert names_each(text, result["leftovers"]), text
