"""Follow-ups: an utterance that only makes sense with the one before it.

"and in London?" after "what time is it in Tokyo?" asks for the time again with a new place;
"now divide that by 3" after "what is 12 times 7?" continues the arithmetic from the last answer.
The conversation is what the model would see: earlier user messages and the assistant's answers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from coda.llm.agent.intents import (
    Intent,
    conversion_arguments,
    match_intent,
    memory_kind,
    normalise,
    spoken_quantity,
    whole,
)
from coda.llm.agent.numbers import NUMBER, arithmetic_expression, clock_time, exact_duration, words_to_digits
from coda.llm.agent.places import time_zone_for
from coda.llm.types import Message
from coda.tools.lists import list_sentence

_PLACE_ONLY = re.compile(
    r"^(?:and |but |ok |okay )?(?:what about |how about |and what about )?(?:in|at|for) (?P<place>[\w .,'/-]+)$"
    r"|^(?:and|what about|how about) (?P<place2>[\w .,'/-]+)$",
    re.IGNORECASE,
)
#: "and what is the date there", "what time is it there now", "and the day there?", "and the date?".
_SAME_PLACE = re.compile(
    r"^(?:and |so |ok |okay )?(?:what is |what )?(?:the )?(?:date|day|time)(?: is it)?(?:(?: over)? there)?"
    r"(?: now| today)?$",
    re.IGNORECASE,
)
#: A question, not a place: "and what is the weather like", "and the date".
_NOT_A_PLACE = re.compile(r"\b(?:what|when|how|who|why|is|are|the weather|there|date|day)\b", re.IGNORECASE)
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
        if _SAME_PLACE.match(text):  # "and what's the date there?": the answer gives both
            return Intent("get_time", dict(previous.arguments))
        place = _PLACE_ONLY.match(text)
        if place:
            where = (place.group("place") or place.group("place2") or "").strip(" ?!.,")
            zone = time_zone_for(where) if where and not _NOT_A_PLACE.search(where) else ""
            # Only a place get_time knows: "and the Sunday after?" is not one.
            return Intent("get_time", {"timezone": zone}) if "/" in zone or zone == "UTC" else None
    if previous.name == "calculate":
        return _another_percentage(text, str(previous.arguments.get("expression") or "")) or _continued_arithmetic(
            text, _last(earlier, "assistant")
        )
    if previous.name == "convert_units":
        return _continued_conversion(text, previous.arguments)
    if previous.name in ("set_timer", "change_timer", "list_timers", "pause_timer", "resume_timer"):
        return _same_timer(text, previous.arguments)
    if previous.name == "remember":
        fact = str(previous.arguments.get("text") or "")
        return _same_list(text, fact) or _more_about(text, fact) or _corrected(text, fact)
    return None


#: The list an item was just added to: "my shopping list includes apples" -> "shopping list".
_LIST_FACT = re.compile(r"^my (?P<list>[\w -]*?list) includes ", re.IGNORECASE)
#: Another item for it: "also add oranges", "and some bread too", "put milk on it as well".
_ANOTHER_ITEM = re.compile(
    r"^(?:(?:and|also|oh|plus|ok|okay)[, ]+)*(?:(?:add|put)(?: on)? (?P<item>.+?)|(?P<item2>(?!(?:and|also|plus|oh|ok|okay|add|put|what|when|where|who|why|how|is|are|do|does|did|can|could|will|would|tell|thank|set|remind|cancel|remember)\b)[\w' -]+?))"
    r"(?: (?:on|to) (?:it|that|the list|that list))?(?: too| as well| also)?$",
    re.IGNORECASE,
)


#: An item taken back off the list just added to: "remove the milk", "actually take the eggs off".
_TAKE_OFF = re.compile(
    r"^(?:(?:actually|oh|and|no|sorry|wait)[, ]+)*(?:remove|delete|take|scratch|cross) (?:off )?(?P<item>[\w' -]+?)"
    r"(?: (?:off|out))?(?: (?:from|off) (?:it|that|the list|that list))?(?: again)?$",
    re.IGNORECASE,
)


def _same_list(text: str, fact: str) -> Intent | None:
    """ "also add oranges" after "add apples to my shopping list": oranges on the same list. A bare
    "and bread" counts only when it begins with "and"/"also"/"plus", or ends with "too". "remove the
    milk" takes an item back off it."""
    listed = _LIST_FACT.match(fact)
    if listed is None:
        return None
    taken = _TAKE_OFF.match(text)
    if taken and not re.fullmatch(r"(?:it|that|this|them|everything|all)", taken["item"].strip(), re.IGNORECASE):
        return Intent("forget", {"query": listed["list"], "item": taken["item"].strip()})
    said = _ANOTHER_ITEM.match(text)
    if said is None:
        return None
    bare = said["item2"]
    if (
        bare
        and not re.match(r"^(?:and|also|plus)\b", text, re.IGNORECASE)
        and not re.search(r"\b(?:too|as well)$", text)
    ):
        return None
    item = (said["item"] or bare or "").strip(" ,.")
    if not item:
        return None
    return Intent("remember", {"text": list_sentence(listed["list"], [item]), "kind": "fact"})


