"""Fan-out: hands every newly stored event to each subscriber's bounded queue. No I/O, no awaits.

Publishing only appends to queues, so it never waits on a subscriber; a subscriber whose queue
overflows is marked cut off (its queue dropped) and its stream ends once it has written what it
was already writing, naming the last seq it was sent.

Events appended together reach the queues as one `Segment`: their frames joined once into one
buffer, shared by every subscriber with the same filter. A subscriber's batch is then one slice per
segment it spans (one, for a burst) behind a length prefix, not a frame per event per subscriber.

Batches are paced by one clock for every subscriber (`Pacer`): a subscriber sends at most one
batch per tick unless a full one is waiting, and what is held back is released for all of them
at the tick. An event after a quiet spell goes out at once. Every gRPC message costs each end
tens to a hundred microseconds of CPU in grpcio, so a subscriber's message rate, not its event
rate, is what loads a small machine; and subscribers that send together are woken together, once.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Sequence
from itertools import accumulate
from typing import NamedTuple

from coda.bus import metrics
from coda.bus.filters import EventFilter
from coda.bus.log import APPENDED_NS, FRAME, SEQ, Entry
from coda.wire import frame_prefix


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
    event_count: int
    last_seq: int
    #: When the oldest event in it was appended (monotonic ns), for the delivery-latency metric.
    appended_ns: int


class Pacer:
    """The one clock that paces every subscriber's batches: ticks every `period` seconds.

    A subscriber whose last write ended during the current tick holds further events until the
    next one (unless a full batch is waiting); `release` hands them on at the tick, all together.
    `schedule(when)` asks the caller to call `release()` at clock time `when` (a loop timer);
    `period` 0 paces nothing.
    """

    def __init__(
        self, period: float, schedule: Callable[[float], None], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.period = period
        self.clock = clock
        self._schedule = schedule
        self._held: set[Subscription] = set()
        #: The tick a release is scheduled for (None: none is).
        self._release_at: float | None = None

    def next_tick(self, now: float) -> float:
        """The first tick after `now` (0 when nothing is paced: every time is allowed)."""
        if not self.period:
            return 0.0
        return (now // self.period + 1) * self.period

    @property
    def held(self) -> int:
        return len(self._held)

    def hold(self, subscription: Subscription) -> None:
        """`subscription` has events that wait for its next tick (`subscription.next_send_at`)."""
        self._held.add(subscription)
        when = subscription.next_send_at
        if self._release_at is None or when < self._release_at:
            self._release_at = when
            self._schedule(when)

    def release(self) -> None:
        """The tick: every held subscriber whose time has come may send (a late timer releases all)."""
        now = self.clock()
        self._release_at = None
        due = [s for s in self._held if s.next_send_at <= now]
        self._held.difference_update(due)
        for subscription in due:
            subscription.release()
        if self._held:
            self._release_at = min(s.next_send_at for s in self._held)
            self._schedule(self._release_at)

    def forget(self, subscription: Subscription) -> None:
        self._held.discard(subscription)


class Subscription:
    """One subscriber's queue of segments and its wake-up signal, filled by `Fanout`, drained by its stream."""

    __slots__ = (
        "_cursor",
        "_segments",
        "batch_max_events",
        "closing",
        "cut_off",
        "filter",
        "last_sent_seq",
        "max_queue",
        "next_send_at",
        "pacer",
        "queued",
        "ready",
    )

    def __init__(self, event_filter: EventFilter, max_queue: int, batch_max_events: int, pacer: Pacer) -> None:
        self.filter = event_filter
        self.max_queue = max_queue
        self.batch_max_events = batch_max_events
        self.pacer = pacer
        self._segments: collections.deque[Segment] = collections.deque()
        #: Events of the first segment already taken.
        self._cursor = 0
        #: Events waiting to be taken.
        self.queued = 0
        #: Set when a batch may be taken now (events queued and the pace allows it, or a full
        #: batch), and on cut-off or close.
        self.ready = asyncio.Event()
        #: Clock time before which a batch that is not full waits (the tick after the last send).
        self.next_send_at = 0.0
        self.cut_off = False
        #: The bus is stopping: deliver what is queued, unpaced, then end.
        self.closing = False
        self.last_sent_seq = 0

    def offer(self, segment: Segment, now: float) -> None:
        """Queue `segment` (already filtered for this subscriber); cut off past `max_queue`."""
        if self.cut_off:
            return
        self._segments.append(segment)
        self.queued += len(segment.seqs)  # not len(segment): a Python-level __len__ per offer
        if self.queued > self.max_queue:
            self.cut_off = True
            self._segments.clear()
            self._cursor = 0
            self.queued = 0
            self.pacer.forget(self)
            metrics.SUBSCRIBERS_CUT_OFF.inc()
            self.ready.set()
            return
        self._signal(now)

    def _signal(self, now: float) -> None:
        """Wake the stream now, or leave the events to the pacer's next tick."""
        if self.queued >= self.batch_max_events or now >= self.next_send_at or self.closing:
            self.ready.set()
        else:
            self.pacer.hold(self)

    def release(self) -> None:
        """The pacer's tick has come."""
        if self.queued:
            self.ready.set()

    def take(self, limit: int) -> Batch:
        """Up to `limit` queued events, oldest first, as one encoded message. The queue must not be
        empty. Call `sent` once the message is written."""
        segments = self._segments
        parts: list[memoryview] = []
        size = count = 0
        last_seq = 0
        appended_ns = segments[0].appended_ns
        while segments and count < limit:
            segment = segments[0]
            start = self._cursor
            in_segment = len(segment.seqs)
            stop = min(in_segment, start + limit - count)
            begin = segment.ends[start - 1] if start else 0
            end = segment.ends[stop - 1]
            parts.append(segment.view[begin:end])
            size += end - begin
            count += stop - start
            last_seq = segment.seqs[stop - 1]
            if stop == in_segment:
                segments.popleft()
                self._cursor = 0
            else:
                self._cursor = stop
        self.queued -= count
        message = b"".join([frame_prefix(size), *parts])
        return Batch(message, count, last_seq, appended_ns)

    def sent(self, now: float) -> None:
        """A batch was written: what is queued now, or arrives, waits for the next tick unless it
        makes a full batch. The interval starts when the write ends, so a subscriber whose writes
        slow down (a loaded machine, a slow reader) gets fewer, larger batches."""
        self.next_send_at = self.pacer.next_tick(now)
        if self.cut_off:
            return  # cut off while writing: `ready` stays set, so the stream ends now
        self.ready.clear()
        if self.queued or self.closing:
            self._signal(now)

    def close(self) -> None:
        self.closing = True
        self.ready.set()


class Fanout:
    def __init__(self, pacer: Pacer) -> None:
        self.pacer = pacer
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
        self.pacer.forget(subscription)
        if not self.subscriptions:
            self.empty.set()
        metrics.SUBSCRIBERS.set(len(self.subscriptions))

    def deliver(self, entries: list[Entry]) -> None:
        """The backend's listener: newly stored entries, in seq order. One segment per distinct filter."""
        now = self.pacer.clock()
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
                subscription.offer(segment, now)

    def close(self) -> None:
        for subscription in self.subscriptions:
            subscription.close()
