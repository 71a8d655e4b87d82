"""Start-up, as users run pyinit: what it imports, the window before its signals are blocked,
and a C library interface that cannot be loaded.

The installed command (the `installed` venv of Debian's python3) is what users start; its cost
over the bare interpreter is the benchmark's business, what it does is pinned here.
"""

import collections
import os
import re
import resource
import signal
import subprocess
import sys
import time

import pytest

from support import PLACEMENTS, REPO, TIMEOUT, UNSHARE, assert_no_traceback, clean_env, pyinit_lines


def imported(importtime_output: str) -> "set[str]":
    """The modules `-X importtime` reports as imported."""
    return {line.rpartition("|")[2].strip() for line in importtime_output.splitlines()
            if line.startswith("import time:") and not line.endswith("imported package")}


@pytest.mark.parametrize("placement", PLACEMENTS)
def test_the_installed_command_imports_only_pyinit_beyond_the_bare_interpreter(installed, placement):
    """No `re`, `ctypes`, `typing`, `enum`, `signal`, `warnings`... in pyinit or in its child before exec.

    Beyond pyinit's own modules only `errno`, and when pyinit is not PID 1
    the C module `_ctypes`, for the prctl(2) that makes it a subreaper. With
    no option and nothing left behind, neither the shutdown timers nor the
    exit report are loaded, and as PID 1 nor are the syscall wrappers.
    """
    prefix = UNSHARE if placement == "pid1" else []
    bare = installed.run([*prefix, str(installed.python), "-X", "importtime", "-c", "pass"])
    run = installed.run([*prefix, str(installed.python), "-X", "importtime", str(installed.pyinit), "--", "true"])
    assert bare.returncode == run.returncode == 0, run
    extra = imported(run.stderr) - imported(bare.stderr)
    ours = {name for name in extra if name == "pyinit" or name.startswith("pyinit.")}
    assert {"pyinit.cli", "pyinit.init", "pyinit.spawn"} <= ours and "pyinit.__main__" not in ours
    # No timer, no exit report, nothing left to drain: what only they need is not loaded; as PID 1 nor
    # is what the subreaper needs.
    assert not ours & {"pyinit.shutdown", "pyinit.report"}, ours
    if placement == "pid1":
        assert "pyinit.linux" not in ours, ours
    assert not {name for name in ours if name.split(".")[1:2] in (["launcher"], ["sandbox"], ["forkserver"], ["check"])}
    assert extra - ours == ({"errno", "_ctypes"} if placement == "subreaper" else {"errno"})


def test_the_launcher_adds_one_package_and_its_namespace_module_to_the_inits_imports(installed):
    """`pyinit --unshare -- true` loads the init's modules plus pyinit.launcher (an empty __init__) and
    its namespace.py: not the pty relay, the registry or --enter, which their options import, and
    nothing of the test side (sandbox/, forkserver/, check/)."""
    init = installed.run([str(installed.python), "-X", "importtime", str(installed.pyinit), "--", "true"])
    launcher = installed.run([str(installed.python), "-X", "importtime", str(installed.pyinit), "--unshare",
                              "--no-pty", "--", "true"])
    assert init.returncode == launcher.returncode == 0, launcher
    added = {name for name in imported(launcher.stderr) - imported(init.stderr) if name.startswith("pyinit")}
    assert added == {"pyinit.launcher", "pyinit.launcher.namespace"}, added


def frames(stderr: str) -> "list[tuple[str, int]]":
    return [(path, int(line)) for path, line in re.findall(r'^  File "(.*)", line (\d+)', stderr, re.M)]


