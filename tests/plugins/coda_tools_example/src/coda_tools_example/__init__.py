"""Example third-party Coda tools: one declared with @tool, two made by a factory."""

from __future__ import annotations

from typing import Any

from coda.tools import InvalidArguments, Tool, ToolContext, tool


@tool(
    name="echo",
    description="Repeat a text, reporting progress.",
    parameters={
        "type": "object",
        "properties": {"text": {"type": "string"}, "times": {"type": "integer", "minimum": 1, "maximum": 5}},
        "required": ["text"],
        "additionalProperties": False,
    },
)
async def echo(text: str, ctx: ToolContext, times: int = 1) -> dict[str, Any]:
    for n in range(times):
        ctx.progress(f"echo {n + 1}/{times}", (n + 1) / times)
    return {"echo": " ".join([text] * times), "session_id": ctx.session_id}


async def _reverse(args: dict[str, Any], ctx: ToolContext) -> str:
    return args["text"][::-1]


async def _initials(args: dict[str, Any], ctx: ToolContext) -> str:
    words = args["name"].split()
    if not words:
        raise InvalidArguments("the name has no words", field="/name")
    return "".join(word[0].upper() for word in words)


def make_tools() -> list[Tool]:
    text = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
    name = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}
    return [
        Tool(name="reverse", description="Reverse a text.", parameters=text, run=_reverse),
        Tool(name="initials", description="Initials of a name.", parameters=name, run=_initials),
    ]
