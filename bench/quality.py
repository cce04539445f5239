"""Quality of the assistant on its embedded defaults: does it answer right, and how fast.

Starts a real `coda serve` (a subprocess of `python -m coda serve` with a temporary data dir, a free
loopback port, no config file and no network), waits until every service is SERVING, asks an
unscored warm-up question until the model that will answer it is ready (a local model loads in the
background; see warm_up), then runs every item of bench/data/typed_eval.toml in a new session of
its own (its own user id, so nothing one item tells the assistant reaches another) through
Assistant.Converse with text input:

- each item is a list of user turns in one session; checks (regexes that must or must not match,
  a length limit, a tool that must have been called) apply to the last answer and optionally to
  intermediate ones; an item passes when every check of every checked turn passes;
- accuracy per category and overall (target >= 75 %), and every failure with the answer given;
- time to first token (from sending the text to the first llm.token), p50/p90, split by who
  answered: the provider/model of the round that produced the answer (its llm.finished event).

Then the spoken set: each request is synthesized by the server's own Voice.Synthesize (the
configured TTS engine, 16 kHz), and streamed to Converse as a microphone would, in 20 ms chunks
paced by the wall clock: 400 ms of silence, the speech, then silence until the assistant has heard
the end of the utterance (voice.vad_speech_ended or stt_final), then audio_end. Measured: the time
from the end of the last speech sample sent (not the end of the trailing silence) to the first
answer audio chunk (p50/p90, target p50 <= 700 ms), whether the transcript matched the text (number
words and digits compare equal), and the answer's checks.

`--json PATH` (or BENCH_QUALITY_JSON=PATH with `python -m bench`) writes the results for the README.
Run: `python -m bench quality [--quick]` or `python -m bench.quality [--quick] [--json PATH]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from coda.v1 import assistant_pb2, assistant_pb2_grpc, events_pb2, voice_pb2, voice_pb2_grpc
from coda.voice.quality import edit_distance, words

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "typed_eval.toml"
Request = assistant_pb2.ConverseRequest

RATE = 16_000
CHUNK_MS = 20
LEAD_SILENCE_MS = 400
#: Most trailing silence streamed after the speech before audio_end is sent anyway.
MAX_TRAILING_SILENCE_S = 4.0
#: Samples quieter than this (PCM16 units, about -50 dBFS) are silence when finding the end of speech.
SPEECH_THRESHOLD = 100
TARGET_ACCURACY = 0.75
TARGET_SPOKEN_P50_MS = 700.0
#: Items per category (and spoken items) in a --quick run: the first ones of the file.
QUICK_PER_CATEGORY = 3
QUICK_SPOKEN = 3
#: The server's complaint about a chunk that arrives after its VAD ended the input (in flight, not a fault).
LATE_CHUNK = "audio_chunk without an open audio input"
#: Seconds for the assistant to open a session (no model runs there).
OPEN_TIMEOUT_S = 30.0
#: Consecutive timed-out turns after which the run stops: the server is stuck, not slow.
MAX_CONSECUTIVE_TIMEOUTS = 3


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says why."""


# -- the evaluation set ------------------------------------------------------------------------


@dataclass
class Checks:
    match: list[str] = field(default_factory=list)
    no_match: list[str] = field(default_factory=list)
    max_chars: int = 0
    tool: str = ""
    must_not_be_empty: bool = True

    def failures(self, answer: str, tools: list[str]) -> list[str]:
        """What is wrong with this answer (empty: it passes)."""
        wrong: list[str] = []
        if self.must_not_be_empty and not answer.strip():
            return ["empty answer"]
        for pattern in self.match:
            if not re.search(pattern, answer, re.IGNORECASE):
                wrong.append(f"no match for /{_short(pattern)}/")
        for pattern in self.no_match:
            found = re.search(pattern, answer, re.IGNORECASE)
            if found:
                wrong.append(f"must not match /{_short(pattern)}/ (found {found.group(0)!r})")
        if self.max_chars and len(answer) > self.max_chars:
            wrong.append(f"{len(answer)} chars > {self.max_chars}")
        if self.tool and self.tool not in tools:
            wrong.append(f"tool {self.tool} not called (called: {', '.join(tools) or 'none'})")
        return wrong


@dataclass
class TurnSpec:
    text: str
    checks: Checks | None


