"""The bus's Prometheus metrics, module-level so several hosts in one process share them.

What each subscriber-stream write counts is kept in `DELIVERY`, plain numbers exported at scrape
time (coda.runtime.plainmetrics): prometheus_client's Counter and Histogram cost about 6 µs per
update there, as much as the rest of the bus's work for the write.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.metrics_core import CounterMetricFamily, Metric

from coda.runtime.plainmetrics import PlainHistogram, ScrapeCollector

EVENTS_PUBLISHED = Counter("coda_bus_events_published", "Events accepted and assigned a seq")
EVENTS_DUPLICATE = Counter("coda_bus_events_duplicate", "Retried events acked with their original seq")
EVENTS_REJECTED = Counter("coda_bus_events_rejected", "Events refused by Publish", ["reason"])
SUBSCRIBERS = Gauge("coda_bus_subscribers", "Open Subscribe streams")
SUBSCRIBERS_CUT_OFF = Counter("coda_bus_subscribers_cut_off", "Subscribers ended because their queue overflowed")
LOG_EVENTS = Gauge("coda_bus_log_events", "Events retained in the log")
LOG_BYTES = Gauge("coda_bus_log_bytes", "Bytes of serialized events retained in the log")
HEAD_SEQ = Gauge("coda_bus_head_seq", "The newest seq assigned")
RESETS = Counter("coda_bus_subscriber_resets", "Subscribers told their position is in a replaced log (LogReset)")


class DeliveryStats:
    """Events written to subscriber streams, and append-to-write latency per batch. No I/O."""

    def __init__(self) -> None:
        self.events = 0
        self.latency = PlainHistogram(
            (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
        )

    def delivered(self, events: int, latency: float | None = None) -> None:
        """A batch of `events` written, `latency` seconds after its oldest event was appended
        (None: not timed, e.g. a replay)."""
        self.events += events
        if latency is not None:
            self.latency.observe(latency)

    def families(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "coda_bus_events_delivered", "Events written to subscriber streams", value=self.events
        )
        yield self.latency.family(
            "coda_bus_publish_to_deliver_seconds",
            "From append to the write of the batch carrying it (observed once per batch, for its oldest event)",
        )


DELIVERY = DeliveryStats()
REGISTRY.register(ScrapeCollector(DELIVERY.families))


def rejection_kind(reason: str) -> str:
    """A low-cardinality label for a rejection reason."""
    if "no id" in reason or "event id" in reason:
        return "bad_id"
    if "no payload" in reason:
        return "no_payload"
    if "does not know" in reason:
        return "unknown_type"
    if "bytes" in reason:
        return "too_large"
    if "session_id" in reason:
        return "bad_session_id"
    if "event time" in reason:
        return "bad_time"
    return "other"
