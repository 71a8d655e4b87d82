"""The text of `pyinit --help`: a module of its own, which only -h loads (an init's start need not read it)."""

HELP = """\
usage: pyinit [OPTIONS] [--] COMMAND [ARG...]

A minimal init for PID 1: runs COMMAND as its child, forwards every signal it
receives to the child's process group, reaps every zombie, and exits with the
child's exit status (128+N when signal N killed it).

options:
  -c, --single-child     forward signals to the child only, not its group;
                         the child then stays in pyinit's process group
  -g                     forward to the child's process group (the default;
                         accepted for tini compatibility)
  -r, --rewrite S:R      forward received signal S as R; R=0 drops S.
                         Numbers or names: 15:3, TERM:QUIT. Repeatable
  -e, --remap-exit CODE  exit 0 when the child's exit code is CODE (0-255,
                         128+N for signal N). Repeatable
  -p, --pdeathsig SIG    receive SIG when pyinit's parent dies, and handle it
                         like any other received signal
  --grace SECONDS        SIGKILL the child's group if it has not exited
                         SECONDS after a terminating signal was forwarded
  --drain SECONDS        when the child exits, SIGTERM what it left behind
                         and SIGKILL what is left after SECONDS (default:
                         off as PID 1, 2 seconds otherwise)
  --settle SECONDS       when the child exits, wait up to SECONDS for the
                         rest to exit on their own (reaping them), before
                         the exit report and the drain (default 0)
  --term-delay SECONDS   hold a received SIGTERM this long before forwarding
                         it; a second SIGTERM or a SIGINT forwards at once
                         (SECONDS: 0 to 1000000000, decimals allowed)
  --exit-report PATH     on exit, write a JSON report to PATH (or fd:N)
  -s, --subreaper        accepted for tini compatibility: pyinit becomes a
                         child subreaper by itself whenever it is not PID 1
  -w, --warn-reaped      log every reaped process other than the child
  -v, --verbose          log more: -v signals and reaps, -vv plumbing
  -q, --quiet            log errors only
  -V, --version          print the version and exit
  -h, --help             print this help and exit

launcher (pyinit creates the namespaces and runs itself in them as PID 1):
  --unshare              new PID and mount namespaces with a fresh /proc
  --user                 also a user namespace mapping you to root inside
                         (automatic when you are not root)
  --no-mount-proc        keep the /proc above (for a masked /proc)
  --hostname NAME        also a UTS namespace, with this host name
  --ipc                  also an IPC namespace
  --net                  also a network namespace: lo alone, up
  --name NAME            register the namespace under NAME while it runs, for
                         --list and --enter (letters, digits, '.', '_', '-')
  --pty, --no-pty        give the command a pseudo-terminal of its own, relayed
                         to yours, or not (default: when stdin is a terminal);
                         with --unshare or --enter
  --bare                 no init: COMMAND itself is PID 1 of the namespaces,
                         as in a container without one (no pty); the launcher
                         relays signals, and honours --grace, --rewrite and
                         --exit-report; see pyinit-check --bare

getting back in:
  --list [--json]        list your named namespaces that run: NAME, PID (their
                         PID 1, on the host), AGE, PROCS (members), COMMAND
  --enter NAME|PID       run COMMAND inside a running namespace, named, or
                         found by the host PID of its PID 1: in its user
                         (when its own), pid, mount, UTS, IPC, network,
                         cgroup and time namespaces, root and working
                         directory. COMMAND is a member (its orphans go to
                         that PID 1), gets the signals pyinit gets, and its
                         exit status is pyinit's. -c, -r, -e, -p, --pty apply

environment (flags win over these):
  PYINIT_VERBOSITY=N     0 errors only, 1 warnings (default), 2 like -v,
                         3 like -vv (tini's TINI_VERBOSITY is read too)
  PYINIT_SINGLE_CHILD=1  like -c (dumb-init's DUMB_INIT_SETSID=0 too; 1 or 0)
  PYINIT_REWRITE=S:R,... like -r for each item
  PYINIT_REMAP_EXIT=N,.. like -e for each item
  PYINIT_PDEATHSIG=SIG   like -p
  PYINIT_PTY=1|0         like --pty, --no-pty
  PYINIT_NAME=NAME       like --name (read by the launcher only)
  PYINIT_WARN_REAPED=1   like -w
  PYINIT_GRACE, PYINIT_DRAIN, PYINIT_SETTLE, PYINIT_TERM_DELAY,
  PYINIT_EXIT_REPORT     like --grace, --drain, --settle, --term-delay,
                         --exit-report

exit status: the child's; 128+N if signal N killed it; 125 if pyinit itself
failed; 126 if COMMAND cannot be executed; 127 if it is not found.
"""
