"""The launcher: `pyinit --unshare` (new namespaces, pyinit as their PID 1), `--name`/`--list`, `--enter`.

Only the command line's dispatch (cli.py) imports this package, and only when one of those
options is given: the init alone (an ENTRYPOINT) never loads it. Empty on purpose: a
launcher's start pays for this file, so it imports nothing.
"""
