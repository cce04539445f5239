"""Helpers for the assistant tests: a Converse client, scripted model answers, spoken audio."""

from __future__ import annotations

import asyncio
import json
import wave
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from coda.schema import event_type
from coda.v1 import assistant_pb2, assistant_pb2_grpc, events_pb2, voice_pb2, voice_pb2_grpc

Request = assistant_pb2.ConverseRequest


def open_request(session_id: str = "", user_id: str = "", **settings: object) -> Request:
    request = Request(open=assistant_pb2.SessionOpen(session_id=session_id, user_id=user_id))
    if settings:
        request.open.settings.CopyFrom(events_pb2.ConversationSettings(**settings))  # type: ignore[arg-type]
    return request


def text_request(text: str, turn_id: str = "") -> Request:
    return Request(text=assistant_pb2.TextInput(text=text, turn_id=turn_id))


@dataclass
class Converser:
    """A Converse call with the responses read so far."""

    call: grpc.aio.StreamStreamCall
    session: assistant_pb2.SessionInfo | None = None
    events: list[events_pb2.Event] = field(default_factory=list)

    async def send(self, request: Request) -> None:
        await self.call.write(request)

    async def read_until(
        self, done: Callable[[events_pb2.Event], bool], timeout: float = 30.0
    ) -> list[events_pb2.Event]:
        """Events read until (and including) the first one `done` accepts."""
        got: list[events_pb2.Event] = []

        async def loop() -> None:
            while True:
                response = await self.call.read()
                if response == grpc.aio.EOF:
                    raise AssertionError(f"Converse ended early; got {[event_type(e) for e in got]}")
                if response.HasField("session"):
                    self.session = response.session
                    continue
                got.append(response.event)
                self.events.append(response.event)
                if done(response.event):
                    return

        await asyncio.wait_for(loop(), timeout)
        return got

    async def open(self, request: Request | None = None) -> assistant_pb2.SessionInfo:
        await self.send(request or open_request())
        response = await asyncio.wait_for(self.call.read(), 30)
        assert response != grpc.aio.EOF and response.HasField("session"), response
        self.session = response.session
        await self.read_until(lambda e: e.HasField("conversation_started"))
        return response.session

    async def turn(self, text: str, turn_id: str = "", timeout: float = 30.0) -> list[events_pb2.Event]:
        await self.send(text_request(text, turn_id))
        return await self.read_until(lambda e: e.HasField("conversation_turn"), timeout)

    async def close(self) -> list[events_pb2.Event]:
        await self.send(Request(close=assistant_pb2.SessionClose(reason="test done")))
        rest = []
        while (response := await asyncio.wait_for(self.call.read(), 30)) != grpc.aio.EOF:
            rest.append(response.event)
        return rest


def converser(channel: grpc.aio.Channel) -> Converser:
    return Converser(assistant_pb2_grpc.AssistantStub(channel).Converse())


def types_of(events: Iterable[events_pb2.Event]) -> list[str]:
    return [event_type(e) for e in events]


def answer_text(events: Iterable[events_pb2.Event]) -> str:
    return "".join(e.llm_token.text for e in events if e.HasField("llm_token"))


def final_turn(events: Iterable[events_pb2.Event]) -> events_pb2.ConversationTurn:
    turns = [e.conversation_turn for e in events if e.HasField("conversation_turn")]
    assert turns, "no conversation.turn"
    return turns[-1]


# -- scripted OpenAI-compatible answers (for coda.llm.replay.ReplayServer) --------------------------


def _chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
    body = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "model": "replay",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}  # fmt: skip
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def sse_text(words: Iterable[str]) -> bytes:
    """A streamed text answer, one SSE event per word."""
    body = _chunk({"role": "assistant", "content": ""})
    for word in words:
        body += _chunk({"content": word})
    return body + _chunk({}, "stop") + b"data: [DONE]\n\n"


def sse_tool_call(name: str, arguments: dict[str, object], call_id: str = "call_test_1") -> bytes:
    body = _chunk({"role": "assistant", "content": None, "tool_calls": [
        {"index": 0, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}]})  # fmt: skip
    body += _chunk({"tool_calls": [{"index": 0, "function": {"arguments": json.dumps(arguments)}}]})
    return body + _chunk({}, "tool_calls") + b"data: [DONE]\n\n"


def replay_provider_env(base_url: str, fallback: bool = True, **extra: str) -> dict[str, str]:
    """Config overrides that put a replay server first in the LLM chain (the embedded agent behind it)."""
    provider = {"name": "replay", "kind": "openai", "base_url": base_url, "model": "replay",
                "read_timeout_seconds": 10.0}  # fmt: skip
    return {
        "CODA_LLM__PROVIDERS": json.dumps([provider]),
        "CODA_LLM__CHAIN": json.dumps(["replay", "embedded"] if fallback else ["replay"]),
        **extra,
    }


# -- speech -------------------------------------------------------------------------------------


async def synthesize(channel: grpc.aio.Channel, text: str, sample_rate: int = 16000) -> bytes:
    """PCM16 mono speech of `text` from the embedded TTS, through Voice.Synthesize."""
    call = voice_pb2_grpc.VoiceStub(channel).Synthesize()
    await call.write(voice_pb2.SynthesizeRequest(config=voice_pb2.SynthesizeConfig(sample_rate=sample_rate)))
    await call.write(voice_pb2.SynthesizeRequest(text=voice_pb2.SynthesizeText(text=text)))
    await call.done_writing()
    pcm = bytearray()
    async for response in call:
        if response.HasField("audio"):
            pcm += response.audio.pcm
    return bytes(pcm)


def write_wav(path: Path, pcm: bytes, sample_rate: int = 16000) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm)
    return path


def silence(seconds: float, sample_rate: int = 16000) -> bytes:
    return b"\x00\x00" * int(seconds * sample_rate)
