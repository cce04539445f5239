"""Fan-out: hands every newly stored event to each subscriber's bounded queue. No I/O, no awaits.

Publishing only appends to queues, so it never waits on a subscriber; a subscriber whose queue
overflows is marked cut off (its queue dropped) and its stream ends once it has written what it
was already writing, naming the last seq it was sent.

Events appended together reach the queues as one `Segment`: their frames joined once into one
buffer, shared by every subscriber with the same filter. A subscriber's batch is then one slice per
segment it spans (one, for a burst) behind a length prefix, not a frame per event per subscriber.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence
from itertools import accumulate
from typing import NamedTuple

from coda.bus import metrics
from coda.bus.filters import EventFilter
from coda.bus.log import APPENDED_NS, FIELD1_BYTES_TAG, FRAME, SEQ, Entry, encode_varint


class Segment:
    """Events stored together, as one buffer of `EventBatch.events` frames (read-only, shareable)."""

    __slots__ = ("appended_ns", "ends", "seqs", "view")

    def __init__(self, frames: Sequence[bytes], seqs: list[int], appended_ns: int) -> None:
        self.view = memoryview(b"".join(frames))
        #: Offset just past each event's frame.
        self.ends = list(accumulate(map(len, frames)))
        self.seqs = seqs
        #: time.monotonic_ns() when the first of them was appended.
        self.appended_ns = appended_ns

    @classmethod
    def of(cls, entries: Sequence[Entry]) -> Segment:
        return cls([e[FRAME] for e in entries], [e[SEQ] for e in entries], entries[0][APPENDED_NS])

    def __len__(self) -> int:
        return len(self.seqs)


class Batch(NamedTuple):
    """What one Subscribe message carries."""

    #: The encoded `SubscribeResponse` (its `batch` field), ready to send.
    message: bytes
    count: int
    last_seq: int
    #: When the oldest event in it was appended (monotonic ns), for the delivery-latency metric.
    appended_ns: int


class Subscription:
    """One subscriber's queue of segments and wake-up signals, filled by `Fanout`, drained by its stream."""

    __slots__ = (
        "_cursor",
        "_segments",
        "batch_max_events",
        "closing",
        "cut_off",
        "filled",
        "filter",
        "last_sent_seq",
        "max_queue",
        "queued",
        "ready",
    )

    def __init__(self, event_filter: EventFilter, max_queue: int, batch_max_events: int) -> None:
        self.filter = event_filter
        self.max_queue = max_queue
        self.batch_max_events = batch_max_events
        self._segments: collections.deque[Segment] = collections.deque()
        #: Events of the first segment already taken.
        self._cursor = 0
        #: Events waiting to be taken.
        self.queued = 0
        #: Set when an event is waiting, or on cut-off or close.
        self.ready = asyncio.Event()
        #: Set when a full batch is waiting, or on cut-off or close.
        self.filled = asyncio.Event()
        self.cut_off = False
        #: The bus is stopping: deliver what is queued, then end.
        self.closing = False
        self.last_sent_seq = 0

    def offer(self, segment: Segment) -> None:
        """Queue `segment` (already filtered for this subscriber); cut off past `max_queue`."""
        if self.cut_off:
            return
        self._segments.append(segment)
        self.queued += len(segment)
        if self.queued > self.max_queue:
            self.cut_off = True
            self._segments.clear()
            self._cursor = 0
            self.queued = 0
            metrics.SUBSCRIBERS_CUT_OFF.inc()
            self.filled.set()
        elif self.queued >= self.batch_max_events:
            self.filled.set()
        self.ready.set()

    def take(self, limit: int) -> Batch:
        """Up to `limit` queued events, oldest first, as one encoded message. The queue must not be empty."""
        segments = self._segments
        parts: list[memoryview] = []
        size = count = 0
        last_seq = 0
        appended_ns = segments[0].appended_ns
        while segments and count < limit:
            segment = segments[0]
            start = self._cursor
            stop = min(len(segment), start + limit - count)
            begin = segment.ends[start - 1] if start else 0
            end = segment.ends[stop - 1]
            parts.append(segment.view[begin:end])
            size += end - begin
            count += stop - start
            last_seq = segment.seqs[stop - 1]
            if stop == len(segment):
                segments.popleft()
                self._cursor = 0
            else:
                self._cursor = stop
        self.queued -= count
        if not self.queued:
            self.ready.clear()
        if self.queued < self.batch_max_events:
            self.filled.clear()
        message = b"".join([FIELD1_BYTES_TAG, encode_varint(size), *parts])
        return Batch(message, count, last_seq, appended_ns)

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

    def deliver(self, entries: list[Entry]) -> None:
        """The backend's listener: newly stored entries, in seq order. One segment per distinct filter."""
        by_filter: dict[tuple[object, str], Segment | None] = {}
        for subscription in self.subscriptions:
            if subscription.cut_off:
                continue
            event_filter = subscription.filter
            key = event_filter.key
            if key in by_filter:
                segment = by_filter[key]
            else:
                selected = event_filter.select(entries)
                segment = by_filter[key] = Segment.of(selected) if selected else None
            if segment is not None:
                subscription.offer(segment)

    def close(self) -> None:
        for subscription in self.subscriptions:
            subscription.close()
