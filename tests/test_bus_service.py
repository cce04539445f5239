"""The EventBus over real gRPC on an ephemeral loopback port (in-process host)."""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY

from coda.bus.client import GrpcPublisher, ResumingSubscription, subscribe
from coda.schema import event_type, new_event
from coda.v1 import bus_pb2, bus_pb2_grpc, events_pb2
from tests.bus_backends import BACKENDS, backend_settings, nats_server  # noqa: F401 - nats_server is a fixture
from tests.conftest import make_config, running_host


@pytest.fixture(params=BACKENDS)
def backend_env(request: pytest.FixtureRequest) -> dict[str, str]:
    """Every test here runs on each bus backend: memory, file and NATS JetStream."""
    return backend_settings(request)


@pytest.fixture
def config(tmp_path: Path, backend_env: dict[str, str]):
    return make_config(tmp_path, **backend_env)


@pytest.fixture
async def channel_to(tmp_path: Path) -> AsyncIterator:
    channels: list[grpc.aio.Channel] = []

    def make(address: str) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(address)
        channels.append(channel)
        return channel

    yield make
    for channel in channels:
        await channel.close()


def token(i: int, session: str = "") -> events_pb2.Event:
    return new_event("llm", events_pb2.LlmToken(text=f"t{i}"), session_id=session)


def error(i: int, session: str = "") -> events_pb2.Event:
    return new_event("tools", events_pb2.SystemError(message=f"e{i}"), session_id=session)


def stt(i: int, session: str = "") -> events_pb2.Event:
    return new_event("voice", events_pb2.VoiceSttPartial(text=f"p{i}"), session_id=session)


async def collect(channel: grpc.aio.Channel, until_seq: int, **kwargs) -> list[events_pb2.Event]:
    """Events of one subscription until one with seq >= until_seq arrives (or the stream ends)."""
    events: list[events_pb2.Event] = []
    async for response in subscribe(channel, **kwargs):
        events.extend(response.batch.events)
        if events and events[-1].seq >= until_seq:
            break
    return events


def _timed(event: events_pb2.Event, seconds: int, nanos: int = 0) -> events_pb2.Event:
    event.time.seconds = seconds
    event.time.nanos = nanos
    return event


async def publish_direct(channel: grpc.aio.Channel, events: list[events_pb2.Event]) -> list[bus_pb2.PublishAck]:
    call = bus_pb2_grpc.EventBusStub(channel).Publish()
    await call.write(bus_pb2.PublishRequest(events=events))
    response = await call.read()
    await call.done_writing()
    return list(response.acks)


FILTERS = [
    ({"types": ["*"]}, lambda e: True),
    ({"types": ["llm.*"]}, lambda e: event_type(e).startswith("llm.")),
    ({"types": ["system.error", "voice.stt_*"]}, lambda e: event_type(e) in ("system.error", "voice.stt_partial")),
    ({"types": ["*"], "session_id": "s1"}, lambda e: e.session_id == "s1"),
    ({"types": ["llm.token"], "session_id": "s2"}, lambda e: event_type(e) == "llm.token" and e.session_id == "s2"),
]


async def gather_into(channel: grpc.aio.Channel, sink: list[events_pb2.Event], **kwargs) -> None:
    async for response in subscribe(channel, **kwargs):
        sink.extend(response.batch.events)


