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

from coda.llm.agent.numbers import (
    NUMBER,
    arithmetic_expression,
    calendar_day,
    clock_time,
    duration_seconds,
    words_to_digits,
)
from coda.llm.agent.places import time_zone_for
from coda.llm.agent.refusals import unsupported
from coda.tools.converter import ConversionError, convert, find_unit, is_degrees


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
CONVERSATIONAL = frozenset({"greeting", "thanks", "help", "goodbye", "smalltalk", "identity", "unsupported"})

_CONTRACTIONS = {
    "what's": "what is", "whats": "what is", "how's": "how is", "it's": "it is", "i'm": "I am",
    "don't": "do not", "you're": "you are", "what're": "what are", "where's": "where is", "who's": "who is",
    "when's": "when is",
}  # fmt: skip


def normalise(text: str) -> str:
    """Tidy an utterance for matching; case is kept so that slots (names, notes) keep theirs."""
    text = text.strip().replace("\u2019", "'")
    text = re.sub(r"\s+", " ", text)
    for short, long in _CONTRACTIONS.items():
        text = re.sub(rf"(?<![\w']){re.escape(short)}(?![\w'])", long, text, flags=re.IGNORECASE)
    text = re.sub(r"^(?:(?:hey|ok|okay|so|um|uh|coda),? )+", "", text, flags=re.IGNORECASE)
    text = re.sub(r"^(?:please |can you |could you |would you |will you )+", "", text, flags=re.IGNORECASE)
    text = re.sub(r"(?:,? (?:please|coda))+[ ?!.,]*$", "", text, flags=re.IGNORECASE)
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


@_template(
    r"(?:(?:hi|hello|hey|hiya|good (?:morning|afternoon|evening))(?: there)?(?: coda)?,? )?"
    r"(?:how are you(?: doing| today| doing today)?|how is it going|how are things|how have you been)(?: coda)?",
    r"(?:hi|hello|hey|hiya|good (?:morning|afternoon|evening))(?: there)?(?: coda)?,? (?:nice|good) to meet you",
    r"(?:nice|good|pleased) to meet you(?: coda)?",
)
def _smalltalk(_: re.Match[str]) -> Intent:
    return Intent("smalltalk")


@_template(r"(?:thanks|thank you|cheers|thx)(?: (?:very much|so much|a lot))?(?: coda)?")
def _thanks(_: re.Match[str]) -> Intent:
    return Intent("thanks")


@_template(
    r"(?:(?:ok|okay|alright|right|well|thanks|thank you)[, ]+)?(?:that(?:'s| is) (?:all|it)(?: for now)?[, ]+)?"
    r"(?P<words>bye(?: bye)?|goodbye|see you(?: later| soon| tomorrow)?|talk (?:to you )?later|later|good night|night night)"
    r"(?: for now)?(?: coda)?",
)
def _goodbye(match: re.Match[str]) -> Intent:
    return Intent("goodbye", {"night": "night" in match.group("words").lower()})


# Who or what Coda is: answered by the agent, since the small local model once answered "are you a
# real person?" with "Yes, I am a human being."
@_template(
    r"(?:are you|r u) (?:a |an )?(?:real |actual |living )?(?:person|human(?: being)?|man|woman|people|alive|real|"
    r"robot|bot|machine|computer|ai|a\.i\.|artificial intelligence|program|chatbot|sentient|conscious)",
    r"(?:who|what) (?:are|r) you(?: exactly| really)?",
    r"(?:what is|tell me) your name",
    r"(?:do you have|have you got) a name",
    r"what (?:should|do|can) i call you",
    r"(?:tell me )?(?:a (?:little |bit )?)?about yourself",
    r"introduce yourself",
    r"(?P<maker>who (?:made|built|created|programmed|designed|wrote|invented|owns) you)",
)
def _identity(match: re.Match[str]) -> Intent:
    return Intent("identity", {"maker": match.groupdict().get("maker") is not None})


@_template(
    r"help(?: me)?",
    r"what (?:can|do) you do",
    r"what (?:kind of |sort of )?(?:things|stuff) (?:can|could) you (?:help(?: me)?(?: with)?|do)(?: for me)?",
    r"how (?:can|could) you help(?: me)?",
    r"what are you (?:able to(?: do)?|capable of(?: doing)?|good at(?: doing)?)",
    r"what are your (?:capabilities|skills|features)",
    r"what (?:can i|should i) (?:ask|say)(?: you)?",
    r"how (?:do i|can i) use you",
)
def _help(_: re.Match[str]) -> Intent:
    return Intent("help")


