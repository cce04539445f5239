"""Bus benchmark, through real gRPC on loopback, subscribers in separate processes.

1. Throughput: one publisher (batched Publish) and 10 `*` subscribers, each on its own channel;
   events delivered per second in total, measured at the subscribers from first to last byte.
2. Raw reference, same run, same clients: a gRPC server streaming pre-built batches of the same
   events with no bus logic; the bus's figure is printed as a fraction of it.
3. Latency: a steady 1,000 events/s with 10 subscribers; publish-to-deliver p50/p99 (event time
   set at publish, read at the subscriber after parsing), after a one-second warm-up.

The bus and the raw server each run as their own process, the subscribers in one process per
core; on a 2-core machine the server, the publisher and the subscribers share those cores, so the
figures are a floor.
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
#: Subscriber processes: one per core, each holding its share of the subscribers.
PROCESSES = max(1, min(SUBSCRIBERS, os.cpu_count() or 1))
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
#
# Ten subscribers, each on its own channel (its own HTTP/2 connection) and Subscribe stream, spread
# over one process per core: ten client processes on two cores would spend the machine on their
# own grpc threads waking up, and the figures would measure the clients rather than the server.


async def _count_one(address: str, after_seq: int, expected_bytes: int, opened: asyncio.Event) -> tuple:  # type: ignore[type-arg]
    """Receive until `expected_bytes` of batch bodies arrived; return (first, last, bytes)."""
    from coda.v1 import bus_pb2

    async with grpc.aio.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 << 20)]) as ch:
        method = ch.unary_stream(
            "/coda.v1.EventBus/Subscribe",
            request_serializer=bus_pb2.SubscribeRequest.SerializeToString,
            response_deserializer=None,
        )
        call = method(bus_pb2.SubscribeRequest(types=["*"], after_seq=after_seq))
        opened.set()
        received, first = 0, 0.0
        async for message in call:
            if not first:
                first = time.perf_counter()
            received += _body_length(message)
            if received >= expected_bytes:
                break
        call.cancel()
        return first, time.perf_counter(), received


async def _latency_one(
    address: str, after_seq: int, first_index: int, count: int, opened: asyncio.Event
) -> list[float]:
    """Publish-to-deliver latencies (ms) of the `latency` events with index >= `first_index`."""
    from coda.bus.client import subscribe

    latencies: list[float] = []
    async with grpc.aio.insecure_channel(address) as ch:
        opened.set()
        async for response in subscribe(ch, ["*"], after_seq=after_seq):
            now = time.time_ns()
            for event in response.batch.events:
                if event.source == "latency" and event.llm_token.index >= first_index:
                    latencies.append((now - event.time.ToNanoseconds()) / 1e6)
            if len(latencies) >= count:
                return latencies
    return latencies


def _subscriber_process(kind: str, args: tuple, subscribers: int, ready, results) -> None:  # type: ignore[no-untyped-def,type-arg]
    run_one = {"count": _count_one, "latency": _latency_one}[kind]

    async def run() -> None:
        opened = [asyncio.Event() for _ in range(subscribers)]
        tasks = [asyncio.create_task(run_one(*args, event)) for event in opened]
        for event in opened:
            await event.wait()
        ready.set()
        for result in await asyncio.gather(*tasks):
            results.put(result)

    asyncio.run(run())


def _start_subscribers(kind: str, args: tuple) -> tuple[list, object]:  # type: ignore[type-arg]
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    procs, readies = [], []
    for index in range(PROCESSES):
        share = SUBSCRIBERS // PROCESSES + (index < SUBSCRIBERS % PROCESSES)
        ready = ctx.Event()
        proc = ctx.Process(target=_subscriber_process, args=(kind, args, share, ready, results), daemon=True)
        proc.start()
        procs.append(proc)
        readies.append(ready)
    for ready in readies:
        ready.wait(60)
    return procs, results


def _collect(results, procs) -> list:  # type: ignore[no-untyped-def,type-arg]
    """One result per subscriber, then the processes joined."""
    collected = [results.get(timeout=120) for _ in range(SUBSCRIBERS)]
    for proc in procs:
        proc.join(10)
    return collected


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
    from coda.v1 import bus_pb2, events_pb2
    from coda.wire import frame_field1

    events = []
    for seq, data in enumerate(_event_bytes(count), 1):
        event = events_pb2.Event.FromString(data)
        event.seq = seq
        events.append(frame_field1(event.SerializeToString()))
    batches = [frame_field1(b"".join(events[i : i + BATCH])) for i in range(0, count, BATCH)]

    # Like the bus phase, where publishing starts once every subscriber is in, streaming starts
    # when all of them are: a subscriber that connects late would otherwise stretch the span.
    subscribed = 0
    everyone_in = asyncio.Event()

    async def subscribe(request, context):  # type: ignore[no-untyped-def]
        nonlocal subscribed
        subscribed += 1
        if subscribed == SUBSCRIBERS:
            everyone_in.set()
        await everyone_in.wait()
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
    from coda.v1 import events_pb2
    from coda.wire import frame_field1

    total = 0
    for offset, data in enumerate(datas):
        event = events_pb2.Event.FromString(data)
        event.seq = first_seq + offset
        total += len(frame_field1(event.SerializeToString()))
    return total


def _span(results, procs) -> float:  # type: ignore[no-untyped-def]
    """Seconds from the first subscriber's first batch to the last subscriber's last."""
    spans = _collect(results, procs)
    return max(s[1] for s in spans) - min(s[0] for s in spans)


# -- phases -------------------------------------------------------------------------------------


async def _publish_all(address: str, datas: list[bytes], window: int = 8) -> float:
    """Publish pre-serialized events in batches over one Publish stream; returns seconds taken."""
    from coda.v1 import bus_pb2
    from coda.wire import frame_field1

    # Acks as GrpcPublisher takes them: one seq per request when all its events were stored.
    compact_acks = bus_pb2.PublishRequest(compact_acks=True).SerializeToString()
    requests = []
    for i in range(0, len(datas), 1024):
        # A PublishRequest is field 1 repeated: frame each pre-serialized event and concatenate.
        requests.append(b"".join([*(frame_field1(d) for d in datas[i : i + 1024]), compact_acks]))
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
                if not response.first_seqs:
                    raise RuntimeError(f"events refused or stored twice: {response.acks[:3]}")
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
    print(
        f"cpus: {os.cpu_count()}, subscribers: {SUBSCRIBERS} (own channel each) in {PROCESSES} processes, "
        f"events: {count}, batch {BATCH}"
    )
    datas = _event_bytes(count)

    # Raw reference.
    raw, raw_address = _start_server(["-m", "bench.bus", "raw-server", str(count)], {})
    try:
        expected = _expected_body_bytes(datas, 1)
        procs, results = _start_subscribers("count", (raw_address, 0, expected))
        raw_rate = SUBSCRIBERS * count / _span(results, procs)
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
        procs, results = _start_subscribers("count", (address, head, expected))
        time.sleep(0.5)
        publish_seconds = asyncio.run(_publish_all(address, datas))
        bus_rate = SUBSCRIBERS * count / _span(results, procs)
        print(f"bus publish: {count / publish_seconds:,.0f} events/s accepted (one publisher, 1024/request)")
        print(
            f"bus delivery: {bus_rate:,.0f} events/s delivered in total = {bus_rate / raw_rate:.2f} of the raw reference"
        )

        # Steady 1,000 events/s; the first second warms up (connections, first-call paths) and is
        # not measured.
        rate = 1000
        warm_up = rate
        total = int(rate * latency_seconds)
        head = _describe_head(address)
        procs, results = _start_subscribers("latency", (address, head, warm_up, total))
        time.sleep(0.5)

        async def steady() -> None:
            from coda.bus.client import GrpcPublisher
            from coda.schema import new_event
            from coda.v1 import events_pb2

            async with grpc.aio.insecure_channel(address) as ch:
                publisher = GrpcPublisher(lambda: ch, "latency")
                start = time.perf_counter()
                for i in range(warm_up + total):
                    delay = start + i / rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    publisher.publish(new_event("latency", events_pb2.LlmToken(text="t", index=i)))
                await publisher.close()

        asyncio.run(steady())
        latencies = sorted(x for per_subscriber in _collect(results, procs) for x in per_subscriber)
        p50 = statistics.median(latencies)
        p99 = latencies[int(len(latencies) * 0.99) - 1]
        print(
            f"latency at {rate} events/s, {SUBSCRIBERS} subscribers: p50 {p50:.2f} ms, p99 {p99:.2f} ms "
            f"({len(latencies)} deliveries after a 1 s warm-up; publish-to-deliver incl. client batching)"
        )
    finally:
        bus.terminate()
        bus.wait(20)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "raw-server":
        _raw_server_main(int(sys.argv[2]))
    else:
        main("--quick" in sys.argv)
