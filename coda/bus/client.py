"""Client helpers for the EventBus: a fire-and-forget publisher and (resuming) subscriptions.

- `GrpcPublisher(channel_factory, source)`: `publish()` queues and returns at once; a background
  Publish stream sends batches and, when the stream breaks, resends every unacked event with the
  same id, so the bus de-duplicates and nothing is published twice. It lets the bus merge acks
  and send them compact (`PublishRequest.merge_acks`, `compact_acks`): nothing waits on an ack
  but `flush()` and the in-flight window.
- `subscribe(channel, types=..., session_id=..., after_seq=...)`: one Subscribe stream.
- `ResumingSubscription`: a Subscribe that survives cut-offs (RESOURCE_EXHAUSTED), bus restarts
  (UNAVAILABLE) and graceful stream ends by resubscribing with `after_seq` = the last seq seen,
  in the log epoch it was seen in: a bus whose log was replaced answers with a `reset`, which is
  passed on, and the new log is followed from its start.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable

import grpc

from coda.schema import new_event_id
from coda.v1 import bus_pb2, bus_pb2_grpc, events_pb2

log = logging.getLogger(__name__)

ChannelFactory = Callable[[], grpc.aio.Channel]

#: Status codes after which a subscription or publish stream is worth reopening.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)


class Backoff:
    """Exponential backoff with jitter, reset after a success."""

    def __init__(self, initial: float = 0.05, maximum: float = 2.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self._next = initial

    def reset(self) -> None:
        self._next = self.initial

    async def wait(self) -> None:
        delay = self._next * (0.5 + random.random() / 2)
        self._next = min(self.maximum, self._next * 2)
        await asyncio.sleep(delay)


class GrpcPublisher:
    """An `EventPublisher` over gRPC: batched, never blocking the caller, retried idempotently."""

    def __init__(
        self,
        channel_factory: ChannelFactory,
        source: str,
        *,
        batch_max_events: int = 512,
        max_pending: int = 100_000,
        max_in_flight_requests: int = 16,
    ) -> None:
        self._channel_factory = channel_factory
        self.source = source
        self.batch_max_events = batch_max_events
        self.max_pending = max_pending
        self.max_in_flight_requests = max_in_flight_requests
        #: Not yet sent on the current stream.
        self._pending: collections.deque[events_pb2.Event] = collections.deque()
        #: Sent on the current stream, awaiting their acks, oldest request first.
        self._in_flight: collections.deque[list[events_pb2.Event]] = collections.deque()
        self._wakeup = asyncio.Event()
        self._settled = asyncio.Event()
        self._settled.set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        #: Counters a caller (or a test) can read.
        self.dropped = 0
        self.rejected = 0
        self.acked = 0
        #: The last seq acked by the bus.
        self.last_seq = 0

    # -- EventPublisher -------------------------------------------------------------------------

    def publish(self, event: events_pb2.Event) -> None:
        if self._closed:
            log.warning("event published after the publisher closed", extra={"id": event.id})
            return
        if not event.id:
            event.id = new_event_id()
        if not event.source:
            event.source = self.source
        if len(self._pending) + self._in_flight_events() >= self.max_pending and self._pending:
            self._pending.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                log.warning(
                    "bus unreachable or slow; dropping the oldest queued events", extra={"dropped": self.dropped}
                )
        self._pending.append(event)
        self._settled.clear()
        self._wakeup.set()
        self._ensure_running()

    def publish_many(self, events: Iterable[events_pb2.Event]) -> None:
        for event in events:
            self.publish(event)

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait up to `timeout` s until every published event is acked (or rejected); False if
        some are still queued or unacknowledged then (they stay queued and keep being retried)."""
        self._ensure_running()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._settled.wait()
        return self._settled.is_set()

    async def close(self) -> None:
        await self.flush()
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # -- background stream ----------------------------------------------------------------------

    def _in_flight_events(self) -> int:
        return sum(len(batch) for batch in self._in_flight)

    def _ensure_running(self) -> None:
        if self._task is not None and not self._task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop yet: the next publish() or flush() inside one starts the sender
        self._task = loop.create_task(self._run(), name=f"bus-publisher-{self.source}")

    def _check_settled(self) -> None:
        if not self._pending and not self._in_flight:
            self._settled.set()

    async def _run(self) -> None:
        backoff = Backoff()
        while True:
            if not self._pending and not self._in_flight:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            try:
                await self._stream_once(backoff)
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                log.info(
                    "bus publish stream broke; resending unacked events",
                    extra={"code": exc.code().name, "details": exc.details()},
                )
            except Exception:
                log.exception("bus publish stream failed; resending unacked events")
            # Unacked events go back to the front, in order, keeping their ids: the bus acks any
            # it already stored as duplicates with their original seq.
            while self._in_flight:
                self._pending.extendleft(reversed(self._in_flight.pop()))
            await backoff.wait()

    async def _stream_once(self, backoff: Backoff) -> None:
        stub = bus_pb2_grpc.EventBusStub(self._channel_factory())
        call = stub.Publish()
        room = asyncio.Semaphore(self.max_in_flight_requests)

        async def read_acks() -> None:
            while True:
                response = await call.read()
                if not isinstance(response, bus_pb2.PublishResponse):  # grpc.aio.EOF
                    raise grpc.aio.AioRpcError(
                        grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "stream ended"
                    )
                # One response answers one request, or several when they allowed merging.
                answered = [self._in_flight.popleft() for _ in range(max(1, response.requests))]
                for _ in answered:
                    room.release()
                backoff.reset()
                if response.first_seqs:  # compact: every event stored, seqs in the order sent
                    for batch, first_seq in zip(answered, response.first_seqs, strict=True):
                        self.acked += len(batch)
                        self.last_seq = max(self.last_seq, first_seq + len(batch) - 1)
                for ack in response.acks:
                    if ack.error:
                        self.rejected += 1
                        log.warning("event rejected by the bus", extra={"id": ack.id, "reason": ack.error})
                    else:
                        self.acked += 1
                        self.last_seq = max(self.last_seq, ack.seq)
                self._check_settled()

        reader = asyncio.create_task(read_acks())
        # A broken stream wakes the sender like a publish does, so that idling is one Event wait.
        reader.add_done_callback(lambda _: self._wakeup.set())
        try:
            while True:
                if reader.done():
                    reader.result()
                if not self._pending:
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                await room.acquire()
                count = min(self.batch_max_events, len(self._pending))
                batch = [self._pending.popleft() for _ in range(count)]
                self._in_flight.append(batch)
                await call.write(bus_pb2.PublishRequest(events=batch, merge_acks=True, compact_acks=True))
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError, Exception):
                await reader
            call.cancel()


