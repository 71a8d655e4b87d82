"""pyinit as a container's ENTRYPOINT under a real OCI runtime (runc), and the examples in examples/.

Docker and Kubernetes (through containerd) start containers with runc; there
is no container engine here, but runc itself is. Each test builds an OCI
bundle in its temporary directory: an empty root filesystem with the host's
/usr, /bin, /lib*, /etc bind-mounted read-only, a writable tmpfs on /tmp, and
the source tree read-only at /opt/pyinit, so that Debian's /usr/bin/python3
can run `python3 -m pyinit` inside. The cgroup namespace and every cgroup
resource are left out of config.json (runc then needs no cgroup set-up of
its own). Each container has its own id and runc state directory, and is
`runc delete -f`-ed at teardown whatever happened.

The tests drive the container as an orchestrator does: `runc run` in the
foreground (its exit status is the container's), `runc kill CTR TERM` (what
`docker stop` and the kubelet send), `runc exec` (`docker exec`), `runc
state`. Output is synchronised on what the service prints, never on sleeps.

The examples that need an engine (examples/Dockerfile, docker-compose.yml,
kubernetes/pod.yaml) are checked for validity and then run the same way under
runc: the image the Dockerfile describes is built once, as a builder builds it
but with the host's directories in place of the base image's (its COPY
instructions copy from the repository less .dockerignore's, each RUN runs its
shell script under runc, as root and without a network, in a container of the
image being built), and run with its ENV, WORKDIR, ENTRYPOINT and CMD as
written; the Compose service or Pod on top of it (environment, command, stop
signal and grace period). The YAML files are read with PyYAML's safe loader,
and docs/containers.md's snippets are compared with them. The CI workflow's
launcher step is run on the host as written.

The emulation is a quick check of what the image runs, not of the image (its
base is the host, and its Python Debian's). The image users build is tested in
tests/test_engines.py, which builds examples/Dockerfile as written with podman
and docker (and Compose's services with docker-compose) and runs, stops and
inspects what they built.

The suite needs the Debian packages runc, procps (ps) and python3 (Debian's
/usr/bin/python3, used inside the containers). Without runc, or where it cannot
run a container, the runc tests are skipped, except under CI (CI set), where
that is an error: CI installs runc.
"""

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml

from support import PROGRAMS, REPO, SYSTEM_PYTHON, TIMEOUT, Lines, assert_no_traceback, clean_env, leaked, wait_for

RUNC = shutil.which("runc")
SOURCE = "/opt/pyinit"  # where the source tree is mounted in the containers
PYINIT = [SYSTEM_PYTHON, "-m", "pyinit"]
EXAMPLES = REPO / "examples"
HOST_DIRECTORIES = ["/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc"]


def in_image(image: Path, path: str) -> Path:
    """Where the file at `path` in an image built by Image.build into the directory `image` is: in its
    root filesystem, except for /usr/local, kept beside it. (A bind mount's source is looked up after
    the mounts before it, and the root's /usr is the host's by then.)"""
    if path == "/usr/local" or path.startswith("/usr/local/"):
        return image / "usr-local" / path[len("/usr/local/"):]
    return image / "rootfs" / path.lstrip("/")


def inside(path: Path) -> str:
    """The path, inside the containers, of a file of the source tree."""
    return str(Path(SOURCE) / Path(path).relative_to(REPO))


SERVICE = [SYSTEM_PYTHON, inside(EXAMPLES / "graceful_service.py")]
ZOMBIE_FACTORY = [SYSTEM_PYTHON, inside(EXAMPLES / "zombie_factory.py")]
STUBBORN = [SYSTEM_PYTHON, inside(PROGRAMS / "container_stubborn.py")]


# --- runc ---------------------------------------------------------------------------------------


