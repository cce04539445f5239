"""`coda chat`: talk to the assistant from a terminal, typed or with a wav file.

The answer streams to stdout token by token; everything else (session, tool calls, transcripts,
errors) goes to stderr, so `echo "what time is it in Tokyo" | coda chat` prints just the answer.
Interactive (a terminal on stdin): type a message per line; Ctrl-D or /quit ends.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import wave
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import grpc
import numpy as np

from coda.v1 import assistant_pb2, assistant_pb2_grpc, events_pb2, voice_pb2

Request = assistant_pb2.ConverseRequest
CHUNK_MS = 100


def register(subparsers: argparse._SubParsersAction) -> None:
    chat = subparsers.add_parser("chat", help="chat with the assistant (typed, piped, or a spoken wav file)")
    chat.add_argument("--address", help="Coda's gRPC address (default: endpoints.assistant or grpc.address)")
    chat.add_argument("--session", default="", help="resume this session id")
    chat.add_argument(
        "--user",
        default="",
        help="user id: memory follows the user across sessions (default: assistant.default_user_id; empty keeps it to the session)",
    )
    chat.add_argument("--voice", metavar="FILE.wav", help="send this wav (PCM16) as a spoken turn, then exit")
    chat.add_argument("--save-audio", metavar="OUT.wav", help="turn voice output on and write the spoken answer")
    chat.add_argument("--persona", default="", help="persona / system prompt addition for this session")
    chat.set_defaults(func=run_chat)


class WavError(ValueError):
    """The wav file cannot be sent; the message says why."""


@dataclass
class SpokenInput:
    pcm: bytes
    sample_rate: int


def read_wav(path: str | Path) -> SpokenInput:
    """PCM16 audio of a wav file, down-mixed to mono."""
    try:
        with wave.open(str(path), "rb") as source:
            width, channels, rate = source.getsampwidth(), source.getnchannels(), source.getframerate()
            frames = source.readframes(source.getnframes())
    except (OSError, wave.Error, EOFError) as exc:
        raise WavError(f"cannot read {path}: {exc}") from None
    if width != 2:
        raise WavError(f"{path}: {8 * width}-bit samples; only 16-bit PCM wav files are supported")
    if channels > 1:
        samples = np.frombuffer(frames, dtype="<i2").reshape(-1, channels).mean(axis=1)
        frames = samples.astype("<i2").tobytes()
    return SpokenInput(frames, rate)


@dataclass
class ChatPrinter:
    """Shows Converse events: answer tokens on `out`, everything else on `info`."""

    out: TextIO
    info: TextIO
    audio: bytearray = field(default_factory=bytearray)
    audio_rate: int = 0
    errors: int = 0
    _mid_line: bool = False

    def _note(self, text: str) -> None:
        if self._mid_line:
            self.out.write("\n")
            self.out.flush()
            self._mid_line = False
        self.info.write(text + "\n")
        self.info.flush()

    def session(self, info: assistant_pb2.SessionInfo) -> None:
        state = f"resumed, {len(info.history)} earlier turns" if info.resumed else "new"
        user = info.user_id or "none: memory stays in this session"
        self._note(f"[session {info.session_id} ({state}), user {user}]")

    def event(self, event: events_pb2.Event) -> None:
        kind = event.WhichOneof("payload")
        if kind == "llm_token":
            self.out.write(event.llm_token.text)
            self.out.flush()
            self._mid_line = True
        elif kind == "llm_tool_call_requested":
            call = event.llm_tool_call_requested
            self._note(f"[tool {call.name} {call.arguments_json}]")
        elif kind == "tool_result":
            self._note(f"[tool {event.tool_result.name} -> {event.tool_result.result_json[:200]}]")
        elif kind == "tool_error":
            self._note(f"[tool {event.tool_error.name} failed: {event.tool_error.message}]")
        elif kind == "voice_stt_final":
            self._note(f"[you said: {event.voice_stt_final.text}]")
        elif kind == "llm_provider_fallback":
            fallback = event.llm_provider_fallback
            self._note(f"[{fallback.from_provider} failed ({fallback.reason}); using {fallback.to_provider}]")
        elif kind in ("llm_error", "system_error", "voice_stt_error", "voice_tts_error"):
            payload = getattr(event, kind)
            self.errors += kind != "system_error" or payload.level != events_pb2.ERROR_LEVEL_WARNING
            self._note(f"[error: {payload.message}]")
        elif kind == "voice_tts_audio":
            self.audio += event.voice_tts_audio.pcm
            self.audio_rate = self.audio_rate or event.voice_tts_audio.sample_rate
        elif kind == "conversation_announcement":
            # Said without a question (a timer went off): a line of its own among the answers.
            if self._mid_line:
                self.out.write("\n")
                self._mid_line = False
            self.out.write(event.conversation_announcement.text + "\n")
            self.out.flush()
        elif kind == "conversation_interrupted":
            self._note("[interrupted]")
        elif kind == "conversation_turn" and self._mid_line:
            self.out.write("\n")
            self.out.flush()
            self._mid_line = False

    def save_audio(self, path: str) -> None:
        with wave.open(path, "wb") as target:
            target.setnchannels(1)
            target.setsampwidth(2)
            target.setframerate(self.audio_rate or 16000)
            target.writeframes(bytes(self.audio))
        self._note(f"[spoken answer: {len(self.audio) // 2 / (self.audio_rate or 16000):.1f} s written to {path}]")


class ChatSession:
    """One Converse call driven turn by turn. Everything the assistant sends is printed as it arrives,
    also between turns while the user is typing (a timer going off is announced at once)."""

    def __init__(self, call: grpc.aio.StreamStreamCall, printer: ChatPrinter) -> None:
        self._call = call
        self._printer = printer
        self._waiting: list[tuple[Callable[[events_pb2.Event], bool], asyncio.Future[None]]] = []
        self._reader: asyncio.Task[None] | None = None
        self._failure: Exception | None = None

    async def open(self, request: assistant_pb2.SessionOpen) -> None:
        await self._send(Request(open=request), lambda e: e.HasField("conversation_started"))

    async def say(self, text: str) -> None:
        await self._send(
            Request(text=assistant_pb2.TextInput(text=text)),
            lambda e: e.HasField("conversation_turn") or _ends_input(e),
        )

    async def speak(self, spoken: SpokenInput) -> None:
        audio_format = voice_pb2.AudioFormat(
            encoding=voice_pb2.AUDIO_ENCODING_PCM16, sample_rate=spoken.sample_rate, channels=1
        )
        await self._call.write(Request(audio_start=assistant_pb2.AudioInputStart(format=audio_format)))
        step = spoken.sample_rate * 2 * CHUNK_MS // 1000
        for offset in range(0, len(spoken.pcm), step):
            chunk = assistant_pb2.AudioInputChunk(audio=spoken.pcm[offset : offset + step])
            await self._call.write(Request(audio_chunk=chunk))
        await self._send(
            Request(audio_end=assistant_pb2.AudioInputEnd()),
            lambda e: e.HasField("conversation_turn") or _ends_input(e),
        )

    async def close(self) -> None:
        await self._send(
            Request(close=assistant_pb2.SessionClose(reason="coda chat exited")),
            lambda e: e.HasField("conversation_ended"),
        )
        await self._call.done_writing()
        if self._reader is not None:
            await self._reader  # prints what is left, until the call ends

    async def _send(self, request: Request, done: Callable[[events_pb2.Event], bool]) -> None:
        """Write a request and wait for the event `done` accepts (registered first: none is missed)."""
        if self._reader is None:
            self._reader = asyncio.create_task(self._read())
        if self._failure is not None:
            raise self._failure
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (done, waiter)
        self._waiting.append(entry)
        try:
            await self._call.write(request)
            await waiter
        finally:
            self._waiting.remove(entry)

    async def _read(self) -> None:
        """Print every response; wake the waiter whose event arrived; hand a failure to the waiters."""
        try:
            while True:
                response = await self._call.read()
                if not isinstance(response, assistant_pb2.ConverseResponse):  # grpc.aio.EOF
                    raise ConnectionError("the assistant ended the conversation")
                if response.HasField("session"):
                    self._printer.session(response.session)
                    continue
                self._printer.event(response.event)
                for done, waiter in self._waiting:
                    if not waiter.done() and done(response.event):
                        waiter.set_result(None)
        except (grpc.aio.AioRpcError, ConnectionError) as exc:
            self._failure = exc
            for _, waiter in self._waiting:
                if not waiter.done():
                    waiter.set_exception(exc)


def _ends_input(event: events_pb2.Event) -> bool:
    """A turn that ends before it has a user text: nothing was heard, or listening failed."""
    if event.HasField("voice_stt_error"):
        return True
    return event.HasField("system_error") and "no speech" in event.system_error.message


async def _lines(stream: TextIO, interactive: bool) -> AsyncIterator[str]:
    while True:
        if interactive:
            print("you> ", end="", file=sys.stderr, flush=True)
        line = await asyncio.to_thread(stream.readline)
        if not line:
            return
        text = line.strip()
        if text in ("/quit", "/exit"):
            return
        if text:
            yield text


async def chat(args: argparse.Namespace, address: str, stdin: TextIO, out: TextIO, info: TextIO) -> int:
    printer = ChatPrinter(out, info)
    spoken = read_wav(args.voice) if args.voice else None
    settings = events_pb2.ConversationSettings(voice_output=bool(args.save_audio), persona=args.persona)
    async with grpc.aio.insecure_channel(address) as channel:
        call = assistant_pb2_grpc.AssistantStub(channel).Converse()
        session = ChatSession(call, printer)
        try:
            await session.open(assistant_pb2.SessionOpen(session_id=args.session, user_id=args.user, settings=settings))
            if spoken is not None:
                await session.speak(spoken)
            else:
                async for text in _lines(stdin, stdin.isatty()):
                    await session.say(text)
            await session.close()
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                info.write(f"coda chat: cannot reach Coda at {address} (is `coda serve` running?)\n")
            else:
                info.write(f"coda chat: {exc.code().name}: {exc.details()}\n")
            return 1
        finally:
            call.cancel()
    if args.save_audio:
        printer.save_audio(args.save_audio)
    return 1 if printer.errors else 0


def run_chat(args: argparse.Namespace) -> int:
    from coda.cli import load_config

    config = load_config(args)
    address = args.address or config.endpoint("assistant")
    try:
        return asyncio.run(chat(args, address, sys.stdin, sys.stdout, sys.stderr))
    except WavError as exc:
        print(f"coda chat: {exc}", file=sys.stderr)
        return 2
    except ConnectionError as exc:
        print(f"coda chat: {exc}", file=sys.stderr)
        return 1
