"""Timers: `set_timer` returns at once and a tool.timer_fired event goes to the bus when it goes off;
`list_timers` says what is left on a session's timers, `change_timer` adds or sets the time left on
one, `pause_timer` and `resume_timer` hold one and let it run again, and `cancel_timer` stops them.

Timers live in the tools component (in memory) and are cancelled when it stops.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from coda.bus.publisher import EventPublisher
from coda.schema import new_event
from coda.tools.api import ErrorCode, Tool, ToolContext, ToolFailure
from coda.tools.builtin.clock import WEEKDAYS
from coda.tools.timer_store import StoredTimer, TimerStore
from coda.tools.timezones import next_clock_time, zone_or_local
from coda.v1 import events_pb2

#: A week: longer timers belong in a calendar.
MAX_TIMER_SECONDS = 7 * 24 * 3600

#: An alarm's time of day, in set_timer and change_timer.
_TIME_OF_DAY = {
    "at": {
        "type": "string",
        "pattern": "^([01]?[0-9]|2[0-3]):[0-5][0-9]$",
        "description": "Instead of seconds, a time of day (24-hour HH:MM, local time): an alarm that goes off the "
        "next time the clock shows it.",
    },
    "twelve_hour": {
        "type": "boolean",
        "description": "With `at`: the hour was said without am or pm, so whichever of the two comes first.",
    },
    "tomorrow": {"type": "boolean", "description": "With `at`: that time tomorrow, not the next one."},
    "weekday": {
        "enum": ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"],
        "description": "With `at`: that time on this day of the week, within the next seven days (today "
        "included while the time is still to come).",
    },
}

PARAMETERS = {
    "type": "object",
    "properties": {
        "seconds": {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": MAX_TIMER_SECONDS,
            "description": "Delay in seconds until the timer fires.",
        },
        **_TIME_OF_DAY,
        "label": {"type": "string", "maxLength": 200, "description": "What the timer is for."},
    },
    "oneOf": [{"required": ["seconds"]}, {"required": ["at"]}],
    "dependentRequired": {"twelve_hour": ["at"], "tomorrow": ["at"], "weekday": ["at"]},
    "not": {"required": ["tomorrow", "weekday"]},
    "additionalProperties": False,
}


CHANGE_PARAMETERS = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "maxLength": 200, "description": "The timer whose label contains this."},
        "seconds": {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": MAX_TIMER_SECONDS,
            "description": "The time it should have left, in seconds.",
        },
        "add_seconds": {
            "type": "number",
            "minimum": -MAX_TIMER_SECONDS,
            "maximum": MAX_TIMER_SECONDS,
            "description": "Seconds to add to the time it has left (negative to take time off).",
        },
        **_TIME_OF_DAY,
    },
    "oneOf": [{"required": ["seconds"]}, {"required": ["add_seconds"]}, {"required": ["at"]}],
    "dependentRequired": {"twelve_hour": ["at"], "tomorrow": ["at"], "weekday": ["at"]},
    "not": {"required": ["tomorrow", "weekday"]},
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
    #: time.monotonic() when it goes off (while it runs).
    due: float
    #: What makes it go off; None while it is paused.
    task: asyncio.Task[None] | None
    #: Seconds left on a paused timer; None while it runs.
    paused_left: float | None = None

    @property
    def paused(self) -> bool:
        return self.paused_left is not None

    def remaining(self, now: float) -> float:
        return self.paused_left if self.paused_left is not None else max(0.0, self.due - now)


#: A timer found due when Coda starts again still goes off (late) within this many seconds of its time;
#: one older than that is dropped: an alarm from last week is noise, not a reminder.
LATE_LIMIT_SECONDS = 3600.0


class Timers:
    """Pending timers; each publishes tool.timer_fired when it goes off.

    With a `store`, every pending timer is also written down (and forgotten when it goes off or is
    cancelled), and `restore()` sets them again after a restart; stopping does not forget them."""

    def __init__(
        self,
        publisher: EventPublisher | None,
        max_pending: int = 100,
        store: TimerStore | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._publisher = publisher
        self._max_pending = max_pending
        self._pending: dict[str, PendingTimer] = {}
        self._store = store
        self._wall_clock = wall_clock

    def restore(self) -> tuple[int, int]:
        """Set again the timers the store kept from an earlier run: (how many were set, how many were
        dropped for being more than LATE_LIMIT_SECONDS overdue). One due while Coda was down goes off now."""
        if self._store is None:
            return 0, 0
        restored = dropped = 0
        wall, now = self._wall_clock(), time.monotonic()
        for kept in self._store.pending():
            if kept.timer_id in self._pending:
                continue
            if kept.paused_left is not None:  # held, not late: it waits to be resumed
                self._hold(
                    kept.timer_id, kept.label, kept.session_id, kept.correlation_id, kept.seconds, kept.paused_left
                )
                restored += 1
                continue
            if wall - kept.due > LATE_LIMIT_SECONDS:
                self._store.delete(kept.timer_id)
                dropped += 1
                continue
            remaining = max(0.0, kept.due - wall)
            started = now + remaining - kept.seconds
            self._schedule(
                kept.timer_id, kept.label, kept.session_id, kept.correlation_id, kept.seconds, remaining, started
            )
            restored += 1
        return restored, dropped

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self, seconds: float, label: str = "", session_id: str = "", correlation_id: str = "") -> str:
        if len(self._pending) >= self._max_pending:
            raise ToolFailure(
                f"too many timers pending (at most {self._max_pending})", ErrorCode.TOOL_ERROR_CODE_UNAVAILABLE
            )
        timer_id = uuid.uuid4().hex[:12]
        self._schedule(timer_id, label, session_id, correlation_id, seconds, seconds, time.monotonic())
        return timer_id

    def change(self, timer: PendingTimer, remaining: float, correlation_id: str = "") -> PendingTimer:
        """`timer` with `remaining` seconds left from now (0 makes it go off now); same id and label. A
        paused timer stays paused with the new time left."""
        self._check_pending(timer)
        remaining = min(max(0.0, remaining), MAX_TIMER_SECONDS)
        if timer.paused_left is not None:
            seconds = timer.seconds - timer.paused_left + remaining
            return self._hold(timer.timer_id, timer.label, timer.session_id, correlation_id, seconds, remaining)
        assert timer.task is not None
        timer.task.cancel()
        now = time.monotonic()
        started = timer.due - timer.seconds
        return self._schedule(
            timer.timer_id, timer.label, timer.session_id, correlation_id, now - started + remaining, remaining, started
        )

    def pause(self, timer: PendingTimer, correlation_id: str = "") -> PendingTimer:
        """`timer` held with the time it has left; it goes off only after `resume`."""
        self._check_pending(timer)
        if timer.task is None:
            return timer  # already paused
        held = self._hold(
            timer.timer_id,
            timer.label,
            timer.session_id,
            correlation_id,
            timer.seconds,
            timer.remaining(time.monotonic()),
        )
        timer.task.cancel()  # after the held entry is in place: its done callback leaves that alone
        return held

    def resume(self, timer: PendingTimer, correlation_id: str = "") -> PendingTimer:
        """A paused `timer` running again with the time it had left."""
        self._check_pending(timer)
        if timer.paused_left is None:
            return timer  # running
        started = time.monotonic() - (timer.seconds - timer.paused_left)
        return self._schedule(
            timer.timer_id, timer.label, timer.session_id, correlation_id, timer.seconds, timer.paused_left, started
        )

    def _check_pending(self, timer: PendingTimer) -> None:
        # A task that is done has gone off (its entry goes at the next turn of the loop).
        if self._pending.get(timer.timer_id) is not timer or (timer.task is not None and timer.task.done()):
            raise ToolFailure("that timer has already gone off or been cancelled", ErrorCode.TOOL_ERROR_CODE_NOT_FOUND)

    def _hold(
        self, timer_id: str, label: str, session_id: str, correlation_id: str, seconds: float, left: float
    ) -> PendingTimer:
        held = PendingTimer(timer_id, label, session_id, seconds, time.monotonic() + left, None, left)
        self._pending[timer_id] = held
        if self._store is not None:
            due = self._wall_clock() + left
            self._store.save(StoredTimer(timer_id, label, session_id, correlation_id, seconds, due, left))
        return held

    def _schedule(
        self,
        timer_id: str,
        label: str,
        session_id: str,
        correlation_id: str,
        seconds: float,
        remaining: float,
        started: float,
    ) -> PendingTimer:
        task = asyncio.create_task(self._fire_after(timer_id, remaining, label, session_id, correlation_id, started))
        pending = PendingTimer(timer_id, label, session_id, seconds, started + seconds, task)
        self._pending[timer_id] = pending
        if self._store is not None:
            due = self._wall_clock() + remaining
            self._store.save(StoredTimer(timer_id, label, session_id, correlation_id, seconds, due))
        # A changed timer's old task finishes (cancelled) after its replacement is in place.
        task.add_done_callback(
            lambda _task: self._pending.pop(timer_id, None) if self._pending.get(timer_id) is pending else None
        )
        return pending

    def of_session(self, session_id: str, label: str = "") -> list[PendingTimer]:
        """A session's pending timers (paused ones too), least time left first; `label` keeps those
        whose label contains it."""
        wanted = label.strip().lower()
        found = [
            timer
            for timer in self._pending.values()
            if timer.session_id == session_id and (not wanted or wanted in timer.label.lower())
        ]
        now = time.monotonic()
        return sorted(found, key=lambda timer: timer.remaining(now))

    def cancel(self, timer_ids: list[str]) -> None:
        for timer_id in timer_ids:
            timer = self._pending.pop(timer_id, None)
            if timer is not None and timer.task is not None:
                timer.task.cancel()
            if self._store is not None:
                self._store.delete(timer_id)

    async def _fire_after(
        self, timer_id: str, seconds: float, label: str, session_id: str, correlation_id: str, began: float
    ) -> None:
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
        if self._store is not None:
            self._store.delete(timer_id)

    async def cancel_all(self) -> None:
        """Stop every pending timer in this process (on shutdown); a store keeps them for `restore`."""
        tasks = [timer.task for timer in self._pending.values() if timer.task is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._pending.clear()


def _alarm(args: dict[str, Any], timezone: str) -> tuple[float, datetime, dict[str, str]]:
    """Seconds until an alarm's time of day (`at`, `twelve_hour`, `tomorrow`) in `timezone`, when
    that is, and its time and day as the result tells them."""
    zone = zone_or_local(timezone)[0]
    now = datetime.now(zone)
    hour, minute = (int(part) for part in args["at"].split(":"))
    weekday = WEEKDAYS.index(args["weekday"]) if "weekday" in args else None
    fires_at = next_clock_time(
        now,
        hour,
        minute,
        twelve_hour=bool(args.get("twelve_hour")),
        tomorrow=bool(args.get("tomorrow")),
        weekday=weekday,
    )
    # In UTC: between two times of one zone, Python subtracts wall clocks and misses a DST change.
    seconds = (fires_at.astimezone(UTC) - now.astimezone(UTC)).total_seconds()
    ahead = (fires_at.date() - now.date()).days
    day = "today" if ahead == 0 else "tomorrow" if ahead == 1 else fires_at.strftime("%A")
    return seconds, fires_at, {"at": fires_at.strftime("%H:%M"), "day": day}


def set_timer_tool(timers: Timers, timezone: str = "") -> Tool:
    """`set_timer`; an alarm's time of day (`at`) is read in `timezone` (tools.timezone), else this
    machine's zone."""

    async def run(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        label = args.get("label", "")
        extra: dict[str, Any] = {}
        if "at" in args:
            seconds, fires_at, extra = _alarm(args, timezone)
        else:
            seconds = float(args["seconds"])
            fires_at = datetime.now(UTC) + timedelta(seconds=seconds)
        timer_id = timers.start(seconds, label, ctx.session_id, ctx.correlation_id)
        return {
            "timer_id": timer_id,
            "fires_at": fires_at.isoformat(timespec="milliseconds"),
            "seconds": round(seconds, 3),
            "label": label,
            **extra,
        }

    return Tool(
        name="set_timer",
        description="Set a timer that goes off after a number of seconds, or an alarm at a time of day (`at`); an "
        "event announces it.",
        parameters=PARAMETERS,
        run=run,
    )


def _listed(timer: PendingTimer, now: float) -> dict[str, Any]:
    listed = {
        "timer_id": timer.timer_id,
        "label": timer.label,
        "seconds": timer.seconds,
        "remaining_seconds": round(timer.remaining(now), 1),
    }
    return {**listed, "paused": True} if timer.paused else listed


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


def change_timer_tool(timers: Timers, timezone: str = "") -> Tool:
    """`change_timer`; a new time of day (`at`) is read in `timezone`, as set_timer reads it, except
    that an hour said without am or pm is taken on the half of the day nearer the timer's old time."""

    async def run(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        found = timers.of_session(ctx.session_id, args.get("label", ""))
        if not found:
            return {"changed": []}
        timer = found[0]  # the soonest: "add five minutes" means the one about to go off
        alarm: dict[str, str] = {}
        if "at" in args and args.get("twelve_hour"):
            # "move my alarm to 6": of 6:00 and 18:00, the one nearer the time it was set for.
            hour, minute = (int(part) for part in args["at"].split(":"))
            left = timer.remaining(time.monotonic())
            candidates = [
                _alarm({**args, "at": f"{h}:{minute:02d}", "twelve_hour": False}, timezone)
                for h in (hour % 12, hour % 12 + 12)
            ]
            remaining, _, alarm = min(candidates, key=lambda candidate: abs(candidate[0] - left))
        elif "at" in args:
            remaining, _, alarm = _alarm(args, timezone)
        elif "seconds" in args:
            remaining = float(args["seconds"])
        else:
            remaining = timer.remaining(time.monotonic()) + float(args["add_seconds"])
        changed = timers.change(timer, remaining, ctx.correlation_id)
        return {"changed": [{**_listed(changed, time.monotonic()), **alarm}]}

    return Tool(
        name="change_timer",
        description="Set or add to the time left on one of this conversation's timers or alarms (the soonest, or "
        "the one whose label contains `label`); give `seconds` (the new time left), `add_seconds`, or an alarm's "
        "new time of day `at` (with `twelve_hour`, on the half of the day nearer its old time).",
        parameters=CHANGE_PARAMETERS,
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


def _hold_tool(timers: Timers, pause: bool) -> Tool:
    """pause_timer (`pause`) or resume_timer: the soonest matching timer that runs (or is paused)."""

    async def run(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        key = "paused" if pause else "resumed"
        found = [t for t in timers.of_session(ctx.session_id, args.get("label", "")) if t.paused != pause]
        if not found:
            return {key: []}
        moved = timers.pause(found[0], ctx.correlation_id) if pause else timers.resume(found[0], ctx.correlation_id)
        return {key: [_listed(moved, time.monotonic())]}

    if pause:
        name, description = (
            "pause_timer",
            "Pause one of this conversation's running timers (the soonest, or the one whose label contains "
            "`label`): it keeps the time it has left until resume_timer.",
        )
    else:
        name, description = (
            "resume_timer",
            "Let a paused timer of this conversation run again with the time it had left (the one whose label "
            "contains `label`, or the one with least time left).",
        )
    return Tool(name=name, description=description, parameters=FILTER_PARAMETERS, run=run)


def pause_timer_tool(timers: Timers) -> Tool:
    return _hold_tool(timers, pause=True)


def resume_timer_tool(timers: Timers) -> Tool:
    return _hold_tool(timers, pause=False)
