"""Embedded STT: CMU PocketSphinx 5 with the en-US model shipped in its wheel (nothing downloaded).

A decoder is not thread-safe and costs about 0.35 s and 100 MB to load, so decoders are pooled
and each utterance holds one. Decoding holds the GIL, so audio is fed in pieces of at most
`_FEED_PIECE_SECONDS` per executor call: the event loop waits at most that long's CPU for a turn.

Cepstral mean: pocketsphinx normalises features by a live mean that it updates at the end of each
utterance, starting from the model's generic one. Far from this microphone's mean (say a loud one),
the first utterance comes out as garbage ("set a timer for five minutes" heard as "set a what are
you today"). So the engine keeps the mean of the last finished utterance and starts every decoder
from it (which decoder of the pool an utterance gets no longer changes what it hears), and while it
has none yet, it decodes that first utterance again, twice, each time from the mean the pass before
left: one pass moves the mean only part of the way, and at twice the level of the test voice the
second pass still heard "set a report i do" where the third (and every later utterance) heard the
command.

Language models: "domain" (default) is a small trigram model of the assistant's own commands, built
at load time (coda/voice/domain_language.py); it recognises commands far better than the bundled
generic en-US model but forces free dictation into command words. "general" is the bundled model,
for free dictation. Figures for both are in bench/voice.py.
"""

from __future__ import annotations

import asyncio
import logging
import math
import tempfile
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import pocketsphinx

from coda import logs
from coda.voice.domain_language import DomainModel, build_domain_model
from coda.voice.engines.base import EngineError, Transcript

log = logging.getLogger(__name__)

T = TypeVar("T")

SAMPLE_RATE = 16_000
_FEED_PIECE_SECONDS = 0.25
_FEED_PIECE_BYTES = int(SAMPLE_RATE * _FEED_PIECE_SECONDS) * 2
_FRAMES_PER_SECOND = 100.0  # pocketsphinx's default -frate
LANGUAGE_MODELS = ("domain", "general")
#: Extra decodes of the engine's first utterance, each from the mean the previous one left.
FIRST_UTTERANCE_REPASSES = 2

_domain_lock = threading.Lock()
_domain_files: tuple[tempfile.TemporaryDirectory[str], DomainModel] | None = None


def _domain_model() -> DomainModel:
    """The command model, built once per process (about 0.1 s); its files live in a temporary
    directory removed at exit, since every new decoder reads them."""
    global _domain_files
    with _domain_lock:
        if _domain_files is None:
            folder = tempfile.TemporaryDirectory(prefix="coda-voice-lm-")
            dictionary = Path(pocketsphinx.get_model_path()) / "en-us" / "cmudict-en-us.dict"
            _domain_files = folder, build_domain_model(Path(folder.name), dictionary)
        return _domain_files[1]


def _new_decoder(language_model: str) -> pocketsphinx.Decoder:
    # bestpath gives word posteriors, which the confidence is built from.
    if language_model == "domain":
        model = _domain_model()
        return pocketsphinx.Decoder(
            samprate=SAMPLE_RATE, loglevel="FATAL", bestpath=True, lm=str(model.lm_path), dict=str(model.dict_path)
        )
    return pocketsphinx.Decoder(samprate=SAMPLE_RATE, loglevel="FATAL", bestpath=True)


def _clamp01(value: float) -> float:
    return 0.0 if math.isnan(value) else max(0.0, min(1.0, value))


def _result(decoder: pocketsphinx.Decoder) -> tuple[str, float]:
    hyp = decoder.hyp()
    text = hyp.hypstr if hyp is not None else ""
    if not text:
        return "", 0.0
    # The whole-path posterior is tiny for any real sentence; the mean word posterior separates
    # good from bad hypotheses (measured: about 0.8-1.0 correct, 0.1-0.55 garbage).
    posteriors = [_clamp01(seg.prob) for seg in decoder.seg() if not seg.word.startswith(("<", "["))]
    return text, (sum(posteriors) / len(posteriors)) if posteriors else 0.0


