"""A tools plugin for the assistant tests (`tools.plugins = ["assistant_slow_tool:slow_lookup"]`): it hangs."""

from __future__ import annotations

import asyncio

from coda.tools import tool


@tool(
    name="slow_lookup",
    description="Looks a word up in a very slow dictionary.",
    parameters={"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]},
)
async def slow_lookup(word: str) -> dict[str, str]:
    await asyncio.sleep(3600)
    return {"word": word}
