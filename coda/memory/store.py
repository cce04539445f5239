"""The embedded store: SQLite file storage plus in-memory lexical and vector indexes.

Synchronous and single-threaded by design: `worker.MemoryWorker` owns one instance on one thread,
so SQLite sees a single connection (no "database is locked") and the indexes need no locks.
Forgetting deletes rows for good: `secure_delete` zeroes freed content and a WAL checkpoint
(TRUNCATE) removes old page images, so the text is not left anywhere in the files.
"""

from __future__ import annotations

import heapq
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from coda.memory.bm25 import LexicalIndex
from coda.memory.model import ANYWHERE, Item, NotFound, Scope, Turn
from coda.memory.ranking import Interner, Weights, boosted, relevance, scope_mask
from coda.memory.text import approx_tokens
from coda.memory.vectors import VectorIndex

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    key INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    text TEXT NOT NULL,
    kind TEXT NOT NULL,
    importance REAL NOT NULL,
    session_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    accessed_at REAL NOT NULL,
    embedder TEXT,
    embedding BLOB
);
CREATE INDEX IF NOT EXISTS items_user ON items(user_id);
CREATE INDEX IF NOT EXISTS items_session ON items(session_id);
CREATE TABLE IF NOT EXISTS summary_sources (
    summary_id TEXT NOT NULL,
    source_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS summary_sources_summary ON summary_sources(summary_id);
CREATE TABLE IF NOT EXISTS turns (
    seq INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    turn_id TEXT NOT NULL,
    user_text TEXT NOT NULL,
    assistant_text TEXT NOT NULL,
    time REAL NOT NULL,
    interrupted INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS turns_session ON turns(session_id, seq);
CREATE INDEX IF NOT EXISTS turns_user ON turns(user_id);
"""

_ITEM_COLUMNS = "key, id, text, kind, importance, session_id, user_id, created_at, accessed_at"


@dataclass(frozen=True)
class Hit:
    item: Item
    #: Ranking score: relevance with the importance and recency boosts.
    score: float
    #: Relevance alone (cosine and BM25 mixed), what `min_relevance` is compared with.
    relevance: float = 0.0


@dataclass(frozen=True)
class Consolidation:
    summary: Item
    source_ids: list[str]


def new_id() -> str:
    return uuid.uuid4().hex


class MemoryStore:
    def __init__(self, path: str | Path, embedder_name: str = "", weights: Weights | None = None) -> None:
        self.path = Path(path)
        self.embedder_name = embedder_name
        self.weights = weights or Weights()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.executescript(SCHEMA)
        self._items: dict[int, Item] = {}
        self._key_of: dict[str, int] = {}
        self._lexical = LexicalIndex()
        self._vectors: VectorIndex | None = None
        self._users, self._sessions, self._kinds = Interner(), Interner(), Interner()
        self._load()

    # --- loading and bookkeeping

    def _load(self) -> None:
        vector_keys: list[int] = []
        blobs: list[bytes] = []
        rows = self._db.execute(f"SELECT {_ITEM_COLUMNS}, embedder, embedding FROM items")
        for row in rows:
            key, item = row[0], Item(*row[1:9])
            self._index_item(key, item)
            if row[10] is not None and row[9] == self.embedder_name:
                vector_keys.append(key)
                blobs.append(row[10])
        if blobs:
            dim = len(blobs[0]) // 4
            matrix = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim)
            self._ensure_vectors(dim, len(blobs))
            assert self._vectors is not None
            self._vectors.add(vector_keys, matrix, np.array([self._labels(self._items[k]) for k in vector_keys]))

    def _ensure_vectors(self, dim: int, capacity: int = 1024) -> VectorIndex:
        if self._vectors is None or self._vectors.dim != dim:
            self._vectors = VectorIndex(dim, n_labels=3, capacity=max(capacity, 1024))
        return self._vectors

    def _labels(self, item: Item) -> tuple[int, int, int]:
        return (self._users.code(item.user_id), self._sessions.code(item.session_id), self._kinds.code(item.kind))

    def _index_item(self, key: int, item: Item) -> None:
        self._items[key] = item
        self._key_of[item.id] = key
        self._lexical.add(key, item.text)

    def _unindex(self, keys: Sequence[int]) -> None:
        for key in keys:
            item = self._items.pop(key)
            del self._key_of[item.id]
        self._lexical.remove_many(keys)
        if self._vectors is not None:
            self._vectors.remove(keys)

    def close(self) -> None:
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()

    def __len__(self) -> int:
        return len(self._items)

    @property
    def embedded_count(self) -> int:
        return len(self._vectors) if self._vectors is not None else 0

    def get(self, item_id: str) -> Item:
        key = self._key_of.get(item_id)
        if key is None:
            raise NotFound(f"memory item {item_id!r} not found")
        return self._items[key]

    # --- long-term items

    def store(self, item: Item, embedding: np.ndarray | None = None) -> Item:
        """Insert an item (a fresh id and times are assigned when missing)."""
        return self.store_many([item], None if embedding is None else embedding[None, :])[0]

    def store_many(self, items: Sequence[Item], embeddings: np.ndarray | None = None) -> list[Item]:
        now = time.time()
        stored = [
            replace(
                item,
                id=item.id or new_id(),
                created_at=item.created_at or now,
                accessed_at=item.accessed_at or item.created_at or now,
            )
            for item in items
        ]
        keys: list[int] = []
        self._db.execute("BEGIN")
        try:
            for i, item in enumerate(stored):
                vector = None if embeddings is None else np.asarray(embeddings[i], dtype=np.float32)
                cursor = self._db.execute(
                    "INSERT INTO items (id, text, kind, importance, session_id, user_id, created_at, accessed_at,"
                    " embedder, embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        item.id,
                        item.text,
                        item.kind,
                        item.importance,
                        item.session_id,
                        item.user_id,
                        item.created_at,
                        item.accessed_at,
                        self.embedder_name if vector is not None else None,
                        vector.tobytes() if vector is not None else None,
                    ),
                )
                keys.append(int(cursor.lastrowid or 0))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        for key, item in zip(keys, stored, strict=True):
            self._index_item(key, item)
        if embeddings is not None and len(stored):
            index = self._ensure_vectors(embeddings.shape[1])
            index.add(keys, embeddings, np.array([self._labels(item) for item in stored]))
        return stored

    def update(
        self,
        item_id: str,
        *,
        text: str | None = None,
        kind: str | None = None,
        importance: float | None = None,
        embedding: np.ndarray | None = None,
    ) -> Item:
        """Change fields of an item; a new text drops the old embedding unless a new one is given."""
        key = self._key_of.get(item_id)
        if key is None:
            raise NotFound(f"memory item {item_id!r} not found")
        old = self._items[key]
        new = replace(
            old,
            text=old.text if text is None else text,
            kind=old.kind if kind is None else kind,
            importance=old.importance if importance is None else importance,
        )
        text_changed = new.text != old.text
        if text_changed:
            blob = embedding.astype(np.float32).tobytes() if embedding is not None else None
            self._db.execute(
                "UPDATE items SET text=?, kind=?, importance=?, embedder=?, embedding=? WHERE key=?",
                (new.text, new.kind, new.importance, self.embedder_name if blob else None, blob, key),
            )
        else:
            self._db.execute("UPDATE items SET kind=?, importance=? WHERE key=?", (new.kind, new.importance, key))
        self._items[key] = new
        if text_changed:
            self._lexical.add(key, new.text)
            if self._vectors is not None:
                self._vectors.remove([key])
            if embedding is not None:
                self._ensure_vectors(len(embedding)).add([key], embedding[None, :], np.array([self._labels(new)]))
        elif self._vectors is not None:
            self._vectors.set_labels(key, self._labels(new))
        return new

    def touch(self, item_ids: Iterable[str], now: float | None = None) -> None:
        """Record that items were recalled (feeds the recency boost)."""
        now = time.time() if now is None else now
        keys = [self._key_of[i] for i in item_ids if i in self._key_of]
        if not keys:
            return
        self._db.executemany("UPDATE items SET accessed_at=? WHERE key=?", [(now, k) for k in keys])
        for key in keys:
            self._items[key].accessed_at = now

    def search(
        self,
        query: str,
        query_vector: np.ndarray | None,
        limit: int,
        scope: Scope = ANYWHERE,
        min_score: float = 0.0,
        now: float | None = None,
        min_relevance: float = 0.0,
    ) -> list[Hit]:
        """Rank items against a query: hybrid relevance with boosts, best first.

        `min_relevance` drops items whose relevance, before the boosts, is below it: importance and
        recency only reorder what is relevant, they never make an unrelated item pass. It is
        calibrated on the cosine/BM25 mix, so it only applies where both sides have a vector; a
        lexical-only match (no embedder, or the item not embedded yet) already shares a query word
        and its BM25 share runs on another scale (a long summary matching two of three words: 0.17).
        """
        if limit <= 0:
            return []
        now = time.time() if now is None else now
        if not query.strip():
            return self._listed(limit, scope, min_score, now)
        candidates = limit * 4 + 16
        lexical = self._lexical_candidates(query, scope, candidates)
        cosine: dict[int, float] = {}
        vectors = self._vectors
        use_vectors = query_vector is not None and vectors is not None and len(query_vector) == vectors.dim
        if use_vectors:
            assert vectors is not None and query_vector is not None
            row_filter = scope_mask(scope, self._users, self._sessions, self._kinds)
            cosine = dict(vectors.search(query_vector, candidates, row_filter))
            # Lexical candidates outside the semantic top-k still get their cosine, for a fair mix.
            cosine.update(vectors.similarities([k for k in lexical if k not in cosine], query_vector))
        hits: list[Hit] = []
        for key in lexical.keys() | cosine.keys():
            item = self._items[key]
            cos = cosine.get(key) if use_vectors else None
            words = lexical.get(key, 0.0)
            related = relevance(self.weights, cos, words)
            # A strong match of the query's words keeps an item whose text the embedder reads poorly
            # (markup, codes, names it has never seen): "my note" finds "my note is <b>x</b>".
            if cos is not None and max(related, words) < min_relevance:
                continue
            score = boosted(self.weights, related, item.importance, now - item.accessed_at)
            if score > 0.0 and score >= min_score:
                hits.append(Hit(item, score, related))
        hits.sort(key=lambda h: (-h.score, -h.item.created_at))
        return hits[:limit]

    def _listed(self, limit: int, scope: Scope, min_score: float, now: float) -> list[Hit]:
        """The items in scope without a query ("what do you know about me?"): the most important and
        recent first, each scored as if fully relevant."""
        hits = [
            Hit(item, boosted(self.weights, 1.0, item.importance, now - item.accessed_at), 1.0)
            for item in self._items.values()
            if scope.allows(item)
        ]
        hits = [hit for hit in hits if hit.score > 0.0 and hit.score >= min_score]
        return heapq.nsmallest(limit, hits, key=lambda h: (-h.score, -h.item.created_at))

    def _lexical_candidates(self, query: str, scope: Scope, count: int) -> dict[int, float]:
        """The `count` best BM25 matches in scope (the union with the semantic top-k is then ranked)."""
        keys, scores = self._lexical.scores(query)
        if not len(keys):
            return {}
        order = np.argsort(-scores, kind="stable")
        chosen: dict[int, float] = {}
        for index in order.tolist():
            key = int(keys[index])
            if scope.allows(self._items[key]):
                chosen[key] = float(scores[index])
                if len(chosen) >= count:
                    break
        return chosen

    # --- embeddings back-fill

    def missing_embeddings(self, limit: int) -> list[tuple[str, str]]:
        """(id, text) of items without an embedding from the current embedder."""
        indexed = self._vectors
        out: list[tuple[str, str]] = []
        for key, item in self._items.items():
            if indexed is None or key not in indexed:
                out.append((item.id, item.text))
                if len(out) >= limit:
                    break
        return out

    def set_embeddings(self, item_ids: Sequence[str], embeddings: np.ndarray) -> None:
        pairs = [(i, v) for i, v in zip(item_ids, embeddings, strict=True) if i in self._key_of]
        if not pairs:
            return
        self._db.execute("BEGIN")
        self._db.executemany(
            "UPDATE items SET embedder=?, embedding=? WHERE id=?",
            [(self.embedder_name, np.asarray(v, dtype=np.float32).tobytes(), i) for i, v in pairs],
        )
        self._db.execute("COMMIT")
        keys = [self._key_of[i] for i, _ in pairs]
        index = self._ensure_vectors(len(pairs[0][1]))
        index.add(keys, np.stack([v for _, v in pairs]), np.array([self._labels(self._items[k]) for k in keys]))

    # --- forgetting (right to be forgotten: rows, index entries and file content)

    def forget_ids(self, item_ids: Iterable[str]) -> list[str]:
        keys = [self._key_of[i] for i in dict.fromkeys(item_ids) if i in self._key_of]
        return self._delete_items(keys)[0]

    def forget_session(self, session_id: str) -> tuple[list[str], int]:
        keys = [k for k, item in self._items.items() if item.session_id == session_id]
        return self._delete_items(keys, turns=("session_id", session_id))

    def forget_user(self, user_id: str) -> tuple[list[str], int]:
        keys = [k for k, item in self._items.items() if item.user_id == user_id]
        return self._delete_items(keys, turns=("user_id", user_id))

    def _delete_items(self, keys: Sequence[int], turns: tuple[str, str] | None = None) -> tuple[list[str], int]:
        ids = [self._items[k].id for k in keys]
        deleted_turns = 0
        self._db.execute("BEGIN")
        try:
            self._db.executemany("DELETE FROM items WHERE key=?", [(k,) for k in keys])
            self._db.executemany("DELETE FROM summary_sources WHERE summary_id=?", [(i,) for i in ids])
            if turns is not None:
                column, value = turns
                deleted_turns = self._db.execute(f"DELETE FROM turns WHERE {column}=?", (value,)).rowcount
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._unindex(keys)
        if keys or deleted_turns:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return ids, deleted_turns

    # --- short-term turns

    def add_turn(self, session_id: str, user_id: str, turn: Turn, keep: int) -> list[Turn]:
        """Append a turn; the session keeps its `keep` newest turns and returns the ones it let go."""
        self._db.execute("BEGIN")
        try:
            self._db.execute(
                "INSERT INTO turns (session_id, user_id, turn_id, user_text, assistant_text, time, interrupted)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    session_id,
                    user_id,
                    turn.turn_id,
                    turn.user_text,
                    turn.assistant_text,
                    turn.time,
                    int(turn.interrupted),
                ),
            )
            evicted_rows = self._db.execute(
                "SELECT seq, turn_id, user_text, assistant_text, time, interrupted FROM turns WHERE session_id=?"
                " ORDER BY seq DESC LIMIT -1 OFFSET ?",
                (session_id, keep),
            ).fetchall()
            self._db.executemany("DELETE FROM turns WHERE seq=?", [(r[0],) for r in evicted_rows])
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return [Turn(r[1], r[2], r[3], r[4], bool(r[5])) for r in reversed(evicted_rows)]

    def history(self, session_id: str, max_turns: int, max_tokens: int) -> list[Turn]:
        """The newest turns of a session, oldest first, within `max_turns` and about `max_tokens`."""
        rows = self._db.execute(
            "SELECT turn_id, user_text, assistant_text, time, interrupted FROM turns WHERE session_id=?"
            " ORDER BY seq DESC LIMIT ?",
            (session_id, max_turns),
        )
        turns: list[Turn] = []
        budget = max_tokens
        for row in rows:
            cost = approx_tokens(row[1]) + approx_tokens(row[2])
            if cost > budget:
                break
            budget -= cost
            turns.append(Turn(row[0], row[1], row[2], row[3], bool(row[4])))
        turns.reverse()
        return turns

    # --- consolidation

    def consolidate(
        self,
        cutoff: float,
        scope: Scope,
        min_episodes: int,
        summarize: Callable[[list[Item], np.ndarray | None], str],
    ) -> list[Consolidation]:
        """Replace episodes created before `cutoff` by one summary per (user, session) group."""
        groups: dict[tuple[str, str], list[int]] = {}
        for key, item in self._items.items():
            if item.kind != "episode" or item.created_at >= cutoff:
                continue
            if scope.user_id and item.user_id != scope.user_id:
                continue
            if scope.session_id and item.session_id != scope.session_id:
                continue
            groups.setdefault((item.user_id, item.session_id), []).append(key)
        results: list[Consolidation] = []
        for (user_id, session_id), keys in sorted(groups.items()):
            if len(keys) < min_episodes:
                continue
            keys.sort(key=lambda k: self._items[k].created_at)
            sources = [self._items[k] for k in keys]
            vectors = self._vectors
            matrix = (
                np.stack([vectors.vector(k) for k in keys])
                if vectors is not None and all(k in vectors for k in keys)
                else None
            )
            text = summarize(sources, matrix)
            if not text:
                continue
            summary = Item(
                id=new_id(),
                text=text,
                kind="summary",
                importance=max(s.importance for s in sources),
                session_id=session_id,
                user_id=user_id,
            )
            # Stored without an embedding: the back-fill embeds the summary's own text.
            (summary,) = self.store_many([summary])
            source_ids = [s.id for s in sources]
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO summary_sources (summary_id, source_id) VALUES (?, ?)",
                [(summary.id, i) for i in source_ids],
            )
            self._db.execute("COMMIT")
            self._delete_items(keys)
            results.append(Consolidation(summary, source_ids))
        return results

    def summary_sources(self, summary_id: str) -> list[str]:
        rows = self._db.execute("SELECT source_id FROM summary_sources WHERE summary_id=?", (summary_id,))
        return [r[0] for r in rows]
