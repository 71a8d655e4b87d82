"""Real container engines for tests/test_engines.py: podman (crun) and a private dockerd, set up for this host.

Nothing here is mocked and nothing is done by hand beforehand:

- The base image. No image registry is reachable, so the image that examples/Dockerfile names in its
  FROM (python:3.12-slim) is made here, by issue 28's recipe: `debootstrap --variant=minbase
  --include=python3,procps` of Debian bookworm from the mirror apt already uses, imported (`podman
  import`, `docker import`) under that name, so that the Dockerfile is built exactly as written and
  never pulled. Like the real python:3.12-slim it is a Debian with a python3 on PATH; unlike it, its
  Python is Debian's (3.11), it has ps, and it has no pip (the Dockerfile needs none). The root
  filesystem is made once per machine and kept as a tarball in CACHE (PYINIT_TEST_CACHE, default
  /var/cache/pyinit-tests), named after its recipe, so that a changed recipe makes a new one; a
  fresh machine spends a minute or two on it.
- The host's quirks, handled where they are met: a root without CAP_SYS_RESOURCE cannot raise an
  rlimit, so podman gets a containers.conf (CONTAINERS_CONF) whose default_ulimits are at or below
  its own; crun refuses a hybrid cgroup host whose hugetlb controller is on cgroup2, so the v1
  hugetlb hierarchy is mounted when it is missing (and left mounted: other runs may use it); no
  systemd, so podman uses cgroupfs and a file for its events, and dockerd is started here.
- Nothing is left behind: podman runs with private storage and run roots, temporary directory and
  network configuration, reset and removed at the end; dockerd is a private one (its own data root,
  exec root, pidfile and socket, no iptables, no bridge), stopped by its PID at the end, its
  directories removed. Every container gets a cgroup parent of the session's own, removed at the
  end in every hierarchy. Containers and builds run with `--network none` (the example image needs
  no network to build: issue 28's held-out build has none), so no bridge or firewall rule is made.
"""

import contextlib
import fcntl
import glob
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

from support import REPO, TIMEOUT

CACHE = Path(os.environ.get("PYINIT_TEST_CACHE", "/var/cache/pyinit-tests"))
SUITE = "bookworm"
# What the stand-in for python:3.12-slim has (issue 28's recipe): a python3, and ps.
PACKAGES = ["python3", "procps"]
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BUILD_TIMEOUT = 600.0


class EngineUnavailable(Exception):
    """The engine cannot be used on this host; the message says why."""


def run(argv, *, timeout: float = TIMEOUT, check: bool = True, **options) -> subprocess.CompletedProcess:
    """Run a set-up command; its output as text. `check`: fail with its output when it fails."""
    options.setdefault("stdin", subprocess.DEVNULL)
    options.setdefault("capture_output", True)
    done = subprocess.run([str(arg) for arg in argv], text=True, timeout=timeout, **options)
    if check and done.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s%s" % (" ".join(map(str, argv)), done.returncode,
                                                       done.stdout or "", done.stderr or ""))
    return done


# --- The base image ------------------------------------------------------------------------------


def base_image_name() -> str:
    """The image examples/Dockerfile builds FROM, fully qualified as the engines store it."""
    (line,) = [line for line in (REPO / "examples" / "Dockerfile").read_text().splitlines()
               if line.startswith("FROM ")]
    name = line.split()[1]
    if "/" not in name:
        name = "library/" + name
    if "." not in name.split("/")[0]:
        name = "docker.io/" + name
    return name


def debian_mirror() -> str:
    """The URI of the Debian archive that apt uses for SUITE (its sources, one-line or deb822)."""
    stanzas = []
    for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*"))]:
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        if path.endswith(".sources"):
            for block in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", block, re.M))
                if fields.get("Types", "").split()[:1] == ["deb"] or "deb" in fields.get("Types", "").split():
                    for uri in fields.get("URIs", "").split():
                        stanzas.append((uri, fields.get("Suites", "").split(), fields.get("Components", "").split()))
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
                if len(words) >= 4 and words[0] == "deb":
                    stanzas.append((words[1], [words[2]], words[3:]))
    for uri, suites, components in stanzas:
        if SUITE in suites and "main" in components:
            return uri
    raise EngineUnavailable("apt has no source for Debian %s main (read /etc/apt/sources.list*)" % SUITE)


def unmount_under(directory: Path) -> None:
    """Unmount whatever is mounted at or below `directory`, deepest first."""
    prefix = str(directory).rstrip("/")
    with open("/proc/self/mountinfo") as mountinfo:
        points = [line.split()[4] for line in mountinfo]
    for point in sorted({p for p in points if p == prefix or p.startswith(prefix + "/")}, key=len, reverse=True):
        subprocess.run(["umount", "--lazy", point], capture_output=True)


