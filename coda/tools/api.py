"""The API for writing a tool: `Tool`, `ToolContext`, the `@tool` decorator and `ToolFailure`.

A tool is a name, a description, a JSON Schema (Draft 2020-12) of its arguments object and an
async `run(args, ctx)` returning anything JSON-serializable. Arguments are validated against the
schema before `run` is called, so `run` may trust their shape. To fail with a specific reason,
raise `ToolFailure(message, code=..., field=...)`; any other exception is reported as FAILED and
counts towards the tool's circuit breaker.

    from coda.tools import tool

    @tool(name="add", description="Add two numbers.",
          parameters={"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                      "required": ["a", "b"], "additionalProperties": False})
    def add(a: float, b: float) -> float:
        return a + b

Third-party packages expose tools through the `coda.tools` entry point group (each entry point is
a Tool, a list of Tools, or a callable returning them) or through `tools.plugins` in the config.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc

from coda.bus.publisher import EventPublisher
from coda.v1 import events_pb2

ErrorCode = events_pb2.ToolErrorCode

#: A schema for tools that take no arguments.
NO_ARGUMENTS: Mapping[str, Any] = {"type": "object", "properties": {}, "additionalProperties": False}


class ToolFailure(Exception):
    """A tool call failed for a reason the caller should see (code, message, offending field)."""

    def __init__(
        self, message: str, code: ErrorCode.ValueType = ErrorCode.TOOL_ERROR_CODE_FAILED, field: str = ""
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        #: For invalid arguments: the JSON pointer of the offending field, e.g. "/timezone".
        self.field = field


class InvalidArguments(ToolFailure):
    """The arguments are not acceptable; `field` names the offending one as a JSON pointer."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message, ErrorCode.TOOL_ERROR_CODE_INVALID_ARGUMENTS, field)


ProgressSink = Callable[[str, float], None]


@dataclass
class ToolContext:
    """What a running tool may use besides its arguments."""

    call_id: str
    tool_name: str
    session_id: str = ""
    user_id: str = ""
    correlation_id: str = ""
    #: Publishes events to the bus; never blocks.
    publisher: EventPublisher | None = None
    #: A gRPC channel to another component by name ("memory", "bus", ...).
    channel_factory: Callable[[str], grpc.aio.Channel] | None = None
    _progress: ProgressSink | None = field(default=None, repr=False)

    def progress(self, message: str, fraction: float = -1.0) -> None:
        """Report progress to the caller (and the bus); `fraction` is 0..1, or negative when unknown."""
        if self._progress is None:
            return
        if not math.isfinite(fraction):
            fraction = -1.0
        elif fraction > 1.0:
            fraction = 1.0
        self._progress(str(message), float(fraction))

    def channel(self, component: str) -> grpc.aio.Channel:
        """A channel to another Coda component; the host owns and closes it."""
        if self.channel_factory is None:
            raise ToolFailure(
                f"no gRPC channels available to reach {component!r}", ErrorCode.TOOL_ERROR_CODE_UNAVAILABLE
            )
        return self.channel_factory(component)


ToolFunction = Callable[[dict[str, Any], ToolContext], Awaitable[Any]]


@dataclass(frozen=True)
class Tool:
    """One callable tool."""

    name: str
    description: str
    #: JSON Schema (Draft 2020-12) of the arguments object.
    parameters: Mapping[str, Any]
    #: `async def run(args, ctx) -> JSON-serializable`.
    run: ToolFunction = field(repr=False)
    #: This tool's own default timeout in seconds (None: the configured default).
    timeout_seconds: float | None = None
    #: The circuit breaker its failures count against; empty: its own, named after the tool. The tools
    #: of one MCP server share one ("mcp:<server>"), since they fail together when the server does.
    breaker: str = ""


def tool(
    name: str | None = None,
    description: str | None = None,
    parameters: Mapping[str, Any] | None = None,
    timeout_seconds: float | None = None,
) -> Callable[[Callable[..., Any]], Tool]:
    """Turn a plain function into a Tool.

    The function receives the validated arguments as keyword arguments, plus the ToolContext as
    `ctx` when it has a parameter of that name. It may be async, or sync (then it runs in a worker
    thread so it cannot stall the service; a timeout abandons, but cannot interrupt, the thread).
    `name` defaults to the function's name and `description` to its docstring's first paragraph.
    """

    def wrap(function: Callable[..., Any]) -> Tool:
        wants_ctx = "ctx" in inspect.signature(function).parameters
        is_async = inspect.iscoroutinefunction(function)

        @functools.wraps(function)
        async def run(args: dict[str, Any], ctx: ToolContext) -> Any:
            kwargs = {**args, "ctx": ctx} if wants_ctx else dict(args)
            if is_async:
                return await function(**kwargs)
            return await asyncio.to_thread(functools.partial(function, **kwargs))

        doc = inspect.getdoc(function) or ""
        return Tool(
            name=name or function.__name__,
            description=description if description is not None else doc.split("\n\n", 1)[0].replace("\n", " "),
            parameters=parameters if parameters is not None else NO_ARGUMENTS,
            run=run,
            timeout_seconds=timeout_seconds,
        )

    return wrap
