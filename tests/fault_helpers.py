"""Helpers of the fault-injection suite (tests/test_faults.py): a pure delivery checker, a steady
publisher that records every acknowledged event, and subscribers over gRPC and over the bridge
that resume as the client libraries do and record everything they are told.

The property the checker verifies, per subscriber: every acknowledged event reaches it exactly once
in seq order, or it is told (a gap or a reset) exactly what it missed; nothing reaches it that was
not published.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import grpc
from google.protobuf import json_format
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from bridge.codec import JSON_PROTOCOL
from coda.bus.client import Backoff, ResumingSubscription
from coda.schema import new_event
from coda.v1 import bridge_pb2, bus_pb2, bus_pb2_grpc, events_pb2

# -- the checker (pure) -------------------------------------------------------------------------


@dataclass
class Acked:
    """What the bus acknowledged: {epoch: {seq: event id}}, and every id ever sent (acked or not)."""

    by_epoch: dict[str, dict[int, str]] = field(default_factory=dict)
    published: set[str] = field(default_factory=set)
    #: Every epoch the publisher met, in order (a log may come and go before anyone follows it).
    epochs: list[str] = field(default_factory=list)

    def ack(self, epoch: str, seq: int, event_id: str) -> None:
        self.saw(epoch)
        self.by_epoch.setdefault(epoch, {})[seq] = event_id

    def saw(self, epoch: str) -> None:
        if epoch not in self.epochs:
            self.epochs.append(epoch)

    def count(self) -> int:
        return sum(len(seqs) for seqs in self.by_epoch.values())


class DeliveryRecord:
    """What one subscriber was told, in order: subscribes (start), events, gaps and resets."""

    def __init__(self, name: str) -> None:
        self.name = name
        #: ("start", epoch, after_seq | None) | ("events", epoch, [(seq, id)]) | ("gap", epoch, oldest_seq)
        #: | ("reset", previous_epoch, epoch)
        self.items: list[tuple[object, ...]] = []
        self.epoch: str | None = None
        self.last_seq = 0
        self.received = 0
        self.gaps = 0
        self.resets = 0

    def start(self, epoch: str, after_seq: int | None) -> None:
        """A (re)subscribe in `epoch` after `after_seq` (None: live only, from wherever it starts)."""
        self.items.append(("start", epoch, after_seq))
        self.epoch = epoch
        self.last_seq = after_seq or 0

    def events(self, epoch: str, events: Iterable[events_pb2.Event]) -> None:
        pairs = [(e.seq, e.id) for e in events]
        if pairs:
            self.items.append(("events", epoch, pairs))
            self.received += len(pairs)
            self.last_seq = pairs[-1][0]

    def gap(self, epoch: str, oldest_seq: int) -> None:
        self.items.append(("gap", epoch, oldest_seq))
        self.gaps += 1
        self.last_seq = max(self.last_seq, oldest_seq - 1)

    def reset(self, previous_epoch: str, epoch: str) -> None:
        self.items.append(("reset", previous_epoch, epoch))
        self.resets += 1
        self.epoch = epoch
        self.last_seq = 0

    def summary(self, last: int = 20) -> str:
        """The last items, events as seq ranges: for a failure's message."""
        lines = []
        for item in self.items[-last:]:
            if item[0] == "events":
                pairs = item[2]
                lines.append(f"  events {item[1]} {pairs[0][0]}..{pairs[-1][0]} ({len(pairs)})")  # type: ignore[index]
            else:
                lines.append(f"  {item}")
        return "\n".join(lines)

    def caught_up(self, acked: Acked) -> bool:
        """True once nothing acked in the subscriber's current epoch is beyond what it has."""
        seqs = acked.by_epoch.get(self.epoch or "", {})
        return not seqs or max(seqs) <= self.last_seq


