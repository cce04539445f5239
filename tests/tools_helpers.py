"""Shared helpers of the tools tests (no tests here): an Execute stream client, bus event collection."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc

from coda.bus.client import subscribe
from coda.runtime.host import Host
from coda.schema import event_type
from coda.tools.component import ToolsComponent
from coda.v1 import events_pb2, tools_pb2, tools_pb2_grpc

FINAL = ("result", "error")


def tools_of(host: Host) -> ToolsComponent:
    component = next(c for c in host.components if c.name == "tools")
    assert isinstance(component, ToolsComponent)
    return component


class ExecuteStream:
    """One Execute stream: send calls and cancels, read responses grouped by call_id."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._requests: asyncio.Queue[tools_pb2.ExecuteRequest | None] = asyncio.Queue()
        self.rpc = tools_pb2_grpc.ToolsStub(channel).Execute(self._generate())
        #: Every response received, in order, as (kind, message).
        self.received: list[tuple[str, Any]] = []

    async def _generate(self) -> AsyncIterator[tools_pb2.ExecuteRequest]:
        while (request := await self._requests.get()) is not None:
            yield request

    def call(self, call_id: str, name: str, arguments: dict[str, Any] | str | None = None, **fields: Any) -> None:
        text = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
        self._requests.put_nowait(
            tools_pb2.ExecuteRequest(call=tools_pb2.ToolCall(call_id=call_id, name=name, arguments_json=text, **fields))
        )

    def cancel(self, call_id: str) -> None:
        self._requests.put_nowait(tools_pb2.ExecuteRequest(cancel=tools_pb2.CancelToolCall(call_id=call_id)))

    def send_raw(self, request: tools_pb2.ExecuteRequest) -> None:
        self._requests.put_nowait(request)

    def close(self) -> None:
        self._requests.put_nowait(None)

    async def next(self, timeout: float = 10.0) -> tuple[str, Any]:
        response = await asyncio.wait_for(self.rpc.read(), timeout)
        assert response is not grpc.aio.EOF, "the Execute stream ended"
        kind = response.WhichOneof("response")
        item = (kind, getattr(response, kind))
        self.received.append(item)
        return item

    def of(self, call_id: str) -> list[tuple[str, Any]]:
        return [(kind, msg) for kind, msg in self.received if msg.call_id == call_id]

    def final(self, call_id: str) -> tuple[str, Any] | None:
        return next(((k, m) for k, m in self.of(call_id) if k in FINAL), None)

    async def until_final(self, *call_ids: str, timeout: float = 10.0) -> dict[str, tuple[str, Any]]:
        """Read until every named call has its result or error; returns those final messages."""
        while any(self.final(c) is None for c in call_ids):
            await self.next(timeout)
        return {c: self.final(c) for c in call_ids}  # type: ignore[misc]

    async def until(self, predicate: Callable[[str, Any], bool], timeout: float = 10.0) -> tuple[str, Any]:
        while True:
            item = await self.next(timeout)
            if predicate(*item):
                return item


async def collect_events(
    channel: grpc.aio.Channel,
    types: list[str],
    predicate: Callable[[list[events_pb2.Event]], bool],
    timeout: float = 10.0,
) -> list[events_pb2.Event]:
    """Events of the given types from the start of the bus log until `predicate(events)` holds."""
    events: list[events_pb2.Event] = []

    async def read() -> None:
        async for response in subscribe(channel, types, after_seq=0):
            if response.HasField("batch"):
                events.extend(response.batch.events)
                if predicate(events):
                    return

    await asyncio.wait_for(read(), timeout)
    return events


def of_type(events: list[events_pb2.Event], type_name: str) -> list[events_pb2.Event]:
    return [e for e in events if event_type(e) == type_name]
