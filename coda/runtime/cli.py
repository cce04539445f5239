"""`coda serve`, `coda up` and `coda config`."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from typing import Any

from coda import config as config_module
from coda.runtime.gc_tuning import tune_for_service
from coda.runtime.host import Host


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser("serve", help="run Coda's gRPC services (all, or --only some)")
    serve.add_argument("--only", help="comma-separated components, e.g. 'bus' or 'memory,tools'")
    serve.add_argument("--address", help="gRPC listen address (overrides grpc.address)")
    serve.add_argument("--metrics-address", help="Prometheus host:port ('' disables)")
    serve.set_defaults(func=run_serve)

    up = subparsers.add_parser("up", help="run everything: all services, the bridge and the web page")
    up.set_defaults(func=run_up)

    show = subparsers.add_parser("config", help="print the effective configuration")
    show.add_argument("--reference", action="store_true", help="print every key with its default as Markdown")
    show.set_defaults(func=run_config)


def run_serve(args: argparse.Namespace) -> int:
    from coda.cli import load_config

    config = load_config(args)
    if args.address:
        config.grpc.address = args.address
    if args.metrics_address is not None:
        config.metrics.address = args.metrics_address

    async def serve() -> None:
        host = Host(config, args.only)
        await host.start()
        tune_for_service()
        metrics = f"http://{host.metrics_address}/metrics" if host.metrics_address else "off"
        # A fixed, parseable banner: tests and `coda up` read the bound address from it.
        print(f"coda serving {','.join(host.names)} on {host.address} metrics {metrics}", flush=True)
        await host.run_until_signal()

    asyncio.run(serve())
    return 0


def run_up(args: argparse.Namespace) -> int:
    """Start `coda serve`, `coda bridge` and `coda wyoming` (unless wyoming.uri is empty); stop all on Ctrl-C or SIGTERM."""
    base = [sys.executable, "-m", "coda"]
    if args.config:
        base += ["--config", args.config]
    if args.log_level:
        base += ["--log-level", args.log_level]
    serve = subprocess.Popen([*base, "serve"], stdout=subprocess.PIPE, text=True)
    assert serve.stdout is not None
    banner = serve.stdout.readline().strip()
    if not banner.startswith("coda serving"):
        serve.wait()
        print("coda up: coda serve did not start", file=sys.stderr)
        return 1
    print(banner, flush=True)
    address = banner.split(" on ", 1)[1].split()[0]
    print(f"coda mcp: MCP clients run `coda mcp --address {address}` (stdio; --http HOST:PORT for HTTP)", flush=True)
    env = {**os.environ, "CODA_BRIDGE__CODA_ADDRESS": address}
    bridge = subprocess.Popen([*base, "bridge"], env=env)
    children: list[subprocess.Popen[Any]] = [bridge, serve]
    wyoming = _start_wyoming(args, base, address)
    if wyoming is not None:
        children.append(wyoming)

    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.2)
    finally:
        forward(signal.SIGTERM, None)
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
    # A child ended by the SIGTERM we forwarded on Ctrl-C or SIGTERM has stopped as asked.
    asked = {0, -signal.SIGTERM, -signal.SIGINT} if stopping else {0}
    return max((abs(child.returncode) for child in children if child.returncode not in asked), default=0)


def _start_wyoming(args: argparse.Namespace, base: list[str], address: str) -> subprocess.Popen[str] | None:
    """`coda wyoming` for Home Assistant, unless `wyoming.uri` is empty; None when it is off or did not start."""
    from coda.cli import load_config

    if not load_config(args).wyoming.uri:
        return None
    wyoming = subprocess.Popen([*base, "wyoming", "--address", address], stdout=subprocess.PIPE, text=True)
    assert wyoming.stdout is not None
    banner = wyoming.stdout.readline().strip()
    if not banner.startswith("coda wyoming serving"):
        wyoming.wait()
        print("coda up: coda wyoming did not start; going on without it", file=sys.stderr)
        return None
    print(banner, flush=True)
    return wyoming


def run_config(args: argparse.Namespace) -> int:
    from coda.cli import load_config

    if args.reference:
        print(config_module.reference_markdown(), end="")
        return 0
    config = load_config(args)
    origin = config.source or "defaults (no config file)"
    print(f"# effective configuration from {origin} and CODA_* environment overrides")
    print(config_module.render(config), end="")
    return 0
