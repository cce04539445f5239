"""What every intent module shares: the Intent, the normalisation of an utterance, the template
registry (`template`) and `match_intent`, which tries the domains' templates in `ORDER`."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from coda.llm.agent.refusals import unsupported


@dataclass(frozen=True)
class Intent:
    #: "greeting", "thanks", "help", or the name of the tool that serves it ("get_time", ...).
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    @property
    def tool(self) -> str | None:
        return self.name if self.name not in CONVERSATIONAL else None


#: Intents answered in words rather than by a tool. "smalltalk" and "unsupported" carry no exact
#: answer: a language model phrases them when there is one ("unsupported" keeps its honest refusal).
CONVERSATIONAL = frozenset(
    {
        "greeting",
        "thanks",
        "apology",
        "acknowledgement",
        "hesitation",
        "help",
        "goodbye",
        "smalltalk",
        "identity",
        "unsupported",
    }
)

_CONTRACTIONS = {
    "what's": "what is", "whats": "what is", "how's": "how is", "it's": "it is", "i'm": "I am",
    "don't": "do not", "you're": "you are", "what're": "what are", "where's": "where is", "who's": "who is",
    "when's": "when is",
    # Typed or transcribed without the apostrophe.
    "hows": "how is", "wheres": "where is", "whos": "who is", "whens": "when is", "dont": "do not", "im": "I am",
    "youre": "you are", "todays": "today's", "tomorrows": "tomorrow's", "yesterdays": "yesterday's",
}  # fmt: skip


def normalise(text: str) -> str:
    """Tidy an utterance for matching; case is kept so that slots (names, notes) keep theirs."""
    text = text.strip().replace("\u2019", "'")
    text = re.sub(r"\s+", " ", text)
    for short, long in _CONTRACTIONS.items():
        text = re.sub(rf"(?<![\w']){re.escape(short)}(?![\w'])", long, text, flags=re.IGNORECASE)
    # "my pizza's done": "is", not a possessive, before these words.
    text = re.sub(r"(?<=\w)'s (?=(?:done|ready|finished|up|over|due)\b)", " is ", text, flags=re.IGNORECASE)
    text = re.sub(r"^(?:(?:hey|ok|okay|so|um|uh|coda),? )+", "", text, flags=re.IGNORECASE)
    text = re.sub(
        r"^(?:please |can you |could you |would you |will you |i was wondering(?: if| whether)?(?: you could| you can| you would)? |i would like to know |"
        r"i'd like to know )+",
        "",
        text,
        flags=re.IGNORECASE,
    )
    text = re.sub(r"(?:,? (?:please|coda))+[ ?!.,]*$", "", text, flags=re.IGNORECASE)
    return text.strip(" ?!.,")


_Builder = Callable[[re.Match[str]], Intent | None]
#: The domains (modules of this package) in the order their templates are tried: the first template
#: that matches and builds an intent wins, so a domain whose sentences are more specific comes first.
ORDER = ("conversation", "clock", "timers", "memory", "conversions", "arithmetic")
_TEMPLATES: dict[str, list[tuple[re.Pattern[str], _Builder]]] = {domain: [] for domain in ORDER}


def template(*patterns: str) -> Callable[[_Builder], _Builder]:
    """Registers `build` for each pattern (matched whole, case-insensitively), in its module's domain."""

    def register(build: _Builder) -> _Builder:
        domain = build.__module__.rsplit(".", 1)[-1]
        for pattern in patterns:
            _TEMPLATES[domain].append((re.compile(rf"^(?:{pattern})$", re.IGNORECASE), build))
        return build

    return register


def clean_slot(text: str) -> str:
    return text.strip(" ?!.,\"'")


#: Words before a request that leave it unchanged: "and what time is it?", "sorry, what time is it?",
#: "hi, my name is Jordan".
_JOINED = re.compile(
    r"^(?:and|also|oh and|but|then|sorry|excuse me|pardon me|right|alright|all right|great|cool|perfect|actually|"
    r"um+|uh+|well|oh|wait|"
    r"(?:hi|hello|hey|hiya)(?: there)?(?: coda)?|"
    r"good (?:morning|afternoon|evening)(?: coda)?)[, ]+",
    re.IGNORECASE,
)


def match_intent(text: str) -> Intent | None:
    """The intent a user utterance expresses, or None when no template matches."""
    utterance = normalise(text)
    if not utterance:
        return None
    # "and what time is it?" asks what "what time is it?" asks; "and in London?" (no template of
    # its own) is left to the follow-ups, which read it against the conversation.
    joined = _JOINED.match(utterance)
    for said in (utterance, utterance[joined.end() :]) if joined else (utterance,):
        for pattern, build in (entry for domain in ORDER for entry in _TEMPLATES[domain]):
            match = pattern.match(said)
            if match:
                intent = build(match)
                if intent is not None:
                    return intent
    what = unsupported(utterance)
    if what is not None:
        return Intent("unsupported", {"what": what})
    return None
