"""Run the benchmarks listed in BENCHES (each a module `bench.<name>` with `main(quick)`)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import sys
import time

#: Benchmark modules, in run order; add yours with a one-line edit.
BENCHES = [
    "bus",
    "bridge",
    "llm",
    "tools",
    "mcp",
    "memory",
    "voice",
    "tts",
    "assistant",
    "nats",
    "quality",
    "openai_api",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs (about 10 s each)")
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default all: {', '.join(BENCHES)})")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(BENCHES)}")
    for name in args.names or BENCHES:
        module = importlib.import_module(f"bench.{name}")
        print(f"== {name}{' (quick)' if args.quick else ''}", flush=True)
        started = time.perf_counter()
        result = module.main(args.quick)
        if inspect.isawaitable(result):
            asyncio.run(result)  # type: ignore[arg-type]
        print(f"== {name} done in {time.perf_counter() - started:.1f} s\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
