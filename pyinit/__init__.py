"""pyinit: a minimal init for PID 1 of a container or PID namespace.

It starts one command, forwards the signals it receives to that command's
process group, reaps every zombie re-parented to it, and exits with the
command's status. See README.md and docs/ for the contract and DESIGN.md for the shape.

This file stays import-free: every module pyinit loads is paid for at start-up,
and the init imports this package first. The test-side API (`pyinit.Sandbox`,
`pyinit.run`, ...) is exported lazily: the module-level __getattr__ below
imports pyinit.sandbox on first use of one of its names, never before.
"""

__version__ = "0.1.0"

TYPE_CHECKING = False  # mypy reads the block below; at run time `typing` would cost start-up
if TYPE_CHECKING:
    from pyinit.sandbox import (CommandExited, IsolationError, IsolationWarning, Process, Result, Sandbox,
                                SandboxError, TimeoutExpired, run)

_LAZY = frozenset({"Sandbox", "run", "Process", "Result", "TimeoutExpired", "IsolationWarning", "IsolationError",
                   "CommandExited", "SandboxError"})

__all__ = ["__version__", *sorted(_LAZY)]


def __getattr__(name: str) -> object:
    if name not in _LAZY:
        raise AttributeError("module 'pyinit' has no attribute %r" % name)
    from pyinit import sandbox

    value = getattr(sandbox, name)
    globals()[name] = value
    return value


def __dir__() -> "list[str]":
    return sorted([*globals(), *_LAZY])