#: Whom a remembered fact is about: "my brother lives in Denver" -> "my brother".
_SUBJECT = re.compile(
    r"^(?P<who>my (?:\w+(?:'s)? ){0,2}?\w+) (?:lives|lived|works|worked|studies|moved|grew up|was born|is|are)\b",
    re.IGNORECASE,
)
#: A fact about the same person by a pronoun: "actually he moved to Austin", "no, she works at the bakery now".
_PRONOUN_FACT = re.compile(
    r"^(?:(?:actually|no|sorry|oh|wait|oops|and|also)[, ]+)*(?:he|she|they) (?:has |have |just |now )*"
    r"(?P<verb>moved|lives|live|works|work|studies|study|is|are|was born|grew up) (?P<rest>.+)$",
    re.IGNORECASE,
)
_THIRD_PERSON = {"live": "lives", "work": "works", "study": "studies", "are": "is"}


def _more_about(text: str, fact: str) -> Intent | None:
    """ "actually he moved to Austin" after "my brother lives in Denver": a fact about my brother."""
    subject, said = _SUBJECT.match(fact), _PRONOUN_FACT.match(text)
    if subject is None or said is None:
        return None
    verb = _THIRD_PERSON.get(said["verb"].lower(), said["verb"].lower())
    return Intent("remember", {"text": f"{subject['who']} {verb} {said['rest']}", "kind": "fact"})


#: A fact with a value: "my favourite colour is blue" -> "my favourite colour is".
_VALUED = re.compile(r"^(?P<subject>my [\w' ]+? (?:is|are)) \S.*$", re.IGNORECASE)
#: A new value for it: "actually it's green", "no, it is 4471", "sorry, I meant Anna", "make that green".
_CORRECTION = re.compile(
    r"^(?:(?:actually|no|sorry|oops|wait|correction)[, ]+)+(?:(?:it is|it was|that is|they are|i meant|i mean|"
    r"make (?:it|that)) )?(?P<value>(?=\w)(?!(?:it|that|this|they|i|not|never|mind|fine|ok|okay|good|great|right|thanks|"
    r"thank|what|when|where|who|how|why|is|are|do|does|can|could|will|would)\b)(?![\w' -]*\bnot\b)[\w' -]+?)"
    r"(?: actually| instead)?$",
    re.IGNORECASE,
)


def _corrected(text: str, fact: str) -> Intent | None:
    """ "actually it's green" after "my favourite colour is blue": the fact with its new value (which
    replaces the old one, as a single-valued fact does)."""
    valued, said = _VALUED.match(fact), _CORRECTION.match(text)
    if valued is None or said is None or _LIST_FACT.match(fact):
        return None
    whole_fact = match_intent(said["value"])
    if whole_fact is not None and whole_fact.name == "remember":  # "actually call me Tommy": a fact of its own
        return whole_fact
    text = f"{valued['subject']} {said['value'].strip()}"
    return Intent("remember", {"text": text, "kind": memory_kind(text)})


