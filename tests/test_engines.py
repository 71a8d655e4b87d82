"""The example image under real container engines: podman (crun), and docker where its daemon can start.

examples/Dockerfile is built exactly as written, FROM a stand-in for python:3.12-slim made with
debootstrap (tests/engines.py says how, and how the host is set up for the engines). On top of
it, one small image adds tini and dumb-init (copied from Debian's packages on the host) and two
test programs, so that each scenario runs the same command behind each init:

    pyinit      ENTRYPOINT pyinit --     (what the example image has)
    tini        tini --                  (docker run --init's)
    dumb-init   dumb-init --
    none        the command itself is PID 1

Each scenario asserts what pyinit must do, asserts the control where the absence of an init is
the point (no init: a SIGTERM-deaf PID 1 is SIGKILLed, zombies stay), and records what every
init did in a table, printed at the end of the run (and in each test's captured output). The
containers are driven as a user drives them: `run`, `stop`, `kill -s`, `exec ... ps`, `inspect`,
`logs`, `run -it` in a real terminal (pexpect).

podman is the engine CI always has: under CI (CI set) a missing podman is an error. docker is
skipped, with the reason, where dockerd cannot start. Marked `engines`: `-m 'not engines'`
leaves them out of a quick local run.
"""

import json
import os
import re
import shutil
import subprocess
import time

import pexpect
import pytest

import engines
from engines import BUILD_TIMEOUT, ENGINES, EngineUnavailable, engine_session, record, together
from support import REPO, TIMEOUT, wait_for

pytestmark = pytest.mark.engines

EXAMPLE = "pyinit-example"  # the tag the Dockerfile's header comment builds
IMAGE = "pyinit-engines"  # the example image, with tini, dumb-init and the test programs added
INITS = ["pyinit", "tini", "dumb-init", "none"]
ENTRYPOINT = {"pyinit": ["pyinit", "--"], "tini": ["tini", "--"], "dumb-init": ["dumb-init", "--"], "none": []}
C_INITS = {"tini": "/usr/bin/tini-static", "dumb-init": "/usr/bin/dumb-init"}  # Debian's tini, dumb-init
PROGRAMS = ["engine_service.py", "engine_forks.py"]
GRACEFUL = ["python3", "graceful_service.py"]  # the example image's CMD, in its WORKDIR /app


def _unavailable(name: str, reason: str) -> None:
    """podman must work under CI; docker may be skipped anywhere, with the reason."""
    if name == "podman" and os.environ.get("CI"):
        pytest.fail("podman: %s (CI runs these tests: .ci/run must install what they need)" % reason, pytrace=False)
    pytest.skip("%s: %s" % (name, reason))


def _session(name: str, tmp_path_factory):
    """The engine `name`, set up for this module with the example image and the test image built on it;
    skipped (or, for podman under CI, failed) with the reason where it cannot run."""
    if os.geteuid() != 0:
        _unavailable(name, "the engine suite needs root (rootful engines, a private dockerd)")
    missing = [path for path in C_INITS.values() if not os.access(path, os.X_OK)]
    if missing:
        _unavailable(name, "%s missing (Debian packages tini, dumb-init)" % ", ".join(missing))
    try:
        with engine_session(name) as engine:
            engine.build(REPO, REPO / "examples" / "Dockerfile", EXAMPLE)  # as written, from the repository
            context = tmp_path_factory.mktemp("context-%s" % name)
            for init, path in C_INITS.items():
                shutil.copy(path, context / init)
            for program in PROGRAMS:
                shutil.copy(REPO / "tests" / "programs" / program, context / program)
            (context / "Containerfile").write_text("FROM %s\nCOPY %s /usr/local/bin/\nCOPY %s /app/\n"
                                                   % (EXAMPLE, " ".join(C_INITS), " ".join(PROGRAMS)))
            engine.build(context, context / "Containerfile", IMAGE)
            yield engine
    except EngineUnavailable as reason:
        _unavailable(name, str(reason))


@pytest.fixture(scope="module")
def podman_engine(tmp_path_factory):
    yield from _session("podman", tmp_path_factory)


@pytest.fixture(scope="module")
def docker_engine(tmp_path_factory):
    yield from _session("docker", tmp_path_factory)


