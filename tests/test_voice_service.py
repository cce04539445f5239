"""The Voice service over real gRPC, with real engines: eSpeak speech streamed through Transcribe,
Synthesize streaming and cancel, bad input, the Whisper engine (accuracy, determinism, partials, a
corrupt model falling back to pocketsphinx), and the Wyoming engines against a real Wyoming server
process (plus the breaker falling back to the embedded engines when the server is gone).

WER thresholds: the default engine (Whisper tiny.en) on eSpeak's en-us voice measured 0.00-0.14 per
sentence on the sentences used here (bench/voice.py has the full table); 0.3 leaves room for eSpeak's
variation (the bounds were measured when each test's speech still depended on the test order; it
is now rendered in a fresh process, tests/espeak_speech.py) without letting a broken pipeline (WER
~1) pass. pocketsphinx's own tests
(its "domain" command model, the loud first utterance) pin stt_engine = "pocketsphinx".
"""

from __future__ import annotations

import asyncio
import os
import resource
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from coda.v1 import bus_pb2, bus_pb2_grpc, voice_pb2, voice_pb2_grpc
from coda.voice.engines import whisper_stt
from coda.voice.engines.base import EngineError
from coda.voice.engines.pocketsphinx_stt import PocketsphinxStt
from coda.voice.engines.whisper_stt import (
    BUNDLED_SHA256,
    WhisperStt,
    bundled_model_dir,
    verify_model_dir,
    window_frames,
    without_repeats,
)
from coda.voice.quality import word_error_rate
from coda.voice.wyoming_server import BANNER
from tests.conftest import Processes, make_config, running_host
from tests.espeak_speech import espeak_speech

RATE = 16_000
PCM16 = voice_pb2.AUDIO_ENCODING_PCM16
SENTENCES = ["i would like a cup of coffee", "open the garage door", "what is the weather like today"]


async def speech(text: str, rate: int = RATE) -> bytes:
    """eSpeak NG en-us, rendered in a fresh process: the same audio whatever test ran before."""
    return await espeak_speech(text, "en-us", rate)


def silence(seconds: float, rate: int = RATE) -> bytes:
    return bytes(int(seconds * rate) * 2)


def transcribe_config(rate: int = RATE, **fields: object) -> voice_pb2.TranscribeRequest:
    return voice_pb2.TranscribeRequest(
        config=voice_pb2.TranscribeConfig(format=voice_pb2.AudioFormat(encoding=PCM16, sample_rate=rate), **fields)
    )


async def audio_requests(
    setup: voice_pb2.TranscribeRequest, audio: bytes, chunk: int = 3200, pace: float = 0.0, end: bool = True
) -> AsyncIterator[voice_pb2.TranscribeRequest]:
    yield setup
    for i in range(0, len(audio), chunk):
        yield voice_pb2.TranscribeRequest(audio=audio[i : i + chunk])
        if pace:
            await asyncio.sleep(pace)
    if end:
        yield voice_pb2.TranscribeRequest(end=voice_pb2.AudioStreamEnd())


async def collect(call) -> list[tuple[str, object]]:  # type: ignore[no-untyped-def]
    return [(r.WhichOneof("response"), getattr(r, r.WhichOneof("response"))) async for r in call]


