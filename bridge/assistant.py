"""Converse streams to the Assistant, one per connection, opened lazily, behind a circuit breaker.

Who a connection is decides the session it opens and whose memory it sees (`principal_open`): a
token's user, else its session. A client that sends a turn before `open` gets a session opened for
it (`implicit_open`), so `{"converse":{"text":…}}` alone is a complete conversation.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

import grpc

from coda.runtime.breaker import Breaker, BreakerChange
from coda.v1 import assistant_pb2, assistant_pb2_grpc, bridge_pb2

from .auth import Principal
from .codec import ErrorCode, error_frame

log = logging.getLogger(__name__)

#: Statuses that count against the Assistant's circuit (it is down or broken, not the request).
BREAKER_FAILURES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
    }
)
#: gRPC status -> error frame code for failures that are the client's request.
CLIENT_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT: ErrorCode.ERROR_CODE_INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION: ErrorCode.ERROR_CODE_INVALID_ARGUMENT,
    grpc.StatusCode.OUT_OF_RANGE: ErrorCode.ERROR_CODE_INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND: ErrorCode.ERROR_CODE_INVALID_ARGUMENT,
    grpc.StatusCode.PERMISSION_DENIED: ErrorCode.ERROR_CODE_PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED: ErrorCode.ERROR_CODE_PERMISSION_DENIED,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ErrorCode.ERROR_CODE_RATE_LIMITED,
}


class AssistantUnavailable(Exception):
    pass


class SessionRefused(Exception):
    """The token does not allow the session the client asked for."""


def principal_open(principal: Principal, requested: assistant_pb2.SessionOpen) -> assistant_pb2.SessionOpen:
    """The SessionOpen a principal may send: its token decides the session and the user.

    - Authentication off: the client names the session and the user (it is trusted).
    - A token bound to a session opens that session only (SessionRefused for another).
    - The user is the token's user (a JWT's `sub`). A token bound to a session but carrying no
      user (a static token) opens with no user: memory is then scoped to that session, and the
      client cannot claim a user it was not given. An operator token (bound to nothing) may name one.
    """
    if principal.method == "none":
        return requested
    if principal.session_id and requested.session_id not in ("", principal.session_id):
        raise SessionRefused(f"your token allows session {principal.session_id!r} only")
    opened = assistant_pb2.SessionOpen()
    opened.CopyFrom(requested)
    opened.session_id = principal.session_id or requested.session_id
    if principal.user_id or principal.session_id:
        opened.user_id = principal.user_id
    return opened


#: Requests that open a session implicitly when none is open (`close` without a session is an error).
IMPLICIT_OPEN = frozenset({"text", "audio_start", "audio_chunk", "audio_end", "cancel", "settings"})


def implicit_open(principal: Principal) -> assistant_pb2.ConverseRequest:
    """The open sent for a client whose first converse frame is a turn: the token's session if it is
    bound to one, else a new session; the SessionInfo answer reaches the client as after an open."""
    return assistant_pb2.ConverseRequest(open=principal_open(principal, assistant_pb2.SessionOpen()))


class _Failure(Exception):
    pass


class AssistantGate:
    """The Assistant's circuit; calls are async, so outcomes are reported after the fact."""

    def __init__(
        self, failures_to_open: int, reset_seconds: float, on_state: Callable[[str], None] | None = None
    ) -> None:
        self._on_state = on_state
        self.breaker = Breaker(
            "assistant", fail_max=failures_to_open, reset_seconds=reset_seconds, on_change=self._report
        )

    @property
    def state(self) -> str:
        return self.breaker.state

    @property
    def last_failure(self) -> str:
        return self.breaker.last_failure

    def check(self) -> None:
        """Raise AssistantUnavailable while the circuit is open and its reset timeout has not passed."""
        if self.breaker.allow():
            return
        raise AssistantUnavailable(
            f"assistant unavailable: circuit open after {self.breaker.fail_max} failures "
            f"({self.last_failure}); retry in {self.breaker.retry_in():.1f}s"
        )

    def succeeded(self) -> None:
        self.breaker.record_success()

    def failed(self, reason: str) -> None:
        self.breaker.record_failure(_Failure(reason))

    def _report(self, change: BreakerChange) -> None:
        if self._on_state is not None:
            self._on_state(change.state)


class ConverseStream:
    """The connection's Converse call: frames in through a queue, responses out through `send`."""

    def __init__(
        self,
        stub: assistant_pb2_grpc.AssistantAsyncStub,
        gate: AssistantGate,
        send: Callable[[bridge_pb2.ServerFrame], None],
    ) -> None:
        self._stub = stub
        self._gate = gate
        self._send = send
        self._requests: asyncio.Queue[assistant_pb2.ConverseRequest | None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_frame_id = ""

    @property
    def open(self) -> bool:
        return self._task is not None and not self._task.done()

    def submit(self, request: assistant_pb2.ConverseRequest, frame_id: str = "") -> None:
        """Forward a request, opening the stream first if needed; raises AssistantUnavailable fast."""
        self._last_frame_id = frame_id
        if not self.open:
            self._gate.check()
            self._requests = asyncio.Queue()
            self._task = asyncio.create_task(self._run(self._requests), name="converse")
        assert self._requests is not None
        self._requests.put_nowait(request)

    async def _requests_of(
        self, queue: asyncio.Queue[assistant_pb2.ConverseRequest | None]
    ) -> AsyncIterator[assistant_pb2.ConverseRequest]:
        while (request := await queue.get()) is not None:
            yield request

    async def _run(self, queue: asyncio.Queue[assistant_pb2.ConverseRequest | None]) -> None:
        call = self._stub.Converse(self._requests_of(queue))
        answered = False
        try:
            async for response in call:
                if not answered:
                    answered = True
                    self._gate.succeeded()
                self._send(bridge_pb2.ServerFrame(converse=response))
            if not answered:
                self._gate.succeeded()
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.CANCELLED:
                return
            if code in BREAKER_FAILURES:
                reason = f"{code.name}: {exc.details()}"
                self._gate.failed(reason)
                log.warning("assistant call failed", extra={"code": code.name, "details": exc.details()})
                message = f"assistant unavailable ({reason})"
                self._send(error_frame(ErrorCode.ERROR_CODE_UNAVAILABLE, message, self._last_frame_id))
            else:
                error = CLIENT_ERRORS.get(code, ErrorCode.ERROR_CODE_INTERNAL)
                self._send(error_frame(error, f"assistant: {exc.details()}", self._last_frame_id))

    async def close(self) -> None:
        if self._requests is not None:
            self._requests.put_nowait(None)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
