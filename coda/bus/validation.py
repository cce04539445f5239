"""Why a published event is refused, as a readable reason (None: acceptable). No I/O."""

from __future__ import annotations

from collections.abc import Sequence

from google.protobuf.unknown_fields import UnknownFieldSet

from coda.bus.log import Headers
from coda.schema import session_id_problem
from coda.v1 import events_pb2

MAX_EVENT_ID_CHARS = 128
#: The range of a valid google.protobuf.Timestamp (0001-01-01 to 9999-12-31, nanos below a
#: second). An Event.time outside it cannot be written as JSON (or as a date): accepted, it
#: would reach every subscriber and the bridge, which could not encode it.
MIN_TIMESTAMP_SECONDS = -62_135_596_800
MAX_TIMESTAMP_SECONDS = 253_402_300_799
MAX_NANOS = 999_999_999


def time_problem(event: events_pb2.Event) -> str | None:
    """The reason `event.time` is not a valid Timestamp, or None."""
    time = event.time
    if not MIN_TIMESTAMP_SECONDS <= time.seconds <= MAX_TIMESTAMP_SECONDS:
        return (
            f"event time has seconds={time.seconds}, outside years 1-9999 "
            f"([{MIN_TIMESTAMP_SECONDS}, {MAX_TIMESTAMP_SECONDS}], google.protobuf.Timestamp)"
        )
    if not 0 <= time.nanos <= MAX_NANOS:
        return f"event time has nanos={time.nanos}; a Timestamp's nanos are in [0, {MAX_NANOS}]"
    return None


def event_problem(event: events_pb2.Event, max_event_bytes: int) -> str | None:
    """The reason `event` cannot be published, or None."""
    if not event.id:
        return "event has no id (set Event.id; coda.schema.new_event does)"
    if len(event.id) > MAX_EVENT_ID_CHARS:
        return f"event id is {len(event.id)} characters; at most {MAX_EVENT_ID_CHARS} allowed"
    if event.WhichOneof("payload") is None:
        # types-protobuf declares UnknownFieldSet without its iteration.
        unknown = sorted({field.field_number for field in UnknownFieldSet(event)})  # type: ignore[attr-defined]
        if unknown:
            return (
                f"event payload is of a type this bus does not know (Event field {', '.join(map(str, unknown))}); "
                "is the publisher built from a newer schema than the bus?"
            )
        return "event has no payload (set one case of Event.payload)"
    problem = time_problem(event)
    if problem is not None:
        return problem
    size = event.ByteSize()
    if size > max_event_bytes:
        return f"event is {size} bytes; bus.max_event_bytes is {max_event_bytes}"
    if event.session_id:
        return session_id_problem(event.session_id)
    return None


class BatchValidator:
    """`event_problem` over a whole publish request, cheap when every event is fine (the usual case).

    Session ids already found valid are remembered (bounded), and the size check is skipped when
    the whole request is within the per-event limit.
    """

    def __init__(self, max_event_bytes: int, max_known_sessions: int = 4096) -> None:
        self.max_event_bytes = max_event_bytes
        self.max_known_sessions = max_known_sessions
        self._known_sessions: set[str] = {""}

    def problems(
        self, events: Sequence[events_pb2.Event], headers: Headers, request_bytes: int | None = None
    ) -> dict[int, str]:
        """{batch position: reason} for each refused event; empty when all are acceptable.

        `headers` are the events' own (`Headers.of(events)`). The usual request, all valid, is
        passed by a handful of whole-list checks that run in C; only a request with a suspect
        event is looked at event by event.
        """
        max_bytes = self.max_event_bytes
        check_size = request_bytes is None or request_bytes > max_bytes
        known = self._known_sessions
        ids, session_ids, types = headers
        if (
            "" not in types
            and "" not in ids
            and max(map(len, ids), default=0) <= MAX_EVENT_ID_CHARS
            and known.issuperset(session_ids)
            and _times_valid(events)
            and not (check_size and max((e.ByteSize() for e in events), default=0) > max_bytes)
        ):
            return {}
        found: dict[int, str] = {}
        for index, event in enumerate(events):
            problem = event_problem(event, max_bytes)
            if problem is None:
                if len(known) >= self.max_known_sessions:
                    known.clear()
                    known.add("")
                known.add(session_ids[index])
            else:
                found[index] = problem
        return found


def _times_valid(events: Sequence[events_pb2.Event]) -> bool:
    """Every event's time is a valid Timestamp. Reading the `time` submessage is most of what this
    costs (about a quarter of the validate-and-append core per event); an early-exit loop is as
    cheap as any whole-list form of it."""
    low, high, max_nanos = MIN_TIMESTAMP_SECONDS, MAX_TIMESTAMP_SECONDS, MAX_NANOS
    for event in events:
        time = event.time
        if not (low <= time.seconds <= high and 0 <= time.nanos <= max_nanos):
            return False
    return True
