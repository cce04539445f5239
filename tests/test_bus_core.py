"""The bus's pure core: the log (seq, retention, replay, idempotency, gaps), filters, validation,
fan-out queues and the hand-encoded wire parts."""

from __future__ import annotations

import fnmatch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coda.bus.acks import AckMerger, encode_ack_messages, encode_acks
from coda.bus.backends.file import decode_records, encode_record
from coda.bus.fanout import Fanout, Pacer, Segment, Subscription
from coda.bus.filters import EventFilter, FilterError, compile_types
from coda.bus.log import (
    FRAME,
    SEQ,
    SESSION_ID,
    EventLog,
    Headers,
    StoredEvent,
    make_entry,
)
from coda.bus.validation import BatchValidator, event_problem
from coda.schema import EVENT_TYPES, FIELD_BY_TYPE, new_event
from coda.v1 import bus_pb2, events_pb2
from coda.wire import encode_varint, frame_field1, frame_payload

SESSIONS = ["", "s1", "s2"]


def read(log: EventLog, after_seq: int, limit: int) -> list[StoredEvent]:
    return [StoredEvent.from_entry(entry) for entry in log.read_after(after_seq, limit)]


def make_event(type_name: str, session: str = "", event_id: str = "", text: str = "") -> events_pb2.Event:
    event = events_pb2.Event(id=event_id or f"id-{text}-{type_name}", source="test", session_id=session)
    payload = getattr(event, FIELD_BY_TYPE[type_name])
    payload.SetInParent()
    if type_name == "system.error":
        payload.message = text
    return event


publishes = st.lists(
    st.tuples(
        st.sampled_from(EVENT_TYPES[:12]),
        st.sampled_from(SESSIONS),
        st.integers(min_value=0, max_value=40),  # id: small range so retries (duplicates) happen
        st.text(max_size=30),
    ),
    max_size=120,
)


def feed(log: EventLog, items: list) -> list[tuple[int, bool, str]]:
    out = []
    for type_name, session, id_number, text in items:
        event = make_event("system.error" if text else type_name, session, f"e{id_number}", text)
        result = log.append(event)
        assert event.seq == result.seq
        out.append((result.seq, result.duplicate, event.id))
    return out


@settings(max_examples=150, deadline=None)
@given(items=publishes, max_events=st.integers(1, 50), max_bytes=st.integers(1, 3000))
def test_log_orders_retains_and_deduplicates(items: list, max_events: int, max_bytes: int) -> None:
    log = EventLog(max_events, max_bytes)
    results = feed(log, items)
    new_seqs = [seq for seq, duplicate, _ in results if not duplicate]
    # Seqs of newly stored events are 1, 2, 3, ... with no hole.
    assert new_seqs == list(range(1, len(new_seqs) + 1))
    assert log.head_seq == len(new_seqs)
    retained = read(log, 0, 10**9)
    # Retention: both bounds hold, and what is kept is the newest contiguous suffix.
    assert len(retained) <= max_events
    assert sum(len(s.frame) for s in retained) == log.retained_bytes <= max_bytes
    assert [s.seq for s in retained] == list(range(log.head_seq - len(retained) + 1, log.head_seq + 1))
    # Idempotency: an id is acked with its original seq while it is retained.
    first_seq_by_id: dict[str, int] = {}
    for seq, duplicate, event_id in results:
        if duplicate:
            assert seq == first_seq_by_id[event_id]
        else:
            first_seq_by_id[event_id] = seq
    retained_ids = [s.id for s in retained]
    assert len(retained_ids) == len(set(retained_ids)), "an id is stored twice in the window"
    for stored in retained:
        assert log.seq_of(stored.id) == stored.seq
        assert stored.event().seq == stored.seq