def check_delivery(record: DeliveryRecord, acked: Acked) -> list[str]:
    """Every violation of the property by what `record` was told, given what was `acked`."""
    problems: list[str] = []
    name = record.name
    cursor: dict[str, int | None] = {}
    told: dict[str, set[int]] = {}  # per epoch: seqs the subscriber was told it missed
    seen_ids: dict[str, dict[str, int]] = {}  # per epoch: event id -> the seq it arrived with
    skipped: set[str] = set()  # logs that came and went unfollowed: a reset to a later one covers them
    current: str | None = None

    def missing(epoch: str, low: int, high: int | None) -> list[int]:
        """Acked seqs of `epoch` in (low, high) (high None: all above low) not told as missed."""
        seqs = acked.by_epoch.get(epoch, {})
        return sorted(s for s in seqs if s > low and (high is None or s < high) and s not in told.get(epoch, set()))

    def tell(epoch: str, low: int, high: int | None) -> None:
        seqs = acked.by_epoch.get(epoch, {})
        told.setdefault(epoch, set()).update(s for s in seqs if s > low and (high is None or s < high))

    for item in record.items:
        kind = item[0]
        if kind == "start":
            _, epoch, after = item
            assert isinstance(epoch, str)
            current = epoch
            cursor[epoch] = after  # type: ignore[assignment]
            if after is not None:
                # A resume from an earlier position asks for those events again.
                ids = seen_ids.get(epoch, {})
                for event_id in [i for i, s in ids.items() if s > after]:  # type: ignore[operator]
                    del ids[event_id]
        elif kind == "events":
            _, epoch, pairs = item
            assert isinstance(epoch, str)
            if epoch != current:
                problems.append(f"{name}: events in epoch {epoch} while following {current}")
            for seq, event_id in pairs:  # type: ignore[attr-defined]
                at = cursor.get(epoch)
                if at is not None and seq <= at:
                    problems.append(f"{name}: seq {seq} after {at} in epoch {epoch} (duplicate or out of order)")
                    continue
                if at is not None:
                    lost = missing(epoch, at, seq)
                    if lost:
                        problems.append(f"{name}: lost {len(lost)} acked events {lost[:5]}... before seq {seq}")
                cursor[epoch] = seq
                if event_id not in acked.published:
                    problems.append(f"{name}: seq {seq} is event {event_id}, which nobody published")
                expected = acked.by_epoch.get(epoch, {}).get(seq)
                if expected is not None and expected != event_id:
                    problems.append(f"{name}: seq {seq} of epoch {epoch} is {event_id}, the bus acked it as {expected}")
                ids = seen_ids.setdefault(epoch, {})
                if event_id in ids:
                    problems.append(f"{name}: event {event_id} delivered twice in epoch {epoch}")
                ids[event_id] = seq
        elif kind == "gap":
            _, epoch, oldest = item
            assert isinstance(epoch, str) and isinstance(oldest, int)
            at = cursor.get(epoch) or 0
            tell(epoch, at, oldest)
            cursor[epoch] = max(at, oldest - 1)
        elif kind == "closed":
            continue  # a connection ended (for the record in failure messages)
        elif kind == "reset":
            _, _previous, epoch = item
            assert isinstance(epoch, str)
            # Everything of the log it follows after its position is told missed: seqs start over.
            # (`previous` may be another epoch than the one it follows: a connection is told of a
            # reset as soon as it is open, by the epoch of its hello, while a subscribe with its
            # own epoch crosses that on the wire and gets a second reset. A second reset into the
            # epoch it follows starts that log over, so what follows may repeat it.)
            if current is not None and current != epoch:
                tell(current, cursor.get(current) or 0, None)
            if epoch in acked.epochs:
                skipped.update(e for e in acked.epochs[: acked.epochs.index(epoch)] if e not in cursor)
            current = epoch
            cursor[epoch] = 0
            seen_ids.pop(epoch, None)
    # What is still owed: everything acked in the epoch it follows, and any epoch it never heard of.
    for epoch in acked.by_epoch:
        if epoch in skipped and epoch not in cursor:
            continue
        if epoch == current:
            lost = missing(epoch, cursor.get(epoch) or 0, None)
            if lost:
                problems.append(f"{name}: {len(lost)} acked events of epoch {epoch} never arrived: {lost[:5]}...")
        elif epoch not in cursor:
            problems.append(f"{name}: epoch {epoch} ({len(acked.by_epoch[epoch])} acked events) never reached it")
        else:
            lost = missing(epoch, cursor.get(epoch) or 0, None)
            if lost:
                problems.append(f"{name}: left epoch {epoch} without being told of {lost[:5]}...")
    return problems


# -- the publisher ------------------------------------------------------------------------------


