"""Getting back in (issue 19): `--unshare --name NAME`, `--list [--json]`, `--enter NAME|PID -- COMMAND`.

Real namespaces, looked at from the host: a launcher runs in the background
under a name unique to the test, and `pyinit --list` and `pyinit --enter`
are run against it as a user would. Each test runs as root and, where the
machine allows, as uid 65534 (a user namespace; Debian's python3, a
world-readable copy of the package, and an XDG_RUNTIME_DIR of its own), as
tests/test_launcher.py does. Root's names are in /run/pyinit, shared with
whatever else runs on the machine: the tests only look at their own names,
and remove what a SIGKILLed launcher left.
"""

import itertools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from support import (AS_NOBODY, BASH, HOLDING_1100_DESCRIPTORS, INNER_PROMPT, NOBODY, OUTER_PROMPT, PROGRAMS, PYINIT,
                     REPO, SYSTEM_PYTHON, TIMEOUT, assert_no_traceback, children, clean_env, descendants, innermost_pid,
                     pyinit_lines, stat, state, status, wait_for)

WITNESS = ["sh", "-c", "echo COMMAND RAN"]  # after a refused command line: if it ran, stdout says so
SLEEPER = ["sh", "-c", "echo ready; exec sleep 1000"]
ROOT_REGISTRY = "/run/pyinit"
NAMESPACE_KINDS = ("user", "mnt", "pid", "uts", "ipc", "net", "cgroup")
_numbers = itertools.count()


# --- who runs pyinit ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nobody_runtime_dir():
    """An XDG_RUNTIME_DIR for uid 65534: its own, mode 0700, as systemd makes /run/user/UID."""
    path = tempfile.mkdtemp(prefix="pyinit-xdg-", dir="/tmp")
    os.chown(path, NOBODY, NOBODY)
    os.chmod(path, 0o700)
    yield path
    shutil.rmtree(path, ignore_errors=True)


class Who:
    """pyinit as root (the test's interpreter), or as uid 65534 (a user namespace)."""

    def __init__(self, who: str, request) -> None:
        self.who = who
        if who == "root":
            self.python, self.wrapper, self.env, self.cwd = sys.executable, [], clean_env(), str(REPO)
            self.registry = ROOT_REGISTRY
            return
        if shutil.which("setpriv") is None or not os.access(SYSTEM_PYTHON, os.X_OK):
            pytest.skip("setpriv and %s are needed to run pyinit as a user" % SYSTEM_PYTHON)
        top, env = request.getfixturevalue("world_readable_package")
        runtime = request.getfixturevalue("nobody_runtime_dir")
        self.python, self.wrapper, self.cwd = SYSTEM_PYTHON, AS_NOBODY, top
        # PATH without the test interpreter's directories, which that user may not search (exec would say EACCES)
        self.env = dict(env, XDG_RUNTIME_DIR=runtime, PATH="/usr/local/bin:/usr/bin:/bin")
        self.registry = os.path.join(runtime, "pyinit")

    @property
    def pyinit(self) -> "list[str]":
        return [self.python, "-m", "pyinit"]

    def run(self, argv, *, env=None, timeout=TIMEOUT) -> subprocess.CompletedProcess:
        """`pyinit ARGV` to its end, stdout and stderr captured as text; never a traceback."""
        result = finish([*self.wrapper, *self.pyinit, *argv], env=self.env if env is None else env, cwd=self.cwd,
                        timeout=timeout)
        assert_no_traceback(result.stderr)
        return result

    def start(self, start, argv, env=None):
        """`pyinit ARGV` in the background through the `start` fixture (killed at teardown)."""
        return start(argv, pyinit=self.pyinit, wrapper=self.wrapper, env=self.env if env is None else env,
                     cwd=self.cwd)

    def program(self, name: str, *args: object) -> "list[str]":
        return [self.python, "-I", "-S", str(PROGRAMS / (name + ".py")), *map(str, args)]

    def listed(self) -> "dict[str, dict]":
        """`pyinit --list --json`, by name."""
        result = self.run(["--list", "--json"])
        assert (result.returncode, result.stderr) == (0, ""), result
        return {entry["name"]: entry for entry in json.loads(result.stdout)}


@pytest.fixture(params=["root", "nobody"])
def who(request) -> Who:
    return Who(request.param, request)


