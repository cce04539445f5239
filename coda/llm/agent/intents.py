"""Sentence templates with slots, matched to intents (in the spirit of Home Assistant's default agent).

`match_intent(text)` normalises a user utterance and returns the first intent whose template
matches, with its slots already turned into tool arguments ("Tokyo" -> "Asia/Tokyo",
"twelve times seven" -> "12*7", "5 minutes" -> 300).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from coda.llm.agent.numbers import arithmetic_expression, duration_seconds
from coda.llm.agent.places import time_zone_for


@dataclass(frozen=True)
class Intent:
    #: "greeting", "thanks", "help", or the name of the tool that serves it ("get_time", ...).
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    @property
    def tool(self) -> str | None:
        return self.name if self.name not in CONVERSATIONAL else None


CONVERSATIONAL = frozenset({"greeting", "thanks", "help", "goodbye"})

_CONTRACTIONS = {
    "what's": "what is", "whats": "what is", "how's": "how is", "it's": "it is", "i'm": "i am",
    "don't": "do not", "you're": "you are", "what're": "what are", "where's": "where is",
}  # fmt: skip


def normalise(text: str) -> str:
    """Tidy an utterance for matching; case is kept so that slots (names, notes) keep theirs."""
    text = text.strip().replace("\u2019", "'")
    text = re.sub(r"\s+", " ", text)
    for short, long in _CONTRACTIONS.items():
        text = re.sub(rf"(?<![\w']){re.escape(short)}(?![\w'])", long, text, flags=re.IGNORECASE)
    text = re.sub(r"^(?:hey |ok |okay |so |um |uh |coda,? )+", "", text, flags=re.IGNORECASE)
    text = re.sub(r"^(?:please |can you |could you |would you |will you )+", "", text, flags=re.IGNORECASE)
    return text.strip(" ?!.,")


_Builder = Callable[[re.Match[str]], Intent | None]
_TEMPLATES: list[tuple[re.Pattern[str], _Builder]] = []


def _template(*patterns: str) -> Callable[[_Builder], _Builder]:
    def register(build: _Builder) -> _Builder:
        for pattern in patterns:
            _TEMPLATES.append((re.compile(rf"^(?:{pattern})$", re.IGNORECASE), build))
        return build

    return register


def _clean_slot(text: str) -> str:
    return text.strip(" ?!.,\"'")


@_template(
    r"(?:hi|hello|hey|hiya|howdy|greetings|good (?:morning|afternoon|evening))(?: there)?(?: coda)?",
)
def _greeting(_: re.Match[str]) -> Intent:
    return Intent("greeting")


@_template(r"(?:thanks|thank you|cheers|thx)(?: (?:very much|so much|a lot))?(?: coda)?")
def _thanks(_: re.Match[str]) -> Intent:
    return Intent("thanks")


@_template(r"(?:bye|goodbye|see you(?: later)?|good night)(?: coda)?")
def _goodbye(_: re.Match[str]) -> Intent:
    return Intent("goodbye")


@_template(
    r"help(?: me)?",
    r"what (?:can|do) you do",
    r"what are your (?:capabilities|skills|features)",
    r"what (?:can i|should i) (?:ask|say)(?: you)?",
    r"how (?:do i|can i) use you",
)
def _help(_: re.Match[str]) -> Intent:
    return Intent("help")


@_template(
    r"how are you(?: doing| today)?",
    r"how is it going",
    r"(?:system )?status(?: report)?",
    r"(?:show|give|tell) me (?:the )?(?:system )?status",
    r"are you (?:ok|okay|alright|running|working)",
    r"how is the system(?: doing)?",
)
def _status(_: re.Match[str]) -> Intent:
    return Intent("system_status", {})


_PLACE = r"(?: right)?(?: now)?(?: (?:in|at|for) (?P<place>[\w .,'/-]+?))?(?: right now| now)?"


@_template(
    rf"what (?:time is it|is the time|is the current time|time is it now){_PLACE}",
    rf"(?:tell me )?the (?:current )?time{_PLACE}",
    rf"(?:current )?time{_PLACE}",
    r"what time is it (?:in|at) (?P<place2>[\w .,'/-]+)",
    r"(?:what is|tell me) the (?:date|day)(?: today)?" + _PLACE,
    r"what (?:day|date) is it(?: today)?" + _PLACE,
)
def _time(match: re.Match[str]) -> Intent:
    groups = match.groupdict()
    place = groups.get("place") or groups.get("place2")
    if place:
        return Intent("get_time", {"timezone": time_zone_for(_clean_slot(place))})
    return Intent("get_time", {})


_LABEL = r"(?: (?:called|named|labell?ed|for(?: the)?) (?P<label>[\w ,'-]+?))?"


@_template(
    rf"(?:set|start|create|make) (?:a |an |me a )?timer (?:for|of) (?P<duration>[\w .-]+?){_LABEL}",
    rf"(?:set|start|create|make) (?:a |an )?(?P<duration>[\w .-]+?) timer{_LABEL}",
    rf"timer (?:for )?(?P<duration>[\w .-]+?){_LABEL}",
    r"remind me in (?P<duration>[\w .-]+?)(?: (?:to|about) (?P<label2>[\w ,'-]+))?",
)
def _timer(match: re.Match[str]) -> Intent | None:
    seconds = duration_seconds(match.group("duration"))
    if seconds is None:
        return None
    arguments: dict[str, Any] = {"seconds": int(seconds) if seconds == int(seconds) else seconds}
    groups = match.groupdict()
    label = groups.get("label") or groups.get("label2")
    if label:
        arguments["label"] = _clean_slot(label)
    return Intent("set_timer", arguments)


_PREFERENCE = re.compile(r"\b(?:i (?:like|love|prefer|hate|dislike|enjoy)|my fav(?:ou)?rite|i would rather)\b")


@_template(
    r"(?:remember|memori[sz]e|note|keep in mind|do not forget)(?: that)? (?P<text>.+)",
    r"(?:make a note|take a note)(?: that)? (?P<text>.+)",
)
def _remember(match: re.Match[str]) -> Intent:
    text = _clean_slot(match.group("text"))
    kind = "preference" if _PREFERENCE.search(text.lower()) else "fact"
    return Intent("remember", {"text": text, "kind": kind})


@_template(
    r"what do you (?:remember|know|recall) about (?P<query>.+)",
    r"what did i (?:tell|say to) you about (?P<query>.+)",
    r"do you (?:remember|know|recall) (?:what |about )?(?P<query>.+)",
    r"(?:recall|search (?:your )?memory for|look up) (?P<query>.+)",
    r"what (?:is|are|was|were) (?P<query>my .+)",
    r"(?:who|where|when) (?:is|are|was|were) (?P<query>my .+)",
    r"what do you remember",
    r"what do you know about me",
)
def _recall(match: re.Match[str]) -> Intent:
    query = _clean_slot(match.groupdict().get("query") or "")
    return Intent("recall", {"query": query or "me"})


@_template(
    r"(?:what is|what are|how much is|how much are|calculate|compute|work out|evaluate|solve)"
    r"(?: the value of)? (?P<expression>.+?)(?: equal| equals)?",
    r"(?P<expression>.+?)(?: =)?",  # bare arithmetic: "twelve times seven"
)
def _calculate(match: re.Match[str]) -> Intent | None:
    expression = arithmetic_expression(match.group("expression"))
    return Intent("calculate", {"expression": expression}) if expression else None


def match_intent(text: str) -> Intent | None:
    """The intent a user utterance expresses, or None when no template matches."""
    utterance = normalise(text)
    if not utterance:
        return None
    for pattern, build in _TEMPLATES:
        match = pattern.match(utterance)
        if match:
            intent = build(match)
            if intent is not None:
                return intent
    return None
