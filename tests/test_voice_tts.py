"""Speech synthesis: the Piper engine (the default voice), eSpeak NG beside it as fallback and for
its own voices, the voices Synthesize advertises, output rates, and a round trip through the STT.

Piper adds noise by design, so durations vary a little between runs: checks on them are ranges.
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import grpc
import numpy as np
import pytest
from piper import PiperVoice

from coda.config import VoiceConfig
from coda.v1 import voice_pb2, voice_pb2_grpc
from coda.voice.engines.base import AudioPiece, EngineError, VoiceNotFound
from coda.voice.engines.espeak_tts import EspeakTts
from coda.voice.engines.factory import build_engines
from coda.voice.engines.fallback import FallbackTts
from coda.voice.engines.piper_tts import (
    BUNDLED_SHA256,
    BUNDLED_VOICE,
    PiperTts,
    bundled_model_path,
    length_scale_for,
)
from coda.voice.quality import word_error_rate
from tests.conftest import make_config, running_host
from tests.test_voice_service import Requests, audio_requests, bus_events, collect, silence, transcribe_config

FIVE_SENTENCES = (
    "The kettle is on. Your meeting starts at ten. It will rain in the afternoon. "
    "Take an umbrella with you. Have a good day."
)


def rms(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(samples**2))) if samples.size else 0.0


async def speak(engine: PiperTts | EspeakTts | FallbackTts, text: str, voice: str = "") -> list[AudioPiece]:
    return [piece async for piece in engine.synthesize(text, voice)]


@pytest.fixture
async def piper() -> PiperTts:
    engine = PiperTts()
    await engine.load()
    return engine


@pytest.fixture
def sentences_run(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Times at which Piper finished computing each sentence's audio (in the worker thread)."""
    finished: list[float] = []
    original = PiperVoice.phoneme_ids_to_audio

    def counted(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        result = original(self, *args, **kwargs)
        finished.append(time.perf_counter())
        return result

    monkeypatch.setattr(PiperVoice, "phoneme_ids_to_audio", counted)
    return finished


# --- the engine ----------------------------------------------------------------------------------


async def test_piper_speaks_a_sentence_audibly_at_a_plausible_length(piper: PiperTts) -> None:
    pieces = await speak(piper, "Set a timer for five minutes.")
    assert pieces and all(p.sample_rate == 22_050 for p in pieces)
    pcm = b"".join(p.pcm for p in pieces)
    seconds = len(pcm) / 2 / 22_050
    # Six words at a natural pace (measured 1.8 s); a broken model gives silence, noise bursts or seconds of hum.
    assert 1.0 <= seconds <= 3.5, seconds
    assert rms(pcm) > 1000, rms(pcm)  # piper normalises each sentence to full scale


async def test_first_sentence_arrives_before_the_rest_is_synthesized(
    piper: PiperTts, sentences_run: list[float]
) -> None:
    arrivals: list[tuple[float, int]] = []
    async for _ in piper.synthesize(FIVE_SENTENCES, ""):
        arrivals.append((time.perf_counter(), len(sentences_run)))
    assert len(arrivals) == 5 == len(sentences_run)  # one piece per sentence
    first_at, computed_by_then = arrivals[0]
    assert computed_by_then < 5 and first_at < sentences_run[-1]


async def test_closing_the_stream_stops_synthesis_at_the_next_sentence(
    piper: PiperTts, sentences_run: list[float]
) -> None:
    async with aclosing(piper.synthesize(FIVE_SENTENCES * 2, "")) as pieces:
        await anext(pieces)
    await asyncio.sleep(1.5)  # time enough for several more sentences, were the worker still going
    # The worker may finish the sentence it was computing when the stream closed, then stops.
    assert len(sentences_run) <= 3, len(sentences_run)


async def test_speaking_rate_sets_the_length_scale(piper: PiperTts) -> None:
    assert length_scale_for(175) == 1.0 and length_scale_for(350) == 0.5 and length_scale_for(10) == 2.0
    fast = PiperTts(rate_wpm=350)
    await fast.load()
    text = "Set a timer for five minutes."
    normal_len = sum(len(p.pcm) for p in await speak(piper, text))
    fast_len = sum(len(p.pcm) for p in await speak(fast, text))
    assert fast_len < 0.75 * normal_len, (fast_len, normal_len)


async def test_piper_refuses_a_voice_it_does_not_have(piper: PiperTts) -> None:
    assert piper.voices() == (BUNDLED_VOICE,) and piper.has_voice("") and piper.has_voice("en_us-joe-medium")
    with pytest.raises(VoiceNotFound, match="en-us"):
        await speak(piper, "Hello.", "en-us")


async def test_a_damaged_voice_file_is_refused_by_its_pinned_hash(tmp_path: Path) -> None:
    model = tmp_path / "en_US-joe-medium.onnx"
    model.write_bytes(b"not a model" * 1000)
    shutil.copy(bundled_model_path().with_name("en_US-joe-medium.onnx.json"), tmp_path)
    engine = PiperTts(model, sha256=BUNDLED_SHA256)
    with pytest.raises(EngineError) as caught:
        await engine.load()
    message = str(caught.value)
    assert str(model) in message and "sha256" in message and "reinstall" in message
    with pytest.raises(EngineError, match="not loaded"):
        await speak(engine, "Hello.")


async def test_a_missing_voice_file_names_the_file_and_the_fix(tmp_path: Path) -> None:
    engine = PiperTts(tmp_path / "nobody.onnx")
    with pytest.raises(EngineError, match=r"nobody\.onnx is missing.*voice\.piper_model"):
        await engine.load()


async def test_espeak_voices_go_to_espeak_and_unknown_voices_are_refused() -> None:
    engines = build_engines(VoiceConfig(), publisher=None)
    tts = engines.tts
    assert isinstance(tts, FallbackTts) and tts.default_voice == BUNDLED_VOICE
    await tts.load()

    async def no_piper(text: str, voice: str) -> AsyncIterator[AudioPiece]:
        raise AssertionError("an eSpeak voice must not reach piper")
        yield  # pragma: no cover

    tts.primary.synthesize = no_piper  # type: ignore[method-assign]
    for voice in ("en-us", "EN-GB-X-RP", "en-us+f2", "de"):
        assert rms(b"".join(p.pcm for p in await speak(tts, "Hello there.", voice))) > 100, voice
    with pytest.raises(VoiceNotFound, match="'en-gb' is not installed"):
        await speak(tts, "Hello.", "en-gb")
    assert tts.breaker.state == "closed"  # asking for a missing voice is no failure of the engine


# --- through the service -------------------------------------------------------------------------


@pytest.fixture
async def voice(tmp_path: Path) -> AsyncIterator[tuple[voice_pb2_grpc.VoiceStub, str]]:
    config = make_config(tmp_path)  # the defaults: piper, with eSpeak beside it
    async with running_host(config, only="bus,voice") as host, grpc.aio.insecure_channel(host.address) as channel:
        yield voice_pb2_grpc.VoiceStub(channel), host.address


async def synthesize(
    stub: voice_pb2_grpc.VoiceStub, text: str, **config: object
) -> tuple[voice_pb2.VoiceTtsStarted, list[voice_pb2.VoiceTtsAudio], voice_pb2.VoiceTtsFinished]:
    requests = Requests(voice_pb2.SynthesizeRequest(config=voice_pb2.SynthesizeConfig(**config)))
    requests.text(text, flush=True)
    requests.close()
    responses = await collect(stub.Synthesize(requests.__aiter__()))
    assert responses[0][0] == "started" and responses[-1][0] == "finished"
    audio = [p for k, p in responses if k == "audio"]
    return responses[0][1], audio, responses[-1][1]  # type: ignore[return-value]


async def advertised_voices(stub: voice_pb2_grpc.VoiceStub) -> list[str]:
    """The voices Synthesize names as installed when asked for one it does not have."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await synthesize(stub, "Hello.", voice="klingon-9")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    found = re.search(r"installed voices: (.*)$", caught.value.details() or "")
    assert found, caught.value.details()
    return found.group(1).split(", ")


async def test_the_default_voice_is_piper(voice) -> None:  # type: ignore[no-untyped-def]
    stub, _ = voice
    started, audio, finished = await synthesize(stub, "Good morning.")
    assert started.engine == "piper" and started.voice == BUNDLED_VOICE and started.sample_rate == 22_050
    assert audio and not finished.cancelled


async def test_every_advertised_voice_is_installed_and_speaks(voice) -> None:  # type: ignore[no-untyped-def]
    stub, _ = voice
    voices = await advertised_voices(stub)
    espeak = EspeakTts()
    await espeak.load()
    assert voices == [BUNDLED_VOICE, *espeak.voices()]
    assert "en-gb" not in voices and {"en", "en-us", "en-gb-x-rp"} <= set(voices)
    for name in voices:
        started, audio, _ = await synthesize(stub, "Hello, one two three.", voice=name)
        assert started.voice == name
        assert sum(c.samples for c in audio) > 0.3 * 22_050, name
        assert rms(b"".join(c.pcm for c in audio)) > 100, name


@pytest.mark.parametrize("rate", [16_000, 48_000])
async def test_audio_comes_at_the_requested_rate(voice, rate: int) -> None:  # type: ignore[no-untyped-def]
    stub, _ = voice
    text = "Set a timer for five minutes."
    _, native, native_end = await synthesize(stub, text)
    started, audio, finished = await synthesize(stub, text, sample_rate=rate)
    assert started.sample_rate == rate and all(c.sample_rate == rate for c in audio)
    assert max(c.samples for c in audio) == rate * 160 // 1000  # the service's 160 ms chunks
    samples = sum(c.samples for c in audio)
    assert finished.audio_duration_ms == pytest.approx(samples * 1000 / rate)
    # The same speech, resampled: as long as at the native rate, give or take Piper's own variation.
    assert finished.audio_duration_ms == pytest.approx(native_end.audio_duration_ms, rel=0.2)
    assert sum(c.samples for c in native) == pytest.approx(native_end.audio_duration_ms * 22.05, abs=1)


async def test_spoken_by_piper_and_heard_by_the_stt(voice) -> None:  # type: ignore[no-untyped-def]
    stub, _ = voice
    command = "set a timer for five minutes"
    _, audio, _ = await synthesize(stub, command + ".", sample_rate=16_000)
    spoken = b"".join(c.pcm for c in audio)
    responses = await collect(
        stub.Transcribe(audio_requests(transcribe_config(), silence(0.5) + spoken + silence(1.0)))
    )
    finals = [p for k, p in responses if k == "final"]
    assert finals, responses
    assert word_error_rate(command, finals[-1].text) <= 0.2, (finals[-1].engine, finals[-1].text)


async def test_a_corrupt_piper_model_falls_back_to_espeak_with_a_breaker_event(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = tmp_path / "voices" / "en_US-joe-medium.onnx"
    model.parent.mkdir()
    model.write_bytes(bytes(range(256)) * 4096)  # garbage where the model should be
    shutil.copy(bundled_model_path().with_name("en_US-joe-medium.onnx.json"), model.parent)
    config = make_config(tmp_path, CODA_VOICE__PIPER_MODEL=str(model))
    with caplog.at_level(logging.ERROR, logger="coda.voice.engines.fallback"):
        async with running_host(config, only="bus,voice") as host, grpc.aio.insecure_channel(host.address) as channel:
            stub = voice_pb2_grpc.VoiceStub(channel)
            for _ in range(2):
                _, audio, finished = await synthesize(stub, "Still talking.")
                assert audio and finished.audio_duration_ms > 300
            events = await bus_events(host.address, "", {"component_breaker"})
    breaker = [e.component_breaker for e in events if e.WhichOneof("payload") == "component_breaker"]
    assert [b.target for b in breaker] == ["piper:en_US-joe-medium"]
    assert breaker[0].state == 2 and breaker[0].component == "voice"  # BREAKER_STATE_OPEN
    assert str(model) in breaker[0].reason and "not a valid Piper model" in breaker[0].reason
    assert any("failed to load" in r.getMessage() for r in caplog.records), caplog.records
