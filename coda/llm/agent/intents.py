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

from coda.llm.agent.numbers import NUMBER, arithmetic_expression, duration_seconds, words_to_digits
from coda.llm.agent.places import time_zone_for


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
CONVERSATIONAL = frozenset({"greeting", "thanks", "help", "goodbye", "smalltalk", "unsupported"})

_CONTRACTIONS = {
    "what's": "what is", "whats": "what is", "how's": "how is", "it's": "it is", "i'm": "I am",
    "don't": "do not", "you're": "you are", "what're": "what are", "where's": "where is",
}  # fmt: skip


def normalise(text: str) -> str:
    """Tidy an utterance for matching; case is kept so that slots (names, notes) keep theirs."""
    text = text.strip().replace("\u2019", "'")
    text = re.sub(r"\s+", " ", text)
    for short, long in _CONTRACTIONS.items():
        text = re.sub(rf"(?<![\w']){re.escape(short)}(?![\w'])", long, text, flags=re.IGNORECASE)
    text = re.sub(r"^(?:(?:hey|ok|okay|so|um|uh|coda),? )+", "", text, flags=re.IGNORECASE)
    text = re.sub(r"^(?:please |can you |could you |would you |will you )+", "", text, flags=re.IGNORECASE)
    text = re.sub(r"(?:,? please)+[ ?!.,]*$", "", text, flags=re.IGNORECASE)
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
)
def _time(match: re.Match[str]) -> Intent | None:
    groups = match.groupdict()
    place = groups.get("place") or groups.get("place2")
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
    r"(?:is|are) (?:my|the|any) timers? (?:still )?(?:running|set|on)",
    r"(?:time|how long) left on (?:my|the) (?P<label3>[\w ,'-]+?)?(?: ?timers?)",
)
def _timer_status(match: re.Match[str]) -> Intent:
    groups = match.groupdict()
    label = _clean_slot(groups.get("label") or groups.get("label2") or groups.get("label3") or "")
    return Intent("list_timers", {"label": label} if label and label not in ("timer", "timers") else {})


@_template(
    r"(?:cancel|stop|delete|remove|clear|turn off)(?: all)? (?:my |the |all )?(?:(?P<label>[\w ,'-]+?) )?timers?",
)
def _timer_cancel(match: re.Match[str]) -> Intent:
    label = _clean_slot(match.group("label") or "")
    return Intent("cancel_timer", {"label": label} if label and label not in ("all", "my", "the") else {})


_LABEL = r"(?: (?:called|named|labell?ed|for(?: the)?) (?P<label>[\w ,'-]+?))?"


