"""The launcher: `pyinit --unshare [...] -- CMD` runs the init as PID 1 of new namespaces.

Everything here creates real namespaces (the suite runs as root). The test
looks from the host: host PIDs come from the host's /proc, and what the
command sees inside is printed by the command itself. Where a check could
pass for the wrong reason, a control run (without the option, or with a
plain tool instead of pyinit) shows that it tells the two cases apart.

The unprivileged runs use Debian's /usr/bin/python3 (the test interpreter may
live under /root, which nobody can read) and a world-readable copy of the
package, as uid 65534 through `setpriv`.
"""

import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

from support import (AS_NOBODY, NOBODY, PYINIT, REPO, SYSTEM_PYTHON, TIMEOUT, assert_no_traceback, children,
                     clean_env, descendants, leaked, program, pyinit_lines, python_with_os_unshare, stat, status,
                     wait_for)

MAX_PID_NS_LEVEL = 32  # the kernel's limit on PID namespace nesting

needs_setpriv = pytest.mark.skipif(shutil.which("setpriv") is None, reason="util-linux setpriv is not installed")
needs_system_python = pytest.mark.skipif(
    not os.access(SYSTEM_PYTHON, os.X_OK), reason="%s is needed for runs as a user who cannot read ours" % SYSTEM_PYTHON
)


# --- helpers of this module ----------------------------------------------------------


