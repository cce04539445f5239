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
