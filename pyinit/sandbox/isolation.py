"""Whether this process may make namespaces: asked once per user ID, of the fork server or of a launcher.

A sandbox uses namespaces where the kernel allows them (Sandbox's
isolate="auto"), and says so where it does not (IsolationWarning, or
IsolationError with isolate=True). The answer is kept per user ID, since a
root caller that switches its effective user ID is another caller; a
refusal for want of a resource is not kept.
"""

from __future__ import annotations

import errno
import os
import subprocess
import threading
import warnings
from typing import Mapping, Optional, Union

from pyinit.forkserver.client import ForkServer, caller_state
from pyinit.sandbox.launch import LAUNCHER, START_TIMEOUT
from pyinit.sandbox.result import IsolationError, IsolationWarning

_TRANSIENT = (errno.EAGAIN, errno.ENOMEM, errno.EMFILE, errno.ENFILE)
_refusals: "dict[int, Optional[str]]" = {}
_refusals_lock = threading.Lock()


def decide_isolation(isolate: Union[bool, str]) -> bool:
    """Whether to use namespaces; raise or warn, as `isolate` asks, where the kernel refuses them."""
    if isolate is False:
        return False
    reason = namespaces_refused()
    if reason is None:
        return True
    if isolate is True:
        raise IsolationError("cannot run in namespaces of its own: %s" % reason)
    warnings.warn(IsolationWarning("namespaces refused (%s): running under pyinit as a subreaper instead, "
                                   "which cannot stop a process that leaves its tree" % reason), stacklevel=4)
    return False


def namespaces_refused(env: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """Why the launcher cannot create namespaces here, or None when it can.

    Asked once per user ID: of the fork server, whose first spare launcher
    (forkserver/server.py) tells; without one, of `pyinit --unshare -- true`
    run with the caller's environment (which the launcher's interpreter
    ignores anyway, see LAUNCHER), whose verdict is read from its stderr as
    well as its status: a caller that ignores SIGCHLD sees every child exit
    0. A refusal for want of a resource (EAGAIN, ENOMEM, no descriptor) is
    not remembered: the next sandbox asks again rather than run without
    isolation for good.
    """
    with _refusals_lock:
        uid = os.geteuid()
        if uid in _refusals:
            return _refusals[uid]
        reason = _probe(os.environ if env is None else env)
        if reason is not None and reason.startswith("pyinit: "):
            reason = reason[len("pyinit: "):]
        if reason is None or not any(os.strerror(code) in reason for code in _TRANSIENT):
            _refusals[uid] = reason
        return reason


def _probe(env: Mapping[str, str]) -> Optional[str]:
    """The fork server's answer, or else `pyinit --unshare -- true`'s: None, or what stopped it."""
    try:
        server = ForkServer.serving(caller_state()[0])  # its answer is for what it makes: this thread's identity
        if server is not None:
            return server.namespaces_refused()
    except (OSError, ValueError):
        pass
    probe = subprocess.run([*LAUNCHER, "--unshare", "--", "true"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, env=env, timeout=START_TIMEOUT)
    message = probe.stderr.decode(errors="replace").strip()
    return None if probe.returncode == 0 and not message else (message or "exit code %d" % probe.returncode)