@pytest.fixture
def names(who):
    """names(label) -> a name no other test uses; whatever entry is left of it is removed at the end."""
    given = []

    def new(label: str) -> str:
        name = "t%d-%d-%s" % (os.getpid(), next(_numbers), label)
        given.append(name)
        return name

    yield new
    for name in given:
        try:
            os.unlink(os.path.join(who.registry, name))
        except FileNotFoundError:
            pass


# --- helpers of this module ----------------------------------------------------------------------


def finish(argv, *, env, cwd, timeout=TIMEOUT) -> subprocess.CompletedProcess:
    """Run `argv` to the end; on timeout kill its tree and fail."""
    proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for pid in [*reversed(descendants(proc.pid)), proc.pid]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
        raise AssertionError("%s did not exit within %.0fs; stdout: %r; stderr: %r" % (argv, timeout, stdout, stderr))
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def one_error_line(result) -> str:
    """125, nothing on stdout, exactly one `pyinit: ...` line on stderr; return it."""
    assert result.returncode == 125, result
    assert "COMMAND RAN" not in result.stdout, result
    lines = pyinit_lines(result.stderr)
    assert len(lines) == 1, result
    return lines[0]


def registered_pid(who: Who, name: str) -> "int | None":
    """The PID 1 that the entry of `name` holds (0 while the launcher forks it); None without an entry."""
    try:
        with open(os.path.join(who.registry, name), "rb") as entry:
            text = entry.read()
    except FileNotFoundError:
        return None
    found = re.search(rb"^pid (\d+)$", text, re.M)
    return int(found.group(1)) if found else None


def launch_named(who: Who, start, name: str, command=SLEEPER, options=()):
    """A launcher running `command` (which prints `ready`) under `name`, once registered; `.pid1` is its PID 1."""
    inside = who.start(start, ["--unshare", *options, "--name", name, "--", *command])
    assert inside.out.next() == "ready"
    inside.pid1 = wait_for(lambda: children(inside.pid), "the launcher to fork PID 1")[0]
    wait_for(lambda: registered_pid(who, name) == inside.pid1, "%s to be registered" % name)
    return inside


def ps_table(text: str) -> "list[tuple[int, int, str]]":
    """`ps -eo pid=,ppid=,args=` output -> [(pid, ppid, args)], sorted."""
    return sorted((int(pid), int(ppid), args) for pid, ppid, args in (line.split(None, 2) for line in text.splitlines()))


def gone(pid: int, start_time: int) -> bool:
    """Whether the process (pid, start time) has ended and been reaped (a zombie has not been)."""
    info = stat(pid)
    return info is None or info.start_time != start_time


# --- --name and --list ---------------------------------------------------------------------------


def test_a_name_is_listed_while_its_namespace_runs_and_removed_at_its_end(who, start, names):
    name = names("list")
    script = "echo ready; read line; exit 5"
    inside = launch_named(who, start, name, ["sh", "-c", script])
    entry_file = os.path.join(who.registry, name)
    assert os.stat(entry_file).st_uid == (0 if who.who == "root" else NOBODY)

    table = who.run(["--list"])
    assert (table.returncode, table.stderr) == (0, "")
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["NAME", "PID", "AGE", "PROCS", "COMMAND"]
    (row,) = [row for row in rows if row.split()[0] == name]
    _, pid, age, procs, command = row.split(None, 4)
    assert (int(pid), procs, command) == (inside.pid1, "2", "sh -c " + script)  # PID 1 and sh
    assert re.fullmatch(r"\d\d:\d\d", age), age

    entry = who.listed()[name]
    assert entry == {"name": name, "pid": inside.pid1, "launcher": inside.pid, "age": entry["age"], "procs": 2,
                     "command": ["sh", "-c", script]}
    assert 0 <= entry["age"] < TIMEOUT

    inside.close_stdin()
    assert inside.wait() == 5
    assert inside.stderr == ""
    assert not os.path.exists(entry_file)
    assert name not in who.listed()
    assert name not in who.run(["--list"]).stdout


def test_pid_1_keeps_no_descriptor_of_the_registration(who, start, names):
    """The launcher holds the host's /proc and the name directory open; PID 1, forked from it, closes both
    (a process inside could otherwise reach the host's process table through /proc/1/fd)."""
    name = names("fds")
    inside = launch_named(who, start, name)
    directory = "/proc/%d/fd" % inside.pid1
    targets = [os.readlink(os.path.join(directory, fd)) for fd in os.listdir(directory)]
    assert not [target for target in targets if target in ("/proc", who.registry)], targets