def base_rootfs() -> Path:
    """The stand-in's root filesystem as a tarball in CACHE, made with debootstrap when it is not there yet.

    Concurrent sessions wait for each other on a lock; a half-made tree or tarball is never kept.
    """
    recipe = json.dumps([SUITE, "minbase", PACKAGES])
    tarball = CACHE / ("rootfs-%s-%s.tar" % (SUITE, hashlib.sha256(recipe.encode()).hexdigest()[:12]))
    if tarball.exists():
        return tarball
    if shutil.which("debootstrap") is None:
        raise EngineUnavailable("debootstrap is not installed (Debian package debootstrap)")
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tarball.exists():
            return tarball
        tree = Path(tempfile.mkdtemp(prefix="rootfs-", dir=CACHE))
        try:
            run(["debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES), SUITE, tree,
                 debian_mirror()], timeout=BUILD_TIMEOUT)
            for leftover in [*tree.glob("var/cache/apt/archives/*.deb"), *tree.glob("var/lib/apt/lists/*_*")]:
                leftover.unlink()
            partial = tarball.with_suffix(".partial")
            run(["tar", "--numeric-owner", "-C", tree, "-cf", partial, "."], timeout=BUILD_TIMEOUT)
            partial.rename(tarball)
        finally:
            unmount_under(tree)  # debootstrap's /proc and /sys, if it failed half-way
            shutil.rmtree(tree, ignore_errors=True)
    return tarball


# --- Host set-up ----------------------------------------------------------------------------------


def ensure_hugetlb_v1() -> None:
    """On a hybrid cgroup host whose hugetlb controller is on cgroup2 only, mount its v1 hierarchy:
    crun (and runc) want every v1 controller the kernel has, and refuse to start a container otherwise."""
    if not os.path.isdir("/sys/fs/cgroup/unified"):
        return  # pure v2 (or pure v1): nothing to do
    with open("/proc/cgroups") as cgroups:
        known = {line.split()[0]: int(line.split()[1]) for line in cgroups if not line.startswith("#")}
    if "hugetlb" not in known or known["hugetlb"] != 0 or os.path.ismount("/sys/fs/cgroup/hugetlb"):
        return
    os.makedirs("/sys/fs/cgroup/hugetlb", exist_ok=True)
    done = run(["mount", "-t", "cgroup", "-o", "hugetlb", "cgroup", "/sys/fs/cgroup/hugetlb"], check=False)
    if done.returncode != 0:
        raise EngineUnavailable("the v1 hugetlb controller is not mounted and cannot be: %s" % done.stderr.strip())


class CgroupParent:
    """A cgroup parent of this session's own for every container, removed (with whatever empty
    cgroups the engines left in it) in every hierarchy at the end."""

    def __init__(self, name: str) -> None:
        self.path = "/" + name

    def directories(self) -> "list[str]":
        found = []
        for hierarchy in glob.glob("/sys/fs/cgroup/*"):
            candidate = hierarchy + self.path
            if os.path.isdir(candidate):
                found.append(candidate)
        return found

    def remove(self) -> "list[str]":
        """Remove the cgroups, deepest first; those that could not be removed (a process still in one)."""
        left = []
        for top in self.directories():
            for directory, _, _ in sorted(os.walk(top), key=lambda entry: len(entry[0]), reverse=True):
                try:
                    os.rmdir(directory)
                except OSError:
                    left.append(directory)
        return left


# --- The engines ----------------------------------------------------------------------------------


