"""Brute-force cosine top-k over a contiguous float32 matrix (numpy), with per-row integer labels.

Rows are L2-normalized on insert, so cosine similarity is one matrix-vector product; at 100,000
rows of 384 dimensions that is a few milliseconds, so no approximate index is needed. Each row
carries a small vector of integer labels (e.g. interned user, session and kind) so that callers
can filter with a vectorized mask before taking the top k.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

#: Given the (n, n_labels) label matrix, return a boolean mask of the rows allowed.
RowFilter = Callable[[np.ndarray], np.ndarray]


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    matrix = np.asarray(vectors, dtype=np.float32)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, np.float32(1e-12))


class VectorIndex:
    def __init__(self, dim: int, n_labels: int = 0, capacity: int = 1024) -> None:
        if dim <= 0:
            raise ValueError("dim must be positive")
        self.dim = dim
        self.n_labels = n_labels
        capacity = max(capacity, 1)
        self._matrix = np.empty((capacity, dim), dtype=np.float32)
        self._labels = np.zeros((capacity, n_labels), dtype=np.int32)
        self._keys = np.empty(capacity, dtype=np.int64)
        self._row_of: dict[int, int] = {}
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __contains__(self, key: int) -> bool:
        return key in self._row_of

    def _reserve(self, extra: int) -> None:
        need = self._size + extra
        if need <= len(self._keys):
            return
        capacity = max(need, 2 * len(self._keys))
        for name in ("_matrix", "_labels", "_keys"):
            old = getattr(self, name)
            grown = np.empty((capacity, *old.shape[1:]), dtype=old.dtype)
            grown[: self._size] = old[: self._size]
            setattr(self, name, grown)

    def add(self, keys: Sequence[int], vectors: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Insert or replace rows; `labels` is (len(keys), n_labels) ints."""
        matrix = normalize(vectors)
        if matrix.shape != (len(keys), self.dim):
            raise ValueError(f"expected {len(keys)} vectors of dimension {self.dim}, got shape {matrix.shape}")
        label_rows = (
            np.zeros((len(keys), self.n_labels), dtype=np.int32)
            if labels is None
            else np.asarray(labels, dtype=np.int32).reshape(len(keys), self.n_labels)
        )
        self._reserve(len(keys))
        for i, key in enumerate(keys):
            row = self._row_of.get(int(key))
            if row is None:
                row = self._size
                self._size += 1
                self._row_of[int(key)] = row
                self._keys[row] = key
            self._matrix[row] = matrix[i]
            self._labels[row] = label_rows[i]

    def set_labels(self, key: int, labels: Sequence[int]) -> None:
        row = self._row_of.get(key)
        if row is not None:
            self._labels[row] = labels

    def remove(self, keys: Sequence[int]) -> int:
        """Delete rows by key (unknown keys are ignored); the last row moves into each hole."""
        removed = 0
        for key in keys:
            row = self._row_of.pop(int(key), None)
            if row is None:
                continue
            last = self._size - 1
            if row != last:
                moved = int(self._keys[last])
                self._matrix[row] = self._matrix[last]
                self._labels[row] = self._labels[last]
                self._keys[row] = moved
                self._row_of[moved] = row
            self._size -= 1
            removed += 1
        return removed

    def similarities(self, keys: Sequence[int], query: np.ndarray) -> dict[int, float]:
        """Cosine of the query with each known key (unknown keys are left out)."""
        known = [k for k in keys if k in self._row_of]
        if not known:
            return {}
        rows = np.fromiter((self._row_of[k] for k in known), dtype=np.int64, count=len(known))
        values = self._matrix[rows] @ normalize(query)[0]
        return dict(zip(known, values.tolist(), strict=True))

    def vector(self, key: int) -> np.ndarray:
        return self._matrix[self._row_of[key]].copy()

    def search(self, query: np.ndarray, k: int, row_filter: RowFilter | None = None) -> list[tuple[int, float]]:
        """The k best (key, cosine) pairs, best first, among rows the filter allows."""
        if self._size == 0 or k <= 0:
            return []
        q = normalize(query)[0]
        if q.shape[0] != self.dim:
            raise ValueError(f"query has dimension {q.shape[0]}, index has {self.dim}")
        scores = self._matrix[: self._size] @ q
        if row_filter is not None:
            scores[~row_filter(self._labels[: self._size])] = -np.inf
        k = min(k, self._size)
        top = np.argpartition(scores, self._size - k)[self._size - k :] if k < self._size else np.arange(self._size)
        top = top[np.argsort(-scores[top], kind="stable")]
        values = scores[top]
        finite = np.isfinite(values)
        return list(zip(self._keys[top[finite]].tolist(), values[finite].tolist(), strict=True))
