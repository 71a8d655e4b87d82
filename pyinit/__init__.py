"""pyinit: a minimal init for PID 1 of a container or PID namespace.

It starts one command, forwards the signals it receives to that command's
process group, reaps every zombie re-parented to it, and exits with the
command's status. See README.md for the contract and DESIGN.md for the shape.

This file stays import-free: every module pyinit loads is paid for at start-up.
"""

__version__ = "0.1.0"