class Engine:
    """One container engine's command line, with the options and environment that make it private."""

    name = ""
    rm_options: "list[str]" = []  # what `rm -f` needs to kill at once

    def __init__(self, scratch: Path, cgroup: CgroupParent) -> None:
        self.scratch = scratch
        self.cgroup = cgroup
        self.argv: "list[str]" = []
        self.env = dict(os.environ)
        self.made: "list[str]" = []  # container names this session created, removed at the end

    def __call__(self, *args, timeout: float = TIMEOUT, check: bool = True, **options) -> subprocess.CompletedProcess:
        return run([*self.argv, *args], timeout=timeout, check=check, env=self.env, **options)

    def command(self, *args) -> "list[str]":
        """The full command line of `ENGINE ARGS...` (for pexpect and the like); run it with `self.env`."""
        return [*self.argv, *map(str, args)]

    def name_for(self, what: str) -> str:
        name = "pyinit-%s-%s" % (re.sub(r"[^a-z0-9]+", "-", what.lower()).strip("-")[:40], uuid.uuid4().hex[:8])
        self.made.append(name)
        return name

    def run_options(self) -> "list[str]":
        """Options every `run` of the suite gets: no network, the session's cgroup parent."""
        return ["--network", "none", "--cgroup-parent", self.cgroup.path]

    def build_options(self) -> "list[str]":
        """Options every build gets: no network (none is needed), and never a pull."""
        return ["--network", "none"]

    def import_rootfs(self, tarball: Path, image: str) -> None:
        self("import", "--change", "ENV PATH=" + PATH, "--change", "ENV LANG=C.UTF-8",
             "--change", 'CMD ["python3"]', tarball, image, timeout=BUILD_TIMEOUT)

    def build(self, context: Path, dockerfile: Path, tag: str) -> None:
        self("build", *self.build_options(), "-f", dockerfile, "-t", tag, context, timeout=BUILD_TIMEOUT)

    def exit_code(self, name: str) -> int:
        return int(self("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip())

    def running(self, name: str) -> bool:
        done = self("inspect", "-f", "{{.State.Running}}", name, check=False)
        return done.stdout.strip() == "true"

    def logs(self, name: str) -> str:
        done = self("logs", name, check=False)
        return done.stdout + done.stderr

    def remove(self, name: str) -> None:
        """`rm -f`: SIGKILL the container if it still runs, and remove it (gone already is fine)."""
        self("rm", "-f", *self.rm_options, name, check=False)

    def remove_all(self) -> None:
        for name in self.made:
            self.remove(name)

    def close(self) -> None:
        raise NotImplementedError


class Podman(Engine):
    name = "podman"
    rm_options = ["--time", "0"]  # podman's `rm -f` would first send SIGTERM and wait 10 s

    def __init__(self, scratch: Path, cgroup: CgroupParent) -> None:
        super().__init__(scratch, cgroup)
        if shutil.which("podman") is None:
            raise EngineUnavailable("podman is not installed (Debian packages podman crun)")
        for part in ("root", "runroot", "tmp", "networks"):
            (scratch / part).mkdir()
        # A root without CAP_SYS_RESOURCE cannot raise a hard limit: podman's defaults (nofile and
        # nproc 1048576) fail in crun's setrlimit. At or below the host's hard limits, and at most
        # 32768 processes (podman starts conmon, which starts crun, with that many).
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
        nofile = 1048576 if nofile == resource.RLIM_INFINITY else min(nofile, 1048576)
        nproc = 32768 if nproc == resource.RLIM_INFINITY else min(nproc, 32768)
        conf = scratch / "containers.conf"
        conf.write_text('[containers]\ndefault_ulimits = ["nofile=%d:%d", "nproc=%d:%d"]\n'
                        '[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\nruntime = "crun"\n'
                        % (nofile, nofile, nproc, nproc))
        self.env["CONTAINERS_CONF"] = str(conf)
        self.argv = ["podman", "--root", str(scratch / "root"), "--runroot", str(scratch / "runroot"),
                     "--tmpdir", str(scratch / "tmp"), "--network-config-dir", str(scratch / "networks"),
                     "--cgroup-manager", "cgroupfs", "--events-backend", "file", "--runtime", "crun"]

    def build_options(self) -> "list[str]":
        return [*super().build_options(), "--pull=never", "--cgroup-parent", self.cgroup.path]

    def close(self) -> None:
        self.remove_all()
        self("system", "reset", "--force", check=False, timeout=120)
        unmount_under(self.scratch)


class Docker(Engine):
    """A private dockerd of the session's own, and the docker command line that talks to it."""

    name = "docker"

    def __init__(self, scratch: Path, cgroup: CgroupParent) -> None:
        super().__init__(scratch, cgroup)
        dockerd = shutil.which("dockerd")
        # Debian's client, of the daemon's version, before another one earlier on PATH.
        client = "/usr/bin/docker" if os.access("/usr/bin/docker", os.X_OK) else shutil.which("docker")
        if dockerd is None or client is None:
            raise EngineUnavailable("docker is not installed (Debian package docker.io)")
        self.socket = scratch / "docker.sock"
        self.pidfile = scratch / "docker.pid"
        (scratch / "config").mkdir()
        self.env.update(DOCKER_HOST="unix://%s" % self.socket, DOCKER_CONFIG=str(scratch / "config"),
                        DOCKER_BUILDKIT="0", COMPOSE_DOCKER_CLI_BUILD="0")
        self.argv = [client]
        self.log = open(scratch / "dockerd.log", "wb")
        # No systemd to start it; no iptables or bridge to touch the host's network.
        self.daemon = subprocess.Popen(
            [dockerd, "--data-root", scratch / "data", "--exec-root", scratch / "exec", "--pidfile", self.pidfile,
             "--host", "unix://%s" % self.socket, "--iptables=false", "--ip-masq=false", "--bridge=none",
             "--cgroup-parent", cgroup.path, "--config-file", scratch / "daemon.json"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        (scratch / "daemon.json").write_text("{}\n")
        try:
            self._wait_until_up()
        except EngineUnavailable:
            self.close()
            raise

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.daemon.poll() is not None:
                raise EngineUnavailable("dockerd cannot start here (exit %d): %s" % (self.daemon.returncode, self.tail()))
            if self.socket.exists() and self("version", check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise EngineUnavailable("dockerd did not answer within 60 s: %s" % self.tail())

    def tail(self) -> str:
        lines = (self.scratch / "dockerd.log").read_text(errors="replace").strip().splitlines()
        return " | ".join(lines[-3:])

    def close(self) -> None:
        if self.daemon.poll() is None:
            self.remove_all()
            self.daemon.send_signal(signal.SIGTERM)  # by its PID; it stops its containerd too
            try:
                self.daemon.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.daemon.pid, signal.SIGKILL)  # its own session: dockerd and its containerd
                self.daemon.wait(TIMEOUT)
        self.log.close()
        unmount_under(self.scratch)


ENGINES = {"podman": Podman, "docker": Docker}

# What the engines make outside their private roots whatever they are told: empty state directories
# (crun's, dockerd's plugins, containerd's shim sockets, podman's network directory) and the image
# library's blob cache. Removed at the end when the session made them (and, directories, only when empty).
HOST_LEFTOVERS = ["/var/lib/containers/cache/blob-info-cache-v1.boltdb", "/var/lib/containers/cache",
                  "/var/lib/containers", "/run/containers/networks", "/run/containers", "/run/crun",
                  "/run/docker/plugins", "/run/docker", "/run/containerd/s", "/run/containerd"]


def remove_leftovers(existed: "set[str]") -> None:
    for path in HOST_LEFTOVERS:
        if path not in existed:
            with contextlib.suppress(OSError):
                os.rmdir(path) if os.path.isdir(path) else os.unlink(path)


@contextlib.contextmanager
def engine_session(name: str):
    """An engine, private to this session, with the base image imported; torn down at the end."""
    ensure_hugetlb_v1()
    tarball = base_rootfs()
    scratch = Path(tempfile.mkdtemp(prefix="pyinit-%s-" % name, dir="/tmp"))  # short: dockerd's socket path
    cgroup = CgroupParent("pyinit-tests-%s-%d" % (name, os.getpid()))
    engine = None
    existed = {path for path in HOST_LEFTOVERS if os.path.lexists(path)}
    try:
        engine = ENGINES[name](scratch, cgroup)
        engine.import_rootfs(tarball, base_image_name())
        yield engine
    finally:
        if engine is not None:
            engine.close()
        remove_leftovers(existed)
        shutil.rmtree(scratch, ignore_errors=True)
        deadline = time.monotonic() + 10
        while cgroup.remove():
            if time.monotonic() > deadline:
                raise AssertionError("cgroups left behind: %s" % cgroup.remove())
            time.sleep(0.2)


# --- Running several containers at once ---------------------------------------------------------------


def together(function, items) -> list:
    """function(item) for each item, in threads of their own; the results in order (first exception raised)."""
    results: list = [None] * len(items)
    errors: list = []

    def one(index, item):
        try:
            results[index] = function(item)
        except BaseException as error:  # noqa: BLE001 (raised again below, in the caller's thread)
            errors.append(error)

    threads = [threading.Thread(target=one, args=(index, item)) for index, item in enumerate(items)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


# --- The table of what each init did ------------------------------------------------------------------

RESULTS: "dict[str, dict[tuple[str, str], str]]" = {}  # scenario -> {(engine, init): what happened}


def record(scenario: str, engine: str, init: str, what: str) -> None:
    """Note what `init` did in `scenario` under `engine`, for the table; printed for the test's output too."""
    RESULTS.setdefault(scenario, {})[engine, init] = what
    print("%s | %s | %s: %s" % (engine, scenario, init, what))


def table(inits: "list[str]") -> str:
    """RESULTS as a Markdown table: a row per scenario and engine, a column per init."""
    lines = ["| scenario | engine | %s |" % " | ".join(inits), "|---|---|%s" % ("---|" * len(inits))]
    for scenario, cells in RESULTS.items():
        for engine in sorted({engine for engine, _ in cells}, key=list(ENGINES).index):
            lines.append("| %s | %s | %s |" % (scenario, engine,
                                               " | ".join(cells.get((engine, init), "") for init in inits)))
    return "\n".join(lines)
