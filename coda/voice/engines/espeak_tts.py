"""Embedded TTS: eSpeak NG through ctypes, using the library and data shipped in the
`espeakng-loader` wheel (no system package, nothing downloaded). Robotic but about 500x faster
than real time; PCM16 mono at 22050 Hz in chunks of about 100 ms.

libespeak-ng keeps global state (one voice, one callback), so synthesis is serialised by a lock:
thread-safe, not parallel. Output varies by a few samples between runs; never golden-compare it.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import threading
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from pathlib import Path

import espeakng_loader

from coda import logs
from coda.voice.engines.base import AudioPiece, EngineError, VoiceNotFound
from coda.voice.engines.threads import stream_from_thread

log = logging.getLogger(__name__)

# Constants from speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_ENDPAUSE = 0x1000
_PARAM_RATE = 1
_EE_OK = 0
_BUFFER_MS = 100

# int callback(short *wav, int numsamples, espeak_EVENT *events)
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


__all__ = ["EspeakTts", "VoiceNotFound", "installed_voices"]


def installed_voices(data_path: Path) -> tuple[tuple[str, ...], frozenset[str]]:
    """The voices the bundled data can really speak, and the variants ("+f2") it has.

    A voice is a file under lang/ (eSpeak's own voice list is these files); its name is the file
    name, lower-cased, which espeak_SetVoiceByName resolves. A voice whose dictionary file is not in
    the data (the wheel leaves a few out, e.g. fo, kaa, xex) is left out: eSpeak would accept it and
    then speak with no pronunciation rules. "en-gb" is not a file name (British English is "en").
    """
    names: set[str] = set()
    for path in (data_path / "lang").rglob("*"):
        if not path.is_file():
            continue
        dictionary = language = ""
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(" ")
            if key == "dictionary" and not dictionary:
                dictionary = value.split()[0] if value.split() else ""
            elif key == "language" and not language:
                language = value.split()[0] if value.split() else ""
        # Without a `dictionary` line eSpeak uses the language code up to its first dash.
        dictionary = dictionary or language.split("-")[0]
        if dictionary and (data_path / f"{dictionary}_dict").is_file():
            names.add(path.name.lower())
    variants = frozenset(p.name.lower() for p in (data_path / "voices" / "!v").glob("*") if p.is_file())
    return tuple(sorted(names)), variants


class _Library:
    """The process-wide libespeak-ng handle."""

    def __init__(self) -> None:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        data_path = espeakng_loader.get_data_path().encode()
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, _BUFFER_MS, data_path, 0)
        if rate <= 0:
            raise EngineError(f"espeak-ng: initialisation failed ({rate}) with data at {data_path.decode()}")
        self._lib = lib
        self.sample_rate: int = rate
        self.lock = threading.Lock()
        self._sink: Callable[[bytes], bool] | None = None
        self._voice = ""
        # ctypes callbacks must stay referenced for as long as C may call them.
        self._callback = _SynthCallback(self._on_audio)
        lib.espeak_SetSynthCallback(self._callback)
        self.voices, self.variants = installed_voices(Path(data_path.decode()))

    def _on_audio(self, wav, count: int, _events: int) -> int:  # type: ignore[no-untyped-def]
        if count > 0 and wav and self._sink is not None:
            try:
                return 1 if self._sink(ctypes.string_at(wav, count * 2)) else 0
            except BaseException:  # an exception must never cross into C
                return 1
        return 0

    def synthesize(self, text: str, voice: str, rate_wpm: int, sink: Callable[[bytes], bool]) -> None:
        """Speak text, passing chunks to sink (which returns True to stop)."""
        data = text.encode("utf-8") + b"\0"
        buffer = ctypes.create_string_buffer(data, len(data))
        with self.lock:
            if voice != self._voice:
                if self._lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                    raise VoiceNotFound(
                        f"espeak-ng has no voice {voice!r}; installed: {', '.join(self.voices)}"
                        " (a variant may follow a '+', as in en-us+f2)"
                    )
                self._voice = voice
            self._lib.espeak_SetParameter(_PARAM_RATE, rate_wpm, 0)
            self._sink = sink
            try:
                err = self._lib.espeak_Synth(
                    buffer, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8 | _ENDPAUSE, None, None
                )
            finally:
                self._sink = None
            if err != _EE_OK:
                raise EngineError(f"espeak-ng: synthesis failed ({err})")


_library: _Library | None = None
_library_lock = threading.Lock()


def _load_library() -> _Library:
    global _library
    with _library_lock:
        if _library is None:
            _library = _Library()
        return _library


class EspeakTts:
    name = "espeak-ng"
    sample_rate = 22_050

    def __init__(self, default_voice: str = "en-us", rate_wpm: int = 175) -> None:
        self.default_voice = default_voice
        self.rate_wpm = rate_wpm
        self._library: _Library | None = None

    async def load(self) -> None:
        with logs.progress(log, "loading espeak-ng", engine=self.name):
            self._library = await asyncio.get_running_loop().run_in_executor(None, _load_library)
        self.sample_rate = self._library.sample_rate

    def voices(self) -> tuple[str, ...]:
        return self._library.voices if self._library is not None else ()

    def has_voice(self, voice: str) -> bool:
        if not voice:
            return True
        if self._library is None:
            return False
        base, plus, variant = voice.lower().partition("+")
        return base in self._library.voices and (not plus or variant in self._library.variants)

    async def synthesize(self, text: str, voice: str) -> AsyncGenerator[AudioPiece, None]:
        library = self._library
        if library is None:
            raise EngineError("espeak-ng: not loaded")

        def produce(sink: Callable[[bytes], bool]) -> None:
            library.synthesize(text, voice or self.default_voice, self.rate_wpm, sink)

        chunks = stream_from_thread(produce)
        async with aclosing(chunks):
            async for chunk in chunks:
                yield AudioPiece(chunk, library.sample_rate)

    async def close(self) -> None:
        """The library stays loaded for the process (it has global state and no clean unload)."""