def finish(argv, *, env=None, cwd=None, timeout=TIMEOUT, pass_fds=()) -> subprocess.CompletedProcess:
    """Run `argv` to the end, stdout and stderr captured as text.

    On timeout its whole process tree is killed, deepest first (a launcher
    below a wrapper would otherwise outlive the wrapper), and the test fails.
    """
    proc = subprocess.Popen(argv, env=clean_env() if env is None else env, cwd=REPO if cwd is None else cwd,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            pass_fds=pass_fds, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for _ in range(3):
            for pid in [*reversed(descendants(proc.pid)), proc.pid]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            stdout, stderr = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            stdout, stderr = "", "(output held open by an escaped process)"
        raise AssertionError("%s did not exit within %.0fs; stdout: %r; stderr: %r"
                             % (argv, timeout, stdout, stderr)) from None
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def launch(argv, *, python=None, wrapper=(), **options) -> subprocess.CompletedProcess:
    """Run `pyinit ARGV` (ARGV normally starts with --unshare) to the end, behind an optional wrapper."""
    pyinit = PYINIT if python is None else [python, "-m", "pyinit"]
    return finish([*wrapper, *pyinit, *argv], **options)


def one_error_line(stderr: str) -> str:
    """Exactly one line on stderr, `pyinit: ...`, and no traceback; return it."""
    assert_no_traceback(stderr)
    lines = pyinit_lines(stderr)
    assert len(lines) == 1, "expected one 'pyinit: ' line, got %r" % stderr
    return lines[0]


def read(path: str) -> str:
    with open(path, "rb") as file:
        return file.read().decode(errors="replace")


def cmdline(pid) -> "list[str]":
    return read("/proc/%s/cmdline" % pid).split("\0")[:-1]


def proc_mounts() -> "list[str]":
    """The host's mountinfo entries on /proc or below it, without the mount IDs."""
    entries = []
    for line in read("/proc/self/mountinfo").splitlines():
        fields = line.split()
        if fields[4] == "/proc" or fields[4].startswith("/proc/"):
            entries.append(" ".join(fields[2:]))
    return entries


def proc_device(mountinfo: str) -> str:
    """major:minor of the filesystem visible on /proc (the last mounted there), from a mountinfo text."""
    devices = [line.split()[2] for line in mountinfo.splitlines() if line.split()[4] == "/proc"]
    assert devices, mountinfo
    return devices[-1]


def nspid(status_text: str) -> "list[str]":
    """The NSpid entries of a /proc/PID/status text: one PID per namespace level, outermost first."""
    for line in status_text.splitlines():
        if line.startswith("NSpid:"):
            return line.split()[1:]
    raise AssertionError("no NSpid line in %r" % status_text)


def host_depth() -> int:
    """The PID namespace level we run at (0 on a host), as seen through our /proc."""
    return len(nspid(read("/proc/self/status"))) - 1


def ps_table(text: str) -> "list[tuple[int, int, str]]":
    """`ps -eo pid=,ppid=,args=` output -> [(pid, ppid, args)]."""
    rows = []
    for line in text.splitlines():
        pid, ppid, args = line.split(None, 2)
        rows.append((int(pid), int(ppid), args))
    return rows


def assert_only_the_namespace(rows, command_start: str) -> None:
    """ps inside shows PID 1 = pyinit, PID 2 = the command, and ps itself: nothing else."""
    assert len(rows) == 3, rows
    (pid1, ppid1, args1), (pid2, ppid2, args2), (_, ppid3, args3) = sorted(rows)
    assert (pid1, ppid1) == (1, 0) and "-m pyinit --unshare" in args1, rows
    assert (pid2, ppid2) == (2, 1) and args2.startswith(command_start), rows
    assert ppid3 == 2 and args3.startswith("ps "), rows


def gone(pid: int, start_time: int) -> bool:
    """Whether the process (pid, start time) has ended: reaped, a zombie, or its PID reused."""
    info = stat(pid)
    return info is None or info.start_time != start_time or info.state in "ZX"


# A shell snippet that prints the shell's own NSpid line read through the host's /proc, passed down
# as an open directory (fd %d). Inside, /proc is the namespace's own and shows only its own level;
# the host's shows every level. The shell opens the redirection itself, so `self` is the shell.
SH_NSPID_THROUGH = 'while IFS= read -r l; do case "$l" in NSpid*) echo "$l";; esac; done </proc/self/fd/%d/self/status'


# --- what the host sees -------------------------------------------------------------------------


def test_host_proc_is_unchanged_before_during_and_after(start):
    """The host's /proc (its PID 1, its mounts, its process list) is the same throughout."""
    before = (cmdline(1), proc_mounts())
    inside = start(["--unshare", "--", "sh", "-c", 'tr "\\0" " " </proc/1/cmdline; echo; echo ready; read line; exit 0'])
    pid1_inside = inside.out.next()
    assert inside.out.next() == "ready"
    # During: the namespace has its own PID 1, and the host still has its own /proc.
    assert "-m pyinit --unshare" in pid1_inside
    assert (cmdline(1), proc_mounts()) == before
    assert os.readlink("/proc/self") == str(os.getpid())  # our /proc still shows our PID namespace
    tree = {pid: stat(pid).start_time for pid in inside.tree()}
    assert len(tree) == 2, tree  # the host sees the init and the command, by host PID, in its own table
    inside.close_stdin()
    assert inside.wait() == 0
    assert inside.stderr == ""
    assert (cmdline(1), proc_mounts()) == before
    assert all(gone(pid, start_time) for pid, start_time in tree.items())


def test_mounts_inside_do_not_propagate_to_a_shared_parent(tmp_path):
    """With / shared above (as on systemd hosts), neither the new /proc nor later mounts leak out.

    The parent here is a mount namespace of our own whose mounts are all shared,
    so a launcher that forgot MS_PRIVATE would propagate its /proc (and the
    command's tmpfs) into it. The same script with a launcher that does not
    make / private replaces the parent's /proc (checked by hand with
    `unshare --mount --pid --fork --propagation unchanged sh -c 'mount -t proc proc /proc'`).
    """
    target = tmp_path / "mnt"
    target.mkdir()
    script = ('"$@"; echo "rc=$?"; test -r /proc/self/mountinfo || echo PARENT-PROC-GONE; '
              'grep -F -e " /proc " -e " %s " /proc/self/mountinfo' % target)
    result = launch(["--unshare", "--", "sh", "-c", "mount -t tmpfs pyinit-test %s" % target],
                    wrapper=["unshare", "--mount", "--propagation", "shared", "sh", "-c", script, "sh"])
    lines = result.stdout.splitlines()
    assert lines[0] == "rc=0", result
    assert "PARENT-PROC-GONE" not in result.stdout  # the new /proc replaced the parent's
    assert result.stderr == ""
    assert len(lines) == 2 and lines[1].split()[4] == "/proc", result.stdout  # one /proc, no tmpfs
    assert proc_device(lines[1]) == proc_device(read("/proc/self/mountinfo"))  # still the host's proc


def test_ps_inside_shows_only_the_namespace(run):
    result = run(["--unshare", "--", "sh", "-c", "ps -eo pid=,ppid=,args=; exit 0"])
    assert (result.returncode, result.stderr) == (0, "")
    assert_only_the_namespace(ps_table(result.stdout), "sh -c ps")
    assert len(os.listdir("/proc")) > 10  # the host's table is not that small: the check means something


def test_orphans_are_reaped_inside(run):
    """A double-forked grandchild is adopted by PID 1 (pyinit) and reaped: no zombie is left."""
    result = run(["--unshare", "--", *program("launcher_orphan")])
    assert (result.returncode, result.stderr) == (0, "")
    report = json.loads(result.stdout)
    assert report["adopted_by"] == 1, report
    assert report["reaped"] and report["zombies"] == [], report


def test_process_tree_is_one_interpreter(start):
    """launcher -> init (forked: same executable and argv) -> command; no interpreter in between."""
    inside = start(["--unshare", "--", "sleep", "60"])
    launcher = inside.pid
    sleep = os.path.realpath(shutil.which("sleep"))
    init = wait_for(lambda: children(launcher), "the launcher to fork the init")
    assert len(init) == 1, init
    init = init[0]
    command = wait_for(lambda: [c for c in children(init) if os.path.realpath("/proc/%d/exe" % c) == sleep],
                       "the init to start sleep")
    assert children(launcher) == [init] and children(init) == command, descendants(launcher)
    python = os.path.realpath(sys.executable)
    assert os.path.realpath("/proc/%d/exe" % launcher) == python
    assert os.path.realpath("/proc/%d/exe" % init) == python
    assert cmdline(init) == cmdline(launcher)
    assert nspid(read("/proc/%d/status" % init))[-1] == "1"
    assert nspid(read("/proc/%d/status" % command[0]))[-1] == "2"
    os.kill(launcher, signal.SIGTERM)
    assert inside.wait() == -signal.SIGTERM  # the launcher dies of the signal that ended its command


# --- signals and exit status --------------------------------------------------------------------


def test_signals_to_the_launcher_reach_the_command(start):
    inside = start(["--unshare", "--", *program("launcher_signals", "USR1", "TERM=7")])
    assert inside.out.next() == "ready"
    os.kill(inside.pid, signal.SIGUSR1)
    assert inside.out.next() == "got SIGUSR1"
    os.kill(inside.pid, signal.SIGTERM)
    assert inside.out.next() == "got SIGTERM"
    assert inside.wait() == 7
    assert inside.stderr == ""


def blocks(pid: int, signo: int) -> bool:
    """Whether `pid` has `signo` blocked (False when it is gone).

    While a process waits in sigwaitinfo(2), the kernel shows the waited
    signals as unblocked: this is only true between blocking and waiting.
    """
    try:
        mask = int(status(pid)["SigBlk"], 16)
    except (FileNotFoundError, ProcessLookupError):
        return False
    return bool(mask & (1 << (signo - 1)))


@pytest.mark.parametrize("delay", [0, 0.005, 0.02])
def test_a_signal_sent_as_soon_as_the_launcher_blocks_it_is_not_lost(start, delay):
    """SIGTERM sent while the namespace is still being set up (the launcher has just blocked it or
    just forked the init; the command may not exist yet) still reaches the command."""
    inside = start(["--unshare", "--", "sleep", "60"], stdout=None)
    wait_for(lambda: blocks(inside.pid, signal.SIGTERM) or children(inside.pid),
             "the launcher to block SIGTERM", timeout=TIMEOUT)
    time.sleep(delay)
    os.kill(inside.pid, signal.SIGTERM)
    assert inside.wait(timeout=15) == -signal.SIGTERM  # sleep's 60 s would mean the signal was lost


def test_rewrite_given_to_the_launcher_applies(start):
    inside = start(["--unshare", "-r", "TERM:QUIT", "--", *program("launcher_signals", "TERM=7", "QUIT=3")])
    assert inside.out.next() == "ready"
    os.kill(inside.pid, signal.SIGTERM)
    assert inside.out.next() == "got SIGQUIT"
    assert inside.wait() == 3
    assert inside.stderr == ""


def test_sigkill_to_the_launcher_kills_the_whole_namespace(start):
    """Every process of the namespace, found by host PID before the kill, is gone soon after.

    Checked by hand to fail with `unshare --fork --pid --mount-proc` in place
    of the launcher: its child outlives a SIGKILLed unshare.
    """
    script = "sleep 1000 & sleep 1000 & (sleep 1000 &); echo ready; wait"
    inside = start(["--unshare", "--", "sh", "-c", script])
    assert inside.out.next() == "ready"
    # init, sh, two sleeps of sh's, one orphaned sleep adopted by the init

    def all_five():
        found = inside.tree()
        return found if len(found) == 5 else None

    tree = wait_for(all_five, "the namespace's five processes")
    marks = {pid: stat(pid).start_time for pid in tree}
    assert not gone(tree[0], marks[tree[0]])
    os.kill(inside.pid, signal.SIGKILL)
    assert inside.wait() == -signal.SIGKILL
    wait_for(lambda: all(gone(pid, start_time) for pid, start_time in marks.items()),
             "every process of the namespace to die: %s" % tree)


def test_sigkill_to_the_launcher_at_any_moment_of_its_start_up_leaves_nothing():
    """SIGKILL to the launcher at 40 delays spread over its start-up, the init's set-up included: nothing is left.

    The init arms its parent-death signal after the fork; a launcher that
    dies before that is seen through the pipe it holds (namespace.py). A
    lost race would leave the init, and the command it starts, running.
    """
    started = time.monotonic()
    subprocess.run([*PYINIT, "--unshare", "--", "true"], env=clean_env(), check=True, timeout=TIMEOUT)
    span = 1.5 * (time.monotonic() - started)
    for attempt in range(40):
        marker = "launcher-kill-%d-%d" % (os.getpid(), attempt)
        launcher = subprocess.Popen([*PYINIT, "--unshare", "--", "sleep", "1000"], env=clean_env(LEAK_MARKER=marker),
                                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(span * attempt / 40)
        launcher.kill()
        assert launcher.wait(timeout=TIMEOUT) == -signal.SIGKILL
        wait_for(lambda: not leaked(marker), "the namespace of a launcher killed after %.1f ms to die" %
                 (span * attempt / 40 * 1e3))


def test_init_killed_from_the_host_ends_the_launcher_with_137(start):
    """The launcher exits with the init's status, in the shell's convention, and the command dies with it."""
    inside = start(["--unshare", "--", "sh", "-c", "echo ready; sleep 1000; exit 0"])
    assert inside.out.next() == "ready"
    init = wait_for(lambda: children(inside.pid), "the launcher to fork the init")[0]
    below = {pid: stat(pid).start_time for pid in descendants(init)}
    assert len(below) >= 1, below
    os.kill(init, signal.SIGKILL)
    assert inside.wait() == 128 + signal.SIGKILL
    wait_for(lambda: all(gone(pid, start_time) for pid, start_time in below.items()), "the command to die")


@pytest.mark.parametrize(
    "options, script, expected",
    [
        ([], "exit 0", 0),
        ([], "exit 3", 3),
        ([], "exit 255", 255),
        ([], "kill -KILL $$", 128 + signal.SIGKILL),
        ([], "kill -TERM $$", 128 + signal.SIGTERM),
        (["-e", "143"], "kill -TERM $$", 0),
        (["-e", "143"], "exit 3", 3),
    ],
)
def test_exit_status_comes_back(run, options, script, expected):
    result = run(["--unshare", *options, "--", "sh", "-c", script])
    assert (result.returncode, result.stderr) == (expected, "")


def test_command_not_found_is_127(run):
    result = run(["--unshare", "--", "pyinit-no-such-command"])
    assert result.returncode == 127
    assert "pyinit-no-such-command" in one_error_line(result.stderr)


def test_command_not_executable_is_126(run, tmp_path):
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    result = run(["--unshare", "--", str(script)])
    assert result.returncode == 126
    assert str(script) in one_error_line(result.stderr)


# --- user namespaces ----------------------------------------------------------------------------


@needs_setpriv
@needs_system_python
def test_unprivileged_user_end_to_end(world_readable_package):
    """As uid 65534: a user namespace maps us to root, ps shows only the namespace, the code comes back.

    --hostname and --ipc work unprivileged too: the user namespace owns the others.
    """
    top, env = world_readable_package
    script = ("cat /proc/self/uid_map; id -u; cat /proc/sys/kernel/hostname; readlink /proc/self/ns/ipc; "
              "ps -eo pid=,ppid=,args=; exit 4")
    result = launch(["--unshare", "--hostname", "pyinit-nobody", "--ipc", "--", "sh", "-c", script],
                    wrapper=AS_NOBODY, python=SYSTEM_PYTHON, env=env, cwd=top)
    assert (result.returncode, result.stderr) == (4, ""), result
    uid_map, uid, hostname, ipc, *table = result.stdout.splitlines()
    assert uid_map.split() == ["0", str(NOBODY), "1"]
    assert uid == "0"
    assert hostname == "pyinit-nobody" and ipc != os.readlink("/proc/self/ns/ipc")
    assert_only_the_namespace(ps_table("\n".join(table)), "sh -c cat")


def test_user_option_as_root_adds_a_user_namespace(run):
    script = "cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups; readlink /proc/self/ns/user"
    host = read("/proc/self/uid_map").split(), os.readlink("/proc/self/ns/user")
    plain = run(["--unshare", "--", "sh", "-c", script])
    assert (plain.returncode, plain.stderr) == (0, "")
    lines = plain.stdout.splitlines()
    assert (lines[0].split(), lines[3]) == host  # control: root alone gets no user namespace
    with_user = run(["--unshare", "--user", "--", "sh", "-c", script])
    assert (with_user.returncode, with_user.stderr) == (0, "")
    uid_map, gid_map, setgroups, user_ns = with_user.stdout.splitlines()
    assert uid_map.split() == gid_map.split() == ["0", str(os.geteuid()), "1"]
    assert setgroups == "deny"
    assert user_ns != host[1]


# --- UTS, IPC, /proc ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, hostname",
    [
        ([], None),
        (["--hostname", "pyinit-test"], "pyinit-test"),
        (["--hostname=pyinit-test"], "pyinit-test"),
        (["--hostname", "h" * 64], "h" * 64),  # the kernel's longest
        (["--ipc"], None),
        (["--ipc", "--hostname", "pyinit-both"], "pyinit-both"),
    ],
)
def test_hostname_and_ipc_isolate_only_when_asked(run, options, hostname):
    host = (read("/proc/sys/kernel/hostname").strip(), os.readlink("/proc/self/ns/uts"),
            os.readlink("/proc/self/ns/ipc"))
    result = run(["--unshare", *options, "--", "sh", "-c",
                  "cat /proc/sys/kernel/hostname; readlink /proc/self/ns/uts /proc/self/ns/ipc"])
    assert (result.returncode, result.stderr) == (0, "")
    name, uts, ipc = result.stdout.splitlines()
    if hostname is None:
        assert (name, uts) == host[:2]
    else:
        assert name == hostname and uts != host[1]
    assert (ipc != host[2]) == ("--ipc" in options)
    assert socket.gethostname() == host[0] == read("/proc/sys/kernel/hostname").strip()


def test_no_mount_proc_keeps_the_proc_above_but_a_new_pid_namespace(run):
    host_pid1, host_pid_ns = " ".join(cmdline(1)), os.readlink("/proc/self/ns/pid")
    host_proc = proc_device(read("/proc/self/mountinfo"))
    script = ('tr "\\0" " " </proc/1/cmdline; echo; readlink /proc/self/ns/pid; '
              'while IFS= read -r l; do case "$l" in NSpid*) echo "$l";; esac; done </proc/self/status; '
              'cat /proc/self/mountinfo')

    def inside(options):
        result = run(["--unshare", *options, "--", "sh", "-c", script])
        assert (result.returncode, result.stderr) == (0, "")
        pid1, pid_ns, nspid_line, *mountinfo = result.stdout.splitlines()
        return pid1.strip(), pid_ns, nspid(nspid_line), proc_device("\n".join(mountinfo))

    pid1, pid_ns, ids, proc = inside(["--no-mount-proc"])
    assert (pid1, proc) == (host_pid1, host_proc)  # the host's /proc: its PID 1 shows through
    assert pid_ns != host_pid_ns
    assert len(ids) == host_depth() + 2 and ids[-1] == "2", ids  # host PID first, 2 inside
    # control: by default the /proc inside is a new one, whose PID 1 is pyinit
    pid1, pid_ns, ids, proc = inside([])
    assert "-m pyinit --unshare" in pid1 and proc != host_proc and ids == ["2"]


# --- network: --net ------------------------------------------------------------------------------

# Run inside with the port as argument: bind 127.0.0.1:PORT (no SO_REUSEADDR), connect to it, pass a
# byte string, print "served PORT ping", then hold the port until a line or end of input on stdin.
# With lo down the connection fails (ENETUNREACH); with the port taken, the bind (EADDRINUSE).
SERVE = """
import socket, sys
server = socket.socket()
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen()
client = socket.create_connection(server.getsockname(), timeout=10)
peer, _ = server.accept()
client.sendall(b"ping")
print("served", sys.argv[1], peer.recv(4).decode(), flush=True)
sys.stdin.readline()
"""

# Connect to 127.0.0.1:PORT and print what came of it: "reached" or the errno's name.
REACH = """
import errno, socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10).close()
    print("reached")
except OSError as failure:
    print(errno.errorcode.get(failure.errno, failure))
"""


class Launcher:
    """The launcher as root (the test's interpreter), or as uid 65534 (a user namespace; Debian's python3
    and a world-readable copy of the package). `python` runs Python inside."""

    def __init__(self, who: str, request) -> None:
        self.who = who
        if who == "root":
            self.python, self.options = sys.executable, {}
            return
        if shutil.which("setpriv") is None or not os.access(SYSTEM_PYTHON, os.X_OK):
            pytest.skip("setpriv and %s are needed to run the launcher as a user" % SYSTEM_PYTHON)
        top, env = request.getfixturevalue("world_readable_package")
        self.python = SYSTEM_PYTHON
        self.options = {"wrapper": AS_NOBODY, "python": SYSTEM_PYTHON, "env": env, "cwd": top}

    def launch(self, argv) -> subprocess.CompletedProcess:
        return launch(argv, **self.options)

    def start(self, start, argv):
        """The launcher in the background through the `start` fixture (killed at teardown)."""
        options = dict(self.options)
        pyinit = [options.pop("python", sys.executable), "-m", "pyinit"]
        return start(argv, pyinit=pyinit, **options)

    def script(self, text: str, *args: object) -> "list[str]":
        return [self.python, "-I", "-S", "-c", text, *map(str, args)]


@pytest.fixture(params=["root", "nobody"])
def launcher(request) -> Launcher:
    return Launcher(request.param, request)


def listening_on_the_host() -> socket.socket:
    """A socket of ours listening on 127.0.0.1 at a port the kernel picked."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    return listener


def interfaces(proc_net_dev: str) -> "list[str]":
    """The interface names of a /proc/net/dev text (two heading lines, then `NAME: counters`)."""
    return [line.split(":")[0].strip() for line in proc_net_dev.splitlines()[2:]]


def test_net_shows_only_lo_and_it_is_up(launcher):
    """/proc/net/dev (the reader's network namespace) lists lo alone; 127.0.0.1 works, so lo is up;
    `ip -o link`, where the machine has it, says LOOPBACK,UP. Control: util-linux `unshare --net`
    leaves lo down, and the same check tells it."""
    host_net = os.readlink("/proc/self/ns/net")
    ip = shutil.which("ip")
    script = ('readlink /proc/self/ns/net; "$@"; cat /proc/net/dev' + ("; %s -o link" % ip if ip else ""))
    result = launcher.launch(["--unshare", "--net", "--", "sh", "-c", script, "sh", *launcher.script(SERVE, 0)])
    assert (result.returncode, result.stderr) == (0, ""), result
    net, served, *rest = result.stdout.splitlines()
    assert net != host_net
    assert served == "served 0 ping"  # port 0: the kernel's pick, on a loopback that is up
    assert interfaces("\n".join(rest[:3])) == ["lo"], result.stdout
    if ip:
        (link,) = rest[3:]
        assert re.match(r"1: lo: <[A-Z_,]*\bUP\b", link), link
    if launcher.who == "root":
        down = finish(["unshare", "--net", "--", *launcher.script(SERVE, 0)])
        assert down.returncode == 1 and "[Errno %d]" % errno.ENETUNREACH in down.stderr, down


def test_net_binds_a_port_the_host_holds(launcher):
    """127.0.0.1:PORT is taken on the host, and free inside: the network is a separate one.
    Control: without --net the same bind fails (the host's network)."""
    with listening_on_the_host() as held:
        port = held.getsockname()[1]
        inside = launcher.launch(["--unshare", "--net", "--", *launcher.script(SERVE, port)])
        assert (inside.returncode, inside.stdout, inside.stderr) == (0, "served %d ping\n" % port, ""), inside
        shared = launcher.launch(["--unshare", "--", *launcher.script(SERVE, port)])
        assert shared.returncode == 1 and "[Errno %d]" % errno.EADDRINUSE in shared.stderr, shared


def test_without_net_the_network_is_the_hosts(launcher):
    """Without --net a port listening on the host is reached from inside, and the namespace is the host's.
    With --net the same connection is refused: nothing listens in the new network."""
    with listening_on_the_host() as listener:
        port = listener.getsockname()[1]
        script = 'readlink /proc/self/ns/net; exec "$@"'
        shared = launcher.launch(["--unshare", "--", "sh", "-c", script, "sh", *launcher.script(REACH, port)])
        assert (shared.returncode, shared.stderr) == (0, ""), shared
        assert shared.stdout.splitlines() == [os.readlink("/proc/self/ns/net"), "reached"]
        listener.settimeout(TIMEOUT)
        listener.accept()[0].close()  # the connection came to us
        private = launcher.launch(["--unshare", "--net", "--", *launcher.script(REACH, port)])
        assert (private.returncode, private.stdout, private.stderr) == (0, "ECONNREFUSED\n", ""), private


def test_two_net_launchers_bind_the_same_fixed_port_at_once(launcher, start):
    """Each launcher's server holds 127.0.0.1:8080 while the other does: what lets tests run in parallel."""
    servers = [launcher.start(start, ["--unshare", "--net", "--", *launcher.script(SERVE, 8080)]) for _ in range(2)]
    for server in servers:
        assert server.out.next() == "served 8080 ping"
    assert all(server.proc.poll() is None for server in servers)  # both still hold it
    for server in servers:
        server.close_stdin()
    for server in servers:
        assert server.wait() == 0
        assert server.stderr == ""


@needs_setpriv
def test_net_without_cap_net_admin_is_told_to_add_user(run):
    """Root without CAP_NET_ADMIN may make the network namespace (CAP_SYS_ADMIN) but not bring lo up:
    one line naming lo and --user, 125; with --user the user namespace gives that right inside."""
    without = ["setpriv", "--bounding-set=-net_admin"]
    refused = run(["--unshare", "--net", "--", "sh", "-c", "echo ran"], wrapper=without)
    assert (refused.returncode, refused.stdout) == (125, "")
    message = one_error_line(refused.stderr)
    assert "cannot bring up" in message and " lo " in message and "--user" in message, message
    works = run(["--unshare", "--user", "--net", "--", sys.executable, "-I", "-S", "-c", SERVE, "0"], wrapper=without)
    assert (works.returncode, works.stdout, works.stderr) == (0, "served 0 ping\n", "")


# --- nesting ------------------------------------------------------------------------------------


def nested(levels: int, innermost: "list[str]", report: str = "") -> "list[str]":
    """pyinit's argv for `levels` launchers, one inside the other, with `innermost` at the bottom.

    With `report`, each level's command is a shell that runs `report`, then
    execs the next level (so the shell is PID 2 of its level, then the next
    launcher is).
    """
    argv = innermost
    for level in range(levels, 0, -1):
        if report:
            argv = ["sh", "-c", report + 'exec "$@"', "sh", *argv]
        argv = ["--unshare", "--", *argv] if level == 1 else [*PYINIT, "--unshare", "--", *argv]
    return argv


def test_nesting_three_levels_each_sees_itself_as_pid_1():
    host_proc = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
    try:
        report = ('echo "level $$ $PPID $(readlink /proc/self/ns/pid) $(tr "\\0" " " </proc/1/cmdline)"; '
                  + SH_NSPID_THROUGH % host_proc + "; ")
        result = launch(nested(3, ["true"], report), pass_fds=[host_proc])
    finally:
        os.close(host_proc)
    assert (result.returncode, result.stderr) == (0, "")
    lines = result.stdout.splitlines()
    assert len(lines) == 6, lines
    namespaces = {os.readlink("/proc/self/ns/pid")}
    for level in range(1, 4):
        words, ids = lines[2 * level - 2].split(), nspid(lines[2 * level - 1])
        assert words[:3] == ["level", "2", "1"], lines  # the command is PID 2, its parent PID 1
        assert "-m pyinit --unshare" in " ".join(words[4:]), lines  # and PID 1 is pyinit
        assert len(ids) == host_depth() + level + 1 and ids[-1] == "2", lines
        namespaces.add(words[3])
    assert len(namespaces) == 4, lines  # the host's and three new ones


def test_nesting_to_the_kernel_limit_then_one_more_fails_cleanly():
    """Launchers nest up to the kernel's level 32; the next one exits 125 with one line.

    The depth we start at is read from our /proc (0 on a host; inside a
    container whose /proc is its own it would be undercounted).
    """
    levels = MAX_PID_NS_LEVEL - host_depth()
    if levels < 1:
        pytest.skip("already at the PID namespace nesting limit")
    host_proc = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY)
    try:
        script = SH_NSPID_THROUGH % host_proc + '; "$@"; echo "one more: $?"'
        innermost = ["sh", "-c", script, "sh", *PYINIT, "--unshare", "--", "true"]
        result = launch(nested(levels, innermost), pass_fds=[host_proc], timeout=120)
    finally:
        os.close(host_proc)
    assert result.returncode == 0, result
    nspid_line, one_more = result.stdout.splitlines()
    ids = nspid(nspid_line)
    assert len(ids) == MAX_PID_NS_LEVEL + 1 and ids[-1] == "2", ids  # level 32 reached, its PID 1 works
    assert one_more == "one more: 125"
    message = one_error_line(result.stderr)
    assert re.search(r"nest|%d" % MAX_PID_NS_LEVEL, message), message


# --- failures: exit 125, one line ---------------------------------------------------------------


@pytest.mark.parametrize("options", [["--ipc"], ["--hostname", "x"], ["--hostname=x"], ["--user"],
                                     ["--no-mount-proc"], ["--net"]])
def test_launcher_options_need_unshare(run, options):
    result = run([*options, "--", "sh", "-c", "echo ran"])
    assert (result.returncode, result.stdout) == (125, "")
    message = one_error_line(result.stderr)
    assert options[0].split("=")[0] in message and "--unshare" in message


@pytest.mark.parametrize("name", ["", "h" * 65, "\u00e9" * 33], ids=["empty", "65-bytes", "66-bytes-utf8"])
@pytest.mark.parametrize("form", ["separate", "attached"])
def test_bad_hostname_is_refused(run, name, form):
    options = ["--hostname", name] if form == "separate" else ["--hostname=" + name]
    result = run(["--unshare", *options, "--", "sh", "-c", "echo ran"])
    assert (result.returncode, result.stdout) == (125, "")
    assert "hostname" in one_error_line(result.stderr)


@needs_setpriv
@needs_system_python
def test_refused_proc_mount_suggests_no_mount_proc(world_readable_package):
    """A partly masked /proc (as in containers) forbids a user namespace's proc mount.

    As root: a PID + mount namespace with its own /proc, /proc/sys masked by a
    tmpfs, then the launcher as uid 65534 (so it needs a user namespace).
    """
    top, env = world_readable_package

    def masked(options, script):
        inner = [*AS_NOBODY, SYSTEM_PYTHON, "-m", "pyinit", "--unshare", *options, "--", "sh", "-c", script]
        return finish(["unshare", "--mount", "--pid", "--fork", "--mount-proc", "sh", "-c",
                       'mount -t tmpfs tmpfs /proc/sys && exec "$@"', "sh", *inner], env=env, cwd=top)

    refused = masked([], "echo ran")
    assert (refused.returncode, refused.stdout) == (125, "")
    message = one_error_line(refused.stderr)
    assert "/proc" in message and "--no-mount-proc" in message
    works = masked(["--no-mount-proc"], "id -u; exit 5")
    assert (works.returncode, works.stdout, works.stderr) == (5, "0\n", "")


@needs_system_python
def test_disabled_user_namespaces_name_the_sysctl(world_readable_package):
    """user.max_user_namespaces = 0 (in a user namespace of our own), then the launcher as uid 65534.

    unshare(2) fails with ENOSPC then; the message must name the sysctl that was set to 0.
    """
    top, env = world_readable_package

    def in_userns(sysctls, script):
        return finish([*program("launcher_in_userns"), *sysctls, "--uid", str(NOBODY), "--",
                       SYSTEM_PYTHON, "-m", "pyinit", "--unshare", "--", "sh", "-c", script], env=env, cwd=top)

    control = in_userns([], "id -u; exit 6")  # the same setup, namespaces allowed
    assert (control.returncode, control.stdout, control.stderr) == (6, "0\n", "")
    refused = in_userns(["--sysctl", "/proc/sys/user/max_user_namespaces=0"], "echo ran")
    assert (refused.returncode, refused.stdout) == (125, "")
    message = one_error_line(refused.stderr)
    assert re.search(r"sysctl.*user\.max_user_namespaces", message), message


@needs_setpriv
@needs_system_python
def test_refused_user_namespace_eperm_names_the_sysctls(world_readable_package):
    """unshare(2) refused with EPERM to an ordinary user (Debian's kernel.unprivileged_userns_clone=0,
    AppArmor's restriction, a container's seccomp profile): imitated by a seccomp filter."""
    top, env = world_readable_package
    refused = finish([*program("launcher_no_unshare"), *AS_NOBODY, SYSTEM_PYTHON, "-m", "pyinit", "--unshare", "--",
                      "sh", "-c", "echo ran"], env=env, cwd=top)
    if refused.returncode == 77:
        pytest.skip("no seccomp filter for this architecture (%s)" % os.uname().machine)
    assert (refused.returncode, refused.stdout) == (125, "")
    message = one_error_line(refused.stderr)
    assert re.search(r"sysctl.*kernel\.unprivileged_userns_clone", message), message


@needs_setpriv
def test_root_without_cap_sys_admin_is_told_to_add_user(run):
    without = ["setpriv", "--bounding-set=-sys_admin"]
    refused = run(["--unshare", "--", "sh", "-c", "echo ran"], wrapper=without)
    assert (refused.returncode, refused.stdout) == (125, "")
    assert "--user" in one_error_line(refused.stderr)
    works = run(["--unshare", "--user", "--", "sh", "-c", "ps -eo pid=,ppid=,args=; exit 0"], wrapper=without)
    assert (works.returncode, works.stderr) == (0, "")
    assert_only_the_namespace(ps_table(works.stdout), "sh -c ps")


# --- unshare(2): os.unshare or ctypes -----------------------------------------------------------

UTS_PROBE = """
import os, socket, sys
from pyinit import linux
getattr(linux, sys.argv[1])(linux.CLONE_NEWUTS)
linux.sethostname("pyinit-probe")
print(socket.gethostname(), os.readlink("/proc/self/ns/uts"))
try:
    getattr(linux, sys.argv[1])(-1)
except OSError as failure:
    print(failure.errno)
"""


def uts_probe(function: str) -> str:
    """In a child process: linux.FUNCTION(CLONE_NEWUTS), set a host name, report; then a bad call's errno."""
    host = read("/proc/sys/kernel/hostname").strip(), os.readlink("/proc/self/ns/uts")
    result = finish([sys.executable, "-c", UTS_PROBE, function])
    assert (result.returncode, result.stderr) == (0, "")
    (name, uts), (errno_text,) = (line.split() for line in result.stdout.splitlines())
    assert name == "pyinit-probe" and uts != host[1]
    assert (read("/proc/sys/kernel/hostname").strip(), os.readlink("/proc/self/ns/uts")) == host
    return errno_text


def test_unshare_with_ctypes_works_in_a_child():
    assert uts_probe("unshare_with_ctypes") == str(errno.EINVAL)  # failures are OSErrors with the errno


def test_unshare_takes_the_ctypes_path_without_os_unshare(monkeypatch):
    from pyinit import linux

    calls = []
    monkeypatch.setattr(linux, "unshare_with_ctypes", calls.append)
    if hasattr(os, "unshare"):
        monkeypatch.delattr(os, "unshare")
    linux.unshare(0)  # unshare(0) would do nothing anyway: the call is only recorded
    assert calls == [0]


@pytest.mark.skipif(not hasattr(os, "unshare"), reason="os.unshare needs Python 3.12+; this is %s"
                    % sys.version.split()[0])
def test_unshare_uses_os_unshare_where_python_has_it(monkeypatch):
    from pyinit import linux

    calls = []
    monkeypatch.setattr(linux, "unshare_with_ctypes", calls.append)
    monkeypatch.setattr(os, "unshare", lambda flags: calls.append(("os", flags)))
    linux.unshare(0)
    assert calls == [("os", 0)]
    monkeypatch.undo()
    assert uts_probe("unshare") == str(errno.EINVAL)


def test_launcher_end_to_end_on_a_python_with_os_unshare():
    """The os.unshare path for real, where the machine has a 3.12+ interpreter besides the one running the tests."""
    python = python_with_os_unshare()
    if python is None:
        pytest.skip("no CPython 3.12+ on this machine besides %s" % sys.version.split()[0])
    result = subprocess.run([python, "-m", "pyinit", "--unshare", "--", "sh", "-c", 'echo "$$"; exit 4'],
                            capture_output=True, text=True, cwd=REPO, env=clean_env(), timeout=TIMEOUT)
    assert (result.returncode, result.stdout) == (4, "2\n"), result
    assert_no_traceback(result.stderr)
