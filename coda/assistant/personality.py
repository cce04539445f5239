"""Personality traits and the system prompt they shape (pure).

A session's personality is a few named traits, each 0..1. Each trait maps to one sentence of the
system prompt, chosen by which third of the range it falls in, so a change the user can hear
(e.g. verbosity 0.2 -> 0.9) always changes the prompt and small jitters do not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from coda.v1 import events_pb2, memory_pb2
from coda.voice.sentences import SentenceSplitter

#: trait -> (low, middle, high) guidance sentence.
TRAIT_GUIDANCE: dict[str, tuple[str, str, str]] = {
    # Concrete words and habits rather than adjectives: a small local model follows "no exclamation
    # marks" or "use contractions", and reads "be warm" as nothing in particular.
    "warmth": (
        "Be neutral and matter-of-fact: no pleasantries, no exclamation marks.",
        "Be friendly.",
        "Be warm and caring: show that you care how the user feels, and say you are glad to help!",
    ),
    "humor": (
        "Do not joke.",
        "A light touch of humor is welcome when it fits.",
        "Be playful and witty where it does not get in the way of the answer.",
    ),
    "verbosity": (
        "Keep answers very short: one or two sentences.",
        "Keep answers concise.",
        "Give thorough answers with explanation and detail.",
    ),
    "formality": (
        "Talk casually, like a friend: use contractions and everyday words such as 'hey', 'yeah' and 'cool'.",
        "Use a natural, polite register.",
        "Use formal, precise language: write out every contraction (do not, I am, it is) and avoid slang.",
    ),
}
KNOWN_TRAITS: tuple[str, ...] = tuple(TRAIT_GUIDANCE)


class TraitError(ValueError):
    """A trait name or value is invalid; the message says which."""


def validate_traits(traits: Mapping[str, float]) -> None:
    for name, value in traits.items():
        if name not in TRAIT_GUIDANCE:
            raise TraitError(f"unknown personality trait {name!r}; known: {', '.join(KNOWN_TRAITS)}")
        if not 0.0 <= value <= 1.0:
            raise TraitError(f"personality trait {name!r} must be within 0..1, got {value:g}")


def merge_traits(current: Mapping[str, float], changes: Mapping[str, float]) -> dict[str, float]:
    """`current` with `changes` applied (validated first, so a bad change leaves nothing half-applied)."""
    validate_traits(changes)
    return {**current, **changes}


def trait_changes(before: Mapping[str, float], after: Mapping[str, float]) -> list[events_pb2.TraitChange]:
    """What changed between two trait sets, in KNOWN_TRAITS order; unset traits count as 0.5."""
    changes = []
    for name in sorted(set(before) | set(after), key=_trait_order):
        previous, current = before.get(name, 0.5), after.get(name, 0.5)
        if abs(previous - current) > 1e-6:
            changes.append(events_pb2.TraitChange(trait=name, previous=previous, current=current))
    return changes


def _trait_order(name: str) -> tuple[int, str]:
    return (KNOWN_TRAITS.index(name) if name in KNOWN_TRAITS else len(KNOWN_TRAITS), name)


def guidance(traits: Mapping[str, float]) -> list[str]:
    """One sentence per known trait that is set."""
    sentences = []
    for name in KNOWN_TRAITS:
        if name in traits:
            low, middle, high = TRAIT_GUIDANCE[name]
            value = traits[name]
            sentences.append(low if value < 1 / 3 else middle if value < 2 / 3 else high)
    return sentences


#: Most tokens of one answer by verbosity third: a small model follows a length limit it is given far
#: more reliably than a sentence asking it to be brief, and a spoken answer should not run on.
ANSWER_TOKENS = (120, 200, 400)


def answer_token_limit(traits: Mapping[str, float]) -> int:
    verbosity = traits.get("verbosity", 0.5)
    return ANSWER_TOKENS[0 if verbosity < 1 / 3 else 1 if verbosity < 2 / 3 else 2]


#: Most sentences of one answer by verbosity third (0: no limit). Measured with the bundled 0.5B model:
#: told to "keep answers very short", it still gives five sentences about feeling tired; stopping it
#: after its second sentence keeps the answer whole, where a token limit cuts one in half. The middle
#: third stops after three: four ran to 400 and more characters, half a minute read aloud.
ANSWER_SENTENCES = (2, 3, 0)


def answer_sentence_limit(traits: Mapping[str, float]) -> int:
    verbosity = traits.get("verbosity", 0.5)
    return ANSWER_SENTENCES[0 if verbosity < 1 / 3 else 1 if verbosity < 2 / 3 else 2]


class SentenceCap:
    """Counts the sentences of a streamed answer and cuts it after `limit` of them (0: never)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.reached = False
        self._splitter = SentenceSplitter(max_chars=1000)
        self._count = 0

    def add(self, text: str) -> str:
        """The part of `text` within the limit ("" once it is reached); sets `reached` on the cut."""
        if self.reached:
            return ""
        if not self.limit:
            return text
        # A list's "1." or a lone "Sure!" is not one of the sentences a listener counts.
        self._count += sum(len(sentence.split()) >= 3 for sentence in self._splitter.feed(text))
        if self._count < self.limit:
            return text
        self.reached = True
        # A sentence is complete when the next one starts: that start, still pending, is not said.
        rest = self._splitter.pending
        return text[: len(text) - len(rest)] if rest and text.endswith(rest) else text


