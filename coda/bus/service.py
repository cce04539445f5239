"""The EventBus gRPC servicer: moves messages between the network and the log/fan-out core.

Subscribe responses are written as pre-encoded bytes: a batch is a slice of the frames the
fan-out joined once per append (serialized once, at append) under one length prefix, whatever its
size or the number of subscribers. The method is registered with an identity serializer; on the
wire it is an ordinary `SubscribeResponse`. Publish acks are encoded by hand for the same reason
(coda.bus.acks), and written by a task of their own so that merged acks can wait for their
deadline while the stream goes on being read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from coda.bus import metrics
from coda.bus.acks import AckMerger, Answer, encode_ack_messages, encode_acks
from coda.bus.backends.base import BackendUnavailable, LogBackend
from coda.bus.fanout import Fanout, Pacer, Subscription
from coda.bus.filters import EventFilter, FilterError
from coda.bus.log import FRAME, SEQ, Appended, GapInfo, Headers, gap_between
from coda.bus.validation import BatchValidator, session_id_problem
from coda.config import BusConfig
from coda.runtime.malformed import MalformedRequest
from coda.v1 import bus_pb2, events_pb2
from coda.wire import frame_field1

log = logging.getLogger(__name__)

#: Most requests one merged PublishResponse answers (a publisher keeping more in flight never
#: waits for `bus.publish_ack_ms`; GrpcPublisher keeps 16).
MERGE_MAX_REQUESTS = 8
#: Requests read but not yet answered before Publish stops reading until acks are written.
MAX_UNANSWERED_REQUESTS = 64
#: How long a Publish stream that is ending waits to send the acks it still holds.
ACK_DRAIN_SECONDS = 5.0

SERVICE_NAME = bus_pb2.DESCRIPTOR.services_by_name["EventBus"].full_name


def ack_messages(
    events: Sequence[events_pb2.Event], seqs: Sequence[int], duplicates: set[int], problems: dict[int, str]
) -> list[bus_pb2.PublishAck]:
    """One PublishAck per event, in order, from what storing them gave (see `BusService._store`)."""
    return [
        bus_pb2.PublishAck(
            id=event.id, seq=seq, duplicate=index in duplicates, error=problems.get(index, ""), index=index
        )
        for index, (event, seq) in enumerate(zip(events, seqs, strict=True))
    ]


def encode_gap(gap: GapInfo) -> bytes:
    return bus_pb2.SubscribeResponse(
        gap=events_pb2.Gap(requested_after_seq=gap.requested_after_seq, oldest_seq=gap.oldest_seq, missed=gap.missed)
    ).SerializeToString()


def encode_reset(epoch: str, previous_epoch: str, requested_after_seq: int) -> bytes:
    return bus_pb2.SubscribeResponse(
        reset=bus_pb2.LogReset(epoch=epoch, previous_epoch=previous_epoch, requested_after_seq=requested_after_seq)
    ).SerializeToString()


class BusService:
    """Publish, Subscribe and Describe over one backend and one fan-out."""

    def __init__(self, config: BusConfig, backend: LogBackend) -> None:
        self.config = config
        self.backend = backend
        self.batch_max_events = max(1, config.batch_max_events)
        self.batch_max_seconds = max(0.0, config.batch_max_ms) / 1000.0
        self.fanout = Fanout(Pacer(self.batch_max_seconds, self._schedule_release))
        backend.set_listener(self._on_append)
        self.publish_ack_seconds = max(0.0, config.publish_ack_ms) / 1000.0
        self.validator = BatchValidator(config.max_event_bytes)
        self.stopping = False

    # -- core operations (also used in process by the local publisher) --------------------------

    def _schedule_release(self, when: float) -> None:
        # The pacer's clock, time.monotonic, is the event loop's clock too.
        asyncio.get_running_loop().call_at(when, self.fanout.pacer.release)

    def _on_append(self, stored: list) -> None:  # type: ignore[type-arg]
        self.fanout.deliver(stored)
        metrics.EVENTS_PUBLISHED.inc(len(stored))

    async def _store(
        self, events: Sequence[events_pb2.Event], request_bytes: int | None = None
    ) -> tuple[list[int], set[int], dict[int, str], Headers]:
        """Validate, store and fan out: per batch position its seq (0 when refused), the positions
        acked as duplicates, {position: reason} for the refused ones, and the events' headers."""
        # One Python object per event, made once: iterating a repeated protobuf field again
        # looks each element up anew.
        events = list(events)
        headers = Headers.of(events)
        problems = self.validator.problems(events, headers, request_bytes)
        if not problems:
            appended = await self.backend.append(events, headers) if events else Appended([], set(), [])
            self._update_log_gauges()
            if appended.duplicates:
                metrics.EVENTS_DUPLICATE.inc(len(appended.duplicates))
            return appended.seqs, appended.duplicates, problems, headers
        for problem in problems.values():
            metrics.EVENTS_REJECTED.labels(metrics.rejection_kind(problem)).inc()
        positions = [i for i in range(len(events)) if i not in problems]
        valid = [events[i] for i in positions]
        appended = await self.backend.append(valid, headers.select(positions)) if valid else Appended([], set(), [])
        # Back from positions among the valid events to positions in the request.
        seqs = [0] * len(events)
        for valid_index, position in enumerate(positions):
            seqs[position] = appended.seqs[valid_index]
        duplicates = {positions[i] for i in appended.duplicates}
        if duplicates:
            metrics.EVENTS_DUPLICATE.inc(len(duplicates))
        self._update_log_gauges()
        return seqs, duplicates, problems, headers

    async def accept(self, events: Sequence[events_pb2.Event]) -> list[bus_pb2.PublishAck]:
        """Validate, store and fan out `events`; one ack per event, in order."""
        seqs, duplicates, problems, _ = await self._store(events)
        return ack_messages(events, seqs, duplicates, problems)

    async def accept_encoded(
        self, events: Sequence[events_pb2.Event], request_bytes: int | None = None, compact: bool = False
    ) -> Answer:
        """Like `accept`, for a PublishRequest (the hot path): its answer, the encoded
        `PublishResponse.acks` field or, with `compact` when every event was stored as new with
        consecutive seqs, the first seq."""
        seqs, duplicates, problems, headers = await self._store(events, request_bytes)
        if not problems and not duplicates:
            # Seqs increase, so the span equals the count only when nothing came in between.
            if compact and seqs and seqs[-1] - seqs[0] == len(seqs) - 1:
                return seqs[0]
            return encode_acks(headers.ids, seqs)
        return encode_ack_messages(ack_messages(events, seqs, duplicates, problems))

    def _update_log_gauges(self) -> None:
        stats = self.backend.stats()
        metrics.LOG_EVENTS.set(stats.retained_events)
        metrics.LOG_BYTES.set(stats.retained_bytes)
        metrics.HEAD_SEQ.set(stats.head_seq)

    def describe(self) -> bus_pb2.DescribeResponse:
        stats = self.backend.stats()
        return bus_pb2.DescribeResponse(
            head_seq=stats.head_seq,
            oldest_seq=stats.oldest_seq,
            retained_events=stats.retained_events,
            retained_bytes=stats.retained_bytes,
            max_events=stats.max_events,
            max_bytes=stats.max_bytes,
            subscribers=len(self.fanout.subscriptions),
            backend=self.backend.name,
            epoch=self.backend.epoch,
        )

    async def close_streams(self, timeout: float) -> None:
        """Stop accepting publishes, let every subscriber drain its queue, wait for them (bounded)."""
        self.stopping = True
        self.fanout.close()
        try:
            async with asyncio.timeout(timeout):
                await self.fanout.empty.wait()
        except TimeoutError:
            log.warning("subscribers still open at shutdown", extra={"subscribers": len(self.fanout.subscriptions)})

    # -- gRPC methods ---------------------------------------------------------------------------

    async def Publish(
        self, request_iterator: AsyncIterator[tuple[bus_pb2.PublishRequest, int]], context: grpc.aio.ServicerContext
    ) -> None:
        # Reading and storing never wait for acks to be written: a writer task sends them, as
        # soon as they are due (see AckMerger), so a merged run can wait for its deadline while
        # the next requests are read. Past MAX_UNANSWERED_REQUESTS the reader waits for the
        # writer, so a publisher that never reads its acks is held back by flow control.
        loop = asyncio.get_running_loop()
        merger = AckMerger(self.publish_ack_seconds, MERGE_MAX_REQUESTS)
        wake = asyncio.Event()
        written = asyncio.Event()
        reading = True

        async def write_acks() -> None:
            while True:
                response = merger.take(loop.time())
                if response is not None:
                    await context.write(response)
                    written.set()
                    continue
                if not reading and not merger:
                    return
                wake.clear()
                deadline = merger.deadline()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(deadline):
                        await wake.wait()

        async def answer_all() -> None:
            """Send every ack still held (bounded wait), before the stream ends."""
            nonlocal reading
            reading = False
            merger.seal()
            wake.set()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(ACK_DRAIN_SECONDS):
                    await asyncio.shield(writer)

        writer = asyncio.create_task(write_acks())
        try:
            async for request, size in request_iterator:
                if writer.done():
                    writer.result()  # the client is gone: raise what writing met
                    return
                if self.stopping:
                    await answer_all()
                    await context.abort(grpc.StatusCode.UNAVAILABLE, "the bus is stopping; publish again after restart")
                try:
                    answer = await self.accept_encoded(request.events, size, request.compact_acks)
                except BackendUnavailable as exc:
                    await answer_all()
                    await context.abort(grpc.StatusCode.UNAVAILABLE, f"{exc}; publish again (same ids) later")
                if merger.add(answer, request.merge_acks, loop.time()):
                    wake.set()
                while merger.requests > MAX_UNANSWERED_REQUESTS and not writer.done():
                    written.clear()
                    await written.wait()
            await answer_all()
        except MalformedRequest:
            # What came before the bad message is acked before the call is refused, and the
            # refusal never races a write still in progress (see coda.runtime.malformed).
            await answer_all()
            raise
        finally:
            writer.cancel()

    async def Subscribe(
        self, request: bus_pb2.SubscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[bytes]:
        try:
            event_filter = EventFilter(request.types, request.session_id)
        except FilterError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        problem = session_id_problem(request.session_id)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        if self.stopping:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the bus is stopping")

        # A position in another log (one this bus's log replaced) names nothing here: say so and
        # replay this log from its start. Without the check, a new head past the old position
        # would skip every new event up to it, and one below it would make a seq name two events.
        def other_epoch() -> bool:
            return bool(request.epoch and self.backend.epoch and request.epoch != self.backend.epoch)

        try:
            # Not waiting for a seq of another log to appear in this one.
            after_seq = request.after_seq if request.HasField("after_seq") and not other_epoch() else None
            await self.backend.prepare_subscribe(after_seq)
        except BackendUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))

        epoch = self.backend.epoch
        reset = other_epoch()
        batch_max = self.batch_max_events
        subscription = Subscription(event_filter, self.config.subscriber_queue_events, batch_max, self.fanout.pacer)
        # No await between these two lines: events after `live_from` reach the queue, the
        # rest come from the log, so the switch from replay to live has no hole and no repeat.
        self.fanout.add(subscription)
        live_from = self.backend.head_seq
        subscription.last_sent_seq = live_from
        try:
            if reset:
                log.info(
                    "subscriber from another log epoch: reset",
                    extra={"epoch": request.epoch, "after_seq": request.after_seq, "peer": context.peer()},
                )
                metrics.RESETS.inc()
                yield encode_reset(epoch, request.epoch, request.after_seq)
            if request.HasField("after_seq"):
                after = 0 if reset else request.after_seq
                if after > live_from:
                    await context.abort(
                        grpc.StatusCode.OUT_OF_RANGE,
                        f"after_seq {after} is beyond the newest seq {live_from} (was the bus log reset?); "
                        f"subscribe with after_seq <= {live_from}",
                    )
                subscription.last_sent_seq = after
                try:
                    async for chunk in self._replay(after, live_from, event_filter, subscription):
                        yield chunk
                except BackendUnavailable as exc:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, f"replay interrupted: {exc}")
            async for chunk in self._follow(subscription):
                yield chunk
            if subscription.cut_off:
                last = subscription.last_sent_seq
                log.info("subscriber cut off", extra={"last_seq": last, "peer": context.peer()})
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"subscriber fell more than {subscription.max_queue} events behind and was cut off; "
                    f"last seq sent {last}; resume with after_seq={last}",
                )
        finally:
            self.fanout.remove(subscription)

    async def _replay(
        self, after: int, live_from: int, event_filter: EventFilter, subscription: Subscription
    ) -> AsyncIterator[bytes]:
        while after < live_from and not subscription.cut_off:
            gap = gap_between(after, min(self.backend.first_retained_seq, live_from + 1))
            if gap is not None:
                yield encode_gap(gap)
                after = gap.oldest_seq - 1
                subscription.last_sent_seq = after
                continue
            entries = await self.backend.read_after(after, self.batch_max_events, event_filter)
            if entries and entries[-1][SEQ] > live_from:
                entries = [e for e in entries if e[SEQ] <= live_from]
            if not entries:
                break
            after = entries[-1][SEQ]
            selected = event_filter.select(entries)
            if selected:
                yield frame_field1(b"".join([e[FRAME] for e in selected]))
                metrics.DELIVERY.delivered(len(selected))
            subscription.last_sent_seq = after

    async def _follow(self, subscription: Subscription) -> AsyncIterator[bytes]:
        # `ready` is set when a batch may go: the fan-out and the pacer decide (see fanout.py).
        batch_max = self.batch_max_events
        clock = self.fanout.pacer.clock
        while True:
            await subscription.ready.wait()
            if subscription.cut_off:
                return
            if not subscription.queued:
                if subscription.closing:
                    return
                subscription.ready.clear()
                continue
            batch = subscription.take(batch_max)
            yield batch.message
            subscription.sent(clock())
            subscription.last_sent_seq = batch.last_seq
            metrics.DELIVERY.delivered(batch.event_count, (time.monotonic_ns() - batch.appended_ns) / 1e9)

    async def Describe(
        self, request: bus_pb2.DescribeRequest, context: grpc.aio.ServicerContext
    ) -> bus_pb2.DescribeResponse:
        try:
            self.backend.check_ready()
        except BackendUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        return self.describe()


def _identity(data: bytes) -> bytes:
    return data


def _parse_publish(data: bytes) -> tuple[bus_pb2.PublishRequest, int]:
    """A PublishRequest with its size on the wire (`ByteSize()` would walk every event again)."""
    return bus_pb2.PublishRequest.FromString(data), len(data)


def add_to_server(service: BusService, server: grpc.aio.Server) -> None:
    """Register the EventBus methods; Subscribe sends the pre-encoded bytes it yields as they are."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {
        "Publish": grpc.stream_stream_rpc_method_handler(
            service.Publish,
            request_deserializer=_parse_publish,
            response_serializer=_identity,
        ),
        "Subscribe": grpc.unary_stream_rpc_method_handler(
            service.Subscribe,
            request_deserializer=bus_pb2.SubscribeRequest.FromString,
            response_serializer=_identity,
        ),
        "Describe": grpc.unary_unary_rpc_method_handler(
            service.Describe,
            request_deserializer=bus_pb2.DescribeRequest.FromString,
            response_serializer=bus_pb2.DescribeResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_registered_method_handlers(SERVICE_NAME, handlers)
