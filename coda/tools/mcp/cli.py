"""`coda mcp`: serve a running Coda's tools over MCP (stdio by default, `--http ADDR` for streamable HTTP)."""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys

import grpc


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "mcp", help="serve Coda's tools and memory over MCP (stdio, or streamable HTTP with --http)"
    )
    serve.add_argument(
        "--address", help="Coda's gRPC address (default: endpoints.tools / endpoints.memory or grpc.address)"
    )
    serve.add_argument(
        "--http", metavar="HOST:PORT", help="serve streamable HTTP at http://HOST:PORT/mcp instead of stdio"
    )
    serve.add_argument(
        "--user", default="", help="user id of memory and tool calls (default: assistant.default_user_id)"
    )
    serve.add_argument("--metrics-address", default="", help="Prometheus host:port for this process (default: off)")
    serve.set_defaults(func=run_mcp)


def run_mcp(args: argparse.Namespace) -> int:
    from coda.cli import load_config

    config = load_config(args)
    tools_address = args.address or config.endpoint("tools")
    memory_address = args.address or config.endpoint("memory")
    user_id = args.user or config.assistant.default_user_id
    if args.metrics_address:
        from prometheus_client import start_http_server

        host, port = args.metrics_address.rsplit(":", 1)
        start_http_server(int(port), addr=host)
    if args.http:
        host, _, port = args.http.rpartition(":")
        if not host or not port.isdigit():
            print(f"coda mcp: --http wants HOST:PORT, got {args.http!r}", file=sys.stderr)
            return 2
        return asyncio.run(_serve_http(tools_address, memory_address, user_id, host, int(port)))
    return asyncio.run(_serve_stdio(tools_address, memory_address, user_id))


def _channels(tools_address: str, memory_address: str) -> tuple[grpc.aio.Channel, grpc.aio.Channel]:
    tools = grpc.aio.insecure_channel(tools_address)
    memory = tools if memory_address == tools_address else grpc.aio.insecure_channel(memory_address)
    return tools, memory


async def _serve_stdio(tools_address: str, memory_address: str, user_id: str) -> int:
    from mcp.server.stdio import stdio_server

    from coda.tools.mcp.server import CodaMcp

    tools, memory = _channels(tools_address, memory_address)
    server = CodaMcp(tools, memory, user_id).server()
    try:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())
    finally:
        await tools.close()
        await memory.close()
    return 0


async def _serve_http(tools_address: str, memory_address: str, user_id: str, host: str, port: int) -> int:
    import uvicorn

    from coda.tools.mcp.server import CodaMcp

    tools, memory = _channels(tools_address, memory_address)
    app = CodaMcp(tools, memory, user_id).server().streamable_http_app(host=host)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(128)  # connections wait in the backlog until uvicorn serves, so the banner can come first
    bound = sock.getsockname()[1]
    shown = f"[{host.strip('[]')}]" if family == socket.AF_INET6 else host
    # A fixed, parseable banner, as `coda serve` prints: tests read the bound port from it.
    print(f"coda mcp serving http://{shown}:{bound}/mcp (coda {tools_address})", flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    try:
        await server.serve(sockets=[sock])
    finally:
        await tools.close()
        await memory.close()
    return 0