#: A new length or time for the timer or alarm just set: "actually, make that 10 minutes", "change it
#: to 10 minutes instead", "no, 6:45 instead"; it counts only with a word of correction in it.
_NEW_SETTING = re.compile(
    r"^(?:(?:no|sorry|actually|oh|wait|oops|make that|i meant|i mean)[, ]+)*"
    r"(?:(?:make|change|set|reset|update|move|push|put) (?:it|that|this|the timer|the alarm|my alarm)(?: to| for)? )?"
    r"(?P<value>.+?)(?: (?:instead|then|please))*$",
    re.IGNORECASE,
)
_CORRECTING = re.compile(
    r"\b(?:make|change|set|reset|update|move|push|put|instead|actually|meant|mean|no|sorry)\b", re.IGNORECASE
)
#: "add 5 more minutes", "5 more minutes", "another 2 minutes", "give it 3 more minutes".
_MORE = re.compile(
    r"^(?:and |ok |okay |actually,? )*(?:(?:add|give it|give me|put on) )?(?:another |an extra )?(?P<more>[\w .-]+?)"
    r" ?(?:more|extra)?(?: to it| on it)?$",
    re.IGNORECASE,
)
_CANCEL_IT = re.compile(r"^(?:(?:actually|no|ok|okay)[, ]+)*(?:cancel|stop|delete|remove|turn off) (?:it|that)$", re.I)
#: Another timer like the one just set: "and a 9 minute one for the eggs", "also another 3 minute one".
_ANOTHER_TIMER = re.compile(
    r"^(?:(?:and|also|plus|oh and)[, ]+)*(?:set |start |make )?(?:(?:a |an |another |one more )(?:(?:another|second|more) )?"
    r"(?P<duration>[\w .-]+?) one|(?:another|one more)(?: one)? for (?P<duration2>[\w .-]+?))"
    r"(?: (?:for|called|named|labell?ed) (?:the |my )?(?P<label>[\w ,'-]+))?(?: too| as well)?$",
    re.IGNORECASE,
)
_PAUSE_IT = re.compile(
    r"^(?:(?:and|ok|okay|now|actually)[, ]+)*(?:(?P<pause>pause|hold|freeze) (?:it|that)(?: for (?:now|a (?:moment|minute|bit)))?"
    r"|(?P<pause2>put|place) (?:it|that) on (?:hold|pause)"
    r"|(?:resume|unpause|continue|restart) (?:it|that)|(?:start|let) (?:it|that) (?:again|going again|run again))$",
    re.I,
)


#: "make it 30 minutes later", "push it back 10 minutes", "bring it forward by an hour".
_SHIFT = re.compile(
    r"^(?:(?:actually|no|ok|okay|and|oh)[, ]+)*(?:(?:make|move|push|set|put) (?:it|that|the alarm|the timer) "
    r"(?:by )?(?P<amount>[\w .-]+?) (?P<way>later|earlier|sooner|longer|shorter)"
    r"|(?P<back>push|put|move) (?:it|that|the alarm|the timer) back (?:by )?(?P<amount2>[\w .-]+?)"
    r"|(?:bring|move) (?:it|that|the alarm|the timer) forward (?:by )?(?P<amount3>[\w .-]+?))$",
    re.IGNORECASE,
)


def _new_alarm_time(text: str, before: Mapping[str, object]) -> Intent | None:
    """ "actually make it 7:30" after an alarm: the same alarm at that time. An hour said without am
    or pm is taken on the alarm's half of the day, or left to the clock when the alarm's was too."""
    said = _NEW_SETTING.match(text)
    if said is None or not _CORRECTING.search(text):
        return None
    clock = clock_time(said["value"])
    if clock is None:
        return None
    hour, minute, twelve_hour = clock
    arguments: dict[str, object] = {"label": before["label"]} if before.get("label") else {}
    if twelve_hour and before.get("twelve_hour"):
        arguments["twelve_hour"] = True
    elif twelve_hour:
        old = int(str(before["at"]).split(":")[0])
        hour = min((hour % 12, hour % 12 + 12), key=lambda h: min(abs(h - old), 24 - abs(h - old)))
    if before.get("tomorrow"):
        arguments["tomorrow"] = True
    return Intent("change_timer", {**arguments, "at": f"{hour:02d}:{minute:02d}"})


