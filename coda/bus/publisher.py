"""How components publish events: a fire-and-forget `EventPublisher`.

Components never talk to browsers or subscribers; they hand events to a publisher and carry on.
`publish()` must never block the caller: implementations queue and send in the background.
"""

from __future__ import annotations

from typing import Protocol

from coda.v1 import events_pb2


class EventPublisher(Protocol):
    def publish(self, event: events_pb2.Event) -> None:
        """Queue an event for the bus; returns at once."""
        ...

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything queued so far has been acked by the bus (True) or `timeout`
        passes (False: some is still queued, and still being sent)."""
        ...

    async def close(self) -> None:
        """Flush and release the connection."""
        ...
