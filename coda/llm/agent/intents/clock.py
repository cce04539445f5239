"""The clock: the time here or anywhere, the date of another day, a calendar day, the time difference
between two places (all served by `get_time`)."""

from __future__ import annotations

import re

from coda.llm.agent.intents.base import Intent, clean_slot, template
from coda.llm.agent.numbers import (
    calendar_day,
    clock_time,
    exact_duration,
    words_to_digits,
)
from coda.llm.agent.places import time_zone_for
from coda.tools.builtin.clock import WEEKDAYS

_DAYS_AWAY = {"tomorrow": 1, "yesterday": -1, "the day after tomorrow": 2, "the day before yesterday": -2}
_ANOTHER_DAY = (
    r"(?P<when>tomorrow|yesterday|the day after tomorrow|the day before yesterday|in [\w ]+? (?:days?|weeks?|months?|years?)|"
    r"[\w ]+? (?:days?|weeks?|months?|years?) (?:ago|from (?:now|today))|(?:a|one) (?:week|month|year) (?:from )?today|"
    r"next week|(?:next |this (?:coming )?|on )?(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday))"
)


@template(
    rf"what (?:is|was|will be) (?:the )?(?:date|day)(?: of the week)?(?: going to be| gonna be)? {_ANOTHER_DAY}",
    rf"what (?:date|day)(?: of the (?:week|month))? (?:is it|is|was it|was|will it be|will be|would it be) {_ANOTHER_DAY}",
    rf"(?:what is |what was |what will be |tell me |give me )?{_ANOTHER_DAY}(?:'s| is) (?:date|day)(?: of the week)?",
    rf"what date (?:is|will it be|was it|does|do) {_ANOTHER_DAY}(?: fall on| land on| be)?",
    rf"(?:what is |tell me )?the date {_ANOTHER_DAY}",
    rf"what (?:will|would) (?:the )?(?:date|day)(?: of the week)? be {_ANOTHER_DAY}",
    rf"what (?:date|day) (?:will|would) it be {_ANOTHER_DAY}",
)
def _another_day(match: re.Match[str]) -> Intent | None:
    when = words_to_digits(match.group("when").lower())
    if when in _DAYS_AWAY:
        return Intent("get_time", {"days": _DAYS_AWAY[when]})
    if when in ("next week", "a week today", "one week today", "a week from today", "one week from today"):
        return Intent("get_time", {"days": 7})
    day = re.sub(r"^(?:next|this|this coming|on) ", "", when)
    if day in WEEKDAYS:
        return Intent("get_time", {"weekday": day})
    count = re.fullmatch(
        r"(?:in )?(?P<n>\d+|a|an|one|half a) (?P<unit>day|week|month|year)s?(?P<ago> ago)?(?: from (?:now|today)| today)?",
        when,
    )
    if count is None:
        return None
    n = 1 if count["n"] in ("a", "an", "one") else 0.5 if count["n"] == "half a" else int(count["n"])
    sign = -1 if count["ago"] else 1
    if count["unit"] in ("month", "year"):  # calendar months: "a month from now" is the same day next month
        months = n * (12 if count["unit"] == "year" else 1)
        return Intent("get_time", {"months": sign * int(months)}) if months == int(months) else None
    days = n * (7 if count["unit"] == "week" else 1)
    return Intent("get_time", {"days": sign * int(days)}) if days == int(days) else None


# "what's the time difference between London and Tokyo": Tokyo's hours ahead of London.
@template(
    r"(?:what is )?the time difference between (?P<b>[\w .'-]+?) and (?P<a>[\w .'-]+?)",
    r"how many hours (?:ahead|behind) (?:of )?(?P<b>[\w .'-]+?) is (?P<a>[\w .'-]+?)",
    r"how (?:far|many hours) (?:ahead|behind) is (?P<a>[\w .'-]+?) (?:of|from) (?P<b>[\w .'-]+?)",
    r"is (?P<a>[\w .'-]+?) (?:ahead of|behind) (?P<b>[\w .'-]+?)",
)
def _time_difference(match: re.Match[str]) -> Intent | None:
    first, second = (time_zone_for(clean_slot(match.group(g))) for g in ("a", "b"))
    if "/" not in first or "/" not in second:
        return None  # not two places the agent knows: left to the model
    return Intent("get_time", {"timezone": first, "compared_with": second})


