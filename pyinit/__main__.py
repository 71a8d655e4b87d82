"""`python -m pyinit`: block every signal, then cli.run() (bin/pyinit does the same for the `pyinit` command).

Every signal is blocked first, before anything of pyinit is imported (bin/pyinit does the same
before it imports pyinit.cli): from then on a signal waits in the queue until the init takes
it with sigwaitinfo and forwards it to the child. Python installs a SIGINT handler of its own
at start-up, before any code of ours runs; a SIGINT caught by it comes out of pthread_sigmask
as KeyboardInterrupt, and pyinit exits 130, as a Ctrl-C would have ended it, before it has
started anything. Once the mask is set, no KeyboardInterrupt can happen any more. What is left
unprotected is the interpreter's own start-up; the benchmark measures that window.

Run as a file rather than with -m (pyinit.sandbox.launch does, isolated from the caller's
environment with -I -S, so that PYTHONPATH cannot find pyinit), it puts the directory that
holds the package on sys.path itself.
"""

try:
    import _signal

    _signal.pthread_sigmask(_signal.SIG_BLOCK, _signal.valid_signals())
except KeyboardInterrupt:
    raise SystemExit(130) from None

if not __package__:  # run as a file, as the test side does (python -I -S .../pyinit/__main__.py): no sys.path has us
    import sys

    sys.path.append(__file__.rsplit("/", 2)[0])  # after the standard library: nothing beside the package shadows it

from pyinit.cli import run

if __name__ == "__main__":
    run()
