"""Audio formats and conversions: validation, decoding to PCM16 mono, streaming resampling, chunking.

Everything here is pure (no I/O) and streaming: chunk boundaries may fall anywhere, even inside a
sample, and the result is the same as converting the whole stream at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from coda.v1 import voice_pb2

PCM16 = voice_pb2.AUDIO_ENCODING_PCM16
FLOAT32 = voice_pb2.AUDIO_ENCODING_FLOAT32
_BYTES_PER_SAMPLE: dict[int, int] = {PCM16: 2, FLOAT32: 4}

MIN_SAMPLE_RATE = 4_000
MAX_SAMPLE_RATE = 192_000
MAX_CHANNELS = 4


class AudioFormatError(ValueError):
    """The declared audio format is unusable; the message says why."""


@dataclass(frozen=True)
class InputFormat:
    encoding: int
    sample_rate: int
    channels: int

    @property
    def frame_bytes(self) -> int:
        """Bytes of one sample across all channels."""
        return _BYTES_PER_SAMPLE[self.encoding] * self.channels


def validate_format(fmt: voice_pb2.AudioFormat) -> InputFormat:
    """Check a client's declared format; channels 0 means mono."""
    if fmt.encoding not in _BYTES_PER_SAMPLE:
        raise AudioFormatError(
            "audio format encoding must be AUDIO_ENCODING_PCM16 or AUDIO_ENCODING_FLOAT32"
            f" (got {voice_pb2.AudioEncoding.Name(fmt.encoding) if fmt.encoding in voice_pb2.AudioEncoding.values() else fmt.encoding})"
        )
    if not MIN_SAMPLE_RATE <= fmt.sample_rate <= MAX_SAMPLE_RATE:
        raise AudioFormatError(
            f"audio format sample_rate {fmt.sample_rate} Hz is out of range {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz"
        )
    channels = fmt.channels or 1
    if channels > MAX_CHANNELS:
        raise AudioFormatError(f"audio format has {channels} channels; at most {MAX_CHANNELS} are supported")
    return InputFormat(fmt.encoding, fmt.sample_rate, channels)


@lru_cache(maxsize=32)
def _lowpass_taps(cutoff_ratio: float, num_taps: int = 63) -> np.ndarray:
    """Hamming-windowed sinc low-pass; cutoff_ratio is cutoff / input rate (0..0.5)."""
    n = np.arange(num_taps) - (num_taps - 1) / 2
    taps = 2 * cutoff_ratio * np.sinc(2 * cutoff_ratio * n) * np.hamming(num_taps)
    return (taps / taps.sum()).astype(np.float64)


class Resampler:
    """Streaming sample-rate converter for mono float samples.

    Downsampling low-passes first (anti-aliasing), then both directions interpolate linearly:
    plenty for speech going to a recogniser or a speaker. State carries across calls, so chunked
    input gives the same output as one big call.
    """

    def __init__(self, src_rate: int, dst_rate: int) -> None:
        self.src_rate = src_rate
        self.dst_rate = dst_rate
        self._step = src_rate / dst_rate  # input samples per output sample
        self._taps = _lowpass_taps(0.45 * dst_rate / src_rate) if dst_rate < src_rate else None
        self._history = np.zeros(0 if self._taps is None else len(self._taps) - 1)
        self._pending = np.zeros(0)  # filtered input not yet passed by the output position
        self._position = 0.0  # next output sample's position, in input samples from _pending[0]

    def process(self, samples: np.ndarray) -> np.ndarray:
        if self.src_rate == self.dst_rate or samples.size == 0:
            return samples.astype(np.float64, copy=False)
        x = samples.astype(np.float64, copy=False)
        if self._taps is not None:
            padded = np.concatenate([self._history, x])
            x = np.convolve(padded, self._taps, mode="valid")
            self._history = padded[-(len(self._taps) - 1) :]
        buffer = np.concatenate([self._pending, x])
        last = len(buffer) - 1
        count = int((last - self._position) // self._step) + 1 if last >= self._position else 0
        positions = self._position + np.arange(count) * self._step
        out = np.interp(positions, np.arange(len(buffer)), buffer) if count else np.zeros(0)
        next_position = self._position + count * self._step
        consumed = min(int(next_position), len(buffer))
        self._pending = buffer[consumed:]
        self._position = next_position - consumed
        return out


def to_pcm16(samples: np.ndarray) -> bytes:
    """Float samples in PCM16 units (-32768..32767) to little-endian PCM16 bytes, clipped."""
    return np.clip(np.rint(samples), -32768, 32767).astype("<i2").tobytes()


def pcm16_samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


class PcmDecoder:
    """Turns a client's raw audio chunks into PCM16 mono bytes at the engine's rate.

    Carries partial samples (an odd byte of PCM16, a split float, a split multi-channel frame)
    over to the next chunk, downmixes by averaging channels, and resamples.
    """

    def __init__(self, fmt: InputFormat, target_rate: int) -> None:
        self.format = fmt
        self.target_rate = target_rate
        self._carry = b""
        self._resampler = Resampler(fmt.sample_rate, target_rate)
        #: Input seconds decoded so far (whole frames only).
        self.input_seconds = 0.0

    def push(self, data: bytes) -> bytes:
        data = self._carry + data
        whole = len(data) - len(data) % self.format.frame_bytes
        data, self._carry = data[:whole], data[whole:]
        if not data:
            return b""
        if self.format.encoding == PCM16:
            samples = np.frombuffer(data, dtype="<i2").astype(np.float64)
        else:
            samples = np.frombuffer(data, dtype="<f4").astype(np.float64)
            samples = np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0) * 32767.0
        if self.format.channels > 1:
            samples = samples.reshape(-1, self.format.channels).mean(axis=1)
        self.input_seconds += len(samples) / self.format.sample_rate
        return to_pcm16(self._resampler.process(samples))


class PcmResampler:
    """PCM16 mono bytes at one rate to PCM16 mono bytes at another, streaming."""

    def __init__(self, src_rate: int, dst_rate: int) -> None:
        self.src_rate = src_rate
        self.dst_rate = dst_rate
        self._decoder = PcmDecoder(InputFormat(PCM16, src_rate, 1), dst_rate)

    def process(self, pcm: bytes) -> bytes:
        if self.src_rate == self.dst_rate:
            return pcm
        return self._decoder.push(pcm)


class Rechunker:
    """Cuts a byte stream into fixed-size chunks; `flush` returns the short remainder."""

    def __init__(self, chunk_bytes: int) -> None:
        if chunk_bytes <= 0:
            raise ValueError("chunk_bytes must be positive")
        self.chunk_bytes = chunk_bytes
        self._buffer = bytearray()

    def push(self, data: bytes) -> list[bytes]:
        self._buffer += data
        size = self.chunk_bytes
        count = len(self._buffer) // size
        chunks = [bytes(self._buffer[i * size : (i + 1) * size]) for i in range(count)]
        del self._buffer[: count * size]
        return chunks

    def flush(self) -> bytes:
        rest = bytes(self._buffer)
        self._buffer.clear()
        return rest

    @property
    def buffered(self) -> int:
        return len(self._buffer)
