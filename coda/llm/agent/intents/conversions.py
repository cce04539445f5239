"""Unit conversions: "how many feet in a mile", "180 celsius in fahrenheit"."""

from __future__ import annotations

import re
from typing import Any

from coda.llm.agent.intents.base import Intent, clean_slot, template
from coda.llm.agent.numbers import (
    fraction_quantity,
    words_to_digits,
)
from coda.tools.converter import ConversionError, convert, find_unit, is_degrees

#: "5 miles" (the unit may follow the digits directly: "5km"), "an hour", "one pound".
_QUANTITY = re.compile(r"^(?P<value>-?\d[\d,]*(?:\.\d+)?|-?\.\d+|an?|one)(?![\d,.])\s*(?P<unit>\S.*)$")


#: A measure said in two units, the larger first: (how many of the smaller in one, the smaller's name).
_COMPOUND_UNITS = {"foot": (12, "inches"), "feet": (12, "inches"), "ft": (12, "inches"), "pound": (16, "ounces"),
                   "pounds": (16, "ounces"), "lb": (16, "ounces"), "lbs": (16, "ounces"), "stone": (14, "pounds"),
                   "st": (14, "pounds")}  # fmt: skip
_COMPOUND = re.compile(
    r"^(?P<big>\d+(?:\.\d+)?) ?(?P<unit>foot|feet|ft|pounds?|lbs?|stone|st)(?: and)? (?P<small>\d+(?:\.\d+)?)"
    r"(?: ?(?:inches|inch|in|ounces|ounce|oz|pounds?|lbs?))?$"
)


def spoken_quantity(text: str) -> tuple[float, str] | None:
    """The amount and the unit of "5 miles", "an hour", "twenty kg"."""
    said = words_to_digits(text.strip().lower())
    said = re.sub(r"^(?:minus|negative) (?=\d)", "-", said)  # "minus 10 celsius"
    fraction = fraction_quantity(said)  # "half a pound", "one and a half cups"
    if fraction is not None:
        return fraction
    compound = _COMPOUND.match(said)  # "5 foot 10", "2 pounds 3 ounces", "11 stone 4"
    if compound is not None:
        big, small = float(compound["big"]), float(compound["small"] or 0)
        return big * _COMPOUND_UNITS[compound["unit"]][0] + small, _COMPOUND_UNITS[compound["unit"]][1]
    found = _QUANTITY.match(said)
    if found is None:
        return None
    value = found["value"].replace(",", "")
    return (1.0 if value in ("a", "an", "one") else float(value)), found["unit"]


def conversion_arguments(value: float, source: str, target: str) -> dict[str, Any] | None:
    """`convert_units` arguments when both are units that convert into each other, else None."""
    source, target = clean_slot(source), re.sub(r"^(?:terms of |the )", "", clean_slot(target))
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


@template(
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
