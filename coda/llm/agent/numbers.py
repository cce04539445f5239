"""Numbers in words: "twelve times seven" -> "12*7", "an hour and a half" -> 5400 seconds."""

from __future__ import annotations

import ast
import re

_UNITS = {
    "zero": 0, "oh": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
_TENS = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
}  # fmt: skip
_SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
_NUMBER_WORDS = set(_UNITS) | set(_TENS) | set(_SCALES)

# Longest phrases first so that "multiplied by" wins over "by".
_OPERATORS: list[tuple[str, str]] = [
    (r"to the power of", "**"),
    (r"multiplied by", "*"),
    (r"divided by", "/"),
    (r"times", "*"),
    (r"plus", "+"),
    (r"minus", "-"),
    (r"over", "/"),
    (r"x", "*"),
    ("\u00d7", "*"),
    ("\u00f7", "/"),
    (r"mod(?:ulo)?", "%"),
]
_EXPRESSION_CHARS = re.compile(r"^[\d\s.+\-*/%()]+$")
#: A number written in digits ("84", "-3", "2.5").
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


_DOZEN = re.compile(r"\b(?:(?P<half>half a)|a|one|(?P<count>\d+))\s+dozen\b", re.IGNORECASE)


#: A thousands separator: "1,500" is 1500 ("4, 8" keeps its comma).
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")


def words_to_digits(text: str) -> str:
    """Replace runs of number words by digits: "twenty one apples" -> "21 apples", "a dozen" -> "12",
    "1,500" -> "1500"."""
    text = _THOUSANDS.sub("", _words_to_digits(text))
    return _DOZEN.sub(lambda m: "6" if m["half"] else str(12 * int(m["count"] or 1)), text)


def _words_to_digits(text: str) -> str:
    tokens = text.split()
    out: list[str] = []
    i = 0
    while i < len(tokens):
        value, used = _read_number(tokens, i)
        if used:
            out.append(str(value))
            i += used
        else:
            out.append(tokens[i])
            i += 1
    return " ".join(out)


def _read_number(tokens: list[str], start: int) -> tuple[int, int]:
    total, current, used = 0, 0, 0
    i = start
    while i < len(tokens):
        word = tokens[i].replace("-", " ")
        if " " in word:  # "twenty-one"
            parts = word.split()
            if all(p in _NUMBER_WORDS for p in parts):
                sub, _ = _read_number(parts, 0)
                current += sub
                i += 1
                used = i - start
                continue
            break
        if word in _UNITS:
            current += _UNITS[word]
        elif word in _TENS:
            current += _TENS[word]
        elif word in _SCALES:
            scale = _SCALES[word]
            if scale == 100:
                current = (current or 1) * 100
            else:
                total += (current or 1) * scale
                current = 0
        elif word == "and" and used and i + 1 < len(tokens) and tokens[i + 1] in _NUMBER_WORDS:
            pass
        else:
            break
        i += 1
        used = i - start
    return total + current, used


_AMOUNT = r"(\d+(?:\.\d+)?)"
_PERCENT = rf"{_AMOUNT}\s*(?:percent|per cent|%)"