@_template(
    r"(?:system )?status(?: report)?",
    r"(?:show|give|tell) me (?:the )?(?:system )?status",
    r"are you (?:ok|okay|alright|running|working)",
    r"how is the system(?: doing)?",
)
def _status(_: re.Match[str]) -> Intent:
    return Intent("system_status", {})


_DAYS_AWAY = {"tomorrow": 1, "yesterday": -1, "the day after tomorrow": 2, "the day before yesterday": -2}
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_ANOTHER_DAY = (
    r"(?P<when>tomorrow|yesterday|the day after tomorrow|the day before yesterday|in [\w ]+? (?:days?|weeks?)|"
    r"[\w ]+? (?:days?|weeks?) (?:ago|from (?:now|today))|(?:a|one) week (?:from )?today|next week|"
    r"(?:next |this (?:coming )?|on )?(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday))"
)


@_template(
    rf"what (?:is|was|will be) (?:the )?(?:date|day)(?: of the week)?(?: going to be| gonna be)? {_ANOTHER_DAY}",
    rf"what (?:date|day)(?: of the (?:week|month))? (?:is it|is|was it|was|will it be|will be|would it be) {_ANOTHER_DAY}",
    rf"{_ANOTHER_DAY}(?:'s| is) (?:date|day)",
    rf"what date (?:is|will it be|was it|does|do) {_ANOTHER_DAY}(?: fall on| land on| be)?",
    rf"(?:what is |tell me )?the date {_ANOTHER_DAY}",
)
def _another_day(match: re.Match[str]) -> Intent | None:
    when = words_to_digits(match.group("when").lower())
    if when in _DAYS_AWAY:
        return Intent("get_time", {"days": _DAYS_AWAY[when]})
    if when in ("next week", "a week today", "one week today", "a week from today", "one week from today"):
        return Intent("get_time", {"days": 7})
    day = re.sub(r"^(?:next|this|this coming|on) ", "", when)
    if day in _WEEKDAYS:
        return Intent("get_time", {"weekday": day})
    count = re.fullmatch(
        r"(?:in )?(?P<n>\d+|a|an|one) (?P<unit>days?|weeks?)(?P<ago> ago)?(?: from (?:now|today))?", when
    )
    if count is None:
        return None
    n = 1 if count["n"] in ("a", "an", "one") else int(count["n"])
    days = n * (7 if count["unit"].startswith("week") else 1)
    return Intent("get_time", {"days": -days if count["ago"] else days})


# "what's the time difference between London and Tokyo": Tokyo's hours ahead of London.
@_template(
    r"(?:what is )?the time difference between (?P<b>[\w .'-]+?) and (?P<a>[\w .'-]+?)",
    r"how many hours (?:ahead|behind) (?:of )?(?P<b>[\w .'-]+?) is (?P<a>[\w .'-]+?)",
    r"how (?:far|many hours) (?:ahead|behind) is (?P<a>[\w .'-]+?) (?:of|from) (?P<b>[\w .'-]+?)",
    r"is (?P<a>[\w .'-]+?) (?:ahead of|behind) (?P<b>[\w .'-]+?)",
)
def _time_difference(match: re.Match[str]) -> Intent | None:
    first, second = (time_zone_for(_clean_slot(match.group(g))) for g in ("a", "b"))
    if "/" not in first or "/" not in second:
        return None  # not two places the agent knows: left to the model
    return Intent("get_time", {"timezone": first, "compared_with": second})


# A day of the calendar: "how many days until christmas", "what day of the week is the 25th of december".
@_template(
    r"how many (?:more )?(?:days|sleeps) (?:are there |is it |are left |left |to go )?(?:until|till|til|to|before) (?P<day>.+)",
    r"how (?:long|far away) (?:is it |is there )?(?:until|till|til|to) (?P<day>.+)",
    r"what day (?:of the week )?(?:is|will be|was|does|did|falls on) (?P<day>.+?)(?: fall on| land on| be| on| this year)?",
    r"(?:when|what date) is (?P<day>.+?)(?: this year)?",
    r"(?:on )?what day (?:of the week )?(?:is|does) (?P<day>.+?) (?:fall|land)(?: on)?(?: this year)?",
)
def _calendar_day(match: re.Match[str]) -> Intent | None:
    day = calendar_day(match.group("day"))
    return Intent("get_time", {"date": day}) if day else None


#: The place of "what time is it where I live?": the agent finds it in what the user said or it recalls.
HOME = "where the user lives"


