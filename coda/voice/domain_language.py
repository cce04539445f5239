"""The assistant's own command language, as a small n-gram model for the embedded recogniser.

The generic pocketsphinx LM knows all of English and so recognises short commands poorly. This
module expands sentence templates that mirror the intent agent (coda/llm/agent/intents/) with its
slot values (the agent's city names, numbers the agent's parser reads, durations, memory topics),
builds an ARPA trigram model from them with the LM builder pocketsphinx ships, and trims CMUdict
to the model's words (a small LM with the full 130k-word dictionary takes ~5 s to load; trimmed,
~20 ms). tests/test_voice_core.py checks that every command sentence matches the intent it is
meant for, so the corpus cannot drift from what the agent understands.
"""

from __future__ import annotations

import io
import itertools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from coda.llm.agent.numbers import MONTHS
from coda.llm.agent.places import CITY_TIME_ZONES

log = logging.getLogger(__name__)


def _word_list(text: str) -> list[str]:
    return text.split()


_UNITS = _word_list(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen"
)
_TENS = _word_list("twenty thirty forty fifty sixty seventy eighty ninety")


def number_words(n: int) -> str:
    """0..999 spoken as the agent's number parser reads it: 42 -> "forty two"."""
    if not 0 <= n < 1000:
        raise ValueError(f"number_words covers 0..999, not {n}")
    if n < 20:
        return _UNITS[n]
    if n < 100:
        tens, units = divmod(n, 10)
        return _TENS[tens - 2] + (f" {_UNITS[units]}" if units else "")
    hundreds, rest = divmod(n, 100)
    return f"{_UNITS[hundreds]} hundred" + (f" and {number_words(rest)}" if rest else "")


# --- command sentences, one family per intent; each family is (intent name, sentences)

_COLOURS = _word_list("red green blue yellow orange purple pink black white brown grey silver gold")
_FAVOURITES = {
    "colour": _COLOURS,
    "color": _COLOURS,
    "food": _word_list("pizza pasta sushi curry chocolate cheese soup salad noodles rice bread pancakes"),
    "drink": _word_list("coffee tea water milk juice lemonade wine beer"),
    "animal": _word_list("cat dog horse rabbit lion tiger elephant dolphin owl fox"),
    "fruit": _word_list("apple banana orange mango strawberry cherry grape pear peach"),
    "sport": _word_list("football tennis cricket golf swimming running cycling basketball"),
    "season": _word_list("spring summer autumn winter"),
    "number": [number_words(n) for n in (3, 7, 9, 12, 13, 21, 42, 99)],
    "city": ["tokyo", "paris", "london", "rome", "sydney", "new york", "berlin", "lisbon"],
}
_BELONGINGS = _word_list("keys glasses wallet phone passport umbrella charger bike car")
_PLACES_AT_HOME = _word_list("kitchen drawer hall garage bedroom office car desk cupboard bag")
_PEOPLE = _word_list("sister brother mother father wife husband friend daughter son neighbour doctor dentist")
_OCCASIONS = _word_list("birthday anniversary appointment meeting dentist appointment")
_LABELS = ["tea", "coffee", "eggs", "pasta", "rice", "pizza", "bread", "laundry", "the oven", "a break"]
_REMINDERS = [
    "check the oven", "call my mother", "take out the rubbish", "water the plants", "stretch",
    "drink some water", "move the car", "feed the cat",
]  # fmt: skip


def _greetings() -> Iterator[str]:
    # "hey" opens other requests too ("hey coda what time is it"), so the agent only takes it alone.
    yield "hey"
    for hello in ("hi", "hello", "good morning", "good afternoon", "good evening"):
        for tail in ("", " there", " coda"):
            yield hello + tail


def _thanks() -> Iterator[str]:
    for thanks in ("thanks", "thank you"):
        for tail in ("", " very much", " so much", " a lot", " coda"):
            yield thanks + tail


def _goodbyes() -> Iterator[str]:
    for bye in ("bye", "goodbye", "see you", "see you later", "good night"):
        yield bye
        yield bye + " coda"


def _help() -> Iterator[str]:
    yield from (
        "help", "help me", "what can you do", "what do you do", "what are your skills",
        "what are your features", "what can i ask you", "what should i say", "how do i use you",
        "how can i use you", "coda what can you do",
    )  # fmt: skip


def _smalltalk() -> Iterator[str]:
    yield from (
        "how are you", "how are you doing", "how are you today", "how is it going", "nice to meet you",
        "hello how are you", "hi there how are you",
    )  # fmt: skip


def _status() -> Iterator[str]:
    yield from (
        "status",
        "system status", "status report", "tell me the system status", "show me the status",
        "are you ok", "are you okay", "are you working", "are you running", "how is the system doing",
    )  # fmt: skip


