"""pyinit as users install it: `pip install` of a wheel or of the source tree gives a working
`pyinit` command on PATH, compiled; `python -m pyinit` works in the venv and from a clone with
nothing installed.

Every venv is made from Debian's /usr/bin/python3 and runs with no PYTHONPATH and from /, so
nothing can come from the source tree by accident.
"""

import re
import subprocess

from support import REPO, SYSTEM_PYTHON, TIMEOUT, UNSHARE, Venv, assert_no_traceback, clean_env, copy_source

VERSION = re.search(r'^__version__ = "(.*)"$', (REPO / "pyinit" / "__init__.py").read_text(), re.M).group(1)


def assert_installed_command_works(venv: Venv) -> None:
    """The command is on PATH, names the venv's interpreter, runs, and every module has its bytecode."""
    first_line = venv.pyinit.read_text().partition("\n")[0]
    assert first_line == "#!%s" % venv.python, first_line  # pip rewrote the script's `#!` line
    result = venv.run(["pyinit", "--", "sh", "-c", "exit 3"])  # found through PATH
    assert (result.returncode, result.stdout, result.stderr) == (3, "", ""), result
    assert venv.run(["pyinit", "--version"]).stdout == "pyinit %s\n" % VERSION
    package = venv.run([str(venv.python), "-c", "import pyinit; print(pyinit.__path__[0])"]).stdout.strip()
    assert package.startswith(str(venv.root)), package  # the installed copy, not the source tree
    tag = venv.run([str(venv.python), "-c", "import sys; print(sys.implementation.cache_tag)"]).stdout.strip()
    modules = sorted(path.stem for path in (REPO / "pyinit").glob("*.py"))
    compiled = sorted(venv.run(["ls", package + "/__pycache__"]).stdout.split())
    assert compiled == ["%s.%s.pyc" % (module, tag) for module in modules]  # no compiling at start-up


def test_the_wheel_installs_a_pyinit_command(installed):
    """`pip wheel .` then `pip install` of the wheel (what the session's venv is)."""
    assert_installed_command_works(installed)


def test_pip_install_of_the_source_tree_installs_a_pyinit_command(tmp_path):
    """`pip install .` from a clone."""
    assert_installed_command_works(Venv(tmp_path / "venv", str(copy_source(tmp_path / "clone"))))


def test_the_installed_command_as_pid1_and_as_the_launcher(installed):
    result = installed.run([*UNSHARE, str(installed.pyinit), "--", "sh", "-c", 'echo "$$ $PPID"; exit 4'])
    assert (result.returncode, result.stdout) == (4, "2 1\n"), result
    result = installed.run([str(installed.pyinit), "--unshare", "--", "sh", "-c", 'echo "$$ $PPID"; exit 5'])
    assert (result.returncode, result.stdout) == (5, "2 1\n"), result
    assert_no_traceback(result.stderr)


def test_python_m_pyinit_in_the_venv(installed):
    result = installed.run([str(installed.python), "-m", "pyinit", "--", "sh", "-c", "exit 6"])
    assert (result.returncode, result.stderr) == (6, ""), result


def test_python_m_pyinit_from_a_clone_with_nothing_installed(tmp_path):
    clone = copy_source(tmp_path / "clone")
    env = clean_env()
    del env["PYTHONPATH"]
    elsewhere = subprocess.run([SYSTEM_PYTHON, "-c", "import pyinit"], capture_output=True, text=True, cwd="/",
                               env=env, timeout=TIMEOUT)
    assert "No module named 'pyinit'" in elsewhere.stderr  # the control: nothing installed for this python
    result = subprocess.run([SYSTEM_PYTHON, "-m", "pyinit", "--", "sh", "-c", "exit 7"], capture_output=True,
                            text=True, cwd=clone, env=env, timeout=TIMEOUT)
    assert (result.returncode, result.stderr) == (7, ""), result
