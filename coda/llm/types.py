"""Provider-neutral values: what a generation asks for and the items a provider streams back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ToolCall:
    """A complete tool call: the name and the parsed JSON arguments object."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Message:
    #: "system", "user", "assistant" or "tool".
    role: str
    content: str = ""
    #: For role "tool": the call this message answers, and the tool's name.
    tool_call_id: str = ""
    name: str = ""
    #: For role "assistant": the tools it called.
    tool_calls: tuple[ToolCall, ...] = ()


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    #: JSON Schema of the arguments object.
    parameters: dict[str, Any]


@dataclass(frozen=True)
class GenerationRequest:
    messages: tuple[Message, ...]
    tools: tuple[Tool, ...] = ()
    #: Empty: the provider's configured model.
    model: str = ""
    temperature: float | None = None
    #: 0: no limit beyond the provider's own.
    max_tokens: int = 0

    def tool_names(self) -> frozenset[str]:
        return frozenset(t.name for t in self.tools)


# --- stream items: a provider's generator yields these, in any order, finishing with `Finish`.


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class ToolCallDelta:
    """One fragment of a streamed tool call; fragments with the same index belong together."""

    index: int
    id: str = ""
    name: str = ""
    arguments: str = ""


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Prefilled:
    """What a prefill did: the prompt's tokens, those already cached, and those it evaluated."""

    prompt_tokens: int = 0
    cached_tokens: int = 0
    evaluated_tokens: int = 0


@dataclass(frozen=True)
class Finish:
    #: "stop", "tool_calls" or "length".
    reason: str
    #: The model that answered when it is not the provider's configured one (the embedded provider
    #: answers with its intent agent or its local model); empty otherwise.
    model: str = ""


StreamItem = TextDelta | ToolCallDelta | Usage | Finish


@dataclass
class ProviderError(Exception):
    """A provider could not produce (the rest of) an answer.

    `transient` failures (connection refused, timeouts, 5xx, 429) count against the provider's
    breaker; the others (a 4xx for this request, a malformed answer) do not, but still fall back.
    """

    provider: str
    message: str
    transient: bool = True
    status: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.provider}: {self.message}"