_NOT = {"can": "cannot", "won": "will not", "shan": "shall not", "ain": "is not"}
_PRONOUN_ENDINGS = {"m": "am", "re": "are", "ve": "have", "ll": "will", "d": "would"}
_S_PRONOUNS = frozenset({"it", "that", "there", "what", "here", "he", "she", "who", "where", "how", "let"})
_CONTRACTION = re.compile(r"\b([A-Za-z]+)['\u2019](t|m|re|ve|ll|d|s)\b")


def _expand(match: re.Match[str]) -> str:
    word, ending = match.group(1), match.group(2).lower()
    lower = word.lower()
    if ending == "t" and lower.endswith("n"):
        full = _NOT.get(lower, f"{word[:-1]} not")  # "don't" -> "do not", "can't" -> "cannot"
        return full[0].upper() + full[1:] if word[0].isupper() else full
    if ending == "s" and lower in _S_PRONOUNS:
        return f"{word} {'us' if lower == 'let' else 'is'}"
    if ending in _PRONOUN_ENDINGS and ending != "s":
        return f"{word} {_PRONOUN_ENDINGS[ending]}"
    return match.group(0)  # a possessive ("Sam's") or a word the rule does not know


class FormalRegister:
    """Writes out contractions in a streamed answer ("don't" -> "do not", "I'm" -> "I am").

    The high third of `formality` asks for this, and a small local model does not do it when told:
    the answer is rewritten word by word instead. Text is held back to the last space, so a word
    split across tokens ("don" + "'t") is whole before it is rewritten."""

    def __init__(self) -> None:
        self._pending = ""

    def feed(self, text: str) -> str:
        self._pending += text
        cut = max(self._pending.rfind(" "), self._pending.rfind("\n"))
        if cut <= 0:
            return ""
        ready, self._pending = self._pending[:cut], self._pending[cut:]
        return _CONTRACTION.sub(_expand, ready)

    def flush(self) -> str:
        rest, self._pending = self._pending, ""
        return _CONTRACTION.sub(_expand, rest)


def register_for(traits: Mapping[str, float]) -> FormalRegister | None:
    return FormalRegister() if traits.get("formality", 0.5) >= 2 / 3 else None


_REFUSAL = re.compile(
    r"^\W*(?:(?:i'?m |i am )?sorry\b|i (?:can(?:'|no)?t|cannot|am (?:not able|unable)|don'?t (?:have|know))\b|"
    r"unfortunately\b|as an ai\b)",
    re.IGNORECASE,
)


def is_refusal(answer: str) -> bool:
    """Whether an answer opens by declining or not knowing ("Sorry, I can't...", "I don't know...")."""
    return bool(_REFUSAL.match(answer))


def system_prompt(base: str, persona: str, traits: Mapping[str, float], language: str = "", today: str = "") -> str:
    """The system message of a turn: who the assistant is and how it talks.

    It changes only with the session's settings, so a local model finds it (and the conversation
    after it) already evaluated in its prompt cache; what is recalled for this turn goes in a
    message of its own right before the user's (`memory_note`).
    """
    parts = [base.strip()]
    if persona.strip():
        parts.append(persona.strip())
    style = guidance(traits)
    if style:
        parts.append("Style: " + " ".join(style))
    if language:
        parts.append(f"Answer in the language with code {language!r}.")
    if today:
        # The date, not the time: it changes once a day, so the prompt stays cacheable.
        parts.append(f"Today is {today}.")
    return "\n\n".join(parts)


def memory_note(memories: Sequence[memory_pb2.ScoredItem]) -> str:
    """What the assistant remembers that may bear on this turn ("" when nothing was recalled)."""
    lines = "\n".join(f"- {scored.item.text}" for scored in memories if scored.item.text.strip())
    return "Things you remember about the user that may be relevant:\n" + lines if lines else ""
