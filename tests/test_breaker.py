"""The shared circuit breaker (coda.runtime.breaker): pure unit tests, no sockets."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coda.runtime.breaker import CLOSED, HALF_OPEN, OPEN, Breaker, BreakerChange, CircuitOpenError
from coda.v1 import events_pb2


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Boom(Exception):
    pass


class RequestProblem(Exception):
    """Stands for a failure caused by the request, not the dependency."""


def make(
    fail_max: int = 3, reset_seconds: float = 10.0, clock: Clock | None = None
) -> tuple[Breaker, list[BreakerChange]]:
    changes: list[BreakerChange] = []
    breaker = Breaker(
        "dep",
        fail_max=fail_max,
        reset_seconds=reset_seconds,
        exclude=lambda exc: isinstance(exc, RequestProblem),
        on_change=changes.append,
        clock=clock or Clock(),
    )
    return breaker, changes


def transitions(changes: list[BreakerChange]) -> list[tuple[str, str]]:
    return [(c.previous, c.state) for c in changes]


def test_opens_after_fail_max_consecutive_failures() -> None:
    breaker, changes = make(fail_max=3)
    for n in range(2):
        breaker.record_failure(Boom(f"down {n}"))
        assert breaker.state == CLOSED and breaker.allow()
    assert breaker.failures == 2
    breaker.record_failure(Boom("down 2"))
    assert breaker.state == OPEN and not breaker.allow()
    assert breaker.proto_state == events_pb2.BREAKER_STATE_OPEN
    assert transitions(changes) == [(CLOSED, OPEN)]
    assert changes[0].reason == "3 consecutive failures; last: down 2"
    assert (changes[0].proto_previous, changes[0].proto_state) == (
        events_pb2.BREAKER_STATE_CLOSED,
        events_pb2.BREAKER_STATE_OPEN,
    )


def test_a_success_resets_the_failure_streak() -> None:
    breaker, changes = make(fail_max=2)
    breaker.record_failure(Boom("x"))
    breaker.record_success()
    breaker.record_failure(Boom("y"))
    assert breaker.state == CLOSED and breaker.failures == 1 and changes == []


def test_allow_waits_for_the_reset_timeout_on_the_injected_clock() -> None:
    clock = Clock()
    breaker, changes = make(fail_max=1, reset_seconds=10, clock=clock)
    breaker.record_failure(Boom("down"))
    clock.now += 4
    assert not breaker.allow() and breaker.retry_in() == pytest.approx(6)
    clock.now += 6
    assert breaker.allow() and breaker.state == HALF_OPEN and breaker.retry_in() == 0
    assert transitions(changes) == [(CLOSED, OPEN), (OPEN, HALF_OPEN)]
    assert changes[1].reason == "10s passed; letting a trial request through"


async def test_allow_opens_up_again_after_a_real_reset_timeout() -> None:
    breaker = Breaker("dep", fail_max=1, reset_seconds=0.05)
    breaker.record_failure(Boom("down"))
    assert not breaker.allow()
    await asyncio.sleep(0.1)
    assert breaker.allow() and breaker.state == HALF_OPEN


def test_a_successful_trial_closes_and_a_failed_one_reopens_with_a_fresh_timeout() -> None:
    clock = Clock()
    breaker, changes = make(fail_max=1, reset_seconds=10, clock=clock)
    breaker.record_failure(Boom("down"))
    clock.now += 10
    assert breaker.allow()
    breaker.record_failure(Boom("still down"))
    assert breaker.state == OPEN and breaker.retry_in() == pytest.approx(10)
    assert not breaker.allow()
    clock.now += 10
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == CLOSED and breaker.failures == 0
    assert transitions(changes) == [
        (CLOSED, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, OPEN),
        (OPEN, HALF_OPEN),
        (HALF_OPEN, CLOSED),
    ]
    assert "last: still down" in changes[2].reason
    assert changes[-1].reason == "a request succeeded"


def test_excluded_failures_count_as_neither_success_nor_failure() -> None:
    clock = Clock()
    breaker, changes = make(fail_max=2, clock=clock)
    breaker.record_failure(Boom("one"))
    breaker.record_failure(RequestProblem("bad request"))
    assert breaker.failures == 1 and breaker.last_failure == "one"
    breaker.record_failure(Boom("two"))  # the excluded one did not break the streak
    assert breaker.state == OPEN
    clock.now += 10
    assert breaker.allow()
    breaker.record_failure(RequestProblem("bad request"))  # nor does it close a half-open circuit
    assert breaker.state == HALF_OPEN
    assert transitions(changes) == [(CLOSED, OPEN), (OPEN, HALF_OPEN)]


def test_outcomes_reported_while_open_are_stale_and_ignored() -> None:
    breaker, changes = make(fail_max=1)
    breaker.record_failure(Boom("down"))
    breaker.record_success()
    breaker.record_failure(Boom("again"))
    assert breaker.state == OPEN and breaker.last_failure == "down"
    assert transitions(changes) == [(CLOSED, OPEN)]


async def test_call_records_outcomes_and_refuses_while_open() -> None:
    breaker, _ = make(fail_max=1)

    async def answer() -> int:
        return 42

    async def fail() -> int:
        raise Boom("down")

    assert await breaker.call(answer) == 42
    with pytest.raises(Boom):
        await breaker.call(fail)
    reached = False

    async def should_not_run() -> int:
        nonlocal reached
        reached = True
        return 0

    with pytest.raises(CircuitOpenError, match="dep: circuit open after 1 consecutive failures"):
        await breaker.call(should_not_run)
    assert not reached


async def test_a_cancelled_half_open_trial_leaves_the_circuit_half_open() -> None:
    clock = Clock()
    breaker, changes = make(fail_max=1, clock=clock)
    breaker.record_failure(Boom("down"))
    clock.now += 10
    started = asyncio.Event()

    async def hangs() -> None:
        started.set()
        await asyncio.Event().wait()

    trial = asyncio.create_task(breaker.call(hangs))
    await started.wait()
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    # Not closed (the dependency never answered) and not reopened (the caller gave up): the next
    # call is the trial.
    assert breaker.state == HALF_OPEN and breaker.allow() and breaker.failures == 1
    assert transitions(changes) == [(CLOSED, OPEN), (OPEN, HALF_OPEN)]


async def test_cancellation_does_not_reset_the_failure_streak() -> None:
    breaker, _ = make(fail_max=2)
    breaker.record_failure(Boom("one"))
    breaker.record_failure(asyncio.CancelledError())
    assert breaker.failures == 1
    breaker.record_failure(Boom("two"))
    assert breaker.state == OPEN


def test_a_generator_closed_inside_guarded_counts_as_neither() -> None:
    breaker, changes = make(fail_max=1)

    def body() -> object:
        with breaker.guarded():
            yield 1

    steps = body()
    next(steps)
    steps.close()  # GeneratorExit goes through the guarded block
    assert breaker.state == CLOSED and breaker.failures == 0 and changes == []


def test_a_failing_listener_does_not_break_the_call_being_recorded() -> None:
    def broken(_change: BreakerChange) -> None:
        raise RuntimeError("metrics backend gone")

    breaker = Breaker("dep", fail_max=1, reset_seconds=10, on_change=broken)
    breaker.record_failure(Boom("down"))
    assert breaker.state == OPEN


@given(st.lists(st.sampled_from(["ok", "fail", "excluded", "cancelled"]), max_size=30), st.integers(1, 4))
def test_opens_exactly_when_fail_max_counted_failures_follow_the_last_success(
    outcomes: list[str], fail_max: int
) -> None:
    breaker, changes = make(fail_max=fail_max)
    streak, opened = 0, False
    for outcome in outcomes:
        if opened:
            break
        if outcome == "ok":
            breaker.record_success()
            streak = 0
        elif outcome == "fail":
            breaker.record_failure(Boom("down"))
            streak += 1
        elif outcome == "excluded":
            breaker.record_failure(RequestProblem("bad"))
        else:
            breaker.record_failure(asyncio.CancelledError())
        opened = streak >= fail_max
        assert breaker.state == (OPEN if opened else CLOSED)
    assert transitions(changes) == ([(CLOSED, OPEN)] if opened else [])


def test_trip_opens_at_once_with_its_reason_and_reset_closes() -> None:
    clock = Clock()
    breaker, changes = make(fail_max=3, reset_seconds=10.0, clock=clock)
    breaker.trip("the server process exited")
    assert breaker.state == OPEN and not breaker.allow()
    assert changes[-1].tripped and changes[-1].reason == "the server process exited"
    with pytest.raises(CircuitOpenError, match="the server process exited"), breaker.guarded():
        pass
    breaker.trip("it exited again")  # already open: the reason and the clock move on, no new change
    assert len(changes) == 1 and breaker.last_failure == "it exited again"
    breaker.reset("the server is back")
    assert breaker.state == CLOSED and breaker.allow()
    assert transitions(changes) == [(CLOSED, OPEN), (OPEN, CLOSED)]
    assert changes[-1].reason == "the server is back" and not changes[-1].tripped
    breaker.reset("no-op when closed")
    assert len(changes) == 2
    # Tripped, then left alone: it half-opens after reset_seconds like any open circuit.
    breaker.trip("down")
    clock.now += 10.0
    assert breaker.allow() and breaker.state == HALF_OPEN
    breaker.record_failure(Boom("still down"))
    assert breaker.state == OPEN and changes[-1].reason.startswith("1 consecutive failures")