@pytest.fixture(params=list(ENGINES))
def engine(request):
    """Each engine in turn, set up once for this module (and torn down after it: no dockerd idles
    through the rest of the suite)."""
    return request.getfixturevalue("%s_engine" % request.param)


# --- Running the scenarios ------------------------------------------------------------------------


def start(engine, init: str, command: "list[str]", *options: str, image: str = IMAGE) -> str:
    """`run -d` COMMAND behind INIT, with OPTIONS; the container's name."""
    argv = ENTRYPOINT[init] + command
    name = engine.name_for(init)
    engine("run", "-d", "--name", name, *engine.run_options(), *options, "--entrypoint", argv[0], image, *argv[1:])
    return name


def output(engine, name: str, text: str, timeout: float = TIMEOUT) -> str:
    """The container's log once it contains `text`."""
    return wait_for(lambda: (lambda log: log if text in log else None)(engine.logs(name)),
                    "%r in the log of %s" % (text, name), timeout)


def stop(engine, name: str, *options: str) -> "tuple[int, float]":
    """`stop` the container: its exit code, and how long the stop took."""
    started = time.monotonic()
    engine("stop", *options, name, timeout=60)
    return engine.exit_code(name), time.monotonic() - started


def zombies(engine, name: str) -> int:
    """The processes in state Z in the container, as `exec ... ps` sees them."""
    states = engine("exec", name, "ps", "-e", "-o", "stat=").stdout.split()
    return sum(state.startswith("Z") for state in states)


def each_init(function, inits=INITS) -> dict:
    """function(init) for every init at once (containers start and stop in parallel); {init: result}."""
    return dict(zip(inits, together(function, list(inits))))


def stopped(code_and_time) -> str:
    code, elapsed = code_and_time
    return "%d in %.1f s" % (code, elapsed)


# --- The example image, as its header comment and examples/README.md use it -------------------------


def test_example_image_as_documented(engine):
    """Built from examples/Dockerfile as written (the fixture did); `run -d`; `exec ... ps` shows pyinit as
    PID 1 and the service as its child; `stop` makes the service say it is stopping; exit code 0, well
    within the image's PYINIT_GRACE (8 s, below stop's 10)."""
    name = engine.name_for("example")
    engine("run", "-d", "--name", name, *engine.run_options(), EXAMPLE)
    output(engine, name, "serving")
    table = [line.split(None, 3) for line in engine("exec", name, "ps", "-o", "pid,ppid,stat,args").stdout.splitlines()]
    assert table[0] == ["PID", "PPID", "STAT", "COMMAND"], table
    rows = {int(row[0]): row for row in table[1:]}
    # PID 1: the `pyinit` command, which /usr/bin/env started with the python3 on PATH (its #! line)
    assert rows[1][3] == "python3 /usr/local/bin/pyinit -- python3 graceful_service.py", rows
    (service,) = [row for row in table[1:] if row[3] == "python3 graceful_service.py"]
    assert service[1] == "1" and service[0] != "1", table
    grace = float(engine("inspect", "-f", "{{range .Config.Env}}{{println .}}{{end}}", name).stdout
                  .split("PYINIT_GRACE=")[1].split()[0])
    code, elapsed = stop(engine, name)
    assert "stopping: flushed state" in engine.logs(name)
    assert code == 0
    assert elapsed < grace, elapsed


def test_example_image_exit_code_and_zombies(engine):
    """examples/README.md's one-off runs: `sh -c 'exit 3'` exits 3; 50 orphans, none left a zombie."""
    assert engine("run", "--rm", *engine.run_options(), EXAMPLE, "sh", "-c", "exit 3", check=False).returncode == 3
    done = engine("run", "--rm", *engine.run_options(), EXAMPLE, "sh", "-c",
                  "python3 zombie_factory.py 50 && ps -o pid,stat,args")
    lines = done.stdout.splitlines()
    assert lines[0] == "made 50 orphans", lines
    assert [line for line in lines[2:] if line.split()[1].startswith("Z")] == [], lines


# --- Scenarios: pyinit beside tini, dumb-init and no init -------------------------------------------


@pytest.mark.parametrize("options", [(), ("--read-only", "--user", "65534", "--cap-drop", "ALL")],
                         ids=["plain", "read-only-nobody-no-capabilities"])