_CLOCK = r"(?P<clock>[\w:. ]+?)"
_THERE = r"(?P<b>[\w .'-]+?)"
_HERE = r"(?P<a>[\w .'-]+?)"


# A time of day somewhere, read in another place: "when it's 9am in New York, what time is it in Tokyo?"
@template(
    rf"(?:when|if) it is {_CLOCK} in {_THERE},? what (?:time is it|is the time|time will it be|time would it be) "
    rf"in {_HERE}",
    rf"what (?:time is it|is the time|time will it be|time would it be) in {_HERE},? (?:when|if) it is {_CLOCK} in {_THERE}",
    rf"what is {_CLOCK} {_THERE} time in {_HERE}(?: time)?",
    rf"(?:convert )?{_CLOCK} {_THERE} time (?:to|in) {_HERE}(?: time)?",
    rf"{_CLOCK} in {_THERE} is what time in {_HERE}",
)
def _time_there_at(match: re.Match[str]) -> Intent | None:
    first = time_zone_for(clean_slot(match.group("a")))
    # "9:30 am tokyo time", "half past nine in the morning in New York": where the time ends and
    # the place begins, the longest time first.
    words = match.string[match.start("clock") : match.end("b")].split()
    for split in range(len(words) - 1, 0, -1):
        place = clean_slot(re.sub(r"^in ", "", " ".join(words[split:])))
        clock, second = clock_time(" ".join(words[:split])), time_zone_for(place)
        if clock is not None and "/" in second and "/" in first:
            hour, minute, _ = clock  # "9" is read as said (09:00); the answer says which
            return Intent("get_time", {"timezone": first, "compared_with": second, "at": f"{hour:02d}:{minute:02d}"})
    return None


# A day of the calendar: "how many days until christmas", "what day of the week is the 25th of december".
@template(
    r"how many (?:more )?(?:days|sleeps|weeks) (?:are there |is it |are left |left |to go )?(?:until|till|til|to|before) "
    r"(?P<day>.+)",
    r"how (?:long|far away) (?:is it |is there )?(?:until|till|til|to) (?P<day>.+)",
    r"what day (?:of the week )?(?:is|will be|(?P<past>was|did)|does|falls on) (?P<day>.+?)(?: fall on| land on| be| on| this year)?",
    r"(?:when|what date) is (?P<day>.+?)(?: this year)?",
    r"(?:on )?what day (?:of the week )?(?:is|does) (?P<day>.+?) (?:fall|land)(?: on)?(?: this year)?",
    # Since a day gone by: "how many days since new year's day", "how long ago was halloween".
    r"how many (?:days|weeks) (?P<past>has it been|have passed|have gone by|is it|has it|ago was|ago did|since)"
    r"(?: since)? (?P<day>.+?)(?: happen)?",
    r"how (?:long|many days) (?P<past>ago was|has it been since|is it since|since) (?P<day>.+)",
)
def _calendar_day(match: re.Match[str]) -> Intent | None:
    said = match.group("day")
    past = bool(match.groupdict().get("past"))
    weekday = re.sub(r"^(?:next|this|this coming|on|last) ", "", clean_slot(said).lower())
    if not past and (weekday in WEEKDAYS or weekday == "the weekend"):  # "how many days until friday / the weekend"
        return Intent("get_time", {"weekday": "saturday" if weekday == "the weekend" else weekday})
    day = calendar_day(said)
    if day is None:
        return None
    return Intent("get_time", {"date": day, "past": True} if past and len(day) == 5 else {"date": day})


