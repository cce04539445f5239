"""The OpenAI Chat Completions wire format: request bodies, stream chunks and error bodies.

Pure functions, shared by every OpenAI-compatible server (OpenAI, Ollama's /v1, vLLM,
llama.cpp server, LM Studio). What they do differently is absorbed here: Ollama sends a tool call
whole in one delta and may report finish_reason "stop" after tool calls; vLLM and OpenAI split
the arguments across deltas; some servers send an `error` object inside the stream.
"""

from __future__ import annotations

import json
from typing import Any

from coda.llm.types import Finish, GenerationRequest, Message, StreamItem, TextDelta, ToolCallDelta, Usage

#: HTTP statuses worth retrying on another occasion (they count against the breaker).
TRANSIENT_STATUSES = frozenset({408, 409, 425, 429})

_FINISH_REASONS = {"stop": "stop", "tool_calls": "tool_calls", "function_call": "tool_calls", "length": "length"}


class MalformedChunk(ValueError):
    """A stream chunk that is not a JSON object; the answer cannot be trusted past it."""


class StreamError(RuntimeError):
    """The server reported an error inside the stream."""


def request_body(request: GenerationRequest, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": request.model or model,
        "messages": [_message(m) for m in request.messages],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
            }
            for t in request.tools
        ]
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.max_tokens:
        body["max_tokens"] = request.max_tokens
    return body


def _message(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.role == "tool":
        out["tool_call_id"] = message.tool_call_id
        if message.name:
            out["name"] = message.name
    if message.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
            for c in message.tool_calls
        ]
    return out


def parse_chunk(data: str) -> list[StreamItem]:
    """The items in one `data:` payload (not "[DONE]"); raises MalformedChunk or StreamError."""
    try:
        chunk = json.loads(data)
    except json.JSONDecodeError as exc:
        raise MalformedChunk(f"stream chunk is not JSON ({exc.msg}): {data[:120]!r}") from None
    if not isinstance(chunk, dict):
        raise MalformedChunk(f"stream chunk is not a JSON object: {data[:120]!r}")
    if chunk.get("error"):
        raise StreamError(_error_text(chunk["error"]))
    items: list[StreamItem] = []
    for choice in chunk.get("choices") or []:
        if not isinstance(choice, dict) or choice.get("index", 0) != 0:
            continue  # n > 1 is never requested; other choices are not ours
        delta = choice.get("delta") or {}
        content = delta.get("content")
        if isinstance(content, str) and content:
            items.append(TextDelta(content))
        for position, call in enumerate(delta.get("tool_calls") or []):
            function = call.get("function") or {}
            arguments = function.get("arguments") or ""
            if not isinstance(arguments, str):
                arguments = json.dumps(arguments)  # some servers send the object itself
            items.append(
                ToolCallDelta(
                    index=int(call.get("index", position)),
                    id=call.get("id") or "",
                    name=function.get("name") or "",
                    arguments=arguments,
                )
            )
        reason = choice.get("finish_reason")
        if reason:
            items.append(Finish(_FINISH_REASONS.get(reason, "stop")))
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        items.append(Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)))
    return items


def error_message(status: int, reason: str, body: bytes) -> str:
    """A readable message for an HTTP error answer, from its JSON body when it has one."""
    text = body.decode("utf-8", "replace").strip()
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and parsed.get("error"):
        detail = _error_text(parsed["error"])
    elif isinstance(parsed, dict) and parsed.get("message"):  # vLLM: {"object": "error", "message": ...}
        detail = _error_text(parsed)
    else:
        detail = text[:300]
    return f"HTTP {status} {reason}".strip() + (f": {detail}" if detail else "")


def _error_text(error: Any) -> str:
    if isinstance(error, dict):
        message = str(error.get("message") or error)
        kind = error.get("type") or error.get("code")
        return f"{message} ({kind})" if kind else message
    return str(error)
