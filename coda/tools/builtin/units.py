"""`convert_units`: length, mass, volume, temperature, time, speed and area (see coda.tools.converter)."""

from __future__ import annotations

from typing import Any

from coda.tools.api import InvalidArguments, Tool, ToolContext
from coda.tools.converter import ConversionError, convert, format_amount, spelled

_ARGUMENT = {"value": "/value", "source": "/from_unit", "target": "/to_unit"}
_UNIT_NAME = {"type": "string", "minLength": 1, "maxLength": 40}

PARAMETERS = {
    "type": "object",
    "properties": {
        "value": {"type": "number", "description": "The amount to convert."},
        "from_unit": {**_UNIT_NAME, "description": "Its unit: a name, plural or symbol ('miles', 'kg', '°F')."},
        "to_unit": {**_UNIT_NAME, "description": "The unit wanted ('kilometres', 'lb', 'celsius')."},
    },
    "required": ["value", "from_unit", "to_unit"],
    "additionalProperties": False,
}


async def _convert_units(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    try:
        conversion = convert(float(args["value"]), args["from_unit"], args["to_unit"])
    except ConversionError as exc:
        raise InvalidArguments(str(exc), field=_ARGUMENT[exc.argument]) from None
    american = any(word in f"{args['from_unit']} {args['to_unit']}".lower() for word in ("meter", "liter"))
    value, result = format_amount(conversion.value), format_amount(conversion.result)
    source = spelled(conversion.source, value, american=american)
    target = spelled(conversion.target, result, american=american)
    return {
        "value": conversion.value,
        "from_unit": source,
        "result": conversion.result,
        "to_unit": target,
        "text": f"{value} {source} is {result} {target}",
    }


CONVERT_UNITS = Tool(
    name="convert_units",
    description="Convert an amount between units of length, mass, volume, temperature, time, speed or area.",
    parameters=PARAMETERS,
    run=_convert_units,
)
