"""An interactive shell under pyinit, on a real pseudo-terminal, keeps working as it would under tini.

Until pyinit hands the terminal over to its child (a later issue), bash may
warn that it has no job control; that is accepted here. What must work: it
reads commands from the terminal, runs them, prints their output, and its
`exit` code becomes pyinit's.
"""

import shutil

import pexpect
import pytest

from support import clean_env, command

pytestmark = pytest.mark.skipif(not shutil.which("bash"), reason="needs bash")


@pytest.mark.parametrize("options", [[], ["-c"]], ids=["default", "single-child"])
def test_interactive_bash(placement, options):
    argv = command([*options, "--", "bash", "--norc", "--noprofile", "-i"], placement)
    env = clean_env(PS1="prompt> ", TERM="dumb")
    shell = pexpect.spawn(argv[0], argv[1:], env=env, encoding="utf-8", timeout=30, dimensions=(24, 200))
    try:
        shell.expect_exact("prompt> ")
        shell.sendline("echo $((6 * 7))")  # the terminal echoes the command; only bash prints 42
        shell.expect_exact("42\r\n")
        shell.expect_exact("prompt> ")
        shell.sendline("exit 3")
        shell.expect(pexpect.EOF)
        shell.close()
        assert shell.exitstatus == 3, (shell.exitstatus, shell.signalstatus)
        assert "Traceback" not in shell.before
    finally:
        if shell.isalive():
            shell.terminate(force=True)