def test_the_name_is_removed_whatever_way_the_launcher_ends(who, start, names):
    """The command not found (127), the launcher dying of a signal it relayed, and as root namespaces
    refused (125, no CAP_SYS_ADMIN): no entry is left. (SIGKILL leaves one: the stale test below.)"""
    name = names("ends")
    entry_file = os.path.join(who.registry, name)
    result = who.run(["--unshare", "--name", name, "--", "pyinit-no-such-command"])
    assert result.returncode == 127 and not os.path.exists(entry_file), result
    inside = launch_named(who, start, name)
    os.kill(inside.pid, signal.SIGTERM)
    assert inside.wait() == -signal.SIGTERM
    assert not os.path.exists(entry_file)
    if who.who == "root":
        refused = finish(["setpriv", "--bounding-set=-sys_admin", *who.pyinit, "--unshare", "--name", name, "--",
                          *WITNESS], env=who.env, cwd=who.cwd)
        assert "CAP_SYS_ADMIN" in one_error_line(refused)
        assert not os.path.exists(entry_file)


def test_entries_that_are_not_live_are_ignored(who, start, names):
    """Written by hand: a running PID 1 with another start time (a reused PID), a PID namespace not ours,
    and a file that is no entry. None is listed; --enter says which; the first, stale, is removed by --list;
    the last can be taken."""
    live = launch_named(who, start, names("live"))
    real_start = stat(live.pid1).start_time
    own_ns = os.stat("/proc/self/ns/pid").st_ino

    def entry(pid: int, start_time: int, namespace: int) -> bytes:
        return (b"pyinit-name 1\npid %d\nstart-time %d\nlauncher %d\nlauncher-start-time %d\npid-namespace %d\n"
                b"command\nsleep\x001000" % (pid, start_time, live.pid, stat(live.pid).start_time, namespace))

    reused, foreign, garbage = names("reused"), names("foreign"), names("garbage")
    for name, data in ((reused, entry(live.pid1, real_start - 1, own_ns)), (foreign, entry(live.pid1, real_start, 1)),
                       (garbage, b"not an entry\n")):
        with open(os.path.join(who.registry, name), "wb") as file:
            file.write(data)
        if who.who != "root":
            os.chown(os.path.join(who.registry, name), NOBODY, NOBODY)
    assert "%s is gone" % reused in one_error_line(who.run(["--enter", reused, "--", *WITNESS]))
    listed = who.listed()
    assert not {reused, foreign, garbage} & set(listed) and live.pid1 in [e["pid"] for e in listed.values()]
    assert registered_pid(who, reused) is None and registered_pid(who, foreign) == live.pid1
    assert "another PID namespace" in one_error_line(who.run(["--enter", foreign, "--", *WITNESS]))
    assert "no namespace is named %s" % garbage in one_error_line(who.run(["--enter", garbage, "--", *WITNESS]))
    assert "another PID namespace" in one_error_line(who.run(["--unshare", "--name", foreign, "--", *WITNESS]))
    for name in (reused, garbage):
        result = who.run(["--unshare", "--name", name, "--", "sh", "-c", "exit 9"])
        assert (result.returncode, result.stderr) == (9, "")
        assert not os.path.exists(os.path.join(who.registry, name))


def test_a_name_directory_that_is_not_the_users_is_refused(request):
    user = Who("nobody", request)
    runtime = tempfile.mkdtemp(prefix="pyinit-xdg-", dir="/tmp")
    try:
        os.chmod(runtime, 0o755)
        os.mkdir(os.path.join(runtime, "pyinit"), 0o755)  # root's, readable by all
        env = dict(user.env, XDG_RUNTIME_DIR=runtime)
        for argv in (["--unshare", "--name", "web", "--", *WITNESS], ["--list"]):
            assert "must be yours alone" in one_error_line(user.run(argv, env=env))
    finally:
        shutil.rmtree(runtime)


