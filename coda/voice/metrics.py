"""Prometheus metrics of the voice service (module level: one set per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

UTTERANCES = Counter("coda_voice_utterances_total", "Utterances finalized, by why they ended.", ["reason"])
STT_FINALIZE_SECONDS = Histogram(
    "coda_voice_stt_finalize_seconds",
    "From the end of an utterance to its final transcript.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
STT_REAL_TIME_FACTOR = Histogram(
    "coda_voice_stt_real_time_factor",
    "Recognition wall time per second of utterance audio.",
    buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5),
)
TTS_FIRST_AUDIO_SECONDS = Histogram(
    "coda_voice_tts_first_audio_seconds",
    "From a sentence being complete to its first audio chunk.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
TTS_REAL_TIME_FACTOR = Histogram(
    "coda_voice_tts_real_time_factor",
    "Synthesis wall time per second of audio produced, per sentence.",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1),
)
ERRORS = Counter("coda_voice_errors_total", "Failed voice streams, by operation and cause.", ["operation", "cause"])
BREAKER_STATE = Gauge(
    "coda_voice_breaker_state", "Circuit state of an external engine (1 closed, 2 open, 3 half-open).", ["target"]
)