class SteadyPublisher:
    """Publishes llm.token events in small batches at a steady pace, one request at a time,
    resending an unanswered batch with the same ids after any failure (as GrpcPublisher does),
    and records the seq of every acknowledged event with the epoch of the log that stored it.

    The epoch comes from a Describe on the same channel after a stream's first ack; an ack counts
    as acknowledged once a later ack on the same stream proves that the process which answered
    Describe was the one acking (a stream lives on one process). The acks of a stream that broke
    before that stay "published" only: the checker neither requires nor forbids them.
    """

    def __init__(self, address: str, acked: Acked, *, batch: int = 5, interval: float = 0.02, payload: int = 8) -> None:
        self.address = address
        self.acked = acked
        self.batch = batch
        self.interval = interval
        self.text = "x" * payload
        self.pending: list[events_pb2.Event] = []
        self.failures = 0
        self.paused = False
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._sent = 0

    def start(self) -> SteadyPublisher:
        self._task = asyncio.create_task(self._run(), name="steady-publisher")
        return self

    def raise_failure(self) -> None:
        if self._task is not None and self._task.done() and not self._task.cancelled() and not self._stopping:
            self._task.result()
            raise AssertionError("the publisher stopped")

    def cancel(self) -> None:
        """Stop at once (cleanup after a failure)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop after what is pending has been acked (or after `timeout`)."""
        self._stopping = True
        assert self._task is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            raise AssertionError(f"the publisher could not deliver {len(self.pending)} events in {timeout}s") from None

    async def _run(self) -> None:
        channel = grpc.aio.insecure_channel(self.address, options=FAST_RECONNECT)
        try:
            while True:
                try:
                    if await self._stream(channel):
                        return
                except (grpc.aio.AioRpcError, TimeoutError, asyncio.InvalidStateError):
                    self.failures += 1  # the bus is away (a write on a broken stream: InvalidStateError)
                await asyncio.sleep(0.05)
        finally:
            await channel.close()

    async def _stream(self, channel: grpc.aio.Channel) -> bool:
        """One Publish stream until it breaks (raises) or the publisher stops (True)."""
        stub = bus_pb2_grpc.EventBusStub(channel)
        call = stub.Publish()
        epoch: str | None = None
        unconfirmed: list[tuple[int, str]] = []
        try:
            while True:
                if not self.pending:
                    if self._stopping:
                        return True
                    await asyncio.sleep(self.interval)
                    if self.paused:
                        continue
                    for _ in range(self.batch):
                        self._sent += 1
                        event = new_event("llm", events_pb2.LlmToken(text=f"{self._sent}:{self.text}"))
                        self.acked.published.add(event.id)
                        self.pending.append(event)
                batch = self.pending[: self.batch]
                await call.write(bus_pb2.PublishRequest(events=batch))
                response = await asyncio.wait_for(call.read(), 10)
                if not isinstance(response, bus_pb2.PublishResponse):
                    raise TimeoutError("publish stream ended")
                del self.pending[: len(batch)]
                stored = [(a.seq, a.id) for a in response.acks if a.seq and not a.error]
                assert len(stored) == len(batch), f"refused: {response.acks}"
                if epoch is None:
                    unconfirmed.extend(stored)
                    epoch = (await stub.Describe(bus_pb2.DescribeRequest(), timeout=10)).epoch
                    self.acked.saw(epoch)
                    continue
                for seq, event_id in [*unconfirmed, *stored]:
                    self.acked.ack(epoch, seq, event_id)
                unconfirmed.clear()
        finally:
            call.cancel()


FAST_RECONNECT = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 500)]


# -- subscribers --------------------------------------------------------------------------------


class _Follower:
    """A subscriber run as one task, recording what it is told in `record`."""

    record: DeliveryRecord
    _task: asyncio.Task[None] | None

    async def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        self._task = asyncio.create_task(self._run(), name=self.record.name)
        return self

    def raise_failure(self) -> None:
        """Raise what ended the follower's task, if it ended (it only ends on a bug)."""
        if self._task is not None and self._task.done() and not self._task.cancelled():
            self._task.result()
            raise AssertionError(f"{self.record.name} stopped")


