"""Follow-ups: an utterance that only makes sense with the one before it.

"and in London?" after "what time is it in Tokyo?" asks for the time again with a new place;
"now divide that by 3" after "what is 12 times 7?" continues the arithmetic from the last answer.
The conversation is what the model would see: earlier user messages and the assistant's answers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from coda.llm.agent.intents import Intent, match_intent, normalise
from coda.llm.agent.numbers import NUMBER, arithmetic_expression, words_to_digits
from coda.llm.agent.places import time_zone_for
from coda.llm.types import Message

_PLACE_ONLY = re.compile(
    r"^(?:and |but |ok |okay )?(?:what about |how about |and what about )?(?:in|at|for) (?P<place>[\w .,'/-]+)$"
    r"|^(?:and|what about|how about) (?P<place2>[\w .,'/-]+)$",
    re.IGNORECASE,
)
_REFERENCE = r"(?:that|it|this|the result|the answer|the total|that number)"
#: "divide that by 3", "multiply it by 2", "add 5 to that", "take away 4".
_CONTINUE = re.compile(
    rf"^(?:and |now |then |ok |okay )*(?:(?:can you |please )?(?P<verb>divide|multiply|add|subtract|take away|minus|"
    rf"plus|times|double|halve|square|cube)(?: {_REFERENCE})?(?: (?:by|to|from|with))?(?: (?P<operand>[\w .]+?))?"
    rf"(?: (?:to|from) {_REFERENCE})?)$",
    re.IGNORECASE,
)
_VERB_OPERATOR = {
    "divide": "/",
    "multiply": "*",
    "times": "*",
    "add": "+",
    "plus": "+",
    "subtract": "-",
    "take away": "-",
    "minus": "-",
}
_UNARY = {"double": "*2", "halve": "/2", "square": "**2", "cube": "**3"}


def follow_up(utterance: str, earlier: Sequence[Message]) -> Intent | None:
    """The intent of `utterance` read as a follow-up to the conversation so far, or None."""
    text = normalise(utterance)
    previous_user = _last(earlier, "user")
    if previous_user is None:
        return None
    previous = match_intent(previous_user.content)
    if previous is None:  # the earlier question may itself have been a follow-up
        previous = follow_up(previous_user.content, earlier[: _index_of(earlier, previous_user)])
    if previous is None:
        return None
    if previous.name == "get_time":
        place = _PLACE_ONLY.match(text)
        if place:
            where = (place.group("place") or place.group("place2") or "").strip(" ?!.,")
            return Intent("get_time", {"timezone": time_zone_for(where)}) if where else None
    if previous.name == "calculate":
        return _continued_arithmetic(text, _last(earlier, "assistant"))
    return None


def _continued_arithmetic(text: str, answer: Message | None) -> Intent | None:
    value = _last_number(answer.content) if answer is not None else None
    if value is None:
        return None
    match = _CONTINUE.match(text)
    if match:
        verb = match.group("verb").lower()
        if verb in _UNARY:
            return Intent("calculate", {"expression": f"{value}{_UNARY[verb]}"})
        operand = arithmetic_expression(f"0+{words_to_digits(match.group('operand') or '')}")
        if operand is None:
            return None
        operand = operand.removeprefix("0+")
        operand = operand if NUMBER.fullmatch(operand) else f"({operand})"
        return Intent("calculate", {"expression": f"{value}{_VERB_OPERATOR[verb]}{operand}"})
    # "what is that times 3?", "and that plus two?"
    replaced = re.sub(rf"\b{_REFERENCE}\b", value, text, count=1, flags=re.IGNORECASE)
    if replaced == text:
        return None
    replaced = re.sub(r"^(?:and |now |then )+", "", replaced, flags=re.IGNORECASE)
    intent = match_intent(replaced)
    return intent if intent is not None and intent.name == "calculate" else None


def _last_number(text: str) -> str | None:
    """The result an arithmetic answer ends with ("12*7 is 84." -> "84")."""
    numbers = NUMBER.findall(text.replace(",", ""))
    return numbers[-1] if numbers else None


def _last(messages: Sequence[Message], role: str) -> Message | None:
    return next((m for m in reversed(messages) if m.role == role and m.content.strip()), None)


def _index_of(messages: Sequence[Message], message: Message) -> int:
    return max(i for i, m in enumerate(messages) if m is message)