@dataclass
class Item:
    id: str
    category: str
    turns: list[TurnSpec]


@dataclass
class SpokenItem:
    id: str
    text: str
    checks: Checks


@dataclass
class EvalSet:
    items: list[Item]
    spoken: list[SpokenItem]


def _short(pattern: str, limit: int = 60) -> str:
    return pattern if len(pattern) <= limit else pattern[: limit - 3] + "..."


def load_eval(path: Path = DATA) -> EvalSet:
    """Parse the evaluation file; every regex is compiled here so a typo fails before the server starts."""
    data = tomllib.loads(path.read_text())
    patterns: dict[str, str] = data.get("patterns", {})
    defaults: dict[str, Any] = data.get("defaults", {})

    def expand(entries: list[str], where: str) -> list[str]:
        out = []
        for entry in entries:
            if entry.startswith("@"):
                if entry[1:] not in patterns:
                    raise BenchError(f"{path}: {where}: unknown pattern {entry}")
                entry = patterns[entry[1:]]
            try:
                re.compile(entry)
            except re.error as exc:
                raise BenchError(f"{path}: {where}: bad regex {entry!r}: {exc}") from None
            out.append(entry)
        return out

    def checks_of(raw: dict[str, Any], where: str) -> Checks:
        unknown = set(raw) - {"match", "no_match", "max_chars", "tool", "must_not_be_empty"}
        if unknown:
            raise BenchError(f"{path}: {where}: unknown check(s) {', '.join(sorted(unknown))}")
        return Checks(
            match=expand(list(raw.get("match", [])), where),
            no_match=expand([*defaults.get("no_match", []), *raw.get("no_match", [])], where),
            max_chars=int(raw.get("max_chars", defaults.get("max_chars", 0))),
            tool=str(raw.get("tool", "")),
            must_not_be_empty=bool(raw.get("must_not_be_empty", defaults.get("must_not_be_empty", True))),
        )

    items: list[Item] = []
    seen: set[str] = set()
    for raw in data.get("items", []):
        item_id = raw["id"]
        if item_id in seen:
            raise BenchError(f"{path}: duplicate id {item_id}")
        seen.add(item_id)
        turns: list[TurnSpec] = []
        for index, turn in enumerate(raw["turns"]):
            if isinstance(turn, str):
                turns.append(TurnSpec(turn, None))
            else:
                turns.append(TurnSpec(turn["text"], checks_of(turn["checks"], f"{item_id} turn {index + 1}")))
        if not turns:
            raise BenchError(f"{path}: {item_id} has no turns")
        turns[-1].checks = checks_of(raw.get("checks", {}), item_id)
        items.append(Item(item_id, raw["category"], turns))
    spoken = [
        SpokenItem(raw["id"], raw["text"], checks_of(raw.get("checks", {}), raw["id"]))
        for raw in data.get("spoken", [])
    ]
    return EvalSet(items, spoken)


def quick_subset(evals: EvalSet) -> EvalSet:
    taken: dict[str, int] = defaultdict(int)
    items = []
    for item in evals.items:
        if taken[item.category] < QUICK_PER_CATEGORY:
            taken[item.category] += 1
            items.append(item)
    return EvalSet(items, evals.spoken[:QUICK_SPOKEN])


# -- the server under test ---------------------------------------------------------------------