def test_stop_a_service_with_a_sigterm_handler(engine, options):
    """`stop`: the service's handler runs and it exits 0, at once, whatever the init; the same in a
    read-only container, as nobody, without any capability."""

    def scenario(init):
        name = start(engine, init, GRACEFUL, *options)
        output(engine, name, "serving")
        result = stop(engine, name, "-t", "5")
        return result, "stopping" in engine.logs(name)

    results = each_init(scenario)
    for init, (result, said) in results.items():
        record("stop, service with a SIGTERM handler" + (", " + " ".join(options) if options else ""), engine.name,
               init, stopped(result) + ("" if said else ", no 'stopping'"))
    (code, elapsed), said = results["pyinit"]
    assert (code, said) == (0, True) and elapsed < 5, results["pyinit"]  # before stop's SIGKILL


def test_stop_a_service_without_a_sigterm_handler(engine):
    """`stop` of a service that relies on SIGTERM's default action: it dies of it under pyinit (143, at
    once); as PID 1 itself the kernel drops the SIGTERM, and the engine SIGKILLs it at the timeout (137)."""

    def scenario(init):
        name = start(engine, init, ["python3", "engine_service.py", "--no-handler"])
        output(engine, name, "ready")
        return stop(engine, name, "-t", "3")

    results = each_init(scenario)
    for init, result in results.items():
        record("stop, service without a handler (-t 3)", engine.name, init, stopped(result))
    code, elapsed = results["pyinit"]
    assert code == 143 and elapsed < 3, results["pyinit"]  # pyinit's SIGTERM, not stop's SIGKILL at 3 s
    code, elapsed = results["none"]  # the control: the reason for an init
    assert code == 137 and elapsed >= 2.9, results["none"]


def test_zombies_of_a_service_whose_children_orphan_processes(engine):
    """50 orphans re-parented to PID 1 and exited: pyinit reaps them all; a PID 1 that is the service
    itself (which waits only for its own children) keeps all 50 as zombies."""

    def scenario(init):
        name = start(engine, init, ["python3", "engine_forks.py", "50", "--stay"])
        output(engine, name, "forks 50 failures 0")
        if init == "none":
            time.sleep(0.5)
            return zombies(engine, name)
        try:
            return wait_for(lambda: zombies(engine, name) == 0 and 0 or None, "no zombie", 5) or 0
        except AssertionError:
            return zombies(engine, name)

    results = each_init(scenario)
    for init, count in results.items():
        record("zombies left of 50 orphans", engine.name, init, str(count))
    assert results["pyinit"] == 0
    assert results["none"] == 50  # the control


def test_kill_signals_reach_the_service(engine):
    """`kill -s HUP`, `USR1`, `INT` to the container reach the service, which has a handler for each."""
    signals = ["SIGHUP", "SIGUSR1", "SIGINT"]

    def scenario(init):
        name = start(engine, init, ["python3", "engine_service.py", "--report", ",".join(signals)])
        output(engine, name, "ready")
        reached = []
        for signame in signals:
            engine("kill", "-s", signame[3:], name)
            try:
                output(engine, name, "got " + signame, timeout=5)
                reached.append(signame[3:])
            except AssertionError:
                pass
        engine.remove(name)
        return reached

    results = each_init(scenario)
    for init, reached in results.items():
        record("kill -s HUP, USR1, INT reach the service", engine.name, init, " ".join(reached) or "none")
    assert results["pyinit"] == ["HUP", "USR1", "INT"]


EXIT_CASES = {  # what the command does: the exit code pyinit must give, as the coreutils wrappers do
    "exit 3": (["sh", "-c", "exit 3"], 3),
    "SIGSEGV": (["python3", "-c", "import ctypes; ctypes.string_at(0)"], 128 + 11),
    "not found": (["no-such-command"], 127),
    "not executable": (["/etc/hostname"], 126),
}


def test_exit_codes(engine):
    """`run`'s exit code is the command's: its own, 128+N for a signal, 127 not found, 126 not executable."""

    def scenario(case):
        init, what = case
        argv = ENTRYPOINT[init] + EXIT_CASES[what][0]
        return engine("run", "--rm", *engine.run_options(), "--entrypoint", argv[0], IMAGE, *argv[1:],
                      check=False, timeout=60).returncode

    cases = [(init, what) for what in EXIT_CASES for init in INITS]
    results = dict(zip(cases, together(scenario, cases)))
    for (init, what), code in results.items():
        record("exit code: %s (expected %d)" % (what, EXIT_CASES[what][1]), engine.name, init, str(code))
    assert {what: results["pyinit", what] for what in EXIT_CASES} == {what: code for what, (_, code) in EXIT_CASES.items()}


