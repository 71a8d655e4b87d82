"""The members of a sandbox, seen from the host's /proc: the tree, what listens, what is still alive.

Every member of a sandbox descends from its PID 1 (pyinit), so the tree is
/proc/PID/task/TID/children followed down from there; NSpid in
/proc/PID/status gives each member's PID inside the sandbox. A process is
told apart from a later one with its PID by its start time.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import time
from typing import Callable, Dict, List, Optional, Sequence

from pyinit import proc
from pyinit.sandbox.result import Process

_WILDCARDS = frozenset({"0.0.0.0", "::"})


def namespace_level(pid: int) -> int:
    """The index of `pid`'s innermost PID namespace in NSpid (0 for the host's own)."""
    return len(proc.status(pid).get("NSpid", "").split()) - 1


def inner_pid(pid: int, level: int) -> Optional[int]:
    """`pid`'s number at namespace `level` (as the sandbox sees it); None when it is gone or not that deep."""
    levels = proc.status(pid).get("NSpid", "").split()
    return int(levels[level]) if len(levels) > level else None


def members(root: int, level: Optional[int], seen: Dict[int, int]) -> List[Process]:
    """`root` and every process below it, `root` first; `level`: the sandbox's namespace (None: not isolated).

    Each one's start time goes into `seen` (host PID -> start time), which
    tells it from a later process with the same PID at teardown. A process
    gone between two reads is left out; its children, re-parented
    meanwhile, still are found under their new parent on the next call.
    """
    raw = []
    for host_pid in [root, *proc.descendants(root)]:
        info = proc.stat(host_pid)
        if info is None:
            continue
        inside = host_pid if level is None else inner_pid(host_pid, level)
        if inside is None:
            continue  # gone, and its PID reused, between the two reads
        raw.append((inside, info, proc.cmdline(host_pid)))
        seen[host_pid] = info.start_time
    by_host = {info.pid: inside for inside, info, _ in raw}
    return [Process(inside, info.pid, 0 if info.pid == root and level is not None else by_host.get(info.ppid, info.ppid),
                    info.state, info.name, argv) for inside, info, argv in raw]


def alive(pid: int, start_time: Optional[int] = None) -> bool:
    """Whether `pid` runs (not a zombie), and is the process that started at `start_time`."""
    info = proc.stat(pid)
    return info is not None and info.state not in "ZX" and (start_time is None or info.start_time == start_time)


def kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def kill_below(pid: int, remember: Callable[[], object], timeout: float = 30.0) -> None:
    """SIGKILL every process below `pid` (a subreaper), from the leaves up, until none is left.

    The subreaper reaps them and adopts the orphans of those it loses, which
    are killed in the next round; `remember` is called each round, so that
    the caller can check afterwards that each one it saw is gone.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        below = [pid for pid in proc.descendants(pid) if alive(pid)]
        if not below:
            return
        remember()
        for pid in reversed(below):
            kill(pid)
        time.sleep(0.005)


def wait_until_gone(seen: Dict[int, int], timeout: float) -> List[int]:
    """Wait until every process of `seen` (host PID -> start time) has ended; SIGKILL and return those that did not."""
    deadline = time.monotonic() + timeout
    while True:
        left = [pid for pid, start in list(seen.items()) if alive(pid, start)]
        if not left or time.monotonic() > deadline:
            for pid in left:
                kill(pid)
            return left
        time.sleep(0.002)


def format_tree(found: Sequence[Process]) -> str:
    """Processes as an indented tree, children under their parent."""
    if not found:
        return "(no process: the sandbox has ended)"
    pids = {member.pid for member in found}
    below: "dict[int, list[Process]]" = {}
    for member in found:
        below.setdefault(member.ppid if member.ppid in pids else -1, []).append(member)
    lines: "list[str]" = []

    def add(member: Process, depth: int) -> None:
        lines.append("  " * depth + str(member))
        for child in sorted(below.get(member.pid, []), key=lambda m: m.pid):
            add(child, depth + 1)

    for root in sorted(below.get(-1, []), key=lambda m: m.pid):
        add(root, 0)
    return "\n".join(lines)


def listeners(found: Sequence[Process], port: int, host: str) -> "tuple[List[Process], List[str]]":
    """Who listens on TCP `host`:`port` in the network of the sandbox: (members, descriptions of the others).

    A socket bound to the wildcard address serves `host` too. The sockets
    come from the network namespace's table (/proc/PID/net/tcp, tcp6, read
    through the sandbox's PID 1), their holders from each member's
    descriptors: a listener that no member holds is another process's,
    outside the sandbox, and is described by its address and inode.
    """
    if not found or found[0].host_pid is None:
        return [], []
    wanted = _addresses(host)
    sockets = {inode: address for address, inode in
               ((proc.local_address(raw), inode) for raw, inode in proc.listening_sockets(found[0].host_pid, port))
               if address in wanted or address in _WILDCARDS}
    holders, held = [], set()
    for member in found:
        mine = proc.socket_inodes(member.host_pid) & sockets.keys() if sockets and member.host_pid is not None else set()
        if mine:
            holders.append(member)
            held |= mine
    others = ["%s:%d (socket inode %d)" % (address, port, inode) for inode, address in sockets.items()
              if inode not in held]
    return holders, others


def _addresses(host: str) -> "set[str]":
    """`host` as the set of addresses it names ("localhost" may be both 127.0.0.1 and ::1)."""
    try:
        return {str(ipaddress.ip_address(host))}
    except ValueError:
        pass
    try:
        return {str(ipaddress.ip_address(entry[4][0])) for entry in socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)}
    except OSError:
        return set()
