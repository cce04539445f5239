"""Prometheus metrics of the assistant (process-wide, so several hosts in one test process share them)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0)

TURNS = Counter("coda_assistant_turns_total", "Conversation turns by outcome", ["outcome"])
INTERRUPTIONS = Counter("coda_assistant_interruptions_total", "Turns interrupted, by reason", ["reason"])
FIRST_TOKEN = Histogram(
    "coda_assistant_first_token_seconds",
    "From the end of the user's input to the answer's first token",
    ["input"],
    buckets=_LATENCY_BUCKETS,
)
FIRST_AUDIO = Histogram(
    "coda_assistant_first_audio_seconds",
    "From the end of the user's input to the answer's first audio chunk",
    ["input"],
    buckets=_LATENCY_BUCKETS,
)
TURN_SECONDS = Histogram(
    "coda_assistant_turn_seconds", "Whole turns, input end to answer end", ["input"], buckets=_LATENCY_BUCKETS
)
SESSIONS = Counter("coda_assistant_sessions_total", "Sessions opened, new or resumed", ["kind"])
CLIENT_ERRORS = Counter("coda_assistant_client_errors_total", "Invalid client messages on Converse", ["kind"])
