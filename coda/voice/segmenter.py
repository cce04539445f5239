"""The utterance state machine: per-frame speech decisions in, speech start / audio / end out.

Pure: the frame classifier (a VAD engine) is passed in, audio is bytes, time is counted in audio
frames, so the same input always gives the same boundaries. Hysteresis keeps a cough from
starting an utterance and a short pause from ending one; pre-roll keeps the first syllable.
Memory is bounded: at most the pre-roll window and one partial frame are held here.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from dataclasses import dataclass, field

#: Why an utterance ended.
END_SILENCE = "silence"
END_MAX_LENGTH = "max_length"
END_OF_STREAM = "end_of_stream"


@dataclass(frozen=True)
class SegmenterSettings:
    sample_rate: int = 16_000
    frame_ms: int = 30
    #: Trailing silence that ends an utterance.
    silence_ms: int = 700
    #: Speech starts when at least start_ratio of the last start_window_ms is voiced.
    start_window_ms: int = 300
    start_ratio: float = 0.6
    #: Speech ends when at least end_ratio of the last silence_ms is unvoiced.
    end_ratio: float = 0.9
    #: Audio before the detected start that is still handed to the recogniser.
    pre_roll_ms: int = 300
    #: How late the classifier reports silence after speech stops (a recurrent VAD's probability
    #: decays over a few frames): that much less trailing silence is waited for, and the end is
    #: dated that much earlier, so an utterance ends `silence_ms` after the speech did.
    vad_lag_ms: int = 0
    #: An utterance longer than this is ended (force-finalized) so buffers stay bounded.
    max_utterance_ms: int = 30_000
    #: Unvoiced time inside an utterance that reports a pause (SpeechPaused), the moment the speech
    #: may have ended: a recogniser can start its final decode then, while the end is still being
    #: confirmed, instead of after it (0: no pauses reported).
    pause_ms: int = 0
    #: Keep listening after an utterance ends.
    continuous: bool = False

    @property
    def frame_bytes(self) -> int:
        return self.sample_rate * self.frame_ms // 1000 * 2


@dataclass(frozen=True)
class SpeechStarted:
    offset_ms: float
    #: The pre-roll and the frames that triggered the start.
    audio: bytes


@dataclass(frozen=True)
class SpeechAudio:
    audio: bytes


@dataclass(frozen=True)
class SpeechEnded:
    offset_ms: float
    duration_ms: float
    reason: str


@dataclass(frozen=True)
class SpeechPaused:
    """`pause_ms` of silence inside an utterance: it may be its end (all audio so far was handed on)."""

    offset_ms: float


@dataclass(frozen=True)
class SpeechResumed:
    """Speech again after a SpeechPaused: that pause was not the end."""

    offset_ms: float


Action = SpeechStarted | SpeechAudio | SpeechEnded | SpeechPaused | SpeechResumed


@dataclass
class _Utterance:
    start_ms: float
    frames: int = 0
    last_voiced_end_ms: float = 0.0
    tail: collections.deque[bool] = field(default_factory=collections.deque)
    #: Unvoiced frames in a row, and whether this run was reported as a pause.
    unvoiced_run: int = 0
    paused: bool = False


class Segmenter:
    """Feed PCM16 mono bytes at `settings.sample_rate` in any chunk sizes; get actions back."""

    def __init__(self, is_speech: Callable[[bytes], bool], settings: SegmenterSettings) -> None:
        self._is_speech = is_speech
        self.settings = settings
        frame_ms = settings.frame_ms
        self._start_frames = max(1, round(settings.start_window_ms / frame_ms))
        self._end_frames = max(1, round(max(0, settings.silence_ms - settings.vad_lag_ms) / frame_ms))
        self._pause_frames = round(settings.pause_ms / frame_ms) if settings.pause_ms else 0
        self._recent: collections.deque[tuple[bytes, bool]] = collections.deque(
            maxlen=max(self._start_frames, round(settings.pre_roll_ms / frame_ms))
        )
        self._carry = bytearray()
        self._frames_seen = 0
        self._utterance: _Utterance | None = None
        #: True once a non-continuous segmenter has ended its one utterance.
        self.done = False
        #: Utterances ended so far, by reason.
        self.ended: collections.Counter[str] = collections.Counter()

    @property
    def in_speech(self) -> bool:
        return self._utterance is not None

    @property
    def speaking(self) -> bool:
        """In an utterance, and its last frame was voiced (not trailing off into a pause)."""
        return self._utterance is not None and self._utterance.unvoiced_run == 0

    @property
    def position_ms(self) -> float:
        return self._frames_seen * self.settings.frame_ms

    @property
    def buffered_bytes(self) -> int:
        """Audio held here: the partial frame plus the pre-roll window."""
        return len(self._carry) + sum(len(f) for f, _ in self._recent)

    def push(self, pcm: bytes) -> list[Action]:
        actions: list[Action] = []
        if self.done:
            return actions
        self._carry += pcm
        size = self.settings.frame_bytes
        offset = 0
        while len(self._carry) - offset >= size and not self.done:
            frame = bytes(self._carry[offset : offset + size])
            offset += size
            self._frame(frame, actions)
        del self._carry[:offset]
        if self.done:
            self._carry.clear()
        return _merge_audio(actions)

    def finish(self) -> list[Action]:
        """End of the audio stream: close an open utterance; the partial frame is dropped."""
        self._carry.clear()
        actions: list[Action] = []
        if self._utterance is not None:
            self._end(END_OF_STREAM, self.position_ms, actions)
        self.done = True
        return actions

    def _frame(self, frame: bytes, actions: list[Action]) -> None:
        voiced = self._is_speech(frame)
        self._frames_seen += 1
        frame_ms = self.settings.frame_ms
        now_ms = self.position_ms
        utterance = self._utterance
        if utterance is None:
            self._recent.append((frame, voiced))
            window = list(self._recent)[-self._start_frames :]
            if sum(v for _, v in window) >= self.settings.start_ratio * self._start_frames:
                first_voiced = next(i for i, (_, v) in enumerate(window) if v)
                start_ms = now_ms - (len(window) - first_voiced) * frame_ms
                self._utterance = _Utterance(start_ms=start_ms, last_voiced_end_ms=now_ms)
                self._utterance.tail = collections.deque(maxlen=self._end_frames)
                actions.append(SpeechStarted(start_ms, b"".join(f for f, _ in self._recent)))
                self._recent.clear()
            return
        utterance.frames += 1
        utterance.tail.append(voiced)
        if voiced:
            utterance.last_voiced_end_ms = max(utterance.start_ms, now_ms - self.settings.vad_lag_ms)
            utterance.unvoiced_run = 0
            if utterance.paused:
                utterance.paused = False
                actions.append(SpeechResumed(now_ms - frame_ms))
        else:
            utterance.unvoiced_run += 1
        actions.append(SpeechAudio(frame))
        if self._pause_frames and not utterance.paused and utterance.unvoiced_run >= self._pause_frames:
            utterance.paused = True
            actions.append(SpeechPaused(now_ms))
        tail = utterance.tail
        if len(tail) == self._end_frames and sum(not v for v in tail) >= self.settings.end_ratio * self._end_frames:
            self._end(END_SILENCE, utterance.last_voiced_end_ms, actions)
        elif now_ms - utterance.start_ms >= self.settings.max_utterance_ms:
            self._end(END_MAX_LENGTH, now_ms, actions)

    def _end(self, reason: str, end_ms: float, actions: list[Action]) -> None:
        assert self._utterance is not None
        start_ms = self._utterance.start_ms
        actions.append(SpeechEnded(end_ms, max(0.0, end_ms - start_ms), reason))
        self._utterance = None
        self._recent.clear()
        self.ended[reason] += 1
        if not self.settings.continuous:
            self.done = True


def _merge_audio(actions: list[Action]) -> list[Action]:
    """Join runs of SpeechAudio so the recogniser gets fewer, larger pieces."""
    merged: list[Action] = []
    run: list[bytes] = []
    for action in actions:
        if isinstance(action, SpeechAudio):
            run.append(action.audio)
            continue
        if run:
            merged.append(SpeechAudio(b"".join(run)))
            run = []
        merged.append(action)
    if run:
        merged.append(SpeechAudio(b"".join(run)))
    return merged
