"""A turn's clock: named marks relative to the turn's start, turned into TurnTimings and trace spans (pure)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping

from coda.v1 import events_pb2

Clock = Callable[[], float]


class TurnClock:
    """Millisecond marks of one turn. `started` is when the user's input was complete: a typed turn's
    arrival, or the end of speech of a spoken one; stt is measured from there to the final transcript."""

    def __init__(self, clock: Clock = time.perf_counter, wall: Callable[[], int] = time.time_ns) -> None:
        self._clock = clock
        self._wall = wall
        self._offset_ns = wall() - int(clock() * 1e9)
        self.started = clock()
        self.root_span_id = uuid.uuid4().hex[:16]
        self.marks: dict[str, float] = {}

    def restart(self, at: float | None = None) -> None:
        self.started = self._clock() if at is None else at

    def now(self) -> float:
        return self._clock()

    def since_start_ms(self, at: float | None = None) -> float:
        return max(0.0, ((self._clock() if at is None else at) - self.started) * 1000.0)

    def mark_once(self, name: str, at: float | None = None) -> bool:
        """Record a mark the first time only; True when this call recorded it."""
        if name in self.marks:
            return False
        self.marks[name] = self.since_start_ms(at)
        return True

    def timings(self) -> events_pb2.TurnTimings:
        return events_pb2.TurnTimings(
            stt_ms=self.marks.get("stt", 0.0),
            memory_ms=self.marks.get("memory", 0.0),
            first_token_ms=self.marks.get("first_token", 0.0),
            first_audio_ms=self.marks.get("first_audio", 0.0),
            total_ms=self.marks.get("total", 0.0),
        )

    def span(
        self, name: str, began: float, ended: float | None = None, attributes: Mapping[str, str] | None = None
    ) -> events_pb2.TraceSpan:
        """A trace span from `began` to `ended` (clock readings); the root span is the whole turn."""
        ended = self._clock() if ended is None else ended
        span = events_pb2.TraceSpan(
            name=name,
            span_id=self.root_span_id if name == "total" else uuid.uuid4().hex[:16],
            parent_span_id="" if name == "total" else self.root_span_id,
            duration_ms=max(0.0, (ended - began) * 1000.0),
            attributes=dict(attributes or {}),
        )
        span.start.FromNanoseconds(self._offset_ns + int(began * 1e9))
        return span
