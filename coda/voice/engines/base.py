"""The engine interfaces the voice service talks to.

Engines are async at this boundary: embedded engines run their CPU-heavy work in a thread
executor, network engines (Wyoming) are natively async. None of them may block the event loop.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Protocol


class EngineError(RuntimeError):
    """An engine failed (server down, protocol error, bad voice); the message says which and why."""


class EngineUnavailable(EngineError):
    """The engine is not reachable right now (its circuit is open or its server is down)."""


class VoiceNotFound(EngineError):
    """The requested voice is not installed in this engine (a request error, not an engine failure)."""


@dataclass(frozen=True)
class Transcript:
    text: str
    #: 0..1; 0 when the engine gives none.
    confidence: float
    language: str
    #: The engine that produced it (a fallback may have stood in for the configured one).
    engine: str = ""


class SttStream(Protocol):
    """One utterance being recognised: feed audio, ask for a partial, finish for the final."""

    async def feed(self, pcm: bytes) -> None: ...

    async def partial(self) -> str:
        """The current hypothesis ("" when none yet or the engine has no partials)."""
        ...

    async def finish(self) -> Transcript: ...

    async def pause(self, trailing_ms: int) -> None:
        """The speaker paused: the utterance may be over. An engine may start its final decode now, on
        what was fed so far and `trailing_ms` of silence (what the end of speech will have fed by the
        time it is confirmed), and `finish` returns that decode unless `resume` came in between (what
        is fed after a pause is silence). Engines without such a decode do nothing."""
        ...

    async def resume(self) -> None:
        """Speech goes on after a `pause`: a decode started then is void."""
        ...

    async def close(self) -> None:
        """Abandon the utterance and release resources; safe to call more than once."""
        ...


class SttEngine(Protocol):
    name: str
    #: Rate of the PCM16 mono audio the engine expects.
    sample_rate: int

    async def load(self) -> None: ...

    def supports(self, language: str) -> bool: ...

    async def open(self, language: str) -> SttStream: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class AudioPiece:
    pcm: bytes
    sample_rate: int


class TtsEngine(Protocol):
    name: str
    #: The rate of the audio it usually produces (pieces carry their own rate regardless).
    sample_rate: int
    #: The voice spoken when a request names none ("" when the engine decides, e.g. a remote server).
    default_voice: str

    async def load(self) -> None: ...

    def voices(self) -> tuple[str, ...]:
        """The installed voices, exactly the names a request may use; empty when the engine cannot
        tell (a remote server knows its own)."""
        ...

    def has_voice(self, voice: str) -> bool:
        """Whether `voice` can be spoken here (engines that cannot tell say True and let the
        synthesis fail with VoiceNotFound)."""
        ...

    def synthesize(self, text: str, voice: str) -> AsyncGenerator[AudioPiece, None]:
        """Speak one sentence ("" voice: the default); closing the iterator early stops synthesis."""
        ...

    async def close(self) -> None: ...


class FrameClassifier(Protocol):
    """Per-frame speech decision (one per stream: classifiers may keep state)."""

    def is_speech(self, frame: bytes) -> bool: ...


class VadEngine(Protocol):
    name: str
    sample_rate: int
    frame_ms: int
    #: Window over which most frames must be voiced to start an utterance (a noisier detector
    #: needs a longer one; a shorter one reports onset, and so barge-in, sooner).
    start_window_ms: int
    #: How late the detector reports silence after speech stops (0 for a frame-local detector).
    end_lag_ms: int

    async def load(self) -> None: ...

    def classifier(self) -> FrameClassifier: ...


ClassifierFactory = Callable[[], FrameClassifier]
