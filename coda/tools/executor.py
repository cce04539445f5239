"""Running tool calls: validation, timeout, cancellation, output cap, breaker, events and metrics.

`Executor.run` takes one call from start to its one final message (a ToolResult or a ToolError),
always preceded by a ToolCallStarted and possibly ToolProgress messages, each handed to `emit` and
published on the bus as the matching tool.* event. `CallSession` holds the calls of one Execute
stream: they run concurrently, are matched by call_id, and a bad one never affects the others.
Nothing here touches a socket; the servicer only converts messages.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import Message

from coda.bus.publisher import EventPublisher
from coda.schema import new_event
from coda.tools import metrics
from coda.tools.api import ErrorCode, ToolContext, ToolFailure
from coda.tools.breakers import BreakerOpen, Breakers
from coda.tools.registry import ToolRegistry
from coda.tools.validation import parse_arguments, validate_arguments
from coda.v1 import events_pb2, tools_pb2

log = logging.getLogger(__name__)

#: Calls one Execute stream may have running at once; more are refused with UNAVAILABLE.
MAX_CALLS_IN_FLIGHT = 256
#: Progress messages longer than this are cut.
MAX_PROGRESS_CHARS = 1024

#: Hands a payload to the caller's stream, with the id of its bus event ("" when not published).
Emit = Callable[[Message, str], None]


@dataclass(frozen=True)
class CallRequest:
    call_id: str
    name: str
    arguments_json: str = ""
    #: Zero: the tool's configured timeout.
    timeout_seconds: float = 0.0
    session_id: str = ""
    correlation_id: str = ""
    user_id: str = ""


@dataclass(frozen=True)
class Limits:
    default_timeout_seconds: float = 10.0
    #: Per-tool timeouts, overriding the tool's own and the default.
    timeouts: Mapping[str, float] = field(default_factory=dict)
    max_timeout_seconds: float = 300.0
    output_max_bytes: int = 64 * 1024


def outcome_name(code: events_pb2.ToolErrorCode.ValueType) -> str:
    return events_pb2.ToolErrorCode.Name(code).removeprefix("TOOL_ERROR_CODE_").lower()


class Executor:
    """Runs single tool calls against a registry; shared by every stream of the service."""

    def __init__(
        self,
        registry: ToolRegistry,
        breakers: Breakers,
        publisher: EventPublisher | None,
        limits: Limits,
        channel_factory: Callable[[str], grpc.aio.Channel] | None = None,
    ) -> None:
        self.registry = registry
        self.breakers = breakers
        self._publisher = publisher
        self._limits = limits
        self._channel_factory = channel_factory

    def timeout_for(self, name: str, requested_seconds: float, tool_default: float | None) -> float:
        """The requested timeout (capped), else the configured per-tool one, else the tool's, else the default."""
        if requested_seconds > 0:
            return min(requested_seconds, self._limits.max_timeout_seconds)
        if name in self._limits.timeouts:
            return self._limits.timeouts[name]
        if tool_default is not None:
            return tool_default
        return self._limits.default_timeout_seconds

    async def run(self, request: CallRequest, emit: Emit) -> None:
        """Run one call to completion, emitting started, progress and exactly one result or error."""
        start = time.perf_counter()
        finished = False

        def send(payload: Message) -> None:
            event_id = ""
            if self._publisher is not None:
                event = new_event(
                    "tools", payload, session_id=request.session_id, correlation_id=request.correlation_id
                )
                event_id = event.id
                self._publisher.publish(event)
            # The caller forwards the payload under the bus event's id: one event, not two.
            emit(payload, event_id)

        def progress(message: str, fraction: float) -> None:
            if not finished:
                send(
                    events_pb2.ToolProgress(
                        call_id=request.call_id, message=message[:MAX_PROGRESS_CHARS], fraction=fraction
                    )
                )

        def fail(code: events_pb2.ToolErrorCode.ValueType, message: str, field: str = "") -> None:
            elapsed = time.perf_counter() - start
            metrics.CALLS.labels(request.name, outcome_name(code)).inc()
            send(
                events_pb2.ToolError(
                    call_id=request.call_id,
                    name=request.name,
                    code=code,  # type: ignore[arg-type]
                    message=message,
                    field=field,
                    duration_ms=elapsed * 1000.0,
                )
            )

        send(
            events_pb2.ToolCallStarted(
                call_id=request.call_id, name=request.name, arguments_json=request.arguments_json
            )
        )
        try:
            entry = self.registry.get(request.name)
            arguments = parse_arguments(request.arguments_json)
            validate_arguments(entry.validator, arguments)
            ctx = ToolContext(
                call_id=request.call_id,
                tool_name=request.name,
                session_id=request.session_id,
                user_id=request.user_id,
                correlation_id=request.correlation_id,
                publisher=self._publisher,
                channel_factory=self._channel_factory,
                _progress=progress,
            )
            timeout = self.timeout_for(request.name, request.timeout_seconds, entry.tool.timeout_seconds)
            ran_from = time.perf_counter()
            try:
                with self.breakers.guard(entry.tool.breaker or request.name):
                    result_json = await self._call(entry.tool.run, arguments, ctx, timeout)
            finally:
                metrics.DURATION.labels(request.name).observe(time.perf_counter() - ran_from)
        except BreakerOpen as exc:
            finished = True
            fail(ErrorCode.TOOL_ERROR_CODE_UNAVAILABLE, str(exc))
        except ToolFailure as exc:
            finished = True
            fail(exc.code, exc.message, exc.field)
        except asyncio.CancelledError as exc:
            finished = True
            fail(ErrorCode.TOOL_ERROR_CODE_CANCELLED, str(exc.args[0]) if exc.args else "the call was cancelled")
            raise
        except Exception as exc:
            finished = True
            log.warning(
                "tool call failed",
                exc_info=True,
                extra={"tool": request.name, "call_id": request.call_id, "correlation_id": request.correlation_id},
            )
            fail(ErrorCode.TOOL_ERROR_CODE_FAILED, f"tool {request.name!r} failed: {type(exc).__name__}: {exc}")
        else:
            finished = True
            elapsed = time.perf_counter() - start
            metrics.CALLS.labels(request.name, "ok").inc()
            send(
                events_pb2.ToolResult(
                    call_id=request.call_id, name=request.name, result_json=result_json, duration_ms=elapsed * 1000.0
                )
            )

    async def _call(
        self,
        run: Callable[[dict[str, Any], ToolContext], Any],
        arguments: dict[str, Any],
        ctx: ToolContext,
        timeout: float,
    ) -> str:
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline:
                value = await run(arguments, ctx)
        except TimeoutError:
            if deadline.expired():
                raise ToolFailure(
                    f"tool {ctx.tool_name!r} did not finish within {timeout:g}s", ErrorCode.TOOL_ERROR_CODE_TIMEOUT
                ) from None
            raise
        try:
            result_json = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as exc:
            raise ToolFailure(f"tool {ctx.tool_name!r} returned a value that is not JSON: {exc}") from None
        size = len(result_json.encode())
        if size > self._limits.output_max_bytes:
            raise ToolFailure(
                f"tool {ctx.tool_name!r} returned {size} bytes, more than the {self._limits.output_max_bytes}-byte cap",
                ErrorCode.TOOL_ERROR_CODE_OUTPUT_TOO_LARGE,
            )
        return result_json


