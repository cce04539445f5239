"""A Wyoming protocol server exposing Coda's embedded engines (PocketSphinx STT, eSpeak NG TTS),
so Home Assistant or any Wyoming client can use them, and so Coda's Wyoming client engines can be
tested against a real server.

    python -m coda.voice.wyoming_server --uri tcp://127.0.0.1:10300

Prints `wyoming server listening on tcp://HOST:PORT` once it accepts connections (port 0 picks a
free port). Handles Describe -> Info; Transcribe, AudioStart, AudioChunk*, AudioStop -> Transcript;
Synthesize -> AudioStart, AudioChunk*, AudioStop. Stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from contextlib import aclosing
from functools import partial

from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioChunkConverter, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import AsrModel, AsrProgram, Attribution, Describe, Info, TtsProgram, TtsVoice
from wyoming.server import AsyncEventHandler, AsyncServer, AsyncTcpServer
from wyoming.tts import Synthesize

from coda import __version__, logs
from coda.voice.audio import PcmResampler
from coda.voice.engines.base import EngineError, SttEngine, SttStream, TtsEngine
from coda.voice.engines.espeak_tts import EspeakTts
from coda.voice.engines.pocketsphinx_stt import LANGUAGE_MODELS, PocketsphinxStt

log = logging.getLogger(__name__)

_ATTRIBUTION = Attribution(name="Coda", url="https://github.com/coda")
BANNER = "wyoming server listening on"


def describe(stt: SttEngine, tts: TtsEngine, voice: str) -> Info:
    return Info(
        asr=[
            AsrProgram(
                name=f"coda-{stt.name}",
                attribution=_ATTRIBUTION,
                installed=True,
                description="Coda embedded speech recognition (CMU PocketSphinx)",
                version=__version__,
                models=[
                    AsrModel(
                        name="en-us",
                        attribution=_ATTRIBUTION,
                        installed=True,
                        description="PocketSphinx en-US",
                        version=__version__,
                        languages=["en"],
                    )
                ],
            )
        ],
        tts=[
            TtsProgram(
                name=f"coda-{tts.name}",
                attribution=_ATTRIBUTION,
                installed=True,
                description="Coda embedded speech synthesis (eSpeak NG)",
                version=__version__,
                # Exactly the voices installed (the default first), so a client never picks a missing one.
                voices=[
                    TtsVoice(
                        name=name,
                        attribution=_ATTRIBUTION,
                        installed=True,
                        description="eSpeak NG",
                        version=__version__,
                        languages=[name.split("-")[0]],
                    )
                    for name in sorted(tts.voices(), key=lambda name: name != voice)
                ],
            )
        ],
    )


class EngineHandler(AsyncEventHandler):
    """One client connection; STT state lives here, the engines are shared."""

    def __init__(self, stt: SttEngine, tts: TtsEngine, voice: str, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._stt = stt
        self._tts = tts
        self._voice = voice
        self._language = ""
        self._stream: SttStream | None = None
        self._to_mono16 = AudioChunkConverter(width=2, channels=1)
        self._resampler: PcmResampler | None = None

    async def handle_event(self, event: Event) -> bool:
        try:
            await self._handle(event)
        except EngineError as exc:
            log.warning("wyoming request failed", extra={"error": str(exc)})
            await self.write_event(Error(text=str(exc), code="engine-error").event())
        return True

    async def _handle(self, event: Event) -> None:
        if Describe.is_type(event.type):
            await self.write_event(describe(self._stt, self._tts, self._voice).event())
        elif Transcribe.is_type(event.type):
            self._language = Transcribe.from_event(event).language or ""
        elif AudioStart.is_type(event.type):
            await self._close_stream()
            self._stream = await self._stt.open(self._language)
            self._resampler = None
        elif AudioChunk.is_type(event.type) and self._stream is not None:
            chunk = self._to_mono16.convert(AudioChunk.from_event(event))
            if self._resampler is None or self._resampler.src_rate != chunk.rate:
                self._resampler = PcmResampler(chunk.rate, self._stt.sample_rate)
            await self._stream.feed(self._resampler.process(chunk.audio))
        elif AudioStop.is_type(event.type) and self._stream is not None:
            stream, self._stream = self._stream, None
            result = await stream.finish()
            await self.write_event(Transcript(text=result.text, language=result.language).event())
        elif Synthesize.is_type(event.type):
            request = Synthesize.from_event(event)
            voice = request.voice.name if request.voice and request.voice.name else self._voice
            rate = self._tts.sample_rate
            await self.write_event(AudioStart(rate=rate, width=2, channels=1).event())
            async with aclosing(self._tts.synthesize(request.text, voice)) as pieces:
                async for piece in pieces:
                    chunk = AudioChunk(rate=piece.sample_rate, width=2, channels=1, audio=piece.pcm)
                    await self.write_event(chunk.event())
            await self.write_event(AudioStop().event())

    async def _close_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            await stream.close()

    async def disconnect(self) -> None:
        await self._close_stream()


async def start_server(uri: str, voice: str = "en-us", language_model: str = "domain") -> tuple[AsyncServer, str]:
    """Load the engines, start serving, return the server and the URI it actually listens on."""
    stt, tts = PocketsphinxStt(language_model), EspeakTts(voice)
    await stt.load()
    await tts.load()
    server = AsyncServer.from_uri(uri)
    await server.start(partial(EngineHandler, stt, tts, voice))
    if isinstance(server, AsyncTcpServer) and isinstance(server._server, asyncio.Server):
        host, port = server._server.sockets[0].getsockname()[:2]
        uri = f"tcp://{host}:{port}"
    return server, uri


async def serve(uri: str, voice: str, language_model: str) -> None:
    server, actual = await start_server(uri, voice, language_model)
    print(f"{BANNER} {actual}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m coda.voice.wyoming_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--uri", default="tcp://127.0.0.1:10300", help="tcp://HOST:PORT or unix://PATH")
    parser.add_argument("--voice", default="en-us", help="default eSpeak NG voice")
    parser.add_argument(
        "--language-model", default="domain", choices=LANGUAGE_MODELS, help="STT language model (see voice config)"
    )
    parser.add_argument("--log-level", default="warning")
    args = parser.parse_args(argv)
    logs.configure(args.log_level)
    asyncio.run(serve(args.uri, args.voice, args.language_model))


if __name__ == "__main__":
    main()
