"""Text helpers shared by lexical ranking, short-term bounds and consolidation."""

from __future__ import annotations

import math
import re

_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)?", re.UNICODE)

#: Words too common to say anything about relevance (English; lexical ranking only).
STOPWORDS = frozenset(
    """a an and are as at be been but by can could did do does for from had has have he her hers him his how i
    if in into is it its itself me my myself no not of on or our ours she so than that the their them then
    there these they this those to too us was we were what when where which who whom why will with would you
    your yours am any all about after again also just more most some such very s t""".split()  # noqa: SIM905
)

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def words(text: str) -> list[str]:
    """Lower-cased word tokens of a text, stop words kept."""
    return [w.lower() for w in _WORD.findall(text)]


def terms(text: str) -> list[str]:
    """Index terms of a text: lower-cased words without stop words, lightly stemmed."""
    return [stem(w) for w in words(text) if w not in STOPWORDS]


def stem(word: str) -> str:
    """A deliberately small suffix stripper so that "likes"/"liked"/"liking" meet; not a full stemmer."""
    if len(word) <= 3:
        return word
    for suffix in ("'s", "ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def approx_tokens(text: str) -> int:
    """Approximate LLM token count: about four characters per token for English text."""
    return math.ceil(len(text) / 4) if text else 0


def sentences(text: str) -> list[str]:
    """Split a text into sentences on terminal punctuation (good enough for extractive summaries)."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]
