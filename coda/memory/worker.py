"""The memory core's async face: validation, embeddings off the event loop, one thread for the store.

Every store call runs on a single dedicated thread (SQLite connection and in-memory indexes are
owned by it), embeddings run on another, so the event loop never blocks. The embedder loads in
the background; until it is ready, or if it fails, storage and search work lexically (BM25) and
items are embedded later by a back-fill.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from google.protobuf.message import Message

from coda import logs
from coda.bus.publisher import EventPublisher
from coda.config import MemoryConfig
from coda.memory import metrics
from coda.memory.consolidation import summarize
from coda.memory.embedders import Embedder, load_embedder
from coda.memory.model import (
    ANYWHERE,
    DEFAULT_IMPORTANCE,
    Item,
    Scope,
    Turn,
    check_importance,
    check_kind,
    check_limit,
    check_text,
    require,
)
from coda.memory.ranking import Weights
from coda.memory.store import Consolidation, Hit, MemoryStore, new_id
from coda.schema import new_event
from coda.v1 import events_pb2

log = logging.getLogger(__name__)

T = TypeVar("T")
SOURCE = "memory"
BACKFILL_BATCH = 64


@dataclass(frozen=True)
class Recall:
    hits: list[Hit]
    turns: list[Turn]


def weights_of(config: MemoryConfig) -> Weights:
    return Weights(
        semantic=config.semantic_weight,
        lexical=config.lexical_weight,
        importance=config.importance_weight,
        recency=config.recency_weight,
        recency_half_life_seconds=config.recency_half_life_seconds,
    )


class MemoryWorker:
    def __init__(
        self,
        config: MemoryConfig,
        publisher: EventPublisher | None = None,
        embedder_loader: Callable[[], Embedder | None] | None = None,
    ) -> None:
        self.config = config
        self._publisher = publisher
        self._load_embedder = embedder_loader or (lambda: load_embedder(config.embedder, config.embedder_model_dir))
        self._db_thread = ThreadPoolExecutor(1, thread_name_prefix="memory-db")
        self._embed_thread = ThreadPoolExecutor(1, thread_name_prefix="memory-embed")
        self._store: MemoryStore | None = None
        self.embedder: Embedder | None = None
        #: "loading", "ready", "failed" or "off".
        self.embedder_state = "off" if config.embedder == "none" else "loading"
        self._tasks: list[asyncio.Task[None]] = []
        self._backfill: asyncio.Task[None] | None = None
        self._backfill_again = False
        self.embedder_ready = asyncio.Event()

    # --- lifecycle

    async def start(self, load_embedder_in_background: bool = True) -> None:
        embedder_name = "" if self.config.embedder == "none" else self._embedder_name()
        with logs.progress(log, "opening memory store", path=self.config.path):
            self._store = await self._db(MemoryStore, self.config.path, embedder_name, weights_of(self.config))
        # The loaded items live as long as the process: keep the cyclic GC from rescanning them
        # (at 100,000 items a full collection otherwise adds tens of milliseconds to some requests).
        gc.freeze()
        await self._refresh_gauges()
        if self.embedder_state == "loading":
            task = asyncio.create_task(self._load_embedder_task(), name="memory-embedder-load")
            self._tasks.append(task)
            if not load_embedder_in_background:
                await task
        else:
            self.embedder_ready.set()
        if self.config.consolidate_interval_seconds > 0:
            self._tasks.append(asyncio.create_task(self._consolidate_periodically(), name="memory-consolidate"))

    def _embedder_name(self) -> str:
        # Known before the model loads so stored vectors of another model are not mixed in.
        return {"minilm": "all-MiniLM-L6-v2"}.get(self.config.embedder, self.config.embedder)

    async def stop(self) -> None:
        tasks = [*self._tasks, *([self._backfill] if self._backfill else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._store is not None:
            await self._db(self._store.close)
            self._store = None
        self._db_thread.shutdown(wait=True)
        self._embed_thread.shutdown(wait=False, cancel_futures=True)

    async def _load_embedder_task(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            with logs.progress(log, "loading embedding model", engine=self.config.embedder):
                embedder = await loop.run_in_executor(self._embed_thread, self._load_embedder)
        except Exception as exc:
            self.embedder_state = "failed"
            log.warning(
                "embedding model unavailable; memory search is lexical only",
                extra={"engine": self.config.embedder, "error": str(exc)},
            )
            return
        finally:
            self.embedder_ready.set()
        self.embedder = embedder
        self.embedder_state = "ready" if embedder is not None else "off"
        self.kick_backfill()

    # --- thread helpers

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._db_thread, lambda: fn(*args, **kwargs))

    @property
    def store(self) -> MemoryStore:
        if self._store is None:
            raise RuntimeError("memory store is not open")
        return self._store

    async def _embed(self, texts: Sequence[str]) -> np.ndarray | None:
        """Embeddings of texts, or None while no embedder is usable (callers fall back to lexical)."""
        embedder = self.embedder
        if embedder is None or not texts:
            return None
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._embed_thread, embedder.embed, list(texts))
        except Exception:
            log.exception("embedding failed; continuing without vectors")
            return None

    def kick_backfill(self) -> None:
        """Embed the items stored without a vector (while the model loaded, or after consolidation)."""
        if self.embedder is None:
            return
        if self._backfill is not None and not self._backfill.done():
            self._backfill_again = True
            return
        self._backfill = asyncio.create_task(self._backfill_task(), name="memory-backfill")

    async def _backfill_task(self) -> None:
        while True:
            self._backfill_again = False
            pending = await self._db(self.store.missing_embeddings, BACKFILL_BATCH)
            if not pending:
                if self._backfill_again:
                    continue
                break
            vectors = await self._embed([text for _, text in pending])
            if vectors is None:
                break
            await self._db(self.store.set_embeddings, [i for i, _ in pending], vectors)
        await self._refresh_gauges()

    async def wait_backfilled(self) -> None:
        await self.embedder_ready.wait()
        while self._backfill is not None and not self._backfill.done():
            await asyncio.shield(self._backfill)

    async def _refresh_gauges(self) -> None:
        metrics.ITEMS.set(len(self.store))
        metrics.EMBEDDED_ITEMS.set(self.store.embedded_count)

    def _publish(self, payload: Message, session_id: str = "", correlation_id: str = "", event_id: str = "") -> None:
        """`event_id`: chosen by a caller that returns it, so whoever forwards the event keeps its id."""
        if self._publisher is not None:
            self._publisher.publish(
                new_event(SOURCE, payload, session_id=session_id, correlation_id=correlation_id, event_id=event_id)
            )

    # --- long-term items

    async def store_item(self, item: Item, correlation_id: str = "", event_id: str = "") -> Item:
        check_text(item.text, self.config.max_text_chars)
        check_kind(item.kind)
        check_importance(item.importance)
        (stored,) = await self._store_items([_fresh(item)], correlation_id, [event_id])
        return stored

    async def _store_items(
        self, items: list[Item], correlation_id: str = "", event_ids: list[str] | None = None
    ) -> list[Item]:
        vectors = await self._embed([i.text for i in items])
        stored = await self._db(self.store.store_many, items, vectors)
        if vectors is None and self.embedder is not None:
            self.kick_backfill()
        await self._refresh_gauges()
        for index, item in enumerate(stored):
            self._publish(
                events_pb2.MemoryStored(
                    memory_id=item.id, kind=item.kind, importance=item.importance, preview=item.text[:80]
                ),
                session_id=item.session_id,
                correlation_id=correlation_id,
                event_id=event_ids[index] if event_ids else "",
            )
        return stored

    async def search(
        self,
        query: str,
        limit: int,
        scope: Scope = ANYWHERE,
        min_score: float = 0.0,
        correlation_id: str = "",
        touch: bool = False,
        event_id: str = "",
    ) -> list[Hit]:
        if query.strip() or not (scope.user_id or scope.session_id):
            check_text(query, self.config.max_text_chars, "query")
        # else: an empty query lists a user's or a session's items (never every item at once).
        check_limit(limit, self.config.max_results)
        require(0.0 <= min_score <= 1.0, f"min_score must be within 0..1, got {min_score}")
        for kind in scope.kinds:
            check_kind(kind)
        started = time.perf_counter()
        vectors = await self._embed([query]) if query.strip() else None
        query_vector = None if vectors is None else vectors[0]
        hits = await self._db(
            self.store.search,
            query,
            query_vector,
            limit or 10,
            scope,
            min_score,
            min_relevance=self.config.min_relevance,
        )
        if touch and hits:
            await self._db(self.store.touch, [h.item.id for h in hits])
        elapsed = time.perf_counter() - started
        metrics.SEARCH_SECONDS.observe(elapsed)
        self._publish(
            events_pb2.MemoryRetrieved(
                query=query[:200],
                memory_ids=[h.item.id for h in hits],
                scores=[h.score for h in hits],
                duration_ms=elapsed * 1000.0,
            ),
            session_id=scope.session_id,
            correlation_id=correlation_id,
            event_id=event_id,
        )
        return hits

    async def recall(
        self,
        session_id: str,
        user_id: str,
        text: str,
        max_items: int,
        max_turns: int,
        correlation_id: str = "",
        event_id: str = "",
    ) -> Recall:
        require(bool(session_id or user_id), "recall needs a session_id or a user_id")
        check_limit(max_items, self.config.max_results, "max_items")
        check_limit(max_turns, self.config.max_results, "max_turns")
        hits: list[Hit] = []
        if text.strip():
            hits = await self.search(
                text,
                max_items or self.config.recall_items,
                Scope(user_id=user_id, session_id=session_id),
                correlation_id=correlation_id,
                touch=True,
                event_id=event_id,
            )
        turns = await self.history(session_id, max_turns) if session_id else []
        return Recall(hits, turns)

    async def update(
        self,
        item_id: str,
        *,
        text: str | None = None,
        kind: str | None = None,
        importance: float | None = None,
        correlation_id: str = "",
    ) -> Item:
        require(bool(item_id), "item id is missing")
        require(text is not None or kind is not None or importance is not None, "no field to update")
        if text is not None:
            check_text(text, self.config.max_text_chars)
        if kind is not None:
            check_kind(kind)
        if importance is not None:
            check_importance(importance)
        vectors = await self._embed([text]) if text is not None else None
        item = await self._db(
            self.store.update,
            item_id,
            text=text,
            kind=kind,
            importance=importance,
            embedding=None if vectors is None else vectors[0],
        )
        if text is not None and vectors is None:
            self.kick_backfill()
        fields = [n for n, v in (("text", text), ("kind", kind), ("importance", importance)) if v is not None]
        self._publish(
            events_pb2.MemoryUpdated(memory_id=item.id, fields=fields),
            session_id=item.session_id,
            correlation_id=correlation_id,
        )
        return item

    async def forget_ids(self, item_ids: Sequence[str], correlation_id: str = "") -> list[str]:
        require(bool(item_ids) and all(item_ids), "no ids to forget")
        deleted = await self._db(self.store.forget_ids, item_ids)
        await self._forgotten(deleted, "id", correlation_id)
        return deleted

    async def forget_query(
        self, query: str, min_score: float, user_id: str = "", correlation_id: str = ""
    ) -> list[str]:
        check_text(query, self.config.max_text_chars, "query")
        # A zero threshold would delete anything that shares a word with the query.
        require(0.0 < min_score <= 1.0, f"min_score must be within (0, 1] to forget by query, got {min_score}")
        vectors = await self._embed([query])
        hits = await self._db(
            self.store.search,
            query,
            None if vectors is None else vectors[0],
            len(self.store) or 1,
            Scope(user_id=user_id),
            min_score,
        )
        deleted = await self._db(self.store.forget_ids, [h.item.id for h in hits])
        await self._forgotten(deleted, "query", correlation_id)
        return deleted

    async def forget_session(self, session_id: str, correlation_id: str = "") -> tuple[list[str], int]:
        require(bool(session_id), "session_id is empty")
        deleted, turns = await self._db(self.store.forget_session, session_id)
        await self._forgotten(deleted, "session", correlation_id, session_id)
        return deleted, turns

    async def forget_user(self, user_id: str, correlation_id: str = "") -> tuple[list[str], int]:
        require(bool(user_id), "user_id is empty")
        deleted, turns = await self._db(self.store.forget_user, user_id)
        await self._forgotten(deleted, "user", correlation_id)
        return deleted, turns

    async def _forgotten(self, ids: list[str], scope: str, correlation_id: str, session_id: str = "") -> None:
        await self._refresh_gauges()
        self._publish(
            events_pb2.MemoryForgotten(memory_ids=ids, scope=scope),
            session_id=session_id,
            correlation_id=correlation_id,
        )

    # --- short-term turns

    async def add_turn(self, session_id: str, user_id: str, turn: Turn) -> Turn:
        require(bool(session_id), "session_id is empty")
        require(bool(turn.user_text.strip() or turn.assistant_text.strip()), "turn has no text")
        for text in (turn.user_text, turn.assistant_text):
            require(len(text) <= self.config.max_text_chars, f"turn text over {self.config.max_text_chars} characters")
        turn = Turn(
            turn.turn_id or new_id(), turn.user_text, turn.assistant_text, turn.time or time.time(), turn.interrupted
        )
        evicted = await self._db(self.store.add_turn, session_id, user_id, turn, self.config.short_term_keep_turns)
        if evicted:
            # Turns leaving the short-term window live on as long-term episodes.
            await self._store_items(
                [
                    Item(
                        id="",
                        text=episode_text(t),
                        kind="episode",
                        importance=DEFAULT_IMPORTANCE["episode"],
                        session_id=session_id,
                        user_id=user_id,
                        created_at=t.time,
                    )
                    for t in evicted
                ]
            )
        return turn

    async def history(self, session_id: str, max_turns: int = 0, max_tokens: int = 0) -> list[Turn]:
        require(bool(session_id), "session_id is empty")
        check_limit(max_turns, self.config.max_results, "max_turns")
        return await self._db(
            self.store.history,
            session_id,
            max_turns or self.config.short_term_turns,
            max_tokens or self.config.short_term_tokens,
        )

    # --- consolidation

    async def consolidate(
        self, user_id: str = "", session_id: str = "", older_than_seconds: float | None = None
    ) -> list[Consolidation]:
        age = self.config.consolidate_after_seconds if older_than_seconds is None else older_than_seconds
        require(age >= 0, "older_than_seconds is negative")
        sentences = self.config.summary_sentences

        def summarize_items(items: list[Item], vectors: np.ndarray | None) -> str:
            return summarize([i.text for i in items], sentences, vectors)

        results = await self._db(
            self.store.consolidate,
            time.time() - age,
            Scope(user_id=user_id, session_id=session_id),
            self.config.consolidate_min_episodes,
            summarize_items,
        )
        if results:
            self.kick_backfill()
            await self._refresh_gauges()
        for result in results:
            self._publish(
                events_pb2.MemoryConsolidated(summary_id=result.summary.id, source_ids=result.source_ids),
                session_id=result.summary.session_id,
            )
        return results

    async def _consolidate_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.config.consolidate_interval_seconds)
            try:
                await self.consolidate()
            except Exception:
                log.exception("periodic memory consolidation failed")


def episode_text(turn: Turn) -> str:
    parts = []
    if turn.user_text.strip():
        parts.append(f"User: {turn.user_text.strip()}")
    if turn.assistant_text.strip():
        parts.append(f"Assistant: {turn.assistant_text.strip()}")
    return "\n".join(parts)


def _fresh(item: Item) -> Item:
    """Ids and timestamps are assigned by the store, never taken from a client; no importance: the kind's."""
    return Item(
        id="",
        text=item.text,
        kind=item.kind,
        importance=item.importance or DEFAULT_IMPORTANCE[item.kind],
        session_id=item.session_id,
        user_id=item.user_id,
    )
