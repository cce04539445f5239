"""Extractive summaries of old episodes: the most central sentences, in their original order."""

from __future__ import annotations

from collections import Counter

import numpy as np

from coda.memory.text import sentences, terms


def summarize(texts: list[str], max_sentences: int, vectors: np.ndarray | None = None) -> str:
    """Pick up to `max_sentences` sentences that best represent all texts.

    With `vectors` (one unit row per text), a text's sentences inherit its closeness to the
    centroid of all texts; otherwise sentences are scored by the average corpus frequency of their
    terms (a classic frequency-based extractive summary). Duplicated sentences are kept once.
    """
    if max_sentences <= 0:
        raise ValueError("max_sentences must be positive")
    candidates: list[tuple[int, int, str]] = []  # (text index, sentence index, sentence)
    seen: set[str] = set()
    for t, text in enumerate(texts):
        for s, sentence in enumerate(sentences(text)):
            key = sentence.lower()
            if key not in seen:
                seen.add(key)
                candidates.append((t, s, sentence))
    if not candidates:
        return ""
    frequency = Counter(term for text in texts for term in terms(text))
    centrality: np.ndarray | None = None
    if vectors is not None and len(vectors) == len(texts):
        centroid = vectors.mean(axis=0)
        centrality = vectors @ centroid

    def score(candidate: tuple[int, int, str]) -> float:
        t, _, sentence = candidate
        sentence_terms = terms(sentence)
        lexical = sum(frequency[x] for x in sentence_terms) / (len(sentence_terms) or 1)
        return float(centrality[t]) * 1000.0 + lexical if centrality is not None else lexical

    chosen = sorted(candidates, key=score, reverse=True)[:max_sentences]
    chosen.sort(key=lambda c: (c[0], c[1]))
    return " ".join(c[2] for c in chosen)
