"""`remember`, `recall` and `forget`: long-term memory through the Memory service over gRPC.

Scope: with a user_id the item belongs to the user (it outlives the session); without one it
belongs to the session. Searches cover the user, the session and global items; `forget` deletes
or edits only the user's and the session's own, never a global item.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from coda.tools.api import ErrorCode, InvalidArguments, Tool, ToolContext, ToolFailure
from coda.tools.facts import fact_key
from coda.tools.lists import bare_entry, without_entry
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
        "query": {
            "type": "string",
            "minLength": 1,
            "maxLength": 1000,
            "description": "What to look for; 'me' for everything the user has told about themselves.",
        },
        "limit": {"type": "integer", "minimum": 1, "maximum": 50, "description": "Most results (default 5)."},
    },
    "required": ["query"],
    "additionalProperties": False,
}


FORGET_PARAMETERS = {
    "type": "object",
    "properties": {
        "query": {
            "type": "string",
            "minLength": 1,
            "maxLength": 1000,
            "description": "What to forget ('my gym locker code'); with `item`, the list ('shopping list').",
        },
        "item": {
            "type": "string",
            "minLength": 1,
            "maxLength": 200,
            "description": "One entry to take off the list named by `query` ('eggs').",
        },
    },
    "required": ["query"],
    "additionalProperties": False,
}
#: Memories forgotten along with the best match: those scoring at least this share of its score
#: ("forget my sister" takes every memory about her, not one that only shares a word).
FORGET_SHARE = 0.75
#: Most memories one search for `forget` looks at.
FORGET_LIMIT = 20


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
    """Stores the fact; one that gives a new value to a single-valued fact ("my locker code is 5678",
    "my brother moved to Austin") replaces the old one instead (coda/tools/facts.py)."""
    key = fact_key(args["text"])
    earlier = []
    if key is not None:
        earlier = [
            hit.item
            for hit in await _search_owned(ctx, args["text"])
            if hit.item.kind in (memory_pb2.MEMORY_KIND_FACT, memory_pb2.MEMORY_KIND_PREFERENCE)
            and fact_key(hit.item.text) == key
        ]
    if earlier:
        kept = memory_pb2.MemoryItem(id=earlier[0].id, text=args["text"], kind=KINDS[args.get("kind", "fact")])
        try:
            updated = await _memory(ctx).Update(
                memory_pb2.UpdateRequest(item=kept, fields=["text", "kind"], correlation_id=ctx.correlation_id)
            )
        except grpc.aio.AioRpcError as exc:
            raise _failure(exc) from None
        await _forget_ids(ctx, [item.id for item in earlier[1:]])
        return {"stored": True, **_item(updated.item), "replaced": [item.text for item in earlier]}
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


async def _search(
    ctx: ToolContext, query: str, limit: int, kinds: Sequence[memory_pb2.MemoryKind.ValueType] = ()
) -> list[memory_pb2.ScoredItem]:
    """Memories of the caller's user and session (and global ones) for `query`, best first; an empty
    query lists them, the most important and recent first."""
    request = memory_pb2.SearchRequest(
        query=query,
        limit=limit,
        user_id=ctx.user_id,
        session_id=ctx.session_id,
        kinds=kinds,
        correlation_id=ctx.correlation_id,
    )
    try:
        response = await _memory(ctx).Search(request)
    except grpc.aio.AioRpcError as exc:
        raise _failure(exc) from None
    return list(response.results)


#: A recall of the user as a whole ("what do you know about me?"): no words to search for.
_ABOUT_THE_USER = frozenset({"me", "myself", "about me", "everything", "all", "everything about me", "anything"})


async def _recall(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    if args["query"].strip().lower() in _ABOUT_THE_USER:
        # What the user told about themselves: their facts and preferences, not global ones or
        # past exchanges.
        told = [memory_pb2.MEMORY_KIND_FACT, memory_pb2.MEMORY_KIND_PREFERENCE]
        limit = args.get("limit", 5)
        listed = await _search(ctx, "", min(3 * limit, 50), told)  # global items are listed too: left out
        hits = [hit for hit in listed if _owned(hit.item, ctx)][:limit]
    else:
        hits = await _search(ctx, args["query"], args.get("limit", 5))
    return {"query": args["query"], "results": [{**_item(hit.item), "score": round(hit.score, 4)} for hit in hits]}


def _owned(item: memory_pb2.MemoryItem, ctx: ToolContext) -> bool:
    """Whether the caller may delete `item`: the user's own, or the session's; never a global one."""
    return bool(ctx.user_id and item.user_id == ctx.user_id) or bool(
        item.session_id and item.session_id == ctx.session_id
    )


async def _search_owned(ctx: ToolContext, query: str) -> list[memory_pb2.ScoredItem]:
    return [hit for hit in await _search(ctx, query, FORGET_LIMIT) if _owned(hit.item, ctx)]


async def _forget_ids(ctx: ToolContext, ids: list[str]) -> None:
    if not ids:
        return
    request = memory_pb2.ForgetRequest(ids=memory_pb2.ForgetIds(ids=ids), correlation_id=ctx.correlation_id)
    try:
        await _memory(ctx).Forget(request)
    except grpc.aio.AioRpcError as exc:
        raise _failure(exc) from None


async def _forget(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    query = args["query"].strip()
    if "item" in args:
        return await _take_off_list(query, args["item"], ctx)
    hits = await _search_owned(ctx, query)
    best = max((hit.score for hit in hits), default=0.0)
    chosen = [hit.item for hit in hits if best > 0 and hit.score >= FORGET_SHARE * best]
    await _forget_ids(ctx, [item.id for item in chosen])
    return {"query": query, "forgotten": [item.text for item in chosen]}


async def _take_off_list(list_name: str, entry: str, ctx: ToolContext) -> dict[str, Any]:
    """Edits every memory of the list that names the entry (deleting one left empty)."""
    list_name = list_name.lower().removeprefix("my ").removeprefix("the ").strip()
    if not bare_entry(entry):
        raise InvalidArguments("item names no entry, only an article or punctuation", field="/item")
    removed, emptied = False, []
    for hit in await _search_owned(ctx, f"my {list_name} includes {entry}"):
        found, text = without_entry(hit.item.text, list_name, entry)
        if not found:
            continue
        removed = True
        if text is None:
            emptied.append(hit.item.id)
            continue
        edited = memory_pb2.MemoryItem(id=hit.item.id, text=text)
        try:
            await _memory(ctx).Update(
                memory_pb2.UpdateRequest(item=edited, fields=["text"], correlation_id=ctx.correlation_id)
            )
        except grpc.aio.AioRpcError as exc:
            raise _failure(exc) from None
    await _forget_ids(ctx, emptied)
    return {"list": list_name, "item": entry, "removed": removed}


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
FORGET = Tool(
    name="forget",
    description=(
        "Delete what long-term memory holds about something the user asks to be forgotten, or, with"
        " `item`, take one entry off a list the user keeps ('take eggs off my shopping list')."
    ),
    parameters=FORGET_PARAMETERS,
    run=_forget,
)
