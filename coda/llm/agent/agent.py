"""The intent agent: answers common requests through the offered tools, like a tool-calling model.

Given the conversation and the names of the tools on offer it either asks for one tool call
(the user's last message, read on its own or as a follow-up, matched an intent served by a tool)
or answers in text (from the tool results that end the conversation, or for greetings, help and
what Coda cannot do). What it has no exact answer for it *defers*: a language model answers that
when there is one, and the reply's text is the short honest answer to give when there is none.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from coda.llm.agent import answers
from coda.llm.agent.followups import follow_up
from coda.llm.agent.intents import HOME, match_intent
from coda.llm.agent.places import time_zone_for
from coda.llm.types import Message, ToolCall

#: Conversational intents a language model phrases better (and in the session's personality) when
#: there is one; the agent's own words stand in without one. Not a goodbye: the small local model
#: answered "see you later" with "Good evening! How may I assist you today?".
MODEL_PHRASED = frozenset({"greeting", "thanks", "smalltalk"})


@dataclass(frozen=True)
class AgentReply:
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    #: No exact answer: a language model should answer instead; `text` is what to say without one.
    defer: bool = False
    #: The agent's own stock phrase (a greeting, a refusal, "I can't help with that"), not an answer
    #: built from a tool's result: nothing worth keeping as a memory of the conversation.
    canned: bool = False


class IntentAgent:
    def reply(self, messages: Sequence[Message], tools: frozenset[str]) -> AgentReply:
        results = _trailing_tool_results(messages)
        if results:
            return AgentReply(text=self._answer_results(messages, results))
        position = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].role == "user"), None)
        if position is None:
            return AgentReply(text=answers.greeting(), canned=True)
        user = messages[position]
        intent = match_intent(user.content) or follow_up(user.content, messages[:position])
        if intent is None:
            return AgentReply(text=answers.cannot_answer(tools), defer=True, canned=True)
        if intent.tool is None:
            texts = {
                "greeting": answers.greeting,
                "thanks": answers.thanks,
                "apology": answers.apology,
                "acknowledgement": answers.acknowledgement,
                "hesitation": answers.hesitation,
                "goodbye": lambda: answers.goodbye(night=bool(intent.arguments.get("night"))),
                "smalltalk": answers.smalltalk,
                "identity": lambda: answers.identity(
                    maker=bool(intent.arguments.get("maker")), age=bool(intent.arguments.get("age"))
                ),
                "help": lambda: answers.help_text(tools),
                "unsupported": lambda: answers.unsupported(intent.arguments["what"]),
            }
            return AgentReply(text=texts[intent.name](), defer=intent.name in MODEL_PHRASED, canned=True)
        if intent.tool not in tools:
            return AgentReply(text=answers.unavailable(intent.tool), canned=True)
        arguments = dict(intent.arguments)
        if arguments.get("timezone") == HOME:
            home = _home_zone(messages[:position])
            arguments = {"timezone": home} if home else {}  # unknown: where this computer is
        call = ToolCall(id=f"call_{uuid.uuid4().hex[:16]}", name=intent.tool, arguments=arguments)
        return AgentReply(tool_calls=(call,))

    def _answer_results(self, messages: Sequence[Message], results: Sequence[Message]) -> str:
        calls = {c.id: c for m in messages if m.role == "assistant" for c in m.tool_calls}
        sentences = []
        for result in results:
            call = calls.get(result.tool_call_id)
            name = result.name or (call.name if call else "tool")
            sentences.append(answers.answer_from_result(name, call.arguments if call else {}, result.content))
        return " ".join(sentences)


_LIVES_IN = re.compile(
    r"\bI (?:live|am living|now live|moved) (?:in|to) (?P<place>[\w'-]+(?: [\w'-]+){0,2})", re.IGNORECASE
)


def _home_zone(earlier: Sequence[Message]) -> str:
    """The time zone of where the user said they live, in the conversation or in what memory recalled
    for this turn (a system message of remembered facts); the latest mention wins. "I live in New
    York with my sister" tries "New York with", "New York", then "New" until a zone is known."""
    for message in reversed(earlier):
        if message.role not in ("user", "system"):
            continue
        for found in reversed(list(_LIVES_IN.finditer(message.content))):
            words = found.group("place").split()
            for size in range(len(words), 0, -1):
                zone = time_zone_for(" ".join(words[:size]))
                if "/" in zone:
                    return zone
    return ""


def _trailing_tool_results(messages: Sequence[Message]) -> list[Message]:
    results: list[Message] = []
    for message in reversed(messages):
        if message.role != "tool":
            break
        results.append(message)
    return results[::-1]
