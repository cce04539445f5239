"""The bridge and Coda as real processes: banner, SIGTERM (1001, exit 0), Coda restarts with a durable log."""

from __future__ import annotations

import asyncio
import signal
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import Processes, make_config, running_host
from test_bridge_helpers import collect_seqs, open_client, publish_tokens, publisher, recv, running_bridge, subscribe
from websockets.exceptions import ConnectionClosed

from bridge.codec import PROTO_PROTOCOL

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def healthz(url: str) -> int:
    try:
        with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_bridge_process_banner_and_graceful_shutdown(tmp_path: Path, processes: Processes) -> None:
    config = make_config(tmp_path)
    async with running_host(config, only="bus") as host:
        child, banner = await asyncio.to_thread(
            processes.start,
            ["-m", "bridge"],
            env={"CODA_BRIDGE__CODA_ADDRESS": host.address, "CODA_BRIDGE__PORT": "0"},
            banner="coda bridge serving on",
        )
        url = banner.split(" on ", 1)[1].split()[0]
        assert url.startswith("ws://127.0.0.1:") and url.endswith("/v1/ws")
        assert f"(coda {host.address})" in banner
        clients = [await open_client(url), await open_client(url, PROTO_PROTOCOL)]
        await subscribe(clients[0], ["*"])
        await recv(clients[0])
        code = await asyncio.to_thread(processes.stop, child, signal.SIGTERM)
        assert code == 0
        for ws in clients:
            with pytest.raises(ConnectionClosed):
                while True:
                    await recv(ws)
            assert ws.close_code == 1001


async def test_coda_restart_with_durable_log_loses_nothing(tmp_path: Path, processes: Processes) -> None:
    address = f"127.0.0.1:{free_port()}"
    coda_env = {
        "CODA_BUS__BACKEND": "file",
        "CODA_BUS__PATH": str(tmp_path / "bus"),
        "CODA_METRICS__ADDRESS": "",
        "CODA_GRPC__SHUTDOWN_GRACE_SECONDS": "1",
    }
    serve = ["-m", "coda", "serve", "--only", "bus", "--address", address]
    coda, _ = await asyncio.to_thread(processes.start, serve, env=coda_env, banner="coda serving")
    config = make_config(tmp_path, CODA_BRIDGE__RECONNECT_MAX_SECONDS="0.3")
    async with running_bridge(config, address) as bridge, publisher(address) as pub:
        live = await open_client(bridge.url)
        await subscribe(live, ["*"])
        await recv(live)
        away = await open_client(bridge.url, PROTO_PROTOCOL)
        await subscribe(away, ["llm.*"])
        await recv(away)
        before = await publish_tokens(pub, 10, prefix="before")
        seen_live = await collect_seqs(live, before)
        away_last = (await collect_seqs(away, before))[-1]
        await away.close()
        missed = await publish_tokens(pub, 5, prefix="missed")

        assert await asyncio.to_thread(processes.stop, coda) == 0
        async with asyncio.timeout(10):
            while await asyncio.to_thread(healthz, bridge.http_url) != 503:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        coda, _ = await asyncio.to_thread(processes.start, serve, env=coda_env, banner="coda serving")
        async with asyncio.timeout(15):
            while await asyncio.to_thread(healthz, bridge.http_url) != 200:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        after = await publish_tokens(pub, 10, prefix="after")
        assert after > missed > before

        # A browser connected throughout sees one unbroken run of seqs across the restart.
        seqs = seen_live + await collect_seqs(live, after)
        assert seqs == list(range(seqs[0], after + 1))
        assert bridge.metrics.upstream_reconnects._value.get() >= 1
        # One that was away resumes from the durable log: what it missed, then live, no gap frame.
        back = await open_client(bridge.url, PROTO_PROTOCOL)
        await subscribe(back, ["llm.*"], after_seq=away_last)
        others: list = []
        resumed = await collect_seqs(back, after, frames=others)
        assert [f for f in others if f.WhichOneof("frame") == "gap"] == []
        assert len(resumed) == 15 and resumed[-1] == after and resumed[0] > away_last
        assert resumed == sorted(set(resumed))
