"""The interface every bus log backend implements.

The contract that makes fan-out exact: a backend reports newly stored events to its listener in
seq order, and `head_seq` is the seq of the last event reported. The service registers a new
subscriber and reads `head_seq` with no await in between, so every later event reaches the
subscriber's queue and every earlier one comes from `read_after`: no duplicates, no holes.

Every backend names its log's incarnation, `epoch`: seqs are comparable only within one epoch.
A volatile log gets a new one at every start; a durable one keeps it as long as its seqs go on.

It is shaped for NATS JetStream too: seq is the stream sequence, an event's subject is its type
(so `read_after` may filter on the server), `append` and `read_after` are async, and a JetStream
backend would feed its listener from an ordered consumer of the stream.
"""

from __future__ import annotations

import abc
import secrets
from collections.abc import Callable, Sequence

from coda.bus.filters import EventFilter
from coda.bus.log import Appended, Entry, Headers, LogStats
from coda.v1 import events_pb2

#: Called with newly stored events, in seq order.
AppendListener = Callable[[list[Entry]], None]


def new_epoch() -> str:
    """A fresh epoch: random, so that two incarnations of a log never share one."""
    return secrets.token_hex(8)


class BackendUnavailable(Exception):
    """The log cannot be reached now (e.g. NATS is down); the message says why. Maps to UNAVAILABLE."""


class LogBackend(abc.ABC):
    #: "memory", "file" or "nats": reported by Describe.
    name: str = ""

    def __init__(self) -> None:
        self._listener: AppendListener | None = None
        #: This log's incarnation (DescribeResponse.epoch); "" while not known (NATS not reached).
        self.epoch = ""

    def set_listener(self, listener: AppendListener) -> None:
        self._listener = listener

    def _notify(self, stored: list[Entry]) -> None:
        if stored and self._listener is not None:
            self._listener(stored)

    async def open(self) -> None:  # noqa: B027 - optional hook, nothing to open in memory
        """Load or connect; after this, `head_seq` is where the log continues."""

    @abc.abstractmethod
    async def append(self, events: Sequence[events_pb2.Event], headers: Headers | None = None) -> Appended:
        """Store valid events in order (setting each `seq`); ack duplicates with their original seq.

        `headers` are the events' own, when the caller has already read them."""

    @abc.abstractmethod
    async def read_after(self, after_seq: int, limit: int, event_filter: EventFilter | None = None) -> list[Entry]:
        """Up to `limit` retained events with seq > after_seq, in order.

        A backend may apply `event_filter` itself (NATS does, on the server); it then returns only
        matching events, and an empty list means none match up to its head.
        """

    def check_ready(self) -> None:  # noqa: B027 - optional hook, a local log is always known
        """Raise BackendUnavailable while the backend does not know its log yet (head, epoch).

        A bus that answered Describe then would describe an empty log of no epoch, and a follower
        would take its position back to 0 and deliver again what it had delivered (a restarted bus
        not yet connected to NATS did exactly that).
        """

    async def prepare_subscribe(self, after_seq: int | None) -> None:  # noqa: B027 - optional hook
        """Before a subscriber is registered: raise BackendUnavailable when the log cannot serve it.

        A log shared by several processes also waits here (bounded) until this process has seen
        `after_seq`, which another process may have assigned a moment ago.
        """

    @property
    @abc.abstractmethod
    def head_seq(self) -> int:
        """The seq of the newest event reported to the listener (0: none)."""

    @property
    @abc.abstractmethod
    def first_retained_seq(self) -> int:
        """The oldest seq a replay can deliver (head_seq + 1 when nothing is retained)."""

    @abc.abstractmethod
    def stats(self) -> LogStats: ...

    async def flush(self) -> None:  # noqa: B027 - optional hook, nothing to sync in memory
        """Make everything appended so far durable (no-op for volatile backends)."""

    async def close(self) -> None:
        """Flush and release files or connections."""
        await self.flush()
