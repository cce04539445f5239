"""The in-process publisher used by components hosted with the bus: no gRPC hop, same rules."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging

from coda.bus.backends.base import BackendUnavailable
from coda.bus.service import BusService
from coda.schema import new_event_id
from coda.v1 import events_pb2

log = logging.getLogger(__name__)

#: Events held while the bus is not yet started or briefly busy; the oldest are dropped beyond it.
MAX_PENDING = 100_000
BATCH = 512


class LocalPublisher:
    """An `EventPublisher` that appends to the bus in this process, in the background."""

    def __init__(self, service: BusService, source: str = "coda") -> None:
        self._service = service
        self._source = source
        self._pending: collections.deque[events_pb2.Event] = collections.deque()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False
        self.dropped = 0
        #: The log was unavailable at the last try: events are held and retried.
        self.holding = False
        self._held = asyncio.Event()

    def publish(self, event: events_pb2.Event) -> None:
        if self._closed:
            log.warning("event published after the bus publisher closed", extra={"id": event.id})
            return
        if not event.id:
            event.id = new_event_id()
        if not event.source:
            event.source = self._source
        if len(self._pending) >= MAX_PENDING:
            self._pending.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                log.warning("bus publisher queue full; dropping the oldest events", extra={"dropped": self.dropped})
        self._pending.append(event)
        self._idle.clear()
        self._kick()

    def start(self) -> None:
        self._started = True
        self._kick()

    def _kick(self) -> None:
        if not self._started or (self._task is not None and not self._task.done()):
            return
        # Without a running loop, the next publish() or start() inside one sends it.
        with contextlib.suppress(RuntimeError):
            self._task = asyncio.get_running_loop().create_task(self._drain(), name="bus-local-publisher")

    async def _drain(self) -> None:
        while self._pending:
            batch = [self._pending.popleft() for _ in range(min(BATCH, len(self._pending)))]
            try:
                acks = await self._service.accept(batch)
            except BackendUnavailable as exc:
                # Keep them (same ids, so a half-stored batch is de-duplicated) and retry later.
                self._pending.extendleft(reversed(batch))
                if not self.holding:
                    log.warning("bus log unavailable; holding events", extra={"reason": str(exc)})
                self.holding = True
                self._held.set()
                await asyncio.sleep(0.5)
                continue
            except Exception:
                log.exception("bus append failed; events lost", extra={"events": len(batch)})
                continue
            if self.holding:
                self.holding = False
                self._held.clear()
                log.info("bus log available again; held events sent")
            for ack in acks:
                if ack.error:
                    log.warning("event rejected by the bus", extra={"id": ack.id, "reason": ack.error})
        self._idle.set()

    async def flush(self, timeout: float = 5.0) -> bool:
        self._kick()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        return self._idle.is_set()

    async def settle(self, timeout: float = 5.0) -> bool:
        """Wait until what was published is stored (True), or the log turns out unavailable and
        holds it for later, or `timeout` passes (False); unlike flush, an outage ends the wait."""
        self._kick()
        waits = [asyncio.ensure_future(self._idle.wait()), asyncio.ensure_future(self._held.wait())]
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        return self._idle.is_set()

    async def close(self) -> None:
        await self.flush()
        self._closed = True