async def wait_for_count(sink: list, count: int, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while len(sink) < count:  # noqa: ASYNC110 - polls a list filled by another task
            await asyncio.sleep(0.02)


async def head_of(channel: grpc.aio.Channel) -> int:
    return (await bus_pb2_grpc.EventBusStub(channel).Describe(bus_pb2.DescribeRequest())).head_seq


async def wait_for_subscribers(channel: grpc.aio.Channel, count: int, timeout: float = 10.0) -> None:
    """Until the bus reports `count` open subscriptions (each then gets every later event)."""
    stub = bus_pb2_grpc.EventBusStub(channel)
    async with asyncio.timeout(timeout):
        while True:
            described = await stub.Describe(bus_pb2.DescribeRequest())
            if described.subscribers >= count:
                return
            await asyncio.sleep(0.02)


async def test_concurrent_publishers_and_filtered_subscribers(config, channel_to) -> None:
    async with running_host(config, only="bus") as host:
        channel = channel_to(host.address)
        start = await head_of(channel)
        sinks: list[list[events_pb2.Event]] = [[] for _ in FILTERS]
        tasks = [
            asyncio.create_task(gather_into(channel_to(host.address), sink, **spec))
            for sink, (spec, _) in zip(sinks, FILTERS, strict=True)
        ]
        await wait_for_subscribers(channel, len(FILTERS))  # live ones (no after_seq) miss earlier events
        publishers = [
            GrpcPublisher(lambda: channel_to(host.address), source=f"p{n}", batch_max_events=7) for n in range(3)
        ]
        makers = [token, error, stt]
        for i in range(300):
            for n, publisher in enumerate(publishers):
                publisher.publish(makers[(i + n) % 3](i, session=["", "s1", "s2"][i % 3]))
            if i % 20 == 0:
                await asyncio.sleep(0)
        for publisher in publishers:
            await publisher.flush(timeout=20)
            assert (publisher.acked, publisher.rejected) == (300, 0)
        end = await head_of(channel)
        assert end == start + 900
        everything = await collect(channel, end, after_seq=start)
        assert [e.seq for e in everything] == list(range(start + 1, end + 1))
        for sink, (_, wanted) in zip(sinks, FILTERS, strict=True):
            expected = [e for e in everything if wanted(e)]
            assert expected, "the workload must give every filter something to match"
            await wait_for_count(sink, len(expected))
            await asyncio.sleep(0.05)  # a duplicate would arrive after the expected count
            assert [(e.seq, e.id) for e in sink] == [(e.seq, e.id) for e in expected]
        for task in tasks:
            task.cancel()
        for publisher in publishers:
            await publisher.close()


async def test_replay_with_and_without_gap(tmp_path: Path, channel_to, backend_env) -> None:
    config = make_config(tmp_path, **backend_env, CODA_BUS__MAX_EVENTS="50")
    async with running_host(config, only="bus") as host:
        channel = channel_to(host.address)
        acks = await publish_direct(channel, [token(i) for i in range(30)])
        head = acks[-1].seq
        # Without a gap: everything after seq 10, in order, then live.
        replayed = await collect(channel, head, after_seq=10)
        assert [e.seq for e in replayed] == list(range(11, head + 1))
        # Push the start of the log past seq 10: a gap notice comes first, then the rest.
        await publish_direct(channel, [token(i) for i in range(60)])
        head = await head_of(channel)
        responses = []
        async for response in subscribe(channel, after_seq=10):
            responses.append(response)
            if response.HasField("batch") and response.batch.events[-1].seq >= head:
                break
        assert responses[0].HasField("gap")
        gap = responses[0].gap
        assert gap.requested_after_seq == 10 and gap.oldest_seq == head - 49 and gap.missed == head - 49 - 11
        seqs = [e.seq for r in responses[1:] for e in r.batch.events]
        assert seqs == list(range(head - 49, head + 1))
        # Resuming ahead of the log is a clear OUT_OF_RANGE, not a silent wait.
        with pytest.raises(grpc.aio.AioRpcError) as excinfo:
            await collect(channel, 0, after_seq=head + 100)
        assert excinfo.value.code() == grpc.StatusCode.OUT_OF_RANGE


async def test_idempotent_retry_keeps_the_original_seq(config, channel_to) -> None:
    async with running_host(config, only="bus") as host:
        channel = channel_to(host.address)
        events = [token(i) for i in range(3)]
        first = await publish_direct(channel, events)
        retry = await publish_direct(channel, [events[1], token(99), events[2]])
        assert [a.seq for a in first] == [first[0].seq, first[0].seq + 1, first[0].seq + 2]
        assert (retry[0].seq, retry[0].duplicate) == (first[1].seq, True)
        assert (retry[1].seq, retry[1].duplicate) == (first[2].seq + 1, False)
        assert (retry[2].seq, retry[2].duplicate) == (first[2].seq, True)
        stored = await collect(channel, first[2].seq + 1, after_seq=first[0].seq - 1)
        assert [e.id for e in stored] == [events[0].id, events[1].id, events[2].id, retry[1].id]


async def test_every_invalid_event_gets_an_error_ack_and_the_stream_stays_open(
    tmp_path: Path, channel_to, backend_env
) -> None:
    config = make_config(tmp_path, **backend_env, CODA_BUS__MAX_EVENT_BYTES="1000")
    async with running_host(config, only="bus") as host:
        channel = channel_to(host.address)
        call = bus_pb2_grpc.EventBusStub(channel).Publish()
        bad = {
            "no id": events_pb2.Event(source="t", llm_token=events_pb2.LlmToken(text="x")),
            "no payload": events_pb2.Event(id="p1", source="t"),
            # A payload case from a newer schema (field 999) reaches this bus as an unknown field.
            "does not know (Event field 999)": events_pb2.Event.FromString(
                events_pb2.Event(id="n1", source="t").SerializeToString() + b"\xba\x3e\x00"
            ),
            "bytes": new_event("t", events_pb2.SystemError(message="x" * 2000)),
            "session_id": new_event("t", events_pb2.LlmToken(text="x"), session_id="bad session!"),
            "at most 128": new_event("t", events_pb2.LlmToken(text="x"), session_id="s" * 129),
            # Times no JSON or date can hold: accepted, they stopped the bridge for every client.
            "outside years 1-9999": _timed(new_event("t", events_pb2.LlmToken(text="x")), 253_402_300_800),
            "outside years 1-9999 ": _timed(new_event("t", events_pb2.LlmToken(text="x")), -62_135_596_801),
            "nanos=-1": _timed(new_event("t", events_pb2.LlmToken(text="x")), 0, -1),
            "nanos=1000000000": _timed(new_event("t", events_pb2.LlmToken(text="x")), 0, 10**9),
        }
        for reason, event in bad.items():
            await call.write(bus_pb2.PublishRequest(events=[token(1), event, token(2)]))
            acks = (await call.read()).acks
            assert [a.index for a in acks] == [0, 1, 2]
            assert acks[0].seq and not acks[0].error and acks[2].seq == acks[0].seq + 1
            assert acks[1].seq == 0 and reason.strip() in acks[1].error, acks[1].error
        # The stream is still open and other publishers are unaffected.
        await call.write(bus_pb2.PublishRequest(events=[token(3)]))
        assert (await call.read()).acks[0].seq > 0
        assert (await publish_direct(channel_to(host.address), [token(4)]))[0].seq > 0
        await call.done_writing()
        # Bad subscriptions are refused with INVALID_ARGUMENT and a readable reason.
        for kwargs, words in [({"types": ["nosuch.*"]}, "families"), ({"session_id": "a b"}, "session_id")]:
            with pytest.raises(grpc.aio.AioRpcError) as excinfo:
                await collect(channel, 0, **kwargs)
            assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert words in (excinfo.value.details() or "")


async def test_merged_acks_answer_runs_of_requests_late_while_events_are_delivered_at_once(
    tmp_path: Path, channel_to, backend_env
) -> None:
    """`merge_acks` requests are answered together, within bus.publish_ack_ms, in order; their
    events reach subscribers without waiting for the acks."""
    ack_delay = 0.4
    config = make_config(tmp_path, **backend_env, CODA_BUS__PUBLISH_ACK_MS=str(ack_delay * 1000))
    async with running_host(config, only="bus") as host:
        channel = channel_to(host.address)
        head = await head_of(channel)
        delivered: list[tuple[float, events_pb2.Event]] = []

        async def read() -> None:
            async for response in subscribe(channel_to(host.address), after_seq=head):
                delivered.extend((loop.time(), e) for e in response.batch.events)

        loop = asyncio.get_running_loop()
        reader = asyncio.create_task(read())
        call = bus_pb2_grpc.EventBusStub(channel).Publish()
        sent = [[token(i), token(i + 100)] for i in range(3)]
        started = loop.time()
        for events in sent:
            await call.write(bus_pb2.PublishRequest(events=events, merge_acks=True))
        await wait_for_count(delivered, 6)
        response = await call.read()
        answered = loop.time()
        assert delivered[-1][0] - started < ack_delay / 2  # stored and delivered at once ...
        assert answered - started >= ack_delay * 0.9  # ... acked when the run's time was up
        assert response.requests == 3
        assert [a.id for a in response.acks] == [e.id for events in sent for e in events]
        assert [a.seq for a in response.acks] == list(range(head + 1, head + 7))
        assert [a.index for a in response.acks] == [0, 1] * 3

        # A full run (8 requests) is answered without waiting for the timer, and a request that
        # does not merge is answered at once, with the run before it.
        started = loop.time()
        for i in range(8):
            await call.write(bus_pb2.PublishRequest(events=[token(i)], merge_acks=True))
        full = await call.read()
        await call.write(bus_pb2.PublishRequest(events=[token(50)], merge_acks=True))
        await call.write(bus_pb2.PublishRequest(events=[token(51)]))
        run, alone = await call.read(), await call.read()
        assert loop.time() - started < ack_delay * 0.9
        assert (full.requests, len(full.acks), run.requests, alone.requests) == (8, 8, 1, 1)
        assert alone.acks[0].seq == run.acks[0].seq + 1 == full.acks[-1].seq + 2

        # Compact acks: one seq per request when every event was stored as new; acks in full
        # for a request with a refused or a duplicate event.
        compact = [token(70), token(71), token(72)]
        await call.write(bus_pb2.PublishRequest(events=compact, compact_acks=True))
        stored = await call.read()
        assert list(stored.first_seqs) == [alone.acks[0].seq + 1] and not stored.acks
        await call.write(bus_pb2.PublishRequest(events=[token(73), events_pb2.Event(id="x")], compact_acks=True))
        await call.write(bus_pb2.PublishRequest(events=[compact[1]], compact_acks=True))
        refused, duplicate = await call.read(), await call.read()
        assert not refused.first_seqs and refused.acks[1].error and refused.acks[0].seq == stored.first_seqs[0] + 3
        assert not duplicate.first_seqs and duplicate.acks[0].duplicate
        assert duplicate.acks[0].seq == stored.first_seqs[0] + 1
        next_seq = refused.acks[0].seq + 1

        # Ending the stream answers what is still held before the call completes.
        await call.write(bus_pb2.PublishRequest(events=[token(60), error(61)], merge_acks=True))
        await call.done_writing()
        last = await call.read()
        assert last.requests == 1 and [a.seq for a in last.acks] == [next_seq, next_seq + 1]
        assert await call.read() is grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK
        reader.cancel()


def cut_offs() -> float:
    return REGISTRY.get_sample_value("coda_bus_subscribers_cut_off_total") or 0.0


async def test_stalled_subscriber_is_cut_off_and_resumes_while_a_fast_one_keeps_up(
    tmp_path: Path, channel_to, backend_env
) -> None:
    config = make_config(
        tmp_path, **backend_env, CODA_BUS__SUBSCRIBER_QUEUE_EVENTS="300", CODA_BUS__BATCH_MAX_EVENTS="32"
    )
    async with running_host(config, only="bus") as host:
        channel = channel_to(host.address)
        start = await head_of(channel)
        cut_before = cut_offs()
        # Opened but never read: once gRPC's flow-control window and socket buffers are full, the
        # bus cannot write to it and its queue overflows.
        stalled = bus_pb2_grpc.EventBusStub(channel_to(host.address)).Subscribe(
            bus_pb2.SubscribeRequest(types=["*"], after_seq=start)
        )
        fast: list[events_pb2.Event] = []
        fast_task = asyncio.create_task(gather_into(channel_to(host.address), fast, types=["*"], after_seq=start))
        publisher = GrpcPublisher(lambda: channel_to(host.address), source="load")
        published = 0
        while published < 20_000 and cut_offs() == cut_before:
            for _ in range(50):
                publisher.publish(new_event("t", events_pb2.SystemError(message="x" * 4000)))
            published += 50
            await publisher.flush(timeout=20)
            await wait_for_count(fast, published)  # the fast subscriber keeps receiving everything
        assert cut_offs() == cut_before + 1, "the stalled subscriber was never cut off"
        for _ in range(20):  # and the fast one still gets everything after the cut-off
            publisher.publish(new_event("t", events_pb2.SystemError(message="x" * 4000)))
        published += 20
        await publisher.flush(timeout=20)
        await wait_for_count(fast, published)
        # Now read the stalled stream: what was buffered, then RESOURCE_EXHAUSTED naming its last seq.
        received: list[int] = []
        with pytest.raises(grpc.aio.AioRpcError) as excinfo:
            async for response in stalled:
                received.extend(e.seq for e in response.batch.events)
        assert excinfo.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        last = received[-1]
        assert f"after_seq={last}" in (excinfo.value.details() or ""), excinfo.value.details()
        assert received == list(range(start + 1, last + 1))
        # More events while it is away, then resume: nothing lost, nothing repeated.
        for i in range(100):
            publisher.publish(token(i))
        await publisher.flush()
        end = await head_of(channel)
        rest = await collect(channel, end, after_seq=last)
        assert [e.seq for e in rest] == list(range(last + 1, end + 1))
        await wait_for_count(fast, end - start)
        assert [e.seq for e in fast] == list(range(start + 1, end + 1))
        fast_task.cancel()
        await publisher.close()


async def test_resuming_subscription_survives_a_cut_off(tmp_path: Path, channel_to, backend_env) -> None:
    config = make_config(
        tmp_path, **backend_env, CODA_BUS__SUBSCRIBER_QUEUE_EVENTS="20", CODA_BUS__BATCH_MAX_EVENTS="8"
    )
    async with running_host(config, only="bus") as host:
        channel = channel_to(host.address)
        start = await head_of(channel)
        subscription = ResumingSubscription(lambda: channel, types=["llm.*"], after_seq=start)
        seen: list[int] = []

        async def consume() -> None:
            async for response in subscription:
                seen.extend(e.seq for e in response.batch.events)
                await asyncio.sleep(0.01)  # slower than the publisher: it will be cut off

        task = asyncio.create_task(consume())
        for _ in range(10):
            await publish_direct(channel, [token(i) for i in range(100)])
        end = await head_of(channel)
        await wait_for_count(seen, end - start, timeout=30)
        assert seen == list(range(start + 1, end + 1))
        assert subscription.reconnects >= 1
        subscription.close()
        task.cancel()


async def test_a_started_host_has_already_logged_its_start(config, channel_to) -> None:
    """Once `start()` returns, the head includes the host's system.started (on NATS the append
    goes through the server, so without waiting a client could read a head that misses it)."""
    async with running_host(config, only="bus") as host:
        # Read before anything else gets a turn of the loop: the start must already be stored.
        assert host.components[0].service.describe().head_seq >= 1
        channel = channel_to(host.address)
        head = await head_of(channel)
        replay = await collect(channel, head, after_seq=0)
        assert [event_type(e) for e in replay] == ["system.started"]
        assert replay[0].system_started.address == host.address


async def test_describe_and_metrics_endpoint(config, channel_to) -> None:
    async with running_host(config, only="bus") as host:
        channel = channel_to(host.address)
        await publish_direct(channel, [token(i) for i in range(5)])
        await publish_direct(channel, [events_pb2.Event(id="", llm_token=events_pb2.LlmToken())])
        replay = await collect(channel, 5, after_seq=0)
        info = await bus_pb2_grpc.EventBusStub(channel).Describe(bus_pb2.DescribeRequest())
        assert info.backend == config.bus.backend and info.head_seq == replay[-1].seq >= 5
        assert info.oldest_seq == 1 and info.retained_events == info.head_seq
        assert info.retained_bytes > 0 and info.max_events == config.bus.max_events
        body = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://{host.metrics_address}/metrics", timeout=5).read().decode()
        )
        for name in [
            "coda_bus_events_published_total",
            "coda_bus_events_delivered_total",
            'coda_bus_events_rejected_total{reason="bad_id"}',
            "coda_bus_subscribers_cut_off_total",
            "coda_bus_log_events",
            "coda_bus_log_bytes",
            "coda_bus_publish_to_deliver_seconds_bucket",
            "coda_bus_subscribers",
        ]:
            assert name in body, name


