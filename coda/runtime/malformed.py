"""Requests whose bytes do not parse get INVALID_ARGUMENT with the reason, on every service.

Left to itself, grpcio answers a request its deserializer cannot parse with UNKNOWN ("Unexpected
<class DecodeError>") and logs a traceback for each one, so any client could fill the log with
errors. `RejectMalformedRequests`, a server interceptor the `Host` installs, makes the deserializer
hand on an `Undecodable` marker instead of raising, and the method ends the call with
INVALID_ARGUMENT before the servicer sees it: at once for a single request, at that message for a
stream of them (whatever the stream delivered before it was handled as usual). Other calls, on the
same connection or not, carry on.
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


async def _checked(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, Undecodable):
            await _refuse(request, context)
        yield request


def _guard(behavior: Callable[..., Any], request_streaming: bool) -> Callable[..., Any]:
    """`behavior` behind a check of what it is given: its request, or each of its requests."""

    async def checked(argument: Any, context: grpc.aio.ServicerContext) -> Any:
        if request_streaming:
            return _checked(argument, context)
        if isinstance(argument, Undecodable):
            await _refuse(argument, context)
        return argument

    if inspect.isasyncgenfunction(behavior):
        # Wrapped in a generator closed with it: a call cancelled while a response is being
        # written ends the method's own generator (and its `finally`) at once, not when collected.
        async def stream(argument: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with contextlib.aclosing(behavior(await checked(argument, context), context)) as responses:
                async for response in responses:
                    yield response

        return stream

    async def call(argument: Any, context: grpc.aio.ServicerContext) -> Any:
        return await behavior(await checked(argument, context), context)

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
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
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
