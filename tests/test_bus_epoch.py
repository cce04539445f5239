"""The bus log's epoch: a subscriber whose position belongs to a log the bus has since replaced (a
memory bus restarted) gets a reset and the new log from its start, never a silent skip. Real hosts
restarted on the same loopback port, real gRPC."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from conftest import make_config, running_host

from coda.bus.client import Backoff, ResumingSubscription, subscribe
from coda.runtime.host import Host
from coda.schema import new_event
from coda.v1 import bus_pb2, bus_pb2_grpc, events_pb2
from tests.bus_backends import BACKENDS, backend_settings, nats_server  # noqa: F401 - nats_server is a fixture


def free_address() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def tokens(prefix: str, count: int) -> list[events_pb2.Event]:
    return [new_event("llm", events_pb2.LlmToken(text=f"{prefix}{i}")) for i in range(count)]


async def publish(address: str, events: list[events_pb2.Event]) -> list[int]:
    async with grpc.aio.insecure_channel(address) as channel:
        call = bus_pb2_grpc.EventBusStub(channel).Publish()
        await call.write(bus_pb2.PublishRequest(events=events))
        acks = (await call.read()).acks
        await call.done_writing()
    assert all(a.seq and not a.error for a in acks), acks
    return [a.seq for a in acks]


async def describe(address: str) -> bus_pb2.DescribeResponse:
    async with grpc.aio.insecure_channel(address) as channel:
        return await bus_pb2_grpc.EventBusStub(channel).Describe(bus_pb2.DescribeRequest())


class GatedBackoff(Backoff):
    """Waits between reconnects until the test opens the gate: the new bus is filled first."""

    def __init__(self) -> None:
        super().__init__(initial=0.01, maximum=0.01)
        self.gate = asyncio.Event()
        self.waiting = asyncio.Event()

    async def wait(self) -> None:
        self.waiting.set()
        await self.gate.wait()


@contextlib.asynccontextmanager
async def bus_at(tmp_path: Path, address: str, **env: str) -> AsyncIterator[Host]:
    config = make_config(tmp_path, CODA_GRPC__ADDRESS=address, **env)
    async with running_host(config, only="bus") as host:
        yield host


async def follow(subscription: ResumingSubscription, sink: list[bus_pb2.SubscribeResponse]) -> None:
    async for response in subscription:
        sink.append(response)


def texts(responses: list[bus_pb2.SubscribeResponse]) -> list[str]:
    return [e.llm_token.text for r in responses for e in r.batch.events]


async def wait_until(condition, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - polls state filled by another task
            await asyncio.sleep(0.02)


@pytest.mark.parametrize(("before", "after"), [(5, 40), (40, 5)], ids=["new-head-passes-cursor", "new-head-below"])
async def test_a_memory_bus_restart_gives_a_reset_and_every_new_event(tmp_path: Path, before: int, after: int) -> None:
    address = free_address()
    backoff = GatedBackoff()
    channels: list[grpc.aio.Channel] = []

    def channel_factory() -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(address)
        channels.append(channel)
        return channel

    received: list[bus_pb2.SubscribeResponse] = []
    subscription = ResumingSubscription(channel_factory, ["llm.*"], backoff=backoff)
    try:
        async with bus_at(tmp_path / "a", address):
            first_epoch = (await describe(address)).epoch
            assert first_epoch
            follower = asyncio.create_task(follow(subscription, received))
            await wait_until(lambda: subscription.last_seq is not None)
            await asyncio.sleep(0.2)  # the stream is open
            await publish(address, tokens("old", before))
            await wait_until(lambda: len(texts(received)) == before)
            old_cursor = subscription.last_seq
        # The subscriber is held off until the new bus has `after` events: its head is then past
        # (or below) the old cursor, the case that used to skip (or misnumber) new events silently.
        await asyncio.wait_for(backoff.waiting.wait(), 20)
        async with bus_at(tmp_path / "b", address):
            second_epoch = (await describe(address)).epoch
            assert second_epoch and second_epoch != first_epoch
            seqs = await publish(address, tokens("new", after))
            assert (seqs[-1] > old_cursor) == (after > before)
            backoff.gate.set()
            await wait_until(lambda: len(texts(received)) == before + after)
            resets = [r.reset for r in received if r.WhichOneof("message") == "reset"]
            assert [(r.previous_epoch, r.epoch) for r in resets] == [(first_epoch, second_epoch)]
            assert resets[0].requested_after_seq == old_cursor
            assert texts(received) == [f"old{i}" for i in range(before)] + [f"new{i}" for i in range(after)]
            assert subscription.epoch == second_epoch and subscription.resets == 1
            # Live events of the new log follow, once each.
            await publish(address, tokens("live", 2))
            await wait_until(lambda: len(texts(received)) == before + after + 2)
            assert texts(received)[-2:] == ["live0", "live1"]
    finally:
        subscription.close()
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        for channel in channels:
            await channel.close()


async def test_a_subscribe_from_another_epoch_is_reset_and_one_from_this_epoch_is_not(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with running_host(config, only="bus") as host, grpc.aio.insecure_channel(host.address) as channel:
        await publish(host.address, tokens("t", 3))
        epoch = (await describe(host.address)).epoch

        async def first_responses(**kwargs: object) -> list[bus_pb2.SubscribeResponse]:
            found: list[bus_pb2.SubscribeResponse] = []
            async for response in subscribe(channel, ["llm.*"], **kwargs):  # type: ignore[arg-type]
                found.append(response)
                if response.WhichOneof("message") == "batch":
                    break
            return found

        same = await first_responses(after_seq=2, epoch=epoch)
        assert [r.WhichOneof("message") for r in same] == ["batch"]
        assert [e.llm_token.text for e in same[0].batch.events] == ["t1", "t2"]
        other = await first_responses(after_seq=3, epoch="an-older-log")
        assert [r.WhichOneof("message") for r in other] == ["reset", "batch"]
        assert (other[0].reset.epoch, other[0].reset.previous_epoch) == (epoch, "an-older-log")
        assert [e.llm_token.text for e in other[1].batch.events] == ["t0", "t1", "t2"]  # from the start
        # Without an epoch, as before: no check.
        legacy = await first_responses(after_seq=3)
        assert [e.llm_token.text for e in legacy[0].batch.events] == ["t2"]


@pytest.fixture(params=BACKENDS)
def backend_env(request: pytest.FixtureRequest) -> dict[str, str]:
    return backend_settings(request)


async def test_a_durable_log_keeps_its_epoch_across_restarts_a_memory_log_does_not(
    tmp_path: Path, backend_env: dict[str, str]
) -> None:
    address = free_address()
    backend = backend_env["CODA_BUS__BACKEND"]
    epochs = []
    for _ in range(2):
        async with bus_at(tmp_path, address, **backend_env):
            described = await describe(address)
            assert described.backend == backend
            epochs.append(described.epoch)
    assert all(epochs)
    assert (epochs[0] == epochs[1]) == (backend != "memory")
    if backend == "file":
        # A file log started afresh (its segments gone) is a new log: a new epoch.
        for segment in (tmp_path / "bus").glob("*.seg"):
            segment.unlink()
        async with bus_at(tmp_path, address, **backend_env):
            assert (await describe(address)).epoch not in epochs