class Server:
    """`python -m coda serve` on embedded defaults, in its own process group; always stopped by stop()."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.log_path = workdir / "coda-serve.log"
        self.address = ""
        self._child: subprocess.Popen[str] | None = None
        self._log: IO[str] | None = None

    def start(self, timeout: float) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CODA_")}  # no stray overrides
        env.update(
            {
                "PYTHONUNBUFFERED": "1",
                "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p),
                # Embedded defaults only: nothing may be fetched while measuring.
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "CODA_GRPC__ADDRESS": "127.0.0.1:0",
                "CODA_METRICS__ADDRESS": "",
                "CODA_BUS__PATH": str(self.workdir / "bus"),
                "CODA_MEMORY__PATH": str(self.workdir / "memory.db"),
                "CODA_ASSISTANT__SESSIONS_PATH": str(self.workdir / "sessions.db"),
                "CODA_TOOLS__TIMERS_PATH": str(self.workdir / "timers.db"),
                "CODA_GRPC__SHUTDOWN_GRACE_SECONDS": "1",
            }
        )
        self._log = self.log_path.open("w")
        # cwd is the empty work dir: no coda.toml of the caller's is picked up.
        self._child = subprocess.Popen(
            [sys.executable, "-m", "coda", "serve"],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=self.workdir,
            env=env,
            start_new_session=True,
        )
        banner = self._read_banner(timeout)
        self.address = banner.split(" on ", 1)[1].split()[0]
        # Keep draining stdout so a chatty server never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()

    def _read_banner(self, timeout: float) -> str:
        child = self._child
        assert child is not None and child.stdout is not None
        found: list[str] = []

        def read() -> None:
            assert child.stdout is not None
            for line in child.stdout:
                if line.startswith("coda serving"):
                    found.append(line.strip())
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        if found:
            return found[0]
        if child.poll() is not None:
            raise BenchError(f"coda serve exited with status {child.returncode} before serving\n{self.log_tail()}")
        raise BenchError(
            f"coda serve did not start within {timeout:g} s (a component slow to load? raise --start-timeout)"
            f"\n{self.log_tail()}"
        )

    def _drain(self) -> None:
        child = self._child
        if child is None or child.stdout is None:
            return
        with contextlib.suppress(ValueError, OSError):
            for line in child.stdout:
                if self._log is not None and not self._log.closed:
                    self._log.write(line)

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no server log)"
        if not text:
            return "(the coda serve log is empty)"
        return "--- last lines of the coda serve log ---\n" + "\n".join(text[-lines:])

    def alive(self) -> bool:
        return self._child is not None and self._child.poll() is None

    def stop(self) -> None:
        child = self._child
        if child is None:
            return
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGTERM)
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        else:  # the leader is gone; make sure nothing it started lingers
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)
        if child.stdout is not None:
            with contextlib.suppress(OSError):
                child.stdout.close()
        if self._log is not None:
            self._log.close()


async def wait_serving(channel: grpc.aio.Channel, server: Server, timeout: float) -> None:
    """Every service SERVING (a component may still be loading its model after the banner)."""
    stub = health_pb2_grpc.HealthStub(channel)
    services = ["", "coda.v1.Assistant", "coda.v1.Llm", "coda.v1.Voice", "coda.v1.Memory", "coda.v1.Tools"]
    deadline = time.monotonic() + timeout
    waiting: list[str] = services
    while True:
        still = []
        for name in waiting:
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
                if reply.status != health_pb2.HealthCheckResponse.SERVING:
                    still.append(name)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:  # a component this build does not have
                    still.append(name)
        waiting = still
        if not waiting:
            return
        if not server.alive():
            raise BenchError(f"coda serve exited while starting\n{server.log_tail()}")
        if time.monotonic() > deadline:
            raise BenchError(
                f"not SERVING after {timeout:g} s: {', '.join(n or '(overall)' for n in waiting)}"
                f" (a slow model load? raise --start-timeout)\n{server.log_tail()}"
            )
        await asyncio.sleep(0.5)


# -- one Converse session ----------------------------------------------------------------------


@dataclass
class TurnResult:
    answer: str = ""
    tools: list[str] = field(default_factory=list)
    first_token_ms: float | None = None
    first_audio_ms: float | None = None
    total_ms: float = 0.0
    answered_by: str = "unknown"
    #: The model the turn asked for (llm.request_started), e.g. "intent-agent+<local model>".
    requested_model: str = ""
    #: The model of the round that produced the answer (its llm.finished).
    answer_model: str = ""
    transcript: str = ""
    #: The server's own TurnTimings.first_audio_ms (from its end of the user's input).
    server_first_audio_ms: float | None = None
    errors: list[str] = field(default_factory=list)
    timed_out: bool = False
    #: Audio chunks the server refused because its VAD had already ended the utterance.
    late_chunks: int = 0


class Session:
    """One Converse stream: open, turns (typed or spoken), close."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._call = assistant_pb2_grpc.AssistantStub(channel).Converse()

    async def open(self, user_id: str, voice_output: bool, timeout: float) -> None:
        settings = events_pb2.ConversationSettings(voice_output=voice_output)
        await self._call.write(Request(open=assistant_pb2.SessionOpen(user_id=user_id, settings=settings)))

        async def started() -> None:
            while True:
                response = await self._call.read()
                if response == grpc.aio.EOF:
                    raise BenchError("the assistant ended the stream before the session started")
                if response.HasField("event") and response.event.HasField("conversation_started"):
                    return

        try:
            await asyncio.wait_for(started(), timeout)
        except TimeoutError:
            raise BenchError(f"the assistant did not open a session within {timeout:g} s") from None

    async def say(self, text: str, timeout: float) -> TurnResult:
        result = TurnResult()
        started = time.perf_counter()
        await self._call.write(Request(text=assistant_pb2.TextInput(text=text)))
        try:
            await asyncio.wait_for(self._collect(result, started), timeout)
        except TimeoutError:
            result.timed_out = True
            result.errors.append(f"no answer within {timeout:g} s")
        return result

    async def speak(self, speech: bytes, timeout: float) -> tuple[TurnResult, float]:
        """Stream lead silence + speech + silence in real time; (result, end of speech on the clock)."""
        result = TurnResult()
        audio_format = voice_pb2.AudioFormat(encoding=voice_pb2.AUDIO_ENCODING_PCM16, sample_rate=RATE, channels=1)
        await self._call.write(Request(audio_start=assistant_pb2.AudioInputStart(format=audio_format)))
        step = RATE * 2 * CHUNK_MS // 1000
        audio = b"\0\0" * (RATE * LEAD_SILENCE_MS // 1000) + speech
        began = time.perf_counter()
        speech_end = began + len(audio) / 2 / RATE
        heard = asyncio.Event()
        collector = asyncio.create_task(self._collect(result, speech_end, heard))
        try:
            sent = 0
            silence = b"\0" * step
            while not collector.done():
                chunk = audio[sent : sent + step] if sent < len(audio) else silence
                sent += step
                # A microphone delivers a chunk once its last sample has been recorded.
                await asyncio.sleep(max(0.0, began + sent / 2 / RATE - time.perf_counter()))
                if heard.is_set() or sent >= len(audio) + MAX_TRAILING_SILENCE_S * RATE * 2:
                    break
                await self._call.write(Request(audio_chunk=assistant_pb2.AudioInputChunk(audio=chunk)))
            if not collector.done():
                await self._call.write(Request(audio_end=assistant_pb2.AudioInputEnd()))
            await asyncio.wait_for(asyncio.shield(collector), max(1.0, timeout - (time.perf_counter() - began)))
        except TimeoutError:
            result.timed_out = True
            result.errors.append(f"no answer within {timeout:g} s")
        finally:
            if not collector.done():
                collector.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await collector
        return result, speech_end

    async def _collect(self, result: TurnResult, started: float, heard: asyncio.Event | None = None) -> None:
        tokens: list[str] = []
        while True:
            response = await self._call.read()
            now = (time.perf_counter() - started) * 1000.0
            if response == grpc.aio.EOF:
                result.errors.append("the assistant ended the stream")
                break
            if not response.HasField("event"):
                continue
            event = response.event
            kind = event.WhichOneof("payload")
            if kind == "llm_token":
                if result.first_token_ms is None:
                    result.first_token_ms = now
                tokens.append(event.llm_token.text)
            elif kind == "voice_tts_audio":
                if result.first_audio_ms is None:
                    result.first_audio_ms = now
            elif kind == "llm_request_started":
                result.requested_model = event.llm_request_started.model
            elif kind == "llm_tool_call_requested":
                result.tools.append(event.llm_tool_call_requested.name)
            elif kind == "llm_finished" and event.llm_finished.finish_reason != "tool_calls":
                finished = event.llm_finished
                result.answered_by = "/".join(p for p in (finished.provider, finished.model) if p) or "unknown"
                result.answer_model = finished.model
            elif kind == "voice_vad_speech_ended" and heard is not None:
                heard.set()  # the server ends the input here: a client stops streaming
            elif kind == "voice_stt_final":
                result.transcript = event.voice_stt_final.text
                if heard is not None:
                    heard.set()
            elif kind in ("llm_error", "voice_stt_error", "voice_tts_error"):
                result.errors.append(f"{kind}: {getattr(event, kind).message}")
            elif kind == "system_error" and LATE_CHUNK in event.system_error.message:
                result.late_chunks += 1  # sent before the client saw the end of the utterance
            elif kind == "system_error" and event.system_error.level != events_pb2.ERROR_LEVEL_WARNING:
                result.errors.append(f"system_error: {event.system_error.message}")
            elif kind == "system_error" and "no speech" in event.system_error.message:
                result.errors.append(event.system_error.message)
                break
            elif kind == "conversation_turn":
                turn = event.conversation_turn
                result.answer = turn.assistant_text or "".join(tokens)
                result.server_first_audio_ms = turn.timings.first_audio_ms or None
                if result.answered_by == "unknown" and turn.provider:
                    result.answered_by = turn.provider
                break
        result.total_ms = (time.perf_counter() - started) * 1000.0
        if heard is not None:
            heard.set()

    async def close(self) -> None:
        with contextlib.suppress(Exception):  # cleanup: the stream may already be over
            await self._call.write(Request(close=assistant_pb2.SessionClose(reason="bench")))
            await self._call.done_writing()

            async def drain() -> None:
                while await self._call.read() != grpc.aio.EOF:
                    pass

            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(drain(), 5)
        self._call.cancel()


# -- running the sets --------------------------------------------------------------------------


@dataclass
class ItemOutcome:
    id: str
    category: str
    passed: bool
    failures: list[str]
    answers: list[str]
    turns: list[TurnResult]


async def run_item(channel: grpc.aio.Channel, item: Item, turn_timeout: float) -> ItemOutcome:
    session = Session(channel)
    results: list[TurnResult] = []
    failures: list[str] = []
    try:
        await session.open(f"bench-{item.id}", voice_output=False, timeout=max(turn_timeout, OPEN_TIMEOUT_S))
        for index, spec in enumerate(item.turns):
            result = await session.say(spec.text, turn_timeout)
            results.append(result)
            label = f"turn {index + 1}" if len(item.turns) > 1 else "answer"
            if result.timed_out:
                failures.append(f"{label}: {'; '.join(result.errors)}")
                break
            if spec.checks is not None:
                failures += [f"{label}: {wrong}" for wrong in spec.checks.failures(result.answer, result.tools)]
    finally:
        await session.close()
    answers = [r.answer for r in results]
    return ItemOutcome(item.id, item.category, not failures, failures, answers, results)


async def speech_of(channel: grpc.aio.Channel, text: str, timeout: float) -> bytes:
    """The text as 16 kHz PCM16 from the server's TTS, with leading/trailing silence trimmed."""
    stub = voice_pb2_grpc.VoiceStub(channel)

    async def requests():  # type: ignore[no-untyped-def]
        yield voice_pb2.SynthesizeRequest(config=voice_pb2.SynthesizeConfig(sample_rate=RATE))
        yield voice_pb2.SynthesizeRequest(text=voice_pb2.SynthesizeText(text=text + ".", flush=True))

    pcm = bytearray()
    async for response in stub.Synthesize(requests(), timeout=timeout):
        if response.WhichOneof("response") == "audio":
            pcm += response.audio.pcm
    samples = np.frombuffer(bytes(pcm), dtype="<i2")
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > SPEECH_THRESHOLD)
    if loud.size == 0:
        raise BenchError(f"the TTS produced no audible speech for {text!r}")
    return samples[loud[0] : loud[-1] + 1].tobytes()