@pytest.mark.parametrize("entry", ["command", "python -m pyinit"])
def test_sigint_at_start_up_never_gives_a_traceback_through_pyinit_nor_is_lost(installed, entry):
    """SIGINT at many small delays after exec, over the whole start-up: never a traceback from pyinit's code.

    The entry (bin/pyinit, or __main__.py for `-m`) blocks every signal
    before importing anything of pyinit's. Before that statement the
    interpreter's own start-up runs (its `site`, and for `-m` its `runpy`),
    where Python's SIGINT handler can raise KeyboardInterrupt in frames of
    its own (`<frozen ...>`), or kill the process before the handler is
    installed: that window is the interpreter's, and the benchmark measures
    it. The interpreter's start-up can even swallow the KeyboardInterrupt
    itself: raised in a weakref callback of the import lock ("Exception
    ignored in") or while it checks argv[0] for a zipimport ("Failed
    checking if argv[0] is an import path entry"), it is printed and
    cleared, and the SIGINT is gone before pyinit's first statement (seen 2
    in 600 tries on a loaded machine). What may never happen: a frame in
    pyinit's package, or in the command's script past the blocking
    statement, and a SIGINT lost where the interpreter did not swallow it
    (the command, `sleep 5`, would then run to its end and exit 0).
    """
    argv = [str(installed.pyinit)] if entry == "command" else [str(installed.python), "-m", "pyinit"]
    script = installed.pyinit.read_text().splitlines()
    blocking_line = next(n for n, line in enumerate(script, 1) if "pthread_sigmask" in line)
    package = installed.run([str(installed.python), "-c", "import pyinit; print(pyinit.__path__[0])"]).stdout.strip()
    started = time.monotonic()
    assert installed.run([*argv, "--", "true"]).returncode == 0
    span = 2 * (time.monotonic() - started)  # the delays cover a start-up twice over
    outcomes: "collections.Counter[int | str]" = collections.Counter()
    for attempt in range(100):
        process = subprocess.Popen([*argv, "--", "sleep", "5"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True, cwd="/", env=installed.environment())
        time.sleep(span * attempt / 100)  # Popen returns once the exec has succeeded
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=TIMEOUT)
        for path, line in frames(stderr):
            # `python -m pyinit` has runpy run the package's __init__.py (import-free, lazy exports
            # only) before __main__.py can block anything: that file is the interpreter's window too.
            before_the_entry = entry != "command" and path == package + "/__init__.py"
            assert before_the_entry or not path.startswith(package + "/"), "a traceback through pyinit's package:\n" + stderr
            assert not (path == str(installed.pyinit) and line > blocking_line), "past the block:\n" + stderr
        swallowed = "KeyboardInterrupt" in stderr and all(path.startswith("<frozen ") for path, _ in frames(stderr))
        assert process.returncode != 0 or swallowed, "the SIGINT was lost: the command ran to its end\n" + stderr
        outcomes["swallowed by the interpreter" if swallowed and process.returncode == 0 else process.returncode] += 1
    assert outcomes[128 + signal.SIGINT] > 0, outcomes  # some came after pyinit blocked them, and were forwarded


@pytest.mark.skipif(hasattr(os, "unshare"), reason="this Python has os.unshare: the launcher loads no _ctypes")
def test_a_descriptor_limit_too_low_to_load_ctypes_is_named_as_such():
    """RLIMIT_NOFILE of 5: stdin, stdout, stderr and the two ends of the launcher's pipe; nothing left to load `_ctypes` with.

    Without os.unshare (before 3.12) the launcher needs it for unshare(2):
    the one line says that the call was never made, and why, not that the
    kernel refused it. (With os.unshare the init loads it for prctl(2),
    after the fork, with the descriptor of the pipe's end it closed: no
    limit starves that load and lets the launcher's pipe be made. The
    message comes from the same loader, linux.LoadError.) `-S`: with no
    site-packages to process, the interpreter starts with one free
    descriptor.
    """
    def run(limit: int) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-S", "-m", "pyinit", "--unshare", "--", "true"], capture_output=True,
                              text=True, cwd=REPO, env=clean_env(), timeout=TIMEOUT,
                              preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)))

    assert run(64).returncode == 0  # the control: the limit alone makes the difference
    result = run(5)
    assert result.returncode == 125, result
    assert_no_traceback(result.stderr)
    (line,) = pyinit_lines(result.stderr)
    call = "unshare"
    assert "%s(2) was not called: loading _ctypes failed: Too many open files" % call in line, line
