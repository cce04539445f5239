"""The event log: assigns seq, keeps a bounded retention window, de-duplicates retries. No I/O.

Every event is serialized exactly once, when it is appended, and kept only in its framed form (the
protobuf wire bytes of one element of a `repeated Event events = 1` field: a tag, the length, the
serialized Event). Subscribers get a whole `SubscribeResponse` from concatenated frames, so
delivery costs no per-event protobuf work however many subscribers there are; the Event's own
bytes are read out of the frame (`frame_payload`) where they are needed, without a copy.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Final, NamedTuple

from coda.schema import TYPE_BY_FIELD, event_type
from coda.v1 import events_pb2
from coda.wire import FRAME_PREFIXES, frame_field1, frame_payload, frame_prefix

#: Session id strings the log shares between entries before it starts the table afresh.
MAX_SHARED_SESSION_IDS = 4096

#: One stored event as the bus core passes it around (log, fan-out, filters, replay):
#: (seq, id, type, session_id, frame, appended_ns), read with the index names below; the
#: serialized Event (seq set) is `frame_payload(entry[FRAME])`.
#: An exact tuple of ints, strs and bytes is dropped from the garbage collector's tracking after
#: its first collection, so a full collection does not walk a hundred thousand retained events (a
#: slotted object per event made each full collection a ~20 ms pause of the whole bus at 100 k
#: events), and handing the log's own tuple on costs no object per event per step.
#: `StoredEvent.from_entry` gives the same with attribute names, for tools and tests.
Entry = tuple[int, str, str, str, bytes, int]
# Final, so that type checkers know which member of an Entry each index reads.
SEQ: Final = 0
ID: Final = 1
TYPE: Final = 2
SESSION_ID: Final = 3
FRAME: Final = 4
APPENDED_NS: Final = 5


def make_entry(seq: int, event_id: str, type_: str, session_id: str, data: bytes, appended_ns: int) -> Entry:
    """An entry for `data`, the serialized Event (seq included)."""
    return (seq, event_id, type_, session_id, frame_field1(data), appended_ns)


class StoredEvent:
    """One event in the log, serialized once, with what filters and metrics need at hand."""

    __slots__ = ("appended_ns", "data", "frame", "id", "seq", "session_id", "type")

    def __init__(
        self,
        seq: int,
        event_id: str,
        type_: str,
        session_id: str,
        data: bytes,
        appended_ns: int,
        frame: bytes | None = None,
    ) -> None:
        self.seq = seq
        self.id = event_id
        self.type = type_
        self.session_id = session_id
        #: The serialized Event, seq included.
        self.data = data
        #: `data` framed as one element of `EventBatch.events`.
        self.frame = frame_field1(data) if frame is None else frame
        #: time.monotonic_ns() at append, for publish-to-deliver latency.
        self.appended_ns = appended_ns

    @classmethod
    def from_event(cls, event: events_pb2.Event, appended_ns: int | None = None) -> StoredEvent:
        return cls(
            event.seq,
            event.id,
            event_type(event),
            event.session_id,
            event.SerializeToString(),
            time.monotonic_ns() if appended_ns is None else appended_ns,
        )

    def event(self) -> events_pb2.Event:
        return events_pb2.Event.FromString(self.data)

    def entry(self) -> Entry:
        return (self.seq, self.id, self.type, self.session_id, self.frame, self.appended_ns)

    @classmethod
    def from_entry(cls, entry: Entry) -> StoredEvent:
        seq, event_id, type_, session_id, frame, appended_ns = entry
        return cls(seq, event_id, type_, session_id, bytes(frame_payload(frame)), appended_ns, frame)

    def __repr__(self) -> str:
        return f"StoredEvent(seq={self.seq}, id={self.id!r}, type={self.type!r})"


class Headers(NamedTuple):
    """What the bus reads from every event of a publish request, read once and shared by
    validation, the log and the acks (each read from a protobuf message builds a new object)."""

    ids: list[str]
    session_ids: list[str]
    #: Dotted type names; "" for an event without a payload.
    types: list[str]

    @classmethod
    def of(cls, events: Sequence[events_pb2.Event]) -> Headers:
        return cls(
            [e.id for e in events],
            [e.session_id for e in events],
            [TYPE_BY_FIELD.get(e.WhichOneof("payload"), "") for e in events],  # type: ignore[arg-type]
        )

    def select(self, positions: Sequence[int]) -> Headers:
        ids, session_ids, types = self
        return Headers([ids[i] for i in positions], [session_ids[i] for i in positions], [types[i] for i in positions])


class AppendResult(NamedTuple):
    """One appended event's outcome."""

    seq: int
    #: True when the id was already in the retention window; `seq` is then the original one.
    duplicate: bool
    #: The new log entry; None for a duplicate.
    stored: StoredEvent | None


