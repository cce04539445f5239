"""The bridge's Prometheus metrics, in a registry of its own (several bridges may share a process in tests).

What is counted per frame sent to a client (a thousand clients make a thousand sends per batch) is
kept in `DeliveryStats`, plain integers updated once per batch and group, and exported at scrape
time (coda.runtime.plainmetrics): prometheus_client's Counter and Histogram take a lock per update.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, Metric

from coda.runtime.plainmetrics import PlainHistogram, ScrapeCollector

BREAKER_STATES = {"closed": 0, "half-open": 1, "open": 2}
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: The HTTP API's routes as metric labels; any other path counts as "other" (labels stay few).
API_ROUTES = frozenset({"/v1/models", "/v1/chat/completions", "/v1/audio/transcriptions", "/v1/audio/speech"})


class DeliveryStats:
    """Frames, bytes and events sent to clients, and publish-to-send latency per frame. No I/O."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.frames = 0
        self.bytes = 0
        self.events = 0
        self.latency = PlainHistogram(buckets)

    def sent(self, frames: int, frame_bytes: int, events: int, latency: float | None) -> None:
        """`frames` copies of one frame of `frame_bytes` carrying `events` events each, sent
        `latency` seconds after its oldest event's time (None: the frame carries no event)."""
        self.frames += frames
        self.bytes += frames * frame_bytes
        if latency is not None:
            self.events += frames * events
            self.latency.observe(latency, frames)

    def families(self) -> Iterator[Metric]:
        yield CounterMetricFamily("coda_bridge_frames_out", "Frames sent to clients", value=self.frames)
        yield CounterMetricFamily("coda_bridge_bytes_out", "Bytes sent to clients", value=self.bytes)
        yield CounterMetricFamily("coda_bridge_events_delivered", "Events sent to clients", value=self.events)
        yield self.latency.family(
            "coda_bridge_publish_to_send_seconds",
            "From an event's time (set at its source) to its frame being written to a client",
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
        r.register(ScrapeCollector(self.delivery.families))
        self.upstream_reconnects = Counter(
            "coda_bridge_upstream_reconnects", "Reconnections of the gRPC link to Coda", registry=r
        )
        self.skipped_events = Counter(
            "coda_bridge_skipped_events", "Bus events left out because no frame could carry them", registry=r
        )
        self.upstream_up = Gauge("coda_bridge_upstream_up", "1 while the bus subscription to Coda is up", registry=r)
        self.breaker_state = Gauge(
            "coda_bridge_assistant_breaker_state", "Assistant circuit: 0 closed, 1 half-open, 2 open", registry=r
        )
        self.api_requests = Counter(
            "coda_bridge_api_requests", "OpenAI-compatible API requests, by route and HTTP status", ["route", "status"],
            registry=r,
        )  # fmt: skip
        self.api_seconds = Histogram(
            "coda_bridge_api_seconds",
            "OpenAI-compatible API: seconds from a request's head to its answer's head (a stream's first event)",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def api_request(self, method: str, path: str, status: int, seconds: float) -> None:
        route = path.rstrip("/")
        route = route if route in API_ROUTES else "/v1/models/{id}" if route.startswith("/v1/models/") else "other"
        self.api_requests.labels(f"{method} {route}", str(status)).inc()
        self.api_seconds.labels(f"{method} {route}").observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
