"""`calculate`: a safe arithmetic calculator (see coda.tools.calculator)."""

from __future__ import annotations

from typing import Any

from coda.tools.api import InvalidArguments, Tool, ToolContext
from coda.tools.calculator import FUNCTIONS, MAX_EXPRESSION_CHARS, CalculationError, evaluate

PARAMETERS = {
    "type": "object",
    "properties": {
        "expression": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_EXPRESSION_CHARS,
            "description": "Arithmetic such as '(2 + 3) * 4 / 7' or 'sqrt(2) ** 3'; "
            f"+ - * / // % ** ^, parentheses, pi, e and {', '.join(FUNCTIONS)}.",
        }
    },
    "required": ["expression"],
    "additionalProperties": False,
}


async def _calculate(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    expression = args["expression"]
    try:
        result = evaluate(expression)
    except CalculationError as exc:
        raise InvalidArguments(str(exc), field="/expression") from None
    return {"expression": expression, "result": result}


CALCULATE = Tool(
    name="calculate",
    description="Evaluate an arithmetic expression exactly (no code execution).",
    parameters=PARAMETERS,
    run=_calculate,
)
