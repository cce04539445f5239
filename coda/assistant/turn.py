"""One conversation turn: (speech -> text) -> memory -> llm <-> tools -> text and speech -> memory.

A `Turn` drives the other components through the ports (`ports.py`) and reports everything it sees
through a `TurnSink`:
- `show(event)` puts an event on the client's Converse stream only. Used for what the components
  publish on the bus themselves (llm.*, tool.*, voice.*, memory.*): the turn rebuilds those events from
  the component's responses (same payload, same session and correlation id, and the same event id,
  which each response carries as `event_id`) so the client sees them in order, and a client reading
  both Converse and the bus sees each event once. The Converse copy may carry what only the caller
  has: audio chunks keep their pcm (the bus copy, published by Voice, carries none), tokens are what
  the session's style let through, memory.retrieved has the assistant's round-trip time. Events a
  component did not publish (its errors as the assistant saw them) get ids of their own.
- `announce(event)` publishes to the bus AND shows it: conversation.*, personality.*, trace.* and the
  turn's own errors, which only the assistant knows about.

Interruption (barge-in, cancel, a new turn, timeout, the client leaving) sets a flag that every loop
checks before it forwards anything, so nothing of the stopped answer reaches the client after it; the
model and the synthesizer are told to cancel, and dropped if they do not stop within a grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from google.protobuf.message import Message

from coda.assistant import metrics
from coda.assistant.personality import (
    SentenceCap,
    answer_sentence_limit,
    answer_token_limit,
    is_refusal,
    memory_note,
    register_for,
    system_prompt,
)
from coda.assistant.ports import EngineError, Engines, GenerationCall, SynthesisCall
from coda.assistant.prompt import (
    assistant_tool_calls,
    conversation_messages,
    history_messages,
    tool_error_content,
    tool_limit_note,
    tool_result,
)
from coda.assistant.sessions import Session
from coda.assistant.speech import speakable
from coda.assistant.timing import TurnClock
from coda.config import AssistantConfig
from coda.llm.providers.embedded import CANNED_MODEL
from coda.schema import new_event
from coda.v1 import events_pb2, llm_pb2, memory_pb2, tools_pb2, voice_pb2

log = logging.getLogger(__name__)

SOURCE = "assistant"
#: Status codes of a memory call that mean the component is down, not that it refused this request.
_MEMORY_DOWN = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "UNKNOWN", "INTERNAL"})


def new_turn_id() -> str:
    return "t-" + uuid.uuid4().hex[:16]


class TurnSink(Protocol):
    def show(self, event: events_pb2.Event) -> None: ...

    def announce(self, event: events_pb2.Event) -> None: ...


class ToolCatalog:
    """Tools.ListTools, cached for a while; a failed refresh keeps serving the last good list."""

    def __init__(self, engines: Engines, ttl_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._engines = engines
        self._ttl = ttl_seconds
        self._clock = clock
        self._tools: list[llm_pb2.ToolSpec] | None = None
        self._fetched = 0.0

    async def get(self) -> list[llm_pb2.ToolSpec]:
        if self._tools is not None and self._clock() - self._fetched < self._ttl:
            return self._tools
        try:
            self._tools = await self._engines.tools.list_tools()
            self._fetched = self._clock()
        except EngineError as exc:
            log.warning("tool list unavailable", extra={"error": str(exc)})
        return self._tools or []


class AudioInput:
    """A spoken input as it arrives from the client: a bounded queue of chunks, then an end."""

    def __init__(self, audio_format: voice_pb2.AudioFormat, max_chunks: int = 512) -> None:
        self.format = audio_format
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(max_chunks)
        #: Set when the client sent AudioInputEnd (clock reading).
        self.ended_at: float | None = None
        #: Set when transcription no longer reads: later chunks are dropped.
        self.done = False

    async def push(self, chunk: bytes) -> None:
        if not self.done and self.ended_at is None:
            await self._queue.put(chunk)

    def end(self, at: float) -> None:
        if self.ended_at is None:
            self.ended_at = at
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(None)

    def stop(self) -> None:
        """Transcription is over: drop what is queued and anything later."""
        self.done = True
        while not self._queue.empty():
            self._queue.get_nowait()

    @property
    def open(self) -> bool:
        return self.ended_at is None and not self.done

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            chunk = await self._queue.get()
            if chunk is None:
                return
            yield chunk


@dataclass(frozen=True)
class ClientInput:
    """What a client that keeps the conversation itself (the OpenAI-compatible API) adds to a text turn:
    its own tools, its history instead of the session's, and the answer so far (see TextInput)."""

    tools: tuple[llm_pb2.ToolSpec, ...] = ()
    history: tuple[llm_pb2.ChatMessage, ...] = ()
    continuation: tuple[llm_pb2.ChatMessage, ...] = ()

    @property
    def tool_names(self) -> frozenset[str]:
        return frozenset(t.name for t in self.tools)


