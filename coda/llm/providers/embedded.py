"""The embedded provider: the intent agent, streamed word by word like a model's answer."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator

from coda.llm.agent import IntentAgent
from coda.llm.types import Finish, GenerationRequest, StreamItem, TextDelta, ToolCallDelta, Usage

_PIECE = re.compile(r"\s*\S+|\s+$")


def pieces(text: str) -> list[str]:
    """Word-ish pieces that concatenate back to the text (leading whitespace rides with each word)."""
    return _PIECE.findall(text)


class EmbeddedProvider:
    kind = "embedded"
    model = "intent-agent"
    base_url = ""

    def __init__(self, name: str = "embedded", token_delay_ms: float = 0.0) -> None:
        self.name = name
        self._agent = IntentAgent()
        self._delay = token_delay_ms / 1000

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamItem]:
        reply = self._agent.reply(request.messages, request.tool_names())
        prompt_tokens = sum(len(pieces(m.content)) for m in request.messages)
        if reply.tool_calls:
            for index, call in enumerate(reply.tool_calls):
                yield ToolCallDelta(index=index, id=call.id, name=call.name, arguments=json.dumps(call.arguments))
            yield Usage(prompt_tokens, len(reply.tool_calls))
            yield Finish("tool_calls")
            return
        words = pieces(reply.text)
        limit = request.max_tokens or len(words)
        for piece in words[:limit]:
            if self._delay:
                await asyncio.sleep(self._delay)
            else:
                await asyncio.sleep(0)  # let a cancel in, as a remote stream would
            yield TextDelta(piece)
        yield Usage(prompt_tokens, min(limit, len(words)))
        yield Finish("length" if limit < len(words) else "stop")
