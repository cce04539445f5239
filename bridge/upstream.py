"""The bridge's link to Coda's bus: one `*` subscription, resumed from the last seq after any drop.

It is `coda.bus.client.ResumingSubscription`'s loop plus what the bridge needs on top: a link
state for /healthz (up once Describe answered and the stream is open, down on any failure) and
a reconnect count for /metrics.

The cursor belongs to one epoch of the bus log (DescribeResponse.epoch). The link subscribes
with it, so a bus whose log was replaced (a memory bus restarted) answers with a LogReset and
replays the new log from its start: without it, a new head past the old cursor would skip the
new events up to it, and one below it would make a seq name two events.

Nothing that goes wrong in the bridge's callbacks stops the link: a callback that raises is
logged and the link goes on with the next response; any other unexpected error is logged and
the link reconnects with backoff, like after a gRPC error.

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
        on_reset: Callable[[bus_pb2.LogReset], None] | None = None,
    ) -> None:
        self._channel = channel
        self._stub = bus_pb2_grpc.EventBusStub(channel)
        self._on_events = on_events
        self._on_gap = on_gap
        self._on_state = on_state
        self._on_reset = on_reset
        self._backoff = backoff
        #: The newest seq received; None until the first Describe.
        self.cursor: int | None = None
        #: The epoch of the bus log the cursor belongs to ("" from a bus without epochs).
        self.epoch: str | None = None
        #: Callback calls that raised (each logged; the link went on).
        self.callback_failures = 0
        self.up = False
        self.reconnects = 0
        self.connected = asyncio.Event()

    async def describe(self, timeout: float = 2.0) -> bus_pb2.DescribeResponse:
        return await self._stub.Describe(bus_pb2.DescribeRequest(), timeout=timeout)

    def subscribe(self, request: bus_pb2.SubscribeRequest) -> grpc.aio.UnaryStreamCall:
        """A dedicated subscription (used for a client's replay)."""
        return self._stub.Subscribe(request)

    def _call(self, callback: Callable[..., None], *args: object) -> None:
        try:
            callback(*args)
        except Exception:
            self.callback_failures += 1
            log.exception("handling input from the bus failed; the link goes on", extra={"cursor": self.cursor})

    def _set_up(self, up: bool) -> None:
        if up != self.up:
            self.up = up
            self._call(self._on_state, up)
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
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                if exc.code() == grpc.StatusCode.OUT_OF_RANGE:
                    log.warning("bus log is behind the bridge's position (reset?); following it from its start")
                    self.cursor = 0
                elif exc.code() not in RETRYABLE:
                    log.error("bus subscription failed", extra={"code": exc.code().name, "details": exc.details()})
                else:
                    log.warning("bus link down", extra={"code": exc.code().name, "details": exc.details()})
            except Exception:
                log.exception("bus link failed; reconnecting", extra={"cursor": self.cursor})
            self._set_up(False)
            if not first or self.cursor is not None:
                self.reconnects += 1
            first = False
            await asyncio.sleep(self._backoff.next_delay())

    async def _follow(self) -> None:
        describe = await self.describe()
        if self.cursor is None:
            self.cursor = describe.head_seq
            self.epoch = describe.epoch
        elif not describe.epoch and describe.head_seq < self.cursor:
            # A bus without epochs (older) restarted without a durable log and numbers from 1
            # again: follow the new numbering from its start rather than wait for the old cursor.
            log.warning(
                "bus seq went back; following its new log", extra={"was": self.cursor, "head": describe.head_seq}
            )
            self.cursor = 0
        # The epoch the cursor belongs to: a bus whose log is another one answers with a reset.
        stream = subscribe(self._channel, ["*"], "", self.cursor, epoch=self.epoch or "")
        try:
            self._set_up(True)
            self._backoff.reset()
            log.info("bus link up", extra={"after_seq": self.cursor, "epoch": self.epoch})
            async for response in stream:
                kind = response.WhichOneof("message")
                if kind == "reset":
                    log.warning(
                        "bus log replaced; following the new one from its start",
                        extra={"was": self.cursor, "epoch": response.reset.epoch, "previous": self.epoch},
                    )
                    self.epoch = response.reset.epoch
                    self.cursor = 0
                    if self._on_reset is not None:
                        self._call(self._on_reset, response.reset)
                    continue
                if kind == "gap":
                    self._call(self._on_gap, response.gap)
                    continue
                cursor = self.cursor
                events = [e for e in response.batch.events if e.seq > cursor]
                if events:
                    self.cursor = events[-1].seq
                    self._call(self._on_events, events)
        finally:
            await stream.aclose()
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "stream ended"
        )
