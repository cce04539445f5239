"""The one circuit breaker every component uses around a dependency it calls (a provider, a tool, an engine).

pybreaker is the state machine (closed -> open -> half-open -> closed) and keeps the consecutive-failure
count. Calls here are async, so a call never runs *inside* pybreaker: ask `allow()` first, then report
the outcome with `record_success()` / `record_failure(exc)`, or let `call()` / `guarded()` do both.

The time the circuit opened is kept here, from pybreaker's state-change hook, on the monotonic clock:
pybreaker's own timestamp sits in its private storage and follows the wall clock. Because `allow()`
moves an open circuit to half-open itself once the reset timeout has passed, pybreaker never has to
look at its timestamp: outcomes are only ever reported to it while it is closed or half-open.

What is not a failure:
- anything the `exclude` predicate accepts (a failure caused by the request, not by the dependency);
- anything that is not an `Exception`: cancellation (`asyncio.CancelledError`), a closed generator
  (`GeneratorExit`), shutdown. The caller stopped waiting; the dependency never got to answer.
Those count as neither success nor failure: the failure streak and the state stay as they were.

All methods are meant to be used from one event loop (no awaits inside, so no interleaving).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import pybreaker

from coda.v1 import events_pb2

log = logging.getLogger(__name__)

T = TypeVar("T")

CLOSED = pybreaker.STATE_CLOSED
OPEN = pybreaker.STATE_OPEN
HALF_OPEN = pybreaker.STATE_HALF_OPEN

#: Breaker state name -> the `BreakerState` enum of the event schema.
PROTO_STATES: dict[str, events_pb2.BreakerState.ValueType] = {
    CLOSED: events_pb2.BREAKER_STATE_CLOSED,
    OPEN: events_pb2.BREAKER_STATE_OPEN,
    HALF_OPEN: events_pb2.BREAKER_STATE_HALF_OPEN,
}


def proto_state(state: str) -> events_pb2.BreakerState.ValueType:
    return PROTO_STATES.get(state, events_pb2.BREAKER_STATE_UNSPECIFIED)


class CircuitOpenError(pybreaker.CircuitBreakerError):
    """The circuit is open: the call was refused without reaching the dependency."""


@dataclass(frozen=True)
class BreakerChange:
    """One state transition, as handed to the breaker's `on_change` hook."""

    name: str
    previous: str
    state: str
    #: Consecutive counted failures at the moment of the change.
    failures: int
    #: The text of the last counted failure ("" if none yet).
    last_failure: str
    reset_seconds: float
    #: Why the state changed, in words fit for an event or a log line.
    reason: str
    #: The owner opened it with `trip` (the dependency is known to be down), not `fail_max` failures.
    tripped: bool = False

    @property
    def proto_state(self) -> events_pb2.BreakerState.ValueType:
        return proto_state(self.state)

    @property
    def proto_previous(self) -> events_pb2.BreakerState.ValueType:
        return proto_state(self.previous)


