"""The `coda.v1.Tools` gRPC servicer: converts messages; the executor does the work."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import grpc

from coda.tools.executor import CallRequest, CallSession, Executor
from coda.v1 import llm_pb2, tools_pb2, tools_pb2_grpc

log = logging.getLogger(__name__)


def call_request(call: tools_pb2.ToolCall) -> CallRequest:
    return CallRequest(
        call_id=call.call_id,
        name=call.name,
        arguments_json=call.arguments_json,
        timeout_seconds=call.timeout_ms / 1000.0,
        session_id=call.session_id,
        correlation_id=call.correlation_id,
        user_id=call.user_id,
    )


class ToolsServicer(tools_pb2_grpc.ToolsServicer):
    def __init__(self, executor: Executor) -> None:
        self._executor = executor
        self._sessions: set[CallSession] = set()

    async def ListTools(
        self, request: tools_pb2.ListToolsRequest, context: grpc.aio.ServicerContext
    ) -> tools_pb2.ListToolsResponse:
        return tools_pb2.ListToolsResponse(
            tools=[
                llm_pb2.ToolSpec(
                    name=entry.name, description=entry.tool.description, parameters_json_schema=entry.parameters_json
                )
                for entry in self._executor.registry.enabled()
            ]
        )

    async def Execute(
        self, request_iterator: AsyncIterator[tools_pb2.ExecuteRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[tools_pb2.ExecuteResponse]:
        session = CallSession(self._executor)
        self._sessions.add(session)
        reader = asyncio.create_task(self._read(request_iterator, session))
        try:
            async for response in session.responses():
                yield response
        finally:
            reader.cancel()
            await session.close("the Execute stream ended")
            self._sessions.discard(session)

    async def _read(self, requests: AsyncIterator[tools_pb2.ExecuteRequest], session: CallSession) -> None:
        try:
            async for request in requests:
                kind = request.WhichOneof("request")
                if kind == "call":
                    session.submit(call_request(request.call))
                elif kind == "cancel":
                    session.cancel(request.cancel.call_id)
                else:
                    session.reject("an ExecuteRequest must hold a call or a cancel")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the client went away mid-stream
            log.debug("Execute request stream ended", extra={"reason": repr(exc)})
        finally:
            session.end_of_input()

    async def close(self) -> None:
        """Cancel every running call (each reports CANCELLED) and end every stream."""
        await asyncio.gather(
            *(session.close("the tools service is stopping") for session in list(self._sessions)),
            return_exceptions=True,
        )
