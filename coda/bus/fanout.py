"""Fan-out: hands every newly stored event to each subscriber's bounded queue. No I/O, no awaits.

Publishing only appends to queues, so it never waits on a subscriber; a subscriber whose queue
overflows is marked cut off (its queue dropped) and its stream ends once it has written what it
was already writing, naming the last seq it was sent.
"""

from __future__ import annotations

import asyncio

from coda.bus import metrics
from coda.bus.filters import EventFilter
from coda.bus.log import StoredEvent


class Subscription:
    """One subscriber's queue and wake-up signals, filled by `Fanout`, drained by its stream."""

    __slots__ = (
        "batch_max_events",
        "closing",
        "cut_off",
        "filled",
        "filter",
        "last_sent_seq",
        "max_queue",
        "queue",
        "ready",
    )

    def __init__(self, event_filter: EventFilter, max_queue: int, batch_max_events: int) -> None:
        self.filter = event_filter
        self.max_queue = max_queue
        self.batch_max_events = batch_max_events
        self.queue: list[StoredEvent] = []
        #: Set when the queue becomes non-empty, or on cut-off or close.
        self.ready = asyncio.Event()
        #: Set when a full batch is waiting, or on cut-off or close.
        self.filled = asyncio.Event()
        self.cut_off = False
        #: The bus is stopping: deliver what is queued, then end.
        self.closing = False
        self.last_sent_seq = 0

    def offer(self, entries: list[StoredEvent]) -> None:
        if self.cut_off:
            return
        selected = self.filter.select(entries)
        if not selected:
            return
        queue = self.queue
        queue.extend(selected)
        if len(queue) > self.max_queue:
            self.cut_off = True
            queue.clear()
            metrics.SUBSCRIBERS_CUT_OFF.inc()
            self.filled.set()
        elif len(queue) >= self.batch_max_events:
            self.filled.set()
        self.ready.set()

    def take(self, limit: int) -> list[StoredEvent]:
        """Up to `limit` queued entries, oldest first."""
        queue = self.queue
        if len(queue) <= limit:
            self.queue = []
            batch = queue
        else:
            batch = queue[:limit]
            del queue[:limit]
        if not self.queue:
            self.ready.clear()
        if len(self.queue) < self.batch_max_events:
            self.filled.clear()
        return batch

    def close(self) -> None:
        self.closing = True
        self.ready.set()
        self.filled.set()


class Fanout:
    def __init__(self) -> None:
        self.subscriptions: set[Subscription] = set()
        #: Set while no subscription is open.
        self.empty = asyncio.Event()
        self.empty.set()

    def add(self, subscription: Subscription) -> None:
        self.subscriptions.add(subscription)
        self.empty.clear()
        metrics.SUBSCRIBERS.set(len(self.subscriptions))

    def remove(self, subscription: Subscription) -> None:
        self.subscriptions.discard(subscription)
        if not self.subscriptions:
            self.empty.set()
        metrics.SUBSCRIBERS.set(len(self.subscriptions))

    def deliver(self, entries: list[StoredEvent]) -> None:
        """The backend's listener: newly stored entries, in seq order."""
        for subscription in self.subscriptions:
            subscription.offer(entries)

    def close(self) -> None:
        for subscription in self.subscriptions:
            subscription.close()
