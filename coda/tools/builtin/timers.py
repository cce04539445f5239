"""Timers: `set_timer` returns at once and a tool.timer_fired event goes to the bus when it goes off;
`list_timers` says what is left on a session's timers and `cancel_timer` stops them.

Timers live in the tools component (in memory) and are cancelled when it stops.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from coda.bus.publisher import EventPublisher
from coda.schema import new_event
from coda.tools.api import ErrorCode, Tool, ToolContext, ToolFailure
from coda.v1 import events_pb2

#: A week: longer timers belong in a calendar.
MAX_TIMER_SECONDS = 7 * 24 * 3600

PARAMETERS = {
    "type": "object",
    "properties": {
        "seconds": {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": MAX_TIMER_SECONDS,
            "description": "Delay in seconds until the timer fires.",
        },
        "label": {"type": "string", "maxLength": 200, "description": "What the timer is for."},
    },
    "required": ["seconds"],
    "additionalProperties": False,
}


FILTER_PARAMETERS = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "maxLength": 200, "description": "Only timers whose label contains this."},
    },
    "additionalProperties": False,
}


@dataclass(frozen=True)
class PendingTimer:
    timer_id: str
    label: str
    session_id: str
    seconds: float
    #: time.monotonic() when it goes off.
    due: float
    task: asyncio.Task[None]

    def remaining(self, now: float) -> float:
        return max(0.0, self.due - now)


class Timers:
    """Pending timers; each publishes tool.timer_fired when it goes off."""

    def __init__(self, publisher: EventPublisher | None, max_pending: int = 100) -> None:
        self._publisher = publisher
        self._max_pending = max_pending
        self._pending: dict[str, PendingTimer] = {}

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self, seconds: float, label: str = "", session_id: str = "", correlation_id: str = "") -> str:
        if len(self._pending) >= self._max_pending:
            raise ToolFailure(
                f"too many timers pending (at most {self._max_pending})", ErrorCode.TOOL_ERROR_CODE_UNAVAILABLE
            )
        timer_id = uuid.uuid4().hex[:12]
        task = asyncio.create_task(self._fire_after(timer_id, seconds, label, session_id, correlation_id))
        self._pending[timer_id] = PendingTimer(timer_id, label, session_id, seconds, time.monotonic() + seconds, task)
        task.add_done_callback(lambda _task: self._pending.pop(timer_id, None))
        return timer_id

    def of_session(self, session_id: str, label: str = "") -> list[PendingTimer]:
        """A session's pending timers, soonest first; `label` keeps those whose label contains it."""
        wanted = label.strip().lower()
        found = [
            timer
            for timer in self._pending.values()
            if timer.session_id == session_id and (not wanted or wanted in timer.label.lower())
        ]
        return sorted(found, key=lambda timer: timer.due)

    def cancel(self, timer_ids: list[str]) -> None:
        for timer_id in timer_ids:
            timer = self._pending.pop(timer_id, None)
            if timer is not None:
                timer.task.cancel()

    async def _fire_after(
        self, timer_id: str, seconds: float, label: str, session_id: str, correlation_id: str
    ) -> None:
        began = time.monotonic()
        await asyncio.sleep(seconds)
        if self._publisher is not None:
            self._publisher.publish(
                new_event(
                    "tools",
                    events_pb2.ToolTimerFired(
                        timer_id=timer_id, label=label, duration_seconds=time.monotonic() - began
                    ),
                    session_id=session_id,
                    correlation_id=correlation_id,
                )
            )

    async def cancel_all(self) -> None:
        tasks = [timer.task for timer in self._pending.values()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._pending.clear()


def set_timer_tool(timers: Timers) -> Tool:
    async def run(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        seconds = float(args["seconds"])
        label = args.get("label", "")
        fires_at = datetime.now(UTC) + timedelta(seconds=seconds)
        timer_id = timers.start(seconds, label, ctx.session_id, ctx.correlation_id)
        return {
            "timer_id": timer_id,
            "fires_at": fires_at.isoformat(timespec="milliseconds"),
            "seconds": seconds,
            "label": label,
        }

    return Tool(
        name="set_timer",
        description="Set a timer that goes off after a number of seconds (an event announces it).",
        parameters=PARAMETERS,
        run=run,
    )


def _listed(timer: PendingTimer, now: float) -> dict[str, Any]:
    return {
        "timer_id": timer.timer_id,
        "label": timer.label,
        "seconds": timer.seconds,
        "remaining_seconds": round(timer.remaining(now), 1),
    }


def list_timers_tool(timers: Timers) -> Tool:
    async def run(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        now = time.monotonic()
        return {"timers": [_listed(timer, now) for timer in timers.of_session(ctx.session_id, args.get("label", ""))]}

    return Tool(
        name="list_timers",
        description="The timers set in this conversation that have not gone off yet, with the time left on each.",
        parameters=FILTER_PARAMETERS,
        run=run,
    )


def cancel_timer_tool(timers: Timers) -> Tool:
    async def run(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        now = time.monotonic()
        found = timers.of_session(ctx.session_id, args.get("label", ""))
        timers.cancel([timer.timer_id for timer in found])
        return {"cancelled": [_listed(timer, now) for timer in found]}

    return Tool(
        name="cancel_timer",
        description="Cancel this conversation's pending timers (those whose label contains `label`, or all).",
        parameters=FILTER_PARAMETERS,
        run=run,
    )
