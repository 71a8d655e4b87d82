"""An interactive shell under pyinit, on a real pseudo-terminal, works as it would under tini.

In every way pyinit is run (a plain process, PID 1 under `unshare --fork --pid`,
the launcher `pyinit --unshare`), with and without `-c`: bash reads commands
from the terminal with job control on, runs them, prints their output, and
its `exit` code becomes pyinit's. test_terminal.py and test_launcher_tty.py
go into the details.
"""

import shutil

import pytest

from support import BASH, INNER_PROMPT, command

pytestmark = pytest.mark.skipif(not shutil.which("bash"), reason="needs bash")


@pytest.mark.parametrize("options", [[], ["-c"]], ids=["default", "single-child"])
@pytest.mark.parametrize("placement", ["pid1", "subreaper", "launcher"])
def test_interactive_bash(on_pty, placement, options):
    if placement == "launcher":
        argv = command(["--unshare", *options, "--", *BASH], "subreaper")
    else:
        argv = command([*options, "--", *BASH], placement)
    shell = on_pty(argv, env={"PS1": INNER_PROMPT})
    shell.expect_exact(INNER_PROMPT)
    shell.sendline('echo "$((6 * 7)) job control:${-//[^m]/}"')  # the terminal echoes the command; only bash prints 42
    shell.expect_exact("42 job control:m\r\n")
    shell.expect_exact(INNER_PROMPT)
    shell.sendline("exit 3")
    assert shell.exit_code() == 3
    assert "Traceback" not in shell.screen and "no job control" not in shell.screen, shell.screen
