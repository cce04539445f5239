"""Sentence splitting for streaming TTS: text arrives in fragments (LLM tokens), sentences leave
as soon as they are complete, so speech can start before the whole answer exists.

A sentence ends at . ! ? … or a line break, followed by whitespace (so "3.14" and "e.g." inside a
token stream do not split early). Common abbreviations and single initials do not end one. A run
of text with no sentence end is cut at a word boundary after `max_chars`, which bounds both the
buffer and the wait for the first audio.

Text that ends in ! ? or … ends a sentence at once, without waiting for the whitespace (the next
token, ~45 ms of the embedded model); so does a full stop after a word that is no abbreviation.
After a digit a full stop waits: "3." may go on as "3.14".

The first piece of an answer may end early, at a clause break (", ; :") after `first_clause_words`
words: a neural voice takes time in proportion to the text it is given, and the listener waits for
the whole first piece before hearing anything ("It's 11:24 on Saturday," is ready in half the time
of the full sentence).
"""

from __future__ import annotations

import re

_ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "approx",
        "dept",
        "est",
        "fig",
        "no",
        "vol",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
    ]
)
_END = re.compile("[.!?\u2026]+[\"')\\]}\u00bb\u201d\u2019]*(?=\\s)|\n")
_SOFT_BREAK = re.compile(r"[,;:]\s")
#: A sentence end at the very end of the text so far (the whitespace after it not yet arrived).
_END_AT_END = re.compile("([.!?\u2026]+)[\"')\\]}\u00bb\u201d\u2019]*$")


def speakable(text: str) -> bool:
    """Whether a sentence has anything to say (letters or digits)."""
    return any(ch.isalnum() for ch in text)


class SentenceSplitter:
    def __init__(self, max_chars: int = 250, first_clause_words: int = 0) -> None:
        if max_chars < 20:
            raise ValueError("max_chars must be at least 20")
        self.max_chars = max_chars
        self.first_clause_words = first_clause_words
        self._buffer = ""
        self._emitted = False

    @property
    def pending(self) -> str:
        return self._buffer

    def feed(self, text: str) -> list[str]:
        """Add a fragment; return the sentences it completed, in order."""
        self._buffer += text
        sentences: list[str] = []
        while True:
            cut = self._next_end()
            if cut is None:
                break
            sentence, self._buffer = self._buffer[:cut], self._buffer[cut:]
            if sentence.strip():
                sentences.append(sentence.strip())
                self._emitted = True
        return sentences

    def flush(self) -> list[str]:
        """Return whatever is buffered as a final sentence (empty list if nothing to say)."""
        rest, self._buffer = self._buffer.strip(), ""
        return [rest] if rest else []

    def _next_end(self) -> int | None:
        buffer = self._buffer
        # Rescanning from the start is cheap: the buffer never exceeds about max_chars.
        end = next(
            (m.end() for m in _END.finditer(buffer) if m.group() == "\n" or not self._is_abbreviation(m.start())),
            None,
        )
        if not self._emitted and self.first_clause_words:
            for soft in _SOFT_BREAK.finditer(buffer, 0, end or len(buffer)):
                if len(buffer[: soft.start()].split()) >= self.first_clause_words:
                    return soft.end()
        if end is not None:
            return end
        if (at_end := _END_AT_END.search(buffer)) is not None and self._ends_now(at_end):
            return len(buffer)
        if len(buffer.strip()) > self.max_chars:
            return self._forced_cut(buffer)
        return None

    def _ends_now(self, end: re.Match[str]) -> bool:
        """Whether a sentence end with no whitespace after it yet surely ends the sentence."""
        marks = end.group(1)
        if marks != ".":
            return True  # ! ? … and "..." end a sentence whatever follows
        before = self._buffer[: end.start(1)]
        return bool(before) and before[-1].isalpha() and not self._is_abbreviation(end.start(1))

    def _is_abbreviation(self, dot: int) -> bool:
        if self._buffer[dot] != ".":
            return False
        word = re.search(r"([\w.]+)$", self._buffer[:dot])
        if word is None:
            return False
        token = word.group(1).lower()
        # Dotted initials ("U.S.", "a.m.") are abbreviations too.
        return token in _ABBREVIATIONS or (len(token) == 1 and token.isalpha()) or "." in token.strip(".")

    def _forced_cut(self, buffer: str) -> int:
        window = buffer[: self.max_chars]
        soft = [m.end() for m in _SOFT_BREAK.finditer(window)]
        if soft and soft[-1] > self.max_chars // 2:
            return soft[-1]
        space = window.rfind(" ")
        return space + 1 if space > 0 else self.max_chars
