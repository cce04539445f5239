"""The bridge's link to Coda's bus: one `*` subscription, resumed from the last seq after any drop.

It is `coda.bus.client.ResumingSubscription`'s loop plus what the bridge needs on top: a link
state for /healthz (up once Describe answered and the stream is open, down on any failure) and
a reconnect count for /metrics.

One upstream subscription for all clients (filtering is local, see fanout.py) keeps a single
resume cursor, costs the bus one subscriber however many browsers connect, and lets a browser
subscribe or change its filter without a round trip to Coda.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable

import grpc

from coda.bus.client import RETRYABLE, subscribe
from coda.v1 import bus_pb2, bus_pb2_grpc, events_pb2

log = logging.getLogger(__name__)

__all__ = ["RETRYABLE", "Backoff", "UpstreamLink"]


class Backoff:
    """Exponential backoff with jitter: initial, doubling to max; `reset()` after a success. Pure."""

    def __init__(self, initial: float, maximum: float, rng: Callable[[], float] = random.random) -> None:
        self.initial = initial
        self.maximum = max(initial, maximum)
        self._rng = rng
        self._next = initial

    def next_delay(self) -> float:
        delay = self._next
        self._next = min(self.maximum, self._next * 2)
        return delay * (0.5 + self._rng() / 2)

    def reset(self) -> None:
        self._next = self.initial


class UpstreamLink:
    """Follows every bus event from `cursor` on, calling `on_events` with each batch (seq > cursor only)."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        on_events: Callable[[list[events_pb2.Event]], None],
        on_gap: Callable[[events_pb2.Gap], None],
        on_state: Callable[[bool], None],
        backoff: Backoff,
    ) -> None:
        self._channel = channel
        self._stub = bus_pb2_grpc.EventBusStub(channel)
        self._on_events = on_events
        self._on_gap = on_gap
        self._on_state = on_state
        self._backoff = backoff
        #: The newest seq received; None until the first Describe.
        self.cursor: int | None = None
        self.up = False
        self.reconnects = 0
        self.connected = asyncio.Event()

    async def describe(self, timeout: float = 2.0) -> bus_pb2.DescribeResponse:
        return await self._stub.Describe(bus_pb2.DescribeRequest(), timeout=timeout)

    def subscribe(self, request: bus_pb2.SubscribeRequest) -> grpc.aio.UnaryStreamCall:
        """A dedicated subscription (used for a client's replay)."""
        return self._stub.Subscribe(request)

    def _set_up(self, up: bool) -> None:
        if up != self.up:
            self.up = up
            self._on_state(up)
        if up:
            self.connected.set()
        else:
            self.connected.clear()

    async def run(self) -> None:
        """Run until cancelled."""
        first = True
        while True:
            try:
                await self._follow()
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.OUT_OF_RANGE:
                    log.warning("bus log is behind the bridge's position (reset?); following it from its start")
                    self.cursor = 0
                elif exc.code() not in RETRYABLE:
                    log.error("bus subscription failed", extra={"code": exc.code().name, "details": exc.details()})
                else:
                    log.warning("bus link down", extra={"code": exc.code().name, "details": exc.details()})
            self._set_up(False)
            if not first or self.cursor is not None:
                self.reconnects += 1
            first = False
            await asyncio.sleep(self._backoff.next_delay())

    async def _follow(self) -> None:
        describe = await self.describe()
        if self.cursor is None:
            self.cursor = describe.head_seq
        elif describe.head_seq < self.cursor:
            # A bus without a durable log restarted and numbers from 1 again: follow the new
            # numbering from its start rather than waiting for it to pass our old cursor.
            log.warning(
                "bus seq went back; following its new log", extra={"was": self.cursor, "head": describe.head_seq}
            )
            self.cursor = 0
        stream = subscribe(self._channel, ["*"], "", self.cursor)
        try:
            self._set_up(True)
            self._backoff.reset()
            log.info("bus link up", extra={"after_seq": self.cursor})
            async for response in stream:
                if response.HasField("gap"):
                    self._on_gap(response.gap)
                    continue
                cursor = self.cursor
                events = [e for e in response.batch.events if e.seq > cursor]
                if events:
                    self.cursor = events[-1].seq
                    self._on_events(events)
        finally:
            await stream.aclose()
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "stream ended"
        )
