"""Word error rate, for the round-trip tests and the benchmark.

Both texts are normalised the way speech-recognition evaluations usually do, so that only what was
heard counts, not how it was written: case and punctuation are dropped, numbers written as digits
are read as words ("12" -> "twelve", as Whisper writes what pocketsphinx spells), and American
spellings of the few British words the assistant's sentences use are mapped to one form.
"""

from __future__ import annotations

import re

_ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
#: One spelling for words both spellings of English write differently.
_SPELLING = {"favorite": "favourite", "color": "colour", "colors": "colours", "gray": "grey", "okay": "ok"}


def _spoken(n: int) -> list[str]:
    """English words of 0 <= n < 1,000,000 ("one hundred twenty three", no "and")."""
    if n < 20:
        return [_ONES[n]]
    if n < 100:
        return [_TENS[n // 10]] + ([_ONES[n % 10]] if n % 10 else [])
    if n < 1000:
        return [_ONES[n // 100], "hundred"] + (_spoken(n % 100) if n % 100 else [])
    return _spoken(n // 1000) + ["thousand"] + (_spoken(n % 1000) if n % 1000 else [])


def _normal(word: str) -> list[str]:
    if word.isdigit() and len(word) <= 6:
        return _spoken(int(word))
    return [_SPELLING.get(word, word)]


def words(text: str) -> list[str]:
    """Lowercased words without punctuation, numbers spelt out."""
    return [w for word in re.sub(r"[^\w\s']", " ", text.lower()).split() for w in _normal(word)]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words; may exceed 1."""
    ref, hyp = words(reference), words(hypothesis)
    if not ref:
        return 0.0 if not hyp else float(len(hyp))
    return edit_distance(ref, hyp) / len(ref)


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        previous, row[0] = row[:], i
        for j, h in enumerate(hyp, 1):
            row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (r != h))
    return row[-1]
