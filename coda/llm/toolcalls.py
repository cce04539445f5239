"""Assembling tool calls that providers stream in fragments.

OpenAI-style streams send a tool call as several deltas sharing an `index`: the first usually
carries the id and the function name, later ones carry pieces of the arguments JSON text. Some
servers (Ollama) send the whole call in one delta. The assembler accepts both and only hands out
complete calls with parsed arguments.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from coda.llm.types import ToolCall, ToolCallDelta


class ToolCallError(ValueError):
    """A streamed tool call could not be completed (no name, arguments not a JSON object)."""


@dataclass
class _Partial:
    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


class ToolCallAssembler:
    def __init__(self) -> None:
        self._calls: dict[int, _Partial] = {}

    def __bool__(self) -> bool:
        return bool(self._calls)

    def add(self, delta: ToolCallDelta) -> None:
        partial = self._calls.setdefault(delta.index, _Partial())
        if delta.id and not partial.id:
            partial.id = delta.id
        if delta.name:
            # Names arrive whole in practice; a server that repeats the name must not double it.
            partial.name = delta.name if partial.name in ("", delta.name) else partial.name + delta.name
        if delta.arguments:
            partial.arguments.append(delta.arguments)

    def complete(self) -> list[ToolCall]:
        """The finished calls in index order; raises ToolCallError for one that is incomplete."""
        calls: list[ToolCall] = []
        for index in sorted(self._calls):
            partial = self._calls[index]
            if not partial.name:
                raise ToolCallError(f"tool call #{index} has no function name")
            text = "".join(partial.arguments).strip() or "{}"
            try:
                arguments = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ToolCallError(
                    f"tool call {partial.name!r} has invalid JSON arguments ({exc.msg} at {exc.pos}): {text[:200]!r}"
                ) from None
            if not isinstance(arguments, dict):
                raise ToolCallError(f"tool call {partial.name!r} arguments are not a JSON object: {text[:200]!r}")
            calls.append(ToolCall(id=partial.id or f"call_{index}", name=partial.name, arguments=arguments))
        self._calls.clear()
        return calls