class Breaker:
    """A circuit around one dependency: fail fast after `fail_max` consecutive failures, then let
    calls through again (half-open) once `reset_seconds` have passed; one success closes it."""

    def __init__(
        self,
        name: str,
        *,
        fail_max: int,
        reset_seconds: float,
        exclude: Callable[[BaseException], bool] | None = None,
        on_change: Callable[[BreakerChange], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.reset_seconds = reset_seconds
        self.last_failure = ""
        self._exclude = exclude
        self._on_change = on_change
        self._clock = clock
        self._state = CLOSED
        self._opened_at: float | None = None
        #: Why `trip` opened the circuit ("" when failures opened it or it is not open).
        self._tripped = ""
        #: Why `reset` is closing the circuit, while it does.
        self._closed_by = ""
        self._circuit = pybreaker.CircuitBreaker(
            fail_max=max(1, fail_max),
            reset_timeout=reset_seconds,
            listeners=[_StateHook(self)],
            name=name,
            # The failure itself comes back out of pybreaker; record_failure swallows it.
            throw_new_error_on_trip=False,
        )

    @property
    def fail_max(self) -> int:
        return self._circuit.fail_max

    @property
    def failures(self) -> int:
        """Consecutive counted failures so far."""
        return self._circuit.fail_counter

    @property
    def state(self) -> str:
        """ "closed", "open" or "half-open"."""
        return self._state

    @property
    def proto_state(self) -> events_pb2.BreakerState.ValueType:
        return proto_state(self._state)

    def retry_in(self) -> float:
        """Seconds until an open circuit lets a trial call through; 0 when calls go through now."""
        if self._state != OPEN or self._opened_at is None:
            return 0.0
        return max(0.0, self._opened_at + self.reset_seconds - self._clock())

    def allow(self) -> bool:
        """Whether a call may go through now. Past the reset timeout this half-opens the circuit:
        the calls let through are trials, and the first outcome closes or reopens it."""
        if self._state != OPEN:
            return True
        if self.retry_in() > 0:
            return False
        self._circuit.half_open()
        return True

    def counts(self, exc: BaseException) -> bool:
        """Whether `exc` says the dependency is unhealthy (see the module docstring)."""
        if not isinstance(exc, Exception):
            return False
        return not (self._exclude is not None and self._exclude(exc))

    def record_success(self) -> None:
        # An outcome reported while open comes from a call that started before the circuit opened:
        # it is stale, and only a trial after the reset timeout may close the circuit.
        if self._state == OPEN:
            return
        self._circuit.call(_succeed)

    def record_failure(self, exc: BaseException) -> None:
        """Count `exc` against the dependency unless it is excluded; the caller still raises it."""
        # Cancellation of a half-open trial lands here too and is deliberately not counted either way.
        # pybreaker would treat it (as any excluded exception) as a success, and that success would
        # close the circuit although the dependency never answered: a dead server would be declared
        # healthy whenever the caller hung up during the trial. Counting it as a failure would reopen
        # the circuit because of the caller. So the circuit stays half-open and the next call is the trial.
        if self._state == OPEN or not self.counts(exc):
            return
        self.last_failure = str(exc)
        try:
            self._circuit.call(_raise, exc)
        except BaseException as raised:
            if raised is not exc:
                raise

    def trip(self, reason: str) -> None:
        """Open the circuit now, without waiting for `fail_max` failures: the owner knows the dependency
        is down (a supervised process died). It half-opens after `reset_seconds` as usual, or `reset`
        closes it once the dependency is back."""
        self.last_failure = reason
        self._tripped = reason
        if self._state == OPEN:
            self._opened_at = self._clock()
            return
        self._circuit.open()

    def reset(self, reason: str = "") -> None:
        """Close the circuit now (the owner knows the dependency is back); no-op when closed."""
        if self._state != CLOSED:
            self._closed_by = reason
            try:
                self._circuit.close()
            finally:
                self._closed_by = ""

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Await `operation()` if the circuit allows it, recording its outcome; CircuitOpenError if not."""
        with self.guarded():
            return await operation()

    @contextlib.contextmanager
    def guarded(self) -> Iterator[None]:
        """Run a block (awaits included) as one call: CircuitOpenError at entry while open, then the
        block's outcome is recorded and its exception, if any, re-raised unchanged."""
        if not self.allow():
            raise CircuitOpenError(
                f"{self.name}: circuit open after {self.failures} consecutive failures "
                f"(last: {self.last_failure}); retry in {self.retry_in():.1f}s"
            )
        try:
            yield
        except BaseException as exc:
            self.record_failure(exc)
            raise
        self.record_success()

    def _changed(self, previous: str, state: str) -> None:
        self._state = state
        if state != OPEN:
            self._tripped = ""
        if state == OPEN:
            self._opened_at = self._clock()
        change = BreakerChange(
            name=self.name,
            previous=previous,
            state=state,
            failures=self.failures,
            last_failure=self.last_failure,
            reset_seconds=self.reset_seconds,
            reason=self._reason(state),
            tripped=state == OPEN and bool(self._tripped),
        )
        if self._on_change is None:
            return
        try:
            self._on_change(change)
        except Exception:
            # Publishing or a metric failed: that must not change the outcome of the call being recorded.
            log.exception("circuit breaker listener failed", extra={"breaker": self.name, "state": state})

    def _reason(self, state: str) -> str:
        if state == OPEN and self._tripped:
            return self._tripped
        if state == OPEN:
            return f"{self.failures} consecutive failures; last: {self.last_failure}"
        if state == HALF_OPEN:
            return f"{self.reset_seconds:g}s passed; letting a trial request through"
        return self._closed_by or "a request succeeded"


class _StateHook(pybreaker.CircuitBreakerListener):
    def __init__(self, breaker: Breaker) -> None:
        self._breaker = breaker

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        # pybreaker calls this before its storage holds the new state, so the names come from here.
        self._breaker._changed(old_state.name if old_state else CLOSED, new_state.name)


def _succeed() -> None:
    return None


def _raise(exc: BaseException) -> None:
    raise exc
