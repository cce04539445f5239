"""`remember` and `recall`: long-term memory through the Memory service over gRPC.

Scope: with a user_id the item belongs to the user (it outlives the session); without one it
belongs to the session. Searches cover the user, the session and global items.
"""

from __future__ import annotations

from typing import Any

import grpc

from coda.tools.api import ErrorCode, InvalidArguments, Tool, ToolContext, ToolFailure
from coda.v1 import memory_pb2, memory_pb2_grpc

KINDS = {"fact": memory_pb2.MEMORY_KIND_FACT, "preference": memory_pb2.MEMORY_KIND_PREFERENCE}
KIND_NAMES = {value: name for name, value in KINDS.items()} | {
    memory_pb2.MEMORY_KIND_EPISODE: "episode",
    memory_pb2.MEMORY_KIND_SUMMARY: "summary",
    memory_pb2.MEMORY_KIND_UNSPECIFIED: "unspecified",
}

REMEMBER_PARAMETERS = {
    "type": "object",
    "properties": {
        "text": {"type": "string", "minLength": 1, "maxLength": 4000, "description": "What to remember."},
        "kind": {"type": "string", "enum": list(KINDS), "description": "'fact' (default) or 'preference'."},
    },
    "required": ["text"],
    "additionalProperties": False,
}

RECALL_PARAMETERS = {
    "type": "object",
    "properties": {
        "query": {"type": "string", "minLength": 1, "maxLength": 1000, "description": "What to look for."},
        "limit": {"type": "integer", "minimum": 1, "maximum": 50, "description": "Most results (default 5)."},
    },
    "required": ["query"],
    "additionalProperties": False,
}


def _memory(ctx: ToolContext) -> memory_pb2_grpc.MemoryAsyncStub:
    return memory_pb2_grpc.MemoryStub(ctx.channel("memory"))


def _failure(exc: grpc.aio.AioRpcError) -> ToolFailure:
    code = exc.code()
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArguments(f"memory refused the request: {exc.details()}")
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNIMPLEMENTED):
        return ToolFailure(f"memory service unavailable: {exc.details()}", ErrorCode.TOOL_ERROR_CODE_UNAVAILABLE)
    return ToolFailure(f"memory service failed: {code.name}: {exc.details()}")


def _item(item: memory_pb2.MemoryItem) -> dict[str, Any]:
    return {"id": item.id, "text": item.text, "kind": KIND_NAMES.get(item.kind, "unspecified")}


async def _remember(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    item = memory_pb2.MemoryItem(
        text=args["text"],
        kind=KINDS[args.get("kind", "fact")],
        user_id=ctx.user_id,
        session_id="" if ctx.user_id else ctx.session_id,
    )
    try:
        response = await _memory(ctx).Store(memory_pb2.StoreRequest(item=item, correlation_id=ctx.correlation_id))
    except grpc.aio.AioRpcError as exc:
        raise _failure(exc) from None
    return {"stored": True, **_item(response.item)}


async def _recall(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    request = memory_pb2.SearchRequest(
        query=args["query"],
        limit=args.get("limit", 5),
        user_id=ctx.user_id,
        session_id=ctx.session_id,
        correlation_id=ctx.correlation_id,
    )
    try:
        response = await _memory(ctx).Search(request)
    except grpc.aio.AioRpcError as exc:
        raise _failure(exc) from None
    return {
        "query": args["query"],
        "results": [{**_item(hit.item), "score": round(hit.score, 4)} for hit in response.results],
    }


REMEMBER = Tool(
    name="remember",
    description="Store a fact or preference about the user in long-term memory.",
    parameters=REMEMBER_PARAMETERS,
    run=_remember,
)
RECALL = Tool(
    name="recall",
    description="Search long-term memory for facts and preferences relevant to a query.",
    parameters=RECALL_PARAMETERS,
    run=_recall,
)
