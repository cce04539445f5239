"""The chat messages of a turn (pure): system prompt, recent turns, the user's text, tool rounds."""

from __future__ import annotations

import json
from collections.abc import Sequence

from coda.v1 import events_pb2, llm_pb2, memory_pb2

Role = llm_pb2.Role

TOOL_LIMIT_NOTE = (
    "You have used every tool call allowed for this answer. Answer now with what you have, "
    "and say briefly that you could not finish everything."
)


def ordered_turns(turns: Sequence[memory_pb2.Turn]) -> list[memory_pb2.Turn]:
    """Oldest first, whatever order they came in (turns without a time keep their place)."""
    if all(t.HasField("time") for t in turns):
        return sorted(turns, key=lambda t: t.time.ToNanoseconds())
    return list(turns)


def conversation_messages(
    system: str, recent_turns: Sequence[memory_pb2.Turn], user_text: str, note: str = ""
) -> list[llm_pb2.ChatMessage]:
    """System prompt, recent turns oldest first, then `note` (a system message: what was recalled for
    this turn) and the user's text. The note comes late so that everything before it stays the same
    from turn to turn, which a model's prompt cache reuses."""
    messages = [llm_pb2.ChatMessage(role=Role.ROLE_SYSTEM, content=system)]
    for turn in ordered_turns(recent_turns):
        if turn.user_text:
            messages.append(llm_pb2.ChatMessage(role=Role.ROLE_USER, content=turn.user_text))
        if turn.assistant_text:
            content = turn.assistant_text + (" [interrupted by the user]" if turn.interrupted else "")
            messages.append(llm_pb2.ChatMessage(role=Role.ROLE_ASSISTANT, content=content))
    if note:
        messages.append(llm_pb2.ChatMessage(role=Role.ROLE_SYSTEM, content=note))
    messages.append(llm_pb2.ChatMessage(role=Role.ROLE_USER, content=user_text))
    return messages


def history_messages(
    system: str, history: Sequence[llm_pb2.ChatMessage], user_text: str, note: str = ""
) -> list[llm_pb2.ChatMessage]:
    """Like `conversation_messages`, with the conversation a client kept itself instead of recorded turns."""
    messages = [llm_pb2.ChatMessage(role=Role.ROLE_SYSTEM, content=system), *history]
    if note:
        messages.append(llm_pb2.ChatMessage(role=Role.ROLE_SYSTEM, content=note))
    messages.append(llm_pb2.ChatMessage(role=Role.ROLE_USER, content=user_text))
    return messages


def assistant_tool_calls(text: str, calls: Sequence[events_pb2.LlmToolCallRequested]) -> llm_pb2.ChatMessage:
    return llm_pb2.ChatMessage(
        role=Role.ROLE_ASSISTANT,
        content=text,
        tool_calls=[llm_pb2.ChatToolCall(id=c.call_id, name=c.name, arguments_json=c.arguments_json) for c in calls],
    )


def tool_result(call: events_pb2.LlmToolCallRequested, content: str) -> llm_pb2.ChatMessage:
    return llm_pb2.ChatMessage(role=Role.ROLE_TOOL, content=content, tool_call_id=call.call_id, name=call.name)


def tool_error_content(error: events_pb2.ToolError) -> str:
    """What the model sees when a tool failed: the failure, so that it can tell the user."""
    code = events_pb2.ToolErrorCode.Name(error.code).removeprefix("TOOL_ERROR_CODE_").lower()
    return json.dumps({"error": error.message or code, "code": code})


def tool_limit_note() -> llm_pb2.ChatMessage:
    return llm_pb2.ChatMessage(role=Role.ROLE_SYSTEM, content=TOOL_LIMIT_NOTE)
