"""`coda mcp`: Coda's tools, and memory search/remember, served over MCP from a running Coda.

An MCP `tools/list` is the Tools service's ListTools (each tool's JSON Schema passed through) plus
`memory_search` and `memory_remember`; a `tools/call` is one call on a Tools.Execute stream (its
progress relayed as MCP progress, the MCP request's cancellation cancelling the gRPC call), or a
Memory Search / Store. Failures come back as MCP tool results flagged `isError`, with Coda's error
code and message, so the calling model can read and correct them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import mcp_types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel import Server

from coda import __version__
from coda.tools.builtin.memory import KIND_NAMES, KINDS
from coda.tools.mcp import core, metrics
from coda.v1 import events_pb2, memory_pb2, memory_pb2_grpc, tools_pb2, tools_pb2_grpc

log = logging.getLogger(__name__)

MEMORY_SEARCH = "memory_search"
MEMORY_REMEMBER = "memory_remember"
MEMORY_TOOLS = [
    mcp_types.Tool(
        name=MEMORY_SEARCH,
        description="Search Coda's long-term memory (facts, preferences, past conversations) for a query.",
        input_schema={
            "type": "object",
            "properties": {
                "query": {"type": "string", "minLength": 1, "description": "What to look for."},
                "limit": {"type": "integer", "minimum": 1, "maximum": 50, "description": "Most results (default 5)."},
            },
            "required": ["query"],
            "additionalProperties": False,
        },
    ),
    mcp_types.Tool(
        name=MEMORY_REMEMBER,
        description="Store a fact or preference in Coda's long-term memory.",
        input_schema={
            "type": "object",
            "properties": {
                "text": {"type": "string", "minLength": 1, "description": "What to remember."},
                "kind": {"type": "string", "enum": list(KINDS), "description": "'fact' (default) or 'preference'."},
            },
            "required": ["text"],
            "additionalProperties": False,
        },
    ),
]


class CodaMcp:
    """The MCP handlers, backed by a Coda's Tools and Memory services over gRPC."""

    def __init__(self, tools_channel: grpc.aio.Channel, memory_channel: grpc.aio.Channel, user_id: str) -> None:
        self._tools = tools_pb2_grpc.ToolsStub(tools_channel)
        self._memory = memory_pb2_grpc.MemoryStub(memory_channel)
        self._user_id = user_id
        self._calls = 0

    def server(self) -> Server[Any]:
        return Server(
            "coda",
            version=__version__,
            instructions="Coda's tools (time, arithmetic, timers, memory, ...) and its long-term memory.",
            on_list_tools=self.list_tools,
            on_call_tool=self.call_tool,
        )

    async def list_tools(
        self, ctx: ServerRequestContext[Any], params: mcp_types.PaginatedRequestParams | None
    ) -> mcp_types.ListToolsResult:
        start = time.perf_counter()
        outcome = "ok"
        try:
            response = await self._tools.ListTools(tools_pb2.ListToolsRequest(), timeout=10.0)
        except grpc.aio.AioRpcError as exc:
            outcome = "unavailable"
            log.warning("Coda's Tools service did not list tools", extra={"code": exc.code().name})
            return mcp_types.ListToolsResult(tools=list(MEMORY_TOOLS))
        finally:
            metrics.SERVED_REQUESTS.labels("tools/list", outcome).inc()
            metrics.SERVED_DURATION.labels("tools/list").observe(time.perf_counter() - start)
        tools = [core.served_tool(t.name, t.description, t.parameters_json_schema) for t in response.tools]
        return mcp_types.ListToolsResult(tools=[*tools, *MEMORY_TOOLS])

    async def call_tool(
        self, ctx: ServerRequestContext[Any], params: mcp_types.CallToolRequestParams
    ) -> mcp_types.CallToolResult:
        start = time.perf_counter()
        result: mcp_types.CallToolResult | None = None
        try:
            arguments = dict(params.arguments or {})
            if params.name == MEMORY_SEARCH:
                result = await self._memory_search(arguments)
            elif params.name == MEMORY_REMEMBER:
                result = await self._memory_remember(arguments)
            else:
                result = await self._execute(ctx, params.name, arguments)
            return result
        finally:
            if result is None:
                outcome = "cancelled"
            elif result.is_error:
                outcome = "tool_error"
            else:
                outcome = "ok"
            metrics.SERVED_REQUESTS.labels("tools/call", outcome).inc()
            metrics.SERVED_DURATION.labels("tools/call").observe(time.perf_counter() - start)

    async def _execute(
        self, ctx: ServerRequestContext[Any], name: str, arguments: dict[str, Any]
    ) -> mcp_types.CallToolResult:
        self._calls += 1
        call = tools_pb2.ToolCall(
            call_id=f"mcp-{self._calls}", name=name, arguments_json=json.dumps(arguments), user_id=self._user_id
        )

        async def requests() -> AsyncIterator[tools_pb2.ExecuteRequest]:
            yield tools_pb2.ExecuteRequest(call=call)
            await asyncio.Event().wait()  # keep the stream open until the answer; cancelling the RPC ends it

        rpc = self._tools.Execute(requests())
        try:
            async for response in rpc:
                kind = response.WhichOneof("response")
                if kind == "progress":
                    fraction = response.progress.fraction
                    await ctx.session.report_progress(
                        max(fraction, 0.0), 1.0 if fraction >= 0 else None, response.progress.message or None
                    )
                elif kind == "result":
                    return core.served_result(response.result.result_json)
                elif kind == "error":
                    error = response.error
                    code = events_pb2.ToolErrorCode.Name(error.code).removeprefix("TOOL_ERROR_CODE_")
                    return core.served_error(code, error.message, error.field)
        except grpc.aio.AioRpcError as exc:
            return core.served_error("UNAVAILABLE", f"Coda's Tools service: {exc.code().name}: {exc.details()}")
        finally:
            rpc.cancel()
        return core.served_error("UNAVAILABLE", "Coda's Tools service ended the call without an answer")

    async def _memory_search(self, arguments: dict[str, Any]) -> mcp_types.CallToolResult:
        query = arguments.get("query")
        limit = arguments.get("limit", 5)
        if not isinstance(query, str) or not query.strip():
            return core.served_error("INVALID_ARGUMENTS", "query must be a non-empty string", "/query")
        if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 50:
            return core.served_error("INVALID_ARGUMENTS", "limit must be an integer from 1 to 50", "/limit")
        try:
            response = await self._memory.Search(
                memory_pb2.SearchRequest(query=query, limit=limit, user_id=self._user_id), timeout=10.0
            )
        except grpc.aio.AioRpcError as exc:
            return _memory_error(exc)
        hits = [
            {
                "id": hit.item.id,
                "text": hit.item.text,
                "kind": KIND_NAMES.get(hit.item.kind, "unspecified"),
                "score": round(hit.score, 4),
            }
            for hit in response.results
        ]
        return core.served_result(json.dumps({"query": query, "results": hits}, ensure_ascii=False))

    async def _memory_remember(self, arguments: dict[str, Any]) -> mcp_types.CallToolResult:
        text = arguments.get("text")
        kind = arguments.get("kind", "fact")
        if not isinstance(text, str) or not text.strip():
            return core.served_error("INVALID_ARGUMENTS", "text must be a non-empty string", "/text")
        if kind not in KINDS:
            return core.served_error("INVALID_ARGUMENTS", f"kind must be one of {', '.join(KINDS)}", "/kind")
        item = memory_pb2.MemoryItem(text=text, kind=KINDS[kind], user_id=self._user_id)
        try:
            response = await self._memory.Store(memory_pb2.StoreRequest(item=item), timeout=10.0)
        except grpc.aio.AioRpcError as exc:
            return _memory_error(exc)
        stored = {"stored": True, "id": response.item.id, "text": response.item.text, "kind": kind}
        return core.served_result(json.dumps(stored, ensure_ascii=False))


def _memory_error(exc: grpc.aio.AioRpcError) -> mcp_types.CallToolResult:
    code = "INVALID_ARGUMENTS" if exc.code() == grpc.StatusCode.INVALID_ARGUMENT else "UNAVAILABLE"
    return core.served_error(code, f"Coda's Memory service: {exc.code().name}: {exc.details()}")