_PLACE = (
    r"(?: right)?(?: now)?(?: (?:over |out )?(?P<preposition>in|at|for) (?P<place>[\w .,'/-]+?))?(?: right now| now)?"
)


@_template(
    rf"what (?:time is it|is the time|is the current time|time is it now){_PLACE}",
    rf"(?:tell me )?the (?:current )?time{_PLACE}",
    rf"(?:current )?time{_PLACE}",
    r"what time is it (?:over |out )?(?:in|at) (?P<place2>[\w .,'/-]+)",
    rf"how late is it{_PLACE}",
    rf"(?:do you have|have you got|you got|got|know) the time{_PLACE}",
    r"(?:what is|tell me) the (?:date|day)(?: today)?" + _PLACE,
    r"(?:what is |tell me )?today's (?:date|day)" + _PLACE,
    r"what (?:day|date) is (?:it|today)(?: today)?" + _PLACE,
    r"what (?:day of the (?:month|week)|date) (?:is it|is today|are we on)(?: today)?" + _PLACE,
    r"(?:what (?:time is it|is the time)|what is the time|time)(?: right now| now)? (?P<home>where i live|at (?:my )?home|"
    r"(?:in|at) my (?:city|town|place|home(?:town)?))",
    r"(?:is (?:it|today)|are we on) (?:a |the )?(?:weekday|week day|weekend|working day|work day|workday|school day|"
    r"monday|tuesday|wednesday|thursday|friday|saturday|sunday)(?: today)?",
)
def _time(match: re.Match[str]) -> Intent | None:
    groups = match.groupdict()
    if groups.get("home"):
        return Intent("get_time", {"timezone": HOME})
    place = groups.get("place") or groups.get("place2")
    if place and _clean_slot(place).lower() in ("home", "my home", "my place", "my city", "my town", "my hometown"):
        return Intent("get_time", {"timezone": HOME})
    if place:
        zone = time_zone_for(_clean_slot(place))
        if groups.get("preposition") == "for" and zone == _clean_slot(place) and "/" not in zone:
            return None  # "time for bed", "time for a break": not a place the agent knows
        return Intent("get_time", {"timezone": zone})
    return Intent("get_time", {})


@_template(
    r"how (?:long|much time) (?:is|do i have) left(?: on)?(?: (?:my|the) (?P<label>[\w ,'-]+?))?(?: timers?)?",
    r"how (?:long|much time) (?:until|till|before) (?:my|the) (?P<label2>[\w ,'-]+?)?(?: ?timers?)? "
    r"(?:goes off|is done|finishes|rings|ends)",
    r"(?:what|which) timers (?:do i have|are (?:set|running|there))",
    r"(?:list|show)(?: me)? (?:my |the )?timers",
    r"(?:any|got any) (?:timers?|alarms?)(?: running| set| going| on| left)?",
    r"(?:is|are) (?:my|the|any) timers? (?:still )?(?:running|set|on)",
    r"(?:do i have|have i got|are there|is there) (?:any |a )?(?:timers?|alarms?)(?: running| set| going| on| left)?",
    r"(?:time|how long) left on (?:my|the) (?P<label3>[\w ,'-]+?)?(?: ?timers?)",
    r"how (?:much )?longer(?: (?:on|for|until|till|before) (?:my |the )?(?P<label>[\w ,'-]+?))?(?: ?timers?)?"
    r"(?: (?:goes off|is done|is ready|finishes|rings|ends|will be(?: done| ready)?|has left))?",
    r"how (?:long|much time) (?:until|till|before) (?:my |the )?(?P<label>[\w ,'-]+?)(?: ?timers?)? "
    r"(?:is ready|will be (?:done|ready)|is finished|is up)",
    r"when (?:will|does|is) (?:my|the) (?P<label>[\w ,'-]+?)?(?: ?timers?)? (?:go off|be done|be ready|finish|ring|end|due|up)",
    r"how (?:long|much time) (?:has|have) (?:my|the) (?P<label>[\w ,'-]+?)?(?: ?timers?) got(?: left)?",
    r"(?:how (?:much time|long|many (?:minutes|seconds|hours))(?: is| are| do i have| have i got)? (?:left|remaining|to go)"
    r"|(?:time )?remaining|time left)(?: (?:on|for) (?:my |the )?(?P<label>[\w ,'-]+?)(?: ?timers?)?)?",
)
def _timer_status(match: re.Match[str]) -> Intent:
    groups = match.groupdict()
    label = _clean_slot(groups.get("label") or groups.get("label2") or groups.get("label3") or "")
    return Intent("list_timers", {"label": label} if label and label not in ("timer", "timers") else {})