@settings(max_examples=150, deadline=None)
@given(items=publishes, max_events=st.integers(1, 60), after=st.integers(0, 130), limit=st.integers(1, 20))
def test_replay_and_gaps(items: list, max_events: int, after: int, limit: int) -> None:
    log = EventLog(max_events, 10**9)
    feed(log, items)
    after = min(after, log.head_seq)
    chunk = read(log, after, limit)
    first = log.first_retained_seq
    expected_start = max(after + 1, first)
    assert [s.seq for s in chunk] == list(range(expected_start, min(log.head_seq, expected_start + limit - 1) + 1))
    gap = log.gap_after(after)
    if after + 1 < first:
        assert gap is not None and gap.oldest_seq == first and gap.missed == first - 1 - after
    else:
        assert gap is None


def test_retention_by_bytes_keeps_newest_and_evicts_oversized() -> None:
    log = EventLog(1000, 500)
    for i in range(50):
        log.append(make_event("system.error", text="x" * 40 + str(i), event_id=f"a{i}"))
    assert log.retained_bytes <= 500
    assert log.read_after(0, 1000)[-1][SEQ] == 50
    huge = log.append(make_event("system.error", text="y" * 2000, event_id="huge"))
    assert huge.seq == 51 and not huge.duplicate
    assert log.retained_events == 0 and log.head_seq == 51 and log.first_retained_seq == 52
    assert log.gap_after(10) is not None
    # An evicted id is no longer a duplicate: it is stored again with a new seq.
    again = log.append(make_event("system.error", text="x", event_id="a0"))
    assert again.seq == 52 and not again.duplicate


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16383, 16384, 2**21])
def test_frame_payload_is_what_was_framed_for_every_length_size(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    frame = frame_field1(payload)
    assert bytes(frame_payload(frame)) == payload
    # A big event kept only as its frame still reads back whole (StoredEvent, file records).
    event = events_pb2.Event(id="big", system_error=events_pb2.SystemError(message="x" * size))
    log = EventLog(10, 10**8)
    log.append(event)
    assert [e.event() for e in log] == [event]


def test_stored_event_frame_concatenation_is_a_valid_batch() -> None:
    log = EventLog(10, 10**6)
    for i in range(3):
        log.append(make_event("llm.token", session="s", event_id=f"t{i}"))
    frames = b"".join(entry[FRAME] for entry in log.read_after(0, 10))
    batch = events_pb2.EventBatch.FromString(frames)
    assert [e.seq for e in batch.events] == [1, 2, 3]
    response = bus_pb2.SubscribeResponse.FromString(frame_field1(frames))
    assert [e.id for e in response.batch.events] == ["t0", "t1", "t2"]


@settings(max_examples=200, deadline=None)
@given(
    patterns=st.lists(
        st.one_of(
            st.sampled_from(EVENT_TYPES),
            st.sampled_from(sorted({t.split(".")[0] + ".*" for t in EVENT_TYPES})),
            st.sampled_from(["voice.stt_*", "*.error", "llm.t*", "*"]),
        ),
        max_size=4,
    ),
    type_name=st.sampled_from(EVENT_TYPES),
    session=st.sampled_from(SESSIONS),
    event_session=st.sampled_from(SESSIONS),
)
def test_filter_matches_like_fnmatch(patterns: list[str], type_name: str, session: str, event_session: str) -> None:
    event_filter = EventFilter(patterns, session)
    entry = StoredEvent.from_event(make_event(type_name, event_session)).entry()
    type_ok = not patterns or any(fnmatch.fnmatchcase(type_name, p) for p in patterns)
    session_ok = not session or session == event_session
    assert event_filter.matches(entry) == (type_ok and session_ok)
    assert event_filter.select([entry]) == ([entry] if type_ok and session_ok else [])


def test_filter_errors_name_the_families() -> None:
    with pytest.raises(FilterError, match="families: system, component"):
        compile_types(["nosuch.*"])
    with pytest.raises(FilterError, match="empty"):
        compile_types([""])
    assert compile_types(["*"]) is None
    assert compile_types(["llm.*"]) == frozenset(t for t in EVENT_TYPES if t.startswith("llm."))


def test_validation_reasons() -> None:
    ok = new_event("t", events_pb2.SystemError(message="hi"), session_id="abc-1:2.x_y")
    assert event_problem(ok, 1000) is None
    no_id = events_pb2.Event(system_error=events_pb2.SystemError())
    assert "no id" in (event_problem(no_id, 1000) or "")
    no_payload = events_pb2.Event(id="x")
    assert "no payload" in (event_problem(no_payload, 1000) or "")
    big = new_event("t", events_pb2.SystemError(message="x" * 2000))
    assert "bytes" in (event_problem(big, 1000) or "")
    for bad in ["has space", "é", "x" * 129, "semi;colon", "new\nline"]:
        event = new_event("t", events_pb2.SystemError(), session_id=bad)
        assert "session_id" in (event_problem(event, 10**6) or ""), bad
    for seconds, nanos, words in [
        (253_402_300_800, 0, "outside years 1-9999"),
        (-62_135_596_801, 0, "outside years 1-9999"),
        (0, -1, "nanos=-1"),
        (0, 1_000_000_000, "nanos=1000000000"),
    ]:
        event = new_event("t", events_pb2.SystemError())
        event.time.seconds, event.time.nanos = seconds, nanos
        assert words in (event_problem(event, 1000) or ""), (seconds, nanos)
        # The fast path of a whole request finds it too.
        batch = [new_event("t", events_pb2.SystemError()), event]
        assert list(BatchValidator(1000).problems(batch, Headers.of(batch), request_bytes=100)) == [1]
    edge = new_event("t", events_pb2.SystemError())
    edge.time.seconds, edge.time.nanos = 253_402_300_799, 999_999_999
    assert event_problem(edge, 1000) is None


@settings(max_examples=100, deadline=None)
@given(items=publishes, max_events=st.integers(1, 50), max_bytes=st.integers(1, 3000), chunk=st.integers(1, 9))
def test_append_many_matches_one_at_a_time(items: list, max_events: int, max_bytes: int, chunk: int) -> None:
    """Batched append (the publish hot path) gives the same seqs, duplicates and window."""
    one_by_one = EventLog(max_events, max_bytes)
    expected = feed(one_by_one, items)
    batched = EventLog(max_events, max_bytes)
    events = [
        make_event("system.error" if text else type_name, session, f"e{id_number}", text)
        for type_name, session, id_number, text in items
    ]
    got = []
    for start in range(0, len(events), chunk):
        part = events[start : start + chunk]
        appended = batched.append_many(part)
        assert [e.seq for e in part] == appended.seqs
        assert [entry[SEQ] for entry in appended.stored] == [
            seq for i, seq in enumerate(appended.seqs) if i not in appended.duplicates
        ]
        got += [
            (seq, i in appended.duplicates, e.id) for i, (e, seq) in enumerate(zip(part, appended.seqs, strict=True))
        ]
    # Eviction runs once per batch, so a retry whose original a one-at-a-time log had just evicted
    # may still be recognised; everything else is identical.
    if chunk == 1:
        assert got == expected
    assert [seq for seq, dup, _ in got if not dup] == list(range(1, batched.head_seq + 1))
    assert batched.retained_events <= max_events and batched.retained_bytes <= max_bytes
    assert [e.data for e in batched] == [e.data for e in read(batched, 0, 10**9)]


def test_a_batch_of_new_ids_and_a_batch_with_a_retry_store_the_same_entries() -> None:
    """A batch whose ids are all new takes the whole-batch path, one with a retry the per-event
    one; both store exactly what `make_entry` makes of the event with its seq set."""

    def batch(ids: list[str]) -> list[events_pb2.Event]:
        return [
            new_event("t", events_pb2.LlmToken(text=f"x{i}", index=i), session_id=f"s{i % 2}", event_id=event_id)
            for i, event_id in enumerate(ids)
        ]

    log = EventLog(100, 10**6)
    fresh = log.append_many(batch(["a", "b", "c"]), appended_ns=7)
    mixed_events = batch(["d", "b", "e", "e"])  # "b" is a retry, the second "e" one within the batch
    mixed = log.append_many(mixed_events, appended_ns=8)
    assert (fresh.seqs, fresh.duplicates) == ([1, 2, 3], set())
    assert (mixed.seqs, mixed.duplicates) == ([4, 2, 5, 5], {1, 3})
    for appended, ns in ((fresh, 7), (mixed, 8)):
        for entry in appended.stored:
            event = events_pb2.Event.FromString(frame_payload(entry[FRAME]))
            assert event.seq == entry[SEQ]
            assert entry == make_entry(
                entry[SEQ], event.id, "llm.token", event.session_id, event.SerializeToString(), ns
            )
    assert [e.seq for e in mixed_events] == mixed.seqs
    # Entries of one session hold one string between them, not a copy each.
    assert fresh.stored[0][SESSION_ID] is fresh.stored[2][SESSION_ID] == "s0"
    assert log.seq_of("e") == 5 and log.head_seq == 5 and log.retained_events == 5


def test_batch_validator_agrees_with_event_problem() -> None:
    validator = BatchValidator(max_event_bytes=1000, max_known_sessions=3)
    events = [
        new_event("t", events_pb2.SystemError(message="hi"), session_id="s-1"),
        events_pb2.Event(system_error=events_pb2.SystemError()),
        new_event("t", events_pb2.SystemError(message="x" * 2000)),
        new_event("t", events_pb2.SystemError(), session_id="has space"),
        events_pb2.Event(id="x"),
        new_event("t", events_pb2.SystemError(), session_id="s-2"),
        new_event("t", events_pb2.SystemError(), session_id="s-3"),
        new_event("t", events_pb2.SystemError(), session_id="s-1"),
        new_event("t", events_pb2.SystemError(), event_id="i" * 129),
    ]
    expected = {i: p for i, e in enumerate(events) if (p := event_problem(e, 1000)) is not None}
    assert sorted(expected) == [1, 2, 3, 4, 8]
    for _ in range(2):  # the second pass runs with the remembered sessions
        assert validator.problems(events, Headers.of(events)) == expected
    # A request within the per-event limit skips the size check; the other checks still apply.
    small = [e for i, e in enumerate(events) if i != 2]
    assert set(validator.problems(small, Headers.of(small), request_bytes=500).values()) == {
        p for i, p in expected.items() if i != 2
    }


@given(st.lists(st.binary(max_size=300), max_size=20), st.integers(0, 400))
def test_file_records_recover_up_to_a_torn_tail(records: list[bytes], cut: int) -> None:
    blob = b"".join(encode_record(r) for r in records)
    decoded, valid = decode_records(blob)
    assert decoded == records and valid == len(blob)
    torn = blob[: max(0, len(blob) - cut)]
    decoded, valid = decode_records(torn)
    assert decoded == records[: len(decoded)]
    assert valid == sum(len(encode_record(r)) for r in decoded)
    assert len(torn) - valid < len(encode_record(records[len(decoded)])) if len(decoded) < len(records) else True


def test_retained_entries_leave_the_garbage_collectors_tracking() -> None:
    """A full collection must not walk every retained event (a pause of the whole bus)."""
    import gc

    log = EventLog(1000, 1 << 20)
    log.append_many([make_event("llm.token", "s1", f"gc-{i}") for i in range(100)])
    gc.collect()
    assert not any(gc.is_tracked(entry) for entry in log._entries)
    assert [e.seq for e in log] == list(range(1, 101))  # still read back as StoredEvents


# --- fan-out: segments, batches, cut-off


def _stored_batches(count: int, start: int = 0) -> list[StoredEvent]:
    log = EventLog(10_000, 1 << 24)
    log.append_many([make_event("llm.token", SESSIONS[i % 3], f"f-{start + i}") for i in range(start + count)])
    return read(log, start, count)


class FakeClock:
    """A clock the test moves, and the release times a pacer asked for."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now
        self.scheduled: list[float] = []

    def __call__(self) -> float:
        return self.now

    def schedule(self, when: float) -> None:
        self.scheduled.append(when)


def pacer(period: float = 0.0, clock: FakeClock | None = None) -> Pacer:
    clock = clock or FakeClock()
    return Pacer(period, clock.schedule, clock)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=8), st.integers(1, 50))
def test_subscription_batches_are_the_queued_events_in_order(sizes: list[int], limit: int) -> None:
    entries = _stored_batches(sum(sizes))
    subscription = Subscription(EventFilter(["*"]), max_queue=10_000, batch_max_events=limit, pacer=pacer())
    offset = 0
    for size in sizes:
        subscription.offer(Segment.of([e.entry() for e in entries[offset : offset + size]]), now=0.0)
        offset += size
    received: list[events_pb2.Event] = []
    while subscription.queued:
        assert subscription.ready.is_set()  # unpaced: whatever is queued may go
        batch = subscription.take(limit)
        subscription.sent(now=0.0)
        events = bus_pb2.SubscribeResponse.FromString(batch.message).batch.events
        assert len(events) == batch.event_count <= limit
        assert events[-1].seq == batch.last_seq
        received.extend(events)
    assert [e.seq for e in received] == [e.seq for e in entries]
    assert [e.SerializeToString() for e in received] == [e.data for e in entries]
    assert not subscription.ready.is_set()


def test_fanout_shares_one_segment_per_filter_and_cuts_off_the_overflowing() -> None:
    shared_pacer = pacer()
    fanout = Fanout(shared_pacer)
    everything = [Subscription(EventFilter(["*"]), 100, 10, shared_pacer) for _ in range(3)]
    session = Subscription(EventFilter([], "s1"), 100, 10, shared_pacer)
    same_session = Subscription(EventFilter(["*"], "s1"), 100, 10, shared_pacer)
    tiny = Subscription(EventFilter(["*"]), 5, 10, shared_pacer)
    for subscription in [*everything, session, same_session, tiny]:
        fanout.add(subscription)
    fanout.deliver([e.entry() for e in _stored_batches(9)])
    shared = {id(s._segments[0]) for s in everything}
    assert len(shared) == 1  # encoded once for all `*` subscribers
    assert session._segments[0] is same_session._segments[0]  # same events admitted: shared too
    assert session.queued == 3 and everything[0].queued == 9 and everything[0].ready.is_set()
    assert tiny.cut_off and tiny.queued == 0 and tiny.ready.is_set()
    message = session.take(10).message
    assert [e.session_id for e in bus_pb2.SubscribeResponse.FromString(message).batch.events] == ["s1"] * 3
    fanout.deliver([e.entry() for e in _stored_batches(2, start=9)])
    assert tiny.queued == 0  # a cut-off subscriber gets nothing more
    assert everything[0].queued == 11
    tiny.sent(0.0)  # a write that was under way when it was cut off ends: the stream ends next
    assert tiny.ready.is_set()


def test_pacer_sends_a_lone_event_at_once_then_one_batch_per_tick_for_everyone_together() -> None:
    clock = FakeClock(now=100.0)
    shared_pacer = pacer(period=0.002, clock=clock)
    fanout = Fanout(shared_pacer)
    subscribers = [Subscription(EventFilter(["*"]), 1000, 5, shared_pacer) for _ in range(3)]
    for subscription in subscribers:
        fanout.add(subscription)
    stored = [e.entry() for e in _stored_batches(20)]

    fanout.deliver(stored[0:1])  # after a quiet spell: goes at once, nothing scheduled
    assert all(s.ready.is_set() for s in subscribers) and clock.scheduled == []
    clock.now = 100.0005
    for subscription in subscribers:
        subscription.take(5)
        subscription.sent(clock.now)
        assert not subscription.ready.is_set()
        assert subscription.next_send_at == pytest.approx(100.002)  # the next tick of the shared clock

    clock.now = 100.001
    fanout.deliver(stored[1:3])  # within the interval: held for the tick, one release for all
    assert not any(s.ready.is_set() for s in subscribers)
    assert clock.scheduled == [pytest.approx(100.002)] and shared_pacer.held == 3
    fanout.deliver(stored[3:6])  # five queued = a full batch: goes without waiting
    assert all(s.ready.is_set() for s in subscribers)
    for subscription in subscribers:
        assert subscription.take(5).event_count == 5
        subscription.sent(clock.now)
    fanout.deliver(stored[6:7])
    assert not any(s.ready.is_set() for s in subscribers)

    clock.now = 100.0024  # the timer fires (late, as timers do): everyone held is released at once
    shared_pacer.release()
    assert all(s.ready.is_set() for s in subscribers) and shared_pacer.held == 0
    assert len(clock.scheduled) == 1  # nothing left to release: no timer


def test_pacer_intervals_start_when_a_write_ends_and_closing_drains_unpaced() -> None:
    clock = FakeClock(now=10.0)
    shared_pacer = pacer(period=0.001, clock=clock)
    fanout = Fanout(shared_pacer)
    slow, closing = (Subscription(EventFilter(["*"]), 1000, 100, shared_pacer) for _ in range(2))
    fanout.add(slow)
    fanout.add(closing)
    stored = [e.entry() for e in _stored_batches(6)]
    fanout.deliver(stored[0:1])
    slow.take(100)
    fanout.deliver(stored[1:2])  # arrives while the write is under way
    clock.now = 10.0057  # the write took 5.7 ms (a loaded machine): the next batch waits for the tick after
    slow.sent(clock.now)
    assert not slow.ready.is_set() and slow.next_send_at == pytest.approx(10.006)

    closing.take(100)
    closing.sent(clock.now)
    fanout.deliver(stored[2:4])
    fanout.remove(slow)  # a subscriber that left is not released
    assert shared_pacer.held == 1 and not closing.ready.is_set()
    fanout.close()  # the bus stops: queued events go now, batch after batch, then the stream ends
    assert closing.ready.is_set()
    closing.take(1)
    closing.sent(clock.now)
    assert closing.ready.is_set()
    closing.take(100)
    closing.sent(clock.now)
    assert closing.queued == 0 and closing.ready.is_set()


def test_unpaced_subscribers_never_wait() -> None:
    clock = FakeClock()
    unpaced = pacer(period=0.0, clock=clock)
    subscription = Subscription(EventFilter(["*"]), 1000, 100, unpaced)
    stored = [e.entry() for e in _stored_batches(3)]
    for entry in stored:
        subscription.offer(Segment.of([entry]), clock.now)
        assert subscription.ready.is_set()
        subscription.take(100)
        subscription.sent(clock.now)
    assert clock.scheduled == [] and unpaced.held == 0


# --- publish acks


def _responses(merger: AckMerger, now: float) -> list[bus_pb2.PublishResponse]:
    out = []
    while (data := merger.take(now)) is not None:
        out.append(bus_pb2.PublishResponse.FromString(data))
    return out


def _acks_of(request: int, count: int = 2) -> bytes:
    return encode_acks([f"r{request}-e{i}" for i in range(count)], [request * 10 + i for i in range(count)])


def test_acks_of_requests_that_do_not_merge_are_answered_one_by_one_in_order() -> None:
    merger = AckMerger(max_delay=0.005, max_requests=8)
    for request in range(3):
        assert merger.add(_acks_of(request), merge=False, now=0.0)
    responses = _responses(merger, now=0.0)
    assert [r.requests for r in responses] == [1, 1, 1]
    assert [[a.id for a in r.acks] for r in responses] == [[f"r{n}-e0", f"r{n}-e1"] for n in range(3)]
    assert merger.requests == 0 and not merger


def test_merged_acks_wait_for_the_deadline_or_a_full_run_and_keep_their_order() -> None:
    merger = AckMerger(max_delay=0.005, max_requests=3)
    assert merger.add(_acks_of(0), merge=True, now=1.0)  # opens a run: the writer sets a timer
    assert not merger.add(_acks_of(1), merge=True, now=1.001)
    assert merger.take(now=1.004) is None and merger.deadline() == pytest.approx(1.005)
    [response] = _responses(merger, now=1.005)
    assert response.requests == 2 and [a.seq for a in response.acks] == [0, 1, 10, 11]
    assert [a.index for a in response.acks] == [0, 1, 0, 1]  # positions within their own request

    merger.add(_acks_of(2), merge=True, now=2.0)
    merger.add(_acks_of(3), merge=True, now=2.0)
    assert merger.add(_acks_of(4), merge=True, now=2.0)  # the third fills the run: due at once
    merger.add(_acks_of(5), merge=False, now=2.0)  # answered alone, after the run
    merger.add(_acks_of(6), merge=True, now=2.0)
    assert [r.requests for r in _responses(merger, now=2.0)] == [3, 1]
    assert merger.requests == 1
    merger.seal()  # the stream ends: what is held goes now
    [last] = _responses(merger, now=2.0)
    assert last.requests == 1 and last.acks[0].id == "r6-e0" and not merger

    merger.add(_acks_of(7), merge=True, now=3.0)
    merger.add(_acks_of(8), merge=True, now=3.0)
    merger.add(_acks_of(9), merge=False, now=3.0)  # wants its acks now: the run before it goes too
    assert [r.requests for r in _responses(merger, now=3.0)] == [2, 1]


def test_refusals_and_duplicates_merge_like_any_ack() -> None:
    merger = AckMerger(max_delay=0.005, max_requests=8)
    refused = encode_ack_messages([bus_pb2.PublishAck(id="bad", error="event has no payload", index=0)])
    merger.add(refused, merge=True, now=0.0)
    merger.add(_acks_of(1, count=1), merge=True, now=0.0)
    [response] = _responses(merger, now=1.0)
    assert [(a.id, a.error) for a in response.acks] == [("bad", "event has no payload"), ("r1-e0", "")]
    assert response.requests == 2


def test_compact_answers_merge_into_first_seqs_and_a_full_answer_starts_a_new_run() -> None:
    merger = AckMerger(max_delay=0.005, max_requests=8)
    merger.add(101, merge=True, now=0.0)
    merger.add(140, merge=True, now=0.0)
    merger.add(_acks_of(2), merge=True, now=0.0)  # a request with a refusal: answered in full
    merger.add(300, merge=True, now=0.0)
    compact, full = _responses(merger, now=0.0)  # the full answer sealed the compact run before it
    assert (list(compact.first_seqs), compact.requests, list(compact.acks)) == ([101, 140], 2, [])
    assert full.requests == 1 and [a.seq for a in full.acks] == [20, 21] and not full.first_seqs
    assert merger.take(now=0.004) is None
    [last] = _responses(merger, now=0.005)
    assert list(last.first_seqs) == [300] and last.requests == 1
    big = 2**40 + 3  # seqs of any size encode as protobuf does
    merger.add(big, merge=False, now=1.0)
    assert _responses(merger, now=1.0)[0].first_seqs == [big]


def test_a_zero_delay_never_merges() -> None:
    merger = AckMerger(max_delay=0.0, max_requests=8)
    for request in range(2):
        merger.add(_acks_of(request), merge=True, now=0.0)
    assert [r.requests for r in _responses(merger, now=0.0)] == [1, 1]


@given(
    st.lists(
        st.tuples(st.text(min_size=1, max_size=130), st.integers(1, 2**64 - 1)),  # stored: id and seq set
        max_size=40,
    )
)
def test_hand_encoded_acks_and_varints_match_protobuf(acks: list[tuple[str, int]]) -> None:
    ids = [event_id for event_id, _ in acks]
    seqs = [seq for _, seq in acks]
    expected = bus_pb2.PublishResponse(
        acks=[bus_pb2.PublishAck(id=i, seq=s, index=n) for n, (i, s) in enumerate(acks)]
    ).SerializeToString()
    assert encode_acks(ids, seqs) == expected
    for seq in seqs:
        assert encode_varint(seq) == events_pb2.Gap(missed=seq).SerializeToString()[1:]
