"""One Wyoming connection: its events become calls to the running Coda's gRPC services.

- Describe -> Voice.Describe -> Info (asr, tts with the voices, handle).
- Transcribe?, AudioStart, AudioChunk*, AudioStop -> Voice.Transcribe -> Transcript.
- Synthesize -> Voice.Synthesize -> AudioStart, AudioChunk*, AudioStop.
- Transcript (to handle) -> Assistant.Converse in the conversation's session -> Handled.
- Ping -> Pong.

Anything that cannot be done (an unknown event, audio that cannot be converted, empty text, Coda
down) gets one Error event with a readable text and a code (coda.wyoming.events), and the
connection stays open for the next request. `CodaLink` is the gRPC side, shared by connections.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass
from typing import TypeVar

import grpc
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.handle import Handled
from wyoming.info import Describe
from wyoming.ping import Ping, Pong
from wyoming.server import AsyncEventHandler
from wyoming.tts import Synthesize

from coda.v1 import assistant_pb2, assistant_pb2_grpc, events_pb2, voice_pb2, voice_pb2_grpc
from coda.wyoming import events, metrics
from coda.wyoming.audio import AudioConverter, AudioRefused, WyomingFormat

log = logging.getLogger(__name__)

DESCRIBE_TIMEOUT_SECONDS = 5.0
#: gRPC's reconnect backoff grows to 2 minutes while Coda is down; Home Assistant should find Coda
#: again within seconds of it coming back.
CHANNEL_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 500), ("grpc.max_reconnect_backoff_ms", 3000)]
_Parsed = TypeVar("_Parsed")


class Refusal(Exception):
    """A request that gets an Error event: `code` from coda.wyoming.events, `text` for people."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class CodaLink:
    """The running Coda's Voice and Assistant services, over one gRPC channel."""

    def __init__(
        self, address: str, assistant_address: str = "", user_id: str = "", turn_timeout_seconds: float = 120.0
    ) -> None:
        #: The Voice service's address (and the Assistant's, unless `assistant_address` names another).
        self.address = address
        self.user_id = user_id
        self.turn_timeout_seconds = turn_timeout_seconds
        self._channels = {address: grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)}
        if assistant_address and assistant_address != address:
            self._channels[assistant_address] = grpc.aio.insecure_channel(assistant_address, options=CHANNEL_OPTIONS)
        self.voice = voice_pb2_grpc.VoiceStub(self._channels[address])
        self.assistant = assistant_pb2_grpc.AssistantStub(self._channels[assistant_address or address])

    def refusal(self, exc: grpc.aio.AioRpcError, what: str) -> Refusal:
        code = exc.code()
        if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return Refusal(
                events.CODA_UNAVAILABLE, f"{what}: Coda is not reachable at {self.address} ({exc.details()})"
            )
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            return Refusal(events.BAD_REQUEST, f"{what}: {exc.details()}")
        return Refusal(events.CODA_ERROR, f"{what} failed: {code.name}: {exc.details()}")

    async def describe(self) -> voice_pb2.DescribeVoiceResponse:
        try:
            return await self.voice.Describe(voice_pb2.DescribeVoiceRequest(), timeout=DESCRIBE_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            raise self.refusal(exc, "describe") from None

    async def ask(self, session_id: str, text: str) -> str:
        """Coda's answer to `text` in `session_id` (created on first use, resumed after)."""
        settings = events_pb2.ConversationSettings(voice_output=False)  # Home Assistant speaks it
        requests = [
            assistant_pb2.ConverseRequest(
                open=assistant_pb2.SessionOpen(session_id=session_id, user_id=self.user_id, settings=settings)
            ),
            assistant_pb2.ConverseRequest(text=assistant_pb2.TextInput(text=text)),
        ]
        answer = events.TurnAnswer()
        try:
            # The request stream ends after the text: Coda finishes the turn, then ends the call.
            async for response in self.assistant.Converse(iter(requests), timeout=self.turn_timeout_seconds):
                if response.HasField("event"):
                    answer.add(response.event)
            return answer.answer()
        except grpc.aio.AioRpcError as exc:
            raise self.refusal(exc, "handle") from None
        except events.TurnFailed as exc:
            raise Refusal(events.CODA_ERROR, f"handle: {exc}") from None

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


@dataclass
class _Listening:
    """A spoken request between AudioStart and AudioStop."""

    call: grpc.aio.StreamStreamCall
    converter: AudioConverter
    finals: asyncio.Task[list[str]]
    language: str


async def _final_texts(call: grpc.aio.StreamStreamCall) -> list[str]:
    texts = []
    async for response in call:
        if response.HasField("final") and response.final.text.strip():
            texts.append(response.final.text.strip())
    return texts


class WyomingHandler(AsyncEventHandler):
    """One client connection."""

    def __init__(self, link: CodaLink, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._link = link
        self._language = ""
        self._listening: _Listening | None = None
        #: Audio of a refused stream is dropped until its AudioStop (the Error was sent once).
        self._dropping_audio = False
        #: The session of Transcripts that name no conversation: one per connection.
        self._own_conversation = f"connection-{uuid.uuid4().hex[:16]}"
        metrics.CONNECTIONS.inc()

    async def handle_event(self, event: Event) -> bool:
        kind = _kind(event)
        began = time.perf_counter()
        try:
            answered = await self._dispatch(event)
        except Refusal as refusal:
            metrics.REQUESTS.labels(kind, refusal.code).inc()
            log.info(
                "wyoming request refused", extra={"event": event.type, "code": refusal.code, "reason": refusal.text}
            )
            await self.write_event(Error(text=refusal.text, code=refusal.code).event())
        except (ConnectionError, asyncio.CancelledError):
            raise  # the client is gone or the server stops
        except Exception as exc:  # a bug here must not cost the client its connection
            log.exception("wyoming request failed", extra={"event": event.type})
            await self._stop_listening(dropping=kind == "asr")
            metrics.REQUESTS.labels(kind, events.CODA_ERROR).inc()
            await self.write_event(Error(text=f"{event.type} failed: {exc}", code=events.CODA_ERROR).event())
        else:
            if answered:
                metrics.REQUESTS.labels(kind, "ok").inc()
                metrics.LATENCY.labels(kind).observe(time.perf_counter() - began)
        return True

    async def _dispatch(self, event: Event) -> bool:
        """Act on one event; True when it completed a request (for the metrics)."""
        if Describe.is_type(event.type):
            await self.write_event(events.describe(await self._link.describe()).event())
        elif Ping.is_type(event.type):
            await self.write_event(Pong(text=_parse(Ping, event).text).event())
            return False
        elif Transcribe.is_type(event.type):
            self._language = _parse(Transcribe, event).language or ""
            return False
        elif AudioStart.is_type(event.type):
            await self._audio_start(_parse(AudioStart, event))
            return False
        elif AudioChunk.is_type(event.type):
            await self._audio_chunk(_parse(AudioChunk, event))
            return False
        elif AudioStop.is_type(event.type):
            return await self._audio_stop()
        elif Synthesize.is_type(event.type):
            await self._synthesize(_parse(Synthesize, event))
        elif Transcript.is_type(event.type):
            await self._handle(_parse(Transcript, event))
        else:
            raise Refusal(
                events.UNKNOWN_EVENT,
                f"unknown event type {event.type!r}; Coda answers describe, ping, transcribe + audio-start/"
                "audio-chunk/audio-stop, synthesize and transcript (handle)",
            )
        return True

    # --- asr --------------------------------------------------------------------------------

    async def _audio_start(self, start: AudioStart) -> None:
        await self._stop_listening()
        self._dropping_audio = True  # until this stream is accepted
        try:
            converter = AudioConverter(WyomingFormat(start.rate, start.width, start.channels))
        except AudioRefused as exc:
            raise Refusal(events.BAD_AUDIO, f"audio-start refused: {exc}") from None
        language, self._language = self._language, ""
        call = self._link.voice.Transcribe()
        config = voice_pb2.TranscribeConfig(
            format=converter.voice_format,
            language=language,
            # Several utterances (pauses) may come before AudioStop; all of them are the transcript.
            continuous=True,
        )
        try:
            await call.write(voice_pb2.TranscribeRequest(config=config))
        except grpc.aio.AioRpcError as exc:
            raise self._link.refusal(exc, "transcribe") from None
        self._listening = _Listening(call, converter, asyncio.create_task(_final_texts(call)), language)
        self._dropping_audio = False

    async def _audio_chunk(self, chunk: AudioChunk) -> None:
        listening = self._listening
        if listening is None:
            if self._dropping_audio:
                return
            raise Refusal(events.BAD_REQUEST, "audio-chunk without audio-start")
        try:
            audio = listening.converter.push(WyomingFormat(chunk.rate, chunk.width, chunk.channels), chunk.audio)
            if listening.finals.done():  # Coda ended the stream early: say why now
                await listening.finals
            if audio:
                await listening.call.write(voice_pb2.TranscribeRequest(audio=audio))
        except AudioRefused as exc:
            await self._stop_listening(dropping=True)
            raise Refusal(events.BAD_AUDIO, str(exc)) from None
        except grpc.aio.AioRpcError as exc:
            await self._stop_listening(dropping=True)
            raise self._link.refusal(exc, "transcribe") from None

    async def _audio_stop(self) -> bool:
        listening, self._listening = self._listening, None
        if listening is None:
            if self._dropping_audio:
                self._dropping_audio = False
                return False
            raise Refusal(events.BAD_REQUEST, "audio-stop without audio-start")
        try:
            await listening.call.write(voice_pb2.TranscribeRequest(end=voice_pb2.AudioStreamEnd()))
            await listening.call.done_writing()
            texts = await listening.finals
        except grpc.aio.AioRpcError as exc:
            raise self._link.refusal(exc, "transcribe") from None
        finally:
            listening.call.cancel()
        await self.write_event(Transcript(text=" ".join(texts), language=listening.language or None).event())
        return True

    async def _stop_listening(self, dropping: bool = False) -> None:
        listening, self._listening = self._listening, None
        self._dropping_audio = dropping
        if listening is not None:
            listening.call.cancel()
            listening.finals.cancel()
            await asyncio.gather(listening.finals, return_exceptions=True)

    # --- tts --------------------------------------------------------------------------------

    async def _synthesize(self, request: Synthesize) -> None:
        text = (request.text or "").strip()
        if not text:
            raise Refusal(events.BAD_REQUEST, "synthesize needs text to speak (got none)")
        voice = request.voice.name if request.voice and request.voice.name else ""
        began = time.perf_counter()
        requests = [
            voice_pb2.SynthesizeRequest(config=voice_pb2.SynthesizeConfig(voice=voice)),
            voice_pb2.SynthesizeRequest(text=voice_pb2.SynthesizeText(text=text, flush=True)),
        ]
        rate = 0
        try:
            async for response in self._link.voice.Synthesize(iter(requests)):
                kind = response.WhichOneof("response")
                if kind == "started":
                    rate = response.started.sample_rate
                    await self.write_event(AudioStart(rate=rate, width=2, channels=1).event())
                elif kind == "audio":
                    if response.audio.sequence == 0:
                        metrics.TTS_FIRST_AUDIO.observe(time.perf_counter() - began)
                    chunk = AudioChunk(rate=rate, width=2, channels=1, audio=response.audio.pcm)
                    await self.write_event(chunk.event())
                elif kind == "finished":
                    await self.write_event(AudioStop().event())
        except grpc.aio.AioRpcError as exc:
            raise self._link.refusal(exc, "synthesize") from None

    # --- handle -----------------------------------------------------------------------------

    async def _handle(self, transcript: Transcript) -> None:
        text = (transcript.text or "").strip()
        if not text:
            raise Refusal(events.BAD_REQUEST, "transcript to handle has no text")
        conversation = events.conversation_key(transcript.context) or self._own_conversation
        answer = await self._link.ask(events.session_id_for(conversation), text)
        await self.write_event(Handled(text=answer, context={"conversation_id": conversation}).event())

    async def disconnect(self) -> None:
        await self._stop_listening()


def _parse(kind: type[_Parsed], event: Event) -> _Parsed:
    try:
        return kind.from_event(event)  # type: ignore[attr-defined, no-any-return]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise Refusal(events.BAD_REQUEST, f"malformed {event.type} event: {type(exc).__name__}: {exc}") from None


def _kind(event: Event) -> str:
    """The metrics label of a request: the Wyoming domain it belongs to."""
    if Describe.is_type(event.type):
        return "describe"
    if Synthesize.is_type(event.type):
        return "tts"
    if Transcript.is_type(event.type):
        return "handle"
    if event.type in ("transcribe", "audio-start", "audio-chunk", "audio-stop"):
        return "asr"
    return "other"
