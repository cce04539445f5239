"""NATS JetStream backend vs the embedded one, same run: delivery rate and publish-to-deliver latency.

For each setup (embedded memory log; NATS, one node; NATS, three nodes with replicas=3) a bus
runs as its own `coda serve --only bus` process on loopback; this process publishes over gRPC
and two `*` subscribers read over gRPC.

1. Delivery rate: `count` events published as fast as acks allow (batches of 256, 4 in flight);
   events delivered per second over both subscribers, first to last event.
2. Latency: a steady 500 events/s for a few seconds; publish-to-deliver p50/p99 from the event's
   time (set at publish) to its arrival at a subscriber.

On a 2-core machine the NATS servers, the bus, the publisher and the subscribers share those
cores: the figures are a floor and the ratios are what to compare.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

SUBSCRIBERS = 2
BATCH = 256
IN_FLIGHT = 4


def _start_bus(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    args = ["-m", "coda", "serve", "--only", "bus", "--address", "127.0.0.1:0", "--metrics-address", ""]
    proc = subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "CODA_CONFIG": "", **env},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if " on " not in line:
        proc.kill()
        raise RuntimeError(f"bus did not start: {line!r}")
    return proc, line.split(" on ", 1)[1].split()[0]


async def _subscriber(
    address: str, after_seq: int, count: int, ready: asyncio.Event
) -> tuple[float, float, list[float]]:
    """Receive `count` events; (first arrival, last arrival, latencies in seconds)."""
    from coda.v1 import bus_pb2, bus_pb2_grpc

    latencies: list[float] = []
    first = last = 0.0
    seen = 0
    async with grpc.aio.insecure_channel(address) as channel:
        call = bus_pb2_grpc.EventBusStub(channel).Subscribe(bus_pb2.SubscribeRequest(types=["*"], after_seq=after_seq))
        ready.set()
        async for response in call:
            now = time.time_ns()
            if not first:
                first = time.perf_counter()
            for event in response.batch.events:
                if event.HasField("llm_token"):
                    latencies.append((now - event.time.ToNanoseconds()) / 1e9)
                    seen += 1
            if seen >= count:
                last = time.perf_counter()
                break
        call.cancel()
    return first, last, latencies


async def _publish(address: str, count: int, rate: float = 0.0) -> None:
    """Publish `count` llm.token events in batches; at `rate` events/s when given."""
    from coda.schema import new_event
    from coda.v1 import bus_pb2, bus_pb2_grpc, events_pb2

    batch = BATCH if not rate else max(1, int(rate / 100))
    async with grpc.aio.insecure_channel(address) as channel:
        call = bus_pb2_grpc.EventBusStub(channel).Publish()
        room = asyncio.Semaphore(IN_FLIGHT)
        batches = (count + batch - 1) // batch

        async def read_acks() -> None:
            for _ in range(batches):
                response = await call.read()
                if any(a.error for a in response.acks):
                    raise RuntimeError(response.acks[0].error)
                room.release()

        reader = asyncio.create_task(read_acks())
        started = time.perf_counter()
        for n in range(batches):
            if rate:
                await asyncio.sleep(max(0.0, started + n * batch / rate - time.perf_counter()))
            await room.acquire()
            size = min(batch, count - n * batch)
            events = [new_event("bench", events_pb2.LlmToken(text="token text", index=i)) for i in range(size)]
            await call.write(bus_pb2.PublishRequest(events=events))
        await reader
        await call.done_writing()


async def _head(address: str) -> int:
    from coda.v1 import bus_pb2, bus_pb2_grpc

    async with grpc.aio.insecure_channel(address) as channel:
        return (await bus_pb2_grpc.EventBusStub(channel).Describe(bus_pb2.DescribeRequest(), timeout=10)).head_seq


async def _measure(address: str, count: int, rate: float) -> tuple[float, list[float]]:
    head = await _head(address)
    readies = [asyncio.Event() for _ in range(SUBSCRIBERS)]
    subs = [asyncio.create_task(_subscriber(address, head, count, ready)) for ready in readies]
    for ready in readies:
        await ready.wait()
    await asyncio.sleep(0.2)
    await _publish(address, count, rate)
    results = await asyncio.gather(*subs)
    span = max(r[1] for r in results) - min(r[0] for r in results)
    latencies = [latency for r in results for latency in r[2]]
    return SUBSCRIBERS * count / span if span > 0 else 0.0, latencies


def _percentiles(latencies: list[float]) -> str:
    cuts = statistics.quantiles(latencies, n=100)
    return f"p50 {cuts[49] * 1000:.2f} ms, p99 {cuts[98] * 1000:.2f} ms"


async def main(quick: bool) -> None:
    from nats_cluster import NatsCluster

    count = 5_000 if quick else 20_000
    latency_seconds = 2.0 if quick else 5.0
    steady = 500.0
    print(f"cpus: {os.cpu_count()}, {SUBSCRIBERS} subscribers, {count} events, batches of {BATCH}")
    setups: list[tuple[str, int]] = [("memory", 0), ("nats, 1 node", 1), ("nats, 3 nodes R3", 3)]
    baseline = 0.0
    for label, nodes in setups:
        cluster = NatsCluster(nodes).start() if nodes else None
        env = {"CODA_BUS__BACKEND": "memory"}
        if cluster is not None:
            env = {
                "CODA_BUS__BACKEND": "nats",
                "CODA_BUS__NATS__SERVERS": json.dumps(cluster.urls),
                "CODA_BUS__NATS__REPLICAS": str(nodes),
            }
        proc, address = _start_bus(env)
        try:
            rate, _ = await _measure(address, count, 0.0)
            _, latencies = await _measure(address, int(steady * latency_seconds), steady)
        finally:
            proc.terminate()
            proc.wait(20)
            if cluster is not None:
                cluster.stop()
        baseline = baseline or rate
        print(
            f"{label:18s} delivery {rate:9.0f} events/s ({rate / baseline:4.2f}x embedded); "
            f"at {steady:.0f}/s: {_percentiles(latencies)}",
            flush=True,
        )
