"""Builds the configured engines (names from the `voice` config section)."""

from __future__ import annotations

from dataclasses import dataclass

from coda.bus.publisher import EventPublisher
from coda.config import VoiceConfig
from coda.voice.engines.base import SttEngine, TtsEngine, VadEngine
from coda.voice.engines.espeak_tts import EspeakTts
from coda.voice.engines.fallback import EngineBreaker, FallbackStt, FallbackTts
from coda.voice.engines.piper_tts import PiperTts
from coda.voice.engines.pocketsphinx_stt import PocketsphinxStt
from coda.voice.engines.silero_vad import SileroVad
from coda.voice.engines.webrtc_vad import WebRtcVad
from coda.voice.engines.whisper_stt import WhisperStt
from coda.voice.engines.wyoming_client import WyomingStt, WyomingTts

STT_ENGINES = ("whisper", "pocketsphinx", "wyoming")
TTS_ENGINES = ("piper", "espeak", "wyoming")
VAD_ENGINES = ("silero", "webrtc")


@dataclass
class Engines:
    vad: VadEngine
    stt: SttEngine
    tts: TtsEngine


def _check(kind: str, name: str, known: tuple[str, ...]) -> None:
    if name not in known:
        raise ValueError(f"voice.{kind}_engine = {name!r} is unknown; choose one of {', '.join(known)}")


def build_engines(config: VoiceConfig, publisher: EventPublisher | None) -> Engines:
    _check("vad", config.vad_engine, VAD_ENGINES)
    _check("stt", config.stt_engine, STT_ENGINES)
    _check("tts", config.tts_engine, TTS_ENGINES)
    vad: VadEngine = (
        SileroVad(config.vad_threshold) if config.vad_engine == "silero" else WebRtcVad(config.vad_aggressiveness)
    )

    stt: SttEngine
    if config.stt_engine == "whisper":
        whisper = WhisperStt(
            config.whisper_model_dir,
            model_sha256=config.whisper_model_sha256,
            cpu_threads=config.whisper_cpu_threads,
            workers=config.whisper_workers,
            beam_size=config.whisper_beam_size,
            denoise=config.whisper_denoise,
            window_seconds=config.whisper_window_seconds,
            prompt=config.whisper_prompt,
        )
        # pocketsphinx is the fallback for a model that does not load (missing or corrupt files) or
        # keeps failing; it is loaded only then, or on its first use.
        stt = FallbackStt(
            whisper,
            PocketsphinxStt(config.stt_language_model) if config.fallback_to_embedded else None,
            EngineBreaker(
                whisper.target,
                failures=config.breaker_failures,
                reset_seconds=config.breaker_reset_seconds,
                publisher=publisher,
            ),
            max_replay_seconds=config.max_buffered_audio_seconds,
            preload_fallback=False,
        )
    elif config.stt_engine == "wyoming":
        remote_stt = WyomingStt(config.wyoming_stt_host, config.wyoming_stt_port, config.wyoming_timeout_seconds)
        stt = FallbackStt(
            remote_stt,
            PocketsphinxStt(config.stt_language_model) if config.fallback_to_embedded else None,
            EngineBreaker(
                remote_stt.target,
                failures=config.breaker_failures,
                reset_seconds=config.breaker_reset_seconds,
                publisher=publisher,
            ),
            max_replay_seconds=config.max_buffered_audio_seconds,
        )
    else:
        stt = PocketsphinxStt(config.stt_language_model)

    tts: TtsEngine
    if config.tts_engine in ("wyoming", "piper"):
        primary_tts: WyomingTts | PiperTts
        if config.tts_engine == "wyoming":
            primary_tts = WyomingTts(config.wyoming_tts_host, config.wyoming_tts_port, config.wyoming_timeout_seconds)
        else:
            primary_tts = PiperTts(config.piper_model or None, config.speaking_rate_wpm)
        # Beside Piper, eSpeak is more than a fallback: it also speaks the eSpeak voices a request names.
        tts = FallbackTts(
            primary_tts,
            EspeakTts(rate_wpm=config.speaking_rate_wpm) if config.fallback_to_embedded else None,
            EngineBreaker(
                primary_tts.target,
                failures=config.breaker_failures,
                reset_seconds=config.breaker_reset_seconds,
                publisher=publisher,
            ),
        )
    else:
        tts = EspeakTts(config.tts_voice or "en-us", config.speaking_rate_wpm)
    return Engines(vad=vad, stt=stt, tts=tts)
