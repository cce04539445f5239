"""Lists kept as memories: "my shopping list includes eggs and bread" is one memory of a list.

The agent stores each "add X to my Y list" as such a sentence; taking an entry off a list edits the
sentences that name it. Pure: parsing and rewriting the text, no memory service.
"""

from __future__ import annotations

import re

#: Words before an entry that are not part of it ("the eggs", "some milk").
_ARTICLE = re.compile(r"^(?:(?:the|some|a|an|any|my)(?:\s+|$))+", re.IGNORECASE)
#: Between entries: commas and a final "and" ("eggs, milk and bread").
_SEPARATOR = re.compile(r"\s*,\s*(?:and\s+)?|\s+and\s+", re.IGNORECASE)


def list_sentence(list_name: str, entries: list[str]) -> str:
    """ "my shopping list includes eggs, milk and bread"."""
    joined = entries[0] if len(entries) == 1 else ", ".join(entries[:-1]) + " and " + entries[-1]
    return f"my {list_name} includes {joined}"


def bare_entry(text: str) -> str:
    """An entry without its article and edge punctuation, lowercased: how entries are compared."""
    return _ARTICLE.sub("", text.strip().strip(".!?,;").strip()).lower()


def list_entries(text: str, list_name: str) -> list[str] | None:
    """The entries of a memory of `list_name` ("my shopping list includes eggs and bread" ->
    ["eggs", "bread"]); None when the memory is not of that list."""
    found = re.fullmatch(
        rf"\s*my\s+{re.escape(list_name.strip())}\s+includes\s+(?P<entries>.+?)[.\s]*", text, re.IGNORECASE
    )
    if found is None:
        return None
    return [entry for entry in (e.strip() for e in _SEPARATOR.split(found["entries"])) if entry]


def without_entry(text: str, list_name: str, entry: str) -> tuple[bool, str | None]:
    """(whether `entry` was on it, the memory's new text or None when no entry is left) for a
    memory of `list_name`; (False, text) when the memory is not of that list or lacks the entry."""
    entries = list_entries(text, list_name)
    if entries is None:
        return False, text
    wanted = bare_entry(entry)
    kept = [e for e in entries if bare_entry(e) != wanted]
    if len(kept) == len(entries):
        return False, text
    return True, list_sentence(list_name.strip(), kept) if kept else None