@_template(
    r"(?:cancel|stop|delete|remove|clear|turn off)(?: all)? (?:my |the |all )?(?:(?P<label>[\w ,'-]+?) )?timers?",
    r"(?:cancel|stop|delete|remove|clear|turn off|switch off)(?: all)? (?:my |the |all )?(?P<label>alarms?)"
    r"(?: for (?:tomorrow|the morning|tonight))?",
)
def _timer_cancel(match: re.Match[str]) -> Intent | None:
    label = _clean_slot(match.group("label") or "")
    if re.search(r"\b(?:from|off)(?: (?:the|my|that|this))?$", label):
        return None  # "remove 2 minutes from the timer" changes it (below)
    return Intent("cancel_timer", {"label": label} if label and label not in ("all", "my", "the") else {})


_LABEL = r"(?: (?:called|named|labell?ed|for(?: the)?) (?P<label>[\w ,'-]+?))?"
_WHICH_TIMER = r"(?:my |the |that |this )(?:(?P<label>[\w '-]+?) )?timer"


@_template(
    rf"(?:add|put) (?:another |an extra |extra )?(?P<more>[\w .-]+?) (?:more )?(?:to|on|onto) {_WHICH_TIMER}",
    rf"(?:take|knock) (?P<less>[\w .-]+?) off {_WHICH_TIMER}",
    rf"(?:subtract|remove) (?P<less>[\w .-]+?) from {_WHICH_TIMER}",
    rf"(?:change|set|make|reset|update|move) {_WHICH_TIMER} (?:to|for) (?P<duration>[\w .-]+?)(?: instead)?",
    rf"(?:extend|increase) {_WHICH_TIMER} by (?P<more>[\w .-]+?)",
    rf"(?:shorten|reduce|decrease) {_WHICH_TIMER} by (?P<less>[\w .-]+?)",
)
def _timer_change(match: re.Match[str]) -> Intent | None:
    groups = match.groupdict()
    said = groups.get("duration") or groups.get("more") or groups.get("less") or ""
    seconds = exact_duration(said)
    if seconds is None:
        return None
    arguments: dict[str, Any] = {}
    label = _clean_slot(groups.get("label") or "")
    if label:
        arguments["label"] = label
    if groups.get("duration"):
        arguments["seconds"] = whole(seconds)
    else:
        arguments["add_seconds"] = whole(seconds if groups.get("more") else -seconds)
    return Intent("change_timer", arguments)


def whole(seconds: float) -> float | int:
    return int(seconds) if seconds == int(seconds) else seconds


def exact_duration(text: str) -> float | None:
    """Seconds in `text` when it says a duration and nothing else ("5 minutes", "an hour and a
    half"), so that "add 5 minutes to the" is not read as a timer of 5 minutes."""
    seconds = duration_seconds(text)
    if seconds is None:
        return None
    rest = _DURATION_WORDS.sub(" ", words_to_digits(text.lower()))
    return seconds if not rest.strip(" ,.-") else None


_DURATION_WORDS = re.compile(
    r"\b(?:\d+(?:\.\d+)?|and|a|an|one|three|half|quarters?|of|the|hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s|"
    r"just|only|exactly|about|another|more|extra)\b|\b\d+(?:\.\d+)?(?:hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s)\b"
)


