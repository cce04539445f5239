"""The in-process Coda host a benchmark measures against."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from coda import config as config_module
from coda.runtime.host import Host


@contextlib.asynccontextmanager
async def bench_host(only: str, **env: str) -> AsyncIterator[Host]:
    """A real host running `only` on a free loopback port, its bus log in a temporary folder and no
    metrics port; `env` holds further CODA_* overrides. Stopped at exit."""
    with tempfile.TemporaryDirectory() as tmp:
        base = {"CODA_GRPC__ADDRESS": "127.0.0.1:0", "CODA_METRICS__ADDRESS": "", "CODA_BUS__PATH": str(Path(tmp))}
        host = Host(config_module.load(None, env={**base, **env}), only)
        await host.start()
        try:
            yield host
        finally:
            await host.stop()
