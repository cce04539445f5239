"""The components' current state, for a client that subscribes after they reported it.

Components report their state as events: `system.started` (a process and the components it hosts),
`system.stopping`, `component.status`, `component.breaker` and `component.health`. A page opened
after start-up would otherwise wait for the next such event, which may never come, to show a
component at all. The bridge keeps the newest of these events per component (and per breaker) as
it dispatches them, and sends the ones a new subscription's filter matches before anything else.

Why here rather than components re-reporting periodically: the answer is immediate, it costs the
bus nothing (no periodic events filling the bounded log and every subscriber's stream), and it is
exactly what the components last said. The bridge fills it from the bus log when its link comes up
(`prime`), so a bridge started after Coda knows the state too, as far as the log still holds it.

`ComponentStates` is pure; `prime` is its thin asyncio shell.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

import grpc

from coda.v1 import bus_pb2

from .codec import EncodedEvent

log = logging.getLogger(__name__)

STATE_TYPES = ("system.started", "system.stopping", "component.status", "component.breaker", "component.health")


class ComponentStates:
    """The newest state-bearing event per component, per breaker and per health report. Pure."""

    def __init__(self) -> None:
        #: component -> its newest system.started (naming it) or component.status
        self._lifecycle: dict[str, EncodedEvent] = {}
        self._breakers: dict[tuple[str, str], EncodedEvent] = {}
        self._health: dict[str, EncodedEvent] = {}
        self._stopping: EncodedEvent | None = None

    def observe(self, events: Iterable[EncodedEvent], *, from_log: bool = False) -> None:
        """Take events of any type. Live ones (dispatched in order) replace what is kept: after a bus
        restart without a durable log they may number lower. Ones read `from_log` (possibly after
        live ones) replace only older ones."""
        keep = _keep_newer if from_log else _keep
        for encoded in events:
            kind = encoded.type
            if kind not in STATE_TYPES:
                continue
            event = encoded.event
            if kind == "system.started":
                for component in event.system_started.components:
                    keep(self._lifecycle, component, encoded)
            elif kind == "component.status":
                keep(self._lifecycle, event.component_status.component, encoded)
            elif kind == "component.breaker":
                breaker = event.component_breaker
                keep(self._breakers, (breaker.component, breaker.target), encoded)
            elif kind == "component.health":
                keep(self._health, event.component_health.component, encoded)
            elif not from_log or self._stopping is None or encoded.seq > self._stopping.seq:
                self._stopping = encoded

    def snapshot(self, up_to_seq: int | None = None) -> list[EncodedEvent]:
        """The kept events (each once) in seq order, those with seq <= `up_to_seq` when given.

        Replayed in order they give what a client that saw every event would show.
        """
        kept: dict[str, EncodedEvent] = {}
        for encoded in (*self._lifecycle.values(), *self._breakers.values(), *self._health.values()):
            kept[encoded.event.id] = encoded
        if self._stopping is not None:
            kept[self._stopping.event.id] = self._stopping
        events = sorted(kept.values(), key=lambda e: e.seq)
        if up_to_seq is not None:
            events = [e for e in events if e.seq <= up_to_seq]
        return events


def _keep(table: dict, key: object, encoded: EncodedEvent) -> None:  # type: ignore[type-arg]
    table[key] = encoded


def _keep_newer(table: dict, key: object, encoded: EncodedEvent) -> None:  # type: ignore[type-arg]
    current = table.get(key)
    if current is None or encoded.seq > current.seq:
        table[key] = encoded


async def prime(
    subscribe: Callable[[bus_pb2.SubscribeRequest], grpc.aio.UnaryStreamCall],
    states: ComponentStates,
    up_to_seq: int,
    quiet_seconds: float = 1.0,
) -> None:
    """Fill `states` from the bus log: its state events up to `up_to_seq` (what came before the link).

    A filtered replay has no end marker: it is read until an event at or past `up_to_seq`, or until
    the bus has sent nothing for `quiet_seconds` (the retained ones were all sent). Best effort:
    events the bounded log no longer holds are gone, and a failure leaves the states to the live
    events."""
    if up_to_seq <= 0:
        return
    call = subscribe(bus_pb2.SubscribeRequest(types=list(STATE_TYPES), after_seq=0))
    responses = aiter(call)
    try:
        while True:
            try:
                response = await asyncio.wait_for(anext(responses), quiet_seconds)
            except (TimeoutError, StopAsyncIteration):
                return
            if response.HasField("gap"):
                continue
            events = [EncodedEvent.of(e) for e in response.batch.events]
            states.observe((e for e in events if e.seq <= up_to_seq), from_log=True)
            if events and events[-1].seq >= up_to_seq:
                return
    except grpc.aio.AioRpcError as exc:
        log.warning("component states not read from the bus log", extra={"code": exc.code().name})
    finally:
        call.cancel()
