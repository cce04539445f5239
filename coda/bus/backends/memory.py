"""The embedded default: the log in process memory, lost on restart (a new epoch at every start)."""

from __future__ import annotations

from collections.abc import Sequence

from coda.bus.backends.base import LogBackend, new_epoch
from coda.bus.filters import EventFilter
from coda.bus.log import Appended, Entry, EventLog, Headers, LogStats
from coda.v1 import events_pb2


class MemoryBackend(LogBackend):
    name = "memory"

    def __init__(self, max_events: int, max_bytes: int) -> None:
        super().__init__()
        self.log = EventLog(max_events, max_bytes)
        self.epoch = new_epoch()

    async def append(self, events: Sequence[events_pb2.Event], headers: Headers | None = None) -> Appended:
        return self.append_now(events, headers)

    def append_now(self, events: Sequence[events_pb2.Event], headers: Headers | None = None) -> Appended:
        results = self.log.append_many(events, headers=headers)
        self._notify(results.stored)
        return results

    async def read_after(self, after_seq: int, limit: int, event_filter: EventFilter | None = None) -> list[Entry]:
        return self.log.read_after(after_seq, limit)

    @property
    def head_seq(self) -> int:
        return self.log.head_seq

    @property
    def first_retained_seq(self) -> int:
        return self.log.first_retained_seq

    def stats(self) -> LogStats:
        return self.log.stats()
