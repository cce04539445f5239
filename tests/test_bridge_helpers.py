"""Shared helpers of the bridge tests (no tests here): a running bridge, WebSocket clients, publishing."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import grpc
from google.protobuf import json_format
from websockets.asyncio.client import ClientConnection, connect

from bridge.codec import JSON_PROTOCOL
from bridge.server import Bridge
from coda.bus.client import GrpcPublisher
from coda.config import Config
from coda.schema import new_event
from coda.v1 import bridge_pb2, events_pb2


@contextlib.asynccontextmanager
async def running_bridge(config: Config, coda_address: str, *, linked: bool = True) -> AsyncIterator[Bridge]:
    bridge = Bridge(config, coda_address)
    await bridge.start()
    try:
        if linked:
            await asyncio.wait_for(bridge.linked.wait(), 10)
        yield bridge
    finally:
        await bridge.stop()


async def open_client(url: str, protocol: str = JSON_PROTOCOL, **kwargs: object) -> ClientConnection:
    kwargs.setdefault("max_size", None)
    ws = await connect(url, subprotocols=[protocol], open_timeout=10, **kwargs)  # type: ignore[list-item,arg-type]
    hello = await recv(ws)
    assert hello.WhichOneof("frame") == "hello", hello
    return ws


async def send(ws: ClientConnection, frame: bridge_pb2.ClientFrame) -> None:
    if ws.subprotocol == JSON_PROTOCOL:
        await ws.send(json_format.MessageToJson(frame))
    else:
        await ws.send(frame.SerializeToString())


async def recv(ws: ClientConnection, timeout: float = 10.0) -> bridge_pb2.ServerFrame:
    data = await asyncio.wait_for(ws.recv(), timeout)
    frame = bridge_pb2.ServerFrame()
    if isinstance(data, str):
        json_format.Parse(data, frame)
    else:
        frame.ParseFromString(data)
    return frame


async def subscribe(
    ws: ClientConnection, types: list[str] | None = None, session: str = "", after_seq: int | None = None
) -> None:
    """Subscribe and wait until the bridge has processed it (a ping round trip after it)."""
    frame = bridge_pb2.ClientFrame(id="sub", subscribe=bridge_pb2.SubscribeFrame(types=types or [], session_id=session))
    if after_seq is not None:
        frame.subscribe.after_seq = after_seq
    await send(ws, frame)
    await send(ws, bridge_pb2.ClientFrame(ping=bridge_pb2.PingFrame(nonce=424242)))


async def collect_seqs(
    ws: ClientConnection, until_seq: int, timeout: float = 15.0, frames: list[bridge_pb2.ServerFrame] | None = None
) -> list[int]:
    """Seqs of every event received until one >= until_seq; other frames go to `frames`."""
    seqs: list[int] = []
    async with asyncio.timeout(timeout):
        while not seqs or seqs[-1] < until_seq:
            frame = await recv(ws, timeout)
            if frame.WhichOneof("frame") == "events":
                seqs.extend(e.seq for e in frame.events.events)
            elif frames is not None:
                frames.append(frame)
    return seqs


@contextlib.asynccontextmanager
async def publisher(address: str) -> AsyncIterator[GrpcPublisher]:
    channel = grpc.aio.insecure_channel(address)
    pub = GrpcPublisher(lambda: channel, source="test")
    try:
        yield pub
    finally:
        await pub.close()
        await channel.close()


async def publish_tokens(pub: GrpcPublisher, count: int, session: str = "", prefix: str = "t") -> int:
    """Publish `count` llm.token events, wait for their acks; returns the last seq."""
    for i in range(count):
        pub.publish(new_event("llm", events_pb2.LlmToken(text=f"{prefix}{i}"), session_id=session))
    await pub.flush(10)
    return pub.last_seq


def close_reason(ws: ClientConnection) -> tuple[int | None, str]:
    if ws.close_code is None:
        return None, ""
    return ws.close_code, ws.close_reason or ""


def loads(text: str) -> dict[str, object]:
    return json.loads(text)