class _PocketsphinxStream:
    def __init__(self, engine: PocketsphinxStt, decoder: pocketsphinx.Decoder, *, second_pass: bool) -> None:
        self._engine = engine
        self._decoder: pocketsphinx.Decoder | None = decoder
        self._carry = b""
        #: The utterance's audio, kept only when it is decoded a second time (bounded by the
        #: Voice service's max_utterance_seconds).
        self._heard: bytearray | None = bytearray() if second_pass else None
        # A cancelled await leaves its executor call running; the lock keeps a later call (say
        # close after a client vanished) off the decoder until that one returns.
        self._lock = threading.Lock()

    async def _run(self, fn: Callable[[], T]) -> T:
        def locked() -> T:
            with self._lock:
                return fn()

        return await asyncio.get_running_loop().run_in_executor(None, locked)

    async def feed(self, pcm: bytes) -> None:
        decoder = self._require()
        data = self._carry + pcm
        whole = len(data) - len(data) % 2
        data, self._carry = data[:whole], data[whole:]
        if self._heard is not None:
            self._heard += data
        await self._decode(decoder, data)

    async def _decode(self, decoder: pocketsphinx.Decoder, data: bytes) -> None:
        for start in range(0, len(data), _FEED_PIECE_BYTES):
            piece = data[start : start + _FEED_PIECE_BYTES]
            await self._run(partial(decoder.process_raw, piece, False, False))

    async def partial(self) -> str:
        decoder = self._require()
        hyp = await self._run(decoder.hyp)
        return hyp.hypstr if hyp is not None else ""

    async def pause(self, trailing_ms: int) -> None:
        """Decodes as it goes: nothing to start early."""

    async def resume(self) -> None:
        """Nothing was started at the pause."""

    async def finish(self) -> Transcript:
        decoder = self._require()

        def end() -> tuple[str, float, str]:
            decoder.end_utt()
            return *_result(decoder), decoder.get_cmn()

        text, confidence, cmn = await self._run(end)
        if self._heard is not None:
            # The first pass has moved the mean towards this utterance's; decode it again from there.
            heard, self._heard = bytes(self._heard), None
            for _ in range(FIRST_UTTERANCE_REPASSES):
                await self._run(decoder.start_utt)
                await self._decode(decoder, heard)
                text, confidence, cmn = await self._run(end)
        self._decoder = None
        self._engine._release(decoder, cmn)
        return Transcript(text=text, confidence=confidence, language="en-US", engine=self._engine.name)

    async def close(self) -> None:
        # An abandoned utterance (client gone, stream cancelled) leaves the decoder's cepstral mean
        # adapted to half an utterance; pooling it would make the next client's result depend on
        # when this one vanished. It is dropped; a new decoder costs ~15 ms (domain model).
        self._decoder = None

    def _require(self) -> pocketsphinx.Decoder:
        if self._decoder is None:
            raise EngineError("pocketsphinx: utterance already finished")
        return self._decoder


class PocketsphinxStt:
    name = "pocketsphinx"
    sample_rate = SAMPLE_RATE

    def __init__(self, language_model: str = "domain", pool_size: int = 2) -> None:
        if language_model not in LANGUAGE_MODELS:
            raise ValueError(
                f"voice.stt_language_model = {language_model!r} is unknown; choose one of {', '.join(LANGUAGE_MODELS)}"
            )
        self.language_model = language_model
        self._idle: list[pocketsphinx.Decoder] = []
        self._pool_size = pool_size
        #: The cepstral mean after the last finished utterance (pocketsphinx's comma-separated form).
        self._cmn: str | None = None

    def _new_decoder(self) -> pocketsphinx.Decoder:
        return _new_decoder(self.language_model)

    async def load(self) -> None:
        """Load one decoder up front so the first utterance does not pay for it."""
        if self._idle:
            return
        with logs.progress(
            log, "loading pocketsphinx en-US model", engine=self.name, language_model=self.language_model
        ):
            decoder = await asyncio.get_running_loop().run_in_executor(None, self._new_decoder)
        self._idle.append(decoder)

    def supports(self, language: str) -> bool:
        return not language or language.lower().startswith("en")

    async def open(self, language: str) -> _PocketsphinxStream:
        loop = asyncio.get_running_loop()
        decoder: pocketsphinx.Decoder | None = self._idle.pop() if self._idle else None
        if decoder is None:
            with logs.progress(log, "loading another pocketsphinx decoder", engine=self.name):
                decoder = await loop.run_in_executor(None, self._new_decoder)
        cmn = self._cmn
        ready: pocketsphinx.Decoder = decoder

        def start() -> None:
            if cmn is not None:
                ready.set_cmn(cmn)
            ready.start_utt()

        await loop.run_in_executor(None, start)
        return _PocketsphinxStream(self, ready, second_pass=cmn is None)

    def _release(self, decoder: pocketsphinx.Decoder, cmn: str) -> None:
        self._cmn = cmn
        if len(self._idle) < self._pool_size:
            self._idle.append(decoder)

    async def close(self) -> None:
        self._idle.clear()
