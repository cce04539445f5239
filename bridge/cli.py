"""`coda bridge` (also `python -m bridge`): run the WebSocket bridge until SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import asyncio


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("bridge", help="run the WebSocket bridge to Coda (and the web page)")
    parser.add_argument("--host", help="listen host (overrides bridge.host)")
    parser.add_argument("--port", type=int, help="listen port, 0 for any free port (overrides bridge.port)")
    parser.add_argument("--coda", help="Coda's gRPC address (overrides bridge.coda_address)")
    parser.set_defaults(func=run_bridge)


def run_bridge(args: argparse.Namespace) -> int:
    from coda.cli import load_config
    from coda.runtime.gc_tuning import tune_for_service

    from .server import Bridge

    config = load_config(args)
    if args.host:
        config.bridge.host = args.host
    if args.port is not None:
        config.bridge.port = args.port
    if args.coda:
        config.bridge.coda_address = args.coda

    async def serve() -> None:
        bridge = Bridge(config)
        await bridge.start()
        tune_for_service()
        # A fixed, parseable banner with the real bound port: tests and `coda up` read it.
        print(f"coda bridge serving on {bridge.url} (coda {bridge.coda_address})", flush=True)
        print(f"OpenAI-compatible API: {bridge.api_url}", flush=True)
        await bridge.run_until_signal()

    asyncio.run(serve())
    return 0