async def test_batches_hold_at_most_n_events_a_lone_event_goes_at_once_and_bursts_are_paced(
    tmp_path: Path, channel_to
) -> None:
    """batch_max_events caps a batch; batch_max_ms paces batches (one per tick of the bus's
    clock) without delaying an event that arrives after a quiet spell."""
    pace = 0.3
    config = make_config(tmp_path, CODA_BUS__BATCH_MAX_EVENTS="4", CODA_BUS__BATCH_MAX_MS=str(pace * 1000))
    async with running_host(config, only="bus") as host:
        channel = channel_to(host.address)
        head = await head_of(channel)
        received: list[tuple[float, list[events_pb2.Event]]] = []
        total = 12

        async def read() -> None:
            async for response in subscribe(channel, after_seq=head):
                received.append((asyncio.get_running_loop().time(), list(response.batch.events)))
                if sum(len(events) for _, events in received) >= total:
                    return

        reader = asyncio.create_task(read())
        await wait_for_subscribers(channel, 1)
        loop = asyncio.get_running_loop()
        lone_sent = loop.time()
        await publish_direct(channel, [token(0)])
        await wait_for_count(received, 1)
        assert received[0][0] - lone_sent < pace / 2  # not held back for the pacing interval
        burst_sent = loop.time()
        call = bus_pb2_grpc.EventBusStub(channel).Publish()
        for i in range(1, total):  # one request per event, as fast as they go
            await call.write(bus_pb2.PublishRequest(events=[token(i)]))
        for _ in range(1, total):
            await call.read()
        await call.done_writing()
        await asyncio.wait_for(reader, 10)
        seqs = [e.seq for _, events in received for e in events]
        assert seqs == list(range(head + 1, head + total + 1))  # each once, in order
        assert all(len(events) <= 4 for _, events in received)
        # Eleven events in eleven requests: without pacing, about eleven batches. With it, full
        # batches of 4 as soon as they fill, and the rest at the next tick.
        assert len(received) - 1 <= 6, [len(events) for _, events in received]
        assert received[-1][0] - burst_sent < pace + 1.0
