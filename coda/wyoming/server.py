"""The Wyoming server process: a TCP (or Unix socket) listener in front of the running Coda.

Speech recognition, synthesis and the assistant stay in `coda serve`, which owns the models; this
process only translates (coda.wyoming.handler), so it starts in a moment and holds no weights.
"""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass
from functools import partial
from typing import Any

from prometheus_client import start_http_server
from wyoming.server import AsyncServer, AsyncTcpServer

from coda.wyoming.handler import CodaLink, WyomingHandler

#: The start-up line's fixed start: tests and `coda up` read the bound address from it.
BANNER = "coda wyoming serving"


@dataclass
class WyomingServer:
    """A running server; `uri` is where it actually listens (port 0 resolved)."""

    server: AsyncServer
    link: CodaLink
    uri: str
    metrics_address: str
    _metrics_server: Any = None

    def banner(self) -> str:
        metrics = f"http://{self.metrics_address}/metrics" if self.metrics_address else "off"
        return f"{BANNER} asr,tts,handle on {self.uri} (coda {self.link.address}) metrics {metrics}"

    async def stop(self) -> None:
        await self.server.stop()
        await self.link.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()


async def start(
    uri: str, coda_address: str, metrics_address: str = "", user_id: str = "", assistant_address: str = ""
) -> WyomingServer:
    """Listen on `uri` (port 0 picks a free one) for Coda at `coda_address` (Voice; the Assistant too
    unless `assistant_address` is given)."""
    link = CodaLink(coda_address, assistant_address, user_id)
    server = AsyncServer.from_uri(uri)
    await server.start(partial(WyomingHandler, link))
    if isinstance(server, AsyncTcpServer) and isinstance(server._server, asyncio.Server):
        host, port = server._server.sockets[0].getsockname()[:2]
        uri = f"tcp://{host}:{port}"
    metrics_server = None
    if metrics_address:
        mhost, mport = metrics_address.rsplit(":", 1)
        metrics_server, _ = start_http_server(int(mport), addr=mhost)
        metrics_address = f"{mhost}:{metrics_server.server_port}"
    return WyomingServer(server, link, uri, metrics_address, metrics_server)


async def serve(uri: str, coda_address: str, metrics_address: str, user_id: str, assistant_address: str) -> None:
    running = await start(uri, coda_address, metrics_address, user_id, assistant_address)
    print(running.banner(), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await running.stop()