def test_stop_signal(engine):
    """`run --stop-signal USR1`: `stop` sends SIGUSR1, which reaches the service, and it exits 0."""

    def scenario(init):
        name = start(engine, init, ["python3", "engine_service.py", "--exit-on", "SIGUSR1"], "--stop-signal", "USR1")
        output(engine, name, "ready")
        result = stop(engine, name, "-t", "5")
        return result, "stopping on SIGUSR1" in engine.logs(name)

    results = each_init(scenario)
    for init, (result, said) in results.items():
        record("--stop-signal USR1", engine.name, init, stopped(result) + ("" if said else ", not reached"))
    (code, elapsed), said = results["pyinit"]
    assert (code, said) == (0, True) and elapsed < 5, results["pyinit"]  # before stop's SIGKILL


def test_stop_timeout_against_pyinits_grace(engine, tmp_path):
    """A service deaf to SIGTERM, `--stop-timeout 4`, PYINIT_GRACE=1: pyinit SIGKILLs it itself after 1 s,
    says so in its exit report and exits 137, before the engine would; without pyinit the engine's
    SIGKILL comes at 4 s."""
    reports = tmp_path / "reports"
    reports.mkdir()

    def scenario(init):
        name = start(engine, init, ["sh", "-c", "trap '' TERM; echo ready; exec sleep 600"], "--stop-timeout", "4",
                     "-e", "PYINIT_GRACE=1", "-v", "%s:/reports" % reports, "-e", "PYINIT_EXIT_REPORT=/reports/exit.json")
        output(engine, name, "ready")
        return stop(engine, name)

    results = each_init(scenario)
    for init, result in results.items():
        record("SIGTERM-deaf service, --stop-timeout 4, PYINIT_GRACE=1", engine.name, init, stopped(result))
    code, elapsed = results["pyinit"]
    assert code == 137 and 0.9 <= elapsed < 4, results["pyinit"]
    report = json.loads((reports / "exit.json").read_text())  # only pyinit writes one
    assert (report["exit_code"], report["grace"]["seconds"], report["grace"]["killed"]) == (137, 1.0, True), report


def test_pids_limit_with_a_fork_storm(engine):
    """`--pids-limit 50`, 200 orphans made one after the other: reaped by pyinit, no fork fails; kept as
    zombies by a PID 1 that does not reap, the limit is reached and forks fail."""

    def scenario(init):
        argv = ENTRYPOINT[init] + ["python3", "engine_forks.py", "200"]
        done = engine("run", "--rm", *engine.run_options(), "--pids-limit", "50", "--entrypoint", argv[0],
                      IMAGE, *argv[1:], check=False, timeout=60)
        found = re.search(r"forks 200 failures (\d+)", done.stdout)
        return done.returncode, int(found.group(1)) if found else None

    results = each_init(scenario)
    for init, (code, failures) in results.items():
        record("--pids-limit 50: fork failures of 200 orphans", engine.name, init, "%s (exit %d)" % (failures, code))
    assert results["pyinit"] == (0, 0)
    assert results["none"][1] > 0  # the control


def test_exit_report_written_to_a_volume(engine, tmp_path):
    """PYINIT_EXIT_REPORT to a volume: after `stop`, the host reads what happened (pyinit only)."""
    reports = tmp_path / "reports"
    reports.mkdir()
    name = start(engine, "pyinit", GRACEFUL, "-v", "%s:/reports" % reports, "-e", "PYINIT_EXIT_REPORT=/reports/exit.json")
    output(engine, name, "serving")
    code, _ = stop(engine, name, "-t", "5")
    assert code == 0
    report = json.loads((reports / "exit.json").read_text())
    assert (report["pid"], report["exit_code"], report["command"]) == (1, 0, GRACEFUL), report
    assert report["child"]["exit_code"] == 0 and report["child"]["signal"] is None, report
    assert report["signals"]["received"].get("SIGTERM") == 1, report["signals"]
    assert report["signals"]["forwarded"].get("SIGTERM") == 1, report["signals"]
    record("exit report on a volume", engine.name, "pyinit", "written, exit 0")


