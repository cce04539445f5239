"""Bus benchmark, through real gRPC on loopback, subscribers in separate processes.

1. Throughput: one publisher (batched Publish) and 10 `*` subscribers; events delivered per
   second in total, measured at the subscribers from their first to their last byte.
2. Raw reference, same run, same clients: a gRPC server streaming pre-built batches of the same
   events with no bus logic; the bus's figure is printed as a fraction of it.
3. Latency: a steady 1,000 events/s with 10 subscribers; publish-to-deliver p50/p99 (event time
   set at publish, read at the subscriber after parsing).

The bus and the raw server each run as their own process; on a 2-core machine the server, the
publisher and the ten subscriber processes all share those cores, so the figures are a floor.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import grpc

SUBSCRIBERS = 10
BATCH = 256
ROOT = Path(__file__).resolve().parent.parent


def _event_bytes(count: int) -> list[bytes]:
    """`count` serialized events of one fixed shape, seq unset (as a publisher sends them)."""
    from coda.schema import new_event
    from coda.v1 import events_pb2

    return [
        new_event("bench", events_pb2.LlmToken(text="token text", index=i % 1000), session_id="s-1").SerializeToString()
        for i in range(count)
    ]


def _body_length(message: bytes) -> int:
    """Length of a SubscribeResponse's batch body: skip the tag, decode the varint."""
    value, shift, pos = 0, 0, 1
    while True:
        byte = message[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value
        shift += 7


# -- subscriber processes -----------------------------------------------------------------------


def _count_subscriber(address: str, after_seq: int, expected_bytes: int, ready, results) -> None:  # type: ignore[no-untyped-def]
    """Receive until `expected_bytes` of batch bodies arrived; report (first, last, bytes)."""
    from coda.v1 import bus_pb2

    async def run() -> None:
        async with grpc.aio.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 << 20)]) as ch:
            method = ch.unary_stream(
                "/coda.v1.EventBus/Subscribe",
                request_serializer=bus_pb2.SubscribeRequest.SerializeToString,
                response_deserializer=None,
            )
            call = method(bus_pb2.SubscribeRequest(types=["*"], after_seq=after_seq))
            ready.set()
            received, first = 0, 0.0
            async for message in call:
                if not first:
                    first = time.perf_counter()
                received += _body_length(message)
                if received >= expected_bytes:
                    break
            results.put((first, time.perf_counter(), received))
            call.cancel()

    asyncio.run(run())


def _latency_subscriber(address: str, after_seq: int, count: int, ready, results) -> None:  # type: ignore[no-untyped-def]
    from coda.bus.client import subscribe

    async def run() -> None:
        latencies: list[float] = []
        async with grpc.aio.insecure_channel(address) as ch:
            ready.set()
            async for response in subscribe(ch, ["*"], after_seq=after_seq):
                now = time.time_ns()
                for event in response.batch.events:
                    if event.source == "latency":
                        latencies.append((now - event.time.ToNanoseconds()) / 1e6)
                if len(latencies) >= count:
                    break
        results.put(latencies)

    asyncio.run(run())


def _start_subscribers(target, args_for) -> tuple[list, object]:  # type: ignore[no-untyped-def]
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs = []
    events = []
    for _ in range(SUBSCRIBERS):
        ready = ctx.Event()
        proc = ctx.Process(target=target, args=(*args_for, ready, results), daemon=True)
        proc.start()
        procs.append(proc)
        events.append(ready)
    for ready in events:
        ready.wait(60)
    return procs, results


# -- servers ------------------------------------------------------------------------------------


def _start_server(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, **env}
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if " on " not in line:
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    return proc, line.split(" on ", 1)[1].split()[0]


def _raw_server_main(count: int) -> None:
    """A gRPC server streaming pre-built batches of the same events, no bus logic."""
    from coda.bus.log import frame_field1
    from coda.v1 import bus_pb2, events_pb2

    events = []
    for seq, data in enumerate(_event_bytes(count), 1):
        event = events_pb2.Event.FromString(data)
        event.seq = seq
        events.append(frame_field1(event.SerializeToString()))
    batches = [frame_field1(b"".join(events[i : i + BATCH])) for i in range(0, count, BATCH)]

    async def subscribe(request, context):  # type: ignore[no-untyped-def]
        for batch in batches:
            yield batch

    async def serve() -> None:
        server = grpc.aio.server()
        handler = grpc.unary_stream_rpc_method_handler(
            subscribe, request_deserializer=bus_pb2.SubscribeRequest.FromString, response_serializer=lambda b: b
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("coda.v1.EventBus", {"Subscribe": handler}),)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        print(f"raw serving on 127.0.0.1:{port}", flush=True)
        await server.wait_for_termination()

    asyncio.run(serve())


def _expected_body_bytes(datas: list[bytes], first_seq: int) -> int:
    from coda.bus.log import frame_field1
    from coda.v1 import events_pb2

    total = 0
    for offset, data in enumerate(datas):
        event = events_pb2.Event.FromString(data)
        event.seq = first_seq + offset
        total += len(frame_field1(event.SerializeToString()))
    return total