async def bus_events(address: str, session_id: str, want: set[str], timeout: float = 10.0) -> list:
    """Every retained event of a session, once all `want` payload kinds were seen."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = bus_pb2_grpc.EventBusStub(channel)
        call = stub.Subscribe(bus_pb2.SubscribeRequest(session_id=session_id, after_seq=0))
        events: list = []

        async def read() -> None:
            async for response in call:
                if response.WhichOneof("message") == "batch":
                    events.extend(response.batch.events)
                    if want <= {e.WhichOneof("payload") for e in events}:
                        return

        try:
            await asyncio.wait_for(read(), timeout)
        finally:
            call.cancel()
    return events


@pytest.fixture
async def voice(tmp_path: Path) -> AsyncIterator[tuple[voice_pb2_grpc.VoiceStub, str]]:
    config = make_config(tmp_path, CODA_VOICE__MAX_UTTERANCE_SECONDS="3")
    async with running_host(config, only="bus,voice") as host, grpc.aio.insecure_channel(host.address) as channel:
        yield voice_pb2_grpc.VoiceStub(channel), host.address


async def test_real_time_sentence_is_segmented_and_transcribed(voice) -> None:  # type: ignore[no-untyped-def]
    stub, address = voice
    sentence = SENTENCES[0]
    spoken = await speech(sentence)
    audio = silence(1.0) + spoken + silence(1.5)
    setup = transcribe_config(partials=True, session_id="s-rt", correlation_id="turn-1")
    responses = await collect(stub.Transcribe(audio_requests(setup, audio, chunk=640, pace=0.02)))
    kinds = [k for k, _ in responses]
    assert kinds[0] == "started" and kinds[-1] == "final"
    assert kinds.count("speech_started") == kinds.count("speech_ended") == 1
    # Partials of a 2 s sentence depend on how fast the machine decodes (one decode at a time, and
    # none beside the early final decode at a pause); test_whisper_partials_arrive_while_the_user_speaks
    # checks them on a sentence long enough to be sure.
    started = next(p for k, p in responses if k == "speech_started")
    ended = next(p for k, p in responses if k == "speech_ended")
    speech_ms = len(spoken) / 2 / RATE * 1000
    # eSpeak pads a little silence itself, so the boundaries may sit inside the audio it made.
    assert 700 <= started.offset_ms <= 1000 + 300
    assert 1000 + speech_ms - 400 <= ended.offset_ms <= 1000 + speech_ms + 300
    final = responses[-1][1]
    assert word_error_rate(sentence, final.text) <= 0.3, final.text
    assert final.engine == "whisper" and final.language == "en"
    assert 0 < final.confidence <= 1
    events = await bus_events(address, "s-rt", {"voice_stt_final", "voice_vad_speech_ended"})
    types = [e.WhichOneof("payload") for e in events]
    assert {"voice_stt_started", "voice_vad_speech_started", "voice_stt_final"} <= set(types)
    assert all(e.correlation_id == "turn-1" and e.source == "voice" for e in events)


async def test_the_call_stays_open_after_the_final_until_the_client_ends_it(voice, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # A client streaming a microphone learns of the final only after writing more audio; had the
    # server ended the call there, grpc's asyncio client could report INTERNAL instead of OK
    # (grpc/grpc#36066), as it once did to the test above in CI.
    stub, _ = voice
    audio = await speech(SENTENCES[1]) + silence(0.8)
    call = stub.Transcribe()
    await call.write(transcribe_config())
    for start in range(0, len(audio), 3200):
        await call.write(voice_pb2.TranscribeRequest(audio=audio[start : start + 3200]))
    kinds = []
    async for response in call:
        kinds.append(response.WhichOneof("response"))
        if kinds[-1] == "final":
            break
    assert kinds[-1] == "final"
    await asyncio.sleep(0.3)
    assert not call.done()
    await call.write(voice_pb2.TranscribeRequest(audio=silence(0.5)))
    await call.write(voice_pb2.TranscribeRequest(end=voice_pb2.AudioStreamEnd()))
    await call.done_writing()
    assert [r async for r in call] == []
    assert await call.code() == grpc.StatusCode.OK

    # A client that neither writes nor ends is not waited for forever.
    monkeypatch.setattr("coda.voice.service.AFTER_FINAL_DRAIN_SECONDS", 0.5)
    call = stub.Transcribe()
    await call.write(transcribe_config())
    await call.write(voice_pb2.TranscribeRequest(audio=audio))
    finals = [r async for r in call if r.WhichOneof("response") == "final"]
    assert len(finals) == 1 and await call.code() == grpc.StatusCode.OK


async def test_continuous_stream_at_full_speed_transcribes_each_utterance(voice) -> None:  # type: ignore[no-untyped-def]
    stub, _ = voice
    spoken_sentences = [SENTENCES[0], SENTENCES[2]]
    audio = silence(0.5)
    for sentence in spoken_sentences:
        audio += await speech(sentence) + silence(1.2)
    # Odd chunk sizes: PCM16 samples split across messages must be carried, not dropped.
    responses = await collect(
        stub.Transcribe(audio_requests(transcribe_config(continuous=True, silence_ms=500), audio, chunk=4001))
    )
    finals = [p.text for k, p in responses if k == "final"]
    assert len(finals) == 2
    assert word_error_rate(" ".join(spoken_sentences), " ".join(finals)) <= 0.3, finals


async def test_other_rates_stereo_and_float_are_converted(voice) -> None:  # type: ignore[no-untyped-def]
    stub, _ = voice
    spoken = await speech(SENTENCES[2], 44_100)
    mono = np.frombuffer(silence(0.5, 44_100) + spoken + silence(1.5, 44_100), "<i2").astype(np.float32) / 32768
    stereo = np.stack([mono, mono], axis=1).astype("<f4").tobytes()
    setup = voice_pb2.TranscribeRequest(
        config=voice_pb2.TranscribeConfig(
            format=voice_pb2.AudioFormat(encoding=voice_pb2.AUDIO_ENCODING_FLOAT32, sample_rate=44_100, channels=2)
        )
    )
    responses = await collect(stub.Transcribe(audio_requests(setup, stereo, chunk=8191)))
    assert word_error_rate(SENTENCES[2], responses[-1][1].text) <= 0.3


async def test_wrong_declared_rate_still_answers(voice) -> None:  # type: ignore[no-untyped-def]
    stub, _ = voice
    audio = silence(0.5, 22_050) + await speech(SENTENCES[2], 22_050) + silence(1.0, 22_050)
    responses = await collect(stub.Transcribe(audio_requests(transcribe_config(16_000), audio)))
    assert responses[0][0] == "started"  # garbled audio, but a well-formed stream


@pytest.mark.parametrize(
    ("first", "detail"),
    [
        (transcribe_config(0), "sample_rate 0 Hz"),
        (
            voice_pb2.TranscribeRequest(
                config=voice_pb2.TranscribeConfig(format=voice_pb2.AudioFormat(sample_rate=16000))
            ),
            "encoding",
        ),
        (
            voice_pb2.TranscribeRequest(
                config=voice_pb2.TranscribeConfig(
                    format=voice_pb2.AudioFormat(encoding=PCM16, sample_rate=16000, channels=6)
                )
            ),
            "channels",
        ),
        (voice_pb2.TranscribeRequest(audio=b"\0\0"), "first TranscribeRequest must carry a config"),
        (transcribe_config(language="fr"), "not supported"),
    ],
)
async def test_bad_setup_is_invalid_argument(voice, first: voice_pb2.TranscribeRequest, detail: str) -> None:  # type: ignore[no-untyped-def]
    stub, _ = voice
    # The bad message alone: a write racing the server's abort makes grpc.aio cancel the call on
    # the client side (CANCELLED), hiding the status this test is about.
    call = stub.Transcribe()
    await call.write(first)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(call)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert detail in (caught.value.details() or "")


async def test_silence_only_gives_no_utterance(voice) -> None:  # type: ignore[no-untyped-def]
    stub, _ = voice
    responses = await collect(stub.Transcribe(audio_requests(transcribe_config(), silence(5.0))))
    assert [k for k, _ in responses] == ["started"]


async def test_endless_noise_is_force_finalized_and_memory_stays_bounded(tmp_path: Path) -> None:
    """Loud noise is speech to WebRTC's VAD: utterances end at max_utterance_seconds (3 s here).
    Then ten minutes of quiet room noise, streamed as fast as possible, must not grow memory.
    (WebRTC: Silero, the default, takes no noise for speech, and costs ~20 s for ten minutes here.)"""
    config = make_config(tmp_path, CODA_VOICE__MAX_UTTERANCE_SECONDS="3", CODA_VOICE__VAD_ENGINE="webrtc")
    rng = np.random.default_rng(3)
    loud = np.clip(rng.normal(0, 3000, RATE * 12), -32768, 32767).astype("<i2").tobytes()
    quiet = np.clip(rng.normal(0, 200, RATE * 10), -32768, 32767).astype("<i2").tobytes()

    async def ten_minutes() -> AsyncIterator[voice_pb2.TranscribeRequest]:
        yield transcribe_config(continuous=True)
        for _ in range(60):
            for i in range(0, len(quiet), 32000):
                yield voice_pb2.TranscribeRequest(audio=quiet[i : i + 32000])

    async with running_host(config, only="bus,voice") as host, grpc.aio.insecure_channel(host.address) as channel:
        stub = voice_pb2_grpc.VoiceStub(channel)
        responses = await collect(
            stub.Transcribe(audio_requests(transcribe_config(continuous=True), loud, chunk=16000))
        )
        ended = [p for k, p in responses if k == "speech_ended"]
        assert len(ended) >= 3 and all(p.speech_duration_ms <= 3000 + 30 for p in ended)
        assert sum(k == "final" for k, _ in responses) == len(ended)

        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        responses = await collect(stub.Transcribe(ten_minutes()))
        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert responses[0][0] == "started"
    assert grown_mb < 60, f"peak RSS grew {grown_mb:.0f} MB over ten minutes of audio (19 MB of PCM)"


async def test_loud_noise_opens_no_utterance_with_the_default_vad(voice) -> None:  # type: ignore[no-untyped-def]
    stub, _ = voice
    rng = np.random.default_rng(3)
    loud = np.clip(rng.normal(0, 3000, RATE * 12), -32768, 32767).astype("<i2").tobytes()
    responses = await collect(stub.Transcribe(audio_requests(transcribe_config(continuous=True), loud, chunk=16000)))
    assert [k for k, _ in responses] == ["started"]


async def test_client_vanishing_mid_stream_leaves_the_server_serving(voice) -> None:  # type: ignore[no-untyped-def]
    stub, _ = voice
    spoken = await speech(SENTENCES[0])
    tasks_before = len(asyncio.all_tasks())
    call = stub.Transcribe(audio_requests(transcribe_config(), silence(0.5) + spoken, chunk=1600, pace=0.01, end=False))
    async for response in call:
        if response.WhichOneof("response") == "speech_started":
            call.cancel()
            break
    await asyncio.sleep(0.5)
    responses = await collect(
        stub.Transcribe(audio_requests(transcribe_config(), silence(0.5) + spoken + silence(1.0)))
    )
    # Served in full after the abandoned stream. Accuracy is the business of the
    # tests above: on this one sentence the general model's result swings with a sample of eSpeak
    # output.
    assert [k for k, _ in responses] == ["started", "speech_started", "speech_ended", "final"]
    assert responses[-1][1].text.strip()
    await asyncio.sleep(0.2)
    assert len(asyncio.all_tasks()) <= tasks_before + 1


# --- Synthesize ------------------------------------------------------------------------------


class Requests:
    """A request stream the test feeds while reading responses."""

    def __init__(self, first: voice_pb2.SynthesizeRequest) -> None:
        self._queue: asyncio.Queue[voice_pb2.SynthesizeRequest | None] = asyncio.Queue()
        self._queue.put_nowait(first)

    def text(self, text: str, flush: bool = False) -> None:
        self._queue.put_nowait(voice_pb2.SynthesizeRequest(text=voice_pb2.SynthesizeText(text=text, flush=flush)))

    def cancel(self) -> None:
        self._queue.put_nowait(voice_pb2.SynthesizeRequest(cancel=voice_pb2.SynthesizeCancel()))

    def close(self) -> None:
        self._queue.put_nowait(None)

    async def __aiter__(self) -> AsyncIterator[voice_pb2.SynthesizeRequest]:
        while (request := await self._queue.get()) is not None:
            yield request


async def test_first_audio_arrives_before_the_text_is_complete(voice) -> None:  # type: ignore[no-untyped-def]
    stub, address = voice
    requests = Requests(
        voice_pb2.SynthesizeRequest(config=voice_pb2.SynthesizeConfig(session_id="s-tts", correlation_id="t"))
    )
    for token in ["Good ", "morning", ". The ", "rest is "]:
        requests.text(token)
    call = stub.Synthesize(requests.__aiter__())
    kinds, chunks = [], []
    async for response in call:
        kind = response.WhichOneof("response")
        kinds.append(kind)
        if kind == "audio":
            chunks.append(response.audio)
            if len(chunks) == 1:
                requests.text("still on its way.")
                requests.close()
    assert kinds[0] == "started" and kinds[-1] == "finished"
    assert chunks[0].text == "Good morning." and chunks[0].sample_rate == 22_050
    assert [c.sequence for c in chunks] == list(range(len(chunks)))
    assert "The rest is still on its way." in [c.text for c in chunks]
    assert all(len(c.pcm) == 2 * c.samples for c in chunks)
    assert max(c.samples for c in chunks) == 22_050 * 160 // 1000
    finished = response.finished
    assert not finished.cancelled
    assert finished.audio_duration_ms == pytest.approx(sum(c.samples for c in chunks) / 22.05)
    events = await bus_events(address, "s-tts", {"voice_tts_finished"})
    audio_events = [e.voice_tts_audio for e in events if e.WhichOneof("payload") == "voice_tts_audio"]
    assert len(audio_events) == len(chunks) and all(not a.pcm and a.samples for a in audio_events)


async def test_cancel_stops_mid_sentence(voice) -> None:  # type: ignore[no-untyped-def]
    stub, _ = voice
    requests = Requests(voice_pb2.SynthesizeRequest(config=voice_pb2.SynthesizeConfig(sample_rate=16_000)))
    # About six pieces of max_sentence_chars: however late the cancel is read (a loaded CI machine
    # streamed 58 chunks, most of two pieces, before it did), most of the audio is never made.
    long_sentence = "This sentence goes on and on " + "and on " * 200 + "until it ends."
    requests.text(long_sentence, flush=True)
    requests.text("A second sentence that must never be spoken.", flush=True)
    audio, finished = [], None
    async for response in stub.Synthesize(requests.__aiter__()):
        kind = response.WhichOneof("response")
        if kind == "audio":
            audio.append(response.audio)
            if len(audio) == 2:
                requests.cancel()
        elif kind == "finished":
            finished = response.finished
    assert finished is not None and finished.cancelled
    # The whole text from the same voice, uncancelled, is the measure (it was eSpeak's length of it,
    # a proxy that depended on eSpeak's rendering).
    whole = Requests(voice_pb2.SynthesizeRequest(config=voice_pb2.SynthesizeConfig(sample_rate=16_000)))
    whole.text(long_sentence, flush=True)
    whole.close()
    full = [chunk for kind, chunk in await collect(stub.Synthesize(whole.__aiter__())) if kind == "audio"]
    assert sum(len(c.pcm) for c in audio) < sum(len(c.pcm) for c in full) / 2, (len(audio), len(full))
    assert all(c.sample_rate == 16_000 for c in audio)


async def test_unknown_voice_is_invalid_argument(voice) -> None:  # type: ignore[no-untyped-def]
    stub, _ = voice
    requests = Requests(voice_pb2.SynthesizeRequest(config=voice_pb2.SynthesizeConfig(voice="klingon-9")))
    requests.text("Hello.", flush=True)
    requests.close()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(stub.Synthesize(requests.__aiter__()))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "klingon-9" in (caught.value.details() or "")


async def test_describe_names_the_engines_and_every_voice_synthesize_takes(voice) -> None:  # type: ignore[no-untyped-def]
    stub, _ = voice
    described = await stub.Describe(voice_pb2.DescribeVoiceRequest())
    assert (described.stt_engine, described.tts_engine) == ("whisper", "piper")
    assert described.voices[0] == described.default_voice == "en_US-joe-medium" and "en-us" in described.voices
    for name in (described.voices[0], "en-us"):
        requests = Requests(voice_pb2.SynthesizeRequest(config=voice_pb2.SynthesizeConfig(voice=name)))
        requests.text("Yes.", flush=True)
        requests.close()
        responses = await collect(stub.Synthesize(requests.__aiter__()))
        assert any(kind == "audio" for kind, _ in responses), name


# --- Wyoming engines -------------------------------------------------------------------------


async def test_wyoming_engines_against_a_real_wyoming_server(tmp_path: Path, processes: Processes) -> None:
    _, banner = await asyncio.to_thread(
        processes.start,
        ["-m", "coda.voice.wyoming_server", "--uri", "tcp://127.0.0.1:0", "--language-model", "general"],
        banner=BANNER,
    )
    port = banner.rsplit(":", 1)[1]
    config = make_config(
        tmp_path,
        CODA_VOICE__STT_ENGINE="wyoming",
        CODA_VOICE__TTS_ENGINE="wyoming",
        CODA_VOICE__WYOMING_STT_PORT=port,
        CODA_VOICE__WYOMING_TTS_PORT=port,
    )
    async with running_host(config, only="bus,voice") as host, grpc.aio.insecure_channel(host.address) as channel:
        stub = voice_pb2_grpc.VoiceStub(channel)
        requests = Requests(voice_pb2.SynthesizeRequest(config=voice_pb2.SynthesizeConfig(sample_rate=RATE)))
        requests.text(SENTENCES[2] + ".", flush=True)
        requests.close()
        responses = await collect(stub.Synthesize(requests.__aiter__()))
        assert responses[0][1].engine == "wyoming"
        spoken = b"".join(p.pcm for k, p in responses if k == "audio")
        assert len(spoken) > RATE  # more than half a second of speech
        result = await collect(
            stub.Transcribe(audio_requests(transcribe_config(), silence(0.5) + spoken + silence(1.0)))
        )
        final = result[-1][1]
        assert final.engine == "wyoming"
        assert word_error_rate(SENTENCES[2], final.text) <= 0.5, final.text


async def test_dead_wyoming_server_opens_the_breaker_and_falls_back(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead_port = str(probe.getsockname()[1])
    config = make_config(
        tmp_path,
        CODA_VOICE__STT_ENGINE="wyoming",
        CODA_VOICE__TTS_ENGINE="wyoming",
        CODA_VOICE__WYOMING_STT_PORT=dead_port,
        CODA_VOICE__WYOMING_TTS_PORT=dead_port,
        CODA_VOICE__BREAKER_FAILURES="1",
        CODA_VOICE__WYOMING_TIMEOUT_SECONDS="2",
    )
    async with running_host(config, only="bus,voice") as host, grpc.aio.insecure_channel(host.address) as channel:
        stub = voice_pb2_grpc.VoiceStub(channel)
        spoken = await speech(SENTENCES[0])
        for _ in range(2):  # the first call trips the breaker, the second skips the dead server
            result = await collect(
                stub.Transcribe(audio_requests(transcribe_config(), silence(0.5) + spoken + silence(1.0)))
            )
            assert result[-1][1].engine == "pocketsphinx"
        requests = Requests(voice_pb2.SynthesizeRequest(config=voice_pb2.SynthesizeConfig()))
        requests.text("Still talking.", flush=True)
        requests.close()
        responses = await collect(stub.Synthesize(requests.__aiter__()))
        assert any(k == "audio" for k, _ in responses) and responses[-1][0] == "finished"
        events = await bus_events(host.address, "", {"component_breaker"})
        breaker = [e.component_breaker for e in events if e.WhichOneof("payload") == "component_breaker"]
        assert {b.target for b in breaker} == {f"wyoming:tcp://127.0.0.1:{dead_port}"}
        assert breaker[0].state == 2 and breaker[0].component == "voice" and breaker[0].reason  # BREAKER_STATE_OPEN
    assert os.getpid()  # nothing else to clean up: the host is stopped


# --- the domain language model ------------------------------------------------------------------

COMMANDS = [
    "what time is it in tokyo",
    "what is twelve times seven",
    "remember that my favourite colour is green",
    "what is my favourite colour",
    "set a timer for five minutes",
    "hello coda",
    "what can you do",
]


async def test_assistant_commands_are_recognised_with_the_domain_model(tmp_path: Path) -> None:
    # pocketsphinx with its default voice.stt_language_model = "domain" (Whisper's fallback).
    config = make_config(tmp_path, CODA_VOICE__STT_ENGINE="pocketsphinx")
    async with running_host(config, only="bus,voice") as host, grpc.aio.insecure_channel(host.address) as channel:
        stub = voice_pb2_grpc.VoiceStub(channel)
        audio = silence(0.5)
        for command in COMMANDS:
            audio += await speech(command) + silence(1.2)
        responses = await collect(
            stub.Transcribe(audio_requests(transcribe_config(continuous=True, silence_ms=500), audio))
        )
    finals = [p.text for k, p in responses if k == "final"]
    assert len(finals) == len(COMMANDS), finals
    # Measured over this stream: domain model WER 0.20 (7/35 words) with 4 of 7 exact, the same in
    # repeated runs (0.23 before the first utterance was decoded twice); the general model WER 0.66
    # with none exact. The first commands suffer most: the live cepstral mean adapts over several
    # utterances. 0.35 and 3 leave room for eSpeak's run-to-run variation and still fail a model
    # that is not the domain one.
    assert word_error_rate(" ".join(COMMANDS), " ".join(finals)) <= 0.35, finals
    assert sum(heard == said for heard, said in zip(finals, COMMANDS, strict=True)) >= 3, finals


async def test_a_loud_first_utterance_is_heard_as_well_as_later_ones() -> None:
    # A fresh decoder normalises by the model's generic cepstral mean; this loud command decoded
    # with it came out as "set a what are you today" (measured at 1.5x gain and above).
    command = "set a timer for five minutes"
    spoken = np.frombuffer(await speech(command), dtype=np.int16).astype(np.float64) * 2.0
    loud = silence(0.3) + np.clip(spoken, -32768, 32767).astype(np.int16).tobytes() + silence(0.3)
    stt = PocketsphinxStt(pool_size=1)
    await stt.load()

    async def heard() -> str:
        stream = await stt.open("en")
        await stream.feed(loud)
        return (await stream.finish()).text

    first = await heard()
    # "timer" is sometimes heard as "do" whatever the mean: one word of six is allowed; the generic
    # mean cost four. With this rendering (the same in every run now), one repass after the generic
    # mean still heard "set a report i do"; the second repass hears the command.
    assert word_error_rate(command, first) <= 1 / 6, first
    # At once, so that two of them get new decoders (the pool keeps one): they start from the mean
    # the first utterance left, as the pooled one does, so all three hear the same.
    later = await asyncio.gather(heard(), heard(), heard())
    assert later[0] == later[1] == later[2], later
    assert word_error_rate(command, later[0]) <= 1 / 6, later
    await stt.close()


# --- Whisper, the default engine ----------------------------------------------------------------

OPEN_SENTENCE = "the quick brown fox jumps over the lazy dog"


async def whisper_text(stt: WhisperStt, audio: bytes) -> tuple[str, float]:
    stream = await stt.open("en")
    await stream.feed(audio)
    result = await stream.finish()
    return result.text, result.confidence


async def test_whisper_hears_commands_and_open_sentences(tmp_path: Path) -> None:
    """Through the service with the default engines. Measured over this stream (eSpeak en-us):
    WER 0.07 (pocketsphinx's domain model: 0.20 on the commands alone and ~0.8 on the open
    sentence, which its command grammar cannot say)."""
    said = [*COMMANDS, OPEN_SENTENCE]
    audio = silence(0.5)
    for text in said:
        audio += await speech(text) + silence(1.0)
    config = make_config(tmp_path)
    async with running_host(config, only="bus,voice") as host, grpc.aio.insecure_channel(host.address) as channel:
        stub = voice_pb2_grpc.VoiceStub(channel)
        responses = await collect(stub.Transcribe(audio_requests(transcribe_config(continuous=True), audio)))
    finals = [p for k, p in responses if k == "final"]
    assert len(finals) == len(said), [f.text for f in finals]
    assert {f.engine for f in finals} == {"whisper"}
    heard = [f.text for f in finals]
    assert word_error_rate(" ".join(said), " ".join(heard)) <= 0.15, heard
    # Free speech, not forced into commands (pocketsphinx's command model: ~0.8 on it). eSpeak's
    # audio for a text depends on what it said before in its process (tests/espeak_speech.py), and
    # over 13 such renderings tiny.en got 1 to 4 of these 9 words wrong ("jump"/"dump",
    # "lazy"/"lady", "brown fox"/"round-fark"). Five wrong still tells free recognition from a
    # command grammar.
    assert word_error_rate(OPEN_SENTENCE, heard[-1]) <= 5 / 9, heard[-1]
    assert "coda" in heard[COMMANDS.index("hello coda")].lower()  # the hotword


async def test_whisper_gives_the_same_text_for_the_same_audio() -> None:
    """Nothing carries over between utterances: a different utterance in between changes nothing."""
    stt = WhisperStt()
    await stt.load()
    first, other = await speech(OPEN_SENTENCE), await speech("what time is it in tokyo")
    before = await whisper_text(stt, first)
    await whisper_text(stt, other)
    after = await whisper_text(stt, first)
    assert before == after and before[0]


def test_a_sentence_whisper_decoded_twice_over_is_kept_once() -> None:
    assert without_repeats("Where does my sister live? Where does my sister live?") == "Where does my sister live?"
    assert without_repeats("Set a timer. set a timer! Set a timer.") == "Set a timer."
    assert without_repeats("No. No.") == "No. No."  # short repeats are said
    assert without_repeats("Stop the music. Stop it now.") == "Stop the music. Stop it now."
    assert without_repeats("It is 3.14 today.  Really") == "It is 3.14 today.  Really"  # untouched


def test_whisper_window_fits_the_utterance_up_to_whisper_s_own() -> None:
    assert window_frames(300, 20.0) == 2000  # 3 s of audio in a 20 s window
    assert window_frames(2000, 20.0) == 2000
    assert window_frames(2001, 20.0) == 3000  # does not fit: Whisper's own 30 s
    assert window_frames(300, 0.0) == window_frames(300, 30.0) == 3000
    assert window_frames(3001, 20.0) is None  # longer than one window: decoded in several
    with pytest.raises(ValueError, match="whisper_window_seconds"):
        WhisperStt(window_seconds=31.0)


async def test_whisper_reads_the_configured_prompt_as_the_previous_text() -> None:
    """`voice.whisper_prompt` reaches every decode as Whisper's previous text; empty: no previous text."""
    stt = WhisperStt(prompt="Siobhan and Coda")
    await stt.load()
    model = stt._model
    tokenizer, prompt, _ = whisper_stt._tokenizer(model, "en", stt.prompt)
    assert prompt[0] == tokenizer.sot_prev
    assert tokenizer.decode(prompt[1 : prompt.index(tokenizer.sot)]).strip() == "Siobhan and Coda"
    _, bare, _ = whisper_stt._tokenizer(model, "en", "  ")
    assert bare[0] == tokenizer.sot and tokenizer.sot_prev not in bare
    stream = await stt.open("en")
    assert stream._options(5).prompt == "Siobhan and Coda"
    await stream.close()
    heard, _ = await whisper_text(stt, silence(0.3) + await espeak_speech("hello coda") + silence(0.3))
    assert "coda" in heard.lower()