_UNITS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen"
_UNITS += " sixteen seventeen eighteen nineteen"
_TENS = "twenty thirty forty fifty sixty seventy eighty ninety"


def normalized_words(text: str) -> list[str]:
    """Words for comparing transcripts: lowercase, no punctuation, number words 0-99 as digits."""
    out: list[str] = []
    for word in words(text.replace("-", " ")):
        if word in _UNITS.split():
            value = _UNITS.split().index(word)
            if out and out[-1].endswith("0") and out[-1].isdigit() and 20 <= int(out[-1]) <= 90 and value < 10:
                out[-1] = str(int(out[-1]) + value)
                continue
            out.append(str(value))
        elif word in _TENS.split():
            out.append(str(20 + 10 * _TENS.split().index(word)))
        else:
            out.append(word)
    return out


@dataclass
class SpokenOutcome:
    id: str
    text: str
    transcript: str
    transcript_matched: bool
    word_errors: int
    end_of_speech_to_audio_ms: float | None
    server_first_audio_ms: float | None
    passed: bool
    failures: list[str]
    answer: str


async def run_spoken(channel: grpc.aio.Channel, item: SpokenItem, speech: bytes, turn_timeout: float) -> SpokenOutcome:
    session = Session(channel)
    try:
        await session.open(f"bench-{item.id}", voice_output=True, timeout=max(turn_timeout, OPEN_TIMEOUT_S))
        result, _ = await session.speak(speech, turn_timeout)
    finally:
        await session.close()
    reference, heard = normalized_words(item.text), normalized_words(result.transcript)
    errors = edit_distance(reference, heard)
    failures = [f"answer: {wrong}" for wrong in item.checks.failures(result.answer, result.tools)]
    if result.timed_out or result.errors:
        failures.insert(0, "; ".join(result.errors))
    if result.first_audio_ms is None:
        failures.append("no answer audio")
    return SpokenOutcome(
        id=item.id,
        text=item.text,
        transcript=result.transcript,
        transcript_matched=errors == 0,
        word_errors=errors,
        end_of_speech_to_audio_ms=result.first_audio_ms,
        server_first_audio_ms=result.server_first_audio_ms,
        passed=not failures,
        failures=failures,
        answer=result.answer,
    )


