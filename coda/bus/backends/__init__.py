"""Bus log backends: where the event log lives. `open_backend(config)` picks one by name."""

from __future__ import annotations

from coda.bus.backends.base import LogBackend
from coda.config import BusConfig

BACKENDS = ("memory", "file", "nats")


def open_backend(config: BusConfig) -> LogBackend:
    """The backend named by `bus.backend` (not yet opened: call `await backend.open()`)."""
    if config.backend == "memory":
        from coda.bus.backends.memory import MemoryBackend

        return MemoryBackend(config.max_events, config.max_bytes)
    if config.backend == "file":
        from coda.bus.backends.file import FileBackend

        return FileBackend(config.path, config.max_events, config.max_bytes, config.fsync_interval_ms)
    if config.backend == "nats":
        from coda.bus.backends.nats import NatsBackend

        return NatsBackend(config)
    raise ValueError(f"bus.backend {config.backend!r} is not available; choose one of {', '.join(BACKENDS)}")
