"""The small interfaces a turn needs from the other components.

`clients.py` implements them over gRPC (the only way Coda components talk); unit tests of the turn
logic give it in-process stand-ins with the same shape.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from coda.v1 import llm_pb2, memory_pb2, tools_pb2, voice_pb2


class EngineError(Exception):
    """A component call failed; `code` is the gRPC status code name (e.g. "UNAVAILABLE")."""

    def __init__(self, component: str, code: str, message: str) -> None:
        super().__init__(f"{component}: {message} ({code})")
        self.component = component
        self.code = code
        self.message = message


class GenerationCall(Protocol):
    """One running Llm.Generate: iterate its responses; `cancel` asks the model to stop."""

    def __aiter__(self) -> AsyncIterator[llm_pb2.GenerateResponse]: ...

    async def cancel(self) -> None: ...

    def abort(self) -> None:
        """Drop the call at once (when the cancel was not acknowledged in time)."""
        ...


class SynthesisCall(Protocol):
    """One running Voice.Synthesize: send text fragments, iterate audio."""

    def __aiter__(self) -> AsyncIterator[voice_pb2.SynthesizeResponse]: ...

    async def send(self, text: str, flush: bool = False) -> None: ...

    async def finish(self) -> None:
        """No more text: speak what is buffered and end."""
        ...

    async def cancel(self) -> None: ...

    def abort(self) -> None: ...


class LlmPort(Protocol):
    async def generate(self, start: llm_pb2.GenerateStart) -> GenerationCall: ...

    async def prefill(self, start: llm_pb2.GenerateStart) -> None:
        """Evaluate a generation's prompt ahead of it (Llm.Prefill); EngineError when it fails."""
        ...


class ToolsPort(Protocol):
    async def list_tools(self) -> list[llm_pb2.ToolSpec]: ...

    def execute(self, calls: Sequence[tools_pb2.ToolCall]) -> AsyncIterator[tools_pb2.ExecuteResponse]:
        """Run calls concurrently; yields their responses until each has a result or an error."""
        ...


class MemoryPort(Protocol):
    async def recall(self, request: memory_pb2.RecallRequest) -> memory_pb2.RecallResponse: ...

    async def add_turn(self, request: memory_pb2.AddTurnRequest) -> None: ...

    async def history(self, session_id: str, max_turns: int) -> list[memory_pb2.Turn]: ...

    async def store(self, request: memory_pb2.StoreRequest) -> memory_pb2.StoreResponse: ...


class VoicePort(Protocol):
    def transcribe(
        self, config: voice_pb2.TranscribeConfig, audio: AsyncIterator[bytes]
    ) -> AsyncIterator[voice_pb2.TranscribeResponse]:
        """Stream audio in (ending the stream when `audio` ends), transcription responses out."""
        ...

    async def synthesize(self, config: voice_pb2.SynthesizeConfig) -> SynthesisCall: ...


class Engines(Protocol):
    # Read-only, so that a holder of more specific ports (GrpcEngines, test fakes) qualifies.
    @property
    def llm(self) -> LlmPort: ...
    @property
    def tools(self) -> ToolsPort: ...
    @property
    def memory(self) -> MemoryPort: ...
    @property
    def voice(self) -> VoicePort: ...
