"""The grpc.aio servicer of coda.v1.Voice: moves messages between the network and the cores.

Transcribe: config, then audio -> PcmDecoder -> Segmenter (VAD) -> STT engine -> responses.
Awaiting the engine for each chunk before reading the next is the back-pressure: a client that
sends faster than recognition runs is slowed by gRPC flow control, never buffered without bound.
Synthesize: a reader task feeds the SentenceSplitter; the response loop speaks each sentence as
it completes, re-chunked to `tts_chunk_ms`, and checks for cancel between chunks.
Events go to the bus with the request's session and correlation ids.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass

import grpc
from google.protobuf.message import Message

from coda.bus.publisher import EventPublisher
from coda.config import VoiceConfig
from coda.runtime.refusal import drain, refuse
from coda.schema import new_event
from coda.v1 import events_pb2, voice_pb2, voice_pb2_grpc
from coda.voice import metrics
from coda.voice.audio import (
    MAX_SAMPLE_RATE,
    MIN_SAMPLE_RATE,
    AudioFormatError,
    PcmDecoder,
    PcmResampler,
    Rechunker,
    validate_format,
)
from coda.voice.engines.base import EngineError, EngineUnavailable, SttStream
from coda.voice.engines.espeak_tts import VoiceNotFound
from coda.voice.engines.factory import Engines
from coda.voice.segmenter import (
    Segmenter,
    SegmenterSettings,
    SpeechAudio,
    SpeechEnded,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
)
from coda.voice.sentences import SentenceSplitter, speakable

log = logging.getLogger(__name__)

SOURCE = "voice"
#: Text a Synthesize client may have queued but not yet spoken.
MAX_PENDING_TEXT_CHARS = 100_000
READY_TIMEOUT_SECONDS = 60.0
#: How long a single-utterance Transcribe keeps reading a client's audio after its final: enough
#: for a client streaming in real time to read the final and stop.
AFTER_FINAL_DRAIN_SECONDS = 3.0


@dataclass
class _Ids:
    session_id: str
    correlation_id: str


class VoiceServicer(voice_pb2_grpc.VoiceServicer):
    def __init__(self, config: VoiceConfig, publisher: EventPublisher) -> None:
        self._config = config
        self._publisher = publisher
        self._engines: Engines | None = None
        self._ready = asyncio.Event()

    def set_engines(self, engines: Engines) -> None:
        self._engines = engines
        self._ready.set()

    async def _wait_engines(self, context: grpc.aio.ServicerContext) -> Engines:
        try:
            await asyncio.wait_for(self._ready.wait(), READY_TIMEOUT_SECONDS)
        except TimeoutError:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "voice engines are still loading")
        assert self._engines is not None
        return self._engines

    def _publish(self, payload: Message, ids: _Ids) -> str:
        """Publish the payload as an event; its id goes on the response that carries the same payload,
        so a caller forwarding it keeps the id (one event, not two)."""
        event = new_event(SOURCE, payload, session_id=ids.session_id, correlation_id=ids.correlation_id)
        self._publisher.publish(event)
        return event.id

    async def Describe(
        self, request: voice_pb2.DescribeVoiceRequest, context: grpc.aio.ServicerContext
    ) -> voice_pb2.DescribeVoiceResponse:
        engines = await self._wait_engines(context)
        default = self._config.tts_voice or engines.tts.default_voice
        voices = sorted(engines.tts.voices(), key=lambda name: name != default)
        return voice_pb2.DescribeVoiceResponse(
            stt_engine=engines.stt.name, tts_engine=engines.tts.name, voices=voices, default_voice=default
        )

    # --- Transcribe ------------------------------------------------------------------------

    async def Transcribe(
        self, request_iterator: AsyncIterator[voice_pb2.TranscribeRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[voice_pb2.TranscribeResponse]:
        engines = await self._wait_engines(context)
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None or first.WhichOneof("request") != "config":
            await refuse(
                context, requests, grpc.StatusCode.INVALID_ARGUMENT, "the first TranscribeRequest must carry a config"
            )
        setup = first.config
        try:
            fmt = validate_format(setup.format)
        except AudioFormatError as exc:
            await refuse(context, requests, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if not engines.stt.supports(setup.language):
            await refuse(
                context,
                requests,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"language {setup.language!r} is not supported by the {engines.stt.name} speech recogniser",
            )
        ids = _Ids(setup.session_id, setup.correlation_id)
        language = setup.language
        rate = engines.vad.sample_rate
        settings = SegmenterSettings(
            sample_rate=rate,
            frame_ms=engines.vad.frame_ms,
            silence_ms=setup.silence_ms or self._config.silence_ms,
            start_window_ms=engines.vad.start_window_ms,
            vad_lag_ms=engines.vad.end_lag_ms,
            max_utterance_ms=int(self._config.max_utterance_seconds * 1000),
            pause_ms=self._config.early_decode_ms,
            continuous=setup.continuous,
        )
        decoder = PcmDecoder(fmt, rate)
        segmenter = Segmenter(engines.vad.classifier().is_speech, settings)
        partial_bytes = int(rate * self._config.partial_interval_ms / 1000) * 2

        started = events_pb2.VoiceSttStarted(
            mode="stream", engine=engines.stt.name, sample_rate=fmt.sample_rate, language=language
        )
        yield voice_pb2.TranscribeResponse(started=started, event_id=self._publish(started, ids))

        stream: SttStream | None = None
        since_partial = 0
        last_partial = ""
        audio_seconds = 0.0
        try:
            finished = client_ended = False
            while not finished:
                request = await anext(requests, None)
                kind = request.WhichOneof("request") if request is not None else "end"
                if kind == "audio":
                    actions = segmenter.push(decoder.push(request.audio))  # type: ignore[union-attr]
                elif kind == "end":
                    actions = segmenter.finish()
                    finished = client_ended = True
                else:
                    await context.abort(
                        grpc.StatusCode.INVALID_ARGUMENT, "a TranscribeRequest config may only come first"
                    )
                for action in actions:
                    if isinstance(action, SpeechStarted):
                        stream = await engines.stt.open(language)
                        since_partial, last_partial = 0, ""
                        audio_seconds = len(action.audio) / (2 * rate)
                        await stream.feed(action.audio)
                        payload = events_pb2.VoiceVadSpeechStarted(offset_ms=action.offset_ms)
                        yield voice_pb2.TranscribeResponse(speech_started=payload, event_id=self._publish(payload, ids))
                    elif isinstance(action, SpeechAudio) and stream is not None:
                        await stream.feed(action.audio)
                        audio_seconds += len(action.audio) / (2 * rate)
                        since_partial += len(action.audio)
                        # None as the speech trails off: a partial decode then would hold up the final
                        # one (one decode at a time), which starts at the pause.
                        if setup.partials and since_partial >= partial_bytes and segmenter.speaking:
                            since_partial = 0
                            text = await stream.partial()
                            if text and text != last_partial:
                                last_partial = text
                                partial = events_pb2.VoiceSttPartial(text=text)
                                yield voice_pb2.TranscribeResponse(
                                    partial=partial, event_id=self._publish(partial, ids)
                                )
                    elif isinstance(action, SpeechPaused) and stream is not None:
                        # The rest of silence_ms is what the end of speech would have fed.
                        await stream.pause(max(0, settings.silence_ms - settings.pause_ms))
                    elif isinstance(action, SpeechResumed) and stream is not None:
                        await stream.resume()
                    elif isinstance(action, SpeechEnded) and stream is not None:
                        ended = events_pb2.VoiceVadSpeechEnded(
                            offset_ms=action.offset_ms, speech_duration_ms=action.duration_ms
                        )
                        yield voice_pb2.TranscribeResponse(speech_ended=ended, event_id=self._publish(ended, ids))
                        began = time.perf_counter()
                        transcript = await stream.finish()
                        stream = None
                        elapsed = time.perf_counter() - began
                        metrics.STT_FINALIZE_SECONDS.observe(elapsed)
                        metrics.UTTERANCES.labels(reason=action.reason).inc()
                        final = events_pb2.VoiceSttFinal(
                            text=transcript.text,
                            confidence=transcript.confidence,
                            duration_ms=action.duration_ms,
                            language=transcript.language or language,
                            engine=transcript.engine or engines.stt.name,
                        )
                        yield voice_pb2.TranscribeResponse(final=final, event_id=self._publish(final, ids))
                if segmenter.done:
                    finished = True
            if not client_ended:
                # The utterance ended before the client's audio did. A client reads the final and
                # stops; ending the call while it still writes would turn this OK into INTERNAL.
                await drain(requests, AFTER_FINAL_DRAIN_SECONDS)
        except EngineError as exc:
            metrics.ERRORS.labels(operation="transcribe", cause=type(exc).__name__).inc()
            self._publish(events_pb2.VoiceSttError(message=str(exc), engine=engines.stt.name), ids)
            code = grpc.StatusCode.UNAVAILABLE if isinstance(exc, EngineUnavailable) else grpc.StatusCode.INTERNAL
            await context.abort(code, f"speech recognition failed: {exc}")
        finally:
            if stream is not None:
                await stream.close()

    # --- Synthesize ------------------------------------------------------------------------

    async def Synthesize(
        self, request_iterator: AsyncIterator[voice_pb2.SynthesizeRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[voice_pb2.SynthesizeResponse]:
        engines = await self._wait_engines(context)
        requests = aiter(request_iterator)
        first = await anext(requests, None)
        if first is None or first.WhichOneof("request") != "config":
            await refuse(
                context, requests, grpc.StatusCode.INVALID_ARGUMENT, "the first SynthesizeRequest must carry a config"
            )
        setup = first.config
        out_rate = setup.sample_rate or engines.tts.sample_rate
        if not MIN_SAMPLE_RATE <= out_rate <= MAX_SAMPLE_RATE:
            await refuse(
                context,
                requests,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"sample_rate {out_rate} Hz is out of range {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz",
            )
        ids = _Ids(setup.session_id, setup.correlation_id)
        voice = setup.voice or self._config.tts_voice or engines.tts.default_voice
        if not engines.tts.has_voice(voice):
            # Refused before any audio, so a client learns at once what it may ask for instead.
            message = f"voice {voice!r} is not installed; installed voices: {', '.join(engines.tts.voices())}"
            metrics.ERRORS.labels(operation="synthesize", cause="VoiceNotFound").inc()
            self._publish(events_pb2.VoiceTtsError(message=message, engine=engines.tts.name), ids)
            await refuse(context, requests, grpc.StatusCode.INVALID_ARGUMENT, message)
        sentences: asyncio.Queue[str | None] = asyncio.Queue()
        cancelled = asyncio.Event()
        protocol_error: list[str] = []

        async def read_text() -> None:
            splitter = SentenceSplitter(self._config.max_sentence_chars, self._config.first_clause_words)
            pending = 0
            try:
                async for request in requests:
                    kind = request.WhichOneof("request")
                    if kind == "text":
                        ready = splitter.feed(request.text.text)
                        if request.text.flush:
                            ready += splitter.flush()
                        for sentence in ready:
                            sentences.put_nowait(sentence)
                        pending += len(request.text.text)
                        if pending - spoken_chars[0] > MAX_PENDING_TEXT_CHARS:
                            protocol_error.append(
                                f"more than {MAX_PENDING_TEXT_CHARS} characters of text are waiting to be spoken"
                            )
                            return
                    elif kind == "cancel":
                        cancelled.set()
                        return
                    else:
                        protocol_error.append("a SynthesizeRequest config may only come first")
                        return
                for sentence in splitter.flush():
                    sentences.put_nowait(sentence)
            finally:
                sentences.put_nowait(None)

        spoken_chars = [0]
        reader = asyncio.create_task(read_text())
        started = events_pb2.VoiceTtsStarted(voice=voice, engine=engines.tts.name, sample_rate=out_rate)
        started_id = self._publish(started, ids)
        chunk_bytes = max(1, out_rate * self._config.tts_chunk_ms // 1000) * 2
        sequence = 0
        total_samples = 0

        def audio_chunk(pcm: bytes, text: str) -> voice_pb2.SynthesizeResponse:
            nonlocal sequence, total_samples
            samples = len(pcm) // 2
            meta = events_pb2.VoiceTtsAudio(
                sequence=sequence,
                sample_rate=out_rate,
                samples=samples,
                offset_ms=total_samples * 1000 / out_rate,
                text=text,
            )
            meta_id = self._publish(meta, ids)  # metadata only: audio stays off the bus
            sequence += 1
            total_samples += samples
            audio = events_pb2.VoiceTtsAudio()
            audio.CopyFrom(meta)
            audio.pcm = pcm
            return voice_pb2.SynthesizeResponse(audio=audio, event_id=meta_id)

        try:
            yield voice_pb2.SynthesizeResponse(started=started, event_id=started_id)
            while not cancelled.is_set():
                sentence = await sentences.get()
                if sentence is None or cancelled.is_set():
                    break
                spoken_chars[0] += len(sentence)
                if not speakable(sentence):
                    continue
                rechunker = Rechunker(chunk_bytes)
                resampler: PcmResampler | None = None
                caption = sentence
                began = time.perf_counter()
                synth_seconds = 0.0
                produced = 0
                async with aclosing(engines.tts.synthesize(sentence, voice)) as pieces:
                    while not cancelled.is_set():
                        step = time.perf_counter()
                        piece = await anext(pieces, None)
                        synth_seconds += time.perf_counter() - step
                        if piece is None:
                            break
                        if resampler is None or resampler.src_rate != piece.sample_rate:
                            resampler = PcmResampler(piece.sample_rate, out_rate)
                        for pcm in rechunker.push(resampler.process(piece.pcm)):
                            if caption:
                                metrics.TTS_FIRST_AUDIO_SECONDS.observe(time.perf_counter() - began)
                            produced += len(pcm) // 2
                            yield audio_chunk(pcm, caption)
                            caption = ""
                            if cancelled.is_set():
                                break
                if cancelled.is_set():
                    break
                rest = rechunker.flush()
                if rest:
                    produced += len(rest) // 2
                    yield audio_chunk(rest, caption)
                if produced:
                    metrics.TTS_REAL_TIME_FACTOR.observe(synth_seconds / (produced / out_rate))
            if protocol_error:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, protocol_error[0])
            finished = events_pb2.VoiceTtsFinished(
                audio_duration_ms=total_samples * 1000 / out_rate, cancelled=cancelled.is_set()
            )
            yield voice_pb2.SynthesizeResponse(finished=finished, event_id=self._publish(finished, ids))
        except VoiceNotFound as exc:
            metrics.ERRORS.labels(operation="synthesize", cause="VoiceNotFound").inc()
            self._publish(events_pb2.VoiceTtsError(message=str(exc), engine=engines.tts.name), ids)
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except EngineError as exc:
            metrics.ERRORS.labels(operation="synthesize", cause=type(exc).__name__).inc()
            self._publish(events_pb2.VoiceTtsError(message=str(exc), engine=engines.tts.name), ids)
            code = grpc.StatusCode.UNAVAILABLE if isinstance(exc, EngineUnavailable) else grpc.StatusCode.INTERNAL
            await context.abort(code, f"speech synthesis failed: {exc}")
        finally:
            reader.cancel()
