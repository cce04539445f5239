"""Garbage-collector settings for a long-running service process, applied once it has started.

A service allocates GC-tracked objects per message (protobuf messages, futures, coroutine frames),
so with CPython's default young-generation threshold (700 allocations) it runs a collection every
few requests, each walking whatever is still alive; at bus rates that cost a quarter of publish
throughput. What start-up loaded (modules, descriptors, models, config) lives as long as the
process: freezing it keeps every later full collection from walking it again.
"""

from __future__ import annotations

import gc

#: Allocations between young collections (CPython's default: 700).
YOUNG_THRESHOLD = 20_000
#: Young collections per middle one, and middle per old (CPython's defaults: 10, 10).
OLDER_THRESHOLDS = (20, 20)


def tune_for_service() -> None:
    """Call after start-up, before serving: freeze what is loaded, collect less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, *OLDER_THRESHOLDS)


class ChurnCollector:
    """Schedules full collections after objects with reference cycles are let go in numbers.

    A closed WebSocket connection is a web of cycles (websockets' connection, protocol and
    transport point at each other, and so do a connection's tasks). Reference counting never frees
    a cycle; only a full collection does, and `tune_for_service` makes those rare. Under connection
    churn the closed connections' sockets, buffers and tasks then pile up (each 1,000
    connects/closes kept about 4 MB more of the bridge's memory, without end in sight).

    A full collection walks every live object (about 0.2 ms per open connection here), so it runs
    when the releases since the last one reach a quarter of what is still live (at least `every`),
    as CPython amortises its own oldest generation, or `max_delay` seconds after the first release
    since the last collection, whichever comes first.

    I/O-free: the owner reports releases and runs `collect` when `due()` says so or its timer fires.
    """

    def __init__(self, every: int = 200, max_delay: float = 30.0) -> None:
        self.every = max(1, every)
        self.max_delay = max_delay
        self.pending = 0
        self.collections = 0

    def released(self) -> bool:
        """Count one release. True when this is the first since the last collection (start the timer)."""
        self.pending += 1
        return self.pending == 1

    def due(self, live: int) -> bool:
        """Whether enough was released, with `live` of the same kind still in use, to collect now."""
        return self.pending >= max(self.every, live // 4)

    def collect(self) -> int:
        """Run the full collection if anything was released; the number of objects freed."""
        if not self.pending:
            return 0
        self.pending = 0
        self.collections += 1
        return gc.collect()