# -- reporting ---------------------------------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def spread(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "p50": round(percentile(values, 0.5), 1), "p90": round(percentile(values, 0.9), 1)}


def _clip(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def report(outcomes: list[ItemOutcome], spoken: list[SpokenOutcome]) -> dict[str, Any]:
    categories: dict[str, list[ItemOutcome]] = defaultdict(list)
    for outcome in outcomes:
        categories[outcome.category].append(outcome)
    results: dict[str, Any] = {"categories": {}}
    print(f"typed requests ({len(outcomes)} items, each in a new session)")
    for category, members in categories.items():
        passed = sum(o.passed for o in members)
        results["categories"][category] = {"passed": passed, "total": len(members), "accuracy": passed / len(members)}
        print(f"  {category:<12} {passed:3d}/{len(members):<3d} {passed / len(members):6.1%}")
    total = sum(o.passed for o in outcomes)
    overall = total / len(outcomes) if outcomes else 0.0
    results["overall"] = {"passed": total, "total": len(outcomes), "accuracy": overall, "target": TARGET_ACCURACY}
    verdict = "meets" if overall >= TARGET_ACCURACY else "below"
    print(
        f"  {'overall':<12} {total:3d}/{len(outcomes):<3d} {overall:6.1%}  ({verdict} the {TARGET_ACCURACY:.0%} target)"
    )

    failures = [o for o in outcomes if not o.passed]
    results["failures"] = [
        {"id": o.id, "category": o.category, "why": o.failures, "answers": [_clip(a, 300) for a in o.answers]}
        for o in failures
    ]
    if failures:
        print(f"failures ({len(failures)})")
        for o in failures:
            print(f"  {o.id} [{o.category}]: {'; '.join(o.failures)}")
            print(f"      answer: {_clip(o.answers[-1]) if o.answers else '(none)'!r}")

    by_who: dict[str, list[float]] = defaultdict(list)
    by_category: dict[str, list[float]] = defaultdict(list)
    for o in outcomes:
        for turn in o.turns:
            if turn.first_token_ms is not None:
                by_who[turn.answered_by].append(turn.first_token_ms)
                by_category[o.category].append(turn.first_token_ms)
    results["first_token_ms"] = {
        "by_answerer": {who: spread(v) for who, v in by_who.items()},
        "by_category": {c: spread(v) for c, v in by_category.items()},
        "all": spread([v for values in by_who.values() for v in values]),
    }
    print("time to first token (client clock, from sending the text), by who answered")
    for who, values in sorted(by_who.items()):
        s = spread(values)
        print(f"  {who:<32} n={s['n']:<3d} p50 {s['p50']:8.1f} ms  p90 {s['p90']:8.1f} ms")
    if by_category:
        print("  by category: " + ", ".join(f"{c} p50 {spread(v)['p50']:.0f} ms" for c, v in by_category.items()))

    if spoken:
        latencies = [s.end_of_speech_to_audio_ms for s in spoken if s.end_of_speech_to_audio_ms is not None]
        matched = sum(s.transcript_matched for s in spoken)
        passed = sum(s.passed for s in spoken)
        stats = spread(latencies)
        results["spoken"] = {
            "items": len(spoken),
            "transcripts_matched": matched,
            "answers_passed": passed,
            "end_of_speech_to_first_audio_ms": stats,
            "target_p50_ms": TARGET_SPOKEN_P50_MS,
            "details": [
                {
                    "id": s.id,
                    "text": s.text,
                    "transcript": s.transcript,
                    "word_errors": s.word_errors,
                    "end_of_speech_to_first_audio_ms": None
                    if s.end_of_speech_to_audio_ms is None
                    else round(s.end_of_speech_to_audio_ms, 1),
                    "server_first_audio_ms": s.server_first_audio_ms,
                    "passed": s.passed,
                    "why": s.failures,
                    "answer": _clip(s.answer, 300),
                }
                for s in spoken
            ],
        }
        print(f"spoken requests ({len(spoken)}, streamed in real time in {CHUNK_MS} ms chunks, voice output on)")
        if latencies:
            verdict = "meets" if stats["p50"] <= TARGET_SPOKEN_P50_MS else "misses"
            print(
                f"  end of speech -> first answer audio  p50 {stats['p50']:7.1f} ms  p90 {stats['p90']:7.1f} ms"
                f"  ({verdict} the {TARGET_SPOKEN_P50_MS:.0f} ms p50 target; {len(latencies)}/{len(spoken)} answered with audio)"
            )
        server_side = spread([s.server_first_audio_ms for s in spoken if s.server_first_audio_ms is not None])
        results["spoken"]["server_first_audio_ms"] = server_side
        if server_side["n"]:
            print(
                f"  server's own first audio (TurnTimings, from where it ended the input)"
                f"  p50 {server_side['p50']:7.1f} ms  p90 {server_side['p90']:7.1f} ms"
            )
        print(f"  transcripts matched {matched}/{len(spoken)}, answers passed {passed}/{len(spoken)}")
        for s in spoken:
            latency = "-" if s.end_of_speech_to_audio_ms is None else f"{s.end_of_speech_to_audio_ms:.0f} ms"
            mark = "ok " if s.passed else "FAIL"
            print(f"  {mark} {s.id:<14} {latency:>8}  heard {s.transcript!r}  answer {_clip(s.answer, 80)!r}")
            if s.failures:
                print(f"       {'; '.join(s.failures)}")
    return results


# -- warm-up ---


#: Unscored warm-up question: one an intent agent hands to a language model, if there is one.
WARM_UP = "In one short sentence, what is a rainbow?"


async def warm_up(channel: grpc.aio.Channel, server: Server, timeout: float) -> dict[str, Any]:
    """Ask until the model that will answer is ready, so no scored turn pays for loading it.

    When the configured model is a chain of several ("agent+local-model", from llm.request_started),
    the warm-up is asked again until one other than the first answers: a local model loading in the
    background is ready. Gives up (with a warning; the run goes on) after `timeout` seconds.
    """
    began = time.perf_counter()
    asks = 0
    while True:
        asks += 1
        outcome = await run_item(channel, Item("warm-up", "warm-up", [TurnSpec(WARM_UP, None)]), timeout)
        turn = outcome.turns[0] if outcome.turns else None
        if turn is None or turn.timed_out:
            raise BenchError(
                f"the warm-up turn got no answer within {timeout:g} s"
                f" (a model still loading? raise --start-timeout)\n{server.log_tail()}"
            )
        models = [m for m in turn.requested_model.split("+") if m]
        elapsed = time.perf_counter() - began
        info = {
            "requested_model": turn.requested_model,
            "answered_by": turn.answered_by,
            "asks": asks,
            "seconds": round(elapsed, 1),
            "ready": True,
        }
        first = models[0] if models else ""
        by_first = turn.answer_model in ("", first) or turn.answer_model.startswith(f"{first}/")
        waiting = len(models) > 1 and by_first
        if not waiting:
            print(f"warm-up answered by {turn.answered_by} in {elapsed:.1f} s ({asks} asks)", flush=True)
            return info
        if elapsed > timeout:
            print(
                f"warning: {turn.requested_model} configured, but {turn.answered_by} still answered the warm-up"
                f" after {elapsed:.0f} s: the local model did not load (see the server log); scoring anyway",
                flush=True,
            )
            info["ready"] = False
            return info
        await asyncio.sleep(2.0)


# -- main --------------------------------------------------------------------------------------


async def run(
    quick: bool,
    json_path: str | None = None,
    start_timeout: float = 300.0,
    turn_timeout: float = 120.0,
    data: Path = DATA,
    spoken_only: bool = False,
    skip_spoken: bool = False,
) -> dict[str, Any]:
    evals = load_eval(data)
    if quick:
        evals = quick_subset(evals)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="coda-bench-quality-") as tmp:
        server = Server(Path(tmp))
        try:
            await asyncio.to_thread(server.start, start_timeout)
            async with grpc.aio.insecure_channel(server.address) as channel:
                await wait_serving(channel, server, start_timeout)
                ready_s = time.perf_counter() - began
                print(f"coda serve ready at {server.address} in {ready_s:.1f} s; warming up", flush=True)
                warm = await warm_up(channel, server, max(turn_timeout, start_timeout))

                outcomes: list[ItemOutcome] = []
                typed_began = time.perf_counter()
                in_a_row = 0
                aborted = ""
                for item in [] if spoken_only else evals.items:
                    outcome = await run_item(channel, item, turn_timeout)
                    outcomes.append(outcome)
                    in_a_row = in_a_row + 1 if any(t.timed_out for t in outcome.turns) else 0
                    if not server.alive():
                        aborted = f"coda serve died during {item.id}"
                    elif in_a_row >= MAX_CONSECUTIVE_TIMEOUTS:
                        aborted = f"{in_a_row} items in a row got no answer within {turn_timeout:g} s"
                    if aborted:
                        print(f"stopping early: {aborted}\n{server.log_tail()}", file=sys.stderr, flush=True)
                        break
                typed_s = time.perf_counter() - typed_began

                spoken: list[SpokenOutcome] = []
                spoken_began = time.perf_counter()
                if evals.spoken and not skip_spoken and not aborted:
                    speeches = [await speech_of(channel, s.text, turn_timeout) for s in evals.spoken]
                    # Warm-up of the spoken path (STT, TTS of the answer): not scored.
                    await run_spoken(channel, SpokenItem("warm-up", "hello", Checks()), speeches[0], turn_timeout)
                    for item_spoken, speech in zip(evals.spoken, speeches, strict=True):
                        spoken.append(await run_spoken(channel, item_spoken, speech, turn_timeout))
                spoken_s = time.perf_counter() - spoken_began
        finally:
            server.stop()

    results = report(outcomes, spoken)
    results["run"] = {
        "warm_up": warm,
        "quick": quick,
        "aborted": aborted,
        "items": len(outcomes),
        "spoken_items": len(spoken),
        "server_ready_s": round(ready_s, 1),
        "typed_s": round(typed_s, 1),
        "spoken_s": round(spoken_s, 1),
        "total_s": round(time.perf_counter() - began, 1),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "commit": _commit(),
    }
    print(
        f"run: server ready {ready_s:.1f} s, typed {typed_s:.1f} s, spoken {spoken_s:.1f} s,"
        f" total {results['run']['total_s']:.1f} s"
    )
    if aborted:
        print(f"INCOMPLETE RUN: {aborted}; the scores above cover only the items run")
    if json_path:
        await asyncio.to_thread(Path(json_path).write_text, json.dumps(results, indent=2) + "\n")
        print(f"results written to {json_path}")
    return results


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


async def main(quick: bool) -> None:
    """Entry point of `python -m bench quality`; BENCH_QUALITY_JSON=path also writes the JSON."""
    try:
        await run(quick, os.environ.get("BENCH_QUALITY_JSON") or None)
    except BenchError as exc:
        print(f"quality bench failed: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"the first {QUICK_PER_CATEGORY} items per category")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    parser.add_argument("--data", type=Path, default=DATA, help="evaluation file (default: %(default)s)")
    parser.add_argument("--start-timeout", type=float, default=300.0, help="seconds for coda serve to be ready")
    parser.add_argument("--turn-timeout", type=float, default=120.0, help="seconds for one answer")
    parser.add_argument("--spoken-only", action="store_true", help="skip the typed set")
    parser.add_argument("--no-spoken", action="store_true", help="skip the spoken set")
    args = parser.parse_args(argv)
    try:
        asyncio.run(
            run(
                args.quick,
                args.json,
                args.start_timeout,
                args.turn_timeout,
                args.data,
                spoken_only=args.spoken_only,
                skip_spoken=args.no_spoken,
            )
        )
    except BenchError as exc:
        print(f"quality bench failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(cli())
