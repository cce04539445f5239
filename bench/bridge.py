"""Bridge fan-out benchmark: events published over gRPC to Coda, received by N WebSocket clients.

Coda (bus only) and the publisher run in this process, the bridge in its own (`python -m bridge`),
the clients in worker processes (many clients each). The same clients are then pointed at a raw
reference: a plain `websockets` server broadcasting one pre-encoded frame per event. Reported:
events delivered per second (all clients together), loss, and p50/p99 publish-to-receive latency
(Event.time, set just before publishing, to the client's receive time).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing as mp
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIENT_PROCESSES = 2
PROTOCOL = "coda.v1.proto"


def _raise_open_file_limit() -> int:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --- client worker process


def _client_worker(
    url: str, clients: int, expected: int, deadline: float, ready: mp.Queue, go: mp.Event, results: mp.Queue
) -> None:
    asyncio.run(_clients(url, clients, expected, deadline, ready, go, results))


async def _clients(
    url: str, clients: int, expected: int, deadline: float, ready: mp.Queue, go: mp.Event, results: mp.Queue
) -> None:
    """Each client counts events until it has `expected` or `deadline` seconds after subscribing passed."""
    from websockets.asyncio.client import connect

    from coda.v1 import bridge_pb2

    latencies: list[float] = []
    counts: list[int] = []
    subscribe = bridge_pb2.ClientFrame(subscribe=bridge_pb2.SubscribeFrame(types=["llm.*"])).SerializeToString()

    async def one() -> None:
        received = 0
        async with connect(url, subprotocols=[PROTOCOL], max_size=None, open_timeout=60, ping_interval=None) as ws:  # type: ignore[list-item]
            await ws.send(subscribe)
            ready.put(1)
            frame = bridge_pb2.ServerFrame()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(deadline):
                    while received < expected:
                        data = await ws.recv()
                        now = time.time_ns()
                        frame.ParseFromString(data)
                        if frame.WhichOneof("frame") != "events":
                            continue
                        for event in frame.events.events:
                            received += 1
                            latencies.append((now - event.time.ToNanoseconds()) / 1e9)
        counts.append(received)

    # Connect in waves so that the handshakes do not all time out on a 2-core machine.
    tasks = []
    for start in range(0, clients, 200):
        tasks.extend(asyncio.create_task(one()) for _ in range(start, min(clients, start + 200)))
        await asyncio.sleep(0.05)
    await asyncio.gather(*tasks, return_exceptions=True)
    results.put((counts, latencies))


class ClientFleet:
    def __init__(self, url: str, clients: int, expected: int, deadline: float) -> None:
        ctx = mp.get_context("spawn")
        self.ready = ctx.Queue()
        self.results = ctx.Queue()
        self.go = ctx.Event()
        self.clients = clients
        share = [clients // CLIENT_PROCESSES + (i < clients % CLIENT_PROCESSES) for i in range(CLIENT_PROCESSES)]
        self.procs = [
            ctx.Process(
                target=_client_worker, args=(url, n, expected, deadline, self.ready, self.go, self.results), daemon=True
            )
            for n in share
            if n
        ]

    async def start(self) -> None:
        for proc in self.procs:
            proc.start()
        for _ in range(self.clients):
            await asyncio.to_thread(self.ready.get, True, 120)
        await asyncio.sleep(0.5)  # the last subscribe frames reach the bridge

    async def finish(self) -> tuple[list[int], list[float]]:
        counts: list[int] = []
        latencies: list[float] = []
        for _ in self.procs:
            c, lat = await asyncio.to_thread(self.results.get, True, 120)
            counts += c
            latencies += lat
        for proc in self.procs:
            proc.join(10)
        return counts, latencies


# --- raw reference server (its own process)


def _raw_server(port_queue: mp.Queue, start: mp.Event, rate: float, count: int) -> None:
    asyncio.run(_raw(port_queue, start, rate, count))


async def _raw(port_queue: mp.Queue, start: mp.Event, rate: float, count: int) -> None:
    from websockets.asyncio.server import broadcast, serve

    from coda.schema import new_event
    from coda.v1 import bridge_pb2, events_pb2

    connections: set = set()

    async def handler(ws) -> None:  # type: ignore[no-untyped-def]
        connections.add(ws)
        try:
            await ws.wait_closed()
        finally:
            connections.discard(ws)

    async with serve(handler, "127.0.0.1", 0, subprotocols=[PROTOCOL], compression=None, ping_interval=None) as server:  # type: ignore[list-item]
        port_queue.put(next(iter(server.sockets)).getsockname()[1])
        await asyncio.to_thread(start.wait)
        t0 = time.monotonic()
        for seq in range(1, count + 1):
            await asyncio.sleep(max(0.0, t0 + seq / rate - time.monotonic()))
            event = new_event("llm", events_pb2.LlmToken(text=f"token {seq}"))
            event.seq = seq
            frame = bridge_pb2.ServerFrame(events=events_pb2.EventBatch(events=[event])).SerializeToString()
            broadcast(connections, frame)
        await asyncio.sleep(2)


# --- runs


def _summary(
    name: str, clients: int, rate: float, sent: int, elapsed: float, counts: list[int], lat: list[float]
) -> str:
    delivered = sum(counts)
    expected = clients * sent
    missing = 1 - delivered / expected if expected else 0.0
    lat.sort()
    p50 = lat[len(lat) // 2] * 1000 if lat else float("nan")
    p99 = lat[int(len(lat) * 0.99)] * 1000 if lat else float("nan")
    return (
        f"{name:6} clients={clients:5} rate={rate:5.0f}/s  delivered {delivered / elapsed:8.0f} events/s "
        f"(offered {clients * rate:7.0f}/s)  not delivered within run+15s {missing:6.2%}  "
        f"p50 {p50:7.1f} ms  p99 {p99:7.1f} ms"
    )


async def _bridge_run(clients: int, rate: float, seconds: float) -> str:
    from coda.schema import new_event
    from coda.v1 import events_pb2

    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import make_config, running_host
    from test_bridge_helpers import publisher

    count = int(rate * seconds)
    with tempfile.TemporaryDirectory() as tmp:
        config = make_config(Path(tmp))
        async with running_host(config, only="bus") as host:
            env = {
                **os.environ,
                "CODA_BRIDGE__CODA_ADDRESS": host.address,
                "CODA_BRIDGE__PORT": "0",
                "CODA_BRIDGE__MAX_CONNECTIONS": "0",
                "CODA_BRIDGE__MAX_CONNECTIONS_PER_IP": "0",
                "PYTHONUNBUFFERED": "1",
            }
            bridge = subprocess.Popen(  # noqa: ASYNC220 (started once, not on a hot path)
                [sys.executable, *os.environ.get("BENCH_BRIDGE_PYFLAGS", "").split(), "-m", "bridge"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                assert bridge.stdout is not None
                banner = await asyncio.to_thread(bridge.stdout.readline)
                url = banner.split(" on ", 1)[1].split()[0]
                fleet = ClientFleet(url, clients, count, seconds + 15)
                await fleet.start()
                async with publisher(host.address) as pub:
                    t0 = time.monotonic()
                    for i in range(count):
                        await asyncio.sleep(max(0.0, t0 + (i + 1) / rate - time.monotonic()))
                        pub.publish(new_event("llm", events_pb2.LlmToken(text=f"token {i}")))
                    await pub.flush()
                    counts, latencies = await fleet.finish()
                    elapsed = max(seconds, time.monotonic() - t0)
            finally:
                bridge.send_signal(signal.SIGTERM)
                await asyncio.to_thread(bridge.wait, 20)
    return _summary("bridge", clients, rate, count, elapsed, counts, latencies)


async def _raw_run(clients: int, rate: float, seconds: float) -> str:
    count = int(rate * seconds)
    ctx = mp.get_context("spawn")
    port_queue: mp.Queue = ctx.Queue()
    start = ctx.Event()
    server = ctx.Process(target=_raw_server, args=(port_queue, start, rate, count), daemon=True)
    server.start()
    try:
        port = await asyncio.to_thread(port_queue.get, True, 30)
        fleet = ClientFleet(f"ws://127.0.0.1:{port}/", clients, count, seconds + 15)
        await fleet.start()
        t0 = time.monotonic()
        start.set()
        counts, latencies = await fleet.finish()
        elapsed = max(seconds, time.monotonic() - t0)
    finally:
        server.kill()
        server.join()
    return _summary("raw", clients, rate, count, elapsed, counts, latencies)


async def _main(quick: bool) -> None:
    limit = _raise_open_file_limit()
    sizes = [100, 1000] if quick else [100, 1000, 5000]
    seconds = 3.0 if quick else 5.0
    rate = 100.0
    print(f"bridge fan-out: {os.cpu_count()} cores, open-file limit {limit}, {rate:.0f} events/s for {seconds:g}s")
    for clients in sizes:
        for run in (_bridge_run, _raw_run):
            print(await run(clients, rate, seconds), flush=True)


def main(quick: bool) -> None:
    asyncio.run(_main(quick))


if __name__ == "__main__":
    main(quick="--quick" in sys.argv)