def _cities() -> list[str]:
    # "la", "nyc", "uk" are spelled-out abbreviations that CMUdict reads as words; leave them out.
    return sorted(c for c in CITY_TIME_ZONES if c.isascii() and c not in {"la", "nyc", "uk", "utc", "gmt"})


def _time() -> Iterator[str]:
    asks = ("what time is it", "what is the time", "what is the current time", "tell me the time", "time")
    for ask in asks:
        yield ask
        yield ask + " now"
    for city in _cities():
        for ask in asks[:4]:
            yield f"{ask} in {city}"
        yield f"what time is it in {city} right now"
    for ask in ("what is the date", "what is the date today", "what day is it", "what day is it today"):
        yield ask


def _durations() -> Iterator[str]:
    for n in range(1, 61):
        spoken = number_words(n)
        for unit in ("second", "minute", "hour") if n <= 24 else ("second", "minute"):
            yield f"{spoken} {unit}" + ("s" if n > 1 else "")
    yield from ("a minute", "an hour", "half an hour", "an hour and a half", "a minute and a half")
    for hours, minutes in ((1, 30), (2, 15), (1, 45)):
        yield f"{number_words(hours)} hour{'s' if hours > 1 else ''} and {number_words(minutes)} minutes"


def _timers() -> Iterator[str]:
    durations = list(_durations())
    for i, duration in enumerate(durations):
        yield f"set a timer for {duration}"
        yield ("start", "create", "make", "set")[i % 4] + f" a timer for {duration}"
        if not duration.startswith(("a ", "an ", "half")):
            yield f"set a {duration.removesuffix('s')} timer"
        yield f"timer for {duration}"
        yield f"set a timer for {duration} called {_LABELS[i % len(_LABELS)]}"
        yield f"remind me in {duration} to {_REMINDERS[i % len(_REMINDERS)]}"


def _remember() -> Iterator[str]:
    for thing, values in _FAVOURITES.items():
        for value in values:
            yield f"remember that my favourite {thing} is {value}"
            yield f"remember my favourite {thing} is {value}"
    for i, belonging in enumerate(_BELONGINGS):
        for place in _PLACES_AT_HOME:
            yield f"remember that my {belonging} are in the {place}"
            yield f"remember that my {belonging} is in the {place}"
        yield f"note that i left my {belonging} in the {_PLACES_AT_HOME[i % len(_PLACES_AT_HOME)]}"
    for i, person in enumerate(_PEOPLE):
        month = MONTHS[i % len(MONTHS)]
        yield f"remember that my {person} lives in {_cities()[i * 7 % len(_cities())]}"
        yield f"remember that my {person}'s birthday is in {month}"
        yield f"do not forget that my {person} is coming on {('monday', 'friday', 'sunday')[i % 3]}"
    for like in ("i like", "i love", "i hate", "i prefer"):
        for values in _FAVOURITES.values():
            for value in values[:4]:
                yield f"remember that {like} {value}"
    for i, occasion in enumerate(_OCCASIONS):
        yield f"remember that my {occasion} is in {MONTHS[i * 5 % 12]}"


def _recall() -> Iterator[str]:
    for thing in _FAVOURITES:
        yield f"what is my favourite {thing}"
        yield f"do you remember my favourite {thing}"
    for belonging in _BELONGINGS:
        yield f"where are my {belonging}"
        yield f"where is my {belonging}"
    for person in _PEOPLE:
        yield f"who is my {person}"
        yield f"when is my {person}'s birthday"
        yield f"what do you know about my {person}"
    for occasion in _OCCASIONS:
        yield f"when is my {occasion}"
    yield from ("what do you remember", "what do you know about me", "what do you remember about me")
    for topic in ("my family", "my work", "my keys", "my plans", "food", "coffee"):
        yield f"what do you remember about {topic}"
        yield f"what did i tell you about {topic}"


_OPERATIONS = ("plus", "minus", "times", "divided by", "multiplied by")


def _arithmetic() -> Iterator[str]:
    asks = ("what is", "calculate", "how much is", "what is")
    for op_index, op in enumerate(_OPERATIONS):
        for a in range(0, 101):
            # A fixed stride pairs each number with varied partners, so every number is seen on
            # both sides of every operator without the 10,000 sentences of a full grid.
            b = (a * 37 + 11 * op_index + 3) % 101
            if op == "divided by" and b == 0:
                b = 4
            yield f"{asks[a % len(asks)]} {number_words(a)} {op} {number_words(b)}"
    for n in (2, 4, 9, 16, 25, 36, 49, 64, 81, 100, 144):
        yield f"what is the square root of {number_words(n)}"
    for n in range(1, 21):
        yield f"what is {number_words(n)} squared"
    for p in (5, 10, 15, 20, 25, 50, 75):
        yield f"what is {number_words(p)} percent of {number_words(p * 3 + 40)}"


