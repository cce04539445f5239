"""Prometheus metrics of the LLM component (module-level, served by the host's /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REQUESTS = Counter(
    "coda_llm_requests", "Generate calls by the provider that answered and the outcome", ["provider", "outcome"]
)
ERRORS = Counter("coda_llm_provider_errors", "Provider failures (before fallback)", ["provider", "kind"])
TOKENS = Counter("coda_llm_tokens", "Tokens by provider and kind (prompt, completion)", ["provider", "kind"])
FALLBACKS = Counter("coda_llm_fallbacks", "Fallbacks from one provider to the next", ["from_provider", "to_provider"])
DURATION = Histogram(
    "coda_llm_generation_seconds",
    "Generate duration, start to finish",
    ["provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 60, 120),
)
FIRST_TOKEN = Histogram(
    "coda_llm_first_token_seconds",
    "Time to the first token or tool call",
    ["provider"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
PREFILL_TOKENS = Counter(
    "coda_llm_prefill_tokens",
    "Prompt tokens of Prefill calls by provider and kind (evaluated: the work done ahead; cached: reused)",
    ["provider", "kind"],
)
#: Values follow coda.v1.BreakerState: 1 closed, 2 open, 3 half-open.
BREAKER_STATE = Gauge(
    "coda_llm_breaker_state", "Circuit breaker state per provider (1 closed, 2 open, 3 half-open)", ["provider"]
)