@_template(
    rf"(?:set|start|create|make|put) (?:a |an |me a |the |it |one )?timer (?:on )?(?:(?:for|of) )?"
    rf"(?P<duration>[\w .-]+?){_LABEL}",
    # The name first: "start a timer for my tea, 4 minutes".
    r"(?:set|start|create|make) (?:a |an |me a )?timer (?:for|called|named) (?:my |the )?(?P<label2>[\w '-]+?),? "
    r"(?:for )?(?P<duration>[\w .-]+?)",
    rf"(?:(?:set|start|create|make) )?(?:a |an )?(?P<duration>[\w .-]+?) timer{_LABEL}",
    rf"timer (?:for )?(?P<duration>[\w .-]+?){_LABEL}",
    r"remind me in (?P<duration>[\w .-]+?)(?: (?:to|about) (?P<label2>[\w ,'-]+))?",
    r"(?:set|create|make|give me|add) (?:a |me a )?reminder (?:for|in) (?P<duration>[\w .-]+?)"
    r"(?: (?:to|about|for) (?P<label2>[\w ,'-]+))?",
    # "put on a 2 minute timer for brushing teeth", "put a 2 minute timer on for the eggs".
    rf"put (?:on )?(?:a |an )?(?P<duration>[\w .-]+?) timer(?: on)?{_LABEL}",
    rf"(?:i need|i want|i would like|i'd like|give me|get me|can i have|can i get) (?:a |an )?timer (?:for|of) "
    rf"(?P<duration>[\w .-]+?){_LABEL}",
    rf"(?:i need|i want|i would like|i'd like|give me|get me|can i have|can i get) (?:a |an )?(?P<duration>[\w .-]+?) "
    rf"timer{_LABEL}",
    r"wake me(?: up)? in (?P<duration>[\w .-]+?)",
    # The task first: "remind me to call the dentist in 15 minutes".
    r"(?:remind me|do not let me forget|make sure i do not forget) (?:to|about) (?P<label3>[\w ,'-]+?) "
    r"in (?P<duration>[\w .-]+?)",
    # "time ten minutes for me", "count down from five minutes", "a five minute countdown".
    rf"(?:time|count down(?: from)?) (?P<duration>[\w .-]+?)(?: for me)?{_LABEL}",
    rf"(?:start |set )?(?:a |an )?(?P<duration>[\w .-]+?) countdown{_LABEL}",
)
def _timer(match: re.Match[str]) -> Intent | None:
    seconds = exact_duration(match.group("duration"))
    if seconds is None:
        return None
    arguments: dict[str, Any] = {"seconds": whole(seconds)}
    groups = match.groupdict()
    label = groups.get("label") or groups.get("label2") or groups.get("label3")
    if label:
        arguments["label"] = _clean_slot(label)
    return Intent("set_timer", arguments)


# Alarms and reminders at a time of day: a timer with `at` (the tools' clock and zone decide when).
@_template(
    r"(?:set|make|create|start|put|schedule|add) (?:an? |me an? |the |my )?(?:alarm|wake[- ]up call) "
    r"(?:for |at |on )?(?P<clock>.+)",
    r"(?:an? )?(?:alarm|wake[- ]up call) (?:for|at) (?P<clock>.+)",
    r"wake me(?: up)? (?P<clock>(?:tomorrow )?(?:at|by) .+)",
    r"(?:i need to|i have to|i want to) (?:wake|get) up (?P<clock>(?:tomorrow )?at .+)",
    r"remind me (?P<clock>(?:tomorrow )?(?:at|by) .+?)(?: tomorrow)? (?:to|about|that i (?:need|have) to) (?P<label>.+)",
    r"(?:remind me|do not let me forget) (?:to|about) (?P<task>.+)",
)
def _alarm(match: re.Match[str]) -> Intent | None:
    groups = match.groupdict()
    if groups.get("task") is not None:
        found = _task_then_clock(groups["task"])
        if found is None:
            return None
        label, clock = found
    else:
        label, clock = _clean_slot(groups.get("label") or ""), groups["clock"]
    tomorrow = bool(re.search(r"\btomorrow\b", match.group(0), re.IGNORECASE))
    said = clock_time(re.sub(r"\b(?:tomorrow|please|for me|today)\b", " ", clock, flags=re.IGNORECASE))
    if said is None:
        # "remind me at in 5 minutes to stir the soup": a delay after all, said haltingly.
        delay = re.search(r"\bin (?P<duration>.+)$", clock)
        seconds = exact_duration(delay["duration"]) if delay else None
        if seconds is None or not label:
            return None
        return Intent("set_timer", {"seconds": whole(seconds), "label": label})
    hour, minute, twelve_hour = said
    arguments: dict[str, Any] = {"at": f"{hour:02d}:{minute:02d}", "label": label or "alarm"}
    if twelve_hour:
        arguments["twelve_hour"] = True
    if tomorrow:
        arguments["tomorrow"] = True
    return Intent("set_timer", arguments)


def _task_then_clock(text: str) -> tuple[str, str] | None:
    """ "call the bank at 9 tomorrow" -> ("call the bank", "at 9 tomorrow"): tried from the last
    "at", since a task may have one of its own ("look at the car at 5")."""
    words = text.split()
    for i in range(len(words) - 1, 0, -1):
        if words[i].lower() in ("at", "by") and clock_time(
            re.sub(r"\b(?:tomorrow|please|today)\b", " ", " ".join(words[i + 1 :]), flags=re.IGNORECASE)
        ):
            task = " ".join(word for word in words[:i] if word.lower() != "tomorrow")
            return _clean_slot(task), " ".join(words[i:])
    return None


