"""Prometheus metrics of the tools component (module-level, one set per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CALLS = Counter(
    "coda_tool_calls_total",
    "Tool calls by tool and outcome (ok, invalid_arguments, not_found, timeout, cancelled, failed, ...).",
    ["tool", "outcome"],
)
DURATION = Histogram(
    "coda_tool_call_duration_seconds",
    "Duration of tool calls that ran, by tool.",
    ["tool"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
)
BREAKER_STATE = Gauge(
    "coda_tool_breaker_state",
    "Circuit breaker state per tool: 0 closed, 1 open, 2 half-open.",
    ["tool"],
)
