"""A served sandbox is the sandbox the caller asked for (issue 26): the fork server never makes another child.

Each scenario is a caller process of its own that changes one thing about
itself (its directory, umask, a limit, its nice value, affinity, groups,
ids, capabilities, NO_NEW_PRIVS, securebits, a signal's disposition or its
mask, its cgroup, a namespace) long after its fork server started, then
runs a probe command twice: as it comes (through the server, where the
server can make exactly that launcher) and with the server out of the way
(the launcher started directly, as subprocess would). The probe prints
everything it can read about itself; the two must be equal, and, where
the change reaches a command at all, differ from the probe's before it.
"""

import os
import resource
import uuid

import pytest

from support import SYSTEM_PYTHON, caller, leaked, wait_for

# What the command reads about itself (not its PID, its memory or its own interpreter's handlers, nor its PID
# and mount namespaces: new in every sandbox).
PROBE = r"""
import ctypes, json, os, sys
sys.stdin.read()  # until the caller has looked at who started the launcher
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines())
seen = {name: status[name].strip() for name in ("Umask", "Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff",
        "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp", "SigBlk", "SigIgn", "Cpus_allowed_list", "Mems_allowed_list")}
seen["cwd"] = os.getcwd()
seen["limits"] = open("/proc/self/limits").read()
seen["nice"] = os.getpriority(os.PRIO_PROCESS, 0)
seen["cgroup"] = open("/proc/self/cgroup").read()
seen["namespaces"] = [os.readlink("/proc/self/ns/" + kind) for kind in ("user", "net", "uts", "ipc", "cgroup", "time")]
seen["securebits"] = ctypes.CDLL(None).prctl(27, 0, 0, 0, 0)  # PR_GET_SECUREBITS
print(json.dumps(seen))
"""

CALLER = r"""
import ctypes, json, os, resource, signal, socket, subprocess, sys
import pyinit
from pyinit import linux, proc
from pyinit.forkserver.client import ForkServer

options = {}

def probe():
    with pyinit.Sandbox([sys.executable, "-I", "-S", "-c", %(probe)r], stdin=subprocess.PIPE, settle=0,
                        **options) as box:
        launcher = proc.stat(box.pid).ppid
        served = proc.stat(launcher).ppid == ForkServer.get().pid
        box.stdin.close()
        result = box.wait(30)
    assert result.exit_code == 0, (result, result.stderr)
    return dict(json.loads(result.stdout), served=served)

before = probe()
%(change)s
served = probe()
ForkServer.serving = classmethod(lambda cls, state: None)  # from here on every launcher is started directly
direct = probe()
print(json.dumps({"before": before, "served": served, "direct": direct}))
"""

CGROUP = "/sys/fs/cgroup/pids/pyinit-faithful-%d"


def limit_change(number):
    return """
number = %d
soft, hard = resource.getrlimit(number)
if soft == resource.RLIM_INFINITY:
    soft = 1 << 40
elif soft > 1:
    soft -= 1
else:
    soft, hard = soft + 1, hard if hard == resource.RLIM_INFINITY else max(hard, soft + 1)
resource.setrlimit(number, (soft, hard))
""" % number


# By number (getrlimit(2)): the resource module names only some of them.
LIMITS = ["RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_DATA", "RLIMIT_STACK", "RLIMIT_CORE", "RLIMIT_RSS", "RLIMIT_NPROC",
          "RLIMIT_NOFILE", "RLIMIT_MEMLOCK", "RLIMIT_AS", "RLIMIT_LOCKS", "RLIMIT_SIGPENDING", "RLIMIT_MSGQUEUE",
          "RLIMIT_NICE", "RLIMIT_RTPRIO", "RLIMIT_RTTIME"]

