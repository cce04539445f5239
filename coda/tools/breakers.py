"""One circuit breaker per tool: repeated failures open it, and calls then fail fast.

State changes become `component.breaker` events and the `coda_tool_breaker_state` gauge.
Failures that say nothing about the tool's health (invalid arguments, a cancelled call) are
excluded: they count neither as failures nor as successes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from coda.bus.publisher import EventPublisher
from coda.runtime.breaker import CLOSED, HALF_OPEN, OPEN, Breaker, BreakerChange
from coda.schema import new_event
from coda.tools import metrics
from coda.tools.api import ErrorCode, ToolFailure
from coda.v1 import events_pb2

_GAUGE = {CLOSED: 0, OPEN: 1, HALF_OPEN: 2}

#: Tool failure codes that count against the tool's breaker.
COUNTED_CODES = frozenset(
    {ErrorCode.TOOL_ERROR_CODE_FAILED, ErrorCode.TOOL_ERROR_CODE_UNAVAILABLE, ErrorCode.TOOL_ERROR_CODE_TIMEOUT}
)


class BreakerOpen(Exception):
    """The tool's circuit is open; calls are refused until the reset timeout passes."""


def _says_nothing_about_health(exc: BaseException) -> bool:
    return isinstance(exc, ToolFailure) and exc.code not in COUNTED_CODES


def target_of(breaker: str) -> str:
    """The `component.breaker` target: "tool:<name>", or a shared breaker's own name ("mcp:<server>")."""
    return breaker if ":" in breaker else f"tool:{breaker}"


def _state_events(publish: Callable[[events_pb2.Event], None]) -> Callable[[BreakerChange], None]:
    def changed(change: BreakerChange) -> None:
        metrics.BREAKER_STATE.labels(change.name).set(_GAUGE.get(change.state, 0))
        if change.state != OPEN:
            # A shared breaker (an MCP server's) says why; a tool's just names the state, as it always has.
            reason = change.reason if ":" in change.name else change.state
        elif change.tripped:  # by its owner, e.g. an MCP server that died
            reason = change.reason
        else:
            reason = f"{change.failures} consecutive failures; retry after {change.reset_seconds:g}s"
        publish(
            new_event(
                "tools",
                events_pb2.ComponentBreaker(
                    component="tools",
                    target=target_of(change.name),
                    state=change.proto_state,
                    previous_state=change.proto_previous,
                    reason=reason,
                ),
            )
        )

    return changed


class Breakers:
    """A circuit breaker per tool name, created on first use."""

    def __init__(self, fail_max: int, reset_seconds: float, publisher: EventPublisher | None) -> None:
        self._fail_max = max(1, fail_max)
        self._reset_seconds = reset_seconds
        self._on_change = _state_events(publisher.publish if publisher is not None else lambda _event: None)
        self._breakers: dict[str, Breaker] = {}

    def for_tool(self, name: str) -> Breaker:
        breaker = self._breakers.get(name)
        if breaker is None:
            breaker = Breaker(
                name,
                fail_max=self._fail_max,
                reset_seconds=self._reset_seconds,
                exclude=_says_nothing_about_health,
                on_change=self._on_change,
            )
            metrics.BREAKER_STATE.labels(name).set(0)
            self._breakers[name] = breaker
        return breaker

    def state(self, name: str) -> str:
        return self.for_tool(name).state

    def trip(self, name: str, reason: str) -> None:
        """Open a breaker at once (its dependency is known to be down); calls answer UNAVAILABLE."""
        self.for_tool(name).trip(reason)

    def reset(self, name: str, reason: str = "") -> None:
        """Close a breaker at once (its dependency is known to be back)."""
        self.for_tool(name).reset(reason)

    @contextlib.contextmanager
    def guard(self, name: str) -> Iterator[None]:
        """Run a call's body under the tool's breaker (usable around awaits in one event loop).

        Raises BreakerOpen at entry while the circuit is open; the body's exception, if any,
        is recorded and re-raised unchanged.
        """
        breaker = self.for_tool(name)
        if not breaker.allow():
            if ":" in name:  # a shared breaker: say what is down and why
                raise BreakerOpen(f"{name} is unavailable: {breaker.last_failure}")
            raise BreakerOpen(
                f"tool {name!r} is unavailable: its circuit breaker is open after repeated failures; "
                f"retry in up to {self._reset_seconds:g}s"
            )
        with breaker.guarded():
            yield
