"""The turn's ports over gRPC: thin wrappers around the generated stubs of the other components.

Every gRPC failure leaves here as `EngineError`, so the turn logic never sees gRPC types.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass

import grpc

from coda.assistant.ports import EngineError
from coda.v1 import (
    llm_pb2,
    llm_pb2_grpc,
    memory_pb2,
    memory_pb2_grpc,
    tools_pb2,
    tools_pb2_grpc,
    voice_pb2,
    voice_pb2_grpc,
)

ChannelOf = Callable[[str], grpc.aio.Channel]
#: A prefill that has not finished by then is of no more use (the user has stopped speaking).
PREFILL_TIMEOUT_SECONDS = 10.0


@contextlib.contextmanager
def _translated(component: str) -> Iterator[None]:
    try:
        yield
    except grpc.aio.AioRpcError as exc:
        raise EngineError(component, exc.code().name, exc.details() or exc.code().name) from None


class _StreamCall:
    """Shared behaviour of a bidi call we write to and read from."""

    component = ""

    def __init__(self, call: grpc.aio.StreamStreamCall) -> None:
        self._call = call
        self._writing = True

    async def _write(self, request: object) -> None:
        if not self._writing or self._call.done():
            return
        try:
            await self._call.write(request)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            # The call already ended; its status surfaces where the responses are read.
            self._writing = False

    async def _done_writing(self) -> None:
        if not self._writing or self._call.done():
            return
        self._writing = False
        with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
            await self._call.done_writing()

    def abort(self) -> None:
        self._call.cancel()

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        with _translated(self.component):
            async for response in self._call:
                yield response


class GrpcGeneration(_StreamCall):
    component = "llm"

    async def cancel(self) -> None:
        await self._write(llm_pb2.GenerateRequest(cancel=llm_pb2.GenerateCancel()))


class GrpcSynthesis(_StreamCall):
    component = "voice"

    async def send(self, text: str, flush: bool = False) -> None:
        await self._write(voice_pb2.SynthesizeRequest(text=voice_pb2.SynthesizeText(text=text, flush=flush)))

    async def finish(self) -> None:
        await self._done_writing()

    async def cancel(self) -> None:
        await self._write(voice_pb2.SynthesizeRequest(cancel=voice_pb2.SynthesizeCancel()))


class GrpcLlm:
    def __init__(self, channel_of: ChannelOf) -> None:
        self._channel_of = channel_of

    async def generate(self, start: llm_pb2.GenerateStart) -> GrpcGeneration:
        call = llm_pb2_grpc.LlmStub(self._channel_of("llm")).Generate()
        generation = GrpcGeneration(call)
        await generation._write(llm_pb2.GenerateRequest(start=start))
        return generation

    async def prefill(self, start: llm_pb2.GenerateStart) -> None:
        with _translated("llm"):
            await llm_pb2_grpc.LlmStub(self._channel_of("llm")).Prefill(
                llm_pb2.PrefillRequest(start=start), timeout=PREFILL_TIMEOUT_SECONDS
            )


class GrpcTools:
    def __init__(self, channel_of: ChannelOf) -> None:
        self._channel_of = channel_of

    async def list_tools(self) -> list[llm_pb2.ToolSpec]:
        with _translated("tools"):
            stub = tools_pb2_grpc.ToolsStub(self._channel_of("tools"))
            response = await stub.ListTools(tools_pb2.ListToolsRequest(), timeout=10)
        return list(response.tools)

    async def execute(self, calls: Sequence[tools_pb2.ToolCall]) -> AsyncIterator[tools_pb2.ExecuteResponse]:
        call = tools_pb2_grpc.ToolsStub(self._channel_of("tools")).Execute()
        pending = {c.call_id for c in calls}
        try:
            with _translated("tools"):
                for tool_call in calls:
                    await call.write(tools_pb2.ExecuteRequest(call=tool_call))
                # The request side stays open: half-closing could read as "cancel what is running".
                async for response in call:
                    yield response
                    kind = response.WhichOneof("response")
                    if kind in ("result", "error"):
                        pending.discard(getattr(response, kind).call_id)
                        if not pending:
                            break
        finally:
            call.cancel()


class GrpcMemory:
    def __init__(self, channel_of: ChannelOf, timeout: float) -> None:
        self._channel_of = channel_of
        self._timeout = timeout

    def _stub(self) -> memory_pb2_grpc.MemoryAsyncStub:
        return memory_pb2_grpc.MemoryStub(self._channel_of("memory"))

    async def recall(self, request: memory_pb2.RecallRequest) -> memory_pb2.RecallResponse:
        with _translated("memory"):
            return await self._stub().Recall(request, timeout=self._timeout)

    async def add_turn(self, request: memory_pb2.AddTurnRequest) -> None:
        with _translated("memory"):
            await self._stub().AddTurn(request, timeout=self._timeout)

    async def history(self, session_id: str, max_turns: int) -> list[memory_pb2.Turn]:
        with _translated("memory"):
            response = await self._stub().History(
                memory_pb2.HistoryRequest(session_id=session_id, max_turns=max_turns), timeout=self._timeout
            )
        return list(response.turns)

    async def store(self, request: memory_pb2.StoreRequest) -> memory_pb2.StoreResponse:
        with _translated("memory"):
            return await self._stub().Store(request, timeout=self._timeout)


class GrpcVoice:
    def __init__(self, channel_of: ChannelOf) -> None:
        self._channel_of = channel_of

    async def transcribe(
        self, config: voice_pb2.TranscribeConfig, audio: AsyncIterator[bytes]
    ) -> AsyncIterator[voice_pb2.TranscribeResponse]:
        call = voice_pb2_grpc.VoiceStub(self._channel_of("voice")).Transcribe()

        async def pump() -> None:
            await call.write(voice_pb2.TranscribeRequest(config=config))
            async for chunk in audio:
                await call.write(voice_pb2.TranscribeRequest(audio=chunk))
            await call.write(voice_pb2.TranscribeRequest(end=voice_pb2.AudioStreamEnd()))
            await call.done_writing()

        writer = asyncio.create_task(pump())
        try:
            with _translated("voice"):
                async for response in call:
                    yield response
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError, asyncio.InvalidStateError):
                await writer
            call.cancel()

    async def synthesize(self, config: voice_pb2.SynthesizeConfig) -> GrpcSynthesis:
        call = voice_pb2_grpc.VoiceStub(self._channel_of("voice")).Synthesize()
        synthesis = GrpcSynthesis(call)
        await synthesis._write(voice_pb2.SynthesizeRequest(config=config))
        return synthesis


@dataclass
class GrpcEngines:
    llm: GrpcLlm
    tools: GrpcTools
    memory: GrpcMemory
    voice: GrpcVoice

    @classmethod
    def over(cls, channel_of: ChannelOf, memory_timeout: float) -> GrpcEngines:
        return cls(
            GrpcLlm(channel_of), GrpcTools(channel_of), GrpcMemory(channel_of, memory_timeout), GrpcVoice(channel_of)
        )
