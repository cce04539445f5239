"""Frame codec: ClientFrame from text (canonical protobuf JSON) or binary frames, ServerFrame to bytes.

Events are encoded once each (`EncodedEvent`) and an `events` frame is assembled from the encoded
pieces, so a batch sent to many groups of clients never re-serializes an event.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass

from google.protobuf import json_format, unknown_fields
from google.protobuf.message import DecodeError, Message

from coda.bus.validation import time_problem
from coda.schema import event_type
from coda.v1 import bridge_pb2, events_pb2
from coda.wire import encode_varint, frame_field1

JSON_PROTOCOL = "coda.v1.json"
PROTO_PROTOCOL = "coda.v1.proto"
PROTOCOLS = (JSON_PROTOCOL, PROTO_PROTOCOL)

log = logging.getLogger(__name__)

ErrorCode = bridge_pb2.ErrorCode
ClientFrame = bridge_pb2.ClientFrame
ServerFrame = bridge_pb2.ServerFrame

_FRAME_FIELDS = ClientFrame.DESCRIPTOR.fields
#: JSON keys a ClientFrame may have at top level (both the lowerCamel and the proto field names).
_KNOWN_KEYS = frozenset({f.json_name for f in _FRAME_FIELDS} | {f.name for f in _FRAME_FIELDS})


class FrameError(Exception):
    """A client frame that cannot be used; becomes an error frame, the connection stays open."""

    def __init__(self, code: bridge_pb2.ErrorCode.ValueType, message: str, client_frame_id: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.client_frame_id = client_frame_id

    def to_frame(self) -> bridge_pb2.ServerFrame:
        return error_frame(self.code, self.message, self.client_frame_id)


def error_frame(
    code: bridge_pb2.ErrorCode.ValueType, message: str, client_frame_id: str = ""
) -> bridge_pb2.ServerFrame:
    return ServerFrame(error=bridge_pb2.ErrorFrame(code=code, message=message, client_frame_id=client_frame_id))


def check_size(size: int, max_bytes: int) -> None:
    if max_bytes and size > max_bytes:
        raise FrameError(
            ErrorCode.ERROR_CODE_FRAME_TOO_LARGE, f"frame of {size} bytes exceeds the limit of {max_bytes}"
        )


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _encodable(data: object) -> bool:
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, RecursionError):
        return False
    return True


def decode_text(text: str, max_bytes: int = 0) -> bridge_pb2.ClientFrame:
    """A ClientFrame from canonical protobuf JSON; unknown fields are errors, not ignored."""
    if max_bytes and len(text) * 4 > max_bytes:  # a char is at most 4 bytes: short texts skip the encode
        check_size(len(text.encode("utf-8", "surrogatepass")), max_bytes)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FrameError(ErrorCode.ERROR_CODE_MALFORMED_FRAME, f"not JSON: {exc.msg} at position {exc.pos}") from None
    except RecursionError:
        raise FrameError(ErrorCode.ERROR_CODE_MALFORMED_FRAME, "not a frame: JSON nested too deeply") from None
    # A WebSocket text frame is valid UTF-8, but a JSON escape can still spell a lone surrogate
    # ("\ud800"), which no reply can encode (not even an error frame echoing the id): refuse it here.
    if _SURROGATE_ESCAPE.search(text) and not _encodable(data):
        raise FrameError(ErrorCode.ERROR_CODE_MALFORMED_FRAME, "not a frame: a string holds a lone UTF-16 surrogate")
    if not isinstance(data, dict):
        raise FrameError(ErrorCode.ERROR_CODE_MALFORMED_FRAME, f"a frame is a JSON object, got {type(data).__name__}")
    frame_id = data["id"] if isinstance(data.get("id"), str) else ""
    unknown = sorted(k for k in data if k not in _KNOWN_KEYS)
    if unknown:
        raise FrameError(
            ErrorCode.ERROR_CODE_UNKNOWN_FRAME_TYPE,
            f"unknown frame type {', '.join(map(repr, unknown))}; known: subscribe, unsubscribe, converse, ping",
            frame_id,
        )
    frame = ClientFrame()
    try:
        json_format.ParseDict(data, frame, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise FrameError(ErrorCode.ERROR_CODE_MALFORMED_FRAME, f"invalid frame: {exc}", frame_id) from None
    except RecursionError:
        raise FrameError(ErrorCode.ERROR_CODE_MALFORMED_FRAME, "invalid frame: nested too deeply", frame_id) from None
    return _require_kind(frame)


def decode_binary(data: bytes, max_bytes: int = 0) -> bridge_pb2.ClientFrame:
    """A ClientFrame from its protobuf serialization."""
    check_size(len(data), max_bytes)
    frame = ClientFrame()
    try:
        frame.ParseFromString(data)
    except DecodeError as exc:
        raise FrameError(ErrorCode.ERROR_CODE_MALFORMED_FRAME, f"not a serialized ClientFrame: {exc}") from None
    _require_kind(frame)  # no known kind: a frame type from a newer schema, reported as such
    # As on coda.v1.json: a field this bridge does not know is an error, not silently dropped.
    unknown = _unknown_field(frame)
    if unknown:
        raise FrameError(ErrorCode.ERROR_CODE_MALFORMED_FRAME, f"unknown field {unknown} in the frame", frame.id)
    return frame


def _unknown_field(message: Message, path: str = "ClientFrame") -> str:
    """The first field number the schema does not know, as "Message.field_path #N" ("" if none)."""
    # types-protobuf declares UnknownFieldSet without its iteration.
    for field in unknown_fields.UnknownFieldSet(message):  # type: ignore[attr-defined]
        return f"{path} #{field.field_number}"
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        if descriptor.message_type.GetOptions().map_entry:
            values = [v for v in value.values() if isinstance(v, Message)]
        elif descriptor.is_repeated:
            values = list(value)
        else:
            values = [value]
        for item in values:
            found = _unknown_field(item, f"{path}.{descriptor.name}")
            if found:
                return found
    return ""


def _require_kind(frame: bridge_pb2.ClientFrame) -> bridge_pb2.ClientFrame:
    if frame.WhichOneof("frame") is None:
        raise FrameError(
            ErrorCode.ERROR_CODE_UNKNOWN_FRAME_TYPE,
            "the frame has no known type; set one of subscribe, unsubscribe, converse, ping",
            frame.id,
        )
    return frame


def encode(frame: bridge_pb2.ServerFrame, protocol: str) -> str | bytes:
    """A ServerFrame as a text frame (JSON subprotocol) or a binary frame (proto subprotocol)."""
    if protocol == JSON_PROTOCOL:
        return _compact_json(json_format.MessageToDict(frame))
    return frame.SerializeToString()


def _compact_json(data: object) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


# ServerFrame.events is field 2, length-delimited (wire type 2); an event in EventBatch.events is
# a field-1 frame (coda.wire.frame_field1).
_EVENTS_FIELD_TAG = b"\x12"


def encoding_problem(event: events_pb2.Event) -> str | None:
    """Why `event` cannot be sent to clients (None: it can). A bus refuses such events; this is
    for one that let one through (an older bus): the bridge skips it rather than fail a batch."""
    return time_problem(event)


@dataclass(slots=True)
class EncodedEvent:
    """One event with its encodings made on first use and shared by every frame that carries it."""

    event: events_pb2.Event
    seq: int
    type: str
    session_id: str
    _binary: bytes | None = None
    _json: str | None = None

    @classmethod
    def of(cls, event: events_pb2.Event) -> EncodedEvent:
        return cls(event, event.seq, event_type(event), event.session_id)

    @property
    def time_ns(self) -> int:
        return self.event.time.ToNanoseconds()

    def binary(self) -> bytes:
        if self._binary is None:
            data = self.event.SerializeToString()
            self._binary = frame_field1(data)
        return self._binary

    def json(self) -> str:
        if self._json is None:
            try:
                self._json = _compact_json(json_format.MessageToDict(self.event))
            except (json_format.Error, ValueError, RecursionError) as exc:
                # Not caught by `encoding_problem`: still never fail the frame (and with it the
                # batch for every client); the event is left out of JSON frames, once logged.
                log.error("event cannot be encoded as JSON; left out", extra={"seq": self.seq, "reason": str(exc)})
                self._json = ""
        return self._json


_JSON_EVENTS_PREFIX = '{"events":{"events":['
_JSON_EVENTS_SUFFIX = "]}}"


def merge_events_frames(frames: list[str | bytes]) -> str | bytes:
    """Several `events` frames of one subprotocol as one frame carrying all their events, in order.

    Binary: concatenated protobuf messages merge, and repeated fields append, so the bytes simply
    join. JSON: the event arrays are spliced. Used by a connection's writer to catch up in one send.
    """
    if len(frames) == 1:
        return frames[0]
    if isinstance(frames[0], bytes):
        return b"".join(frames)  # type: ignore[arg-type]
    start, end = len(_JSON_EVENTS_PREFIX), -len(_JSON_EVENTS_SUFFIX)
    return _JSON_EVENTS_PREFIX + ",".join(f[start:end] for f in frames) + _JSON_EVENTS_SUFFIX  # type: ignore[misc]


def events_after(frame: str | bytes, after_seq: int) -> tuple[str | bytes, int, int] | None:
    """An `events` frame without its events of seq <= after_seq, as (frame, event count, oldest
    event time in ns); None when nothing is left. Decodes and re-encodes: for the rare frame that
    straddles a resuming client's position, never for the shared broadcast path."""
    parsed = ServerFrame()
    if isinstance(frame, bytes):
        parsed.ParseFromString(frame)
    else:
        json_format.Parse(frame, parsed)
    kept = [event for event in parsed.events.events if event.seq > after_seq]
    if not kept:
        return None
    trimmed = ServerFrame(events=events_pb2.EventBatch(events=kept))
    protocol = PROTO_PROTOCOL if isinstance(frame, bytes) else JSON_PROTOCOL
    return encode(trimmed, protocol), len(kept), kept[0].time.ToNanoseconds()


def events_frame(events: list[EncodedEvent], protocol: str) -> str | bytes:
    """`ServerFrame{events: EventBatch{events}}` from pre-encoded events, equal to encoding it whole."""
    if protocol == JSON_PROTOCOL:
        return _JSON_EVENTS_PREFIX + ",".join([j for e in events if (j := e.json())]) + _JSON_EVENTS_SUFFIX
    body = b"".join(e.binary() for e in events)
    return _EVENTS_FIELD_TAG + encode_varint(len(body)) + body
