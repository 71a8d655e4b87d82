"""The frozen configuration and pyinit's own exit codes: a leaf every module may import.

Only cli.py knows argv and the environment; it builds a Config once, and
every other module reads the fields it needs from it.
"""

EXIT_USAGE = 125  # pyinit's own failure, as `env`, `timeout` and `nice` use it
EXIT_CANNOT_EXECUTE = 126  # the command exists but cannot be run
EXIT_NOT_FOUND = 127  # the command is not found

# The longest --grace, --drain, --settle or --term-delay: about 31.7 years, longer than
# any container lives. The timers wait in sigtimedwait(2), whose timeout
# Python converts to 64-bit nanoseconds (at most about 9.2e9 s); a deadline
# is the monotonic clock (the uptime, seconds) plus the value, so this leaves
# a margin of more than 8e9 s and every accepted value can really be waited.
MAX_SECONDS = 1e9
# The highest file descriptor `--exit-report fd:N` may name: descriptors are
# C ints, and os.write() cannot take a larger number.
MAX_FD = 2**31 - 1


class Config:
    """Everything the init needs to know, fixed once parsing is done."""

    __slots__ = ("command", "single_child", "rewrite", "remap_exit", "pdeathsig", "warn_reaped", "verbosity",
                 "grace", "drain", "settle", "term_delay", "exit_report",
                 "unshare", "user_namespace", "mount_proc", "hostname", "ipc", "net", "pty", "name", "enter", "listing",
                 "bare")

    command: "tuple[str, ...]"
    single_child: bool
    rewrite: "dict[int, int]"  # received signal -> forwarded signal; 0 = drop
    remap_exit: "frozenset[int]"  # child exit codes reported as 0
    pdeathsig: int  # 0 = none
    warn_reaped: bool
    verbosity: int
    grace: "float | None"  # seconds from a forwarded terminating signal to SIGKILL
    drain: "float | None"  # seconds leftovers get after the child's exit; None: the default
    settle: float  # seconds the rest get to exit on their own after the child's exit, before the report and drain
    term_delay: float  # seconds a received SIGTERM is held
    exit_report: "str | None"  # a path, or fd:N
    unshare: bool  # run as the launcher: new namespaces, the init as their PID 1
    user_namespace: bool  # --user; the launcher also adds one when not root
    mount_proc: bool
    hostname: "str | None"  # a UTS namespace with this name
    ipc: bool  # an IPC namespace
    net: bool  # a network namespace, with lo up and nothing else
    pty: "bool | None"  # the launcher (or --enter) gives the command a pty of its own; None: when stdin is a terminal
    name: "str | None"  # --name: the launcher registers its namespace under it (registry.py)
    enter: "str | None"  # --enter NAME|PID: run the command in that running namespace (enter.py)
    listing: "str | None"  # --list: "table", or "json" with --json; the command is then empty
    bare: bool  # --bare: the launcher's PID 1 execs the command itself, with no init (launcher/namespace.py)

    def __init__(self, **fields: object) -> None:
        for field, value in fields.items():
            object.__setattr__(self, field, value)

    def __setattr__(self, field: str, value: object) -> None:
        raise AttributeError("Config is read-only")

    def replace(self, **changes: object) -> "Config":
        """A copy with some fields changed."""
        fields = {field: getattr(self, field) for field in self.__slots__}
        fields.update(changes)
        return Config(**fields)

    def __repr__(self) -> str:
        return "Config(%s)" % ", ".join("%s=%r" % (f, getattr(self, f)) for f in self.__slots__)