def test_pyinit_name_registers_like_the_option_and_an_init_ignores_it(who, start, names):
    name = names("env")
    inside = who.start(start, ["--unshare", "--", *SLEEPER], env=dict(who.env, PYINIT_NAME=name))
    assert inside.out.next() == "ready"
    wait_for(lambda: name in who.listed(), "%s to be listed" % name)
    plain = who.run(["sh", "-c", "exit 4"], env=dict(who.env, PYINIT_NAME="not/a/name"))  # no launcher: not read
    assert (plain.returncode, plain.stderr) == (4, "")


def test_a_name_in_use_is_refused_before_anything_runs(who, start, names):
    name = names("taken")
    inside = launch_named(who, start, name)
    line = one_error_line(who.run(["--unshare", "--name", name, "--", *WITNESS]))
    assert name in line and "taken" in line and str(inside.pid1) in line, line
    assert registered_pid(who, name) == inside.pid1 and who.listed()[name]["pid"] == inside.pid1


def sigkilled_launcher(who, start, name: str) -> int:
    """A launcher registered as `name`, SIGKILLed: its PID 1 dies with it, its entry stays; that PID 1."""
    inside = launch_named(who, start, name)
    pid1, mark = inside.pid1, stat(inside.pid1).start_time
    os.kill(inside.pid, signal.SIGKILL)
    assert inside.wait() == -signal.SIGKILL
    wait_for(lambda: gone(pid1, mark), "PID 1 to die with its launcher")
    assert registered_pid(who, name) == pid1  # nobody removed it
    return pid1


def test_a_stale_name_is_ignored_removed_by_list_and_can_be_taken_again(who, start, names):
    """The launcher SIGKILLed: its entry stays, its PID 1 is gone; --enter says so, --list removes it, a new
    launcher takes the name."""
    name = names("stale")
    pid1 = sigkilled_launcher(who, start, name)
    line = one_error_line(who.run(["--enter", name, "--", *WITNESS]))
    assert "%s is gone" % name in line, line
    assert name not in who.run(["--list"]).stdout
    assert registered_pid(who, name) is None
    again = launch_named(who, start, name)
    assert again.pid1 != pid1 and who.listed()[name]["pid"] == again.pid1
    result = who.run(["--enter", name, "--", "sh", "-c", "exit 6"])
    assert (result.returncode, result.stderr) == (6, "")


def test_naming_a_namespace_removes_the_callers_stale_entries(who, start, names):
    """Two launchers SIGKILLed left their entries: the next --name, whatever its name, removes both."""
    stale = [names("stale-a"), names("stale-b")]
    for name in stale:
        sigkilled_launcher(who, start, name)
    result = who.run(["--unshare", "--name", names("fresh"), "--", "sh", "-c", "exit 3"])
    assert (result.returncode, result.stderr) == (3, "")
    assert [registered_pid(who, name) for name in stale] == [None, None]


def test_what_is_no_entry_is_skipped_by_list_and_name(who, start, names):
    """In the user's name directory: a directory, a FIFO, a symbolic link, an unreadable file, another
    format. --list shows the live namespace (it failed, or hung on the FIFO), --name works, nothing is removed."""
    if who.who == "root":
        pytest.skip("root's names are in /run/pyinit, which other runs on the machine read: no strays there")
    live_name = names("live")
    live = launch_named(who, start, live_name)
    strays = {names("dir"): os.mkdir, names("fifo"): os.mkfifo, names("link"): lambda path: os.symlink("/etc", path),
              names("unreadable"): lambda path: open(path, "w").close(),
              names("other"): lambda path: Path(path).write_text("x")}
    for name, make in strays.items():
        make(os.path.join(who.registry, name))
        os.lchown(os.path.join(who.registry, name), NOBODY, NOBODY)
    os.chmod(os.path.join(who.registry, list(strays)[3]), 0)
    try:
        assert {name: entry["pid"] for name, entry in who.listed().items()} == {live_name: live.pid1}
        assert live_name in who.run(["--list"]).stdout
        result = who.run(["--unshare", "--name", names("next"), "--", "sh", "-c", "exit 3"])
        assert (result.returncode, result.stderr) == (3, "")
        assert {*strays, live_name} <= set(os.listdir(who.registry))
    finally:
        for name in strays:
            path = os.path.join(who.registry, name)
            (os.rmdir if os.path.isdir(path) and not os.path.islink(path) else os.unlink)(path)


