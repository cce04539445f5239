"""The `coda` command. Each area registers its own subcommands; this module only dispatches.

A module in COMMAND_MODULES defines `register(subparsers)`, adding parsers whose defaults set
`func(args) -> int`. The global options (--config, --log-level, --log-format) are on every command.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

from coda import __version__, logs
from coda.config import Config, ConfigError, load

COMMAND_MODULES = (
    "coda.runtime.cli",  # serve, up, config
    "coda.bus.cli",  # events tail / publish / describe
    "bridge.cli",  # bridge
    "coda.assistant.cli",  # chat
    "coda.wyoming.cli",  # wyoming (Home Assistant)
    "coda.tools.mcp.cli",  # mcp
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="coda", description="Coda: a local-first voice and text assistant.")
    parser.add_argument("--version", action="version", version=f"coda {__version__}")
    parser.add_argument("--config", help="config file (TOML); default $CODA_CONFIG or ./coda.toml")
    parser.add_argument("--log-level", help="debug, info, warning, error (default from config: warning)")
    parser.add_argument("--log-format", choices=["text", "json"], help="log line format")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not name.startswith(exc.name):
                raise
            continue
        module.register(subparsers)
    return parser


def load_config(args: argparse.Namespace) -> Config:
    """The effective config of a command, with logging configured from it and the flags."""
    config = load(args.config)
    if args.log_level:
        config.log.level = args.log_level
    if args.log_format:
        config.log.format = args.log_format
    logs.configure(config.log.level, config.log.format)
    return config


def main(argv: list[str] | None = None) -> int:
    # Loading every command's module takes a moment, and a Ctrl-C then would land inside some
    # module's import (numpy and dataclasses turn it into other errors; gRPC's half-initialised core
    # can hang at exit): the default action ends the process at once, quietly; there is nothing to
    # clean up yet. Commands then get Python's KeyboardInterrupt back.
    previous = signal.getsignal(signal.SIGINT)
    loading = threading.current_thread() is threading.main_thread() and previous is not signal.SIG_IGN
    if loading:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        parser = build_parser()
    finally:
        if loading:
            keep = previous not in (None, signal.SIG_DFL)
            signal.signal(signal.SIGINT, previous if keep else signal.default_int_handler)  # type: ignore[arg-type]
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"coda: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