async def test_whisper_hears_the_same_in_a_short_window_and_decodes_audio_longer_than_one() -> None:
    """The 20 s window (about half the encoder's time) hears about what the 30 s one does, and audio
    over 30 s is decoded in pieces that fit, its start and end both heard.

    Over bench voice's 352 clips the two windows' WER is the same (0.186, 0.185); a single clip may
    come out a word or two apart either way, so this compares the sum over a few sentences."""
    short, full = WhisperStt(window_seconds=20.0), WhisperStt(window_seconds=0.0)
    await short.load()
    await full.load()
    said = [*COMMANDS, OPEN_SENTENCE]
    in_short, in_full = [], []
    for text in said:
        audio = silence(0.3) + await espeak_speech(text) + silence(0.3)
        in_short.append((await whisper_text(short, audio))[0])
        in_full.append((await whisper_text(full, audio))[0])
    short_wer = word_error_rate(" ".join(said), " ".join(in_short))
    full_wer = word_error_rate(" ".join(said), " ".join(in_full))
    assert short_wer <= max(0.15, full_wer + 0.08), (in_short, in_full)
    said, long_audio = [], b""
    for text in [*COMMANDS, OPEN_SENTENCE] * 3:
        said.append(text)
        long_audio += await espeak_speech(text) + silence(0.6)
        if len(long_audio) > 32 * RATE * 2:
            break
    assert len(long_audio) > 32 * RATE * 2
    heard, _ = await whisper_text(short, long_audio)
    # Both pieces heard: one lost would leave half the words missing (WER 0.5 and more). Whisper may
    # drop a short sentence at a piece's end, so the bound allows a couple.
    assert word_error_rate(" ".join(said), heard) <= 0.3, heard
    first = said[0]
    assert word_error_rate(first, " ".join(heard.split()[: len(first.split())])) <= 1 / 3, heard


