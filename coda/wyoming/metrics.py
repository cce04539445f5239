"""Prometheus metrics of `coda wyoming` (module level: one set per process)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

#: kind: describe, asr, tts, handle; outcome: ok or the Error code sent.
REQUESTS = Counter(
    "coda_wyoming_requests_total", "Wyoming requests answered, by kind and outcome.", ["kind", "outcome"]
)
#: asr: AudioStop to Transcript; tts: Synthesize to AudioStop; handle: Transcript to Handled.
LATENCY = Histogram(
    "coda_wyoming_request_seconds",
    "Time to answer a Wyoming request, by kind.",
    ["kind"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
TTS_FIRST_AUDIO = Histogram(
    "coda_wyoming_tts_first_audio_seconds",
    "From Synthesize to the first audio chunk sent.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
CONNECTIONS = Counter("coda_wyoming_connections_total", "Wyoming client connections accepted.")