def _shifted(text: str, which: dict[str, object]) -> Intent | None:
    """ "make it 30 minutes later", "push it back 10 minutes": time added to (or taken off) it."""
    shift = _SHIFT.match(text)
    if shift is None:
        return None
    seconds = exact_duration(shift["amount"] or shift["amount2"] or shift["amount3"])
    if seconds is None:
        return None
    sooner = bool(shift["amount3"]) or (shift["way"] or "").lower() in ("earlier", "sooner", "shorter")
    return Intent("change_timer", {**which, "add_seconds": whole(-seconds if sooner else seconds)})


def _same_timer(text: str, before: Mapping[str, object]) -> Intent | None:
    """A change to the timer just set or asked about: its label picks the same timer."""
    label = str(before.get("label") or "")
    which: dict[str, object] = {"label": label} if label else {}
    if _CANCEL_IT.match(text):
        return Intent("cancel_timer", which)
    if before.get("at"):
        alarm = _new_alarm_time(text, before)
        if alarm is not None:
            return alarm
    shifted = _shifted(text, which)
    if shifted is not None:
        return shifted
    another = _ANOTHER_TIMER.match(text)
    if another:  # "and a 9 minute one for the eggs"
        seconds = exact_duration(another.group("duration") or another.group("duration2"))
        if seconds is not None:
            label = (another.group("label") or "").strip(" ,.")
            return Intent("set_timer", {"seconds": whole(seconds), **({"label": label} if label else {})})
    held = _PAUSE_IT.match(text)
    if held:
        return Intent("pause_timer" if held.group("pause") or held.group("pause2") else "resume_timer", which)
    more = _MORE.match(text)
    if more and re.search(r"\b(?:more|extra|another|add)\b", text, re.IGNORECASE):
        amount = re.sub(r"\s*\b(?:more|extra)\b", "", more.group("more")).strip()
        # "give it another minute": one of that unit.
        seconds = exact_duration(amount) or exact_duration(f"a {amount}")
        if seconds is not None:
            return Intent("change_timer", {**which, "add_seconds": whole(seconds)})
    length = _NEW_SETTING.match(text)
    if length and _CORRECTING.search(text):
        seconds = exact_duration(length["value"])
        if seconds is not None:
            return Intent("change_timer", {**which, "seconds": whole(seconds)})
    return None


_ANOTHER = re.compile(
    r"^(?:(?:and|but|ok|okay|so|what about|how about|and what about) )*(?:(?:in|to|into) )?(?P<rest>.+)$"
)


def _continued_conversion(text: str, before: dict[str, object]) -> Intent | None:
    """ "and in feet?" (the same amount in another unit), "what about 10 miles?" (another amount)."""
    rest = _ANOTHER.match(text.lower())
    said = rest.group("rest") if rest else text
    value, source, target = float(str(before["value"])), str(before["from_unit"]), str(before["to_unit"])
    quantity = spoken_quantity(said)
    # "and in a kilo?": another amount to convert, not another unit to convert the same amount into.
    another = conversion_arguments(*quantity, target) if quantity and re.match(r"(?:an?|one|\d)\b", said) else None
    arguments = another or conversion_arguments(value, source, said)
    if arguments is None:
        digits = words_to_digits(said)
        quantity = quantity or ((float(digits), source) if NUMBER.fullmatch(digits) else None)
        arguments = conversion_arguments(*quantity, target) if quantity else None
    return Intent("convert_units", arguments) if arguments else None


#: "20 percent of 150" as the calculator's expression, and "and 30%?" / "what about 15 percent" after it.
_PERCENTAGE_OF = re.compile(r"^\((?P<percent>\d+(?:\.\d+)?)/100\*(?P<whole>\d+(?:\.\d+)?)\)$")
_ANOTHER_PERCENTAGE = re.compile(
    r"^(?:and |what about |how about |and what about )?(?:what is )?(?P<percent>\d+(?:\.\d+)?) ?(?:%|percent)$"
)


def _another_percentage(text: str, expression: str) -> Intent | None:
    """ "and 30%?" after "what's 20% of 150": the same whole, another percentage."""
    before = _PERCENTAGE_OF.match(expression)
    asked = _ANOTHER_PERCENTAGE.match(words_to_digits(text.lower()))
    if before is None or asked is None:
        return None
    return Intent("calculate", {"expression": f"({asked['percent']}/100*{before['whole']})"})


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
