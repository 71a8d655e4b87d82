"""Signal numbers, names, the forwarded set and the rewrite table.

pyinit talks to `_signal`, the C module under the standard `signal` module:
`signal` wraps every number in an enum, and importing `enum` costs about as
much as the rest of pyinit's start-up together (measured by the benchmark).
The functions used here take and return plain ints in both modules.
"""

import os

try:
    import _signal as api
except ImportError:  # an interpreter without CPython's C module
    import signal as api  # type: ignore[no-redef]

SIGCHLD: int = api.SIGCHLD
SIGKILL: int = api.SIGKILL
SIGSTOP: int = api.SIGSTOP

# Every signal the C library lets a program use: 1-31 and SIGRTMIN..SIGRTMAX
# (glibc keeps 32 and 33 for its threads, so they are not in this set).
VALID: frozenset = frozenset(api.valid_signals())

# The signals the init waits for: everything it can block. SIGKILL and SIGSTOP
# can be neither blocked nor caught; the kernel drops them from any mask.
WAITED: frozenset = VALID - {SIGKILL, SIGSTOP}

# The signals passed on to the child: every catchable one but SIGCHLD, which
# is the init's own business (it means "reap"), not the child's.
FORWARDED: frozenset = WAITED - {SIGCHLD}

# Python ignores these itself at start-up, so their inherited disposition
# cannot be known; the child gets the default, as subprocess gives it too.
_SET_BY_PYTHON = frozenset({api.SIGPIPE, api.SIGXFSZ})

_SI_USER = 0  # si_code of kill(2), and of the signal the kernel raises for a failed write
_WRITE_ERRORS = frozenset({api.SIGPIPE, api.SIGXFSZ})  # what a failed write(2) raises


def raised_by_own_write(signo: int, code: int, sender: int) -> bool:
    """Whether our own write to a broken or full stream raised this signal: about us, not for the child.

    The signal number is compared first: getpid(2) is only asked for the
    rare SIGPIPE or SIGXFSZ, never on the forwarding path.
    """
    return signo in _WRITE_ERRORS and code == _SI_USER and sender == os.getpid()


# Standard names that duplicate another; parsed, never printed.
_ALIASES = {"SIGCLD", "SIGIOT", "SIGPOLL"}


def _standard_names() -> dict:
    return {
        name: number
        for name, number in vars(api).items()
        if name.startswith("SIG") and not name.startswith("SIG_") and isinstance(number, int)
        and name not in ("SIGRTMIN", "SIGRTMAX")
    }


def inherited_ignored() -> "frozenset[int]":
    """The signals pyinit's caller left ignored (nohup's SIGHUP, say), for the child to inherit as exec(2) would.

    The signal module read every disposition at start-up, so SIG_IGN there
    was inherited: Python itself only ignores SIGPIPE and SIGXFSZ. Valid
    until pyinit changes a disposition itself (init.block_signals reads it
    first).
    """
    return frozenset(signo for signo in WAITED - _SET_BY_PYTHON if api.getsignal(signo) == api.SIG_IGN)


_names: "dict[int, str]" = {}


def name(number: int) -> str:
    """The conventional name of a signal: SIGTERM, SIGRTMIN+3, SIGRTMAX-1.

    The table is built on first use and then costs a dictionary look-up, so
    log calls on the forwarding path can name signals whether or not the
    line will be printed.
    """
    if not _names:
        _names.update(_build_names())
    return _names.get(number) or "signal %d" % number


def _build_names() -> "dict[int, str]":
    names = {number: candidate for candidate, number in _standard_names().items() if candidate not in _ALIASES}
    low, high = api.SIGRTMIN, api.SIGRTMAX
    for number in range(low, high + 1):
        if number - low <= high - number:
            names[number] = "SIGRTMIN+%d" % (number - low) if number > low else "SIGRTMIN"
        else:
            names[number] = "SIGRTMAX-%d" % (high - number) if number < high else "SIGRTMAX"
    return names


def _parse_realtime(upper: str) -> "int | None":
    for base_name, base, sign, step in (("SIGRTMIN", api.SIGRTMIN, "+", 1), ("SIGRTMAX", api.SIGRTMAX, "-", -1)):
        if upper == base_name:
            return base
        offset = upper[len(base_name) + 1:]
        if upper.startswith(base_name + sign) and offset.isdigit():
            return base + step * int(offset)
    return None


def parse(text: str, allow_zero: bool = False) -> int:
    """A signal from a number or a name (15, TERM, SIGTERM, term, RTMIN+2).

    Raises ValueError with a message fit for the user. `allow_zero` admits 0,
    which means "no signal" where the caller gives it that meaning. Only
    ASCII is read: str.isdigit() takes other scripts' digits ('٣'), and
    str.upper() turns the long s of 'ſigterm' into an S.
    """
    if not text.isascii():
        raise ValueError("'%s' is not a signal name or number (ASCII only)" % text)
    spec = text.strip()
    if spec.isdigit():
        number = int(spec)
        if number == 0 and allow_zero:
            return 0
        if number in VALID:
            return number
        raise ValueError("'%s' is not a signal number this system knows" % text)
    upper = spec.upper()
    if not upper.startswith("SIG"):
        upper = "SIG" + upper
    named = _standard_names().get(upper)
    if named is None:
        named = _parse_realtime(upper)
    if named is None or named not in VALID:
        raise ValueError("'%s' is not a signal name or number" % text)
    return named


def parse_rewrite(spec: str) -> "tuple[int, int]":
    """`S:R` -> (S, R): forward received signal S as R; R = 0 drops S."""
    source_text, colon, target_text = spec.partition(":")
    if not colon:
        raise ValueError("rewrite '%s' is not of the form SIGNAL:SIGNAL (e.g. 15:3 or TERM:QUIT)" % spec)
    source = parse(source_text)
    if source not in FORWARDED:
        raise ValueError("rewrite '%s': %s is never forwarded, so it cannot be rewritten" % (spec, name(source)))
    return source, parse(target_text, allow_zero=True)
