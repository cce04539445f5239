"""Timers, alarms and reminders: set, ask about, change and cancel them."""

from __future__ import annotations

import re
from typing import Any

from coda.llm.agent.intents.base import Intent, clean_slot, template
from coda.llm.agent.numbers import (
    clock_time,
    exact_duration,
)


@template(
    r"how (?:long|much time) (?:is|do i have) left(?: on)?(?: (?:my|the) (?P<label>[\w ,'-]+?))?(?: timers?)?",
    r"how (?:long|much time) (?:until|till|before) (?:my|the) (?P<label2>[\w ,'-]+?)?(?: ?timers?)? "
    r"(?:goes off|is done|finishes|rings|ends)",
    r"(?:what|which|how many) (?:timers|alarms|reminders) (?:do i have|have i got|are (?:set|running|there|on|going))"
    r"(?: (?:set|running|on|going|for tomorrow))?",
    r"(?:list|show)(?: me)? (?:my |the )?timers",
    r"(?:any|got any) (?:timers?|alarms?)(?: running| set| going| on| left)?",
    r"(?:is|are) (?:my|the|any) (?:(?P<label>[\w '-]+?) )?timers? (?:still )?(?:running|set|on|going|ticking)",
    r"(?:do i have|have i got|are there|is there) (?:any |a )?(?:timers?|alarms?)(?: running| set| going| on| left)?",
    r"(?:time|how long) left on (?:my|the) (?P<label3>[\w ,'-]+?)?(?: ?timers?)",
    r"how (?:long|much time) (?:is there |do i have )?(?:still )?on (?:my|the) (?P<label4>[\w ,'-]+?)(?: ?timers?)?",
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
    label = clean_slot(
        groups.get("label") or groups.get("label2") or groups.get("label3") or groups.get("label4") or ""
    )
    return Intent("list_timers", {"label": label} if label and label not in ("timer", "timers") else {})


@template(
    r"(?:cancel|stop|delete|remove|clear|turn off)(?: all)? (?:my |the |all )?(?:(?P<label>[\w ,'-]+?) )?timers?",
    r"(?:cancel|stop|delete|remove|clear|turn off|switch off)(?: all)? (?:my |the |all )?(?P<label>alarms?)"
    r"(?: for (?:tomorrow|the morning|tonight))?",
)
def _timer_cancel(match: re.Match[str]) -> Intent | None:
    label = clean_slot(match.group("label") or "")
    if re.search(r"\b(?:from|off)(?: (?:the|my|that|this))?$", label):
        return None  # "remove 2 minutes from the timer" changes it (below)
    return Intent("cancel_timer", {"label": label} if label and label not in ("all", "my", "the") else {})


# "pause the pasta timer", "put the timer on hold", "resume the timer", "start the timer again".
@template(
    r"(?P<pause>pause|hold|freeze|stop) (?:my |the |that |this )?(?:(?P<label>[\w '-]+?) )?timer(?: for (?:now|a (?:moment|minute|bit|sec(?:ond)?)))?",
    r"(?:put )?(?:my |the |that |this )?(?:(?P<label2>[\w '-]+?) )?timer (?P<pause2>on (?:hold|pause))",
    r"(?:resume|unpause|un-pause|continue|restart) (?:my |the |that |this )?(?:(?P<label3>[\w '-]+?) )?timer",
    r"(?:start|let) (?:my |the |that |this )?(?:(?P<label4>[\w '-]+?) )?timer (?:again|going again|run again|back up)",
)
def _timer_pause(match: re.Match[str]) -> Intent | None:
    groups = match.groupdict()
    if groups.get("pause") == "stop" and not re.search(r"\bfor (?:now|a )", match.group(0)):
        return None  # "stop the timer" cancels it (below); "stop the timer for a moment" holds it
    label = clean_slot(
        groups.get("label") or groups.get("label2") or groups.get("label3") or groups.get("label4") or ""
    )
    tool = "pause_timer" if groups.get("pause") or groups.get("pause2") else "resume_timer"
    return Intent(tool, {"label": label} if label else {})


_LABEL = r"(?: (?:called|named|labell?ed|for(?: the)?) (?P<label>[\w ,'-]+?))?"
_SET_REMINDER = r"(?:set|create|make|add|schedule|put in|give me) (?:a |an |me a )?reminder"
_WHICH_TIMER = r"(?:my |the |that |this )(?:(?P<label>[\w '-]+?) )?timer"


@template(
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
    label = clean_slot(groups.get("label") or "")
    if label:
        arguments["label"] = label
    if groups.get("duration"):
        arguments["seconds"] = whole(seconds)
    else:
        arguments["add_seconds"] = whole(seconds if groups.get("more") else -seconds)
    return Intent("change_timer", arguments)


# "change my alarm to 7:30", "move the alarm to 6 am": the alarm already set, at another time.
@template(
    r"(?:change|move|reset|update|push|switch|put) (?:my |the |that |this )(?:morning |wake[- ]up )?alarm "
    r"(?:to|for|until) (?P<clock>.+?)(?: instead)?",
)
def _alarm_change(match: re.Match[str]) -> Intent | None:
    clock = match.group("clock")
    alarm = _alarm_at(clock, "alarm", bool(re.search(r"\btomorrow\b", clock, re.IGNORECASE)))
    return Intent("change_timer", alarm.arguments) if alarm else None


def whole(seconds: float) -> float | int:
    return int(seconds) if seconds == int(seconds) else seconds


@template(
    rf"(?:set|start|create|make|put) (?:a |an |me a |the |it |one |another |a second |a new |one more )?timer (?:on )?(?:(?:for|of) )?"
    rf"(?P<duration>[\w .-]+?){_LABEL}",
    # The name first: "start a timer for my tea, 4 minutes".
    r"(?:set|start|create|make) (?:a |an |me a )?timer (?:for|called|named) (?:my |the )?(?P<label2>[\w '-]+?),? "
    r"(?:for )?(?P<duration>[\w .-]+?)",
    rf"(?:(?:set|start|create|make) )?(?:a |an )?(?P<duration>[\w .-]+?) timer{_LABEL}",
    # The name before "timer": "set a pizza timer for 12 minutes".
    r"(?:set|start|create|make|put on) (?:a |an |the |my |another |a second |a new |one more )?"
    r"(?P<label3>(?!(?:another|second|new|other|more)\b)[\w '-]+?) timer (?:for|of|to) (?P<duration>[\w .-]+?)",
    rf"(?:a |an )?timer,? (?:for )?(?P<duration>[\w .-]+?){_LABEL}",
    # The name and the length, no verb: "rice timer 18 minutes", "egg timer for 6 minutes".
    r"(?:a |an |my |the )?(?P<label3>(?!(?:a|an|my|the|another|second|new|other|more|set|start|pause|stop|cancel|reset|change)\b)"
    r"[\w'-]+(?: [\w'-]+)?) timer,? (?:for |of |to )?(?P<duration>[\w .-]+?)",
    r"remind me in (?P<duration>[\w .-]+?)(?: (?:to|about) (?P<label2>[\w ,'-]+))?",
    r"(?:set|create|make|give me|add) (?:a |me a )?reminder (?:for|in) (?P<duration>[\w .-]+?)"
    r"(?: (?:to|about|for) (?P<label2>[\w ,'-]+))?",
    # "put on a 2 minute timer for brushing teeth", "put a 2 minute timer on for the eggs".
    rf"put (?:on )?(?:a |an )?(?P<duration>[\w .-]+?) timer(?: on)?{_LABEL}",
    rf"(?:i need|i want|i would like|i'd like|give me|get me|can i have|can i get) (?:a |an )?timer(?:,| for| of|:|, for) "
    rf"(?P<duration>[\w .-]+?){_LABEL}",
    rf"(?:i need|i want|i would like|i'd like|give me|get me|can i have|can i get) (?:a |an )?(?P<duration>[\w .-]+?) "
    rf"timer{_LABEL}",
    r"wake me(?: up)? in (?P<duration>[\w .-]+?)",
    # The task first: "remind me to call the dentist in 15 minutes".
    rf"(?:remind me|do not let me forget|make sure i do not forget|{_SET_REMINDER}) (?:to|about) (?P<label3>[\w ,'-]+?) "
    r"in (?P<duration>[\w .-]+?)",
    # "time ten minutes for me", "count down from five minutes", "a five minute countdown".
    rf"(?:time|count down(?: from)?) (?P<duration>[\w .-]+?)(?: for me)?{_LABEL}",
    rf"(?:start |set )?(?:a |an )?(?P<duration>[\w .-]+?) countdown{_LABEL}",
    # The length, then the name: "set a 20 minute nap timer".
    r"(?:set|start|create|make|put on|give me) (?:a |an |me a )?(?P<duration>[\w .-]+?) (?P<label3>(?!timer\b)[\w'-]+) timer",
)
def _timer(match: re.Match[str]) -> Intent | None:
    seconds = exact_duration(match.group("duration"))
    if seconds is None:
        return None
    arguments: dict[str, Any] = {"seconds": whole(seconds)}
    groups = match.groupdict()
    label = groups.get("label") or groups.get("label2") or groups.get("label3")
    if label:
        arguments["label"] = clean_slot(label)
    return Intent("set_timer", arguments)


# Alarms and reminders at a time of day: a timer with `at` (the tools' clock and zone decide when).
@template(
    r"(?:set|make|create|start|put|schedule|add|give me|i want|i need|i would like) (?:an? |me an? |the |my )?"
    r"(?:alarm|wake[- ]up call) "
    r"(?:for |at |on )?(?P<clock>.+)",
    r"(?:an? )?(?:alarm|wake[- ]up call) (?:for|at) (?P<clock>.+)",
    r"wake me(?: up)? (?P<clock>(?:tomorrow |(?:on |this |next )?[a-z]+day )?(?:at|by) .+)",
    r"(?:i need to|i have to|i want to) (?:wake|get) up (?P<clock>(?:tomorrow |(?:on |this |next )?[a-z]+day )?at .+)",
    r"remind me (?P<clock>(?:tomorrow )?(?:at|by) .+?)(?: tomorrow)? (?:to|about|that i (?:need|have) to) (?P<label>.+)",
    rf"(?:remind me|do not let me forget|{_SET_REMINDER}) (?P<about>to|about) (?P<task>.+)",
)
def _alarm(match: re.Match[str]) -> Intent | None:
    groups = match.groupdict()
    if groups.get("task") is not None:
        found = _task_then_clock(groups["task"])
        if found is None:
            # "remind me to call mom" with no time: said so, not read as a call to make. "remind me
            # about the wifi password" may be a question for the memory.
            return Intent("unsupported", {"what": "set that reminder"}) if groups["about"] == "to" else None
        label, clock = found
    else:
        label, clock = clean_slot(groups.get("label") or ""), groups["clock"]
    tomorrow = bool(re.search(r"\btomorrow\b", match.group(0), re.IGNORECASE))
    waking = bool(re.search(r"\bwake\b|\bwake-up\b|\bget up\b", match.group(0), re.IGNORECASE))
    alarm = _alarm_at(clock, label or "alarm", tomorrow, waking)
    if alarm is None:
        # "remind me at in 5 minutes to stir the soup": a delay after all, said haltingly.
        delay = re.search(r"\bin (?P<duration>.+)$", clock)
        seconds = exact_duration(delay["duration"]) if delay else None
        if seconds is None or not label:
            return None
        return Intent("set_timer", {"seconds": whole(seconds), "label": label})
    return alarm


_PART_OF_DAY = re.compile(r"\b(?:tomorrow|tonight|this (?:afternoon|evening)|please|for me|today)\b", re.IGNORECASE)


#: Hours a wake-up said without am or pm means in the morning ("wake me at quarter past six" at
#: 7 am is tomorrow's 06:15, not tonight's 18:15); from 12 to 3 it may be a nap, whichever comes first.
_WAKING_HOURS = range(4, 12)


#: A day of the coming week an alarm is for: "on Friday", "this Saturday", "next Monday" (within the
#: next seven days). "on Fridays" and "every Friday" repeat, which a timer does not: not matched.
_WEEKDAY_SAID = re.compile(
    r"\b(?:on |this |this coming |coming |next )?(?P<day>monday|tuesday|wednesday|thursday|friday|saturday|sunday)\b"
    r"(?!s\b|')",
    re.IGNORECASE,
)


def _alarm_at(clock: str, label: str, tomorrow: bool, waking: bool = False) -> Intent | None:
    """A timer at the time of day `clock` says ("7am", "at half past six tomorrow", "Friday at 9"),
    or None."""
    day = _WEEKDAY_SAID.search(clock)
    if day is not None:
        clock, tomorrow = f"{clock[: day.start()]} {clock[day.end() :]}", False
    said = clock_time(_PART_OF_DAY.sub(" ", clock))
    if said is None:
        return None
    hour, minute, twelve_hour = said
    if twelve_hour and hour < 12 and re.search(r"\b(?:tonight|this (?:afternoon|evening))\b", clock, re.IGNORECASE):
        hour, twelve_hour = hour + 12, False  # "at 7:30 tonight" is 19:30
    elif twelve_hour and waking and hour in _WAKING_HOURS:
        twelve_hour = False
    arguments: dict[str, Any] = {"at": f"{hour:02d}:{minute:02d}", "label": label}
    if twelve_hour:
        arguments["twelve_hour"] = True
    if tomorrow:
        arguments["tomorrow"] = True
    if day is not None:
        arguments["weekday"] = day["day"].lower()
    return Intent("set_timer", arguments)


# A reminder said with its day first: "set a reminder for 6pm to call my sister", "create a reminder
# for tomorrow at 9 to call mom". One without a time of day ("remind me tomorrow to call mom") or on
# another day is answered as such, not read as a call to make ("call mom").
@template(
    rf"{_SET_REMINDER} (?:for |at |on )?(?P<when>.+?) "
    r"(?:to|about|that i (?:need|have) to) (?P<label>.+)",
    # "of" before the day: a word Whisper adds ("Remind me of on Friday at 9 to ...").
    r"remind me (?:of )?(?P<when>(?:tomorrow|today|tonight|later|on \w+|next \w+|this \w+)(?: (?:at|by) .+?)?) "
    r"(?:to|about|that i (?:need|have) to) (?P<label>.+)",
)
def _reminder(match: re.Match[str]) -> Intent:
    when, label = match["when"], clean_slot(match["label"])
    tomorrow = bool(re.search(r"\btomorrow\b", when, re.IGNORECASE))
    alarm = _alarm_at(when, label, tomorrow)
    if alarm is None:  # the time after the task: "remind me on Friday to call the bank at 9"
        found = _task_then_clock(label)
        alarm = _alarm_at(f"{when} {found[1]}", found[0], tomorrow) if found else None
    return alarm or Intent("unsupported", {"what": "set that reminder"})


def _task_then_clock(text: str) -> tuple[str, str] | None:
    """ "call the bank at 9 tomorrow" -> ("call the bank", "at 9 tomorrow"): tried from the last
    "at", since a task may have one of its own ("look at the car at 5")."""
    words = text.split()
    for i in range(len(words) - 1, 0, -1):
        if words[i].lower() in ("at", "by") and clock_time(
            _WEEKDAY_SAID.sub(
                " ", re.sub(r"\b(?:tomorrow|please|today)\b", " ", " ".join(words[i + 1 :]), flags=re.IGNORECASE)
            )
        ):
            task = " ".join(word for word in words[:i] if word.lower() != "tomorrow")
            clock = " ".join(words[i:])
            day = _WEEKDAY_SAID.search(task)
            if day is not None and not task[day.end() :].strip():  # "call the bank on Friday at 9"
                task, clock = task[: day.start()], f"{day.group(0)} {clock}"
            return clean_slot(task), clock
    return None
