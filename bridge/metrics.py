"""The bridge's Prometheus metrics, in a registry of its own (several bridges may share a process in tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

BREAKER_STATES = {"closed": 0, "half-open": 1, "open": 2}


class BridgeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.connections = Gauge("coda_bridge_connections", "Open WebSocket connections", registry=r)
        self.frames_in = Counter("coda_bridge_frames_in", "Frames received from clients", registry=r)
        self.frames_out = Counter("coda_bridge_frames_out", "Frames sent to clients", registry=r)
        self.bytes_in = Counter("coda_bridge_bytes_in", "Bytes received from clients", registry=r)
        self.bytes_out = Counter("coda_bridge_bytes_out", "Bytes sent to clients", registry=r)
        self.events_delivered = Counter("coda_bridge_events_delivered", "Events sent to clients", registry=r)
        self.slow_clients = Counter("coda_bridge_slow_clients", "Clients cut off for not keeping up", registry=r)
        self.refusals = Counter(
            "coda_bridge_refusals", "Refused handshakes and frames, by reason", ["reason"], registry=r
        )
        self.latency = Histogram(
            "coda_bridge_publish_to_send_seconds",
            "From an event's time (set at its source) to its frame being written to a client",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        )
        self.upstream_reconnects = Counter(
            "coda_bridge_upstream_reconnects", "Reconnections of the gRPC link to Coda", registry=r
        )
        self.upstream_up = Gauge("coda_bridge_upstream_up", "1 while the bus subscription to Coda is up", registry=r)
        self.breaker_state = Gauge(
            "coda_bridge_assistant_breaker_state", "Assistant circuit: 0 closed, 1 half-open, 2 open", registry=r
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
