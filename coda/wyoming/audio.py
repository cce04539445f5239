"""Wyoming audio to what Coda's Voice service takes, and back. Pure: no I/O.

A Wyoming client declares its audio in AudioStart (rate, width in bytes, channels) and repeats it
on every AudioChunk; Home Assistant sends 16 kHz, 16-bit mono. The Voice service takes PCM16 or
float32 at any rate from 4 to 192 kHz with up to 4 channels, and down-mixes and resamples itself.
So 16-bit audio passes through untouched, 8-, 24- and 32-bit integer samples become float32, and
anything else is refused with a reason the client can read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coda.v1 import voice_pb2
from coda.voice.audio import MAX_CHANNELS, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE

#: Bytes per sample a Wyoming stream may use: unsigned 8-bit, signed 16-, 24- and 32-bit integers.
WIDTHS = (1, 2, 3, 4)


class AudioRefused(ValueError):
    """The audio cannot be converted for the Voice service; the message says why."""


@dataclass(frozen=True)
class WyomingFormat:
    rate: int
    width: int
    channels: int

    def __str__(self) -> str:
        return f"{self.rate} Hz, {8 * self.width}-bit, {self.channels} channel(s)"


def check_format(fmt: WyomingFormat) -> voice_pb2.AudioFormat:
    """The Voice service's AudioFormat for audio in `fmt`, or AudioRefused saying what is wrong."""
    if fmt.width not in WIDTHS:
        raise AudioRefused(f"audio width {fmt.width} bytes is not supported; use 1, 2, 3 or 4 (16-bit is 2)")
    if not 1 <= fmt.channels <= MAX_CHANNELS:
        raise AudioRefused(f"audio has {fmt.channels} channels; 1 to {MAX_CHANNELS} are supported")
    if not MIN_SAMPLE_RATE <= fmt.rate <= MAX_SAMPLE_RATE:
        raise AudioRefused(f"audio rate {fmt.rate} Hz is out of range {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz")
    encoding = voice_pb2.AUDIO_ENCODING_PCM16 if fmt.width == 2 else voice_pb2.AUDIO_ENCODING_FLOAT32
    return voice_pb2.AudioFormat(encoding=encoding, sample_rate=fmt.rate, channels=fmt.channels)


def _to_float32(data: bytes, width: int) -> bytes:
    """Little-endian integer samples of `width` bytes to float32 in -1..1."""
    if width == 1:  # unsigned, 128 is silence
        samples = (np.frombuffer(data, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 3:
        raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        packed = raw[:, 0] | (raw[:, 1] << 8) | (raw[:, 2] << 16)
        samples = ((packed ^ 0x800000) - 0x800000).astype(np.float32) / 8_388_608.0
    else:
        samples = np.frombuffer(data, dtype="<i4").astype(np.float32) / 2_147_483_648.0
    return samples.astype("<f4").tobytes()


class AudioConverter:
    """Converts one stream's chunks; chunk boundaries may split a sample (the rest waits for the next)."""

    def __init__(self, fmt: WyomingFormat) -> None:
        self.format = fmt
        self.voice_format = check_format(fmt)
        self._carry = b""

    def push(self, fmt: WyomingFormat, data: bytes) -> bytes:
        if fmt != self.format:
            raise AudioRefused(f"audio chunk is {fmt} but audio-start announced {self.format}")
        if self.format.width == 2:
            return data  # PCM16 as the service takes it; it carries split samples itself
        data = self._carry + data
        whole = len(data) - len(data) % self.format.width
        data, self._carry = data[:whole], data[whole:]
        return _to_float32(data, self.format.width) if data else b""
