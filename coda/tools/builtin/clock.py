"""`get_time`: the current time in a time zone given by IANA name or city."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from coda.tools.api import Tool, ToolContext
from coda.tools.timezones import clock_reading, zone_or_local

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
        "weekday": {
            "enum": list(WEEKDAYS),
            "description": "The date of the next such day instead ('friday': the coming Friday, not today).",
        },
    },
    "not": {"required": ["days", "weekday"]},
    "additionalProperties": False,
}


def get_time_tool(default_timezone: str = "") -> Tool:
    async def run(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
        zone, name = zone_or_local(args.get("timezone") or default_timezone)
        now = datetime.now(zone)
        days = args.get("days")
        if "weekday" in args:
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
