"""A real MCP server for the MCP tests, written with the `mcp` SDK: `python tests/mcp_fixture_server.py [--http PORT]`.

Tools: `echo`, `add`, `slow` (sleeps, reporting progress), `fail` (a tool error), `crash` (the
process exits at once, as a server that dies), `grow` (adds the tool `double` and sends
`notifications/tools/list_changed`) and `shrink` (removes it again, with the same notification). With `--http PORT` it serves streamable HTTP on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import sys

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

server = MCPServer("fixture", log_level="WARNING")


@server.tool(description="Echo the text back.")
def echo(text: str) -> str:
    return text


@server.tool(description="Add two numbers.")
def add(a: float, b: float) -> float:
    return a + b


@server.tool(description="Sleep for a number of seconds, reporting progress, then say done.")
async def slow(seconds: float, ctx: Context) -> str:
    await ctx.report_progress(0.0, 1.0, "sleeping")
    await asyncio.sleep(seconds)
    return "done"


@server.tool(description="Always fails.")
def fail() -> str:
    raise ToolError("the disk is on fire")


@server.tool(description="Ends the server process at once.")
def crash() -> str:
    os._exit(3)


def double(x: int) -> int:
    """Double a whole number."""
    return 2 * x


@server.tool(description="Adds the tool `double` and tells the client its tool list changed.")
async def grow(ctx: Context) -> str:
    server.add_tool(double, name="double", description="Double a whole number.")
    await ctx.session.send_tool_list_changed()
    return "grown"


@server.tool(description="Removes the tool `double` again and tells the client its tool list changed.")
async def shrink(ctx: Context) -> str:
    server.remove_tool("double")
    await ctx.session.send_tool_list_changed()
    return "shrunk"


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("stdio")
