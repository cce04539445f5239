"""LLM providers: one small interface, an OpenAI-compatible client, llama.cpp in process and the intent agent.

A provider turns a `GenerationRequest` into an async stream of provider-neutral items
(`TextDelta`, `ToolCallDelta`, `Usage`, `Finish`) and raises `ProviderError` when it cannot.
Closing the stream early (cancellation) must release the upstream at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

from coda.config import LlmConfig, LlmProviderConfig
from coda.llm.types import GenerationRequest, Prefilled, StreamItem

EMBEDDED = "embedded"


class Provider(Protocol):
    name: str
    #: "openai", "llamacpp" or "embedded".
    kind: str
    model: str
    base_url: str

    def stream(self, request: GenerationRequest) -> AsyncIterator[StreamItem]: ...

    async def prefill(self, request: GenerationRequest) -> Prefilled:
        """Evaluate the request's prompt into the prompt cache, generating nothing (Prefilled() when
        the provider has no cache to fill)."""
        ...


def build_providers(config: LlmConfig) -> dict[str, Provider]:
    """Every configured provider by name, plus "embedded" which needs no configuration."""
    from coda.llm.providers.embedded import EmbeddedProvider
    from coda.llm.providers.llamacpp import LlamaCppProvider
    from coda.llm.providers.openai import OpenAIProvider

    # One local model, shared by every provider of kind "embedded" (it is loaded once).
    local = (
        LlamaCppProvider(
            LlmProviderConfig(
                name="embedded-model",
                kind="llamacpp",
                path=config.embedded_model,
                threads=config.embedded_model_threads,
                nice=config.embedded_model_nice,
            )
        )
        if config.embedded_model
        else None
    )

    def embedded(name: str) -> EmbeddedProvider:
        return EmbeddedProvider(name=name, token_delay_ms=config.embedded_token_delay_ms, local=local)

    providers: dict[str, Provider] = {EMBEDDED: embedded(EMBEDDED)}
    for entry in config.providers:
        if not entry.name:
            raise ValueError("llm.providers: every provider needs a name")
        if entry.kind == "openai":
            providers[entry.name] = OpenAIProvider(entry)
        elif entry.kind == "llamacpp":
            providers[entry.name] = LlamaCppProvider(entry)
        elif entry.kind == EMBEDDED:
            providers[entry.name] = embedded(entry.name)
        else:
            raise ValueError(
                f"llm.providers.{entry.name}: unknown kind {entry.kind!r} (known: openai, llamacpp, embedded)"
            )
    missing = [name for name in config.chain if name not in providers]
    if missing:
        raise ValueError(
            f"llm.chain names unknown provider(s) {', '.join(missing)}; configured: {', '.join(providers)}"
        )
    if not config.chain:
        raise ValueError('llm.chain is empty; list at least one provider (e.g. ["embedded"])')
    return providers


__all__ = ["EMBEDDED", "LlmProviderConfig", "Provider", "build_providers"]
