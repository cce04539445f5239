"""`coda wyoming`: serve the Wyoming protocol (Home Assistant) in front of the running Coda."""

from __future__ import annotations

import argparse
import asyncio
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    wyoming = subparsers.add_parser(
        "wyoming", help="serve Home Assistant's Wyoming protocol: speech-to-text, text-to-speech, conversation"
    )
    wyoming.add_argument("--uri", help="tcp://HOST:PORT or unix://PATH to listen on (default: wyoming.uri)")
    wyoming.add_argument(
        "--address", help="Coda's gRPC address (default: endpoints.voice / endpoints.assistant or grpc.address)"
    )
    wyoming.add_argument(
        "--metrics-address", help="Prometheus host:port ('' disables; default wyoming.metrics_address)"
    )
    wyoming.set_defaults(func=run_wyoming)


def run_wyoming(args: argparse.Namespace) -> int:
    from coda.cli import load_config
    from coda.wyoming.server import serve

    config = load_config(args)
    uri = args.uri or config.wyoming.uri
    if not uri:
        print("coda wyoming: no address to listen on (set wyoming.uri or pass --uri)", file=sys.stderr)
        return 2
    voice = args.address or config.endpoint("voice")
    assistant = args.address or config.endpoint("assistant")
    metrics = config.wyoming.metrics_address if args.metrics_address is None else args.metrics_address
    user = config.wyoming.user_id
    try:
        asyncio.run(serve(uri, voice, metrics, user, assistant))
    except OSError as exc:  # the port is taken, the socket path is not writable, ...
        print(f"coda wyoming: cannot listen on {uri} (metrics {metrics or 'off'}): {exc}", file=sys.stderr)
        return 1
    return 0
