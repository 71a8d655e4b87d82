"""Signal recorder: the child that proves which signals reached it.

It blocks every signal it can and collects them with sigwaitinfo(), so no
signal has its default effect here (SIGTSTP does not stop it, SIGINT does not
kill it, SIGCONT does nothing): each one is reported, in the order it is
taken, as one line on stdout:

    TAG SIGNO SENDER

SENDER is si_pid, the sender's PID as this process sees it. A signal that
pyinit forwarded names pyinit (1 inside its namespace), which tells a
forwarded signal apart from one that reached the child some other way.

It prints `TAG ready` once everything is blocked, so a test that waits for
that line cannot lose a signal to a default action. Each line is a single
os.write() of less than PIPE_BUF bytes, so the lines of a child and of its
grandchild sharing one pipe never interleave.

Pending standard signals are taken lowest number first; tests that prove a
signal was *not* delivered rely on that: they send a higher-numbered marker
afterwards and check that the marker is the next thing reported.

usage: recorder.py TAG [--grandchild] [--exit-on SIGNO] [--signal-parent SIGNO]
  --grandchild   first start a second recorder tagged `TAG-grandchild`, an
                 ordinary child that stays in this process's group and session
  --exit-on N    exit 0 right after reporting signal N (default 15, SIGTERM;
                 0 means never)
  --signal-parent N
                 once ready, send signal N to the parent (pyinit): a signal
                 that reaches PID 1 from inside its own namespace
"""

import os
import signal
import sys


def main() -> None:
    tag = sys.argv[1]
    options = sys.argv[2:]
    exit_on = signal.SIGTERM
    if "--exit-on" in options:
        exit_on = int(options[options.index("--exit-on") + 1])
    if "--grandchild" in options:
        # Started before this process blocks anything: it begins with a clean
        # signal state and blocks for itself, then says ready on its own.
        os.posix_spawn(sys.executable, [sys.executable, "-I", "-S", __file__, tag + "-grandchild"], os.environ)
    catchable = signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}
    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    os.write(1, b"%s ready\n" % tag.encode())
    if "--signal-parent" in options:
        os.kill(os.getppid(), int(options[options.index("--signal-parent") + 1]))
    while True:
        info = signal.sigwaitinfo(catchable)
        os.write(1, b"%s %d %d\n" % (tag.encode(), info.si_signo, info.si_pid))
        if info.si_signo == exit_on:
            os._exit(0)


if __name__ == "__main__":
    main()
