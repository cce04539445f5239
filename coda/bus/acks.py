"""What the bus answers a publisher: acks encoded by hand, merged across requests when allowed. No I/O.

Every PublishRequest is acked, in order. A request with `merge_acks` set lets the bus hold its
acks for a few milliseconds and answer it together with the requests after it: for a publisher
that sends one event at a time (an LLM streaming tokens), that turns a gRPC message back per
event into one per few milliseconds, which on a small machine is a large part of what
publishing costs both sides. Events are stored and delivered when read, whatever happens to
their acks. A request with `compact_acks` set is answered, when all its events were stored as
new, with the seq of its first event instead of an ack per event: encoding those acks was a
quarter of what publishing a large batch cost the bus.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

from coda.v1 import bus_pb2
from coda.wire import encode_varint, frame_field1

#: Wire tags of `PublishResponse.requests` (field 2, varint) and `first_seqs` (field 3, packed).
_REQUESTS_TAG = b"\x10"
_FIRST_SEQS_TAG = b"\x1a"


def encode_acks(ids: Sequence[str], seqs: Sequence[int]) -> bytes:
    """The `PublishResponse.acks` field of a request whose events were all stored: PublishAck
    fields 1 (id), 2 (seq) and 5 (index), encoded by hand because this runs once per event."""
    parts: list[bytes] = []
    for index, (event_id, seq) in enumerate(zip(ids, seqs, strict=True)):
        id_bytes = event_id.encode()
        seq_bytes = encode_varint(seq)
        if index:
            index_bytes = encode_varint(index)
            size = 3 + len(id_bytes) + len(seq_bytes) + 1 + len(index_bytes)
            if size < 128:  # one-byte lengths: the usual ids
                parts.append(b"\n%c\n%c%b\x10%b(%b" % (size, len(id_bytes), id_bytes, seq_bytes, index_bytes))
                continue
            ack = b"\n%b%b\x10%b(%b" % (encode_varint(len(id_bytes)), id_bytes, seq_bytes, index_bytes)
        else:
            ack = b"\n%b%b\x10%b" % (encode_varint(len(id_bytes)), id_bytes, seq_bytes)
        parts.append(frame_field1(ack))
    return b"".join(parts)


def encode_ack_messages(acks: Sequence[bus_pb2.PublishAck]) -> bytes:
    """The `PublishResponse.acks` field for acks built as messages (refusals, duplicates)."""
    return b"".join([frame_field1(ack.SerializeToString()) for ack in acks])


def encode_response(ack_fields: Sequence[bytes], requests: int) -> bytes:
    """A PublishResponse from the `acks` fields of `requests` consecutive requests."""
    return b"".join([*ack_fields, _REQUESTS_TAG, encode_varint(requests)])


def encode_compact_response(first_seqs: Sequence[int]) -> bytes:
    """A PublishResponse answering one request per seq in `first_seqs` (packed field 3)."""
    packed = b"".join([encode_varint(seq) for seq in first_seqs])
    return b"".join(
        [_REQUESTS_TAG, encode_varint(len(first_seqs)), _FIRST_SEQS_TAG, encode_varint(len(packed)), packed]
    )


#: What a request is answered with: its encoded `acks` field, or (compact acks) its first seq.
Answer = bytes | int


class _Pending:
    """The answers of consecutive requests that will go out as one response (all of one form)."""

    __slots__ = ("answers", "compact", "due_at", "sealed")

    def __init__(self, answer: Answer, due_at: float, sealed: bool) -> None:
        self.answers = [answer]
        self.compact = isinstance(answer, int)
        self.due_at = due_at
        #: Takes no more requests: answered as soon as it is first in line.
        self.sealed = sealed

    def encode(self) -> bytes:
        if self.compact:
            return encode_compact_response(self.answers)  # type: ignore[arg-type]
        return encode_response(self.answers, len(self.answers))  # type: ignore[arg-type]


class AckMerger:
    """The answers to the requests a Publish stream has read but not yet answered, as responses in order.

    A request without `merge_acks` is answered on its own, at once, and so is the run before it. A
    run of requests with it is answered by one response, once its first request has waited
    `max_delay` seconds or `max_requests` requests are in it (a publisher keeping more requests in
    flight than that never waits for the timer). A response is all compact (first seqs) or all
    acks: a request of the other form starts a new run. `max_delay` 0 answers every request on
    its own.
    """

    def __init__(self, max_delay: float, max_requests: int) -> None:
        self.max_delay = max_delay
        self.max_requests = max(1, max_requests)
        self._queue: collections.deque[_Pending] = collections.deque()
        #: Requests read and not yet answered.
        self.requests = 0

    def __bool__(self) -> bool:
        return bool(self._queue)

    def add(self, answer: Answer, merge: bool, now: float) -> bool:
        """Queue one request's answer: its `acks` field, or its first seq (compact acks). True when
        the writer must look again: a response is due at once, or the first request of a merged
        run is waiting for its deadline."""
        self.requests += 1
        merge = merge and self.max_delay > 0
        last = self._queue[-1] if self._queue else None
        if merge and last is not None and not last.sealed and last.compact == isinstance(answer, int):
            last.answers.append(answer)
            if len(last.answers) >= self.max_requests:
                last.sealed = True
                return True
            return False
        if last is not None and (not merge or last.compact != isinstance(answer, int)):
            last.sealed = True  # the run before a request that cannot join it goes with it, at once
        self._queue.append(_Pending(answer, now + self.max_delay, not merge or self.max_requests == 1))
        return True

    def seal(self) -> None:
        """Everything queued is due now (the stream is ending or the bus stopping)."""
        for pending in self._queue:
            pending.sealed = True

    def deadline(self) -> float | None:
        """When the first queued response falls due; None when nothing is queued."""
        if not self._queue:
            return None
        first = self._queue[0]
        return float("-inf") if first.sealed else first.due_at

    def take(self, now: float) -> bytes | None:
        """The first queued response if it is due, encoded; else None."""
        if not self._queue:
            return None
        first = self._queue[0]
        if not first.sealed and now < first.due_at:
            return None
        self._queue.popleft()
        self.requests -= len(first.answers)
        return first.encode()