# The time some minutes or hours from now, or ago: "what time will it be in 45 minutes".
@template(
    r"what (?:time )?(?:will|would) (?:it|the time) be (?:in|after) (?P<later>.+?)(?: from now)?",
    r"what time (?:is it going to|is it gonna) be (?:in|after) (?P<later>.+?)(?: from now)?",
    r"what(?: is| will be)? the time (?:in|after) (?P<later>.+?) from now",
    r"what time (?:was it|was) (?P<ago>.+?) ago",
)
def _time_from_now(match: re.Match[str]) -> Intent | None:
    groups = match.groupdict()
    seconds = exact_duration(groups.get("later") or groups.get("ago") or "")
    if seconds is None or not 60 <= seconds <= 7 * 86400:
        return None
    minutes = round(seconds / 60)
    return Intent("get_time", {"minutes": -minutes if groups.get("ago") else minutes})


# "how many days are left in the year": to its last day.
@template(r"how many (?:more )?(?:days|weeks) (?:are |is )?(?:there )?(?:left|remaining) in (?:the|this) year")
def _rest_of_year(match: re.Match[str]) -> Intent:
    return Intent("get_time", {"date": "12-31"})


# A place and "time", no verb: "Paris time", "the time in Paris" is above. Only a place the agent
# knows: "bed time", "screen time" and "dinner time" are not.
@template(r"(?:what is |what's )?(?:the )?(?:current |local )?(?P<place>[\w .'-]+?) time(?: now| right now| today)?")
def _place_time(match: re.Match[str]) -> Intent | None:
    zone = time_zone_for(clean_slot(match.group("place")))
    return Intent("get_time", {"timezone": zone}) if "/" in zone else None


# Whether tomorrow is a weekday: the date of tomorrow says it ("Tomorrow is Monday, ...").
@template(
    r"(?:is|will) tomorrow (?:be )?(?:a |the )?(?:weekday|week day|weekend|working day|work day|workday|school day|"
    r"monday|tuesday|wednesday|thursday|friday|saturday|sunday)",
    r"what (?:day|weekday) (?:is|will be|is it) tomorrow",
)
def _tomorrow_kind(_: re.Match[str]) -> Intent:
    return Intent("get_time", {"days": 1})


#: The place of "what time is it where I live?": the agent finds it in what the user said or it recalls.
HOME = "where the user lives"


_PLACE = (
    r"(?: right)?(?: now)?(?: (?:over |out )?(?P<preposition>in|at|for) (?P<place>[\w .,'/-]+?))?(?: right now| now)?"
)


@template(
    rf"what (?:time is it|is the time|is the current time|time is it now|time it is){_PLACE}",
    rf"(?:tell me )?the (?:current )?time{_PLACE}",
    rf"(?:current )?time{_PLACE}",
    r"what time is it (?:over |out )?(?:in|at) (?P<place2>[\w .,'/-]+)",
    rf"how late is it{_PLACE}",
    rf"(?:do you have|have you got|you got|got|know) the time{_PLACE}",
    r"(?:what is|tell me) the (?:date|day)(?: today)?" + _PLACE,
    r"(?:what is |tell me )?today's (?:date|day)" + _PLACE,
    r"what (?:day|date) is (?:it|today)(?: today)?" + _PLACE,
    r"what (?:month|year) is it(?: now| today)?" + _PLACE,
    r"is it (?:day|daytime|day time|night|nighttime|night time|morning|afternoon|evening|dark|light|late) "
    r"(?:yet |already |now )?(?:over |out )?(?P<preposition>in|at) (?P<place>[\w .,'/-]+?)(?: right now| now| yet)?",
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
    if place and clean_slot(place).lower() in ("home", "my home", "my place", "my city", "my town", "my hometown"):
        return Intent("get_time", {"timezone": HOME})
    if place:
        zone = time_zone_for(clean_slot(place))
        if groups.get("preposition") == "for" and zone == clean_slot(place) and "/" not in zone:
            return None  # "time for bed", "time for a break": not a place the agent knows
        return Intent("get_time", {"timezone": zone})
    return Intent("get_time", {})
