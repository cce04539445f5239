"""What the intent agent says: answers phrased from tool results, help, and honest refusals."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

#: What each built-in tool lets the agent do, for "help" and for "that is unavailable".
CAPABILITIES: dict[str, str] = {
    "get_time": 'tell the time anywhere ("what time is it in Tokyo?")',
    "calculate": 'do arithmetic ("what is twelve times seven?")',
    "convert_units": 'convert units ("how many feet are in a mile?")',
    "remember": 'remember things you tell me ("remember that my favourite colour is green")',
    "recall": 'recall what you told me ("what is my favourite colour?")',
    "forget": 'forget what you told me ("forget my locker code", "take eggs off my shopping list")',
    "set_timer": 'set timers and alarms ("set a timer for 5 minutes called tea", "wake me up at 7 am")',
    "list_timers": 'tell you how long is left on your timers ("how long is left on my timer?")',
    "pause_timer": 'pause and resume a timer ("pause the timer")',
    "system_status": 'report how the system is doing ("status")',
}


#: What a session hears when nothing can answer (no local language model is installed or it failed):
#: short and honest. How to set a model up belongs in the README and the logs, never in an answer.
def cannot_answer(available: frozenset[str]) -> str:
    skills = [text.split(" (")[0] for name, text in CAPABILITIES.items() if name in available]
    if not skills:
        return "Sorry, I can't help with that."
    return f"Sorry, I can't help with that. I can {_listing(skills[:4])}."


def _listing(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def help_text(available: frozenset[str]) -> str:
    # Short enough to be heard: the examples in CAPABILITIES are for the page, not the voice.
    skills = [text.split(" (")[0] for name, text in CAPABILITIES.items() if name in available]
    if not skills:
        return "I can chat and answer general questions."
    return f"I can {_listing(skills)}. You can also just chat with me or ask a general question."


def unsupported(what: str) -> str:
    """The honest answer to a request for something Coda cannot do ("check the weather")."""
    if what == "do things in the physical world":
        return "Sorry, I can't do that: I'm a program on this computer, with no way to make or fetch things."
    if what == "control devices in your home":
        return "Sorry, I can't control devices in your home: none are connected to me."
    if what == "set that alarm":
        return (
            "Sorry, I can't set that alarm: I can only set one at a time within the next week, not a repeating "
            'one, like "wake me up at 7 am" or "set an alarm for Friday at 6".'
        )
    if what == "set that reminder":
        return (
            "Sorry, I can only set a reminder for one time within the next week: say when, "
            'like "remind me tomorrow at 9 am to call mom" or "remind me on Friday at 5 to pay the rent".'
        )
    return f"Sorry, I can't {what}: I run offline, without internet access or connected services."


def unavailable(tool: str) -> str:
    what = CAPABILITIES.get(tool, f"use {tool}").split(" (")[0]
    return f"Sorry, I can't {what} right now: the {tool} tool is not available in this conversation."


def smalltalk() -> str:
    return "I'm doing well, thanks for asking! How can I help?"


def identity(*, maker: bool = False, age: bool = False) -> str:
    if age:
        return "I don't have an age the way people do: I'm Coda, a program running on this computer."
    if maker:
        return "I'm Coda, an assistant made by the Coda project. I run here, on this computer, not in the cloud."
    return "I'm Coda, a voice and text assistant: a program running on this computer, not a person."


def greeting() -> str:
    return 'Hello! How can I help? Say "help" to hear what I can do.'


def thanks() -> str:
    return "You're welcome!"


def hesitation() -> str:
    return "Yes? I'm listening."


def acknowledgement() -> str:
    return "Great. Just ask if you need anything else."


def apology() -> str:
    return "No worries at all. What can I do for you?"


def goodbye(*, night: bool = False) -> str:
    return "Good night! Sleep well." if night else "Goodbye! Talk to you soon."


# --- answers from tool results


def answer_from_result(tool: str, arguments: Mapping[str, Any], content: str) -> str:
    """A sentence answering the user from one tool result (JSON text, or plain text)."""
    try:
        result: Any = json.loads(content) if content.strip() else {}
    except json.JSONDecodeError:
        result = content.strip()
    if isinstance(result, dict) and result.get("error"):
        error = result["error"]
        message = error.get("message", error) if isinstance(error, dict) else error
        return f"Sorry, {tool.replace('_', ' ')} failed: {message}."
    phrase = _PHRASES.get(tool)
    if phrase is not None:
        try:
            sentence = phrase(result, arguments)
        except (TypeError, ValueError, KeyError, AttributeError):
            sentence = None
        if sentence:
            return sentence
    return _generic(tool, result)


def _pick(result: Any, *keys: str) -> Any:
    if isinstance(result, dict):
        for key in keys:
            if result.get(key) not in (None, ""):
                return result[key]
    return None


def _stamp(result: Mapping[str, Any]) -> datetime | None:
    """The moment a clock result stands for (its ISO time)."""
    stamp = _pick(result, "iso", "datetime")
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")) if isinstance(stamp, str) else None


def _date_days_away(result: Mapping[str, Any], days: int) -> str | None:
    day = _stamp(result)
    if day is None:
        return None
    date = f"{day:%A}, {day.day} {day:%B %Y}"
    if days in (1, -1):
        return f"Tomorrow is {date}." if days == 1 else f"Yesterday was {date}."
    return f"In {days} days it will be {date}." if days > 0 else f"{-days} days ago it was {date}."


def _calendar_day(result: Mapping[str, Any], days: int) -> str | None:
    """ "25 December 2026 is a Friday, 19 days from today." """
    day = _stamp(result)
    if day is None:
        return None
    date = f"{day.day} {day:%B %Y}"
    if days == 0:
        return f"That's today, {day:%A}, {date}."
    if days in (1, -1):
        return f"{date} is tomorrow, a {day:%A}." if days == 1 else f"{date} was yesterday, a {day:%A}."
    if days > 0:
        return f"{date} is a {day:%A}, {days} days from today{_in_weeks(days)}."
    return f"{date} was a {day:%A}, {-days} days ago."


def _in_weeks(days: int) -> str:
    """ " (2 weeks and 5 days)" for a day far enough away that weeks help."""
    if days < 14:
        return ""
    weeks, rest = divmod(days, 7)
    return f" ({weeks} weeks" + (f" and {rest} day{'s' if rest > 1 else ''})" if rest else ")")


def _place(zone: Any) -> str:
    return str(zone).split("/")[-1].replace("_", " ")


def _time_difference(result: Mapping[str, Any]) -> str:
    """ "Tokyo is 9 hours ahead of London: it's 21:30 there and 12:30 in London." """
    here, there = _place(result.get("timezone", "")), _place(result.get("compared_with", ""))
    hours = float(result["hours_ahead"])
    times = f"it's {result.get('time', '?')} in {here} and {result.get('other_time', '?')} in {there}"
    if hours == 0:
        return f"{here} and {there} are on the same time: {times}."
    amount = _number(abs(hours))
    return f"{here} is {amount} hour{'' if abs(hours) == 1 else 's'} {'ahead of' if hours > 0 else 'behind'} {there}: {times}."


def _time_at(result: Mapping[str, Any]) -> str:
    """ "When it's 09:00 in New York, it's 23:00 in Tokyo." """
    here, there = _place(result.get("timezone", "")), _place(result.get("compared_with", ""))
    apart = {1: " the next day", -1: " the day before"}.get(int(result.get("days_apart", 0)), "")
    return f"When it's {result.get('at', '?')} in {there}, it's {result.get('time', '?')}{apart} in {here}."


def _months_away(result: Mapping[str, Any], months: int) -> str | None:
    """ "A month from today it will be Wednesday, 6 January 2027.", "2 months ago it was ..." """
    day = _stamp(result)
    if day is None:
        return None
    date = f"{day:%A}, {day.day} {day:%B %Y}"
    years, rest = divmod(abs(months), 12)
    span = (
        ("a year" if years == 1 else f"{years} years")
        if not rest
        else ("a month" if abs(months) == 1 else f"{abs(months)} months")
    )
    if months > 0:
        return f"{span[0].upper()}{span[1:]} from today it will be {date}."
    return f"{span[0].upper()}{span[1:]} ago it was {date}."


def _time_from_now(result: Mapping[str, Any], minutes: int) -> str:
    """ "In 45 minutes it will be 05:30." """
    day = "" if result.get("same_day", True) else f" on {result.get('weekday', '')}".rstrip()
    span = _duration(abs(minutes) * 60)
    clock = f"{result.get('time', '?')}{day}"
    return f"In {span} it will be {clock}." if minutes > 0 else f"{span[0].upper()}{span[1:]} ago it was {clock}."


def _time(result: Any, arguments: Mapping[str, Any]) -> str | None:
    minutes = _pick(result, "minutes")
    if isinstance(minutes, int) and minutes and isinstance(result, dict):
        return _time_from_now(result, minutes)
    months = _pick(result, "months")
    if isinstance(months, int) and months and isinstance(result, dict):
        return _months_away(result, months)
    days = _pick(result, "days")
    if arguments.get("date") and isinstance(days, int) and isinstance(result, dict):
        return _calendar_day(result, days)
    if isinstance(result, dict) and isinstance(result.get("hours_ahead"), int | float):
        return _time_at(result) if result.get("at") else _time_difference(result)
    if isinstance(days, int) and days and isinstance(result, dict):
        day = _stamp(result)
        if arguments.get("weekday") and day is not None:
            away = "tomorrow" if days == 1 else f"in {days} days"
            return f"Next {day:%A} is {day.day} {day:%B %Y}, {away}."
        return _date_days_away(result, days)
    zone = _pick(result, "timezone", "time_zone", "tz", "zone") or arguments.get("timezone") or ""
    place = _place(zone) if zone else ""
    stamp = _pick(result, "iso", "datetime", "local_time", "time", "now") if isinstance(result, dict) else result
    if not isinstance(stamp, str):
        return None
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        spoken = stamp
    else:
        spoken = f"{moment:%H:%M} on {moment:%A}, {moment.day} {moment:%B %Y}"
    return f"It's {spoken} in {place}." if place else f"It's {spoken}."


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.10g}"
    return str(value)


_SPOKEN_OPERATORS = [("**0.5", " square root"), ("**", " to the power of "), ("*", " times "), ("/", " divided by "),
                     ("+", " plus "), ("%", " modulo ")]  # fmt: skip


_ROUNDED_TO = {0: "to a whole number", 1: "to 1 decimal place", -1: "to the nearest ten", -2: "to the nearest hundred",
               -3: "to the nearest thousand"}  # fmt: skip


def spoken_expression(expression: str) -> str:
    """An arithmetic expression as words a voice reads right ("12*7" -> "12 times 7"; "*" is markup)."""
    text = expression.replace(" ", "")
    mean = re.fullmatch(r"\(((?:[\d.]+\+)+[\d.]+)\)/(\d+)", text)
    if mean and mean[1].count("+") + 1 == int(mean[2]):
        numbers = mean[1].split("+")
        return f"the average of {', '.join(numbers[:-1])} and {numbers[-1]}"
    rounded = re.fullmatch(r"round\((-?[\d.]+|pi)(?:,(-?\d+))?\)", text)
    if rounded:
        return f"{rounded[1]} rounded {_ROUNDED_TO.get(int(rounded[2] or 0), f'to {rounded[2]} decimal places')}"
    text = re.sub(r"\(([\d.]+)/([\d.]+)\*100\)", r"\1 as a percentage of \2", text)  # "what percentage is 30 of 120"
    # "(50-20/100*50)": 20% off 50; "(64+15/100*64)": 64 with 15% on top.
    text = re.sub(
        r"\(([\d.]+)([-+])([\d.]+)/100\*\1\)",
        lambda m: f"{m[1]} {'plus' if m[2] == '+' else 'minus'} {m[3]} percent",
        text,
    )
    text = re.sub(r"\(([\d.]+)/100\*([\d.]+)\)", r"\1 percent of \2", text)
    text = re.sub(r"\(([\d.]+)\*\*0\.5\)", r"the square root of \1", text)
    for symbol, words in _SPOKEN_OPERATORS:
        text = text.replace(symbol, words)
    text = re.sub(r"(?<=[\d)])-", " minus ", text)
    return re.sub(r"\s+", " ", text).strip()


def _calculate(result: Any, arguments: Mapping[str, Any]) -> str | None:
    value = _pick(result, "result", "value", "answer") if isinstance(result, dict) else result
    if value is None:
        return None
    expression = _pick(result, "expression") or arguments.get("expression", "")
    if not expression:
        return f"The answer is {_number(value)}."
    spoken = spoken_expression(str(expression))
    return f"{spoken[:1].upper()}{spoken[1:]} is {_number(value)}."


def _converted(result: Any, arguments: Mapping[str, Any]) -> str | None:
    text = _pick(result, "text")
    if text:
        return f"{text}."
    value = _pick(result, "result", "value")
    if value is None:
        return None
    return f"{_number(arguments.get('value'))} {arguments.get('from_unit')} is {_number(value)} {arguments.get('to_unit')}."


def _remember(result: Any, arguments: Mapping[str, Any]) -> str:
    text = str(arguments.get("text") or "").strip().rstrip(".")
    if not text:
        return "Okay, I'll remember that."
    name = re.match(r"(?:my name is|call me|you can call me) (\w[\w' -]*)$", text, re.IGNORECASE)
    replaced = _memory_texts({"memories": result.get("replaced")}) if isinstance(result, dict) else []
    if name:
        return f"Nice to meet you, {name.group(1)}! I'll remember your name."
    if replaced:
        return f"Got it, I've updated that: {_second_person(text)}."
    return f"Got it, I'll remember that {_second_person(text)}."


def _forgotten(result: Any, arguments: Mapping[str, Any]) -> str:
    if not isinstance(result, dict):
        return "Okay, I've forgotten that."
    if "list" in result:
        item, list_name = str(result.get("item") or "that"), str(result.get("list") or "list")
        if result.get("removed"):
            return f"Okay, I took {item} off your {list_name}."
        return f"{item[:1].upper()}{item[1:]} isn't on your {list_name}."
    forgotten = _memory_texts({"memories": result.get("forgotten")})
    query = _second_person(str(result.get("query") or arguments.get("query") or "that"))
    if not forgotten:
        return f"I had nothing about {query} to forget."
    if len(forgotten) == 1:
        return f"Okay, I've forgotten that {_second_person(forgotten[0])}."
    return f"Okay, I've forgotten {len(forgotten)} things about {query}."


#: A remembered exchange (coda.assistant.turn): what the user said is what they told.
_EPISODE = re.compile(r"^The user said: (?P<said>.*?)\s*The assistant answered:", re.DOTALL)


def _memory_texts(result: Any) -> list[str]:
    items = _pick(result, "memories", "results", "items", "matches") if isinstance(result, dict) else result
    texts: list[str] = []
    for item in items if isinstance(items, list) else []:
        text = _pick(item, "text", "content", "preview") if isinstance(item, dict) else item
        if isinstance(text, str) and text.strip():
            episode = _EPISODE.match(text.strip())
            text = episode["said"] if episode else text
            texts.append(text.strip().rstrip(".?!"))
    return texts


def _recall(result: Any, arguments: Mapping[str, Any]) -> str:
    texts = _memory_texts(result)
    query = re.sub(r"\s+(?:is|are|was|were)$", "", str(arguments.get("query") or "that").strip())
    if not texts:
        if re.match(r"(?:where|when|what|who|how|am|do|does|is|are)\b", query, re.IGNORECASE):  # "where did I park"
            return "I don't remember you telling me that."
        return f"I don't remember anything about {_second_person(query)}."
    if len(texts) == 1:
        return f"You told me that {_second_person(texts[0])}."
    return "Here's what I remember: " + "; ".join(_second_person(t) for t in texts[:5]) + "."


def _second_person(text: str) -> str:
    words = text.split()
    swapped = {
        "my": "your", "i": "you", "am": "are", "me": "you", "mine": "yours", "i'm": "you're", "myself": "yourself",
        "i've": "you've", "i'll": "you'll", "i'd": "you'd", "was": "were",
    }  # fmt: skip
    out = [swapped.get(w.lower(), w) for w in words]
    # "was" only follows "I": "my cat was ill" keeps it.
    return " ".join(
        o if not (w.lower() == "was" and i and words[i - 1].lower() != "i") else w
        for i, (w, o) in enumerate(zip(words, out, strict=True))
    )


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    parts = []
    for unit, size in (("hour", 3600), ("minute", 60), ("second", 1)):
        amount, seconds = divmod(seconds, size)
        if amount:
            parts.append(f"{amount} {unit}{'s' if amount != 1 else ''}")
    return " and ".join(parts) if parts else "0 seconds"


def _when(at: str, day: str, fires_at: Any = None) -> str:
    """ "07:00 tomorrow", "09:00 on Friday 11 December" (the date, since "next Friday" may mean
    either of two)."""
    if day in ("", "today", "tomorrow"):
        return f"{at} {day}".strip()
    try:
        moment = datetime.fromisoformat(str(fires_at))
    except ValueError:
        return f"{at} on {day}"
    return f"{at} on {day} {moment.day} {moment:%B}"


def _timer(result: Any, arguments: Mapping[str, Any]) -> str | None:
    seconds = _pick(result, "seconds", "duration_seconds") or arguments.get("seconds")
    if seconds is None:
        return None
    label = _pick(result, "label", "name") or arguments.get("label")
    at = _pick(result, "at")
    if at:  # an alarm or a reminder at a time of day
        when = _when(at, str(_pick(result, "day") or ""), _pick(result, "fires_at"))
        # How long until then, while that is easier to picture than the day.
        away = f", in {_duration(round(float(seconds) / 60) * 60)}" if 60 <= float(seconds) < 86400 else ""
        if not label or label == "alarm":
            return f"Alarm set for {when}{away}."
        if _is_task(label):
            return f"I'll remind you to {label} at {when}."
        return f"I'll remind you about {label} at {when}."
    if label and _is_task(label):
        return f"I'll remind you to {label} in {_duration(float(seconds))}."
    named = f" called {label}" if label else ""
    return f"Timer{named} set for {_duration(float(seconds))}."


#: First words of a reminder's task ("call the dentist"), read as "remind you to ...", not as a name.
_TASK_VERBS = frozenset({
    "ask", "book", "bring", "buy", "call", "change", "charge", "check", "clean", "cook", "drink",
    "email", "feed", "fetch", "get", "give", "go", "leave", "let", "lock", "make", "meet", "move",
    "open", "order", "pack", "pay", "phone", "pick", "plug", "put", "read", "ring", "send", "start",
    "stop", "switch", "take", "text", "tidy", "turn", "unplug", "visit", "wake", "walk", "wash",
    "water", "write"
})  # fmt: skip


def _is_task(label: str) -> bool:
    words = label.split()
    return len(words) >= 2 and words[0].lower() in _TASK_VERBS


def _left(timer: Mapping[str, Any]) -> str:
    label = timer.get("label") or ""
    remaining = _duration(float(timer.get("remaining_seconds", 0)))
    if label and _is_task(label):
        return f"{remaining} left before you {label}"
    if label == "alarm":
        return f"{remaining} until your alarm"
    left = f"{remaining} left on the {label} timer" if label else f"{remaining} left"
    return f"{left} (paused)" if timer.get("paused") else left


def _timers(result: Any, arguments: Mapping[str, Any]) -> str | None:
    timers = _pick(result, "timers")
    if not isinstance(timers, list):
        return None
    if not timers:
        return "You have no timers running."
    if len(timers) == 1:
        return f"There's {_left(timers[0])}."
    return f"You have {len(timers)} timers: " + "; ".join(_left(t) for t in timers[:5]) + "."


def _timer_list(result: Any, key: str) -> list[Any] | None:
    """The timers a result lists under `key` ([] for an empty or null list), or None."""
    listed = _pick(result, key)
    if listed is None and isinstance(result, dict) and key in result:
        listed = []
    return listed if isinstance(listed, list) else None


def _changed(result: Any, arguments: Mapping[str, Any]) -> str | None:
    changed = _timer_list(result, "changed")
    if changed is None:
        return None
    if not changed:
        return "You have no alarm set to change." if arguments.get("at") else "You have no timer running to change."
    first = changed[0]
    if isinstance(first, dict) and first.get("at"):  # an alarm or reminder moved to another time of day
        when = _when(str(first["at"]), str(first.get("day") or ""))
        label = str(first.get("label") or "")
        if not label or label == "alarm":
            return f"Done: your alarm now goes off at {when}."
        return f"Done: I'll remind you {'to' if _is_task(label) else 'about'} {label} at {when}."
    return f"Done: there's now {_left(first)}."


#: pause_timer and resume_timer: (the key of their result, nothing to do, a named timer, an unnamed one).
_HOLD_PHRASES = {
    "pause_timer": ("paused", "You have no running timer to pause.", "Paused the {label} timer with {left} left.",
                    "Timer paused with {left} left."),
    "resume_timer": ("resumed", "You have no paused timer to resume.", "The {label} timer is running again: {left} left.",
                     "Timer running again: {left} left."),
}  # fmt: skip


def _held_or_resumed(tool: str, result: Any) -> str | None:
    """ "Paused the tea timer with 4 minutes left.", "Timer running again: 4 minutes left." """
    key, nothing, named, unnamed = _HOLD_PHRASES[tool]
    listed = _timer_list(result, key)
    if listed is None:
        return None
    if not listed:
        return nothing
    first = listed[0] if isinstance(listed[0], dict) else {}
    label, left = str(first.get("label") or ""), _duration(float(first.get("remaining_seconds", 0)))
    return (named if label else unnamed).format(label=label, left=left)


def _cancelled(result: Any, arguments: Mapping[str, Any]) -> str | None:
    cancelled = _timer_list(result, "cancelled")
    if cancelled is None:
        return None
    if not cancelled:
        return "There was no timer to cancel."
    labels = [str(t["label"]) for t in cancelled if isinstance(t, dict) and t.get("label")]
    if len(cancelled) == 1:
        if labels == ["alarm"]:
            return "Alarm cancelled."
        if labels and _is_task(labels[0]):
            return f"Cancelled the reminder to {labels[0]}."
        return f"Cancelled the {labels[0]} timer." if labels else "Timer cancelled."
    return f"Cancelled {len(cancelled)} timers."


def _status(result: Any, arguments: Mapping[str, Any]) -> str:
    components = _pick(result, "components")
    if isinstance(components, dict) and components:
        serving = sorted(name for name, state in components.items() if state == "SERVING")
        troubled = {name: state for name, state in components.items() if state not in ("SERVING", "NOT_HOSTED")}
        if not troubled:
            return (
                f"I'm running fine: {', '.join(serving) or 'nothing'} {'is' if len(serving) == 1 else 'are'} serving."
            )
        problems = ", ".join(
            f"{name} is {str(state).lower().replace('_', ' ')}" for name, state in sorted(troubled.items())
        )
        return f"Not everything is well: {problems}." + (f" Serving: {', '.join(serving)}." if serving else "")
    facts: list[str] = []
    if isinstance(result, dict):
        for key, value in result.items():
            if isinstance(value, bool | int | float | str) and len(facts) < 5:
                facts.append(f"{key.replace('_', ' ')} {_number(value) if not isinstance(value, str) else value}")
    return "I'm running fine." + (" " + ", ".join(facts).capitalize() + "." if facts else "")


def _generic(tool: str, result: Any) -> str:
    if isinstance(result, str):
        return result if result else f"Done ({tool})."
    summary = json.dumps(result, ensure_ascii=False)
    if len(summary) > 300:
        summary = summary[:297] + "..."
    return f"{tool.replace('_', ' ').capitalize()} returned {summary}."


_PHRASES = {
    "get_time": _time,
    "calculate": _calculate,
    "convert_units": _converted,
    "remember": _remember,
    "recall": _recall,
    "forget": _forgotten,
    "set_timer": _timer,
    "list_timers": _timers,
    "change_timer": _changed,
    "pause_timer": lambda result, _arguments: _held_or_resumed("pause_timer", result),
    "resume_timer": lambda result, _arguments: _held_or_resumed("resume_timer", result),
    "cancel_timer": _cancelled,
    "system_status": _status,
}