async def test_whisper_partials_arrive_while_the_user_speaks(tmp_path: Path) -> None:
    # About 8 s: a partial decode has seconds to come back even on a busy 2-core machine.
    long_sentence = (
        "the quick brown fox jumps over the lazy dog and then it runs far away into the forest"
        " to find its friends and play with them until the sun goes down"
    )
    spoken = await speech(long_sentence)
    audio = silence(0.5) + spoken + silence(1.0)
    # About real time (100 ms of audio every 0.1 s): the client is a live microphone.
    requests = audio_requests(transcribe_config(partials=True), audio, chunk=3200, pace=0.1)
    config = make_config(tmp_path)  # the voice fixture cuts utterances at 3 s; this one is 5 s long
    async with running_host(config, only="bus,voice") as host, grpc.aio.insecure_channel(host.address) as channel:
        responses = await collect(voice_pb2_grpc.VoiceStub(channel).Transcribe(requests))
    kinds = [k for k, _ in responses]
    partials = [p.text for k, p in responses[: kinds.index("speech_ended")] if k == "partial"]
    # Each partial re-decodes the utterance (~0.3 s on 2 idle cores, several times that on a busy
    # machine); one of them must come back before the speech has ended.
    assert partials, kinds
    # A partial is a greedy guess at part of the sentence: most of its words are the sentence's.
    guessed = partials[-1].lower().replace(",", " ").replace(".", " ").split()
    assert sum(word in long_sentence.split() for word in guessed) >= len(guessed) / 2, partials
    assert word_error_rate(long_sentence, responses[-1][1].text) <= 0.3, responses[-1][1].text