_RESPONSE_FIELD = {
    events_pb2.ToolCallStarted: "started",
    events_pb2.ToolProgress: "progress",
    events_pb2.ToolResult: "result",
    events_pb2.ToolError: "error",
}


def as_response(payload: Message, event_id: str = "") -> tools_pb2.ExecuteResponse:
    response = tools_pb2.ExecuteResponse(event_id=event_id)
    getattr(response, _RESPONSE_FIELD[type(payload)]).CopyFrom(payload)
    return response


class CallSession:
    """The calls of one Execute stream: concurrent, matched by call_id, cancellable one by one."""

    def __init__(self, executor: Executor) -> None:
        self._executor = executor
        self._queue: asyncio.Queue[tools_pb2.ExecuteResponse | None] = asyncio.Queue()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        #: Running calls that have not sent their started message / their final message yet.
        self._not_started: set[str] = set()
        self._not_ended: set[str] = set()
        self._input_done = False

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    def _emit(self, payload: Message, event_id: str = "") -> None:
        call_id = payload.call_id  # type: ignore[attr-defined]
        if isinstance(payload, events_pb2.ToolCallStarted):
            self._not_started.discard(call_id)
        elif isinstance(payload, events_pb2.ToolResult | events_pb2.ToolError):
            self._not_ended.discard(call_id)
        self._queue.put_nowait(as_response(payload, event_id))

    def _refuse(
        self, request: CallRequest, code: events_pb2.ToolErrorCode.ValueType, message: str, field: str = ""
    ) -> None:
        metrics.CALLS.labels(request.name, outcome_name(code)).inc()
        self._emit(
            events_pb2.ToolError(call_id=request.call_id, name=request.name, code=code, message=message, field=field)  # type: ignore[arg-type]
        )

    def submit(self, request: CallRequest) -> None:
        """Start a call; a call that cannot start gets an error response at once."""
        if self._input_done:
            return
        if not request.call_id:
            self._refuse(request, ErrorCode.TOOL_ERROR_CODE_INVALID_ARGUMENTS, "call_id is required", "/call_id")
            return
        if request.call_id in self._tasks:
            self._refuse(
                request,
                ErrorCode.TOOL_ERROR_CODE_INVALID_ARGUMENTS,
                f"call_id {request.call_id!r} is already in flight on this stream; the running call continues",
                "/call_id",
            )
            return
        if len(self._tasks) >= MAX_CALLS_IN_FLIGHT:
            self._refuse(
                request,
                ErrorCode.TOOL_ERROR_CODE_UNAVAILABLE,
                f"too many calls in flight on this stream (at most {MAX_CALLS_IN_FLIGHT})",
            )
            return
        task = asyncio.create_task(self._executor.run(request, self._emit), name=f"tool:{request.call_id}")
        self._tasks[request.call_id] = task
        self._not_started.add(request.call_id)
        self._not_ended.add(request.call_id)
        task.add_done_callback(functools.partial(self._finished_task, request))

    def _finished_task(self, request: CallRequest, _task: asyncio.Task[None]) -> None:
        self._finished(request)

    def _finished(self, request: CallRequest) -> None:
        self._tasks.pop(request.call_id, None)
        # A task cancelled before its first step never ran a line of `Executor.run`: answer for it.
        if request.call_id in self._not_started:
            self._emit(events_pb2.ToolCallStarted(call_id=request.call_id, name=request.name))
        if request.call_id in self._not_ended:
            self._refuse(request, ErrorCode.TOOL_ERROR_CODE_CANCELLED, "the call was cancelled before it started")
        self._not_started.discard(request.call_id)
        self._not_ended.discard(request.call_id)
        self._queue.put_nowait(None)  # wakes `responses` to see whether the stream is done

    def cancel(self, call_id: str, reason: str = "cancelled by the caller") -> bool:
        """Cancel a running call (it then ends with a CANCELLED error); False when it is not running."""
        task = self._tasks.get(call_id)
        if task is None:
            return False
        task.cancel(reason)
        return True

    def reject(self, message: str) -> None:
        """Answer a request that is neither a call nor a cancel."""
        self._refuse(CallRequest(call_id="", name=""), ErrorCode.TOOL_ERROR_CODE_INVALID_ARGUMENTS, message)

    def end_of_input(self) -> None:
        """No more requests will come; `responses` ends once the running calls have."""
        self._input_done = True
        self._queue.put_nowait(None)

    async def responses(self) -> AsyncIterator[tools_pb2.ExecuteResponse]:
        while True:
            if self._input_done and not self._tasks and self._queue.empty():
                return
            item = await self._queue.get()
            if item is not None:
                yield item

    async def close(self, reason: str) -> None:
        """Cancel every running call (each reports CANCELLED) and end the responses."""
        self._input_done = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel(reason)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._queue.put_nowait(None)
