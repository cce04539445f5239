"""Whose memory a conversation sees: a real host (every component) and a real bridge on loopback.

Memory is scoped to the authenticated principal: a token's user, else its session. Static tokens
carry a session but no user, so two of them must not share memory; two JWTs of one user must; and
a Converse opened over gRPC without a user_id is scoped to its own session.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import jwt
from assistant_helpers import converser, final_turn, open_request
from conftest import make_config, running_host
from google.protobuf import json_format
from test_bridge_helpers import recv, running_bridge, send
from websockets.asyncio.client import ClientConnection, connect

from bridge.codec import JSON_PROTOCOL
from coda.v1 import assistant_pb2, bridge_pb2, events_pb2

SECRET = "test-secret-that-is-32-bytes-long!!"
FACT = "remember that my locker code is tangerine"
#: What only the stored fact contains (a number could turn up in any event's time or timings).
SECRET_WORD = "tangerine"
QUESTION = "what is my locker code"


def _jwt(**claims: object) -> str:
    return jwt.encode({"exp": int(time.time()) + 300, "aud": "coda-bridge", **claims}, SECRET, algorithm="HS256")


def _config(tmp_path: Path):  # type: ignore[no-untyped-def]
    return make_config(
        tmp_path,
        CODA_BRIDGE__JWT_SECRET=SECRET,
        CODA_BRIDGE__STATIC_TOKENS='{"tok-kitchen": "s-kitchen", "tok-hall": "s-hall"}',
    )


async def _client(url: str, token: str) -> ClientConnection:
    ws = await connect(f"{url}?token={token}", subprotocols=[JSON_PROTOCOL], open_timeout=10, max_size=None)  # type: ignore[list-item]
    assert (await recv(ws)).WhichOneof("frame") == "hello"
    return ws


async def _turn(ws: ClientConnection, text: str) -> tuple[assistant_pb2.SessionInfo | None, list[events_pb2.Event]]:
    """One typed turn sent as the connection's first converse frame (no `open`): the session info the
    implicit open reported, if any, and every event up to conversation.turn."""
    await send(
        ws, bridge_pb2.ClientFrame(converse=assistant_pb2.ConverseRequest(text=assistant_pb2.TextInput(text=text)))
    )
    session: assistant_pb2.SessionInfo | None = None
    events: list[events_pb2.Event] = []
    async with asyncio.timeout(30):
        while True:
            frame = await recv(ws, 30)
            kind = frame.WhichOneof("frame")
            assert kind == "converse", frame
            if frame.converse.HasField("session"):
                session = frame.converse.session
                continue
            events.append(frame.converse.event)
            if frame.converse.event.HasField("conversation_turn"):
                return session, events


def _mentions(events: list[events_pb2.Event], text: str) -> bool:
    return any(text in json_format.MessageToJson(e) for e in events)


def _stored_by_remember(events: list[events_pb2.Event]) -> bool:
    return any(e.HasField("tool_result") and e.tool_result.name == "remember" for e in events)


async def test_static_tokens_of_two_sessions_do_not_share_memory(tmp_path: Path) -> None:
    config = _config(tmp_path)
    async with running_host(config) as host, running_bridge(config, host.address) as bridge:
        kitchen = await _client(bridge.url, "tok-kitchen")
        session, stored = await _turn(kitchen, FACT)
        # The turn opened the token's session implicitly, with no user: the session is the principal.
        assert session is not None and (session.session_id, session.user_id) == ("s-kitchen", "")
        assert _stored_by_remember(stored)
        # The same session still recalls it (so the check below is not empty)...
        _, again = await _turn(kitchen, QUESTION)
        assert SECRET_WORD in final_turn(again).assistant_text
        # ...another static token's session does not: not in its recall, tool results or answer.
        hall = await _client(bridge.url, "tok-hall")
        session, asked = await _turn(hall, QUESTION)
        assert session is not None and session.session_id == "s-hall"
        assert not _mentions(asked, SECRET_WORD), [
            json_format.MessageToJson(e) for e in asked if _mentions([e], SECRET_WORD)
        ]
        for ws in (kitchen, hall):
            await ws.close()


async def test_two_jwt_sessions_of_one_user_share_memory(tmp_path: Path) -> None:
    config = _config(tmp_path)
    async with running_host(config) as host, running_bridge(config, host.address) as bridge:
        first = await _client(bridge.url, _jwt(sub="ada", sid="s-ada-phone"))
        session, stored = await _turn(first, FACT)
        assert session is not None and (session.session_id, session.user_id) == ("s-ada-phone", "ada")
        assert _stored_by_remember(stored)
        second = await _client(bridge.url, _jwt(sub="ada", sid="s-ada-laptop"))
        session, asked = await _turn(second, QUESTION)
        assert session is not None and (session.session_id, session.user_id) == ("s-ada-laptop", "ada")
        assert SECRET_WORD in final_turn(asked).assistant_text
        # Another user's token does not see it.
        other = await _client(bridge.url, _jwt(sub="bob", sid="s-bob"))
        _, theirs = await _turn(other, QUESTION)
        assert not _mentions(theirs, SECRET_WORD)
        for ws in (first, second, other):
            await ws.close()


async def test_grpc_converse_without_a_user_is_scoped_to_its_session(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with running_host(config) as host, grpc.aio.insecure_channel(host.address) as channel:
        first = converser(channel)
        info = await first.open(open_request())
        assert info.user_id == ""  # not a shared "local" user
        assert _stored_by_remember(await first.turn(FACT))
        assert SECRET_WORD in final_turn(await first.turn(QUESTION)).assistant_text
        await first.close()
        second = converser(channel)
        await second.open(open_request())
        asked = await second.turn(QUESTION)
        assert not _mentions(asked, SECRET_WORD)
        await second.close()