@pytest.mark.parametrize("argv, words", [
    (["--unshare", "--name", "a/b", "--", *WITNESS], "is not a name"),
    (["--unshare", "--name", "", "--", *WITNESS], "1 to 64"),
    (["--unshare", "--name", ".", "--", *WITNESS], "is not a name"),
    (["--unshare", "--name", "..", "--", *WITNESS], "is not a name"),
    (["--unshare", "--name", "-x", "--", *WITNESS], "is not a name"),
    (["--unshare", "--name", "x" * 65, "--", *WITNESS], "1 to 64"),
    (["--unshare", "--name", "12345", "--", *WITNESS], "all digits"),
    (["--unshare", "--name", "caf\u00e9", "--", *WITNESS], "is not a name"),
    (["--name", "web", "--", *WITNESS], "only applies with --unshare"),
    (["--list", *WITNESS], "takes no command"),
    (["--list", "-c"], "does not apply with --list"),
    (["--json"], "only applies with --list"),
    (["--enter", "web"], "no command given"),
    (["--enter", "a/b", "--", *WITNESS], "is not a name"),
    (["--enter", "0", "--", *WITNESS], "no PID"),
    (["--enter", "web", "--grace", "1", "--", *WITNESS], "does not apply with --enter"),
    (["--enter", "web", "--unshare", "--", *WITNESS], "does not apply with --enter"),
    (["--enter", "web", "--name", "x", "--", *WITNESS], "does not apply with --enter"),
])
def test_bad_command_lines_are_125_with_one_line(argv, words):
    result = finish([*PYINIT, *argv], env=clean_env(), cwd=str(REPO))
    assert words in one_error_line(result), result


def test_a_bad_pyinit_name_is_refused_by_the_launcher():
    result = finish([*PYINIT, "--unshare", "--", *WITNESS], env=clean_env(PYINIT_NAME="../up"), cwd=str(REPO))
    assert "PYINIT_NAME=../up" in one_error_line(result)


def test_a_user_without_xdg_runtime_dir_is_told_where_names_live(request):
    user = Who("nobody", request)
    env = {key: value for key, value in user.env.items() if key != "XDG_RUNTIME_DIR"}
    for argv in (["--unshare", "--name", "web", "--", *WITNESS], ["--list"], ["--enter", "web", "--", *WITNESS]):
        assert "XDG_RUNTIME_DIR is not set" in one_error_line(user.run(argv, env=env))


# --- --enter: inside, and a member ---------------------------------------------------------------


@pytest.mark.parametrize("by", ["name", "pid"])
def test_the_entered_command_runs_inside_beside_pid1(who, start, names, by):
    """ps inside: PID 1, the launcher's command, and the entered command (its parent outside: 0), nothing else.
    Every namespace is PID 1's, the host name and the network of --hostname and --net too; / is the working directory."""
    name = names("ps")
    inside = launch_named(who, start, name, options=["--hostname", "entered-" + who.who, "--net"])
    script = ("ps -eo pid=,ppid=,args=; echo; cat /proc/sys/kernel/hostname; pwd; id -u; "
              "for kind in %s; do readlink /proc/self/ns/$kind; done; cat /proc/net/dev" % " ".join(NAMESPACE_KINDS))
    result = who.run(["--enter", name if by == "name" else str(inside.pid1), "--", "sh", "-c", script])
    assert (result.returncode, result.stderr) == (0, ""), result
    table, rest = result.stdout.split("\n\n", 1)
    rows = ps_table(table)
    assert len(rows) == 4, rows
    (pid1, ppid1, args1), (pid2, ppid2, args2), (pid3, ppid3, args3), (_, ppid4, args4) = rows
    assert (pid1, ppid1) == (1, 0) and "-m pyinit --unshare" in args1, rows
    assert (pid2, ppid2, args2) == (2, 1, "sleep 1000"), rows
    assert ppid3 == 0 and args3.startswith("sh -c ps"), rows
    assert ppid4 == pid3 and args4.startswith("ps "), rows
    hostname, cwd, uid, *more = rest.splitlines()
    assert (hostname, cwd, uid) == ("entered-" + who.who, "/", "0")
    links = more[:len(NAMESPACE_KINDS)]
    assert links == [os.readlink("/proc/%d/ns/%s" % (inside.pid1, kind)) for kind in NAMESPACE_KINDS]
    assert [line.split(":")[0].strip() for line in more[len(NAMESPACE_KINDS):] if ":" in line] == ["lo"]


