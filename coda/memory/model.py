"""Core value types and request validation of the memory service (no gRPC, no I/O)."""

from __future__ import annotations

from dataclasses import dataclass, field

KINDS = ("fact", "preference", "episode", "summary")

#: Importance of an item stored with none (0: proto3 cannot tell an unset field from 0). What the
#: user stated about themselves outranks old conversation episodes of about the same relevance
#: ("what's my name?" finds "My name is Sam" before a chat that mentioned a name).
DEFAULT_IMPORTANCE = {"fact": 0.8, "preference": 0.7, "summary": 0.5, "episode": 0.3}


class MemoryFailure(Exception):
    """Base of the failures the service maps to status codes."""


class InvalidRequest(MemoryFailure):
    """The request is malformed; the message says why (INVALID_ARGUMENT)."""


class NotFound(MemoryFailure):
    """A named item does not exist (NOT_FOUND)."""


@dataclass(slots=True)
class Item:
    id: str
    text: str
    kind: str
    importance: float
    session_id: str = ""
    user_id: str = ""
    created_at: float = 0.0
    accessed_at: float = 0.0


@dataclass(slots=True)
class Turn:
    turn_id: str
    user_text: str
    assistant_text: str
    time: float
    interrupted: bool = False


@dataclass(frozen=True, slots=True)
class Scope:
    """Which items a request may see: those of the principal asking, a user or else a session.

    A named user sees its own items in every session, the items of the named session that belong to
    no user, and global items; never another user's. A session without a user (a session-scoped
    principal, e.g. a static token or a Converse opened without user_id) sees the items stored in
    that session and global items; never a user's items from elsewhere, even ones bound to no
    session. Items with neither user nor session are global and always visible. Neither field
    named: every item (an operator's search).
    """

    user_id: str = ""
    session_id: str = ""
    kinds: frozenset[str] = field(default_factory=frozenset)

    def allows(self, item: Item) -> bool:
        if self.kinds and item.kind not in self.kinds:
            return False
        if self.user_id:
            if item.user_id and item.user_id != self.user_id:
                return False
        elif self.session_id and item.user_id and item.session_id != self.session_id:
            return False
        owned = bool(self.user_id) and item.user_id == self.user_id
        return not (self.session_id and item.session_id and item.session_id != self.session_id and not owned)


#: No restriction: every item.
ANYWHERE = Scope()


def require(condition: bool, reason: str) -> None:
    if not condition:
        raise InvalidRequest(reason)


def check_text(text: str, max_chars: int, what: str = "text") -> None:
    require(bool(text.strip()), f"{what} is empty")
    require(len(text) <= max_chars, f"{what} is {len(text)} characters; the limit is {max_chars}")


def check_importance(importance: float) -> None:
    require(0.0 <= importance <= 1.0, f"importance must be within 0..1, got {importance}")


def check_kind(kind: str) -> None:
    require(kind in KINDS, f"unknown kind {kind!r}; known: {', '.join(KINDS)}")


def check_limit(limit: int, max_limit: int, what: str = "limit") -> None:
    require(0 <= limit <= max_limit, f"{what} {limit} is too large; the maximum is {max_limit}")