class GrpcFollower(_Follower):
    """A `ResumingSubscription` to llm.* from the log's start, recording what it is told."""

    def __init__(self, address: str, name: str = "grpc") -> None:
        self.address = address
        self.record = DeliveryRecord(name)
        self._task: asyncio.Task[None] | None = None
        self.subscription: ResumingSubscription | None = None

    async def _run(self) -> None:
        channel = grpc.aio.insecure_channel(self.address, options=FAST_RECONNECT)
        try:
            epoch = (await bus_pb2_grpc.EventBusStub(channel).Describe(bus_pb2.DescribeRequest(), timeout=10)).epoch
            self.record.start(epoch, 0)
            self.subscription = ResumingSubscription(
                lambda: channel, ["llm.*"], after_seq=0, epoch=epoch, backoff=Backoff(0.05, 0.5)
            )
            async for response in self.subscription:
                kind = response.WhichOneof("message")
                if kind == "reset":
                    self.record.reset(response.reset.previous_epoch, response.reset.epoch)
                elif kind == "gap":
                    self.record.gap(self.subscription.epoch or "", response.gap.oldest_seq)
                else:
                    self.record.events(self.subscription.epoch or "", response.batch.events)
        finally:
            await channel.close()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def parse_frame(data: str | bytes) -> bridge_pb2.ServerFrame:
    frame = bridge_pb2.ServerFrame()
    if isinstance(data, str):
        json_format.Parse(data, frame)
    else:
        frame.ParseFromString(data)
    return frame


class BridgeFollower(_Follower):
    """A WebSocket client of the bridge that resumes like coda-client.js: it keeps the last seq it
    processed and the epoch it belongs to, resubscribes with both after any close, starts over
    from 0 of the new epoch on a reset, and notes gaps. `stall()` stops it reading (with a tiny
    receive buffer, so the bridge's writes back up) until `unstall()`."""

    def __init__(self, url: str, name: str = "ws", *, small_buffer: bool = False) -> None:
        self.url = url
        self.record = DeliveryRecord(name)
        self.small_buffer = small_buffer
        self.closes: list[tuple[int | None, str]] = []
        self.errors: list[str] = []
        self.connections = 0
        self._reading = asyncio.Event()
        self._reading.set()
        self._task: asyncio.Task[None] | None = None
        self.ws: ClientConnection | None = None

    def stall(self) -> None:
        self._reading.clear()

    def unstall(self) -> None:
        self._reading.set()

    async def _connect(self) -> ClientConnection:
        kwargs: dict[str, object] = {"max_size": None, "open_timeout": 10}
        if self.small_buffer:
            host, port = self.url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
            kwargs.update(sock=sock, max_queue=1)
        return await connect(self.url, subprotocols=[JSON_PROTOCOL], **kwargs)  # type: ignore[arg-type,list-item]

    async def _run(self) -> None:
        record = self.record
        while True:
            try:
                async with await self._connect() as ws:
                    self.ws = ws
                    self.connections += 1
                    hello = parse_frame(await asyncio.wait_for(ws.recv(), 10))
                    assert hello.WhichOneof("frame") == "hello", hello
                    if record.epoch is None:
                        record.start(hello.hello.epoch, 0)
                    subscribe = bridge_pb2.SubscribeFrame(types=["llm.*"], after_seq=record.last_seq)
                    subscribe.epoch = record.epoch or ""
                    await ws.send(json_format.MessageToJson(bridge_pb2.ClientFrame(id="sub", subscribe=subscribe)))
                    while True:
                        await self._reading.wait()
                        frame = parse_frame(await ws.recv())
                        kind = frame.WhichOneof("frame")
                        if kind == "events":
                            record.events(record.epoch or "", frame.events.events)
                        elif kind == "gap":
                            record.gap(record.epoch or "", frame.gap.oldest_seq)
                        elif kind == "reset":
                            record.reset(frame.reset.previous_epoch or record.epoch or "", frame.reset.epoch)
                        elif kind == "error":
                            self.errors.append(frame.error.message)
            except ConnectionClosed as exc:
                self.closes.append((exc.rcvd.code if exc.rcvd else None, exc.rcvd.reason if exc.rcvd else ""))
            except (OSError, InvalidHandshake, TimeoutError):
                pass  # the bridge is away: try again
            self.ws = None
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


# -- processes ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def rss_bytes(pid: int) -> int:
    """The resident set size of a process, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def metric(http_url: str, name: str) -> float:
    """One sample of the bridge's /metrics (0 when absent)."""
    with urllib.request.urlopen(http_url + "/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
    return 0.0