def test_the_entered_command_gets_the_callers_environment_as_it_was(who, start, names):
    """Not PID 1's, and without what Python's start-up adds in a C locale (LC_CTYPE, PEP 538), as nsenter gives it."""
    name = names("env")
    without_locale = {key: value for key, value in who.env.items() if key not in ("LANG", "LC_ALL", "LC_CTYPE")}
    inside = who.start(start, ["--unshare", "--name", name, "--", *SLEEPER], env=dict(without_locale, LAUNCHER_ONLY="1"))
    assert inside.out.next() == "ready"
    wait_for(lambda: name in who.listed(), "%s to be listed" % name)
    caller = dict(without_locale, ENTER_MARK="x y\nz")
    result = who.run(["--enter", name, "--", "env", "-0"], env=caller)
    assert (result.returncode, result.stderr) == (0, "")
    assert dict(item.split("=", 1) for item in result.stdout.split("\0") if item) == caller


def test_a_pid_1_that_is_not_pyinits_can_be_entered(start):
    """Any PID namespace's PID 1 will do (here util-linux unshare's child, sleep)."""
    outer = start(["--", "unshare", "--fork", "--pid", "--mount-proc", *SLEEPER])
    assert outer.out.next() == "ready"
    unshare = wait_for(lambda: children(outer.child()), "unshare to fork its PID 1")[0]
    result = finish([*PYINIT, "--enter", str(unshare), "--", "ps", "-eo", "pid=,args="], env=clean_env(), cwd=str(REPO))
    assert (result.returncode, result.stderr) == (0, "")
    rows = [line.split(None, 1) for line in result.stdout.splitlines()]
    assert rows[0] == ["1", "sleep 1000"] and len(rows) == 2 and rows[1][1].startswith("ps "), rows


def test_an_orphan_of_an_entered_command_is_adopted_and_reaped_by_pid1(who, start, names):
    name = names("orphan")
    launch_named(who, start, name)
    result = who.run(["--enter", name, "--", *who.program("launcher_orphan")])
    assert (result.returncode, result.stderr) == (0, "")
    report = json.loads(result.stdout)
    assert report["adopted_by"] == 1 and report["reaped"] and report["zombies"] == [], report


def test_an_orphan_of_an_entered_shell_is_reaped_by_pid1_seen_from_the_host(who, start, names):
    """The shell exits leaving `sleep 5` behind: the host sees it re-parented to PID 1, then reaped (no zombie)."""
    name = names("shell")
    inside = launch_named(who, start, name)
    result = who.run(["--enter", name, "--", "sh", "-c", "sleep 5 </dev/null >/dev/null 2>&1 & exit 0"])
    assert (result.returncode, result.stderr) == (0, "")

    def orphan():
        return [pid for pid in children(inside.pid1) if (stat(pid) and stat(pid).state != "Z"
                                                         and open("/proc/%d/cmdline" % pid, "rb").read() == b"sleep\x005\x00")]

    (sleeper,) = wait_for(orphan, "the orphaned sleep to be PID 1's child")
    mark = stat(sleeper).start_time
    wait_for(lambda: gone(sleeper, mark), "PID 1 to reap the orphan")
    assert [state(pid) for pid in children(inside.pid1)] == ["S"]  # sleep 1000, and no zombie


# --- --enter: exit status and errors ---------------------------------------------------------------


@pytest.fixture
def not_executable():
    """A script without execute permission, in a directory anyone may enter."""
    directory = tempfile.mkdtemp(prefix="pyinit-enter-", dir="/tmp")
    os.chmod(directory, 0o755)
    path = os.path.join(directory, "not-executable")
    with open(path, "w") as script:
        script.write("#!/bin/sh\nexit 0\n")
    os.chmod(path, 0o644)
    yield path
    shutil.rmtree(directory)


