"""Arithmetic: "what is twelve times seven", "add 5 and 7"."""

from __future__ import annotations

import re

from coda.llm.agent.intents.base import Intent, template
from coda.llm.agent.numbers import (
    NUMBER,
    arithmetic_expression,
    words_to_digits,
)


@template(
    r"(?:add|(?:what is )?the sum of|sum) (?P<left>[\w .]+?) (?P<op>and|to|plus) (?P<right>[\w .]+?)(?: together)?",
    r"(?P<op>multiply) (?P<left>[\w .]+?) (?:and|by|with) (?P<right>[\w .]+?)",
    r"(?P<op>divide) (?P<left>[\w .]+?) (?:by|into) (?P<right>[\w .]+?)",
    # "split 120 between 4 people", "share 90 dollars among 3 of us": an even share.
    r"(?P<op>split|share|divide)(?: up)? (?:[$£€])?(?P<left>[\d.,]+|[a-z -]+?)(?: (?:dollars|euros|pounds|bucks|quid))? "
    r"(?:between|among|amongst|across|by|with|for) (?P<right>\d+|[a-z-]+?)(?: (?:people|persons|ways|of us|friends|guests))?",
    # "split a 90 dollar bill three ways".
    r"(?P<op>split|share|divide)(?: up)? (?:a |an |the |our |my )?(?:[$£€])?(?P<left>[\d.,]+|[a-z -]+?)"
    r"(?: (?:dollars?|euros?|pounds?|bucks|quid))?(?: (?:bill|check|cheque|tab|total|meal|dinner|pizza))? "
    r"(?P<right>\d+|[a-z-]+?) ways",
    # The second number first: "subtract 18 from 50" is 50 - 18.
    r"(?P<op>subtract|take|take away|deduct) (?P<right>[\w .]+?) (?:away )?from (?P<left>[\w .]+?)",
)
def _two_numbers(match: re.Match[str]) -> Intent | None:
    left = words_to_digits(match.group("left")).strip().replace(",", "")
    right = words_to_digits(match.group("right")).strip()
    if not NUMBER.fullmatch(left) or not NUMBER.fullmatch(right):
        return None  # "add eggs to my list", "multiply the cost by two"
    operator = {"multiply": "*", "divide": "/", "split": "/", "share": "/"}.get(match.group("op").lower(), "+")
    if match.group("op").lower() in ("subtract", "take", "take away", "deduct"):
        operator = "-"
    return Intent("calculate", {"expression": f"{left}{operator}{right}"})


# "what percentage is 30 of 120", "30 is what percent of 120": a share as a percentage.
@template(
    r"what (?:percentage|percent|per cent) (?:is|of) (?P<part>[\w.,]+?) (?:is )?(?:of|out of) (?P<whole>[\w.,]+?)",
    r"(?P<part>[\w.,]+?) is what (?:percentage|percent|per cent) of (?P<whole>[\w.,]+?)",
    r"(?:what is |express )?(?P<part>[\w.,]+?) (?:out of|over) (?P<whole>[\w.,]+?) as a percentage",
)
def _percentage(match: re.Match[str]) -> Intent | None:
    part, whole = (words_to_digits(match.group(g)).strip().replace(",", "") for g in ("part", "whole"))
    if not NUMBER.fullmatch(part) or not NUMBER.fullmatch(whole):
        return None
    return Intent("calculate", {"expression": f"({part}/{whole}*100)"})


# "what's the average of 4, 8 and 15": their sum over their count.
@template(r"(?:what is |calculate |work out )?(?:the )?(?:average|mean) of (?P<numbers>[\d.,\w ]+?)")
def _average(match: re.Match[str]) -> Intent | None:
    said = words_to_digits(match.group("numbers"))
    numbers = [n for n in re.split(r"\s*(?:,|\band\b|&)\s*", said) if n]
    if len(numbers) < 2 or not all(NUMBER.fullmatch(n.strip()) for n in numbers):
        return None
    return Intent("calculate", {"expression": f"({'+'.join(n.strip() for n in numbers)})/{len(numbers)}"})


_ROUNDING = {"whole number": 0, "integer": 0, "one": 0, "unit": 0, "ten": -1, "hundred": -2, "thousand": -3}


# "round 3.14159 to two decimal places", "round 1234 to the nearest hundred", "pi to 3 decimal places".
@template(
    r"round (?P<x>-?[\d.,]+|[a-z -]+?) to (?P<places>\d+|[a-z]+) (?:decimal places?|decimals?|dp|places?"
    r"|digits? after the (?:decimal )?point)",
    r"(?:what is |tell me |give me )?(?P<x>pi|-?[\d.,]+) (?:to|rounded to) (?P<places>\d+|[a-z]+) (?:decimal places?|decimals?"
    r"|dp|places?|digits? after the (?:decimal )?point)",
    r"round (?P<x>-?[\d.,]+|[a-z -]+?)(?: (?:off|up or down))?(?: to the nearest (?P<nearest>whole number|integer|one|unit|"
    r"ten|hundred|thousand))?",
)
def _round(match: re.Match[str]) -> Intent | None:
    x = words_to_digits(match.group("x")).strip().replace(",", "")
    if not NUMBER.fullmatch(x) and x != "pi":
        return None
    groups = match.groupdict()
    if groups.get("places"):
        places = words_to_digits(groups["places"]).strip()
        places = "1" if places in ("a", "one") else places
        if not places.isdigit():
            return None
        digits = int(places)
    else:
        digits = _ROUNDING[(groups.get("nearest") or "whole number").lower()]
    return Intent("calculate", {"expression": f"round({x}, {digits})" if digits else f"round({x})"})


_CONTINUATION = re.compile(
    r"(?:and |then |now )*(?:plus|minus|times|multiplied by|divided by|over|take away)\b", re.IGNORECASE
)


@template(
    r"(?:what is|what are|how much is|how much are|calculate|compute|work out|evaluate|solve)"
    r"(?: the value of)? (?P<expression>.+?)(?: equal| equals)?",
    r"(?P<expression>.+?)(?: =)?",  # bare arithmetic: "twelve times seven"
)
def _calculate(match: re.Match[str]) -> Intent | None:
    if _CONTINUATION.match(match.group("expression")):
        return None  # "plus one?" continues the last result (a follow-up), it is not "+1" on its own
    expression = arithmetic_expression(match.group("expression"))
    return Intent("calculate", {"expression": expression}) if expression else None
