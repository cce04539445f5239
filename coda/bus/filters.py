"""Subscription filters: type patterns and a session, compiled once into a set of matching types.

The set of event types is small and fixed by the schema, so a pattern list compiles to the exact
set of type names it admits; matching an event is then one set lookup (or nothing for `*`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence

from coda.bus.log import SESSION_ID, TYPE, Entry
from coda.schema import EVENT_TYPES, FAMILIES


class FilterError(ValueError):
    """A pattern is malformed or matches no event type; the message lists the families."""


def compile_types(patterns: Iterable[str], known: Sequence[str] = EVENT_TYPES) -> frozenset[str] | None:
    """The type names admitted by `patterns`, or None for all of them (`*` or no pattern)."""
    patterns = [p.strip() for p in patterns]
    if not patterns or "*" in patterns:
        return None
    admitted: set[str] = set()
    for pattern in patterns:
        if not pattern:
            raise FilterError("empty type pattern")
        matched = [t for t in known if fnmatch.fnmatchcase(t, pattern)]
        if not matched:
            raise FilterError(
                f"type pattern {pattern!r} matches no event type; use an exact type (llm.token), "
                f"a family (llm.*), a glob or '*'; families: {', '.join(FAMILIES)}"
            )
        admitted.update(matched)
    return None if admitted.issuperset(known) else frozenset(admitted)


class EventFilter:
    """Which events one subscriber receives: a compiled type set and an optional session."""

    __slots__ = ("everything", "key", "patterns", "session_id", "types")

    def __init__(self, patterns: Iterable[str] = (), session_id: str = "") -> None:
        self.patterns = tuple(patterns)
        self.types = compile_types(self.patterns)
        self.session_id = session_id
        self.everything = self.types is None and not session_id
        #: Equal for filters that admit the same events (whatever patterns spelled them).
        self.key = (self.types, session_id)

    def matches(self, entry: Entry) -> bool:
        if self.types is not None and entry[TYPE] not in self.types:
            return False
        return not self.session_id or entry[SESSION_ID] == self.session_id

    def select(self, entries: list[Entry]) -> list[Entry]:
        """The matching entries of a batch, in order (the batch itself when all match)."""
        if self.everything:
            return entries
        types, session = self.types, self.session_id
        if types is None:
            return [e for e in entries if e[SESSION_ID] == session]
        if not session:
            return [e for e in entries if e[TYPE] in types]
        return [e for e in entries if e[TYPE] in types and e[SESSION_ID] == session]
