"""Tool call round trip over gRPC `Tools/Execute` (the `calculate` tool), hosted with the bus.

Three shapes: one caller making calls one after another; 16 callers, each with its own stream;
and one stream with 16 calls in flight at once. Latency is from sending the ToolCall to reading
its ToolResult; every call also publishes its tool.* events to the in-process bus.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import grpc
import numpy as np

from bench.host import bench_host
from coda.v1 import tools_pb2, tools_pb2_grpc

CONCURRENCY = 16
EXPRESSION = json.dumps({"expression": "(17 * 23 + 4) / 3 - sqrt(2) ** 2"})


class Caller:
    """One Execute stream; `call(name, arguments)` sends a call, waits for its result, returns seconds."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._requests: asyncio.Queue[tools_pb2.ExecuteRequest | None] = asyncio.Queue()
        self._waiting: dict[str, asyncio.Future[tools_pb2.ExecuteResponse]] = {}
        self._rpc = tools_pb2_grpc.ToolsStub(channel).Execute(self._generate())
        self._reader = asyncio.create_task(self._read())
        self._next_id = 0

    async def _generate(self) -> AsyncIterator[tools_pb2.ExecuteRequest]:
        while (request := await self._requests.get()) is not None:
            yield request

    async def _read(self) -> None:
        async for response in self._rpc:
            kind = response.WhichOneof("response")
            if kind in ("result", "error"):
                message = getattr(response, kind)
                future = self._waiting.pop(message.call_id, None)
                if future is not None:
                    future.set_result(response)

    async def call(self, name: str = "calculate", arguments: str = EXPRESSION) -> float:
        self._next_id += 1
        call_id = str(self._next_id)
        future: asyncio.Future[tools_pb2.ExecuteResponse] = asyncio.get_running_loop().create_future()
        self._waiting[call_id] = future
        start = time.perf_counter()
        call = tools_pb2.ToolCall(call_id=call_id, name=name, arguments_json=arguments)
        self._requests.put_nowait(tools_pb2.ExecuteRequest(call=call))
        response = await future
        elapsed = time.perf_counter() - start
        if response.WhichOneof("response") != "result":
            raise RuntimeError(f"{name} failed: {response}")
        return elapsed

    async def close(self) -> None:
        self._requests.put_nowait(None)
        await self._reader


def report(label: str, samples: list[float], wall: float) -> None:
    ms = np.array(samples) * 1000.0
    print(
        f"  {label:<34} {len(samples) / wall:9.0f} calls/s   "
        f"p50 {np.percentile(ms, 50):6.2f} ms   p99 {np.percentile(ms, 99):6.2f} ms   ({len(samples)} calls)"
    )


async def sequential(channel: grpc.aio.Channel, calls: int) -> None:
    caller = Caller(channel)
    for _ in range(min(50, calls)):  # warm-up
        await caller.call()
    start = time.perf_counter()
    samples = [await caller.call() for _ in range(calls)]
    report("sequential, 1 stream", samples, time.perf_counter() - start)
    await caller.close()


async def many_streams(channel: grpc.aio.Channel, calls: int) -> None:
    callers = [Caller(channel) for _ in range(CONCURRENCY)]
    per_caller = max(1, calls // CONCURRENCY)

    async def run(caller: Caller) -> list[float]:
        return [await caller.call() for _ in range(per_caller)]

    start = time.perf_counter()
    results = await asyncio.gather(*(run(c) for c in callers))
    report(f"{CONCURRENCY} concurrent streams", [s for r in results for s in r], time.perf_counter() - start)
    for caller in callers:
        await caller.close()


async def one_stream_in_flight(channel: grpc.aio.Channel, calls: int) -> None:
    caller = Caller(channel)
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def one() -> float:
        async with semaphore:
            return await caller.call()

    start = time.perf_counter()
    samples = await asyncio.gather(*(one() for _ in range(calls)))
    report(f"1 stream, {CONCURRENCY} calls in flight", list(samples), time.perf_counter() - start)
    await caller.close()


async def main(quick: bool) -> None:
    calls = 400 if quick else 3000
    async with bench_host("bus,tools", CODA_GRPC__SHUTDOWN_GRACE_SECONDS="1") as host:
        print("tools: Execute round trip (calculate), over loopback gRPC")
        async with grpc.aio.insecure_channel(host.address) as channel:
            await sequential(channel, calls)
            await many_streams(channel, calls)
            await one_stream_in_flight(channel, calls)


if __name__ == "__main__":
    import sys

    asyncio.run(main("--quick" in sys.argv))
