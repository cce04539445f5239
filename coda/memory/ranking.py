"""Hybrid relevance: cosine similarity and BM25 mixed, then importance and recency boosts.

    relevance = semantic_weight * max(cosine, 0) + lexical_weight * bm25_normalized
                (bm25_normalized alone when the query or the item has no embedding yet)
    recency   = 0.5 ** (seconds since the item was last accessed / recency_half_life_seconds)
    score     = relevance * (1 - importance_weight * (1 - importance) - recency_weight * (1 - recency))

The boosts only reorder relevant items: an item with no relevance scores 0 whatever its importance,
and `memory.min_relevance` is compared with the relevance before the boosts (see MemoryStore.search).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from coda.memory.model import Scope


@dataclass(frozen=True)
class Weights:
    semantic: float = 0.7
    lexical: float = 0.3
    importance: float = 0.15
    recency: float = 0.1
    recency_half_life_seconds: float = 30 * 86400.0


def relevance(weights: Weights, cosine: float | None, lexical: float) -> float:
    if cosine is None:
        return lexical
    return weights.semantic * max(cosine, 0.0) + weights.lexical * lexical


def boosted(weights: Weights, relevance_score: float, importance: float, age_seconds: float) -> float:
    recency = 0.5 ** (max(age_seconds, 0.0) / weights.recency_half_life_seconds)
    factor = 1.0 - weights.importance * (1.0 - importance) - weights.recency * (1.0 - recency)
    return relevance_score * max(factor, 0.0)


class Interner:
    """Stable small integer codes for strings, 0 for the empty string (used as vector-row labels)."""

    def __init__(self) -> None:
        self._codes: dict[str, int] = {"": 0}

    def code(self, value: str) -> int:
        code = self._codes.get(value)
        if code is None:
            code = self._codes[value] = len(self._codes)
        return code

    def lookup(self, value: str) -> int:
        """The code of a known value, -1 for a value never seen (matches no row)."""
        return self._codes.get(value, -1)


USER, SESSION, KIND = 0, 1, 2


def scope_mask(scope: Scope, users: Interner, sessions: Interner, kinds: Interner):  # type: ignore[no-untyped-def]
    """A vectorized `Scope.allows` over (user, session, kind) label rows, for `VectorIndex.search`."""
    user = users.lookup(scope.user_id) if scope.user_id else 0
    session = sessions.lookup(scope.session_id) if scope.session_id else 0
    kind_codes = np.array([kinds.lookup(k) for k in scope.kinds], dtype=np.int32)

    def allowed(labels: np.ndarray) -> np.ndarray:
        mask = np.ones(len(labels), dtype=bool)
        if kind_codes.size:
            mask &= np.isin(labels[:, KIND], kind_codes)
        if scope.user_id:
            mask &= (labels[:, USER] == 0) | (labels[:, USER] == user)
        elif scope.session_id:
            # A session-scoped principal: a user's items only where stored in this very session.
            mask &= (labels[:, USER] == 0) | (labels[:, SESSION] == session)
        if scope.session_id:
            owned = (labels[:, USER] == user) if scope.user_id else np.zeros(len(labels), dtype=bool)
            mask &= (labels[:, SESSION] == 0) | (labels[:, SESSION] == session) | owned
        return mask

    return allowed
