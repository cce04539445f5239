"""Protobuf wire pieces encoded by hand, for the hot paths that build messages from bytes already
serialized (the bus's batches and acks, the bridge's frames). No I/O.

A length-delimited field number 1 is how a message is one element of `repeated Event events = 1`
(EventBatch) and how a batch is the body of `SubscribeResponse.batch`: the same bytes protobuf
would produce, so concatenated frames are a valid message without re-encoding anything.
"""

from __future__ import annotations

#: Wire tag of field 1, length-delimited: `EventBatch.events`, `SubscribeResponse.batch`.
FIELD1_BYTES_TAG = b"\x0a"


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL_VARINTS = [_encode_varint(i) for i in range(1 << 14)]
#: The low 14 bits of a larger value as the first two varint bytes (continuation bits set).
_LOW_PAIRS = [bytes(((i & 0x7F) | 0x80, (i >> 7) | 0x80)) for i in range(1 << 14)]


def encode_varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative int: table lookups below 2**28 (seqs live
    there for a long time), which costs a third of building the bytes in Python."""
    if value < 16384:
        return _SMALL_VARINTS[value]
    if value < 1 << 28:
        return _LOW_PAIRS[value & 0x3FFF] + _SMALL_VARINTS[value >> 14]
    return _encode_varint(value)


def frame_prefix(size: int) -> bytes:
    """The tag and length that make `size` bytes a length-delimited field number 1."""
    return FIELD1_BYTES_TAG + encode_varint(size)


#: `frame_prefix(size)` for every size below 2**14, the sizes of nearly every event.
FRAME_PREFIXES = [frame_prefix(i) for i in range(1 << 14)]


def frame_field1(payload: bytes) -> bytes:
    """`payload` as a length-delimited field number 1."""
    size = len(payload)
    return (FRAME_PREFIXES[size] if size < 16384 else frame_prefix(size)) + payload


def frame_payload(frame: bytes) -> memoryview:
    """What `frame_field1` framed, as a view into `frame` (no copy): skips the tag and length."""
    start = 2
    while frame[start - 1] & 0x80:
        start += 1
    return memoryview(frame)[start:]