_PREFERENCE = re.compile(r"\b(?:i (?:like|love|prefer|hate|dislike|enjoy)|my fav(?:ou)?rite|i would rather)\b")


# Forgetting: "forget my gym locker code", "forget that my sister lives in Boston". Only what is the
# user's ("my ...", "what I told you about ..."): a bare "forget it" is not a request to delete.
@_template(
    r"(?:forget|delete|erase|remove)(?: about| that)? (?P<query>my .+?)(?: from (?:your )?memory)?",
    r"(?:forget|delete|erase) (?:what|everything) i (?:told|said to) you about (?P<query>.+)",
    r"do not remember (?P<query>my .+?) any ?more",
)
def _forget(match: re.Match[str]) -> Intent:
    return Intent("forget", {"query": _clean_slot(match.group("query"))})


# "take the eggs off my shopping list", "remove milk from the shopping list".
@_template(
    r"(?:take|remove|delete|cross|strike|scratch) (?P<item>.+?) (?:off|off of|from) (?:my|the) (?P<list>[\w -]*?list)",
)
def _list_removal(match: re.Match[str]) -> Intent:
    return Intent("forget", {"query": _clean_slot(match.group("list")), "item": _clean_slot(match.group("item"))})


@_template(
    r"(?:remember|memori[sz]e|note|keep in mind|do not forget)(?: that)? (?P<text>.+)",
    r"(?:make a note|take a note)(?: that)? (?P<text>.+)",
)
def _remember(match: re.Match[str]) -> Intent:
    text = _clean_slot(match.group("text"))
    return Intent("remember", {"text": text, "kind": _memory_kind(text)})


# Lists are kept as memories, one item each, and read back by a recall of the list.
@_template(r"(?:add|put) (?P<item>.+?) (?:to|on|onto) (?:my|the) (?P<list>[\w -]*?list)(?: too| as well| please)?")
def _list_item(match: re.Match[str]) -> Intent:
    text = f"my {_clean_slot(match.group('list'))} includes {_clean_slot(match.group('item'))}"
    return Intent("remember", {"text": text, "kind": "fact"})


def _memory_kind(text: str) -> str:
    return "preference" if _PREFERENCE.search(text.lower()) else "fact"


# Statements of fact about the user: kept as facts so that later questions can be answered. Only
# unambiguous shapes ("my X is Y", "I live in", "call me"): "I am tired" is a mood, not a fact.
@_template(
    r"(?P<text>my (?:\w+(?:'s)? ){0,3}(?:name|names|birthday|address|job|age|favou?rite \w+|email|number|phone number)"
    r" (?:is|are) .+)",
    r"(?P<text>i (?:live|grew up|was born|work|study|stay) (?:in|at|on|for|as) .+)",
    r"(?P<text>my (?:\w+(?:'s)? ){1,3}(?:lives|lived|works|worked|studies|moved|grew up|was born) (?:in|at|to|for) .+)",
    r"(?P<text>i am (?:from|allergic to|married to|a vegetarian|vegetarian|vegan|\d+ years old) ?.*)",
    r"(?P<text>i have (?:a|an|two|three|\d+) (?:\w+ ){0,2}(?:called|named) .+)",
    r"(?P<text>my (?:\w+(?:'s)? ){1,3}(?:is|are) (?:called|named) .+)",
    r"(?:you can |please )?call me (?P<name>[\w'-]+(?: [\w'-]+)?)(?: from now on| instead)?",
    # A liking about a thing, not a person or the conversation ("I love you", "I like that" are not).
    r"(?P<text>i (?:like|love|prefer|enjoy|hate|dislike|cannot stand) "
    r"(?!you\b|it\b|that\b|this\b|them\b|him\b|her\b|talking\b|chatting\b)\w.*)",
    # "I'm Priya", "hi, I am Sam": a name, told by its capital (a transcript writes "I'm tired" lower).
    r"(?:(?:hi|hello|hey)(?: there)?(?: coda)?,? )?(?:I am|this is) (?P<name>(?-i:[A-Z])[\w'-]+)",
)
def _fact(match: re.Match[str]) -> Intent:
    name = match.groupdict().get("name")
    text = f"my name is {name}" if name else _clean_slot(match.group("text"))
    return Intent("remember", {"text": text, "kind": _memory_kind(text)})


#: What a question about "my ..." asks of a service Coda has no access to, not of its memory.
_NOT_TOLD = frozenset({"track packages or orders", "control devices in your home"})


