"""MCP overhead: a tool call through MCP against a built-in tool, through the same Tools service.

Mounted: `Tools/Execute` over loopback gRPC to `mcp__add` (a stdio MCP server process started by
Coda, written with the `mcp` SDK, run from this module) against the built-in `calculate`, one call
at a time. Served: an `mcp` SDK client calling `calculate` through `coda mcp` (stdio) against the
same call over gRPC directly. Latency is from sending the call to reading its result.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import numpy as np

from bench.host import bench_host
from bench.tools import Caller

ROOT = Path(__file__).resolve().parent.parent


async def timed(call: Callable[[], Awaitable[object]], calls: int) -> np.ndarray:
    for _ in range(min(30, calls)):  # warm-up
        await call()
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - start)
    return np.array(samples) * 1000.0


def compare(label: str, mcp_ms: np.ndarray, direct_label: str, direct_ms: np.ndarray) -> None:
    def line(name: str, ms: np.ndarray) -> str:
        return f"    {name:<34} p50 {np.percentile(ms, 50):7.3f} ms   p90 {np.percentile(ms, 90):7.3f} ms"

    print(f"  {label} ({len(mcp_ms)} calls each)")
    print(line(direct_label, direct_ms))
    print(line("through MCP", mcp_ms))
    ratio50 = np.percentile(mcp_ms, 50) / np.percentile(direct_ms, 50)
    ratio90 = np.percentile(mcp_ms, 90) / np.percentile(direct_ms, 90)
    extra = np.percentile(mcp_ms, 50) - np.percentile(direct_ms, 50)
    print(f"    ratio p50 {ratio50:.2f}x   p90 {ratio90:.2f}x   MCP adds {extra:.3f} ms at p50")


async def mounted(channel: grpc.aio.Channel, calls: int) -> None:
    caller = Caller(channel)
    builtin = await timed(lambda: caller.call("calculate", json.dumps({"expression": "1+2"})), calls)
    through = await timed(lambda: caller.call("mcp__add", json.dumps({"a": 1, "b": 2})), calls)
    compare("mounted: Tools/Execute over gRPC", through, "built-in calculate", builtin)
    await caller.close()


async def served(address: str, channel: grpc.aio.Channel, calls: int) -> None:
    from mcp import ClientSession, StdioServerParameters, stdio_client

    caller = Caller(channel)
    direct = await timed(lambda: caller.call("calculate", json.dumps({"expression": "1+2"})), calls)
    await caller.close()
    env = {"PYTHONPATH": str(ROOT), "CODA_METRICS__ADDRESS": ""}
    params = StdioServerParameters(command=sys.executable, args=["-m", "coda", "mcp", "--address", address], env=env)
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()

        async def one() -> None:
            result = await session.call_tool("calculate", {"expression": "1+2"})
            if result.is_error:
                raise RuntimeError(f"calculate failed: {result}")

        through = await timed(one, calls)
    compare("served: calculate via `coda mcp` (stdio)", through, "gRPC Tools/Execute", direct)


async def main(quick: bool) -> None:
    calls = 200 if quick else 2000
    server = {"name": "mcp", "command": sys.executable, "args": ["-m", "bench.mcp", "--server"], "cwd": str(ROOT)}
    mcp = json.dumps([{**server, "env": {"PYTHONPATH": str(ROOT)}}])
    async with bench_host("bus,tools", CODA_GRPC__SHUTDOWN_GRACE_SECONDS="1", CODA_TOOLS__MCP=mcp) as host:
        print("mcp: tool call latency through MCP against the direct path, one call at a time")
        async with grpc.aio.insecure_channel(host.address) as channel:
            await mounted(channel, calls)
            await served(host.address, channel, calls)


def serve_add() -> None:
    """The MCP server the mounted benchmark calls: one `add` tool over stdio."""
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("bench", log_level="WARNING")

    @server.tool(description="Add two numbers.")
    def add(a: float, b: float) -> float:
        return a + b

    server.run("stdio")


if __name__ == "__main__":
    if "--server" in sys.argv:
        serve_add()
    else:
        asyncio.run(main("--quick" in sys.argv))
