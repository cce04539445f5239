"""Server-sent events decoding (the `text/event-stream` format), fed with bytes as they arrive.

Follows the WHATWG rules that matter for model servers: lines end with LF, CRLF or CR; a blank
line dispatches the event; `data:` lines of one event are joined with LF; lines starting with `:`
are comments (keep-alives); one optional space after the colon is dropped. Bytes may be split
anywhere, including inside a multi-byte character or between CR and LF.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass


@dataclass(frozen=True)
class SseEvent:
    data: str
    event: str = "message"
    id: str = ""


class SseDecoder:
    def __init__(self) -> None:
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._data: list[str] = []
        self._event = ""
        self._id = ""
        # A CR at the very end of a feed may be the first half of CRLF.
        self._pending_cr = False

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """Decode more bytes; returns the events completed by them."""
        text = self._text.decode(chunk)
        if self._pending_cr and text.startswith("\n"):
            text = text[1:]
        self._pending_cr = False
        self._buffer += text
        events: list[SseEvent] = []
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                break
            line, ending = self._buffer[:cut], self._buffer[cut]
            rest = self._buffer[cut + 1 :]
            if ending == "\r":
                if rest.startswith("\n"):
                    rest = rest[1:]
                elif not rest:
                    self._pending_cr = True
            self._buffer = rest
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def close(self) -> list[SseEvent]:
        """End of stream: an event without its final blank line is dropped, as the spec says."""
        self._buffer = ""
        self._data = []
        return []

    def _line(self, line: str) -> SseEvent | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = SseEvent("\n".join(self._data), self._event or "message", self._id)
            self._data, self._event = [], ""
            return event
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None


def _line_end(text: str) -> int | None:
    lf, cr = text.find("\n"), text.find("\r")
    ends = [i for i in (lf, cr) if i >= 0]
    return min(ends) if ends else None
