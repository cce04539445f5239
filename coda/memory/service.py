"""grpc.aio servicer of coda.v1.Memory: converts messages and maps failures to status codes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from coda.memory import metrics
from coda.memory.model import KINDS, InvalidRequest, Item, NotFound, Scope, Turn
from coda.memory.store import Hit
from coda.memory.worker import MemoryWorker
from coda.schema import new_event_id
from coda.v1 import memory_pb2, memory_pb2_grpc

log = logging.getLogger(__name__)

_KIND_BY_ENUM = {getattr(memory_pb2, f"MEMORY_KIND_{k.upper()}"): k for k in KINDS}
_ENUM_BY_KIND = {k: e for e, k in _KIND_BY_ENUM.items()}
UPDATABLE_FIELDS = ("text", "kind", "importance")


def kind_of(value: int) -> str:
    if value == memory_pb2.MEMORY_KIND_UNSPECIFIED:
        raise InvalidRequest("kind is unspecified; use FACT, PREFERENCE, EPISODE or SUMMARY")
    kind = _KIND_BY_ENUM.get(value)
    if kind is None:
        raise InvalidRequest(f"unknown kind {value}")
    return kind


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def item_message(item: Item) -> memory_pb2.MemoryItem:
    return memory_pb2.MemoryItem(
        id=item.id,
        text=item.text,
        kind=_ENUM_BY_KIND[item.kind],
        importance=item.importance,
        session_id=item.session_id,
        user_id=item.user_id,
        created_at=_timestamp(item.created_at),
        accessed_at=_timestamp(item.accessed_at),
    )


def scored(hits: list[Hit]) -> list[memory_pb2.ScoredItem]:
    return [memory_pb2.ScoredItem(item=item_message(h.item), score=h.score) for h in hits]


def turn_message(turn: Turn) -> memory_pb2.Turn:
    return memory_pb2.Turn(
        turn_id=turn.turn_id,
        user_text=turn.user_text,
        assistant_text=turn.assistant_text,
        time=_timestamp(turn.time),
        interrupted=turn.interrupted,
    )


class MemoryService(memory_pb2_grpc.MemoryServicer):
    def __init__(self, worker: MemoryWorker) -> None:
        self._worker = worker

    # --- operations shared by the unary calls and the Session stream

    async def _store(self, request: memory_pb2.StoreRequest) -> memory_pb2.StoreResponse:
        if not request.HasField("item"):
            raise InvalidRequest("item is missing")
        m = request.item
        item = Item(
            id="",
            text=m.text,
            kind=kind_of(m.kind),
            importance=m.importance,
            session_id=m.session_id,
            user_id=m.user_id,
        )
        # The memory.stored event's id goes back with the item, so a caller forwarding it keeps the id.
        event_id = new_event_id()
        stored = await self._worker.store_item(item, request.correlation_id, event_id)
        return memory_pb2.StoreResponse(item=item_message(stored), event_id=event_id)

    async def _search(self, request: memory_pb2.SearchRequest) -> memory_pb2.SearchResponse:
        scope = Scope(request.user_id, request.session_id, frozenset(kind_of(k) for k in request.kinds))
        hits = await self._worker.search(request.query, request.limit, scope, request.min_score, request.correlation_id)
        return memory_pb2.SearchResponse(results=scored(hits))

    async def _recall(self, request: memory_pb2.RecallRequest) -> memory_pb2.RecallResponse:
        searched = bool(request.text.strip())
        event_id = new_event_id() if searched else ""
        recall = await self._worker.recall(
            request.session_id,
            request.user_id,
            request.text,
            request.max_items,
            request.max_turns,
            request.correlation_id,
            event_id,
        )
        return memory_pb2.RecallResponse(
            items=scored(recall.hits), recent_turns=[turn_message(t) for t in recall.turns], event_id=event_id
        )

    async def _update(self, request: memory_pb2.UpdateRequest) -> memory_pb2.UpdateResponse:
        if not request.HasField("item") or not request.item.id:
            raise InvalidRequest("item.id is missing")
        unknown = sorted(set(request.fields) - set(UPDATABLE_FIELDS))
        if unknown:
            raise InvalidRequest(f"cannot update {', '.join(unknown)}; updatable: {', '.join(UPDATABLE_FIELDS)}")
        if not request.fields:
            raise InvalidRequest(f"fields is empty; name the fields to change ({', '.join(UPDATABLE_FIELDS)})")
        m, fields = request.item, set(request.fields)
        item = await self._worker.update(
            m.id,
            text=m.text if "text" in fields else None,
            kind=kind_of(m.kind) if "kind" in fields else None,
            importance=m.importance if "importance" in fields else None,
            correlation_id=request.correlation_id,
        )
        return memory_pb2.UpdateResponse(item=item_message(item))

    async def _forget(self, request: memory_pb2.ForgetRequest) -> memory_pb2.ForgetResponse:
        target = request.WhichOneof("target")
        correlation_id = request.correlation_id
        turns = 0
        if target == "ids":
            deleted = await self._worker.forget_ids(list(request.ids.ids), correlation_id)
        elif target == "query":
            q = request.query
            deleted = await self._worker.forget_query(q.query, q.min_score, q.user_id, correlation_id)
        elif target == "session_id":
            deleted, turns = await self._worker.forget_session(request.session_id, correlation_id)
        elif target == "user_id":
            deleted, turns = await self._worker.forget_user(request.user_id, correlation_id)
        else:
            raise InvalidRequest("target is missing: give ids, query, session_id or user_id")
        return memory_pb2.ForgetResponse(deleted_ids=deleted, deleted_turns=turns)

    async def _add_turn(self, request: memory_pb2.AddTurnRequest) -> memory_pb2.AddTurnResponse:
        if not request.HasField("turn"):
            raise InvalidRequest("turn is missing")
        t = request.turn
        when = t.time.ToNanoseconds() / 1e9 if t.HasField("time") else 0.0
        await self._worker.add_turn(
            request.session_id, request.user_id, Turn(t.turn_id, t.user_text, t.assistant_text, when, t.interrupted)
        )
        return memory_pb2.AddTurnResponse()

    async def _history(self, request: memory_pb2.HistoryRequest) -> memory_pb2.HistoryResponse:
        turns = await self._worker.history(request.session_id, request.max_turns)
        return memory_pb2.HistoryResponse(turns=[turn_message(t) for t in turns])

    async def _consolidate(self, request: memory_pb2.ConsolidateRequest) -> memory_pb2.ConsolidateResponse:
        results = await self._worker.consolidate(request.user_id, request.session_id, request.older_than_seconds)
        return memory_pb2.ConsolidateResponse(
            summaries=[item_message(r.summary) for r in results],
            consolidated=sum(len(r.source_ids) for r in results),
        )

    # --- unary RPCs

    async def _unary(
        self, operation: str, handler: Callable[[Any], Awaitable[Any]], request: Any, context: grpc.aio.ServicerContext
    ) -> Any:
        try:
            response = await handler(request)
        except InvalidRequest as exc:
            metrics.OPERATIONS.labels(operation, "invalid").inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except NotFound as exc:
            metrics.OPERATIONS.labels(operation, "not_found").inc()
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except Exception as exc:
            metrics.OPERATIONS.labels(operation, "error").inc()
            log.exception("memory operation failed", extra={"operation": operation})
            await context.abort(grpc.StatusCode.INTERNAL, f"{operation} failed: {exc}")
        metrics.OPERATIONS.labels(operation, "ok").inc()
        return response

    async def Store(self, request, context):  # type: ignore[no-untyped-def]
        return await self._unary("store", self._store, request, context)

    async def Search(self, request, context):  # type: ignore[no-untyped-def]
        return await self._unary("search", self._search, request, context)

    async def Recall(self, request, context):  # type: ignore[no-untyped-def]
        return await self._unary("recall", self._recall, request, context)

    async def Update(self, request, context):  # type: ignore[no-untyped-def]
        return await self._unary("update", self._update, request, context)

    async def Forget(self, request, context):  # type: ignore[no-untyped-def]
        return await self._unary("forget", self._forget, request, context)

    async def AddTurn(self, request, context):  # type: ignore[no-untyped-def]
        return await self._unary("add_turn", self._add_turn, request, context)

    async def History(self, request, context):  # type: ignore[no-untyped-def]
        return await self._unary("history", self._history, request, context)

    async def Consolidate(self, request, context):  # type: ignore[no-untyped-def]
        return await self._unary("consolidate", self._consolidate, request, context)

    # --- the Session stream: one failing operation answers with an error and the stream goes on

    async def Session(
        self, request_iterator: AsyncIterator[memory_pb2.SessionRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[memory_pb2.SessionResponse]:
        handlers: dict[str, Callable[[Any], Awaitable[Any]]] = {
            "store": self._store,
            "search": self._search,
            "recall": self._recall,
            "update": self._update,
            "forget": self._forget,
            "add_turn": self._add_turn,
            "history": self._history,
        }
        async for request in request_iterator:
            operation = request.WhichOneof("operation")
            response = memory_pb2.SessionResponse(request_id=request.request_id)
            try:
                if operation is None:
                    raise InvalidRequest("operation is missing")
                result = await handlers[operation](getattr(request, operation))
                getattr(response, operation).CopyFrom(result)
                outcome = "ok"
            except InvalidRequest as exc:
                response.error.CopyFrom(memory_pb2.SessionError(code="INVALID_ARGUMENT", message=str(exc)))
                outcome = "invalid"
            except NotFound as exc:
                response.error.CopyFrom(memory_pb2.SessionError(code="NOT_FOUND", message=str(exc)))
                outcome = "not_found"
            except Exception as exc:
                log.exception("memory session operation failed", extra={"operation": operation})
                response.error.CopyFrom(memory_pb2.SessionError(code="INTERNAL", message=f"{operation} failed: {exc}"))
                outcome = "error"
            metrics.OPERATIONS.labels(operation or "unknown", outcome).inc()
            yield response