def arithmetic_expression(text: str) -> str | None:
    """The arithmetic expression a phrase states, or None when it is not plain arithmetic."""
    text = text.lower().strip().rstrip("?.!").strip()
    text = words_to_digits(text)
    text = re.sub(r"^(?:a|an|the)\s+", "", text)
    # Money is arithmetic on its amounts: "$64", "64 dollars", "£20".
    text = re.sub(r"[$£€]\s*(?=\d)", "", text)
    text = re.sub(r"(?<=\d)\s*(?:dollars?|bucks|euros?|pounds?|quid|usd|eur|gbp)\b", "", text)
    text = re.sub(rf"{_PERCENT}\s+of\s+{_AMOUNT}", r"(\1/100*\2)", text)
    # "a 15% tip on 64", "20% off 50", "64 plus a 15% tip", "80 minus 25%".
    text = re.sub(
        rf"{_PERCENT}\s+(?:tip|gratuity|tax|vat|service(?: charge)?)\s+(?:on|of|for)\s+{_AMOUNT}", r"(\1/100*\2)", text
    )
    text = re.sub(rf"{_PERCENT}\s+off(?:\s+of)?\s+{_AMOUNT}", r"(\2-\1/100*\2)", text)
    text = re.sub(
        rf"{_AMOUNT}\s+(?:plus|with|and|\+)\s+(?:an?\s+)?{_PERCENT}(?:\s+(?:tip|gratuity|tax|vat))?$",
        r"(\1+\2/100*\1)",
        text,
    )
    text = re.sub(
        rf"{_AMOUNT}\s+(?:minus|less|-)\s+(?:an?\s+)?{_PERCENT}(?:\s+(?:discount|off))?$", r"(\1-\2/100*\1)", text
    )
    text = re.sub(r"(?:the )?square root of\s+(\d+(?:\.\d+)?)", r"(\1**0.5)", text)
    text = re.sub(r"(\d+(?:\.\d+)?|\))\s+squared", r"\1**2", text)
    text = re.sub(r"(\d+(?:\.\d+)?|\))\s+cubed", r"\1**3", text)
    for phrase, symbol in _OPERATORS:
        text = re.sub(rf"(?<![a-z]){phrase}(?![a-z])", f" {symbol} ", text)
    text = text.replace("^", "**")
    expression = re.sub(r"\s+", "", text)
    if not expression or not _EXPRESSION_CHARS.match(expression):
        return None
    if not re.search(r"\d", expression) or not re.search(r"[+\-*/%]", expression.lstrip("-")):
        return None
    try:  # "30%" alone, "5+": not an expression the calculator could read
        ast.parse(expression, mode="eval")
    except SyntaxError:
        return None
    return expression


_UNIT_SECONDS = {"second": 1, "sec": 1, "s": 1, "minute": 60, "min": 60, "m": 60, "hour": 3600, "hr": 3600, "h": 3600}
_FRACTIONS = {"half": 0.5, "quarter": 0.25, "quarters": 0.25}
#: One amount of one unit: "5 minutes", "an hour", "2 and a half minutes", "a quarter of an hour",
#: "3 quarters of an hour", "half a minute"; an "and a half" after the unit is handled below.
_FRACTION = (
    r"(?P<number>\d+(?:\.\d+)?)(?: and (?:a |1 )?(?P<and_fraction>half|quarter|3 quarters))?"
    r"|(?:(?P<count>a|an|1|3|one|three) )?(?P<fraction>half|quarters?)(?: of)?(?: an?| the)?"
)
_DURATION_PART = re.compile(rf"\b(?:{_FRACTION}|an?)\s*(?P<unit>hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s)\b")
#: An amount with a fraction before a unit: "2 and a half cups", "half a pound", "3 quarters of a mile".
_FRACTION_QUANTITY = re.compile(
    r"^(?:(?P<number>\d+(?:\.\d+)?) and (?:a |1 )?(?P<and_fraction>half|quarter|3 quarters)"
    r"|(?:(?P<count>a|an|1|3|one|three) )?(?P<fraction>half|quarters?)(?: of)?(?: an?| the)?) (?P<unit>\S.*)$"
)


def fraction_quantity(text: str) -> tuple[float, str] | None:
    """(amount, unit) of "2 and a half cups" (2.5, "cups") or "half a pound" (0.5, "pound"), in digits
    already (`words_to_digits`); None for an amount without a fraction."""
    found = _FRACTION_QUANTITY.match(text)
    return (_amount(found), found["unit"]) if found else None