def corrupt_model_copy(folder: Path) -> Path:
    """The bundled model directory with garbage in model.bin (the other files linked, not copied)."""
    folder.mkdir()
    for source in bundled_model_dir().iterdir():
        if source.name != "model.bin":
            (folder / source.name).symlink_to(source)
    (folder / "model.bin").write_bytes(b"not a ctranslate2 model" * 1000)
    return folder


def test_model_files_are_checked_against_their_pinned_hashes(tmp_path: Path) -> None:
    verify_model_dir(bundled_model_dir(), BUNDLED_SHA256, "reinstall")  # the installed files are intact
    folder = corrupt_model_copy(tmp_path / "model")
    with pytest.raises(EngineError, match=r"model\.bin is corrupt or was replaced .* reinstall"):
        verify_model_dir(folder, BUNDLED_SHA256, "reinstall")
    (folder / "config.json").unlink()
    with pytest.raises(EngineError, match=r"config\.json is missing"):
        verify_model_dir(folder, BUNDLED_SHA256, "reinstall")


async def test_an_unloadable_model_without_a_pinned_hash_is_a_clear_engine_error(tmp_path: Path) -> None:
    stt = WhisperStt(str(corrupt_model_copy(tmp_path / "model")))
    with pytest.raises(EngineError, match=r"cannot load the model in .*model"):
        await stt.load()
    with pytest.raises(EngineError, match="cannot load the model"):
        await stt.open("en")  # the load failure, again, for the breaker to count