def test_behind_the_engines_own_init(engine):
    """`run --init` puts the engine's init (podman: catatonit, docker: tini as docker-init) in front as PID 1:
    pyinit, PID 2, a subreaper then, still reaps the orphans and stops the service cleanly (0)."""

    def scenario(init):
        name = start(engine, init, ["python3", "engine_forks.py", "50", "--stay"], "--init")
        output(engine, name, "forks 50")
        time.sleep(0.5)
        first = engine("exec", name, "ps", "-o", "pid=,args=", "-p", "1").stdout.split(None, 1)[1].strip()
        count = zombies(engine, name)
        result = stop(engine, name, "-t", "5")
        return first, count, result, "stopping" in engine.logs(name)

    results = each_init(scenario)
    for init, (first, count, result, said) in results.items():
        record("behind the engine's --init: zombies, stop", engine.name, init,
               "%d, %s%s" % (count, stopped(result), "" if said else ", no 'stopping'"))
    first, count, (code, elapsed), said = results["pyinit"]
    assert first.split()[0].endswith("init") and "pyinit" in first, first  # the engine's init is PID 1, then pyinit
    assert (count, code, said) == (0, 0, True) and elapsed < 5, results["pyinit"]


# --- run -it: a shell in a real terminal ------------------------------------------------------------


PROMPT = "[ctr]$ "


def terminal(engine, init: str, command: "list[str]", *options: str) -> "tuple[pexpect.spawn, str]":
    """`run -it --rm` COMMAND behind INIT on a fresh pty of 24x80: (the pexpect child, the container's name)."""
    argv = ENTRYPOINT[init] + command
    name = engine.name_for("tty-" + init)
    program, *args = engine.command("run", "-it", "--rm", "--name", name, *engine.run_options(), *options,
                                    "--entrypoint", argv[0], IMAGE, *argv[1:])
    child = pexpect.spawn(program, args, env=engine.env, encoding="utf-8", codec_errors="replace",
                          timeout=TIMEOUT, dimensions=(24, 80))
    return child, name


def test_run_it_shell_job_control_resize_and_exit(engine):
    """`run -it` bash: Ctrl-C interrupts a command, Ctrl-Z stops it and `fg` continues it, a resize of the
    terminal reaches the shell, and `exit 7` is run's exit code."""

    def scenario(init):
        child, name = terminal(engine, init, ["bash", "--norc", "--noprofile", "-i"], "-e", "PS1=" + PROMPT)
        steps = []

        def step(label, action, *expected):
            try:
                action()
                for text in expected:
                    child.expect_exact(text, timeout=10)
                steps.append(label)
            except (pexpect.TIMEOUT, pexpect.EOF):
                pass

        try:
            child.expect_exact(PROMPT)
            step("C-c", lambda: (child.sendline("sleep 100; echo after"), time.sleep(0.5), child.sendcontrol("c")),
                 PROMPT)
            step("C-z", lambda: (child.sendline("sleep 101"), time.sleep(0.5), child.sendcontrol("z")),
                 "Stopped", PROMPT)
            step("fg", lambda: (child.sendline("fg"), time.sleep(0.5), child.sendcontrol("c")), "sleep 101", PROMPT)
            step("resize", lambda: (child.setwinsize(33, 111), time.sleep(0.3), child.sendline("stty size")),
                 "33 111", PROMPT)
            child.sendline("exit 7")
            child.expect(pexpect.EOF, timeout=TIMEOUT)
            child.close()
            return steps, child.exitstatus
        finally:
            child.close(force=True)
            engine.remove(name)

    results = each_init(scenario)
    for init, (steps, code) in results.items():
        record("run -it bash: what worked; exit 7", engine.name, init, "%s; %s" % (" ".join(steps) or "nothing", code))
    assert results["pyinit"] == (["C-c", "C-z", "fg", "resize"], 7)