@_template(
    r"what do you (?:remember|know|recall) about (?P<query>.+)",
    r"what did i (?:tell|say to) you about (?P<query>.+)",
    r"do you (?:remember|know|recall) (?:what |about )?(?P<query>.+)",
    r"(?:recall|search (?:your )?memory for|look up) (?P<query>.+)",
    r"what (?:is|are|was|were) (?P<query>my .+)",
    r"(?:who|where|when) (?:is|are|was|were) (?P<query>my .+)",
    r"(?:who|where|when|what|how) (?:does|did|do) (?P<query>my .+)",
    r"what do you remember",
    r"what do you know about me",
    r"(?P<query>(?:where|what|who|when|how old) (?:do|did|am|was) i (?:live|from|work|do for (?:a living|work)|born|study|called|named))",
    r"(?P<query>(?:who|how old) am i)",
    r"(?P<query>how do i (?:like|take|have) .+)",
    r"what (?:do i|did i say i) (?:like|love|prefer|enjoy|hate|dislike)(?P<query> .+)?",
    r"what (?:is|do i have|have i got) on (?P<query>my [\w -]*?list)",
    r"(?:read|tell|show) me (?:what is on )?(?P<query>my [\w -]*?list)",
    r"do you (?:know|remember) (?P<query>(?:my|where i|what i|who i|how old i) .+)",
)
def _recall(match: re.Match[str]) -> Intent | None:
    query = _clean_slot(match.groupdict().get("query") or "")
    if unsupported(query) in _NOT_TOLD:
        return None  # "where is my amazon package", "what is my schedule": not something the user told
    return Intent("recall", {"query": query or "me"})


#: "5 miles" (the unit may follow the digits directly: "5km"), "an hour", "one pound".
_QUANTITY = re.compile(r"^(?P<value>-?\d[\d,]*(?:\.\d+)?|-?\.\d+|an?|one)(?![\d,.])\s*(?P<unit>\S.*)$")


def spoken_quantity(text: str) -> tuple[float, str] | None:
    """The amount and the unit of "5 miles", "an hour", "twenty kg"."""
    found = _QUANTITY.match(words_to_digits(text.strip().lower()))
    if found is None:
        return None
    value = found["value"].replace(",", "")
    return (1.0 if value in ("a", "an", "one") else float(value)), found["unit"]


def conversion_arguments(value: float, source: str, target: str) -> dict[str, Any] | None:
    """`convert_units` arguments when both are units that convert into each other, else None."""
    source, target = _clean_slot(source), re.sub(r"^(?:terms of |the )", "", _clean_slot(target))
    if not (find_unit(source) or is_degrees(source)) or find_unit(target) is None:
        return None
    try:
        convert(value, source, target)
    except ConversionError:
        return None  # "5 miles in minutes": not a conversion the tool makes
    return {"value": int(value) if value.is_integer() else value, "from_unit": source, "to_unit": target}


def _last_quantity(text: str) -> tuple[float, str] | None:
    """The last amount with a unit in `text` ("... says 180 celsius" -> (180, "celsius"))."""
    words = words_to_digits(text.lower().replace(",", " , ")).split()
    for i in range(len(words) - 1, -1, -1):
        for length in (3, 2, 1):
            quantity = spoken_quantity(" ".join(words[i : i + 1 + length]))
            if quantity and i + 1 + length <= len(words) and (find_unit(quantity[1]) or is_degrees(quantity[1])):
                return quantity
        quantity = spoken_quantity(words[i])  # "5km"
        if quantity and find_unit(quantity[1]):
            return quantity
    return None


def _split_conversion(phrase: str) -> dict[str, Any] | None:
    """ "5 miles to km", "12 in in cm": tried at every "in", "to", "into" or "as", since a unit may
    itself be "in" (inches)."""
    words = phrase.split()
    for i, word in enumerate(words):
        if word.lower() in ("in", "to", "into", "as") and 0 < i < len(words) - 1:
            quantity = spoken_quantity(" ".join(words[:i]))
            arguments = quantity and conversion_arguments(quantity[0], quantity[1], " ".join(words[i + 1 :]))
            if arguments:
                return arguments
    return None