class Container:
    """One container: its bundle, its id, and the foreground `runc run` that runs it.

    Edit `config` (the parsed config.json) or call `bind` before `run`. The
    container's stdout is a pipe read line by line through `out`; its stderr
    (pyinit's diagnostics, and runc's own) goes to a file, read through
    `stderr`.
    """

    def __init__(self, directory: Path, name: str, image: "Path | None" = None) -> None:
        """`image`: an image's files (Image.build's directory; see `in_image`) to run, its root
        filesystem and its own /usr/local, instead of an empty root with the source tree mounted."""
        self.id = "pyinit-%s-%s" % (re.sub(r"[^a-z0-9]+", "-", name.lower())[:40].strip("-"), uuid.uuid4().hex[:10])
        self.bundle = directory / "bundle"
        self.state_root = directory / "runc-state"
        self.bundle.mkdir(parents=True)
        self.rootfs = self.bundle / "rootfs" if image is None else in_image(image, "/")
        self.rootfs.mkdir(parents=True, exist_ok=True)
        self.proc: "subprocess.Popen | None" = None
        self.out: "Lines | None" = None
        self._stderr = tempfile.TemporaryFile()
        spec = subprocess.run([RUNC, "spec", "--bundle", str(self.bundle)], capture_output=True, text=True,
                              timeout=TIMEOUT)
        assert spec.returncode == 0, "runc spec failed: %s" % spec.stderr
        self.config = json.loads((self.bundle / "config.json").read_text())
        self.config["root"] = {"path": str(self.rootfs), "readonly": True}
        self.config["hostname"] = "pyinit-test"
        process = self.config["process"]
        process["terminal"] = False
        process["cwd"] = "/"
        process["env"] = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
        linux = self.config["linux"]
        linux.pop("resources", None)  # no cgroup limits: runc needs no cgroup set-up
        linux["namespaces"] = [ns for ns in linux["namespaces"] if ns["type"] != "cgroup"]
        self.config["mounts"] = [m for m in self.config["mounts"] if m["destination"] != "/sys/fs/cgroup"]
        for path in HOST_DIRECTORIES:
            if os.path.islink(path):  # merged /usr: /bin -> usr/bin, as on the host
                if not os.path.lexists(self.rootfs / path.lstrip("/")):
                    os.symlink(os.readlink(path), self.rootfs / path.lstrip("/"))
            elif os.path.isdir(path):
                self.bind(path, path)
        self.config["mounts"].append({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                                      "options": ["nosuid", "nodev", "mode=1777"]})
        if image is None:
            self.bind(REPO, SOURCE)
            self.setenv("PYTHONPATH", SOURCE)
        else:
            in_image(image, "/usr/local").mkdir(parents=True, exist_ok=True)
            self.bind(in_image(image, "/usr/local"), "/usr/local")

    def bind(self, source, destination: str, readonly: bool = True) -> None:
        """Bind-mount host file or directory `source` at `destination` in the container."""
        self.config["mounts"].append({"destination": destination, "type": "bind", "source": str(source),
                                      "options": ["rbind", "ro" if readonly else "rw"]})

    def setenv(self, name: str, value: str) -> None:
        env = [item for item in self.config["process"]["env"] if not item.startswith(name + "=")]
        self.config["process"]["env"] = env + ["%s=%s" % (name, value)]

    def runc(self, *args: str, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
        return subprocess.run([RUNC, "--root", str(self.state_root), *args], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout)

    def run(self, args: "list[str]", *, cwd: "str | None" = None) -> "Container":
        """`runc run` the container with `args` as its process, in the background of the test."""
        self.config["process"]["args"] = list(args)
        if cwd is not None:
            self.config["process"]["cwd"] = cwd
        (self.bundle / "config.json").write_text(json.dumps(self.config, indent=1))
        self.proc = subprocess.Popen([RUNC, "--root", str(self.state_root), "run", "--bundle", str(self.bundle),
                                      self.id], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self._stderr)
        self.out = Lines(self.proc.stdout.fileno())
        return self

    def wait(self, timeout: float = TIMEOUT) -> int:
        """The exit status of `runc run`, which is the container process's (128+N for signal N)."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("container %s did not exit within %.0fs; stderr:\n%s"
                                 % (self.id, timeout, self.stderr)) from None

    def output(self) -> str:
        """Everything left on the container's stdout, up to its end."""
        chunks = [self.out.buffer]
        while True:
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                return b"".join(chunks).decode(errors="replace")
            chunks.append(chunk)

    def kill(self, sig: str = "TERM") -> None:
        """`runc kill`: the signal to the container's PID 1, as `docker stop` and the kubelet send it."""
        result = self.runc("kill", self.id, sig)
        assert result.returncode == 0, "runc kill %s %s failed: %s" % (self.id, sig, result.stderr)

    def exec(self, *args: str) -> str:
        """`runc exec`: run a command inside the running container; its stdout."""
        result = self.runc("exec", self.id, *args)
        assert result.returncode == 0, "runc exec %s failed (%d): %s" % (args, result.returncode, result.stderr)
        return result.stdout

    def ps(self) -> "list[dict]":
        """The container's process table, as `ps` run inside it sees it (ps itself included)."""
        rows = []
        for line in self.exec("ps", "-e", "-o", "pid=,ppid=,stat=,args=").splitlines():
            pid, ppid, state, args = line.split(None, 3)
            rows.append({"pid": int(pid), "ppid": int(ppid), "stat": state, "args": args})
        return rows

    def status(self) -> str:
        """`runc state`'s status: created, running, stopped; 'gone' once `runc run` has deleted it."""
        result = self.runc("state", self.id)
        return json.loads(result.stdout)["status"] if result.returncode == 0 else "gone"

    @property
    def stderr(self) -> str:
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace")
        assert_no_traceback(text)
        return text

    def remove(self) -> None:
        """Teardown: `runc delete -f` (kills whatever still runs), until `runc run` has ended.

        Repeated, because a container that `runc run` was still creating is
        not there to delete yet.
        """
        deadline = time.monotonic() + TIMEOUT
        while True:
            self.runc("delete", "-f", self.id)
            if self.proc is None:
                return
            try:
                self.proc.wait(0.5)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    self.proc.kill()
                    self.proc.wait(TIMEOUT)
                    break
        self.proc.stdout.close()


def _cannot_run(reason: str) -> None:
    """Skip where runc cannot be used; under CI, where it must be, fail instead."""
    if os.environ.get("CI"):
        pytest.fail(reason + " (CI runs these tests: .ci/run must install what they need)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def runc_works(tmp_path_factory) -> None:
    """A probe container; skip (fail under CI) when runc cannot run one here."""
    if RUNC is None:
        _cannot_run("runc is not installed (Debian package runc)")
    if os.geteuid() != 0:
        _cannot_run("runc needs root here (rootless runc is not set up)")
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        _cannot_run("%s is needed inside the containers (Debian package python3)" % SYSTEM_PYTHON)
    probe = Container(tmp_path_factory.mktemp("probe"), "probe")
    try:
        probe.run(["sh", "-c", "exit 7"])
        code = probe.wait()
        if code != 7:
            _cannot_run("runc cannot run a container here (a probe exited %d): %s" % (code, probe.stderr.strip()))
    finally:
        probe.remove()


@pytest.fixture
def container(runc_works, tmp_path, request):
    """container(image=None) -> a new Container (of the image built there), not yet running;
    each is deleted at teardown."""
    made = []

    def container(image: "Path | None" = None) -> Container:
        made.append(Container(tmp_path / ("c%d" % len(made)), request.node.name, image))
        return made[-1]

    yield container
    for each in made:
        each.remove()
    for each in made:  # whatever the test looked at: no Python traceback from pyinit
        if each.proc is not None:
            each.stderr  # noqa: B018 (the property checks)


@pytest.fixture
def reports(tmp_path) -> Path:
    """A host directory for exit reports, to bind-mount read-write at /reports."""
    directory = tmp_path / "reports"
    directory.mkdir()
    return directory


def serve(ctr: Container, argv: "list[str]") -> Container:
    """Run pyinit ARGV... -- the graceful service, and wait until it serves."""
    ctr.run([*PYINIT, *argv, "--", *SERVICE])
    line = ctr.out.next()
    assert line.startswith("serving"), (line, ctr.stderr)
    return ctr


# --- The container's PID 1 ----------------------------------------------------------------------


def test_pid_1_is_pyinit(container):
    """/proc/1 in the container is pyinit, and `ps` there shows the service as its child."""
    ctr = serve(container(), [])
    assert ctr.exec("cat", "/proc/1/cmdline").split("\0") == [*PYINIT, "--", *SERVICE, ""]
    table = ctr.ps()
    init = [row for row in table if row["pid"] == 1]
    assert [row["args"] for row in init] == [" ".join(PYINIT + ["--"] + SERVICE)], table
    service = [row for row in table if row["args"] == " ".join(SERVICE)]
    assert len(service) == 1 and service[0]["ppid"] == 1 and service[0]["pid"] != 1, table
    ctr.kill("TERM")
    assert ctr.wait() == 0


def test_docker_stop_stops_a_graceful_service(container):
    """`runc kill CTR TERM` reaches the service through pyinit; the container exits with its code, 0."""
    ctr = serve(container(), ["-v"])
    ctr.kill("TERM")
    assert ctr.out.next().startswith("stopping: flushed state"), ctr.stderr
    assert ctr.wait() == 0
    assert "SIGTERM" in ctr.stderr  # -v: pyinit logged the signal it received and forwarded


def test_docker_stop_ends_a_service_without_a_handler(container):
    """A service that relies on SIGTERM's default action dies of it under pyinit: 143, at once.

    The control run is the reason for an init: the same `sleep` as PID 1
    itself ignores the SIGTERM (the kernel drops it), and only SIGKILL ends it.
    """
    bare = container()
    bare.run(["sh", "-c", "echo up; exec sleep 600"])
    assert bare.out.next() == "up"
    bare.kill("TERM")
    time.sleep(1)
    assert bare.status() == "running"
    bare.kill("KILL")
    assert bare.wait() == 128 + signal.SIGKILL

    ctr = container()
    ctr.run([*PYINIT, "--", "sh", "-c", "echo up; exec sleep 600"])
    assert ctr.out.next() == "up"
    started = time.monotonic()
    ctr.kill("TERM")
    assert ctr.wait() == 128 + signal.SIGTERM
    assert time.monotonic() - started < 10


def test_sigterm_from_inside_the_container(container):
    """`docker exec CTR kill -TERM 1` (or kubectl's) stops the service like `docker stop`."""
    ctr = serve(container(), [])
    ctr.exec("kill", "-TERM", "1")
    assert ctr.out.next().startswith("stopping"), ctr.stderr
    assert ctr.wait() == 0


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_grace_kills_a_service_that_ignores_sigterm(container, reports, how):
    """A service deaf to SIGTERM (and its workers) is SIGKILLed `--grace` seconds later: exit 137.

    Set by the flag, or by PYINIT_GRACE in the container's environment
    (config.json's process.env, which is what `docker run -e` and a Pod's env
    set). The exit report, in a bind-mounted host directory, says pyinit did it.
    """
    ctr = container()
    ctr.bind(reports, "/reports", readonly=False)
    argv = ["--exit-report", "/reports/exit.json"]
    if how == "flag":
        argv += ["--grace", "1"]
    else:
        ctr.setenv("PYINIT_GRACE", "1")
    ctr.run([*PYINIT, *argv, "--", *STUBBORN, "2"])
    assert [line.split()[0] for line in ctr.out.take(3)] == ["ready"] * 3
    started = time.monotonic()
    ctr.kill("TERM")
    assert ctr.wait() == 128 + signal.SIGKILL
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 15, elapsed
    report = json.loads((reports / "exit.json").read_text())
    assert report["exit_code"] == 137
    assert report["child"]["signal"] == "SIGKILL"
    assert report["grace"] == {"seconds": 1.0, "killed": True, "processes": 3}


def test_zombies_made_inside_are_reaped(container, reports):
    """Orphans of a careless service are reaped by pyinit: `runc exec CTR ps` shows no zombie."""
    ctr = container()
    ctr.bind(reports, "/reports", readonly=False)
    script = "%s 50 && exec %s" % (shlex.join(ZOMBIE_FACTORY), shlex.join(SERVICE))
    ctr.run([*PYINIT, "--exit-report", "/reports/exit.json", "--", "sh", "-c", script])
    assert ctr.out.take(2) == ["made 50 orphans", "serving; send SIGTERM to stop"], ctr.stderr
    table = ctr.ps()
    assert [row for row in table if row["stat"].startswith("Z")] == []
    assert [row["args"] for row in table if row["pid"] != 1 and not row["args"].startswith("ps ")] \
        == [" ".join(SERVICE)], table  # and nothing else but pyinit and ps
    ctr.kill("TERM")
    assert ctr.wait() == 0
    assert json.loads((reports / "exit.json").read_text())["zombies_reaped"] == 50


def test_orphans_of_docker_exec_are_reaped(container):
    """A process left behind by `docker exec` (a health check's background job) comes to pyinit,
    which reaps it when it exits: it never shows as a zombie."""
    ctr = serve(container(), [])
    orphan = int(ctr.exec("sh", "-c", "sleep 1 >/dev/null 2>&1 & echo $!"))
    table = {row["pid"]: row for row in ctr.ps()}
    if orphan in table:  # not reaped yet: adopted by PID 1 when the exec'd shell exited
        assert table[orphan]["ppid"] == 1, table[orphan]
    wait_for(lambda: orphan not in {row["pid"] for row in ctr.ps()}, "the orphan to exit and be reaped", 15)
    ctr.kill("TERM")
    assert ctr.wait() == 0


@pytest.mark.parametrize("script, code", [
    ("exit 0", 0),
    ("exit 3", 3),
    ("kill -USR1 $$", 128 + signal.SIGUSR1),
    ("kill -KILL $$", 128 + signal.SIGKILL),
    ("exec no-such-command-here", 127),
])
def test_exit_status_of_runc_run_is_the_commands(container, script, code):
    """`runc run`'s exit status (what `docker run` returns) is the command's: N, or 128+N for signal N."""
    ctr = container()
    ctr.run([*PYINIT, "--", "sh", "-c", script])
    assert ctr.wait() == code, ctr.stderr


def test_pyinit_failure_is_125_in_a_container(container):
    """pyinit's own failure (here a bad PYINIT_* value in the image's environment) is 125, said in one line."""
    ctr = container()
    ctr.setenv("PYINIT_GRACE", "soon")
    ctr.run([*PYINIT, "--", "true"])
    assert ctr.wait() == 125
    lines = ctr.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("pyinit: ") and "PYINIT_GRACE" in lines[0], lines


def test_exit_report_in_a_bind_mounted_directory(container, reports):
    """--exit-report to a host directory mounted in the container: the orchestrator side can read it."""
    ctr = container()
    ctr.bind(reports, "/reports", readonly=False)
    serve(ctr, ["--exit-report", "/reports/exit.json"])
    ctr.kill("TERM")
    assert ctr.wait() == 0
    report = json.loads((reports / "exit.json").read_text())
    assert report["version"] == 1
    assert report["pid"] == 1
    assert report["command"] == SERVICE
    assert report["child"]["exit_code"] == 0 and report["child"]["signal"] is None
    assert report["exit_code"] == 0
    # `runc run` (a Go program) passes on every signal it gets, SIGURG included, which Go's runtime sends
    # its own threads to preempt goroutines, most often on a loaded machine (upstream runc stopped
    # forwarding it, opencontainers/runc#3368; Debian 12's runc 1.1.5 still does). Those SIGURGs are
    # runc's, not the orchestrator's, and one may come after the service exited (received, not
    # forwarded): leave them out. Apart from them pyinit got exactly the one SIGTERM and forwarded it.
    signals = {way: {name: count for name, count in counts.items() if name != "SIGURG"}
               for way, counts in report["signals"].items()}
    assert signals == {"received": {"SIGTERM": 1}, "forwarded": {"SIGTERM": 1}}, report["signals"]
    timeline = report["timeline"]
    assert timeline["start"] <= timeline["first_terminating_signal"] <= timeline["child_exit"] <= timeline["exit"]


# --- examples/Dockerfile, under runc ------------------------------------------------------------


def parse_dockerfile(text: str) -> "list[tuple[str, str]]":
    """(INSTRUCTION, arguments) for each instruction: comments dropped, continuation lines joined."""
    instructions, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.strip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, arguments = pending.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends in a continuation line"
    return instructions


def dockerignore() -> "list[re.Pattern]":
    """The build context's .dockerignore (the repository's root) as expressions over paths relative to
    the context: `**/` any directories, `*` and `?` within a name. Exceptions (`!`) are not emulated."""
    patterns = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            assert not line.startswith("!"), ".dockerignore: an exception the emulation does not know: %s" % line
            expression = re.escape(line.strip("/")).replace(r"\*\*/", "(?:.*/)?")
            patterns.append(re.compile(expression.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")))
    return patterns


def copy_from_context(source: Path, image: Path, destination: str, into: bool) -> None:
    """COPY SOURCE DESTINATION into the image built in `image`: a directory's contents, or a
    file (into DESTINATION if it ends in / or `into`), less what .dockerignore leaves out."""
    hidden = [path for path in HOST_DIRECTORIES if (destination + "/").startswith(path + "/")]
    assert not hidden or destination.startswith("/usr/local/"), "COPY to %s: the host's %s is there" % (destination, hidden)
    excluded = dockerignore()

    def ignore(directory: str, names: "list[str]") -> "list[str]":
        relative = Path(directory).relative_to(REPO)
        return [name for name in names if any(pattern.fullmatch(str(relative / name)) for pattern in excluded)]

    target = in_image(image, destination)
    if source.is_dir():
        shutil.copytree(source, target, ignore=ignore, dirs_exist_ok=True)
    else:
        if destination.endswith("/") or into:
            target = target / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


class Image:
    """What examples/Dockerfile builds: its instructions, and `build`, which carries them out over the
    host's directories (standing in for the base image's) into a directory that runc runs.

    Every instruction must be one the emulation understands, so that the emulation cannot silently
    drift from the Dockerfile.
    """

    def __init__(self, path: Path) -> None:
        self.base = None
        self.steps: "list[tuple[str, object]]" = []  # COPY, RUN, ENV and WORKDIR, in order, for `build`
        self.env: "dict[str, str]" = {}
        self.workdir = "/"
        self.entrypoint = self.cmd = self.stopsignal = None
        for keyword, arguments in parse_dockerfile(path.read_text()):
            if keyword == "FROM":
                assert self.base is None, "one stage only"
                self.base = arguments
            elif keyword == "COPY":
                *sources, destination = shlex.split(arguments)
                assert sources and not sources[0].startswith("--"), arguments
                for source in sources:
                    assert (REPO / source).exists(), "COPY of %s: not in the build context" % source
                self.steps.append((keyword, ([REPO / source for source in sources], destination)))
            elif keyword == "RUN":
                assert not arguments.startswith("["), "RUN in the shell form only: %s" % arguments
                self.steps.append((keyword, arguments))
            elif keyword == "ENV":
                env = {}
                for item in shlex.split(arguments):
                    name, equals, value = item.partition("=")
                    assert equals, "ENV NAME=VALUE only: %s" % arguments
                    env[name] = value
                self.env.update(env)
                self.steps.append((keyword, env))
            elif keyword == "WORKDIR":
                self.workdir = arguments
                self.steps.append((keyword, arguments))
            elif keyword == "ENTRYPOINT":
                self.entrypoint = json.loads(arguments)  # the exec form: a JSON array
            elif keyword == "CMD":
                self.cmd = json.loads(arguments)
            elif keyword == "STOPSIGNAL":
                self.stopsignal = arguments
            else:
                raise AssertionError("an instruction the emulation does not know: %s" % keyword)

    def stop_signal(self) -> str:
        return (self.stopsignal or "SIGTERM").upper().replace("SIG", "", 1)

    def build(self, image: Path, scratch: Path) -> None:
        """Build the image's own files into `image` (see `in_image`), as a builder does: COPY copies
        from the build context (the repository's root, less .dockerignore's), WORKDIR makes its
        directory, and RUN runs its script with /bin/sh under runc, as root, without a network, in a
        container of the image (writable), the ENV and WORKDIR so far in force."""
        env, workdir = {}, "/"
        for number, (keyword, argument) in enumerate(self.steps):
            if keyword == "COPY":
                sources, destination = argument
                for source in sources:
                    copy_from_context(source, image, destination, into=len(sources) > 1)
            elif keyword == "ENV":
                env.update(argument)
            elif keyword == "WORKDIR":
                workdir = argument
                in_image(image, workdir).mkdir(parents=True, exist_ok=True)
            else:
                step = Container(scratch / ("run%d" % number), "build", image)
                step.config["root"]["readonly"] = False  # the layer being built
                step.config["mounts"] = [mount for mount in step.config["mounts"]
                                         if mount["destination"] not in ("/tmp", "/usr/local")]
                step.bind(in_image(image, "/usr/local"), "/usr/local", readonly=False)
                for name, value in env.items():
                    step.setenv(name, value)
                try:
                    step.run(["/bin/sh", "-c", argument], cwd=workdir)
                    code = step.wait()
                    assert code == 0, "RUN %s: exit %d\n%s%s" % (argument, code, step.output(), step.stderr)
                finally:
                    step.remove()

    def container(self, container, image: Path) -> Container:
        """A new container (the `container` fixture's) of the image built in `image`, with its ENV."""
        ctr = container(image)
        for name, value in self.env.items():
            ctr.setenv(name, value)
        return ctr


@pytest.fixture(scope="module")
def image() -> Image:
    return Image(EXAMPLES / "Dockerfile")


@pytest.fixture(scope="module")
def built(image, runc_works, tmp_path_factory) -> Path:
    """The image examples/Dockerfile builds (see `in_image`), built once for the module."""
    scratch = tmp_path_factory.mktemp("image")
    image.build(scratch / "image", scratch)
    return scratch / "image"


def test_dockerfile(image):
    """The Dockerfile has what the README promises: a Python slim base, pyinit as ENTRYPOINT."""
    assert re.fullmatch(r"python:[\w.]+-slim(-\w+)?", image.base), image.base
    assert image.entrypoint == ["pyinit", "--"]
    assert image.cmd == ["python3", "graceful_service.py"]
    assert float(image.env["PYINIT_GRACE"]) < 10  # docker stop's default grace period


def test_dockerfile_installs_pyinit_as_pip_would(container, built):
    """The build, without pip or a network, puts the package where pip would (the image's
    interpreter's purelib, from which it imports), compiled there for that interpreter and none
    other (no bytecode of the build context's), and the `pyinit` command at /usr/local/bin."""
    ctr = container(built)
    ctr.run(["python3", "-c", "import sys, sysconfig, pyinit\n"
             "print(sysconfig.get_path('purelib'), sys.implementation.cache_tag, pyinit.__file__)"])
    assert ctr.wait() == 0, ctr.stderr
    purelib, tag, imported = ctr.output().split()
    package = Path(purelib) / "pyinit"
    assert imported == str(package / "__init__.py")
    installed = in_image(built, str(package))

    def sources(top: Path) -> "list[Path]":
        return sorted(path.relative_to(top) for path in top.rglob("*")
                      if path.is_file() and "__pycache__" not in path.parts)

    assert sources(installed) == sources(REPO / "pyinit")
    compiled = sorted(path.parent / "__pycache__" / ("%s.%s.pyc" % (path.stem, tag))
                      for path in sources(installed) if path.suffix == ".py")
    assert sorted(path.relative_to(installed) for path in installed.rglob("*.pyc")) == compiled
    script = in_image(built, "/usr/local/bin/pyinit")
    assert script.read_bytes() == (REPO / "bin" / "pyinit").read_bytes()
    assert os.access(script, os.X_OK)


def test_dockerfile_entrypoint_runs_under_runc(container, image, built):
    """The image's ENTRYPOINT + CMD, exactly, as PID 1 under runc; `docker stop` stops it with 0."""
    ctr = image.container(container, built)
    ctr.run(image.entrypoint + image.cmd, cwd=image.workdir)
    assert ctr.out.next().startswith("serving"), ctr.stderr
    cmdline = ctr.exec("cat", "/proc/1/cmdline").split("\0")
    assert cmdline == ["python3", "/usr/local/bin/pyinit", "--", *image.cmd, ""]  # its `#!/usr/bin/env python3`
    assert [row["ppid"] for row in ctr.ps() if row["args"] == " ".join(image.cmd)] == [1]
    ctr.kill(image.stop_signal())
    assert ctr.out.next().startswith("stopping"), ctr.stderr
    assert ctr.wait() == 0


# --- The examples' YAML ---------------------------------------------------------------------------


def load_yaml(path: Path):
    """The document at `path`, read by PyYAML (a test dependency) with the safe loader: plain data only."""
    with open(path) as file:
        return yaml.safe_load(file)


def duration(text) -> float:
    """A Compose duration (`10s`, `1m30s`, `1.5s`) in seconds."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?", str(text))
    assert parts and text, "not a Compose duration: %r" % text
    hours, minutes, seconds = (float(part or 0) for part in parts.groups())
    return hours * 3600 + minutes * 60 + seconds


# --- examples/docker-compose.yml, under runc ----------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    document = load_yaml(EXAMPLES / "docker-compose.yml")
    assert set(document) == {"services"}, document.keys()
    for name, service in document["services"].items():
        build = service["build"]
        assert (EXAMPLES / build["context"]).resolve() == REPO, (name, build)
        assert (REPO / build["dockerfile"]) == EXAMPLES / "Dockerfile", (name, build)
        assert "init" not in service and "entrypoint" not in service, "pyinit is the image's ENTRYPOINT"
        assert all(isinstance(value, str) for value in service.get("environment", {}).values()), service
    return document["services"]


def compose_container(container, image: Image, built: Path, service: dict) -> "tuple[Container, list[str]]":
    """A container of the example image as a Compose service sets it up, and its command line."""
    ctr = image.container(container, built)
    for name, value in service.get("environment", {}).items():
        ctr.setenv(name, value)
    return ctr, image.entrypoint + service.get("command", image.cmd)


def test_compose_app_stops_within_its_grace_period(container, image, built, compose):
    """`docker compose stop app`: its stop_signal, and exit 0 well within stop_grace_period,
    which is longer than the PYINIT_GRACE in force."""
    service = compose["app"]
    period = duration(service.get("stop_grace_period", "10s"))
    env = {**image.env, **service.get("environment", {})}
    assert float(env["PYINIT_GRACE"]) < period
    ctr, command = compose_container(container, image, built, service)
    ctr.run(command, cwd=image.workdir)
    assert ctr.out.next().startswith("serving"), ctr.stderr
    started = time.monotonic()
    ctr.kill(service.get("stop_signal", "SIGTERM").replace("SIG", "", 1))
    assert ctr.out.next().startswith("stopping"), ctr.stderr
    assert ctr.wait() == 0
    assert time.monotonic() - started < period
    assert "SIGTERM" in ctr.stderr  # PYINIT_VERBOSITY=2 from the service's environment is in force


def test_compose_zombies_service(container, image, built, compose):
    """`docker compose run --rm zombies`: 50 orphans made, none left a zombie, exit 0."""
    ctr, command = compose_container(container, image, built, compose["zombies"])
    ctr.run(command, cwd=image.workdir)
    assert ctr.wait() == 0, ctr.stderr
    lines = ctr.output().splitlines()
    assert lines[0] == "made 50 orphans", lines
    assert lines[1].split() == ["PID", "STAT", "COMMAND"], lines
    rows = [line.split(None, 2) for line in lines[2:]]
    assert [row for row in rows if row[1].startswith("Z")] == []
    assert [row[0] for row in rows][:1] == ["1"] and len(rows) == 3, rows  # pyinit, sh, ps: nothing else


# --- examples/kubernetes/pod.yaml, under runc ---------------------------------------------------


def test_kubernetes_pod(container, image, built, tmp_path):
    """The Pod's PYINIT_* timers fit in terminationGracePeriodSeconds; stopped as the kubelet
    stops it (SIGTERM to PID 1), the service gets the SIGTERM after the term delay, the
    container exits 0 within the period, and the exit report is the termination message."""
    pod = load_yaml(EXAMPLES / "kubernetes" / "pod.yaml")
    assert (pod["apiVersion"], pod["kind"]) == ("v1", "Pod")
    period = pod["spec"]["terminationGracePeriodSeconds"]
    assert isinstance(period, int)
    (spec,) = pod["spec"]["containers"]
    assert spec["image"].split(":")[0] == "pyinit-example"
    assert "command" not in spec and "args" not in spec  # the image's ENTRYPOINT and CMD
    env = {}
    for item in spec["env"]:
        assert set(item) == {"name", "value"} and isinstance(item["value"], str), item  # Kubernetes wants strings
        env[item["name"]] = item["value"]
    delay, grace = float(env["PYINIT_TERM_DELAY"]), float(env["PYINIT_GRACE"])
    assert delay + grace + float(env.get("PYINIT_DRAIN", 0)) < period
    assert env["PYINIT_EXIT_REPORT"] == spec.get("terminationMessagePath", "/dev/termination-log")

    ctr = image.container(container, built)
    for name, value in env.items():
        ctr.setenv(name, value)
    message = tmp_path / "termination-log"  # the kubelet bind-mounts a file of its own there
    message.touch()
    ctr.bind(message, env["PYINIT_EXIT_REPORT"], readonly=False)
    ctr.run(image.entrypoint + image.cmd, cwd=image.workdir)
    assert ctr.out.next().startswith("serving"), ctr.stderr
    started = time.monotonic()
    ctr.kill("TERM")
    assert ctr.out.next(timeout=delay + TIMEOUT).startswith("stopping"), ctr.stderr
    assert time.monotonic() - started >= delay * 0.9  # held for the term delay first
    assert ctr.wait() == 0
    assert time.monotonic() - started < period
    report = json.loads(message.read_text())
    assert (report["pid"], report["exit_code"], report["grace"]["seconds"]) == (1, 0, grace)
    timeline = report["timeline"]
    assert timeline["child_exit"] - timeline["first_terminating_signal"] >= delay * 0.9


# --- docs/containers.md, beside the examples -----------------------------------------------------


def fenced(path: Path, language: str) -> "list[str]":
    """The fenced code blocks of `language` in the Markdown file at `path`."""
    return re.findall(r"^```%s\n(.*?)^```" % language, path.read_text(), re.M | re.S)


def test_containers_md_agrees_with_the_examples(image, compose):
    """docs/containers.md's Dockerfile, Compose and Pod snippets, and its advice on picking `--grace`, say
    what examples/Dockerfile, docker-compose.yml and kubernetes/pod.yaml do: the same install steps, the
    same PYINIT_GRACE under the same engine periods, the same terminationGracePeriodSeconds, term delay
    and grace."""
    doc = REPO / "docs" / "containers.md"
    (dockerfile,) = fenced(doc, "dockerfile")
    snippet = parse_dockerfile(dockerfile)
    example = parse_dockerfile((EXAMPLES / "Dockerfile").read_text())

    def installs(instructions):  # the steps that put pyinit in the image
        return [(keyword, arguments) for keyword, arguments in instructions
                if keyword in ("COPY", "RUN") and "pyinit" in arguments]

    assert installs(example) and installs(snippet) == installs(example)
    assert [item for item in snippet if item[0] == "ENTRYPOINT"] == [item for item in example if item[0] == "ENTRYPOINT"]
    assert ("ENV", "PYINIT_GRACE=%s" % image.env["PYINIT_GRACE"]) in snippet

    (compose_doc,) = [yaml.safe_load(block)["services"]["app"] for block in fenced(doc, "yaml")
                      if block.startswith("services:")]
    assert compose_doc["environment"]["PYINIT_GRACE"] == compose["app"]["environment"]["PYINIT_GRACE"]
    assert duration(compose_doc["stop_grace_period"]) == duration(compose["app"]["stop_grace_period"])

    (pod_doc,) = [yaml.safe_load(block) for block in fenced(doc, "yaml") if block.startswith("spec:")]
    pod = load_yaml(EXAMPLES / "kubernetes" / "pod.yaml")
    period = pod["spec"]["terminationGracePeriodSeconds"]
    assert pod_doc["spec"]["terminationGracePeriodSeconds"] == period
    env = {item["name"]: item["value"] for item in pod["spec"]["containers"][0]["env"]}
    env_doc = {item["name"]: item["value"] for item in pod_doc["spec"]["containers"][0]["env"]}
    for name in ("PYINIT_TERM_DELAY", "PYINIT_GRACE", "PYINIT_EXIT_REPORT"):
        assert env_doc[name] == env[name], name

    prose = " ".join(doc.read_text().split())
    advice = re.search(r"`--grace (\d+)` under the default `docker stop`; `--term-delay (\d+) --grace (\d+)` in a Pod "
                       r"with the default (\d+) s", prose)
    assert advice, "docs/containers.md no longer gives its two examples of picking --grace"
    assert advice.group(1) == image.env["PYINIT_GRACE"]
    assert (advice.group(2), advice.group(3), int(advice.group(4))) == \
        (env["PYINIT_TERM_DELAY"], env["PYINIT_GRACE"], period)


# --- examples/ci/github-actions.yml, on the host ------------------------------------------------


def run_step(script: str, project: Path, **extra: str) -> subprocess.CompletedProcess:
    """Run a workflow step's `run:` script as GitHub's runner does (bash -eo pipefail), in `project`.

    `python3` is the test's interpreter (its directory first on PATH), and the
    source tree is on PYTHONPATH, in place of the workflow's `pip install`.
    """
    assert os.access(os.path.join(os.path.dirname(sys.executable), "python3"), os.X_OK), sys.executable
    env = clean_env(**extra)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "/usr/bin:/bin")
    try:
        return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=project,
                              env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as timeout:
        raise AssertionError("the step %r did not finish: %s" % (script, timeout)) from None


@pytest.fixture
def project(tmp_path) -> Path:
    """A user's project: one test module, which leaks a process."""
    directory = tmp_path / "project"
    directory.mkdir()
    shutil.copy(PROGRAMS / "container_leaky_suite.py", directory / "test_leaky.py")
    return directory


@pytest.fixture(scope="module")
def launcher_step() -> str:
    workflow = load_yaml(EXAMPLES / "ci" / "github-actions.yml")
    # PyYAML reads YAML 1.1, where the key `on` is the boolean true; GitHub reads it as "on".
    assert set(workflow) >= {"name", "jobs"} and ("on" in workflow or True in workflow), workflow.keys()
    (job,) = workflow["jobs"].values()
    assert "runs-on" in job
    steps = [step for step in job["steps"] if "-m pyinit --unshare" in step.get("run", "")]
    assert len(steps) == 1, job["steps"]
    script = steps[0]["run"]
    assert shlex.split(script)[:6] == ["python3", "-m", "pyinit", "--unshare", "--user", "--"], script
    return script


def test_ci_workflow_leaves_no_process_behind(launcher_step, project):
    """The workflow's launcher step, run as written: the suite passes, and what it leaked is gone.

    The control run, the same suite without the launcher, shows that the leak
    is real (and that the check would see it).
    """
    marker = uuid.uuid4().hex
    try:
        result = run_step(launcher_step, project, LEAK_MARKER=marker)
        assert result.returncode == 0, result
        assert "1 passed" in result.stdout
        assert leaked(marker) == []
        command = shlex.join(shlex.split(launcher_step)[6:])  # the suite alone: python3 -m pytest -q
        control = run_step(command, project, LEAK_MARKER=marker)
        assert control.returncode == 0, control
        assert len(leaked(marker)) == 1
    finally:
        for pid in leaked(marker):
            os.kill(pid, signal.SIGKILL)


def test_ci_workflow_fails_when_the_suite_fails(launcher_step, project):
    """A failing suite fails the step: the launcher exits with pytest's status, 1."""
    marker = uuid.uuid4().hex
    try:
        result = run_step(launcher_step, project, LEAK_MARKER=marker, SUITE_FAILS="1")
        assert result.returncode == 1, result
        assert "1 failed" in result.stdout
        assert leaked(marker) == []
    finally:
        for pid in leaked(marker):
            os.kill(pid, signal.SIGKILL)
