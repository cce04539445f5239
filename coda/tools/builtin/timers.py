"""`set_timer`: returns at once; when the timer goes off a tool.timer_fired event goes to the bus.

Timers live in the tools component (in memory) and are cancelled when it stops.
"""

from __future__ import annotations

import asyncio
import time
import uuid
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


class Timers:
    """Pending timers; each publishes tool.timer_fired when it goes off."""

    def __init__(self, publisher: EventPublisher | None, max_pending: int = 100) -> None:
        self._publisher = publisher
        self._max_pending = max_pending
        self._pending: dict[str, asyncio.Task[None]] = {}

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
        self._pending[timer_id] = task
        task.add_done_callback(lambda _task: self._pending.pop(timer_id, None))
        return timer_id

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
        tasks = list(self._pending.values())
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