# -- subscribing --------------------------------------------------------------------------------


async def subscribe(
    channel: grpc.aio.Channel,
    types: Iterable[str] = ("*",),
    session_id: str = "",
    after_seq: int | None = None,
    epoch: str = "",
) -> AsyncGenerator[bus_pb2.SubscribeResponse, None]:
    """One Subscribe stream: batches (and gap or reset notices) until it ends; errors raise
    AioRpcError. `epoch`: the log epoch `after_seq` belongs to (see SubscribeRequest.epoch)."""
    request = bus_pb2.SubscribeRequest(types=list(types), session_id=session_id, epoch=epoch)
    if after_seq is not None:
        request.after_seq = after_seq
    call = bus_pb2_grpc.EventBusStub(channel).Subscribe(request)
    try:
        async for response in call:
            yield response
    finally:
        call.cancel()


class ResumingSubscription:
    """A subscription that reconnects and resumes after the last seq it yielded.

    Iterate it for `SubscribeResponse`s (batches, gap and reset notices); `last_seq` is the newest
    seq seen and `epoch` the log epoch it belongs to. With `after_seq=None` it first asks Describe
    for the head, so even a live-only subscription resumes without loss. Pass the `epoch` your
    `after_seq` was read in to learn of a log reset since (otherwise the bus's epoch at the first
    subscribe is taken). A `reset` response means the log was replaced: seqs start over, and what
    follows is the new log from its start. Ends only when `close()` is called (or the iterator is
    dropped); INVALID_ARGUMENT and other non-retryable errors are raised.
    """

    def __init__(
        self,
        channel_factory: ChannelFactory,
        types: Iterable[str] = ("*",),
        session_id: str = "",
        after_seq: int | None = None,
        *,
        epoch: str | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self._channel_factory = channel_factory
        self.types = list(types)
        self.session_id = session_id
        self.last_seq = after_seq
        #: The log epoch `last_seq` belongs to (None: not known yet, taken from Describe).
        self.epoch = epoch
        self.resets = 0
        self.backoff = backoff or Backoff()
        self.reconnects = 0
        self._closed = False

    def close(self) -> None:
        self._closed = True

    async def __aiter__(self) -> AsyncIterator[bus_pb2.SubscribeResponse]:
        while not self._closed:
            try:
                channel = self._channel_factory()
                if self.last_seq is None or self.epoch is None:
                    described = await bus_pb2_grpc.EventBusStub(channel).Describe(bus_pb2.DescribeRequest())
                    if self.last_seq is None:
                        self.last_seq = described.head_seq
                    if self.epoch is None:
                        self.epoch = described.epoch
                async for response in subscribe(channel, self.types, self.session_id, self.last_seq, self.epoch):
                    self.backoff.reset()
                    kind = response.WhichOneof("message")
                    if kind == "reset":
                        log.warning(
                            "bus log replaced; following the new one from its start",
                            extra={"last_seq": self.last_seq, "epoch": response.reset.epoch},
                        )
                        self.epoch = response.reset.epoch
                        self.last_seq = 0
                        self.resets += 1
                    elif kind == "batch":
                        events = response.batch.events
                        if events and events[0].seq <= self.last_seq:
                            kept = [e for e in events if e.seq > self.last_seq]
                            if not kept:
                                continue
                            response = bus_pb2.SubscribeResponse(batch=events_pb2.EventBatch(events=kept))
                            events = response.batch.events
                        if events:
                            self.last_seq = events[-1].seq
                    elif kind == "gap":
                        self.last_seq = max(self.last_seq, response.gap.oldest_seq - 1)
                    yield response
                    if self._closed:
                        return
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.OUT_OF_RANGE:
                    log.warning(
                        "bus log is behind our position (reset?); resubscribing from its start",
                        extra={"last_seq": self.last_seq, "details": exc.details()},
                    )
                    self.last_seq = 0
                elif code not in RETRYABLE:
                    raise
                else:
                    log.info("bus subscription ended; resuming", extra={"code": code.name, "after_seq": self.last_seq})
            if self._closed:
                return
            self.reconnects += 1
            await self.backoff.wait()