async def test_a_corrupt_whisper_model_falls_back_to_pocketsphinx(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = corrupt_model_copy(tmp_path / "model")
    config = make_config(
        tmp_path,
        CODA_VOICE__WHISPER_MODEL_DIR=str(folder),
        CODA_VOICE__WHISPER_MODEL_SHA256=BUNDLED_SHA256["model.bin"],
    )
    with caplog.at_level("ERROR"):
        async with running_host(config, only="bus,voice") as host:
            async with grpc.aio.insecure_channel(host.address) as channel:
                stub = voice_pb2_grpc.VoiceStub(channel)
                spoken = silence(0.5) + await speech("what time is it in tokyo") + silence(1.0)
                result = await collect(stub.Transcribe(audio_requests(transcribe_config(), spoken)))
            events = await bus_events(host.address, "", {"component_breaker"})
    final = result[-1][1]
    assert final.engine == "pocketsphinx" and word_error_rate("what time is it in tokyo", final.text) <= 0.5
    breaker = [e.component_breaker for e in events if e.WhichOneof("payload") == "component_breaker"]
    assert breaker and breaker[0].target == f"whisper:{folder}" and breaker[0].state == 2  # BREAKER_STATE_OPEN
    assert "model.bin is corrupt" in breaker[0].reason
    logged = [r for r in caplog.records if r.levelname == "ERROR" and "failed to load" in r.getMessage()]
    assert logged and "model.bin" in getattr(logged[0], "error", "")


@pytest.mark.parametrize(
    ("fmt", "detail"),
    [
        (voice_pb2.AudioFormat(encoding=PCM16, sample_rate=2_000), "sample_rate 2000 Hz is out of range"),
        (voice_pb2.AudioFormat(encoding=PCM16, sample_rate=16_000, channels=8), "8 channels"),
        (voice_pb2.AudioFormat(encoding=9, sample_rate=16_000), "encoding must be"),
    ],
)
async def test_audio_the_recogniser_cannot_take_is_refused_with_the_reason(
    voice, fmt: voice_pb2.AudioFormat, detail: str
) -> None:  # type: ignore[no-untyped-def]
    """Any rate from 4 to 192 kHz, PCM16 or float32, up to 4 channels is converted to Whisper's
    16 kHz mono PCM16 (see test_other_rates_stereo_and_float_are_converted); the rest is refused."""
    stub, _ = voice
    call = stub.Transcribe()
    await call.write(voice_pb2.TranscribeRequest(config=voice_pb2.TranscribeConfig(format=fmt)))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await collect(call)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert detail in (caught.value.details() or "")


async def test_a_refused_synthesis_reports_its_status_to_a_client_still_writing(voice) -> None:  # type: ignore[no-untyped-def]
    """A client that sends config and text at once must learn why it was refused, every time.

    grpc's asyncio client reports INTERNAL "Internal error from Core" instead of the server's status
    when one of its writes meets a call the server already ended (grpc/grpc#36066), so the Voice
    service reads what the client has sent before it refuses.
    """
    stub, _ = voice
    for _ in range(60):
        requests = [
            voice_pb2.SynthesizeRequest(config=voice_pb2.SynthesizeConfig(voice="klingon-9")),
            voice_pb2.SynthesizeRequest(text=voice_pb2.SynthesizeText(text="Hello there.", flush=True)),
        ]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await collect(stub.Synthesize(iter(requests)))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
        assert "klingon-9" in (caught.value.details() or "")
