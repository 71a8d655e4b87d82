"""The shutdown policy's timers, in-process, on a clock the test moves: milliseconds, no processes.

`shutdown.Policy` only decides (what to send now, what is due when, how
long the loop may sleep); test_shutdown.py checks end to end that the loop
acts on it. Here every rule is checked at the instants that matter: just
before a deadline and at it.
"""

import signal

import pytest

from pyinit.report import Report
from pyinit.shutdown import LONGEST_WAIT, Policy

TERM, INT, QUIT, HUP, USR1, KILL = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1,
                                    signal.SIGKILL)


class Clock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(grace=None, term_delay=0.0, drain=None):
    clock = Clock()
    return Policy(grace, term_delay, drain, Report(("cmd",)), clock=clock), clock


def test_no_timer_no_timeout():
    policy, clock = make()
    assert policy.timeout() is None
    assert policy.admit(USR1, USR1) == [USR1]
    assert policy.admit(TERM, TERM) == [TERM]
    policy.forwarded(TERM)  # no --grace: nothing to time
    assert policy.timeout() is None
    assert policy.expired() == []


@pytest.mark.parametrize("target", [TERM, INT, QUIT, HUP])
def test_grace_starts_on_a_forwarded_terminating_signal(target):
    policy, clock = make(grace=10.0)
    policy.forwarded(target)
    assert policy.timeout() == 10.0
    clock.advance(9.5)
    assert policy.timeout() == pytest.approx(0.5)
    assert policy.expired() == []
    clock.advance(0.5)
    assert policy.timeout() == 0.0
    assert policy.expired() == [KILL]
    assert policy.timeout() is None and policy.expired() == []


def test_grace_ignores_other_signals_and_does_not_restart():
    policy, clock = make(grace=10.0)
    policy.forwarded(USR1)
    assert policy.timeout() is None
    policy.forwarded(TERM)
    clock.advance(6)
    policy.forwarded(TERM)  # a second SIGTERM does not push the deadline back
    clock.advance(4)
    assert policy.expired() == [KILL]


def test_term_delay_holds_sigterm_then_releases_what_it_becomes():
    policy, clock = make(term_delay=5.0)
    assert policy.admit(TERM, QUIT) == []  # -r TERM:QUIT: held as SIGTERM, released as SIGQUIT
    assert policy.timeout() == 5.0
    assert policy.admit(USR1, USR1) == [USR1]  # others pass while it is held
    clock.advance(4.9)
    assert policy.expired() == []
    clock.advance(0.1)
    assert policy.expired() == [QUIT]
    assert policy.timeout() is None


def test_second_sigterm_releases_the_held_one_at_once():
    policy, clock = make(term_delay=5.0)
    assert policy.admit(TERM, TERM) == []
    clock.advance(1)
    assert policy.admit(TERM, TERM) == [TERM]
    assert policy.timeout() is None
    clock.advance(10)
    assert policy.expired() == []


def test_sigint_releases_the_held_sigterm_and_goes_too():
    policy, clock = make(term_delay=5.0)
    policy.admit(TERM, TERM)
    assert policy.admit(INT, INT) == [TERM, INT]
    assert policy.timeout() is None


def test_held_sigterm_then_grace():
    """The grace starts when the held SIGTERM is forwarded, not when it was received."""
    policy, clock = make(grace=3.0, term_delay=5.0)
    policy.admit(TERM, TERM)
    clock.advance(5)
    (released,) = policy.expired()
    policy.forwarded(released)
    assert policy.timeout() == 3.0
    clock.advance(3)
    assert policy.expired() == [KILL]


def test_nearest_deadline_wins():
    policy, clock = make(grace=2.0, term_delay=5.0)
    policy.forwarded(HUP)  # grace: 2 s
    policy.admit(TERM, TERM)  # held: 5 s
    assert policy.timeout() == 2.0
    clock.advance(2)
    assert policy.expired() == [KILL]
    assert policy.timeout() == 3.0


def test_both_due_at_once():
    policy, clock = make(grace=1.0, term_delay=1.0)
    policy.forwarded(TERM)
    policy.admit(TERM, TERM)
    clock.advance(1)
    assert policy.expired() == [TERM, KILL]


@pytest.mark.parametrize("seconds", [1e7, 9.3e9, 1e300])
def test_far_deadlines_are_waited_for_in_steps(seconds):
    """sigtimedwait(2) cannot take every float: the loop is never asked to wait longer than LONGEST_WAIT."""
    policy, clock = make(grace=seconds, term_delay=seconds)
    policy.forwarded(TERM)
    policy.admit(TERM, TERM)
    assert policy.timeout() == LONGEST_WAIT
    clock.advance(LONGEST_WAIT)
    assert policy.expired() == []


def test_deadline_in_the_past_is_zero():
    policy, clock = make(grace=1.0)
    policy.forwarded(TERM)
    clock.advance(100)
    assert policy.timeout() == 0.0


def test_first_terminating_signal_is_judged_after_rewriting():
    policy, clock = make()
    policy.admit(TERM, USR1)  # -r TERM:USR1
    assert policy.report.timeline["first_terminating_signal"] is None
    policy.admit(USR1, TERM)  # -r USR1:TERM
    first = policy.report.timeline["first_terminating_signal"]
    assert first is not None
    policy.admit(TERM, TERM)
    assert policy.report.timeline["first_terminating_signal"] == first


def test_report_carries_the_settings():
    policy, _ = make(grace=8.0, drain=2.0)
    assert policy.report.grace == {"seconds": 8.0, "killed": False, "processes": 0}
    assert policy.report.drain == {"seconds": 2.0, "killed": False, "processes": 0, "stopped": []}