def _amount(part: re.Match[str]) -> float:
    if part["number"]:
        extra = part["and_fraction"] or ""
        return float(part["number"]) + (0.75 if extra.startswith("3") else _FRACTIONS.get(extra, 0.0))
    if part["fraction"]:
        count = 3 if part["count"] in ("3", "three") else 1
        return count * _FRACTIONS[part["fraction"]]
    return 1.0  # "a minute", "an hour"


def duration_seconds(text: str) -> float | None:
    """Seconds in a spoken duration: "5 minutes", "an hour and a half", "1h 30m", "ninety seconds",
    "two and a half minutes", "a quarter of an hour"."""
    text = words_to_digits(text.lower())
    total = 0.0
    found = False
    for part in _DURATION_PART.finditer(text):
        unit = part["unit"]
        base = unit.rstrip("s") if unit != "s" else unit
        total += _amount(part) * _UNIT_SECONDS.get(base, _UNIT_SECONDS.get(unit, 0))
        found = True
    half = re.search(r"(hours?|minutes?)\s+and\s+a\s+half", text)
    if half:
        total += 0.5 * _UNIT_SECONDS[half.group(1).rstrip("s")]
    return total if found and total > 0 else None


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


def _hour_then_minutes(text: str) -> str:
    """ "seven thirty pm" -> "7:30 pm": the hour is read on its own, or "seven thirty" would be 37."""
    words = text.split()
    if len(words) < 2 or not 1 <= _UNITS.get(words[0], 0) <= 12:
        return text
    for size in (2, 1):
        minute = words_to_digits(" ".join(words[1 : 1 + size]).replace("o ", "oh "))
        if len(words) > size and minute.isdigit() and int(minute) < 60 and len(minute.split()) == 1:
            return " ".join([f"{_UNITS[words[0]]}:{int(minute):02d}", *words[1 + size :]])
    return text


_HALF_DAY = re.compile(
    r"\s*(?P<am>a\.? ?m\.?|in the morning|this morning|tomorrow morning|morning)\b"
    r"|\s*(?P<pm>p\.? ?m\.?|in the (?:afternoon|evening)|at night|tonight|this (?:afternoon|evening)|"
    r"tomorrow (?:afternoon|evening|night))\b"
)


def clock_time(text: str) -> tuple[int, int, bool] | None:
    """(hour, minute, said on a 12-hour clock without am or pm) of a time of day: "7", "7am",
    "seven thirty", "6:45 pm", "19:00", "half past seven", "quarter to 8", "noon", "7 in the morning"."""
    text = text.lower().replace("o'clock", "").replace("oclock", "").strip(" ,.")
    text = _hour_then_minutes(re.sub(r"^(?:at|for|by|on) ", "", text))
    text = words_to_digits(text).strip(" ,.")
    if text in ("noon", "midday", "12 noon"):
        return 12, 0, False
    if text == "midnight":
        return 0, 0, False
    half = _HALF_DAY.search(text)
    if half:
        text = (text[: half.start()] + text[half.end() :]).strip(" ,.")
    relative = re.fullmatch(r"(?:(?P<half>half)|(?:a )?(?P<quarter>quarter)|(?P<minutes>\d{1,2})(?: minutes?)?) "
                            r"(?P<way>past|after|to|before) (?P<hour>\d{1,2})", text)  # fmt: skip
    if relative:
        minutes = 30 if relative["half"] else 15 if relative["quarter"] else int(relative["minutes"])
        hour = int(relative["hour"])
        if relative["way"] in ("to", "before"):
            hour, minutes = (hour - 1) % 24, 60 - minutes
        clock = (hour, minutes) if minutes < 60 else None
        twelve = True
    else:
        # "7:30", "7.30", "7 30", and "730" or "1030" as Whisper writes a spoken time.
        plain = re.fullmatch(r"(?P<hour>\d{1,2})(?:(?:[:.]| )?(?P<minute>[0-5]\d))?", text)
        if not plain:
            return None
        clock = (int(plain["hour"]), int(plain["minute"] or 0))
        # "07:30", "19:00", "0:15" are a 24-hour clock; "7", "7:30", "seven thirty" may be either.
        twelve = 1 <= clock[0] <= 12 and not plain["hour"].startswith("0")
    hour, minute = clock or (24, 0)
    if hour > 23 or minute > 59:
        return None
    if half and hour <= 12:
        return (hour % 12 + (12 if half["pm"] else 0)), minute, False
    return hour, minute, twelve