@_template(
    r"(?:(?:convert|change|turn|express|what is|what are|how much is|how much are|how many is|how many are|"
    r"tell me|give me|how (?:far|long|heavy|big|hot|cold|fast|much|tall|high|deep|wide|warm|large) (?:is|are)) )?"
    r"(?P<phrase>[^ ].*)",
    r"(?P<quantity>.+?) (?:is|are|equals|makes|make) how many (?P<target>.+)",
    r"how many (?P<target2>[\w /°²³.-]+?) (?:are there |is there |are |is |would )?(?:in|to|make|make up|per|fit in)"
    r" (?P<quantity2>.+)",
    r"how many (?P<target2>[\w /°²³.-]+?) (?:is|are|would be|does|do|makes?) (?P<quantity2>.+?)(?: make| equal| weigh)?",
    # An amount said first, then asked about: "my recipe says 180 celsius, what is that in fahrenheit?"
    r"(?P<before>.+?),? (?:so |and |but )?(?:what is|how much is|how many|convert|change) (?:that|this|it) "
    r"(?:is |to be )?(?:in|to|into) (?P<target3>.+)",
    r"(?P<before>.+?),? (?:so |and |but )?how many (?P<target3>.+?) (?:is|are|would be|makes?) (?:that|this|it)",
)
def _convert_units(match: re.Match[str]) -> Intent | None:
    groups = match.groupdict()
    if groups.get("before") is not None:
        quantity = _last_quantity(groups["before"])
        arguments = conversion_arguments(quantity[0], quantity[1], groups["target3"]) if quantity else None
    elif groups.get("phrase") is not None:
        arguments = _split_conversion(groups["phrase"])
    else:
        said = groups.get("quantity") or groups.get("quantity2") or ""
        quantity = spoken_quantity(said) or spoken_quantity(f"1 {said}")
        target = groups.get("target") or groups.get("target2") or ""
        arguments = conversion_arguments(quantity[0], quantity[1], target) if quantity else None
    return Intent("convert_units", arguments) if arguments else None


@_template(
    r"(?:add|(?:what is )?the sum of|sum) (?P<left>[\w .]+?) (?P<op>and|to|plus) (?P<right>[\w .]+?)(?: together)?",
    r"(?P<op>multiply) (?P<left>[\w .]+?) (?:and|by|with) (?P<right>[\w .]+?)",
    r"(?P<op>divide) (?P<left>[\w .]+?) (?:by|into) (?P<right>[\w .]+?)",
    # The second number first: "subtract 18 from 50" is 50 - 18.
    r"(?P<op>subtract|take|take away|deduct) (?P<right>[\w .]+?) (?:away )?from (?P<left>[\w .]+?)",
)
def _two_numbers(match: re.Match[str]) -> Intent | None:
    left = words_to_digits(match.group("left")).strip()
    right = words_to_digits(match.group("right")).strip()
    if not NUMBER.fullmatch(left) or not NUMBER.fullmatch(right):
        return None  # "add eggs to my list", "multiply the cost by two"
    operator = {"multiply": "*", "divide": "/"}.get(match.group("op").lower(), "+")
    if match.group("op").lower() in ("subtract", "take", "take away", "deduct"):
        operator = "-"
    return Intent("calculate", {"expression": f"{left}{operator}{right}"})


_CONTINUATION = re.compile(
    r"(?:and |then |now )*(?:plus|minus|times|multiplied by|divided by|over|take away)\b", re.IGNORECASE
)


@_template(
    r"(?:what is|what are|how much is|how much are|calculate|compute|work out|evaluate|solve)"
    r"(?: the value of)? (?P<expression>.+?)(?: equal| equals)?",
    r"(?P<expression>.+?)(?: =)?",  # bare arithmetic: "twelve times seven"
)
def _calculate(match: re.Match[str]) -> Intent | None:
    if _CONTINUATION.match(match.group("expression")):
        return None  # "plus one?" continues the last result (a follow-up), it is not "+1" on its own
    expression = arithmetic_expression(match.group("expression"))
    return Intent("calculate", {"expression": expression}) if expression else None


_JOINED = re.compile(r"^(?:and|also|oh and|but|then)[, ]+", re.IGNORECASE)


def match_intent(text: str) -> Intent | None:
    """The intent a user utterance expresses, or None when no template matches."""
    utterance = normalise(text)
    if not utterance:
        return None
    # "and what time is it?" asks what "what time is it?" asks; "and in London?" (no template of
    # its own) is left to the follow-ups, which read it against the conversation.
    joined = _JOINED.match(utterance)
    for said in (utterance, utterance[joined.end() :]) if joined else (utterance,):
        for pattern, build in _TEMPLATES:
            match = pattern.match(said)
            if match:
                intent = build(match)
                if intent is not None:
                    return intent
    what = unsupported(utterance)
    if what is not None:
        return Intent("unsupported", {"what": what})
    return None
