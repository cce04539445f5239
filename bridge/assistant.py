"""Converse streams to the Assistant, one per connection, opened lazily, behind a circuit breaker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import grpc

from coda.runtime.breaker import Breaker, BreakerChange
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
