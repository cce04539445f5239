"""Converse streams to the Assistant, one per connection, opened lazily, behind a pybreaker circuit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import grpc
import pybreaker

from coda.v1 import assistant_pb2, assistant_pb2_grpc, bridge_pb2

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


class _Failure(Exception):
    pass


def _succeed() -> None:
    return None


def _fail(reason: str) -> None:
    raise _Failure(reason)


class AssistantGate:
    """pybreaker is the state machine; calls are async, so outcomes are reported after the fact."""

    def __init__(
        self, failures_to_open: int, reset_seconds: float, on_state: Callable[[str], None] | None = None
    ) -> None:
        self.breaker = pybreaker.CircuitBreaker(fail_max=max(1, failures_to_open), reset_timeout=reset_seconds)
        self._on_state = on_state
        self.last_failure = ""

    @property
    def state(self) -> str:
        return str(self.breaker.current_state)

    def check(self) -> None:
        """Raise AssistantUnavailable while the circuit is open and its reset timeout has not passed."""
        if self.breaker.current_state != pybreaker.STATE_OPEN:
            return
        opened_at = self.breaker._state_storage.opened_at
        retry_at = (opened_at or datetime.now(UTC)) + timedelta(seconds=self.breaker.reset_timeout)
        remaining = (retry_at - datetime.now(UTC)).total_seconds()
        if remaining > 0:
            raise AssistantUnavailable(
                f"assistant unavailable: circuit open after {self.breaker.fail_max} failures "
                f"({self.last_failure}); retry in {remaining:.1f}s"
            )

    def succeeded(self) -> None:
        with contextlib.suppress(pybreaker.CircuitBreakerError):
            self.breaker.call(_succeed)
        self._report()

    def failed(self, reason: str) -> None:
        self.last_failure = reason
        with contextlib.suppress(_Failure, pybreaker.CircuitBreakerError):
            self.breaker.call(_fail, reason)
        self._report()

    def _report(self) -> None:
        if self._on_state is not None:
            self._on_state(self.state)


class ConverseStream:
    """The connection's Converse call: frames in through a queue, responses out through `send`."""

    def __init__(
        self,
        stub: assistant_pb2_grpc.AssistantStub,
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
    ) -> assistant_pb2.ConverseRequest:
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
