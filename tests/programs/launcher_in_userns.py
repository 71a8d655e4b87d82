"""Run a command as a given uid inside a fresh user namespace that maps host ids 0-65535.

Used by the launcher tests to put the launcher where a root-owned test can
change namespace-local sysctls (e.g. /proc/sys/user/max_user_namespaces = 0,
"unprivileged user namespaces disabled") without touching the host's, and
then run it unprivileged (as uid 65534) there. util-linux `unshare
--map-users` needs newuidmap, which may be missing; this does it by hand:

    parent (root, host)                    child
    fork ─────────────────────────────────>  unshare(CLONE_NEWUSER); "1" on ready
    write /proc/CHILD/{uid,gid}_map <──────  wait on go
    "1" on go ────────────────────────────>  write sysctls, drop to --uid, exec
    wait; exit with the child's status

Usage (as root):
    launcher_in_userns.py [--sysctl PATH=VALUE]... [--uid N] -- COMMAND [ARG...]
Independent of pyinit on purpose: the tool must not depend on the code under test.
"""

import ctypes
import os
import sys

CLONE_NEWUSER = 0x10000000
MAPPED = 65536


def parse(argv):
    sysctls, uid = [], None
    while argv and argv[0] != "--":
        option = argv.pop(0)
        if option == "--sysctl":
            path, _, value = argv.pop(0).partition("=")
            sysctls.append((path, value))
        elif option == "--uid":
            uid = int(argv.pop(0))
        else:
            raise SystemExit("launcher_in_userns: unknown option %r" % option)
    if not argv[1:]:
        raise SystemExit("launcher_in_userns: no command")
    return sysctls, uid, argv[1:]


def write(path, text):
    with open(path, "w") as handle:
        handle.write(text)


def child(sysctls, uid, command, ready_w, go_r):
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWUSER) != 0:
        os.write(2, b"launcher_in_userns: unshare(CLONE_NEWUSER): %s\n" % os.strerror(ctypes.get_errno()).encode())
        os._exit(99)
    os.write(ready_w, b"1")
    if os.read(go_r, 1) != b"1":
        os._exit(99)  # the parent could not write the maps
    for path, value in sysctls:
        write(path, value)
    if uid is not None:
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    os.execvp(command[0], command)


def main():
    sysctls, uid, command = parse(sys.argv[1:])
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(ready_r)
            os.close(go_w)
            child(sysctls, uid, command, ready_w, go_r)
        except BaseException as failure:
            os.write(2, ("launcher_in_userns: %r\n" % (failure,)).encode())
        os._exit(99)
    os.close(ready_w)
    os.close(go_r)
    if os.read(ready_r, 1) == b"1":
        write("/proc/%d/uid_map" % pid, "0 0 %d" % MAPPED)
        write("/proc/%d/gid_map" % pid, "0 0 %d" % MAPPED)
        os.write(go_w, b"1")
    os.close(go_w)
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status) if not os.WIFSIGNALED(status) else 128 + os.WTERMSIG(status))


if __name__ == "__main__":
    main()
