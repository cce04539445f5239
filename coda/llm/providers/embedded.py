"""The embedded provider: the intent agent first, a local language model for everything else.

The intent agent answers exactly what it knows (time, arithmetic, timers, remember/recall, status,
follow-ups to those, and honest refusals of what Coda cannot do). What it defers (greetings,
chit-chat, general questions) goes to the local model, a GGUF run in process by llama.cpp. Without
a local model, or when it fails before saying anything, the agent's short honest answer stands in.

`Finish.model` tells which one answered: `AGENT_MODEL` for the agent's answers from tool results,
`CANNED_MODEL` for its stock phrases, or the local model's name.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
from collections.abc import AsyncIterator

from coda.llm.agent import IntentAgent
from coda.llm.providers import Provider
from coda.llm.types import (
    Finish,
    GenerationRequest,
    Prefilled,
    ProviderError,
    StreamItem,
    TextDelta,
    ToolCallDelta,
    Usage,
)

log = logging.getLogger(__name__)

AGENT_MODEL = "intent-agent"
#: The agent's stock phrases: greetings, refusals and "I can't help with that".
CANNED_MODEL = "intent-agent/canned"

_PIECE = re.compile(r"\s*\S+|\s+$")


def pieces(text: str) -> list[str]:
    """Word-ish pieces that concatenate back to the text (leading whitespace rides with each word)."""
    return _PIECE.findall(text)


class EmbeddedProvider:
    kind = "embedded"
    base_url = ""

    def __init__(self, name: str = "embedded", token_delay_ms: float = 0.0, local: Provider | None = None) -> None:
        self.name = name
        self._agent = IntentAgent()
        self._delay = token_delay_ms / 1000
        self._local = local
        self.model = f"{AGENT_MODEL}+{local.model}" if local is not None else AGENT_MODEL

    async def load(self) -> None:
        """Load the local model now, so that the first question it answers does not wait for it."""
        load = getattr(self._local, "load", None)
        if load is None:
            return
        try:
            await load()
        except ProviderError as exc:
            # Not fatal: the agent answers what it can and says so for the rest.
            log.error("local language model unavailable; the intent agent answers alone: %s", exc.message)

    async def prefill(self, request: GenerationRequest) -> Prefilled:
        """The local model's cache, with the prompt it would get (no tools: the agent has them); not
        for what the agent answers itself."""
        if self._local is None or not self._agent.reply(request.messages, request.tool_names()).defer:
            return Prefilled()
        return await self._local.prefill(dataclasses.replace(request, tools=()))

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamItem]:
        reply = self._agent.reply(request.messages, request.tool_names())
        prompt_tokens = sum(len(pieces(m.content)) for m in request.messages)
        if reply.tool_calls:
            for index, call in enumerate(reply.tool_calls):
                yield ToolCallDelta(index=index, id=call.id, name=call.name, arguments=json.dumps(call.arguments))
            yield Usage(prompt_tokens, len(reply.tool_calls))
            yield Finish("tool_calls", model=AGENT_MODEL)
            return
        if reply.defer and self._local is not None:
            answered = False
            try:
                async for item in self._local.stream(dataclasses.replace(request, tools=())):
                    if isinstance(item, Finish):
                        item = Finish(item.reason, model=self._local.model)
                    answered = answered or isinstance(item, TextDelta)
                    yield item
                return
            except ProviderError as exc:
                if answered:
                    raise
                log.warning("local language model failed; the intent agent answers: %s", exc.message)
        async for item in self._say(reply.text, request.max_tokens, prompt_tokens):
            yield item
        yield Finish(
            "length" if request.max_tokens and request.max_tokens < len(pieces(reply.text)) else "stop",
            model=CANNED_MODEL if reply.canned else AGENT_MODEL,
        )

    async def _say(self, text: str, max_tokens: int, prompt_tokens: int) -> AsyncIterator[StreamItem]:
        words = pieces(text)
        limit = max_tokens or len(words)
        for piece in words[:limit]:
            if self._delay:
                await asyncio.sleep(self._delay)
            else:
                await asyncio.sleep(0)  # let a cancel in, as a remote stream would
            yield TextDelta(piece)
        yield Usage(prompt_tokens, min(limit, len(words)))