def test_exit_codes_of_the_entered_command(who, start, names, not_executable):
    name = names("codes")
    launch_named(who, start, name)
    for script, code in (("exit 0", 0), ("exit 3", 3), ("exit 255", 255), ("kill -KILL $$", 137)):
        result = who.run(["--enter", name, "--", "sh", "-c", script])
        assert (result.returncode, result.stderr) == (code, ""), (script, result)
    not_found = who.run(["--enter", name, "--", "pyinit-no-such-command"])
    assert not_found.returncode == 127 and "pyinit-no-such-command" in pyinit_lines(not_found.stderr)[0], not_found
    refused = who.run(["--enter", name, "--", not_executable])
    assert refused.returncode == 126 and not_executable in pyinit_lines(refused.stderr)[0], refused


def test_what_cannot_be_entered_is_125_with_one_line_saying_why(who, start, names):
    name = names("errors")
    inside = launch_named(who, start, name)
    assert "no namespace is named %s-not" % name in one_error_line(who.run(["--enter", name + "-not", "--", *WITNESS]))
    command = children(inside.pid1)[0]  # sleep 1000: PID 2 inside
    line = one_error_line(who.run(["--enter", str(command), "--", *WITNESS]))
    assert "PID %d (sleep) is not the PID 1 of a PID namespace" % command in line, line
    line = one_error_line(who.run(["--enter", str(os.getpid()), "--", *WITNESS]))  # the host's own: not a PID 1
    assert "is not the PID 1" in line, line
    reaped = subprocess.Popen(["true"])
    reaped.wait()  # its PID is free, and the kernel hands PIDs out in turn: not reused before a wrap-around
    assert "no process has PID %d" % reaped.pid in one_error_line(who.run(["--enter", str(reaped.pid), "--", *WITNESS]))


@pytest.mark.skipif(shutil.which("setpriv") is None or not os.access(SYSTEM_PYTHON, os.X_OK),
                    reason="needs setpriv and Debian's python3")
def test_another_users_namespace_is_permission_denied(start, names, request):
    """uid 65534 asks to enter root's namespace by PID: refused, 125, one line."""
    root, user = Who("root", request), Who("nobody", request)
    inside = launch_named(root, start, names("root-only"))
    line = one_error_line(user.run(["--enter", str(inside.pid1), "--", *WITNESS]))
    assert line.startswith("pyinit: permission denied") and str(inside.pid1) in line, line


# --- --enter: signals and the end of the namespace -------------------------------------------------


def test_signals_to_enter_reach_the_command(who, start, names):
    name = names("signals")
    launch_named(who, start, name)
    entered = who.start(start, ["--enter", name, "--", *who.program("launcher_signals", "USR1", "HUP", "TERM=7")])
    assert entered.out.next() == "ready"
    for signo in (signal.SIGUSR1, signal.SIGHUP):
        os.kill(entered.pid, signo)
        assert entered.out.next() == "got %s" % signal.Signals(signo).name
    os.kill(entered.pid, signal.SIGTERM)
    assert entered.out.next() == "got SIGTERM"
    assert entered.wait() == 7
    assert entered.stderr == ""


def test_a_relayed_signal_that_ends_the_command_ends_enter_with_it(who, start, names):
    """As the launcher: the calling shell sees a death by the signal, not 143."""
    name = names("die")
    launch_named(who, start, name)
    entered = who.start(start, ["--enter", name, "--", *SLEEPER])
    assert entered.out.next() == "ready"
    os.kill(entered.pid, signal.SIGTERM)
    assert entered.wait() == -signal.SIGTERM
    assert entered.stderr == ""


def test_the_end_of_the_namespace_takes_the_entered_command(who, start, names):
    """The entered command counts among the members; the launcher ends (SIGTERM, forwarded, ends its command,
    PID 1 exits): the kernel kills the entered command, and --enter exits 137 saying why."""
    name = names("teardown")
    inside = launch_named(who, start, name)
    entered = who.start(start, ["--enter", name, "--", *SLEEPER])
    assert entered.out.next() == "ready"
    (sleeper,) = wait_for(lambda: children(entered.pid), "--enter to start its command")
    assert innermost_pid(sleeper) > 2 and status(sleeper)["NSpid"].split()[0] == str(sleeper)
    assert os.readlink("/proc/%d/ns/pid" % sleeper) == os.readlink("/proc/%d/ns/pid" % inside.pid1)
    assert who.listed()[name]["procs"] == 3  # PID 1, its command, the entered one
    mark = stat(sleeper).start_time
    os.kill(inside.pid, signal.SIGTERM)
    assert inside.wait() == -signal.SIGTERM
    assert entered.wait() == 128 + signal.SIGKILL
    assert gone(sleeper, mark)
    (line,) = pyinit_lines(entered.stderr)
    assert "PID 1 exited" in line, line
    assert name not in who.listed()


