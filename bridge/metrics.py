"""The bridge's Prometheus metrics, in a registry of its own (several bridges may share a process in tests).

What is counted per frame sent to a client (a thousand clients make a thousand sends per batch) is
kept in `DeliveryStats`, plain integers updated once per batch and group, and exported by a custom
collector at scrape time: prometheus_client's Counter and Histogram take a lock per update.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

BREAKER_STATES = {"closed": 0, "half-open": 1, "open": 2}
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class DeliveryStats:
    """Frames, bytes and events sent to clients, and publish-to-send latency per frame. No I/O."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.frames = 0
        self.bytes = 0
        self.events = 0
        #: Non-cumulative counts per bucket; the last one is +Inf.
        self.latency_counts = [0] * (len(buckets) + 1)
        self.latency_sum = 0.0

    def sent(self, frames: int, frame_bytes: int, events: int, latency: float | None) -> None:
        """`frames` copies of one frame of `frame_bytes` carrying `events` events each, sent
        `latency` seconds after its oldest event's time (None: the frame carries no event)."""
        self.frames += frames
        self.bytes += frames * frame_bytes
        if latency is not None:
            self.events += frames * events
            self.latency_counts[bisect_left(self.buckets, latency)] += frames
            self.latency_sum += frames * latency


class _DeliveryCollector(Collector):
    def __init__(self, stats: DeliveryStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self.stats
        yield CounterMetricFamily("coda_bridge_frames_out", "Frames sent to clients", value=stats.frames)
        yield CounterMetricFamily("coda_bridge_bytes_out", "Bytes sent to clients", value=stats.bytes)
        yield CounterMetricFamily("coda_bridge_events_delivered", "Events sent to clients", value=stats.events)
        cumulative, buckets = 0, []
        for bound, count in zip((*stats.buckets, float("inf")), stats.latency_counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        yield HistogramMetricFamily(
            "coda_bridge_publish_to_send_seconds",
            "From an event's time (set at its source) to its frame being written to a client",
            buckets=buckets,
            sum_value=stats.latency_sum,
        )


class BridgeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.connections = Gauge("coda_bridge_connections", "Open WebSocket connections", registry=r)
        self.frames_in = Counter("coda_bridge_frames_in", "Frames received from clients", registry=r)
        self.bytes_in = Counter("coda_bridge_bytes_in", "Bytes received from clients", registry=r)
        self.slow_clients = Counter("coda_bridge_slow_clients", "Clients cut off for not keeping up", registry=r)
        self.refusals = Counter(
            "coda_bridge_refusals", "Refused handshakes and frames, by reason", ["reason"], registry=r
        )
        self.delivery = DeliveryStats()
        r.register(_DeliveryCollector(self.delivery))
        self.upstream_reconnects = Counter(
            "coda_bridge_upstream_reconnects", "Reconnections of the gRPC link to Coda", registry=r
        )
        self.upstream_up = Gauge("coda_bridge_upstream_up", "1 while the bus subscription to Coda is up", registry=r)
        self.breaker_state = Gauge(
            "coda_bridge_assistant_breaker_state", "Assistant circuit: 0 closed, 1 half-open, 2 open", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
