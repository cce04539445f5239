"""Requests whose bytes do not parse get INVALID_ARGUMENT with the reason, on every service.

Left to itself, grpcio answers a request its deserializer cannot parse with UNKNOWN ("Unexpected
<class DecodeError>") and logs a traceback for each one, so any client could fill the log with
errors. `RejectMalformedRequests`, a server interceptor the `Host` installs, makes the deserializer
hand on an `Undecodable` marker instead of raising, and the method ends the call with
INVALID_ARGUMENT before the servicer sees it: at once for a single request, at that message for a
stream of them (whatever the stream delivered before it was handled as usual). Other calls, on the
same connection or not, carry on.

In a stream the refusal never races the servicer's own writes: the request iterator raises
`MalformedRequest` to the servicer, which unwinds (a servicer that writes from a task of its own
finishes its pending writes first, see `EventBus.Publish`), and only then is the call ended.
Aborting from inside the iterator while a response was still being written sent the initial
metadata twice (GRPC_CALL_ERROR_TOO_MANY_OPERATIONS) and left the call hanging.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NamedTuple

import grpc

log = logging.getLogger(__name__)


class Undecodable(NamedTuple):
    """What a deserializer that failed hands on, for the method to refuse."""

    reason: str


class MalformedRequest(Exception):
    """Raised to a servicer by its request stream at a message that did not parse; the call is
    then ended with INVALID_ARGUMENT once the servicer has returned (or raised)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Refusal:
    """The bad message a stream met, if any (one per call)."""

    __slots__ = ("problem",)

    def __init__(self) -> None:
        self.problem: Undecodable | None = None


def _tolerant(deserialize: Callable[[bytes], Any], method: str) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return deserialize(data)
        except Exception as exc:
            return Undecodable(f"{method}: the request ({len(data)} bytes) is not a valid message: {exc}")

    return parse


async def _refuse(problem: Undecodable, context: grpc.aio.ServicerContext) -> None:
    log.info("malformed request refused", extra={"reason": problem.reason, "peer": context.peer()})
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem.reason)


async def _checked(requests: AsyncIterator[Any], refusal: _Refusal) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, Undecodable):
            refusal.problem = request
            raise MalformedRequest(request.reason)
        yield request


def _refused(exc: Exception, refusal: _Refusal) -> bool:
    """True when `exc`, escaping the servicer, is to be answered by the refusal: the servicer met
    the bad message and did not end the call itself."""
    return refusal.problem is not None and not isinstance(exc, grpc.aio.AbortError)


def _guard(behavior: Callable[..., Any], request_streaming: bool) -> Callable[..., Any]:
    """`behavior` behind a check of what it is given: its request, or each of its requests."""

    async def checked(argument: Any, context: grpc.aio.ServicerContext, refusal: _Refusal) -> Any:
        if request_streaming:
            return _checked(argument, refusal)
        if isinstance(argument, Undecodable):
            await _refuse(argument, context)
        return argument

    if inspect.isasyncgenfunction(behavior):
        # Wrapped in a generator closed with it: a call cancelled while a response is being
        # written ends the method's own generator (and its `finally`) at once, not when collected.
        async def stream(argument: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            refusal = _Refusal()
            try:
                async with contextlib.aclosing(
                    behavior(await checked(argument, context, refusal), context)
                ) as responses:
                    async for response in responses:
                        yield response
            except Exception as exc:
                if not _refused(exc, refusal):
                    raise
            if refusal.problem is not None:
                # Every response the servicer yielded has been written: nothing races this.
                await _refuse(refusal.problem, context)

        return stream

    async def call(argument: Any, context: grpc.aio.ServicerContext) -> Any:
        refusal = _Refusal()
        result = None
        try:
            result = await behavior(await checked(argument, context, refusal), context)
        except Exception as exc:
            if not _refused(exc, refusal):
                raise
        if refusal.problem is not None:
            await _refuse(refusal.problem, context)
        return result

    return call


def guard(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    """`handler` with a tolerant deserializer and a method that refuses what did not parse."""
    if handler.request_deserializer is None:
        return handler  # the method takes raw bytes: nothing can fail to parse
    kind = (
        ("stream" if handler.request_streaming else "unary")
        + "_"
        + ("stream" if handler.response_streaming else "unary")
    )
    behavior = getattr(handler, kind)
    if not (inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior)):
        return handler  # a synchronous behavior: grpc runs those its own way, so it is left as it is
    guarded = _guard(behavior, handler.request_streaming)
    return handler._replace(  # type: ignore[attr-defined]
        request_deserializer=_tolerant(handler.request_deserializer, method), **{kind: guarded}
    )


class RejectMalformedRequests(grpc.aio.ServerInterceptor):
    """Installs `guard` on every method, once per method handler."""

    def __init__(self) -> None:
        self._guarded: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        known = self._guarded.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        guarded = guard(handler, method)
        self._guarded[method] = (handler, guarded)
        return guarded
