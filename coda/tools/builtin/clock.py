"""`get_time`: the current time in a time zone given by IANA name or city."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from itertools import combinations
from typing import Any

from coda.tools.api import InvalidArguments, Tool, ToolContext
from coda.tools.timezones import clock_reading, zone_or_local

#: Arguments that each ask something else of the clock: a call gives at most one.
_ONE_OF = ("days", "minutes", "weekday", "date", "compared_with")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

PARAMETERS = {
    "type": "object",
    "properties": {
        "timezone": {
            "type": "string",
            "minLength": 1,
            "maxLength": 64,
            "description": "IANA time zone (e.g. 'Europe/Paris') or a city (e.g. 'Tokyo'); omit for local time.",
        },
        "days": {
            "type": "integer",
            "minimum": -3660,
            "maximum": 3660,
            "description": "The date this many days from today instead (1: tomorrow, -1: yesterday).",
        },
        "minutes": {
            "type": "integer",
            "minimum": -10080,
            "maximum": 10080,
            "description": "The time this many minutes from now instead (90: in an hour and a half; -30: ago).",
        },
        "weekday": {
            "enum": list(WEEKDAYS),
            "description": "The date of the next such day instead ('friday': the coming Friday, not today).",
        },
        "date": {
            "type": "string",
            "pattern": "^([0-9]{4}-)?[0-9]{2}-[0-9]{2}$",
            "description": (
                "A calendar date instead, YYYY-MM-DD or MM-DD (the next one from today): its weekday and"
                " how many days away it is."
            ),
        },
        "compared_with": {
            "type": "string",
            "minLength": 1,
            "maxLength": 64,
            "description": "Another zone or city: also say how many hours `timezone` is ahead of it now.",
        },
    },
    # At most one of days, minutes, weekday, date and compared_with.
    "allOf": [{"not": {"required": list(pair)}} for pair in combinations(_ONE_OF, 2)],
    "additionalProperties": False,
}


def _compared(now: datetime, other: str) -> dict[str, Any]:
    """How many hours the zone of `now` is ahead of `other` at this moment (negative: behind)."""
    other_zone, other_name = zone_or_local(other)
    there = now.astimezone(other_zone)
    ahead = ((now.utcoffset() or timedelta()) - (there.utcoffset() or timedelta())).total_seconds() / 3600
    return {"compared_with": other_name, "other_time": there.strftime("%H:%M"), "hours_ahead": ahead}


def calendar_date(text: str, today: date) -> date:
    """The date "YYYY-MM-DD", or the next "MM-DD" from `today` (today itself included)."""
    parts = [int(part) for part in text.split("-")]
    try:
        if len(parts) == 3:
            return date(parts[0], parts[1], parts[2])
        this_year = _month_day(today.year, parts[0], parts[1])
        return this_year if this_year >= today else _month_day(today.year + 1, parts[0], parts[1])
    except ValueError:
        raise InvalidArguments(f"{text!r} is not a calendar date", field="/date") from None


def _month_day(year: int, month: int, day: int) -> date:
    """29 February in a year without one is the next 29 February."""
    for candidate in range(year, year + 8):
        try:
            return date(candidate, month, day)
        except ValueError:
            if (month, day) != (2, 29):
                raise
    raise ValueError("no such day")


def get_time_tool(default_timezone: str = "") -> Tool:
    async def run(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        zone, name = zone_or_local(args.get("timezone") or default_timezone)
        now = datetime.now(zone)
        if "compared_with" in args:
            return {**clock_reading(zone, name, now), **_compared(now, args["compared_with"])}
        if "minutes" in args:  # "what time will it be in 45 minutes": elapsed time, across any DST change
            later = (now.astimezone(UTC) + timedelta(minutes=args["minutes"])).astimezone(zone)
            return {
                **clock_reading(zone, name, later),
                "minutes": args["minutes"],
                "same_day": later.date() == now.date(),
            }
        days = args.get("days")
        if "date" in args:
            days = (calendar_date(args["date"], now.date()) - now.date()).days
            if not days:
                return {**clock_reading(zone, name, now), "days": 0}
        elif "weekday" in args:
            days = (WEEKDAYS.index(args["weekday"]) - now.weekday() - 1) % 7 + 1
        if not days:
            return clock_reading(zone, name, now)
        # The same wall-clock time on another calendar day (a DST change in between does not move it).
        later = datetime.combine(now.date() + timedelta(days=days), now.time(), zone)
        return {**clock_reading(zone, name, later), "days": days}

    return Tool(
        name="get_time",
        description="Current date and time, optionally in a time zone or city, or the date some days away.",
        parameters=PARAMETERS,
        run=run,
    )