@dataclass
class _Round:
    text: str = ""
    tool_calls: list[events_pb2.LlmToolCallRequested] = field(default_factory=list)
    finished: events_pb2.LlmFinished | None = None
    #: The answer reached the session's sentence limit and the model was told to stop.
    capped: bool = False


class Turn:
    def __init__(
        self,
        *,
        turn_id: str,
        session: Session,
        engines: Engines,
        tools: ToolCatalog,
        sink: TurnSink,
        config: AssistantConfig,
        on_turn_done: Callable[[Turn, memory_pb2.Turn], None] | None = None,
        on_speech_started: Callable[[Turn], Awaitable[None]] | None = None,
        client: ClientInput | None = None,
    ) -> None:
        self.turn_id = turn_id
        self.session = session
        self.settings = events_pb2.ConversationSettings()
        self.settings.CopyFrom(session.settings)
        self._engines = engines
        self._tools = tools
        self._sink = sink
        self._config = config
        self._on_turn_done = on_turn_done
        self._on_speech_started = on_speech_started
        self.clock = TurnClock()
        self.input_kind = "text"
        self.user_text = ""
        self.provider = ""
        #: The model that gave the last answer (LlmFinished.model): says whether a language model
        #: answered or the embedded agent used a stock phrase.
        self.model = ""
        self.failure = ""
        self.interrupt_reason = ""
        self._answer: list[str] = []
        self._spoken: list[str] = []
        self._tools_used: set[str] = set()
        self._stop = asyncio.Event()
        self._finished = asyncio.Event()
        self._body: asyncio.Task[None] | None = None
        self._generation: GenerationCall | None = None
        self._synthesis: SynthesisCall | None = None
        self._synthesis_reader: asyncio.Task[None] | None = None
        self._synthesis_failed = False
        self._canceller: asyncio.Task[None] | None = None
        self._prefilling: asyncio.Task[None] | None = None
        self._client = client or ClientInput()
        #: Calls to the client's tools the answer stopped at: reported to the client, not run.
        self.client_tool_calls: list[events_pb2.LlmToolCallRequested] = []

    # -- control ------------------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self._finished.is_set()

    @property
    def answering(self) -> bool:
        """Past listening: the user's text is known and the answer is being produced."""
        return bool(self.user_text) and not self.finished

    def interrupt(self, reason: str) -> None:
        """Stop the turn now (idempotent); what was said so far is kept as an interrupted turn."""
        if self.finished or self._stop.is_set():
            return
        self.interrupt_reason = reason
        self._stop.set()
        self._canceller = asyncio.create_task(self._cancel_engines())

    async def wait(self) -> None:
        await self._finished.wait()

    async def interrupt_and_wait(self, reason: str) -> None:
        self.interrupt(reason)
        await self.wait()

    async def _cancel_engines(self) -> None:
        generation, synthesis = self._generation, self._synthesis
        with contextlib.suppress(Exception):
            if generation is not None:
                await generation.cancel()
            if synthesis is not None:
                await synthesis.cancel()
        if self._body is None:
            return
        done, _ = await asyncio.wait({self._body}, timeout=self._config.cancel_grace_seconds)
        if not done:
            for call in (self._generation, self._synthesis):
                if call is not None:
                    call.abort()
            self._body.cancel()

    # -- the turn -----------------------------------------------------------------------------

    async def run(self, text: str | None = None, audio: AudioInput | None = None) -> None:
        """Run the whole turn; returns when it is finished (answered, interrupted or failed)."""
        self.input_kind = "audio" if audio is not None else "text"
        self._body = asyncio.create_task(self._run_body(text, audio))
        try:
            done, _ = await asyncio.wait({self._body}, timeout=self._config.turn_timeout_seconds)
            if not done:
                self._announce_error(f"the turn took longer than {self._config.turn_timeout_seconds:g} s; stopped")
                self.interrupt("timeout")
                await asyncio.wait({self._body})
            if not self._body.cancelled() and self._body.exception() is not None:
                exc = self._body.exception()
                log.error("turn failed", exc_info=exc, extra={"turn_id": self.turn_id})
                self.failure = self.failure or f"internal error: {exc}"
                self._announce_error(f"the turn failed: {exc}")
            await self._finish()
        except asyncio.CancelledError:
            self.interrupt("shutdown")
            self._body.cancel()
            raise
        finally:
            self._finished.set()
            for helper in (self._canceller, self._prefilling):
                if helper is not None and not helper.done():
                    helper.cancel()

    async def _run_body(self, text: str | None, audio: AudioInput | None) -> None:
        try:
            if audio is not None:
                text = await self._transcribe(audio)
                if text and not self._stop.is_set() and self._on_speech_started is not None:
                    # Also when the engine reported no speech start: the previous answer ends before this one.
                    await self._on_speech_started(self)
            if not text or self._stop.is_set():
                return
            self.user_text = text
            await self._answer_text(text)
        finally:
            await self._end_synthesis()

    def _prompt(self, text: str, recent: Sequence[memory_pb2.Turn], note: str = "") -> list[llm_pb2.ChatMessage]:
        """The messages of a generation answering `text`: one builder for the answer and its prefill,
        so that both start with the same tokens."""
        now = datetime.now().astimezone()
        system = system_prompt(
            self._config.persona,
            self.settings.persona,
            dict(self.settings.traits),
            self.settings.language,
            today=f"{now:%A}, {now.day} {now:%B %Y}",
        )
        if self._client.history:
            messages = history_messages(system, self._client.history, text, note)
        else:
            messages = conversation_messages(system, list(recent)[-self._config.recall_turns :], text, note)
        messages.extend(self._client.continuation)
        return messages

    def _start(self, messages: list[llm_pb2.ChatMessage], tools: list[llm_pb2.ToolSpec]) -> llm_pb2.GenerateStart:
        return llm_pb2.GenerateStart(
            messages=messages,
            tools=tools,
            options=llm_pb2.GenerateOptions(
                provider=self.settings.provider, max_tokens=answer_token_limit(dict(self.settings.traits))
            ),
            session_id=self.session.session_id,
            correlation_id=self.turn_id,
        )

    def _prefill(self, heard: str) -> None:
        """While the user is still speaking, have the model evaluate the prompt with the words heard so
        far (a partial transcript), so that the answer's prompt is mostly in its cache when the final
        transcript comes. One at a time; a later partial waits for the next chance."""
        if not self._config.prefill_while_speaking or not heard.strip():
            return
        if self._prefilling is not None and not self._prefilling.done():
            return

        async def prefill() -> None:
            tools = self._offered_tools(await self._tools.get())
            start = self._start(self._prompt(heard, self.session.recent), tools)
            try:
                await self._engines.llm.prefill(start)
            except EngineError as exc:  # only a lost head start
                log.debug("prefill failed", extra={"turn_id": self.turn_id, "error": str(exc)})

        self._prefilling = asyncio.create_task(prefill())

    async def _answer_text(self, text: str) -> None:
        recalled = await self._recall(text)
        if self._stop.is_set():
            return
        tools = self._offered_tools(await self._tools.get())
        recent = recalled.recent_turns or self.session.recent
        messages = self._prompt(text, recent, memory_note(recalled.items))
        client_tools = self._client.tool_names
        limit = max(0, self._config.max_tool_rounds)
        for round_index in range(limit + 1):
            last = round_index == limit
            if last and round_index > 0:
                messages.append(tool_limit_note())
            answer = await self._generate(messages, [] if last else tools, round_index)
            if answer is None or self._stop.is_set():
                return
            if not answer.tool_calls:
                return
            client_calls = [call for call in answer.tool_calls if call.name in client_tools]
            if client_calls:
                # The client runs these and continues the turn; calls to own tools made in the same
                # round are dropped (the model asks again in the continuation when it still needs them).
                self.client_tool_calls = client_calls
                return
            if last:
                await self._say_tool_limit(limit)
                return
            messages.append(assistant_tool_calls(answer.text, answer.tool_calls))
            messages.extend(await self._run_tools(answer.tool_calls))
            if self._stop.is_set():
                return

    def _offered_tools(self, own: list[llm_pb2.ToolSpec]) -> list[llm_pb2.ToolSpec]:
        """The assistant's tools and the client's; a client tool hides an own tool of the same name."""
        if not self._client.tools:
            return own
        names = self._client.tool_names
        return [t for t in own if t.name not in names] + list(self._client.tools)

    # -- steps --------------------------------------------------------------------------------

    async def _transcribe(self, audio: AudioInput) -> str:
        config = voice_pb2.TranscribeConfig(
            format=audio.format,
            language=self.settings.language,
            partials=True,
            continuous=False,
            session_id=self.session.session_id,
            correlation_id=self.turn_id,
        )
        speech_ended: float | None = None
        final: voice_pb2.TranscribeResponse | None = None
        try:
            async for response in self._engines.voice.transcribe(config, audio.chunks()):
                if self._stop.is_set():
                    return ""
                kind = response.WhichOneof("response")
                if kind is None:
                    continue
                self._show("voice", getattr(response, kind), response.event_id)
                if kind == "speech_started" and self._on_speech_started is not None:
                    await self._on_speech_started(self)
                elif kind == "partial":
                    self._prefill(response.partial.text)
                elif kind == "speech_ended":
                    speech_ended = self.clock.now()
                elif kind == "final":
                    final = response
                    break
        except EngineError as exc:
            self._show(SOURCE, events_pb2.VoiceSttError(message=exc.message))
            self.failure = f"speech recognition failed: {exc.message}"
            return ""
        finally:
            audio.stop()
        final_at = self.clock.now()
        ends = [t for t in (speech_ended, audio.ended_at) if t is not None]
        self.clock.restart(min(ends) if ends else final_at)
        self.clock.mark_once("stt", final_at)
        self._announce(
            self.clock.span("stt", self.clock.started, final_at, {"engine": final.final.engine if final else ""})
        )
        text = final.final.text.strip() if final is not None else ""
        if not text and not self._stop.is_set():
            self._announce_error("no speech was recognised in the audio", level=events_pb2.ERROR_LEVEL_WARNING)
        return text

    async def _recall(self, text: str) -> memory_pb2.RecallResponse:
        began = self.clock.now()
        request = memory_pb2.RecallRequest(
            session_id=self.session.session_id,
            user_id=self.session.user_id,
            text=text,
            max_items=self._config.recall_items,
            max_turns=self._config.recall_turns,
            correlation_id=self.turn_id,
        )
        try:
            recalled = await self._engines.memory.recall(request)
        except EngineError as exc:
            # Say what happened: a text memory refuses (too long, say) is not memory being down.
            problem = "is unavailable" if exc.code in _MEMORY_DOWN else "did not search for this text"
            self._announce_error(
                f"memory {problem}, answering without it: {exc.message}", level=events_pb2.ERROR_LEVEL_WARNING
            )
            recalled = memory_pb2.RecallResponse()
        ended = self.clock.now()
        self.clock.mark_once("memory", ended)
        self._show(
            "memory",
            events_pb2.MemoryRetrieved(
                query=text,
                memory_ids=[s.item.id for s in recalled.items],
                scores=[s.score for s in recalled.items],
                duration_ms=(ended - began) * 1000.0,
            ),
            recalled.event_id,
        )
        self._announce(self.clock.span("memory", began, ended, {"items": str(len(recalled.items))}))
        return recalled

    async def _generate(
        self, messages: list[llm_pb2.ChatMessage], tools: list[llm_pb2.ToolSpec], round_index: int
    ) -> _Round | None:
        start = self._start(messages, tools)
        began = self.clock.now()
        answer = _Round()
        parts: list[str] = []
        traits = dict(self.settings.traits)
        sentences = SentenceCap(answer_sentence_limit(traits))
        register = register_for(traits)
        try:
            self._generation = await self._engines.llm.generate(start)
            if self._stop.is_set():
                await self._generation.cancel()
                return None
            async for response in self._generation:
                if self._stop.is_set():
                    return None
                kind = response.WhichOneof("response")
                if kind is None:
                    continue
                payload = getattr(response, kind)
                if kind == "token":
                    text = register.feed(payload.text) if register is not None else payload.text
                    await self._say_token(text, payload.index, answer, sentences, parts, response.event_id)
                    continue
                if kind == "finished" and register is not None:
                    await self._say_token(register.flush(), 0, answer, sentences, parts)
                self._show("llm", payload, response.event_id)
                if kind == "tool_call":
                    answer.tool_calls.append(payload)
                elif kind == "started":
                    self.provider = payload.provider or self.provider
                elif kind == "finished":
                    answer.finished = payload
                    self.provider = payload.provider or self.provider
                    self.model = payload.model
                    break
        except EngineError as exc:
            if self._stop.is_set():
                return None
            self.failure = f"the language model failed: {exc.message}"
            self._show(SOURCE, events_pb2.LlmError(provider=self.provider, message=exc.message, code=exc.code))
            return None
        finally:
            self._generation = None
        if self._stop.is_set():
            return None
        answer.text = "".join(parts)
        if answer.finished is None:
            self.failure = "the language model stopped without finishing its answer"
            self._show(SOURCE, events_pb2.LlmError(provider=self.provider, message=self.failure, code="UNAVAILABLE"))
            return None
        self._announce(
            self.clock.span(
                "llm",
                began,
                attributes={
                    "round": str(round_index),
                    "provider": self.provider,
                    "finish_reason": answer.finished.finish_reason,
                    "engine_ms": f"{answer.finished.duration_ms:.3f}",
                    "engine_first_token_ms": f"{answer.finished.first_token_ms:.3f}",
                },
            )
        )
        return answer

    async def _say_token(
        self, text: str, index: int, answer: _Round, sentences: SentenceCap, parts: list[str], event_id: str = ""
    ) -> None:
        """Pass on what of a token the session's style lets through; stop the model at the sentence cap.

        `event_id`: the model's llm.token on the bus, which this one stands for on Converse."""
        if answer.capped:
            return  # in flight when the model was told to stop
        said = sentences.add(text)
        if said:
            self._show("llm", events_pb2.LlmToken(text=said, index=index), event_id)
            parts.append(said)
            await self._on_token(said)
        if sentences.reached and self._generation is not None:
            # Enough said for this verbosity: the model stops, and its `finished` ends the round.
            answer.capped = True
            await self._generation.cancel()

    async def _on_token(self, text: str) -> None:
        self._answer.append(text)
        now = self.clock.now()
        if self.clock.mark_once("first_token", now):
            metrics.FIRST_TOKEN.labels(self.input_kind).observe(self.clock.since_start_ms(now) / 1000.0)
            self._announce(self.clock.span("first_token", self.clock.started, now))
        if self.settings.voice_output:
            await self._speak(text)

    async def _say_tool_limit(self, limit: int) -> None:
        notice = f" (I stopped after {limit} tool steps without a complete answer.)"
        self._announce_error(
            f"tool round limit ({limit}) reached; answer cut short", level=events_pb2.ERROR_LEVEL_WARNING
        )
        self._answer.append(notice)
        if self.settings.voice_output:
            await self._speak(notice)

    async def _run_tools(self, calls: list[events_pb2.LlmToolCallRequested]) -> list[llm_pb2.ChatMessage]:
        requests = [
            tools_pb2.ToolCall(
                call_id=call.call_id,
                name=call.name,
                arguments_json=call.arguments_json,
                timeout_ms=self._config.tool_timeout_ms,
                session_id=self.session.session_id,
                correlation_id=self.turn_id,
                user_id=self.session.user_id,
            )
            for call in calls
        ]
        self._tools_used.update(call.name for call in calls)
        names = {call.call_id: call.name for call in calls}
        began = dict.fromkeys(names, self.clock.now())
        contents: dict[str, str] = {}
        try:
            async for response in self._engines.tools.execute(requests):
                if self._stop.is_set():
                    break
                kind = response.WhichOneof("response")
                if kind is None:
                    continue
                payload = getattr(response, kind)
                self._show("tools", payload, response.event_id)
                if kind == "started":
                    began[payload.call_id] = self.clock.now()
                elif kind == "result":
                    contents[payload.call_id] = payload.result_json
                    self._tool_span(payload.call_id, names, began, "ok")
                elif kind == "error":
                    contents[payload.call_id] = tool_error_content(payload)
                    self._tool_span(payload.call_id, names, began, events_pb2.ToolErrorCode.Name(payload.code))
        except EngineError as exc:
            for call in calls:
                if call.call_id not in contents:
                    error = events_pb2.ToolError(
                        call_id=call.call_id,
                        name=call.name,
                        code=events_pb2.TOOL_ERROR_CODE_UNAVAILABLE,
                        message=f"the tools service failed: {exc.message}",
                    )
                    self._show(SOURCE, error)
                    contents[call.call_id] = tool_error_content(error)
        for call in calls:
            if call.call_id not in contents:
                missing = events_pb2.ToolError(
                    call_id=call.call_id,
                    name=call.name,
                    code=events_pb2.TOOL_ERROR_CODE_CANCELLED
                    if self._stop.is_set()
                    else events_pb2.TOOL_ERROR_CODE_FAILED,
                    message="the call ended without a result",
                )
                contents[call.call_id] = tool_error_content(missing)
        return [tool_result(call, contents[call.call_id]) for call in calls]

    def _tool_span(self, call_id: str, names: dict[str, str], began: dict[str, float], status: str) -> None:
        name = names.get(call_id, "?")
        self._announce(
            self.clock.span(
                f"tool:{name}", began.get(call_id, self.clock.now()), attributes={"call_id": call_id, "status": status}
            )
        )

    async def _speak(self, text: str) -> None:
        if self._synthesis_failed or self._stop.is_set():
            return
        if self._synthesis is None:
            config = voice_pb2.SynthesizeConfig(
                voice=self.settings.voice,
                language=self.settings.language,
                session_id=self.session.session_id,
                correlation_id=self.turn_id,
            )
            self._synthesis = await self._engines.voice.synthesize(config)
            self._synthesis_reader = asyncio.create_task(self._read_synthesis(self._synthesis))
        fragment = speakable(text)
        if fragment:
            await self._synthesis.send(fragment)

    async def _read_synthesis(self, synthesis: SynthesisCall) -> None:
        try:
            async for response in synthesis:
                if self._stop.is_set():
                    return
                kind = response.WhichOneof("response")
                if kind is None:
                    continue
                payload = getattr(response, kind)
                if kind == "audio":
                    now = self.clock.now()
                    if self.clock.mark_once("first_audio", now):
                        metrics.FIRST_AUDIO.labels(self.input_kind).observe(self.clock.since_start_ms(now) / 1000.0)
                        self._announce(self.clock.span("first_audio", self.clock.started, now))
                    if payload.text:
                        self._spoken.append(payload.text)
                self._show("voice", payload, response.event_id)
                if kind == "finished":
                    return
        except EngineError as exc:
            self._synthesis_failed = True
            self._show(SOURCE, events_pb2.VoiceTtsError(message=exc.message))

    async def _end_synthesis(self) -> None:
        synthesis, reader = self._synthesis, self._synthesis_reader
        if synthesis is None or reader is None:
            return
        if not self._stop.is_set():
            await synthesis.finish()
            await asyncio.wait({reader})
            return
        # Interrupted: the cancel was sent; the reader forwards nothing more, and the call is dropped.
        done, _ = await asyncio.wait({reader}, timeout=self._config.cancel_grace_seconds)
        synthesis.abort()
        if not done:
            reader.cancel()
            await asyncio.wait({reader})

    # -- the end --------------------------------------------------------------------------------

    async def _finish(self) -> None:
        now = self.clock.now()
        self.clock.mark_once("total", now)
        interrupted = bool(self.interrupt_reason)
        answer = "".join(self._answer).strip()
        said = " ".join(s.strip() for s in self._spoken) if self._synthesis is not None else answer
        assistant_text = said if interrupted else answer
        outcome = "interrupted" if interrupted else "failed" if self.failure else "answered"
        if interrupted:
            metrics.INTERRUPTIONS.labels(self.interrupt_reason).inc()
            self._announce(
                events_pb2.ConversationInterrupted(
                    turn_id=self.turn_id, reason=self.interrupt_reason, spoken_text=assistant_text
                )
            )
        if not self.user_text:
            metrics.TURNS.labels("no_input" if not interrupted else outcome).inc()
            return
        if self.client_tool_calls and not interrupted:
            self._hand_over_tool_calls(answer, now)
            return
        turn = memory_pb2.Turn(
            turn_id=self.turn_id, user_text=self.user_text, assistant_text=assistant_text, interrupted=interrupted
        )
        turn.time.GetCurrentTime()
        try:
            await self._engines.memory.add_turn(
                memory_pb2.AddTurnRequest(session_id=self.session.session_id, user_id=self.session.user_id, turn=turn)
            )
        except EngineError as exc:
            self._announce_error(
                f"the turn could not be saved to memory: {exc.message}", level=events_pb2.ERROR_LEVEL_WARNING
            )
        if self._on_turn_done is not None:
            self._on_turn_done(self, turn)
        if outcome == "answered" and self._worth_an_episode(answer):
            await self._store_episode(answer)
        self._announce(
            self.clock.span("total", self.clock.started, now, {"outcome": outcome, "input": self.input_kind})
        )
        self._announce(
            events_pb2.ConversationTurn(
                turn_id=self.turn_id,
                user_text=self.user_text,
                assistant_text=assistant_text,
                timings=self.clock.timings(),
                interrupted=interrupted,
                provider=self.provider,
            )
        )
        metrics.TURNS.labels(outcome).inc()
        metrics.TURN_SECONDS.labels(self.input_kind).observe(self.clock.since_start_ms(now) / 1000.0)

    def _hand_over_tool_calls(self, answer: str, now: float) -> None:
        """The answer waits for the client's tools: the turn ends without being saved (the client's
        continuation of it is), telling the client which calls to run."""
        self._announce(
            self.clock.span("total", self.clock.started, now, {"outcome": "client_tools", "input": self.input_kind})
        )
        self._announce(
            events_pb2.ConversationTurn(
                turn_id=self.turn_id,
                user_text=self.user_text,
                assistant_text=answer,
                timings=self.clock.timings(),
                provider=self.provider,
                client_tool_calls=self.client_tool_calls,
            )
        )
        metrics.TURNS.labels("client_tools").inc()

    def _worth_an_episode(self, answer: str) -> bool:
        minimum = self._config.episode_min_words
        return (
            minimum > 0
            and bool(answer)
            and len(self.user_text.split()) >= minimum
            # A tool answer (the time, a sum, a stored fact) is transient or already kept by the tool.
            and not self._tools_used
            # Stock phrases and refusals say nothing about the user worth recalling later.
            and not self.model.startswith(CANNED_MODEL)
            and not is_refusal(answer)
        )

    async def _store_episode(self, answer: str) -> None:
        item = memory_pb2.MemoryItem(
            text=f"The user said: {self.user_text}\nThe assistant answered: {answer}",
            kind=memory_pb2.MEMORY_KIND_EPISODE,
            importance=0.3,
            session_id=self.session.session_id,
            user_id=self.session.user_id,
        )
        try:
            response = await self._engines.memory.store(memory_pb2.StoreRequest(item=item, correlation_id=self.turn_id))
        except EngineError as exc:
            log.warning("episode not stored", extra={"turn_id": self.turn_id, "error": str(exc)})
            return
        stored = response.item
        self._show(
            "memory",
            events_pb2.MemoryStored(
                memory_id=stored.id, kind="episode", importance=stored.importance, preview=stored.text[:80]
            ),
            response.event_id,
        )

    # -- events ---------------------------------------------------------------------------------

    def _event(self, source: str, payload: Message, event_id: str = "") -> events_pb2.Event:
        return new_event(
            source, payload, session_id=self.session.session_id, correlation_id=self.turn_id, event_id=event_id
        )

    def _show(self, source: str, payload: Message, event_id: str = "") -> None:
        """Show a component's event under the id it has on the bus (`event_id`; "" = a new id)."""
        self._sink.show(self._event(source, payload, event_id))

    def _announce(self, payload: Message) -> None:
        self._sink.announce(self._event(SOURCE, payload))

    def _announce_error(
        self, message: str, level: events_pb2.ErrorLevel.ValueType = events_pb2.ERROR_LEVEL_ERROR
    ) -> None:
        self._announce(events_pb2.SystemError(level=level, message=message, details=f"turn {self.turn_id}"))