@dataclass(slots=True)
class Appended:
    """What appending a batch did (plain lists, not an object per event: this is the hot path)."""

    #: Each event's seq, in batch order.
    seqs: list[int]
    #: Batch positions of the events whose id was already held; their seq is the original one.
    duplicates: set[int]
    #: The new log entries, in seq order.
    stored: list[Entry]


@dataclass(frozen=True, slots=True)
class GapInfo:
    requested_after_seq: int
    #: The oldest seq still held (delivery continues from it).
    oldest_seq: int
    missed: int


def gap_between(after_seq: int, first_retained_seq: int) -> GapInfo | None:
    """What a replay after `after_seq` misses when the oldest seq held is `first_retained_seq`
    (None: nothing), for any backend."""
    if after_seq + 1 >= first_retained_seq:
        return None
    return GapInfo(after_seq, first_retained_seq, first_retained_seq - 1 - after_seq)


@dataclass(frozen=True, slots=True)
class LogStats:
    head_seq: int
    oldest_seq: int
    retained_events: int
    retained_bytes: int
    max_events: int
    max_bytes: int


class EventLog:
    """Append-only, seq-assigning, bounded by event count and by bytes, idempotent on event id.

    Seqs are contiguous inside the window, so an entry is found by arithmetic, not search.
    An event larger than `max_bytes` on its own still gets its seq (and is acked) but is evicted
    at once; subscribers following live still receive it.
    """

    def __init__(self, max_events: int, max_bytes: int, start_seq: int = 0) -> None:
        if max_events < 1 or max_bytes < 1:
            raise ValueError("max_events and max_bytes must be positive")
        self.max_events = max_events
        self.max_bytes = max_bytes
        # Entries live in `_entries[_start:]`; the dead prefix is compacted away in bulk so that
        # eviction is O(1) amortised without a deque's O(n) middle indexing.
        self._entries: list[Entry] = []
        self._start = 0
        self._bytes = 0
        self._seq_by_id: dict[str, int] = {}
        self._session_ids: dict[str, str] = {}
        self._head = start_seq

    # -- position -------------------------------------------------------------------------------

    @property
    def head_seq(self) -> int:
        """The newest seq ever assigned (0: none)."""
        return self._head

    @property
    def first_retained_seq(self) -> int:
        """The seq the next replay from the beginning starts at (head + 1 when nothing is held)."""
        return self._head + 1 - self.retained_events

    @property
    def oldest_seq(self) -> int:
        """The oldest retained seq, 0 when the log holds nothing."""
        return self.first_retained_seq if self.retained_events else 0

    @property
    def retained_events(self) -> int:
        return len(self._entries) - self._start

    @property
    def retained_bytes(self) -> int:
        return self._bytes

    def stats(self) -> LogStats:
        return LogStats(self._head, self.oldest_seq, self.retained_events, self._bytes, self.max_events, self.max_bytes)

    # -- writing --------------------------------------------------------------------------------

    def append(self, event: events_pb2.Event, appended_ns: int | None = None) -> AppendResult:
        """Assign the next seq to `event` (setting `event.seq`) unless its id is already held."""
        appended = self.append_many((event,), appended_ns)
        stored = StoredEvent.from_entry(appended.stored[0]) if appended.stored else None
        return AppendResult(appended.seqs[0], stored is None, stored)

    def append_many(
        self, events: Sequence[events_pb2.Event], appended_ns: int | None = None, headers: Headers | None = None
    ) -> Appended:
        """`append` for a batch, in order; `headers` are the events' own (`Headers.of(events)`)
        when the caller has already read them."""
        now = time.monotonic_ns() if appended_ns is None else appended_ns
        ids, session_ids, types = headers or Headers.of(events)
        seq_by_id = self._seq_by_id
        first = self._head + 1
        # The entries and the id index then share one int object per seq.
        new_seqs = list(range(first, first + len(ids)))
        claimed = dict(zip(ids, new_seqs, strict=True))
        if len(claimed) == len(ids) and "" not in claimed and seq_by_id.keys().isdisjoint(claimed):
            return self._append_new(events, ids, session_ids, types, new_seqs, claimed, now)
        # Some id repeats one in the window or in the batch (a retry), or is empty: event by event.
        entries = self._entries
        head = self._head
        added_bytes = 0
        seqs: list[int] = []
        duplicates: set[int] = set()
        stored: list[Entry] = []
        for index, (event, event_id, session_id, type_) in enumerate(zip(events, ids, session_ids, types, strict=True)):
            # One dict operation per event: claims the next seq for a new id, or finds the old one.
            original = seq_by_id.setdefault(event_id, head + 1) if event_id else head + 1
            if original <= head:
                event.seq = original
                seqs.append(original)
                duplicates.add(index)
                continue
            head += 1
            event.seq = head
            frame = frame_field1(event.SerializeToString())
            entry = (head, event_id, type_, session_id, frame, now)
            entries.append(entry)
            stored.append(entry)
            added_bytes += len(frame)
            seqs.append(head)
        self._head = head
        self._bytes += added_bytes
        self._evict_over_limits()
        return Appended(seqs, duplicates, stored)

    def _append_new(
        self,
        events: Sequence[events_pb2.Event],
        ids: list[str],
        session_ids: list[str],
        types: list[str],
        seqs: list[int],
        claimed: dict[str, int],
        now: int,
    ) -> Appended:
        """The usual batch, every id new and distinct (`seqs`: theirs, `claimed`: id -> seq): each
        step is one comprehension or C call over the whole batch, not a Python loop body per event."""
        for event, seq in zip(events, seqs, strict=True):
            event.seq = seq
        datas = [event.SerializeToString() for event in events]
        prefixes = FRAME_PREFIXES
        # frame_field1 inlined: a function call per event makes this step a third slower.
        frames = [(prefixes[len(data)] if len(data) < 16384 else frame_prefix(len(data))) + data for data in datas]
        # Events of one session share its id string instead of each holding a copy of it (a
        # bounded table: sys.intern would keep every session id ever seen on Python 3.12).
        known = self._session_ids
        if len(known) > MAX_SHARED_SESSION_IDS:
            known.clear()
        shared = map(known.setdefault, session_ids, session_ids)
        stored = list(zip(seqs, ids, types, shared, frames, itertools.repeat(now)))
        self._seq_by_id.update(claimed)
        self._entries.extend(stored)
        if seqs:
            self._head = seqs[-1]
        self._bytes += sum(map(len, frames))
        self._evict_over_limits()
        return Appended(seqs, set(), stored)

    def restore(self, entry: Entry) -> None:
        """Put back an entry read from durable storage (recovery); seqs must keep increasing."""
        seq = entry[SEQ]
        if seq <= self._head:
            raise ValueError(f"seq {seq} is not after the head {self._head}")
        if seq != self._head + 1 and self.retained_events:
            # A hole inside durable storage: drop what came before so the window stays contiguous.
            self._evict(self.retained_events)
        self._head = seq
        self._entries.append(entry)
        self._bytes += len(entry[FRAME])
        if entry[ID]:
            self._seq_by_id[entry[ID]] = seq
        self._evict_over_limits()

    def _evict_over_limits(self) -> None:
        excess = 0
        entries = self._entries
        over_count = len(entries) - self._start - self.max_events
        over_bytes = self._bytes - self.max_bytes
        while over_count > excess or over_bytes > 0:
            over_bytes -= len(entries[self._start + excess][FRAME])
            excess += 1
        if excess:
            self._evict(excess)

    def _evict(self, count: int) -> None:
        entries = self._entries
        seq_by_id = self._seq_by_id
        for entry in entries[self._start : self._start + count]:
            self._bytes -= len(entry[FRAME])
            event_id = entry[ID]
            if event_id and seq_by_id.get(event_id) == entry[SEQ]:
                del seq_by_id[event_id]
        self._start += count
        if self._start > 1024 and self._start * 2 > len(entries):
            del entries[: self._start]
            self._start = 0

    # -- reading --------------------------------------------------------------------------------

    def seq_of(self, event_id: str) -> int | None:
        """The seq of a retained event id, or None."""
        return self._seq_by_id.get(event_id)

    def gap_after(self, after_seq: int) -> GapInfo | None:
        """The events a replay after `after_seq` can no longer deliver, or None when it is whole."""
        return gap_between(after_seq, self.first_retained_seq)

    def read_after(self, after_seq: int, limit: int) -> list[Entry]:
        """Up to `limit` retained entries with seq > after_seq, in seq order."""
        first = self.first_retained_seq
        begin = self._start + max(0, after_seq + 1 - first)
        return self._entries[begin : begin + max(0, limit)]

    def __iter__(self) -> Iterator[StoredEvent]:
        return (StoredEvent.from_entry(e) for e in self._entries[self._start :])
