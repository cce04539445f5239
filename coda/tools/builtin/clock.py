"""`get_time`: the current time in a time zone given by IANA name or city."""

from __future__ import annotations

import zoneinfo
from typing import Any

from coda.tools.api import Tool, ToolContext
from coda.tools.timezones import clock_reading, local_zone, resolve_zone

PARAMETERS = {
    "type": "object",
    "properties": {
        "timezone": {
            "type": "string",
            "minLength": 1,
            "maxLength": 64,
            "description": "IANA time zone (e.g. 'Europe/Paris') or a city (e.g. 'Tokyo'); omit for local time.",
        }
    },
    "additionalProperties": False,
}


def get_time_tool(default_timezone: str = "") -> Tool:
    async def run(args: dict[str, Any], ctx: ToolContext) -> dict[str, str]:
        asked = args.get("timezone") or default_timezone
        if not asked:
            zone, name = local_zone()
            return clock_reading(zone, name)
        name = resolve_zone(asked)
        return clock_reading(zoneinfo.ZoneInfo(name), name)

    return Tool(
        name="get_time",
        description="Current date and time, optionally in a time zone or city.",
        parameters=PARAMETERS,
        run=run,
    )
