"""Bad requests at the gRPC level: bytes that do not parse get INVALID_ARGUMENT with the reason on
every method of every service, a message over the size limit RESOURCE_EXHAUSTED, and nothing else
is disturbed (a real host, real gRPC on loopback)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import grpc
import pytest
from conftest import make_config, running_host
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coda.schema import new_event
from coda.v1 import bus_pb2, bus_pb2_grpc, events_pb2, tools_pb2, tools_pb2_grpc

#: A varint that never ends: no protobuf message parses from it.
GARBAGE = b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff garbage"
HOSTED = "bus,memory,tools,llm,voice,assistant"


def methods_of(service_names: list[str]) -> list[tuple[str, bool, bool]]:
    """(path, client streams, server streams) of every method of the hosted Coda services."""
    pool = descriptor_pool.Default()
    found = []
    for name in service_names:
        for method in pool.FindServiceByName(name).methods:
            found.append((f"/{name}/{method.name}", method.client_streaming, method.server_streaming))
    return found


async def call_with_garbage(channel: grpc.aio.Channel, path: str, client_streams: bool, server_streams: bool) -> None:
    raw = {"request_serializer": None, "response_deserializer": None}
    if client_streams:
        call = (channel.stream_stream if server_streams else channel.stream_unary)(path, **raw)()
        await call.write(GARBAGE)
        if server_streams:
            await call.read()
        else:
            await call
    elif server_streams:
        async for _ in channel.unary_stream(path, **raw)(GARBAGE):
            pass
    else:
        await channel.unary_unary(path, **raw)(GARBAGE)


async def test_every_method_refuses_undecodable_bytes_with_invalid_argument(config, caplog) -> None:
    async with running_host(config, only=HOSTED) as host, grpc.aio.insecure_channel(host.address) as channel:
        services = [name for component in host.components for name in component.service_names]
        methods = methods_of(services)
        assert len(methods) >= 20
        methods.append(("/grpc.health.v1.Health/Check", False, False))
        with caplog.at_level(logging.ERROR, logger="grpc"):
            for path, client_streams, server_streams in methods:
                with pytest.raises(grpc.aio.AioRpcError) as excinfo:
                    await call_with_garbage(channel, path, client_streams, server_streams)
                assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (path, excinfo.value.details())
                details = excinfo.value.details() or ""
                assert path in details and "not a valid message" in details, details
        # No traceback per bad request in the log: a client cannot flood it.
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

        # The same connection still serves well-formed calls.
        health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        tools = await tools_pb2_grpc.ToolsStub(channel).ListTools(tools_pb2.ListToolsRequest())
        assert tools.tools


async def test_a_stream_keeps_what_came_before_the_bad_message(config) -> None:
    async with running_host(config, only="bus") as host, grpc.aio.insecure_channel(host.address) as channel:
        stub = bus_pb2_grpc.EventBusStub(channel)
        head = (await stub.Describe(bus_pb2.DescribeRequest())).head_seq
        publish = channel.stream_stream(
            "/coda.v1.EventBus/Publish", request_serializer=None, response_deserializer=None
        )
        call = publish()
        good = new_event("t", events_pb2.LlmToken(text="kept"))
        await call.write(bus_pb2.PublishRequest(events=[good]).SerializeToString())
        ack = bus_pb2.PublishResponse.FromString(await call.read()).acks[0]
        assert ack.id == good.id and ack.seq == head + 1
        await call.write(GARBAGE)
        with pytest.raises(grpc.aio.AioRpcError) as excinfo:
            await call.read()
        assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "PublishRequest" in (excinfo.value.details() or "")
        # The event before the bad message is in the log, and the bus goes on.
        replay = []
        async for response in stub.Subscribe(bus_pb2.SubscribeRequest(types=["llm.*"], after_seq=head)):
            replay.extend(response.batch.events)
            break
        assert [e.id for e in replay] == [good.id]
        assert (await stub.Describe(bus_pb2.DescribeRequest())).head_seq == head + 1


async def test_a_request_over_the_message_limit_gets_resource_exhausted_and_the_bus_goes_on(tmp_path: Path) -> None:
    config = make_config(tmp_path, CODA_GRPC__MAX_MESSAGE_BYTES="100000")
    async with running_host(config, only="bus") as host, grpc.aio.insecure_channel(host.address) as channel:
        stub = bus_pb2_grpc.EventBusStub(channel)
        big = [new_event("t", events_pb2.LlmToken(text="x" * 1000)) for _ in range(200)]
        call = stub.Publish()
        await call.write(bus_pb2.PublishRequest(events=big))
        with pytest.raises(grpc.aio.AioRpcError) as excinfo:
            await call.read()
        assert excinfo.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "larger than max" in (excinfo.value.details() or "")
        # Nothing of it was stored, and the next publish on the same connection goes through.
        assert (await stub.Describe(bus_pb2.DescribeRequest())).head_seq == 1  # system.started
        call = stub.Publish()
        await call.write(bus_pb2.PublishRequest(events=big[:10]))
        assert [a.seq for a in (await call.read()).acks] == list(range(2, 12))
        await call.done_writing()


async def test_a_bad_message_after_a_held_ack_still_gets_that_ack_first(tmp_path: Path) -> None:
    """A request whose acks the bus holds for merging (`merge_acks`) is answered before the
    stream is refused: the publisher learns the seq of what was stored."""
    config = make_config(tmp_path, CODA_BUS__PUBLISH_ACK_MS="2000")
    async with running_host(config, only="bus") as host, grpc.aio.insecure_channel(host.address) as channel:
        publish = channel.stream_stream(
            "/coda.v1.EventBus/Publish", request_serializer=None, response_deserializer=None
        )
        call = publish()
        good = new_event("t", events_pb2.LlmToken(text="held"))
        await call.write(bus_pb2.PublishRequest(events=[good], merge_acks=True).SerializeToString())
        await call.write(GARBAGE)
        response = bus_pb2.PublishResponse.FromString(await asyncio.wait_for(call.read(), 10))
        assert [a.id for a in response.acks] == [good.id] and response.acks[0].seq > 0
        with pytest.raises(grpc.aio.AioRpcError) as excinfo:
            await asyncio.wait_for(call.read(), 10)
        assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_bad_message_right_behind_a_good_one_never_hangs_the_call(config) -> None:
    """The ack of the good request may still be being written when the bad one is read: the call
    ends with INVALID_ARGUMENT after that write, every time (it used to hang now and then)."""
    async with running_host(config, only="bus") as host, grpc.aio.insecure_channel(host.address) as channel:
        publish = channel.stream_stream(
            "/coda.v1.EventBus/Publish", request_serializer=None, response_deserializer=None
        )
        for attempt in range(40):
            call = publish()
            good = new_event("t", events_pb2.LlmToken(text=f"n{attempt}"))
            await call.write(bus_pb2.PublishRequest(events=[good]).SerializeToString())
            await call.write(GARBAGE)
            answers = []
            with pytest.raises(grpc.aio.AioRpcError) as excinfo:
                async with asyncio.timeout(20):
                    while True:
                        answers.append(bus_pb2.PublishResponse.FromString(await call.read()))
            assert excinfo.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (attempt, excinfo.value)
            assert [a.id for r in answers for a in r.acks] == [good.id], attempt
