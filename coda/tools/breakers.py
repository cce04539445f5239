"""One pybreaker circuit per tool: repeated failures open it, and calls then fail fast.

State changes become `component.breaker` events and the `coda_tool_breaker_state` gauge.
Failures that say nothing about the tool's health (invalid arguments, a cancelled call) are
excluded: pybreaker then treats them as successes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

import pybreaker

from coda.bus.publisher import EventPublisher
from coda.schema import new_event
from coda.tools import metrics
from coda.tools.api import ErrorCode, ToolFailure
from coda.v1 import events_pb2

_STATES = {
    pybreaker.STATE_CLOSED: events_pb2.BREAKER_STATE_CLOSED,
    pybreaker.STATE_OPEN: events_pb2.BREAKER_STATE_OPEN,
    pybreaker.STATE_HALF_OPEN: events_pb2.BREAKER_STATE_HALF_OPEN,
}
_GAUGE = {pybreaker.STATE_CLOSED: 0, pybreaker.STATE_OPEN: 1, pybreaker.STATE_HALF_OPEN: 2}

#: Tool failure codes that count against the tool's breaker.
COUNTED_CODES = frozenset(
    {ErrorCode.TOOL_ERROR_CODE_FAILED, ErrorCode.TOOL_ERROR_CODE_UNAVAILABLE, ErrorCode.TOOL_ERROR_CODE_TIMEOUT}
)


class BreakerOpen(Exception):
    """The tool's circuit is open; calls are refused until the reset timeout passes."""


def _says_nothing_about_health(exc: BaseException) -> bool:
    if isinstance(exc, asyncio.CancelledError):
        return True
    return isinstance(exc, ToolFailure) and exc.code not in COUNTED_CODES


class _StateListener(pybreaker.CircuitBreakerListener):
    def __init__(self, publish: Callable[[events_pb2.Event], None]) -> None:
        self._publish = publish

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        metrics.BREAKER_STATE.labels(cb.name).set(_GAUGE.get(new_state.name, 0))
        reason = (
            f"{cb.fail_counter} consecutive failures; retry after {cb.reset_timeout:g}s"
            if new_state.name == pybreaker.STATE_OPEN
            else f"{new_state.name}"
        )
        self._publish(
            new_event(
                "tools",
                events_pb2.ComponentBreaker(
                    component="tools",
                    target=f"tool:{cb.name}",
                    state=_STATES.get(new_state.name, events_pb2.BREAKER_STATE_UNSPECIFIED),
                    previous_state=_STATES.get(old_state.name, events_pb2.BREAKER_STATE_UNSPECIFIED)
                    if old_state
                    else events_pb2.BREAKER_STATE_UNSPECIFIED,
                    reason=reason,
                ),
            )
        )


class Breakers:
    """A circuit breaker per tool name, created on first use."""

    def __init__(self, fail_max: int, reset_seconds: float, publisher: EventPublisher | None) -> None:
        self._fail_max = max(1, fail_max)
        self._reset_seconds = reset_seconds
        self._listener = _StateListener(publisher.publish if publisher is not None else lambda _event: None)
        self._breakers: dict[str, pybreaker.CircuitBreaker] = {}

    def for_tool(self, name: str) -> pybreaker.CircuitBreaker:
        breaker = self._breakers.get(name)
        if breaker is None:
            breaker = pybreaker.CircuitBreaker(
                fail_max=self._fail_max,
                reset_timeout=self._reset_seconds,
                exclude=[_says_nothing_about_health],
                listeners=[self._listener],
                throw_new_error_on_trip=False,
                name=name,
            )
            metrics.BREAKER_STATE.labels(name).set(0)
            self._breakers[name] = breaker
        return breaker

    def state(self, name: str) -> str:
        return self.for_tool(name).current_state

    @contextlib.contextmanager
    def guard(self, name: str) -> Iterator[None]:
        """Run a call's body under the tool's breaker (usable around awaits in one event loop).

        Raises BreakerOpen at entry while the circuit is open; the body's exception, if any,
        is recorded and re-raised unchanged.
        """
        breaker = self.for_tool(name)
        try:
            context = breaker.calling()
            context.__enter__()
        except pybreaker.CircuitBreakerError:
            raise BreakerOpen(
                f"tool {name!r} is unavailable: its circuit breaker is open after repeated failures; "
                f"retry in up to {self._reset_seconds:g}s"
            ) from None
        try:
            yield
        except BaseException as exc:
            if not context.__exit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            context.__exit__(None, None, None)