# name -> (the caller's change, whether the command sees it, whether the server still serves it)
CHANGES = {
    "a relative cwd after chdir": ("os.makedirs('/tmp/pyinit-faithful/sub', exist_ok=True); "
                                   "os.chdir('/tmp/pyinit-faithful'); options['cwd'] = 'sub'", True, True),
    "no cwd after chdir": ("os.chdir('/tmp')", True, True),
    "umask": ("os.umask(0o077)", True, True),
    **{name: (limit_change(number), True, False) for number, name in enumerate(LIMITS)},
    "nice": ("os.setpriority(os.PRIO_PROCESS, 0, 7)", True, False),
    "affinity": ("os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})", os.cpu_count() > 1, False),
    "supplementary groups": ("os.setgroups([4242, 4343])", True, False),
    "effective group": ("os.setegid(4242)", True, False),
    "capability bounding set": ("linux.prctl(24, 13)", True, False),  # PR_CAPBSET_DROP, CAP_NET_RAW
    "NO_NEW_PRIVS": ("linux.prctl(38, 1)", True, False),  # PR_SET_NO_NEW_PRIVS
    "securebits": ("linux.prctl(28, 1 << 2)", True, False),  # PR_SET_SECUREBITS, SECBIT_NO_SETUID_FIXUP
    # pyinit gives the command an empty mask, whatever it got: only its launcher sees this one
    "a blocked signal": ("signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})", False, False),
    "an ignored signal": ("signal.signal(signal.SIGTTOU, signal.SIG_IGN)", True, False),
    "a UTS namespace": ("linux.unshare(linux.CLONE_NEWUTS); socket.sethostname('faithful')", True, False),
    "a cgroup": ("group = %r %% os.getpid(); os.mkdir(group)\n"
                 "open(group + '/cgroup.procs', 'w').write(str(os.getpid()))" % CGROUP, True, False),
}


def test_the_probe_reads_the_same_through_the_server_and_directly_when_nothing_changed():
    seen = caller(CALLER % {"probe": PROBE, "change": "pass"}, uuid.uuid4().hex)
    assert seen["before"]["served"] and seen["served"]["served"] and not seen["direct"]["served"], seen
    assert _without_path(seen["served"]) == _without_path(seen["direct"]) == _without_path(seen["before"])


@pytest.mark.parametrize("change", list(CHANGES))
def test_a_served_sandbox_is_the_one_a_direct_start_makes_after_the_caller_changed(change):
    code, visible, still_served = CHANGES[change]
    if change in LIMITS and resource.getrlimit(LIMITS.index(change)) == (0, 0):
        pytest.skip("a limit of 0 can only be raised, which takes CAP_SYS_RESOURCE, and this root lacks it")
    marker = uuid.uuid4().hex
    try:
        seen = caller(CALLER % {"probe": PROBE, "change": code}, marker)
    finally:
        _remove_cgroup()
    before, served, direct = seen["before"], seen["served"], seen["direct"]
    assert _without_path(served) == _without_path(direct), change
    if visible:
        assert _without_path(direct) != _without_path(before), "the probe does not see the change: %s" % change
    assert served["served"] == still_served  # a start the server can make the same stays fast
    wait_for(lambda: leaked(marker) == [], "nothing left of the caller")


def test_a_caller_that_gave_up_root_gets_a_launcher_with_its_ids_not_the_servers():
    """Root switches its effective uid (after the server started as root): the probe runs as that user, as a
    launcher started directly would; the server (still root) and its root sandboxes are left alone."""
    change = "os.setgroups([]); os.setegid(65534); os.seteuid(65534)"
    marker = uuid.uuid4().hex
    seen = caller(CALLER % {"probe": PROBE, "change": change}, marker, python=SYSTEM_PYTHON)
    served, direct = _without_path(seen["served"]), _without_path(seen["direct"])
    assert served == direct and served["Uid"].split()[1] == "65534", seen
    wait_for(lambda: leaked(marker) == [], "nothing left of the caller")


def _without_path(seen):
    """What the probe saw, but who started its launcher."""
    return {name: value for name, value in seen.items() if name != "served"}


def _remove_cgroup():
    """The cgroup a caller made (its processes gone with it, it can be removed), if one is left."""
    for entry in os.listdir("/sys/fs/cgroup/pids"):
        if entry.startswith("pyinit-faithful-"):
            path = "/sys/fs/cgroup/pids/" + entry
            with open(path + "/cgroup.procs") as members:
                for pid in members.read().split():
                    with open("/sys/fs/cgroup/pids/cgroup.procs", "w") as root:
                        root.write(pid)
            os.rmdir(path)
