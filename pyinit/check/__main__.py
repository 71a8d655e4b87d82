"""`python -m pyinit.check`: the same as the `pyinit-check` command."""

from pyinit.check import run

run()