def _rate(results, procs) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    spans = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(10)
    return min(s[0] for s in spans), max(s[1] for s in spans)


# -- phases -------------------------------------------------------------------------------------


async def _publish_all(address: str, datas: list[bytes], window: int = 8) -> float:
    """Publish pre-serialized events in batches over one Publish stream; returns seconds taken."""
    from coda.v1 import bus_pb2

    requests = []
    for i in range(0, len(datas), 1024):
        # A PublishRequest is field 1 repeated: frame each pre-serialized event and concatenate.
        from coda.bus.log import frame_field1

        requests.append(b"".join(frame_field1(d) for d in datas[i : i + 1024]))
    async with grpc.aio.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)]) as ch:
        method = ch.stream_stream(
            "/coda.v1.EventBus/Publish",
            request_serializer=lambda b: b,
            response_deserializer=bus_pb2.PublishResponse.FromString,
        )
        call = method()
        started = time.perf_counter()
        in_flight = asyncio.Semaphore(window)

        async def read() -> None:
            for _ in requests:
                response = await call.read()
                if any(a.error for a in response.acks):
                    raise RuntimeError(response.acks[0].error)
                in_flight.release()

        reader = asyncio.create_task(read())
        for request in requests:
            await in_flight.acquire()
            await call.write(request)
        await reader
        await call.done_writing()
        return time.perf_counter() - started


def _describe_head(address: str) -> int:
    from coda.v1 import bus_pb2, bus_pb2_grpc

    with grpc.insecure_channel(address) as ch:
        return bus_pb2_grpc.EventBusStub(ch).Describe(bus_pb2.DescribeRequest(), timeout=10).head_seq


def main(quick: bool) -> None:
    count = 60_000 if quick else 200_000
    latency_seconds = 2.0 if quick else 5.0
    print(f"cpus: {os.cpu_count()}, subscribers: {SUBSCRIBERS} processes, events: {count}, batch {BATCH}")
    datas = _event_bytes(count)

    # Raw reference.
    raw, raw_address = _start_server(["-m", "bench.bus", "raw-server", str(count)], {})
    try:
        expected = _expected_body_bytes(datas, 1)
        procs, results = _start_subscribers(_count_subscriber, (raw_address, 0, expected))
        first, last = _rate(results, procs)
        raw_rate = SUBSCRIBERS * count / (last - first)
    finally:
        raw.kill()
        raw.wait()
    print(f"raw reference: {raw_rate:,.0f} events/s delivered in total ({SUBSCRIBERS} x {count})")

    env = {
        "CODA_CONFIG": "",
        "CODA_METRICS__ADDRESS": "",
        "CODA_BUS__MAX_EVENTS": str(count * 2),
        "CODA_BUS__MAX_BYTES": str(256 << 20),
        "CODA_BUS__BATCH_MAX_EVENTS": str(BATCH),
        "CODA_BUS__SUBSCRIBER_QUEUE_EVENTS": str(count * 2),
    }
    bus, address = _start_server(["-m", "coda", "serve", "--only", "bus", "--address", "127.0.0.1:0"], env)
    try:
        head = _describe_head(address)
        expected = _expected_body_bytes(datas, head + 1)
        procs, results = _start_subscribers(_count_subscriber, (address, head, expected))
        time.sleep(0.5)
        publish_seconds = asyncio.run(_publish_all(address, datas))
        first, last = _rate(results, procs)
        bus_rate = SUBSCRIBERS * count / (last - first)
        print(f"bus publish: {count / publish_seconds:,.0f} events/s accepted (one publisher, 1024/request)")
        print(
            f"bus delivery: {bus_rate:,.0f} events/s delivered in total = {bus_rate / raw_rate:.2f} of the raw reference"
        )

        # Steady 1,000 events/s.
        rate = 1000
        total = int(rate * latency_seconds)
        head = _describe_head(address)
        procs, results = _start_subscribers(_latency_subscriber, (address, head, total))
        time.sleep(0.5)

        async def steady() -> None:
            from coda.bus.client import GrpcPublisher
            from coda.schema import new_event
            from coda.v1 import events_pb2

            async with grpc.aio.insecure_channel(address) as ch:
                publisher = GrpcPublisher(lambda: ch, "latency")
                start = time.perf_counter()
                for i in range(total):
                    delay = start + i / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    publisher.publish(new_event("latency", events_pb2.LlmToken(text="t", index=i)))
                await publisher.close()

        asyncio.run(steady())
        latencies = sorted(x for _ in procs for x in results.get(timeout=60))
        for proc in procs:
            proc.join(10)
        p50 = statistics.median(latencies)
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        print(
            f"latency at {rate} events/s, {SUBSCRIBERS} subscribers: p50 {p50:.2f} ms, p99 {p99:.2f} ms "
            f"({len(latencies)} deliveries; publish-to-deliver incl. client batching)"
        )
    finally:
        bus.terminate()
        bus.wait(20)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "raw-server":
        _raw_server_main(int(sys.argv[2]))
    else:
        main("--quick" in sys.argv)
