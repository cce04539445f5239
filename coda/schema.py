"""The event type system: dotted type names derived mechanically from the `Event.payload` oneof.

The rule (documented in protos/coda/v1/events.proto): a payload field's first underscore becomes
a dot, so `llm_token` is `llm.token` and `voice_stt_partial` is `voice.stt_partial`.
"""

from __future__ import annotations

import re
import time
import uuid

from google.protobuf.message import Message

from coda.v1 import events_pb2

Event = events_pb2.Event

_PAYLOAD = Event.DESCRIPTOR.oneofs_by_name["payload"]


def type_name_of_field(field_name: str) -> str:
    family, _, kind = field_name.partition("_")
    return f"{family}.{kind}"


#: payload field name -> dotted type name, in schema order.
TYPE_BY_FIELD: dict[str, str] = {f.name: type_name_of_field(f.name) for f in _PAYLOAD.fields}
#: dotted type name -> payload field name.
FIELD_BY_TYPE: dict[str, str] = {t: f for f, t in TYPE_BY_FIELD.items()}
#: payload message full name (e.g. "coda.v1.LlmToken") -> payload field name.
FIELD_BY_MESSAGE: dict[str, str] = {f.message_type.full_name: f.name for f in _PAYLOAD.fields if f.message_type}
#: every dotted type name.
EVENT_TYPES: tuple[str, ...] = tuple(TYPE_BY_FIELD.values())
#: every family ("llm", "voice", ...).
FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(t.split(".", 1)[0] for t in EVENT_TYPES))


def event_type(event: events_pb2.Event) -> str:
    """The dotted type of an event, or "" when it has no payload."""
    field = event.WhichOneof("payload")
    return TYPE_BY_FIELD[field] if field else ""


def new_event_id() -> str:
    return uuid.uuid4().hex


def new_event(
    source: str,
    payload: Message,
    *,
    session_id: str = "",
    correlation_id: str = "",
    event_id: str = "",
    time_ns: int | None = None,
) -> events_pb2.Event:
    """Build an Event around a payload message (e.g. `LlmToken`), with a fresh id and time."""
    field = FIELD_BY_MESSAGE.get(payload.DESCRIPTOR.full_name)
    if field is None:
        raise TypeError(f"{payload.DESCRIPTOR.full_name} is not an Event payload")
    event = events_pb2.Event(
        id=event_id or new_event_id(),
        source=source,
        session_id=session_id,
        correlation_id=correlation_id,
    )
    event.time.FromNanoseconds(time.time_ns() if time_ns is None else time_ns)
    getattr(event, field).CopyFrom(payload)
    return event


MAX_SESSION_ID_CHARS = 128
#: Session ids travel in URLs, logs, file keys and NATS subjects: a safe, printable alphabet. The one
#: rule for them everywhere: the bus refuses events, and the assistant sessions, that break it.
SESSION_ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def session_id_problem(session_id: str) -> str | None:
    """Why `session_id` is not acceptable, or None ("" is: no session)."""
    if not session_id:
        return None
    if len(session_id) > MAX_SESSION_ID_CHARS:
        return f"session_id is {len(session_id)} characters; at most {MAX_SESSION_ID_CHARS} allowed"
    if not SESSION_ID_PATTERN.fullmatch(session_id):
        return f"session_id {session_id[:40]!r} has characters outside [A-Za-z0-9._:-]"
    return None
