"""Prometheus metrics of the memory service (module-level: one registry per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

OPERATIONS = Counter("coda_memory_operations_total", "Memory operations by kind and outcome", ["operation", "outcome"])
SEARCH_SECONDS = Histogram(
    "coda_memory_search_seconds",
    "Time to rank items for Search and Recall (embedding the query included)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
ITEMS = Gauge("coda_memory_items", "Long-term memory items stored")
EMBEDDED_ITEMS = Gauge("coda_memory_embedded_items", "Long-term memory items with an embedding")
