"""The intent agent: answers common requests through the offered tools, like a tool-calling model.

Given the conversation and the names of the tools on offer it either asks for one tool call
(the user's last message matched an intent served by a tool) or answers in text (from the tool
results that end the conversation, or for greetings, help and everything it cannot do).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from coda.llm.agent import answers
from coda.llm.agent.intents import match_intent
from coda.llm.types import Message, ToolCall


@dataclass(frozen=True)
class AgentReply:
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()


class IntentAgent:
    def reply(self, messages: Sequence[Message], tools: frozenset[str]) -> AgentReply:
        results = _trailing_tool_results(messages)
        if results:
            return AgentReply(text=self._answer_results(messages, results))
        user = next((m for m in reversed(messages) if m.role == "user"), None)
        if user is None:
            return AgentReply(text=answers.greeting())
        intent = match_intent(user.content)
        if intent is None:
            return AgentReply(text=answers.CONFIGURE_MODEL)
        if intent.tool is None:
            texts = {
                "greeting": answers.greeting,
                "thanks": answers.thanks,
                "goodbye": answers.goodbye,
                "help": lambda: answers.help_text(tools),
            }
            return AgentReply(text=texts[intent.name]())
        if intent.tool not in tools:
            return AgentReply(text=answers.unavailable(intent.tool))
        call = ToolCall(id=f"call_{uuid.uuid4().hex[:16]}", name=intent.tool, arguments=dict(intent.arguments))
        return AgentReply(tool_calls=(call,))

    def _answer_results(self, messages: Sequence[Message], results: Sequence[Message]) -> str:
        calls = {c.id: c for m in messages if m.role == "assistant" for c in m.tool_calls}
        sentences = []
        for result in results:
            call = calls.get(result.tool_call_id)
            name = result.name or (call.name if call else "tool")
            sentences.append(answers.answer_from_result(name, call.arguments if call else {}, result.content))
        return " ".join(sentences)


def _trailing_tool_results(messages: Sequence[Message]) -> list[Message]:
    results: list[Message] = []
    for message in reversed(messages):
        if message.role != "tool":
            break
        results.append(message)
    return results[::-1]
