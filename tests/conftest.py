"""The suite's fixtures; the helpers they use live in support.py, which every test module imports."""

import os
import shutil
import subprocess
import tempfile

import pytest

from support import (PLACEMENTS, REPO, SYSTEM_PYTHON, TIMEOUT, Adopter, Init, Result, Terminal, Venv, clean_env,
                     copy_source, pip)


@pytest.fixture
def start():
    """start(argv, placement="subreaper", **options) -> Init; killed at teardown."""
    runs = []

    def start(argv, placement="subreaper", **options) -> Init:
        init = Init(argv, placement, **options)
        runs.append(init)
        return init

    yield start
    for init in runs:
        init.kill()
    for init in runs:  # whatever the test looked at: no run may print a Python traceback
        if init.stderr_captured:
            init.stderr  # noqa: B018 (the property checks)


@pytest.fixture
def run(start):
    """run(argv, placement="subreaper", input=b"", **options) -> Result, once pyinit has exited.

    Standard input is `input` then end-of-file. Never a Python traceback on
    stderr, whatever the outcome.
    """

    def run(argv, placement="subreaper", *, input=b"", timeout=TIMEOUT, **options) -> Result:
        init = start(argv, placement, **options)
        try:
            stdout, _ = init.proc.communicate(input, timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("pyinit %s did not exit within %.0fs; stderr:\n%s" % (argv, timeout, init.stderr)) from None
        return Result(init.proc.returncode, stdout, init.stderr)

    return run


@pytest.fixture(params=PLACEMENTS)
def placement(request) -> str:
    """`pid1`: PID 1 of a fresh PID namespace; `subreaper`: a plain process."""
    return request.param


@pytest.fixture
def adopter():
    """Make this test process a child subreaper while the test runs.

    pyinit, orphaned when the test kills its parent, then becomes our child,
    and its exit status can be collected. Requested before `start`, it is
    torn down after it: once `start` has killed what was left.
    """
    adopter = Adopter()
    try:
        yield adopter
    finally:
        adopter.close()


@pytest.fixture(scope="module")
def world_readable_package():
    """A copy of the package that any user can import: (directory to run in, environment)."""
    top = tempfile.mkdtemp(prefix="pyinit-launcher-", dir="/tmp")  # not $TMPDIR: it may be private
    try:
        shutil.copytree(REPO / "pyinit", os.path.join(top, "pyinit"), ignore=shutil.ignore_patterns("__pycache__"))
        for directory, _, files in os.walk(top):
            os.chmod(directory, 0o755)
            for name in files:
                os.chmod(os.path.join(directory, name), 0o644)
        env = clean_env(PYTHONPATH=top, PYTHONDONTWRITEBYTECODE="1")
        yield top, env
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture(scope="session")
def installed(tmp_path_factory) -> Venv:
    """pyinit as users install it, once per session: `pip wheel` of a copy of the source tree,
    that wheel pip-installed into a fresh venv of Debian's python3 (pip fetches setuptools from
    PyPI to build it)."""
    if not os.path.exists(SYSTEM_PYTHON):
        pytest.skip("no %s to make a virtual environment from" % SYSTEM_PYTHON)
    root = tmp_path_factory.mktemp("installed")
    pip("wheel", "--no-deps", "--wheel-dir", str(root / "wheels"), str(copy_source(root / "source")))
    (wheel,) = (root / "wheels").glob("pyinit-*.whl")
    return Venv(root / "venv", str(wheel))


@pytest.fixture(scope="session")
def installed_pyinit(installed) -> str:
    """The `installed` venv's bin directory, with pytest added: `pyinit`, `pyinit-check`, `python`,
    and pytest with pyinit's plugin registered through its entry point."""
    pip("--python", str(installed.python), "install", "pytest")
    return str(installed.root / "bin")


@pytest.fixture
def on_pty():
    """on_pty(argv, env=None, cwd=None) -> Terminal running `argv` on a fresh pty;
    on_pty(None, setup=[...], env=None) -> an interactive bash there, at its prompt.
    Whatever is left is killed at the end of the test."""
    terminals = []

    def on_pty(argv, *, setup=(), env=None, cwd=None) -> Terminal:
        terminal = Terminal.shell(env) if argv is None else Terminal(argv, env, cwd=cwd)
        terminals.append(terminal)
        if argv is None:
            terminal.at_prompt(setup)
        return terminal

    yield on_pty
    for terminal in terminals:
        terminal.kill()


def pytest_terminal_summary(terminalreporter):
    """The engine suite's table: what pyinit, tini, dumb-init and no init did in each scenario."""
    import engines

    if engines.RESULTS:
        terminalreporter.write_sep("=", "pyinit beside tini, dumb-init and no init (tests/test_engines.py)")
        terminalreporter.write_line(engines.table(["pyinit", "tini", "dumb-init", "none"]))
