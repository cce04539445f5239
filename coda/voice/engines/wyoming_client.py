"""Real external engines over the Wyoming protocol (Home Assistant's speech protocol): STT from a
wyoming-faster-whisper server, TTS from a wyoming-piper server, or Coda's own
`python -m coda.voice.wyoming_server`. One TCP connection per utterance / sentence, as the
protocol intends. Every failure becomes an EngineError so the breaker can count it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable
from typing import TypeVar

from wyoming.asr import Transcribe, TranscriptChunk
from wyoming.asr import Transcript as WyomingTranscript
from wyoming.audio import AudioChunk, AudioChunkConverter, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.tts import Synthesize, SynthesizeVoice

from coda.voice.engines.base import AudioPiece, EngineError, Transcript

T = TypeVar("T")

STT_SAMPLE_RATE = 16_000


class _Connection:
    """A Wyoming TCP connection whose every step has a deadline and fails as EngineError."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.target = f"tcp://{host}:{port}"
        self._client = AsyncTcpClient(host, port)
        self._timeout = timeout

    async def _step(self, what: str, awaitable: Awaitable[T]) -> T:
        try:
            return await asyncio.wait_for(awaitable, self._timeout)
        except TimeoutError:
            raise EngineError(f"wyoming {self.target}: no answer to {what} within {self._timeout:g} s") from None
        except (OSError, ConnectionError) as exc:
            raise EngineError(f"wyoming {self.target}: {what} failed: {exc}") from exc

    async def connect(self) -> None:
        await self._step("connect", self._client.connect())

    async def send(self, event: object) -> None:
        await self._step("send", self._client.write_event(event.event()))  # type: ignore[attr-defined]

    async def receive(self, what: str):  # type: ignore[no-untyped-def]
        event = await self._step(what, self._client.read_event())
        if event is None:
            raise EngineError(f"wyoming {self.target}: connection closed while waiting for {what}")
        if Error.is_type(event.type):
            raise EngineError(f"wyoming {self.target}: server error: {Error.from_event(event).text}")
        return event

    async def close(self) -> None:
        with contextlib.suppress(OSError, ConnectionError):  # already gone
            await self._client.disconnect()


class _WyomingSttStream:
    def __init__(self, connection: _Connection, language: str) -> None:
        self._connection = connection
        self._language = language
        self._closed = False

    async def feed(self, pcm: bytes) -> None:
        chunk = AudioChunk(rate=STT_SAMPLE_RATE, width=2, channels=1, audio=pcm)
        await self._connection.send(chunk)

    async def partial(self) -> str:
        """Wyoming servers send transcript chunks only at the end; there are no live partials."""
        return ""

    async def pause(self, trailing_ms: int) -> None:
        """Decodes as it goes: nothing to start early."""

    async def resume(self) -> None:
        """Nothing was started at the pause."""

    async def finish(self) -> Transcript:
        try:
            await self._connection.send(AudioStop())
            pieces: list[str] = []
            while True:
                event = await self._connection.receive("transcript")
                if TranscriptChunk.is_type(event.type):
                    pieces.append(TranscriptChunk.from_event(event).text)
                elif WyomingTranscript.is_type(event.type):
                    result = WyomingTranscript.from_event(event)
                    text = (result.text or "".join(pieces)).strip()
                    return Transcript(
                        text=text, confidence=0.0, language=result.language or self._language, engine="wyoming"
                    )
        finally:
            await self.close()

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._connection.close()


class WyomingStt:
    name = "wyoming"
    sample_rate = STT_SAMPLE_RATE

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.target = f"wyoming:tcp://{host}:{port}"

    async def load(self) -> None:
        """Nothing to load; the server may come up later (the breaker tracks it)."""

    def supports(self, language: str) -> bool:
        return True  # the server decides; whisper knows ~100 languages

    async def open(self, language: str) -> _WyomingSttStream:
        connection = _Connection(self.host, self.port, self.timeout)
        try:
            await connection.connect()
            await connection.send(Transcribe(language=language or None))
            await connection.send(AudioStart(rate=STT_SAMPLE_RATE, width=2, channels=1))
        except BaseException:
            await connection.close()
            raise
        return _WyomingSttStream(connection, language)

    async def close(self) -> None:
        """Connections are per utterance; nothing is held."""


class WyomingTts:
    name = "wyoming"

    def __init__(self, host: str, port: int, timeout: float = 10.0, sample_rate: int = 22_050) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        #: What piper voices usually produce; actual pieces carry the server's rate.
        self.sample_rate = sample_rate
        self.target = f"wyoming:tcp://{host}:{port}"
        #: The server picks its own default voice.
        self.default_voice = ""

    async def load(self) -> None:
        """Nothing to load; the server may come up later (the breaker tracks it)."""

    def voices(self) -> tuple[str, ...]:
        """Unknown here: only the server knows its voices (and it may not be up yet)."""
        return ()

    def has_voice(self, voice: str) -> bool:
        return True  # the server is the judge of its voice names

    async def synthesize(self, text: str, voice: str) -> AsyncGenerator[AudioPiece, None]:
        connection = _Connection(self.host, self.port, self.timeout)
        # Mono 16-bit whatever the server sends; the rate is converted by the service.
        converter = AudioChunkConverter(rate=None, width=2, channels=1)
        try:
            await connection.connect()
            await connection.send(Synthesize(text=text, voice=SynthesizeVoice(name=voice) if voice else None))
            while True:
                event = await connection.receive("audio")
                if AudioChunk.is_type(event.type):
                    chunk = converter.convert(AudioChunk.from_event(event))
                    if chunk.audio:
                        yield AudioPiece(chunk.audio, chunk.rate)
                elif AudioStop.is_type(event.type):
                    return
        finally:
            await connection.close()

    async def close(self) -> None:
        """Connections are per sentence; nothing is held."""