def _chat() -> Iterator[str]:
    # Turns without an intent of their own, which go to the language model when one is configured.
    yield from (
        "yes", "no", "yes please", "no thanks", "okay", "stop", "cancel", "never mind", "sorry",
        "what is your name", "who are you", "who made you", "tell me a joke", "tell me something",
        "i need help", "can you hear me", "say that again", "repeat that", "what did you say",
        "that is right", "that is wrong", "good job", "what is the date today",
        "what can i do", "do you know me", "cancel the timer", "stop the timer", "how long is left",
    )  # fmt: skip


#: Families of command sentences: (the intent the agent should find, or "" for chit-chat, sentences).
def command_families() -> list[tuple[str, list[str]]]:
    return [
        ("greeting", list(_greetings())),
        ("thanks", list(_thanks())),
        ("goodbye", list(_goodbyes())),
        ("help", list(_help())),
        ("smalltalk", list(_smalltalk())),
        ("system_status", list(_status())),
        ("get_time", list(_time())),
        ("set_timer", list(_timers())),
        ("remember", list(_remember())),
        ("recall", list(_recall())),
        ("calculate", list(_arithmetic())),
        ("", list(_chat())),
    ]


def training_corpus(families: Iterable[tuple[str, list[str]]], lines_per_family: int = 600) -> list[str]:
    """Sentences with each family repeated up to about the same weight, so that a family of ten
    greetings is not drowned by five hundred sums (the n-gram counts would make "hello" unlikely)."""
    corpus: list[str] = []
    for _, sentences in families:
        repeat = max(1, round(lines_per_family / max(1, len(sentences))))
        corpus.extend(itertools.chain.from_iterable(itertools.repeat(sentences, repeat)))
    return corpus


# --- the model files


@dataclass(frozen=True)
class DomainModel:
    lm_path: Path
    dict_path: Path
    vocabulary: frozenset[str]
    #: Corpus words without a CMUdict pronunciation; sentences holding them were left out.
    dropped_words: tuple[str, ...]


def read_pronunciations(dictionary: Path, words: set[str]) -> dict[str, list[str]]:
    """The CMUdict lines ("word PHONES", "word(2) PHONES") of each of `words` that has any."""
    found: dict[str, list[str]] = {}
    with dictionary.open(encoding="utf-8") as lines:
        for line in lines:
            word = line.split(" ", 1)[0].split("(", 1)[0]
            if word in words:
                found.setdefault(word, []).append(line.rstrip("\n"))
    return found


def arpa_model(sentences: Iterable[str]) -> str:
    """An ARPA back-off trigram model of the sentences (pocketsphinx's own builder, fixed discount).

    A discount mass of 0.2 (the builder's default is 0.5) measured best on eSpeak speech: command
    WER 0.13 against 0.23 (en-us voice) and 0.01 against 0.03 (en-us+f2); 0.05 was no better.
    """
    from pocketsphinx.lm import ArpaBoLM

    text = "\n".join(sentences)
    if not text.strip():
        raise ValueError("cannot build a language model from no sentences")
    builder = ArpaBoLM(text=text, add_start=True, case="lower", discount_mass=0.2)
    builder.compute()
    out = io.StringIO()
    builder.write(out)
    return out.getvalue()


def build_domain_model(out_dir: Path, dictionary: Path, sentences: Iterable[str] | None = None) -> DomainModel:
    """Write domain.lm and domain.dict under out_dir from the command corpus (or given sentences)."""
    corpus = list(sentences) if sentences is not None else training_corpus(command_families())
    vocabulary = {word for sentence in corpus for word in sentence.split()}
    pronunciations = read_pronunciations(dictionary, vocabulary)
    dropped = sorted(vocabulary - pronunciations.keys())
    if dropped:
        log.info("domain language model: words without a pronunciation left out", extra={"words": dropped})
        missing = set(dropped)
        corpus = [s for s in corpus if missing.isdisjoint(s.split())]
    kept = vocabulary - set(dropped)
    out_dir.mkdir(parents=True, exist_ok=True)
    lm_path, dict_path = out_dir / "domain.lm", out_dir / "domain.dict"
    lm_path.write_text(arpa_model(corpus), encoding="utf-8")
    dict_path.write_text("".join(line + "\n" for w in sorted(kept) for line in pronunciations[w]), encoding="utf-8")
    return DomainModel(lm_path, dict_path, frozenset(kept), tuple(dropped))