MONTHS = ("january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
           "november", "december")  # fmt: skip
#: Days of the year that have a name, as MM-DD (the ones whose date never moves).
NAMED_DAYS = {
    "christmas": "12-25", "christmas day": "12-25", "xmas": "12-25", "christmas eve": "12-24", "boxing day": "12-26",
    "new year": "01-01", "new year's day": "01-01", "new years day": "01-01", "new years": "01-01",
    "new year's eve": "12-31", "new years eve": "12-31", "the end of the year": "12-31", "the end of this year": "12-31",
    "halloween": "10-31", "valentine's day": "02-14",
    "valentines day": "02-14", "valentines": "02-14", "st patrick's day": "03-17", "saint patrick's day": "03-17",
    "independence day": "07-04", "the fourth of july": "07-04", "bonfire night": "11-05", "guy fawkes night": "11-05",
}  # fmt: skip
_ORDINAL_WORDS = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8, "ninth": 9,
    "tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13, "fourteenth": 14, "fifteenth": 15,
    "sixteenth": 16, "seventeenth": 17, "eighteenth": 18, "nineteenth": 19, "twentieth": 20, "thirtieth": 30,
}  # fmt: skip
_MONTH = r"(?P<month>[a-z]{3,9})\.?"
_DAY = r"(?P<day>\d{1,2})(?:st|nd|rd|th)?"
_YEAR = r"(?:,? (?P<year>\d{4}))?"
#: "the 25th of december 2027", "december the 25th".
_CALENDAR = (
    re.compile(rf"^(?:the )?{_DAY} (?:of )?{_MONTH}{_YEAR}$"),
    re.compile(rf"^{_MONTH} (?:the )?{_DAY}{_YEAR}$"),
)


def _ordinals_to_digits(text: str) -> str:
    """ "the twenty fifth" -> "the 25", "third" -> "3"."""

    def tens_and_unit(found: re.Match[str]) -> str:
        return str(_ORDINAL_WORDS[found["unit"]] + (20 if found["tens"] == "twenty" else 30))

    text = re.sub(r"\b(?P<tens>twenty|thirty)[ -](?P<unit>first|second|third|fourth|fifth|sixth|seventh|eighth|ninth)\b",
                  tens_and_unit, text)  # fmt: skip
    return re.sub(r"\b(" + "|".join(_ORDINAL_WORDS) + r")\b", lambda m: str(_ORDINAL_WORDS[m[1]]), text)


def calendar_day(text: str) -> str | None:
    """ "christmas" -> "12-25", "the 4th of july" -> "07-04", "march 3rd 2027" -> "2027-03-03": a day as
    get_time's `date` takes it; None for anything else (including impossible days)."""
    phrase = " ".join(text.lower().replace("\u2019", "'").strip(" ?!.,").split())
    phrase = re.sub(r"^(?:this|next|the next) ", "", phrase)
    if phrase in NAMED_DAYS:
        return NAMED_DAYS[phrase]
    phrase = _ordinals_to_digits(phrase)
    found = _CALENDAR[0].match(phrase) or _CALENDAR[1].match(phrase)
    if found is None:
        return None
    word = found["month"].replace("sept", "sep")
    month = next((i for i, name in enumerate(MONTHS, 1) if name.startswith(word)), 0)
    if not month:
        return None
    day = int(found["day"])
    if not 1 <= day <= (29 if month == 2 else 30 if month in (4, 6, 9, 11) else 31):
        return None
    return (f"{found['year']}-" if found["year"] else "") + f"{month:02d}-{day:02d}"