@_template(
    rf"(?:set|start|create|make|put) (?:a |an |me a |the |it |one )?timer (?:on )?(?:(?:for|of) )?"
    rf"(?P<duration>[\w .-]+?){_LABEL}",
    # The name first: "start a timer for my tea, 4 minutes".
    r"(?:set|start|create|make) (?:a |an |me a )?timer (?:for|called|named) (?:my |the )?(?P<label2>[\w '-]+?),? "
    r"(?:for )?(?P<duration>[\w .-]+?)",
    rf"(?:(?:set|start|create|make) )?(?:a |an )?(?P<duration>[\w .-]+?) timer{_LABEL}",
    rf"timer (?:for )?(?P<duration>[\w .-]+?){_LABEL}",
    r"remind me in (?P<duration>[\w .-]+?)(?: (?:to|about) (?P<label2>[\w ,'-]+))?",
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
    seconds = duration_seconds(match.group("duration"))
    if seconds is None:
        return None
    arguments: dict[str, Any] = {"seconds": int(seconds) if seconds == int(seconds) else seconds}
    groups = match.groupdict()
    label = groups.get("label") or groups.get("label2") or groups.get("label3")
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
    r"(?P<text>i am (?:from|allergic to|married to|a vegetarian|vegetarian|vegan|\d+ years old) ?.*)",
    r"(?P<text>i have (?:a|an|two|three|\d+) (?:\w+ ){0,2}(?:called|named) .+)",
    r"(?P<text>my (?:\w+(?:'s)? ){1,3}(?:is|are) (?:called|named) .+)",
    r"(?P<text>(?:you can )?call me .+)",
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


@_template(
    r"what do you (?:remember|know|recall) about (?P<query>.+)",
    r"what did i (?:tell|say to) you about (?P<query>.+)",
    r"do you (?:remember|know|recall) (?:what |about )?(?P<query>.+)",
    r"(?:recall|search (?:your )?memory for|look up) (?P<query>.+)",
    r"what (?:is|are|was|were) (?P<query>my .+)",
    r"(?:who|where|when) (?:is|are|was|were) (?P<query>my .+)",
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
def _recall(match: re.Match[str]) -> Intent:
    query = _clean_slot(match.groupdict().get("query") or "")
    return Intent("recall", {"query": query or "me"})


@_template(
    r"(?:add|(?:what is )?the sum of|sum) (?P<a>[\w .]+?) (?:and|to|plus) (?P<b>[\w .]+?)(?: together)?",
    r"multiply (?P<m1>[\w .]+?) (?:and|by|with) (?P<m2>[\w .]+?)",
)
def _two_numbers(match: re.Match[str]) -> Intent | None:
    groups = match.groupdict()
    adding = groups.get("a") is not None
    left = words_to_digits(groups["a"] if adding else groups["m1"]).strip()
    right = words_to_digits(groups["b"] if adding else groups["m2"]).strip()
    if not NUMBER.fullmatch(left) or not NUMBER.fullmatch(right):
        return None  # "add eggs to my list", "multiply the cost by two"
    return Intent("calculate", {"expression": f"{left}{'+' if adding else '*'}{right}"})


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


_CURRENCY = r"(?:dollars?|euros?|pounds? sterling|sterling|yen|yuan|rupees?|francs?|pesos?|bitcoins?|usd|eur|gbp)"

# What Coda cannot do on its own (it runs offline, with no connected services), found anywhere in an
# utterance that no template matched. Each is answered with an honest "I can't", never by a model that
# might make up a forecast or a score.
_UNSUPPORTED: list[tuple[re.Pattern[str], str]] = [
    (re.compile(p, re.IGNORECASE), what)
    for p, what in [
        (r"\b(?:weather|forecast|rain(?:ing|y)?|snow(?:ing|y)?|sunny|humid(?:ity)?|umbrella|wind(?:y)?|"
         r"storm(?:y|s)?|fog(?:gy)?|hail(?:ing)?|thunder\w*|frost(?:y)?|"
         r"need (?:a |an |my )?(?:coat|jacket|scarf|gloves|sunscreen|sun cream)|"
         r"temperature (?:outside|today|tomorrow|now|in)|how (?:hot|cold|warm) is it)\b", "check the weather"),
        (r"\b(?:news|headlines?|top stories|today's stories|current events)\b|what is happening in the world",
         "read the news"),
        (r"\b(?:scores?|who won|standings|fixtures|kick ?off)\b|\bwho(?:'s| is) playing\b|"
         r"\b(?:football|soccer|basketball|baseball|cricket|rugby|tennis|hockey) (?:tonight|today|tomorrow|"
         r"this weekend|game|match)\b|"
         r"\bhow did (?!you\b|i\b|we\b|it\b|that\b)[\w ]+ (?:do|get on|play)\b", "look up live sports results"),
        (r"\b(?:stocks?|shares?|share price|stock market|exchange rate|bitcoin|crypto\w*|nasdaq|dow jones)\b",
         "look up prices or markets"),
        (rf"\b{_CURRENCY}\b.*\b(?:in|to|into)\b.*\b{_CURRENCY}\b", "look up prices or markets"),
        (r"\b(?:show|display) me\b.*\b(?:pictures?|photos?|images?|videos?|movies?|maps?)\b|"
         r"\b(?:pictures?|photos?|images?) of\b|\b(?:open|launch|start) (?:netflix|youtube|spotify|the tv)\b",
         "show pictures, videos or apps"),
        (r"\b(?:traffic|directions|route to|how do i get to|commute|navigate)\b|\bnear me\b|"
         r"\b(?:nearest|closest) (?:petrol|gas|station|shop|store|restaurant|pharmacy|hospital|atm|cafe|"
         r"supermarket|bank)\b", "check traffic or directions"),
        (r"\btrending\b|\bwhat is (?:new |happening )?on (?:twitter|x|tiktok|instagram|facebook|reddit)\b|"
         r"\b(?:post|tweet|share) (?:this |that |it )?(?:on|to) (?:twitter|x|tiktok|instagram|facebook|reddit)\b",
         "check or post on social media"),
        (r"^(?:message|text|e-?mail|whats ?app|sms|call|phone|ring|dial|facetime|video call) (?!me\b)\w+|"
         r"\b(?:send|write|text|e-?mail|message|call|phone|ring|dial)\b.*\b(?:to|my|him|her|them|mom|mum|dad|"
         r"wife|husband|boss|friend|someone|\w+@\w+)\b|\b(?:send|text) (?:a |an )?(?:message|text|e-?mail)\b",
         "send messages or make calls"),
        (r"\b(?:order|buy|purchase|book|reserve|deliver)\b.*\b(?:me|a|an|some|tickets?|table|pizza|food|"
         r"taxi|uber|cab|flight|hotel|groceries|online)\b", "order, buy or book things"),
        (r"\b(?:play|put on|listen to)\b.*\b(?:music|songs?|tunes|album|playlist|radio|podcast|audiobook|spotify|"
         r"by|jazz|rock|pop|classical|blues|hip ?hop|rap|country|folk|reggae|metal|techno|disco|soul|funk|"
         r"opera|lo-?fi|beatles|queen|mozart|beethoven)\b", "play music"),
        (r"\b(?:turn|switch|shut) (?:on|off)\b|\b(?:dim|brighten)\b|\b(?:lights?|lamp|thermostat|heating|"
         r"air ?con\w*|lock the door|unlock|vacuum)\b", "control devices in your home"),
        (r"\b(?:search (?:the )?(?:web|internet|online)|google|look (?:it |this |that )?up online|browse|"
         r"website)\b", "search the internet"),
        (r"\b(?:calendar|appointments?|my meetings?|my schedule|agenda)\b", "see your calendar"),
        (r"\b(?:set|wake me|make) (?:an? |me an? )?alarm\b|\bwake me up\b", "set alarms at a time of day"),
    ]
]  # fmt: skip


def unsupported(utterance: str) -> str | None:
    """What the user asked for that Coda cannot do ("check the weather"), or None."""
    for pattern, what in _UNSUPPORTED:
        if pattern.search(utterance):
            return what
    return None


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
    what = unsupported(utterance)
    if what is not None:
        return Intent("unsupported", {"what": what})
    return None