def test_run_it_ctrl_z_with_the_command_alone(engine):
    """`run -it IMAGE sleep 100`: Ctrl-Z. Under pyinit the sleep leads a session of its own as PID 1's child,
    so its process group is orphaned and the kernel drops the SIGTSTP: it keeps running, and Ctrl-C then
    ends it (130). (tini stops the sleep, and the container hangs until a SIGCONT; as PID 1 itself, sleep
    ignores both keys.)"""

    def scenario(init):
        child, name = terminal(engine, init, ["sleep", "100"])
        try:
            state = lambda: engine("exec", name, "ps", "-e", "-o", "stat=,args=", check=False).stdout  # noqa: E731
            wait_for(lambda: "sleep 100\n" in state(), "sleep to run", TIMEOUT)
            child.sendcontrol("z")
            time.sleep(1)
            (stat,) = [line.split()[0] for line in state().splitlines() if line.split(None, 1)[1:] == ["sleep 100"]]
            engine("kill", "-s", "CONT", name, check=False)  # wake it (and the init) for what follows
            child.sendcontrol("c")
            try:
                child.expect(pexpect.EOF, timeout=5)
                child.close()
                code = str(child.exitstatus)
            except pexpect.TIMEOUT:
                code = "no exit"
            return ("stopped" if stat.startswith("T") else "dropped"), code
        finally:
            child.close(force=True)
            engine.remove(name)

    results = each_init(scenario)
    for init, (ctrl_z, code) in results.items():
        record("run -it sleep 100: Ctrl-Z; then Ctrl-C", engine.name, init, "%s; %s" % (ctrl_z, code))
    assert results["pyinit"] == ("dropped", "130")


# --- examples/docker-compose.yml, with docker-compose -------------------------------------------------


@pytest.fixture
def compose(docker_engine, tmp_path):
    """compose(*args) runs `docker-compose` on examples/docker-compose.yml as written, against the private
    dockerd, with one override file: no network for the services (the dockerd has no bridge) and the
    host's for their builds. `down` at the end."""
    program = shutil.which("docker-compose")
    if program is None:
        pytest.skip("docker-compose is not installed (Debian package docker-compose)")
    override = tmp_path / "override.yml"
    override.write_text("services:\n" + "".join("  %s:\n    network_mode: none\n    build:\n      network: host\n" % name
                                                   for name in ("app", "zombies")))
    project = "pyinit%s" % os.urandom(4).hex()
    argv = [program, "--project-name", project, "--project-directory", REPO / "examples",
            "-f", REPO / "examples" / "docker-compose.yml", "-f", override, "--no-ansi"]

    def compose(*args: str, check: bool = True) -> "subprocess.CompletedProcess":
        return engines.run([*argv, *args], check=check, timeout=BUILD_TIMEOUT, env=docker_engine.env)

    yield compose
    compose("down", "--rmi", "local", "--remove-orphans", check=False)


def test_compose_app_and_zombies(compose, docker_engine):
    """`up -d app`; `exec app ps` shows pyinit as PID 1; `stop app` sends stop_signal, and the service exits 0
    well within stop_grace_period (pyinit logs the SIGTERM: PYINIT_VERBOSITY=2); `run --rm zombies`: 50
    orphans, no zombie."""
    import yaml

    service = yaml.safe_load((REPO / "examples" / "docker-compose.yml").read_text())["services"]["app"]
    period = float(service["stop_grace_period"].rstrip("s"))
    compose("up", "-d", "app")
    (container,) = compose("ps", "-q", "app").stdout.split()
    output(docker_engine, container, "serving")
    table = compose("exec", "-T", "app", "ps", "-o", "pid=,args=").stdout.splitlines()
    assert any(re.fullmatch(r"\s*1 \S*python3 /usr/local/bin/pyinit -- python3 graceful_service.py", row)
               for row in table), table
    started = time.monotonic()
    compose("stop", "app")
    elapsed = time.monotonic() - started
    log = docker_engine.logs(container)
    assert "stopping: flushed state" in log and service["stop_signal"] in log, log
    assert docker_engine.exit_code(container) == 0
    assert elapsed < period, elapsed
    compose("build", "zombies")  # (from the build cache: the same Dockerfile and context as app's)
    lines = compose("run", "--rm", "-T", "zombies").stdout.splitlines()
    assert lines[0] == "made 50 orphans", lines
    assert [line for line in lines[2:] if line.split()[1].startswith("Z")] == [], lines
