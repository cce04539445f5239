"""Embedded VAD: WebRTC's GMM voice detector (`webrtcvad-wheels`, no model file, microseconds a frame)."""

from __future__ import annotations

import webrtcvad

from coda.voice.engines.base import FrameClassifier

_RATES = (8_000, 16_000, 32_000, 48_000)


class _WebRtcClassifier:
    def __init__(self, aggressiveness: int, sample_rate: int) -> None:
        self._vad = webrtcvad.Vad(aggressiveness)
        self._rate = sample_rate

    def is_speech(self, frame: bytes) -> bool:
        return bool(self._vad.is_speech(frame, self._rate))


class WebRtcVad:
    name = "webrtc"
    #: Its frame decisions are noisy (clicks, breaths): 60% of 300 ms must be voiced to start.
    start_window_ms = 300
    #: It judges each frame alone, so silence is reported on the first silent frame.
    end_lag_ms = 0

    def __init__(self, aggressiveness: int = 2, sample_rate: int = 16_000, frame_ms: int = 30) -> None:
        if not 0 <= aggressiveness <= 3:
            raise ValueError(f"webrtc VAD aggressiveness must be 0..3, got {aggressiveness}")
        if sample_rate not in _RATES or frame_ms not in (10, 20, 30):
            raise ValueError("webrtc VAD needs 10/20/30 ms frames at 8/16/32/48 kHz")
        self.aggressiveness = aggressiveness
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms

    async def load(self) -> None:
        """Nothing to load: the detector has no model file."""

    def classifier(self) -> FrameClassifier:
        return _WebRtcClassifier(self.aggressiveness, self.sample_rate)
