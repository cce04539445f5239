"""Okapi BM25 over an in-memory inverted index, so lexical search works before any embedding exists."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

import numpy as np

from coda.memory.text import terms

K1 = 1.2
B = 0.75


class LexicalIndex:
    """Inverted index of item keys (ints) to term frequencies, scored with BM25.

    `score` also returns a normalized relevance in [0, 1]: the BM25 score divided by the best score
    the query could reach (every term present in a document of average length with high frequency),
    so that lexical relevance is comparable across queries and can be mixed with cosine similarity.
    """

    def __init__(self) -> None:
        self._postings: dict[str, dict[int, int]] = {}
        self._lengths: dict[int, int] = {}
        self._total_length = 0
        # term -> (keys, term frequencies, document lengths) as arrays, rebuilt when the term changes.
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self._lengths)

    def __contains__(self, key: int) -> bool:
        return key in self._lengths

    def add(self, key: int, text: str) -> None:
        if key in self._lengths:
            self.remove(key)
        counts = Counter(terms(text))
        length = sum(counts.values())
        self._lengths[key] = length
        self._total_length += length
        for term, count in counts.items():
            self._postings.setdefault(term, {})[key] = count
            self._arrays.pop(term, None)

    def remove(self, key: int) -> None:
        length = self._lengths.pop(key, None)
        if length is None:
            return
        self._total_length -= length
        empty: list[str] = []
        # Removal is rare (forget, consolidation); a scan keeps the add path and memory lean.
        for term, posting in self._postings.items():
            if posting.pop(key, None) is not None:
                self._arrays.pop(term, None)
                if not posting:
                    empty.append(term)
        for term in empty:
            del self._postings[term]

    def remove_many(self, keys: Iterable[int]) -> None:
        doomed = {k for k in keys if k in self._lengths}
        if not doomed:
            return
        for key in doomed:
            self._total_length -= self._lengths.pop(key)
        for term in list(self._postings):
            posting = self._postings[term]
            hit = doomed.intersection(posting)
            if hit:
                self._arrays.pop(term, None)
            for key in hit:
                del posting[key]
            if not posting:
                del self._postings[term]

    def idf(self, term: str) -> float:
        n = len(self._lengths)
        df = len(self._postings.get(term, ()))
        return math.log(1.0 + (n - df + 0.5) / (df + 0.5))

    def _term_arrays(self, term: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        arrays = self._arrays.get(term)
        if arrays is None:
            posting = self._postings.get(term)
            if not posting:
                return None
            keys = np.fromiter(posting.keys(), dtype=np.int64, count=len(posting))
            tfs = np.fromiter(posting.values(), dtype=np.float64, count=len(posting))
            lengths = np.fromiter((self._lengths[k] for k in posting), dtype=np.float64, count=len(posting))
            arrays = self._arrays[term] = (keys, tfs, lengths)
        return arrays

    def scores(self, query: str) -> tuple[np.ndarray, np.ndarray]:
        """(keys, normalized relevance in (0, 1]) of every document matching a query term."""
        query_terms = list(dict.fromkeys(terms(query)))
        empty = (np.empty(0, dtype=np.int64), np.empty(0))
        if not query_terms or not self._lengths:
            return empty
        average = self._total_length / len(self._lengths) or 1.0
        all_keys: list[np.ndarray] = []
        all_scores: list[np.ndarray] = []
        ceiling = 0.0
        for term in query_terms:
            idf = self.idf(term)
            ceiling += idf * (K1 + 1.0)
            arrays = self._term_arrays(term)
            if arrays is None:
                continue
            keys, tfs, lengths = arrays
            all_keys.append(keys)
            all_scores.append(idf * tfs * (K1 + 1.0) / (tfs + K1 * (1.0 - B + B * lengths / average)))
        if not all_keys or ceiling <= 0.0:
            return empty
        if len(all_keys) == 1:
            keys, raw = all_keys[0], all_scores[0]
        else:
            keys, inverse = np.unique(np.concatenate(all_keys), return_inverse=True)
            raw = np.bincount(inverse, weights=np.concatenate(all_scores), minlength=len(keys))
        return keys, np.minimum(raw / ceiling, 1.0)

    def score(self, query: str) -> dict[int, float]:
        """Normalized BM25 relevance in [0, 1] of every document matching at least one query term."""
        keys, values = self.scores(query)
        return dict(zip(keys.tolist(), values.tolist(), strict=True))