# --- what the caller hands on ------------------------------------------------------------------------

CLOSING_STDIN = ["sh", "-c", 'exec <&-; exec "$@"', "sh"]


@pytest.mark.parametrize("pty", ["--no-pty", "--pty"])
@pytest.mark.parametrize("caller", ["holding 1,100 descriptors", "with stdin closed"])
def test_enter_started_by_an_unusual_caller(start, names, request, pty, caller):
    """A caller holding 1,100 descriptors (the pidfd and the pty numbered above 1,100, which select(2) refused:
    125, "internal error"), or one that closed stdin (the pty's master became descriptor 0, and the relay fed
    the command's output back to it as input). The command runs inside, reads the end of its input, and its
    code comes back."""
    root = Who("root", request)
    name = names("caller")
    launch_named(root, start, name)
    wrapper = HOLDING_1100_DESCRIPTORS if caller.startswith("holding") else CLOSING_STDIN
    result = finish([*wrapper, *PYINIT, "--enter", name, pty, "--", "sh", "-c", 'read line; echo "got:$line"; exit 4'],
                    env=root.env, cwd=root.cwd)
    assert (result.returncode, result.stdout.rstrip("\r\n")) == (4, "got:"), result  # end of input: no line
    assert result.stderr == ""


# --- in a terminal ---------------------------------------------------------------------------------


@pytest.mark.skipif(not shutil.which("bash"), reason="needs bash")
def test_an_entered_shell_in_a_terminal_has_job_control(start, names, on_pty, request):
    """`pyinit --enter NAME -- bash -i` typed into a shell on a pty: the inner bash is a member with a pty of
    its own and job control; `exit 3` -> 3; the outer terminal's modes are as before."""
    root = Who("root", request)
    name = names("tty")
    inside = launch_named(root, start, name)
    shell = on_pty(None, setup=["stty -g > /tmp/pyinit-enter-stty-%d" % os.getpid()])
    shell.sendline("PS1='[in''ner]$ ' " + shlex.join([*PYINIT, "--enter", name, "--", *BASH]))
    shell.expect_exact(INNER_PROMPT)
    bash = wait_for(lambda: [pid for pid in descendants(shell.pyinit()) if stat(pid) and
                             open("/proc/%d/cmdline" % pid, "rb").read().split(b"\0")[0] == b"bash"], "the inner bash")[0]
    assert os.readlink("/proc/%d/ns/pid" % bash) == os.readlink("/proc/%d/ns/pid" % inside.pid1)
    info = stat(bash)
    assert info.tty_nr not in (0, shell.tty_rdev) and info.tpgid == info.pgid, "the inner bash has no pty of its own"
    shell.exercise_job_control()
    shell.sendline("exit 3")
    assert shell.exit_code() == 3
    assert "no job control" not in shell.screen
    shell.sendline("stty -g | cmp -s - /tmp/pyinit-enter-stty-%d && echo mo''des-same" % os.getpid())
    shell.expect_exact("modes-same\r\n")
    os.unlink("/tmp/pyinit-enter-stty-%d" % os.getpid())


@pytest.mark.skipif(not shutil.which("bash"), reason="needs bash")
def test_ctrl_z_stops_enter_and_fg_continues_it(start, names, on_pty, request):
    """A command that is no shell: Ctrl-Z stops the job in the outer shell, `fg` continues it, Ctrl-C ends it (130)."""
    root = Who("root", request)
    name = names("job")
    launch_named(root, start, name)
    shell = on_pty(None)
    shell.sendline(shlex.join([*PYINIT, "--enter", name, "--", sys.executable, str(PROGRAMS / "terminal_ticker.py")]))
    shell.expect(r"tick 2\r\n")
    enterer = shell.pyinit()
    shell.sendcontrol("z")
    shell.expect(r"\[1\]\+ +Stopped +.*--enter")
    shell.expect_exact(OUTER_PROMPT)
    assert state(enterer) == "T"
    shell.sendline("fg")
    shell.expect(r"tick \d+\r\n")
    shell.expect(r"tick \d+\r\n")
    shell.sendcontrol("c")
    assert shell.exit_code() == 130
