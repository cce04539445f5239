"""`get_time`: the current time in a time zone given by IANA name or city, or the date some days or
months away, a calendar date, or the time difference between two places."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, time, timedelta
from itertools import combinations
from typing import Any

from coda.tools.api import InvalidArguments, Tool, ToolContext
from coda.tools.timezones import clock_reading, zone_or_local

#: Arguments that each ask something else of the clock: a call gives at most one.
_ONE_OF = ("days", "months", "minutes", "weekday", "date", "compared_with")
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
        "months": {
            "type": "integer",
            "minimum": -1200,
            "maximum": 1200,
            "description": "The date this many calendar months from today instead (12: a year from now; -2: two "
            "months ago); the 31st becomes the month's last day where it has none.",
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
        "past": {
            "type": "boolean",
            "description": "With `date` as MM-DD: the last such day (today included) instead of the next one.",
        },
        "compared_with": {
            "type": "string",
            "minLength": 1,
            "maxLength": 64,
            "description": "Another zone or city: also say how many hours `timezone` is ahead of it now.",
        },
        "at": {
            "type": "string",
            "pattern": "^([01]?[0-9]|2[0-3]):[0-5][0-9]$",
            "description": "With `compared_with`: a time of day there (24-hour HH:MM, today there); the answer is "
            "the time in `timezone` at that moment instead of now.",
        },
    },
    # At most one of days, months, minutes, weekday, date and compared_with.
    "allOf": [{"not": {"required": list(pair)}} for pair in combinations(_ONE_OF, 2)],
    "dependentRequired": {"past": ["date"], "at": ["compared_with"]},
    "additionalProperties": False,
}


def _compared(now: datetime, other: str, at: str = "") -> tuple[datetime, dict[str, Any]]:
    """How many hours the zone of `now` is ahead of `other` at this moment (negative: behind); with
    `at`, at the moment `other`'s clock shows that time today. Also that moment, in `now`'s zone."""
    other_zone, other_name = zone_or_local(other)
    there = now.astimezone(other_zone)
    if at:
        hour, minute = (int(part) for part in at.split(":"))
        there = datetime.combine(there.date(), time(hour, minute), other_zone)
        now = there.astimezone(now.tzinfo)
    ahead = ((now.utcoffset() or timedelta()) - (there.utcoffset() or timedelta())).total_seconds() / 3600
    compared = {"compared_with": other_name, "other_time": there.strftime("%H:%M"), "hours_ahead": ahead}
    if at:
        # 1: it is already the next day here, -1: still the day before.
        compared.update(at=at, days_apart=(now.date() - there.date()).days)
    return now, compared


def months_later(day: date, months: int) -> date:
    """The same day of the month `months` calendar months away, or that month's last day."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


def calendar_date(text: str, today: date, past: bool = False) -> date:
    """The date "YYYY-MM-DD", or the next "MM-DD" from `today` (the last one when `past`), today
    itself included."""
    parts = [int(part) for part in text.split("-")]
    try:
        if len(parts) == 3:
            return date(parts[0], parts[1], parts[2])
        if past:
            this_year = _month_day(today.year, parts[0], parts[1], step=-1)
            return this_year if this_year <= today else _month_day(today.year - 1, parts[0], parts[1], step=-1)
        this_year = _month_day(today.year, parts[0], parts[1])
        return this_year if this_year >= today else _month_day(today.year + 1, parts[0], parts[1])
    except ValueError:
        raise InvalidArguments(f"{text!r} is not a calendar date", field="/date") from None


def _month_day(year: int, month: int, day: int, step: int = 1) -> date:
    """29 February in a year without one is the next (`step` -1: the last) 29 February."""
    for candidate in range(year, year + 8 * step, step):
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
            moment, compared = _compared(now, args["compared_with"], args.get("at", ""))
            return {**clock_reading(zone, name, moment), **compared}
        if "minutes" in args:  # "what time will it be in 45 minutes": elapsed time, across any DST change
            later = (now.astimezone(UTC) + timedelta(minutes=args["minutes"])).astimezone(zone)
            return {
                **clock_reading(zone, name, later),
                "minutes": args["minutes"],
                "same_day": later.date() == now.date(),
            }
        days = args.get("days")
        if "months" in args:
            days = (months_later(now.date(), args["months"]) - now.date()).days
        elif "date" in args:
            days = (calendar_date(args["date"], now.date(), bool(args.get("past"))) - now.date()).days
            if not days:
                return {**clock_reading(zone, name, now), "days": 0}
        elif "weekday" in args:
            days = (WEEKDAYS.index(args["weekday"]) - now.weekday() - 1) % 7 + 1
        if not days:
            return clock_reading(zone, name, now)
        # The same wall-clock time on another calendar day (a DST change in between does not move it).
        later = datetime.combine(now.date() + timedelta(days=days), now.time(), zone)
        months = {"months": args["months"]} if "months" in args else {}
        return {**clock_reading(zone, name, later), "days": days, **months}

    return Tool(
        name="get_time",
        description="Current date and time, optionally in a time zone or city, or the date some days or months "
        "away, a calendar date's weekday and distance, or the time difference between two places.",
        parameters=PARAMETERS,
        run=run,
    )
