"""The bridge end to end: a real Coda bus (gRPC, in-process), a real bridge, real WebSocket clients on loopback."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import jwt
import pytest
from conftest import make_config, running_host
from test_bridge_helpers import (
    collect_seqs,
    open_client,
    publish_tokens,
    publisher,
    recv,
    running_bridge,
    send,
    subscribe,
)
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bridge.codec import JSON_PROTOCOL, PROTO_PROTOCOL
from coda.schema import event_type as event_type_of
from coda.schema import new_event
from coda.v1 import assistant_pb2, assistant_pb2_grpc, bridge_pb2, events_pb2

ErrorCode = bridge_pb2.ErrorCode


async def http_get(url: str) -> tuple[int, str, str]:
    def fetch() -> tuple[int, str, str]:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.headers.get("Content-Type", ""), response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()

    return await asyncio.to_thread(fetch)


async def test_json_and_proto_clients_get_the_same_events_after_hello(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with running_host(config, only="bus") as host, running_bridge(config, host.address) as bridge:
        json_ws = await open_client(bridge.url, JSON_PROTOCOL)
        proto_ws = await open_client(bridge.url, PROTO_PROTOCOL)
        for ws in (json_ws, proto_ws):
            await subscribe(ws, ["llm.*"])
            assert (await recv(ws)).pong.nonce == 424242
        async with publisher(host.address) as pub:
            last = await publish_tokens(pub, 30)
        received = []
        for ws in (json_ws, proto_ws):
            events: list[events_pb2.Event] = []
            async with asyncio.timeout(10):
                while not events or events[-1].seq < last:
                    events.extend((await recv(ws)).events.events)
            received.append(events)
        assert len(received[0]) == 30
        assert received[0] == received[1]
        assert [e.llm_token.text for e in received[0]] == [f"t{i}" for i in range(30)]
        await json_ws.close()
        await proto_ws.close()


async def test_hello_carries_head_seq_limits_and_protocol(tmp_path: Path) -> None:
    config = make_config(tmp_path, CODA_BRIDGE__SEND_QUEUE_FRAMES="77")
    async with running_host(config, only="bus") as host, running_bridge(config, host.address) as bridge:
        async with publisher(host.address) as pub:
            last = await publish_tokens(pub, 3)
        async with connect(bridge.url, subprotocols=[PROTO_PROTOCOL]) as ws:  # type: ignore[list-item]
            hello = (await recv(ws)).hello
        assert hello.protocol == PROTO_PROTOCOL
        assert hello.head_seq == last
        assert hello.limits.send_queue_frames == 77
        assert hello.limits.max_frame_bytes == config.bridge.max_frame_bytes
        assert hello.connection_id


async def test_filters_by_type_and_session(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with running_host(config, only="bus") as host, running_bridge(config, host.address) as bridge:
        by_session = await open_client(bridge.url)
        by_type = await open_client(bridge.url)
        await subscribe(by_session, [], session="s1")
        await subscribe(by_type, ["voice.stt_*"])
        for ws in (by_session, by_type):
            await recv(ws)  # pong
        async with publisher(host.address) as pub:
            pub.publish(new_event("llm", events_pb2.LlmToken(text="a"), session_id="s1"))
            pub.publish(new_event("voice", events_pb2.VoiceSttFinal(text="b"), session_id="s2"))
            pub.publish(new_event("llm", events_pb2.LlmToken(text="c"), session_id="s2"))
            pub.publish(new_event("voice", events_pb2.VoiceSttPartial(text="d"), session_id="s1"))
            await pub.flush()
            last = pub.last_seq
        got_session = await collect_seqs(by_session, last)
        got_type = await collect_seqs(by_type, last)
        assert got_session == [last - 3, last]
        assert got_type == [last - 2, last]
        # A pattern that matches nothing is refused with a clear error, and the connection stays.
        await send(by_type, bridge_pb2.ClientFrame(id="bad", subscribe=bridge_pb2.SubscribeFrame(types=["nope.*"])))
        error = (await recv(by_type)).error
        assert (error.code, error.client_frame_id) == (ErrorCode.ERROR_CODE_INVALID_ARGUMENT, "bad")
        assert "matches no event type" in error.message


async def test_resume_across_a_bridge_restart_without_gap_or_duplicate(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with running_host(config, only="bus") as host, publisher(host.address) as pub:
        async with running_bridge(config, host.address) as bridge:
            ws = await open_client(bridge.url)
            await subscribe(ws, ["llm.*"])
            await recv(ws)
            first = await publish_tokens(pub, 10, prefix="a")
            seen = await collect_seqs(ws, first)
        # Missed while no bridge was running:
        missed_last = await publish_tokens(pub, 25, prefix="b")
        async with running_bridge(config, host.address) as bridge:
            ws = await open_client(bridge.url)
            await subscribe(ws, ["llm.*"], after_seq=seen[-1])
            # ... and live ones published while the replay may still be running:
            live_last = await publish_tokens(pub, 25, prefix="c")
            resumed = await collect_seqs(ws, live_last)
        assert resumed == list(range(seen[-1] + 1, live_last + 1))
        assert missed_last < live_last


async def test_resume_ahead_of_this_bridge_skips_what_the_client_already_has(tmp_path: Path) -> None:
    """A client that saw events through a faster bridge resumes here from a seq the bus has but this
    bridge has not dispatched yet: the live events up to it are skipped (also inside a frame)."""
    # A long window keeps this bridge behind the bus right after its first flush.
    config = make_config(tmp_path, CODA_BRIDGE__BATCH_WINDOW_MS="4000", CODA_BRIDGE__BATCH_MAX_WINDOW_MS="4000")
    async with (
        running_host(config, only="bus") as host,
        publisher(host.address) as pub,
        running_bridge(config, host.address) as bridge,
    ):
        watcher = await open_client(bridge.url)
        await subscribe(watcher, ["llm.*"])
        await recv(watcher)
        head = await publish_tokens(pub, 1, prefix="before")
        await collect_seqs(watcher, head)  # flushed at once (quiet before); the next waits a window
        last = await publish_tokens(pub, 12, prefix="after")
        assert (last, bridge.dispatched_seq) == (head + 12, head)  # the bus is ahead of this bridge
        clients = [await open_client(bridge.url, protocol) for protocol in (JSON_PROTOCOL, PROTO_PROTOCOL)]
        for ws in clients:
            await subscribe(ws, ["llm.*"], after_seq=head + 7)
            await recv(ws)  # pong
        for ws in clients:
            assert await collect_seqs(ws, last) == list(range(head + 8, last + 1))


async def test_resume_beyond_the_bus_head_is_refused_not_left_waiting(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with (
        running_host(config, only="bus") as host,
        publisher(host.address) as pub,
        running_bridge(config, host.address) as bridge,
    ):
        head = await publish_tokens(pub, 3)
        ws = await open_client(bridge.url)
        frame = bridge_pb2.ClientFrame(id="r1", subscribe=bridge_pb2.SubscribeFrame(types=["llm.*"]))
        frame.subscribe.after_seq = head + 1000
        await send(ws, frame)
        error = (await recv(ws)).error
        assert (error.code, error.client_frame_id) == (ErrorCode.ERROR_CODE_INVALID_ARGUMENT, "r1")
        assert f"beyond the newest seq {head}" in error.message
        # The connection stays usable: a valid resume works.
        await subscribe(ws, ["llm.*"], after_seq=head - 1)
        assert await collect_seqs(ws, head) == [head]


async def test_resume_past_the_log_horizon_gets_a_gap_first(tmp_path: Path) -> None:
    config = make_config(tmp_path, CODA_BUS__MAX_EVENTS="20")
    async with running_host(config, only="bus") as host, publisher(host.address) as pub:
        last = await publish_tokens(pub, 60)
        async with running_bridge(config, host.address) as bridge:
            ws = await open_client(bridge.url)
            await subscribe(ws, ["*"], after_seq=2)
            others: list[bridge_pb2.ServerFrame] = []
            seqs = await collect_seqs(ws, last, frames=others)
        gaps = [f.gap for f in others if f.WhichOneof("frame") == "gap"]
        assert len(gaps) == 1
        assert gaps[0].requested_after_seq == 2
        assert gaps[0].missed == gaps[0].oldest_seq - 3
        assert seqs == list(range(gaps[0].oldest_seq, last + 1))


async def test_stalled_client_is_cut_off_while_fifty_others_get_everything(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        CODA_BRIDGE__SEND_QUEUE_FRAMES="4",
        CODA_BUS__BATCH_MAX_EVENTS="8",
        CODA_BRIDGE__MAX_CONNECTIONS_PER_IP="0",
    )
    async with running_host(config, only="bus") as host, running_bridge(config, host.address) as bridge:
        # The stalled client reads nothing and has a tiny receive buffer, so the bridge's writes back up.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", bridge.port))
        stalled = await open_client(bridge.url, PROTO_PROTOCOL, sock=sock, max_queue=1)
        await subscribe(stalled, ["*"])
        others = [await open_client(bridge.url, PROTO_PROTOCOL) for _ in range(50)]
        for ws in others:
            await subscribe(ws, ["*"])
            await recv(ws)
        payload = "x" * 48_000
        async with publisher(host.address) as pub:
            for _ in range(20):
                for _ in range(10):
                    pub.publish(new_event("llm", events_pb2.LlmToken(text=payload)))
                await pub.flush()
                await asyncio.sleep(0.05)  # separate frames: the queue limit counts frames
            last = pub.last_seq
        results = await asyncio.gather(*(collect_seqs(ws, last, timeout=30) for ws in others))
        first = results[0][0]
        for seqs in results:
            assert seqs == list(range(first, last + 1))
        async with asyncio.timeout(10):
            while bridge.metrics.slow_clients._value.get() < 1:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert bridge.metrics.slow_clients._value.get() == 1
        # Once it reads again it gets what was in flight, then a 1013 close naming where to resume.
        with pytest.raises(ConnectionClosed):
            while True:
                await recv(stalled, timeout=15)
        assert stalled.close_code == 1013
        assert "after_seq=" in stalled.close_reason
        resume_from = int(stalled.close_reason.rsplit("after_seq=", 1)[1])
        assert resume_from < last
        for ws in others:
            await ws.close()
        # It can resume from there and get the rest without loss.
        again = await open_client(bridge.url, PROTO_PROTOCOL)
        await subscribe(again, ["*"], after_seq=resume_from)
        assert await collect_seqs(again, last, timeout=20) == list(range(resume_from + 1, last + 1))


async def test_bad_frames_get_error_frames_and_nobody_is_hurt(tmp_path: Path) -> None:
    config = make_config(tmp_path, CODA_BRIDGE__MAX_FRAME_BYTES="1000")
    async with running_host(config, only="bus") as host, running_bridge(config, host.address) as bridge:
        ws = await open_client(bridge.url)
        proto = await open_client(bridge.url, PROTO_PROTOCOL)
        bystander = await open_client(bridge.url)
        await subscribe(bystander, ["llm.*"])
        await recv(bystander)
        cases = [
            (ws, "{not json", ErrorCode.ERROR_CODE_MALFORMED_FRAME, ""),
            (ws, '{"id":"u1","teleport":{}}', ErrorCode.ERROR_CODE_UNKNOWN_FRAME_TYPE, "u1"),
            (ws, "{}", ErrorCode.ERROR_CODE_UNKNOWN_FRAME_TYPE, ""),
            (ws, '{"id":"w1","ping":{"nonce":"abc"}}', ErrorCode.ERROR_CODE_MALFORMED_FRAME, "w1"),
            (ws, '{"id":"w2","subscribe":{"types":5}}', ErrorCode.ERROR_CODE_MALFORMED_FRAME, "w2"),
            (ws, json.dumps({"ping": {"nonce": "1"}, "id": "x" * 2000}), ErrorCode.ERROR_CODE_FRAME_TOO_LARGE, ""),
            (proto, b"\xff\xfe\xfd\xfc\xfb", ErrorCode.ERROR_CODE_MALFORMED_FRAME, ""),
            (proto, '{"ping":{}}', ErrorCode.ERROR_CODE_MALFORMED_FRAME, ""),
            (proto, b"\x00" * 1500, ErrorCode.ERROR_CODE_FRAME_TOO_LARGE, ""),
        ]
        for client, data, code, frame_id in cases:
            await client.send(data)
            error = (await recv(client)).error
            assert (error.code, error.client_frame_id) == (code, frame_id), (data, error)
            assert error.message
        # Binary garbage on the JSON subprotocol is audio for the Assistant: no Assistant here, so an error.
        await ws.send(b"\x01\x02garbage")
        assert (await recv(ws)).error.code == ErrorCode.ERROR_CODE_UNAVAILABLE
        # A frame far above the limit closes the connection (1009) without touching the others.
        await ws.send("x" * 5000)
        with pytest.raises(ConnectionClosed):
            await recv(ws)
        assert ws.close_code == 1009
        await send(proto, bridge_pb2.ClientFrame(ping=bridge_pb2.PingFrame(nonce=9)))
        assert (await recv(proto)).pong.nonce == 9
        async with publisher(host.address) as pub:
            last = await publish_tokens(pub, 5)
        assert (await collect_seqs(bystander, last))[-1] == last
        _, _, metrics = await http_get(f"{bridge.http_url}/metrics")
        assert 'coda_bridge_refusals_total{reason="malformed_frame"} 5.0' in metrics
        assert 'coda_bridge_refusals_total{reason="frame_too_large"} 2.0' in metrics


async def test_deep_nesting_and_lone_surrogates_are_malformed_and_the_connection_stays(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with running_host(config, only="bus") as host, running_bridge(config, host.address) as bridge:
        ws = await open_client(bridge.url)
        for data in ("[" * 10_000 + "]" * 10_000, '{"id":"\\ud800","ping":{}}'):
            await ws.send(data)
            error = (await recv(ws)).error
            assert error.code == ErrorCode.ERROR_CODE_MALFORMED_FRAME and error.message, error
            assert error.client_frame_id == ""  # an id no reply can encode is not echoed
        await ws.send('{"id":"still-here","ping":{"nonce":"3"}}')
        assert (await recv(ws)).pong.nonce == 3
        # On coda.v1.proto too, a field the schema does not know is an error, not silently dropped.
        proto = await open_client(bridge.url, PROTO_PROTOCOL)
        ping = bridge_pb2.ClientFrame(id="p-unknown", ping=bridge_pb2.PingFrame(nonce=4))
        await proto.send(ping.SerializeToString() + b"\xf8\x07\x01")
        error = (await recv(proto)).error
        assert (error.code, error.client_frame_id) == (ErrorCode.ERROR_CODE_MALFORMED_FRAME, "p-unknown")
        assert "#127" in error.message
        await send(proto, ping)
        assert (await recv(proto)).pong.nonce == 4


async def test_rate_limits_refuse_with_error_frames(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        CODA_BRIDGE__FRAMES_PER_SECOND="1",
        CODA_BRIDGE__FRAMES_BURST="3",
        CODA_BRIDGE__AUDIO_BYTES_PER_SECOND="1000",
    )
    async with running_host(config, only="bus") as host, running_bridge(config, host.address) as bridge:
        ws = await open_client(bridge.url)
        for nonce in range(5):
            await send(ws, bridge_pb2.ClientFrame(ping=bridge_pb2.PingFrame(nonce=nonce)))
        frames = [await recv(ws) for _ in range(5)]
        assert [f.pong.nonce for f in frames[:3]] == [0, 1, 2]
        assert [f.error.code for f in frames[3:]] == [ErrorCode.ERROR_CODE_RATE_LIMITED] * 2
        audio = await open_client(bridge.url)
        await audio.send(b"\x00" * 1500)  # above one second of the audio allowance
        error = (await recv(audio)).error
        assert error.code == ErrorCode.ERROR_CODE_AUDIO_RATE_LIMITED
        assert "1000 bytes per second" in error.message


async def test_connection_limits_refuse_the_handshake_with_403(tmp_path: Path) -> None:
    config = make_config(tmp_path, CODA_BRIDGE__MAX_CONNECTIONS="3", CODA_BRIDGE__MAX_CONNECTIONS_PER_IP="2")
    async with running_host(config, only="bus") as host, running_bridge(config, host.address) as bridge:
        first = [await open_client(bridge.url) for _ in range(2)]
        with pytest.raises(InvalidStatus) as caught:
            await open_client(bridge.url)
        assert caught.value.response.status_code == 403
        assert b"too many connections from 127.0.0.1" in caught.value.response.body
        # Another source address is another IP, until the total is reached.
        await open_client(bridge.url, local_addr=("127.0.0.2", 0))
        with pytest.raises(InvalidStatus) as caught:
            await open_client(bridge.url, local_addr=("127.0.0.3", 0))
        assert caught.value.response.status_code == 403
        assert b"the bridge allows 3" in caught.value.response.body
        await first[0].close()
    assert first[1].close_code == 1001


async def test_idle_connections_are_closed_with_a_reason(tmp_path: Path) -> None:
    config = make_config(tmp_path, CODA_BRIDGE__IDLE_TIMEOUT_SECONDS="0.5")
    async with running_host(config, only="bus") as host, running_bridge(config, host.address) as bridge:
        ws = await open_client(bridge.url)
        with pytest.raises(ConnectionClosed):
            await recv(ws, timeout=10)
        assert ws.close_code == 1008
        assert "idle timeout" in ws.close_reason


SECRET = "test-secret-that-is-32-bytes-long!!"


def _jwt(**claims: object) -> str:
    return jwt.encode({"exp": int(time.time()) + 60, "aud": "coda-bridge", **claims}, SECRET, algorithm="HS256")


async def test_auth_jwt_static_tokens_and_origin(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        CODA_BRIDGE__JWT_SECRET=SECRET,
        CODA_BRIDGE__STATIC_TOKENS='{"static-abc": "kitchen"}',
        CODA_BRIDGE__ALLOWED_ORIGINS='["http://good.example"]',
    )
    async with running_host(config, only="bus") as host, running_bridge(config, host.address) as bridge:
        for url, headers, status, reason in [
            (bridge.url, {}, 401, b"missing token"),
            (bridge.url + "?token=nope", {}, 401, b"invalid token"),
            (bridge.url, {"Authorization": "Bearer " + _jwt(aud="someone-else")}, 401, b"audience"),
            (bridge.url + "?token=static-abc", {"Origin": "http://evil.example"}, 403, b"not allowed"),
        ]:
            with pytest.raises(InvalidStatus) as caught:
                await connect(url, subprotocols=[JSON_PROTOCOL], additional_headers=headers)  # type: ignore[list-item]
            assert caught.value.response.status_code == status
            assert reason in caught.value.response.body
        ws = await connect(
            bridge.url,
            subprotocols=[JSON_PROTOCOL],  # type: ignore[list-item]
            additional_headers={
                "Authorization": "Bearer " + _jwt(sub="ada", sid="s-ada"),
                "Origin": "http://good.example",
            },
        )
        hello = (await recv(ws)).hello
        assert (hello.user_id, hello.session_id) == ("ada", "s-ada")
        # The token's session is the only one it may use; subscribing with no session means its own.
        await send(ws, bridge_pb2.ClientFrame(id="x", subscribe=bridge_pb2.SubscribeFrame(session_id="s-bob")))
        assert (await recv(ws)).error.code == ErrorCode.ERROR_CODE_PERMISSION_DENIED
        await subscribe(ws, ["llm.*"])
        await recv(ws)
        static = await connect(bridge.url + "?token=static-abc", subprotocols=[JSON_PROTOCOL])  # type: ignore[list-item]
        assert (await recv(static)).hello.session_id == "kitchen"
        async with publisher(host.address) as pub:
            pub.publish(new_event("llm", events_pb2.LlmToken(text="bob's"), session_id="s-bob"))
            last = await publish_tokens(pub, 1, session="s-ada")
        assert await collect_seqs(ws, last) == [last]
        _, _, metrics = await http_get(f"{bridge.http_url}/metrics")
        assert 'coda_bridge_refusals_total{reason="missing_token"} 1.0' in metrics
        assert 'coda_bridge_refusals_total{reason="origin"} 1.0' in metrics


async def test_http_routes_healthz_metrics_and_static(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with running_host(config, only="bus") as host, running_bridge(config, host.address) as bridge:
        status, _, body = await http_get(f"{bridge.http_url}/healthz")
        assert status == 200, body
        status, content_type, body = await http_get(f"{bridge.http_url}/")
        assert status == 200
        assert content_type.startswith("text/html")
        assert "Coda" in body
        for path in ("/../pyproject.toml", "/%2e%2e/server.py", "/nothing.js", "/..%2fserver.py"):
            status, _, _ = await http_get(f"{bridge.http_url}{path}")
            assert status == 404, path
        status, content_type, body = await http_get(f"{bridge.http_url}/metrics")
        assert status == 200
        assert content_type.startswith("text/plain")
        for name in (
            "coda_bridge_connections",
            "coda_bridge_frames_in_total",
            "coda_bridge_bytes_out_total",
            "coda_bridge_events_delivered_total",
            "coda_bridge_slow_clients_total",
            "coda_bridge_publish_to_send_seconds_bucket",
            "coda_bridge_upstream_reconnects_total",
            "coda_bridge_assistant_breaker_state",
        ):
            assert name in body


async def test_healthz_reflects_the_link(tmp_path: Path) -> None:
    config = make_config(tmp_path, CODA_BRIDGE__RECONNECT_MAX_SECONDS="0.2")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    async with running_bridge(config, address, linked=False) as bridge:
        status, _, body = await http_get(f"{bridge.http_url}/healthz")
        assert status == 503
        assert address in body
        config.grpc.address = address
        async with running_host(config, only="bus"):
            async with asyncio.timeout(10):
                while (await http_get(f"{bridge.http_url}/healthz"))[0] != 200:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
        async with asyncio.timeout(10):
            while (await http_get(f"{bridge.http_url}/healthz"))[0] != 503:  # noqa: ASYNC110
                await asyncio.sleep(0.1)


class EchoAssistant(assistant_pb2_grpc.AssistantServicer):
    """A small real Assistant for the test: answers open with the session, echoes text as an event."""

    async def Converse(self, request_iterator, context):  # type: ignore[no-untyped-def]
        session = ""
        async for request in request_iterator:
            kind = request.WhichOneof("request")
            if kind == "open":
                session = request.open.session_id or "new-session"
                yield assistant_pb2.ConverseResponse(
                    session=assistant_pb2.SessionInfo(session_id=session, user_id=request.open.user_id)
                )
            elif kind == "text":
                event = new_event(
                    "assistant", events_pb2.LlmToken(text="echo:" + request.text.text), session_id=session
                )
                yield assistant_pb2.ConverseResponse(event=event)
            elif kind == "audio_chunk":
                event = new_event(
                    "assistant", events_pb2.LlmToken(text=f"audio:{len(request.audio_chunk.audio)}"), session_id=session
                )
                yield assistant_pb2.ConverseResponse(event=event)


async def test_converse_is_forwarded_to_the_assistant(tmp_path: Path) -> None:
    server = grpc.aio.server()
    assistant_pb2_grpc.add_AssistantServicer_to_server(EchoAssistant(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        config = make_config(tmp_path, CODA_ENDPOINTS__ASSISTANT=f"127.0.0.1:{port}")
        async with running_host(config, only="bus") as host, running_bridge(config, host.address) as bridge:
            ws = await open_client(bridge.url)
            converse = assistant_pb2.ConverseRequest
            await send(ws, bridge_pb2.ClientFrame(converse=converse(open=assistant_pb2.SessionOpen(session_id="s9"))))
            assert (await recv(ws)).converse.session.session_id == "s9"
            await send(ws, bridge_pb2.ClientFrame(converse=converse(text=assistant_pb2.TextInput(text="hi"))))
            assert (await recv(ws)).converse.event.llm_token.text == "echo:hi"
            await ws.send(b"\x00\x01" * 320)  # raw PCM16 on the JSON subprotocol
            assert (await recv(ws)).converse.event.llm_token.text == "audio:640"
            # A turn as the first converse frame opens a session implicitly, reported as after an open.
            proto = await open_client(bridge.url, PROTO_PROTOCOL)
            await send(proto, bridge_pb2.ClientFrame(converse=converse(text=assistant_pb2.TextInput(text="yo"))))
            assert (await recv(proto)).converse.session.session_id == "new-session"
            assert (await recv(proto)).converse.event.llm_token.text == "echo:yo"
    finally:
        await server.stop(0)


async def test_breaker_opens_and_clients_get_unavailable_fast(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{probe.getsockname()[1]}"
    config = make_config(tmp_path, CODA_ENDPOINTS__ASSISTANT=dead, CODA_BRIDGE__ASSISTANT_FAILURES_TO_OPEN="2")
    async with running_host(config, only="bus") as host, running_bridge(config, host.address) as bridge:
        ws = await open_client(bridge.url)
        text = bridge_pb2.ClientFrame(
            id="t", converse=assistant_pb2.ConverseRequest(text=assistant_pb2.TextInput(text="hello"))
        )
        messages = []
        for _ in range(3):
            await send(ws, text)
            error = (await recv(ws)).error
            assert (error.code, error.client_frame_id) == (ErrorCode.ERROR_CODE_UNAVAILABLE, "t")
            messages.append(error.message)
        assert "assistant unavailable" in messages[0]
        assert "circuit open" in messages[2]
        assert bridge.gate.state == "open"
        _, _, metrics = await http_get(f"{bridge.http_url}/metrics")
        assert "coda_bridge_assistant_breaker_state 2.0" in metrics


async def test_a_burst_far_above_the_rate_gets_few_coalesced_errors_and_the_connection_stays(tmp_path: Path) -> None:
    """1,200 frames at once from a client that reads: one RATE_LIMITED error per second with the
    count dropped (the counts add up), not an error per frame that would overflow its send queue."""
    config = make_config(tmp_path, CODA_BRIDGE__FRAMES_PER_SECOND="50", CODA_BRIDGE__FRAMES_BURST="100")
    async with running_host(config, only="bus") as host, running_bridge(config, host.address) as bridge:
        ws = await open_client(bridge.url)
        burst = 1200
        frames = [json.dumps({"ping": {"nonce": str(n)}}) for n in range(burst)]
        pongs = 0
        errors: list[bridge_pb2.ErrorFrame] = []

        async def read() -> None:
            nonlocal pongs
            while pongs + sum(e.dropped_frames for e in errors) < burst:
                frame = await recv(ws, timeout=15)
                kind = frame.WhichOneof("frame")
                if kind == "pong":
                    pongs += 1
                elif kind == "error":
                    assert frame.error.code == ErrorCode.ERROR_CODE_RATE_LIMITED, frame
                    errors.append(frame.error)

        reader = asyncio.create_task(read())
        for text in frames:
            await ws.send(text)
        await asyncio.wait_for(reader, 30)
        assert pongs >= 100  # the burst allowance
        assert pongs + sum(e.dropped_frames for e in errors) == burst
        assert 1 <= len(errors) <= 5, [e.dropped_frames for e in errors]
        assert "frame(s) dropped" in errors[-1].message
        # Still open and served.
        await asyncio.sleep(1.1)
        await send(ws, bridge_pb2.ClientFrame(ping=bridge_pb2.PingFrame(nonce=99)))
        assert (await recv(ws)).pong.nonce == 99


async def test_a_late_subscriber_gets_every_components_current_state(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with running_host(config, only="bus") as host, publisher(host.address) as pub:
        # Reported before the bridge started: only the bus log has these.
        pub.publish(new_event("llm", events_pb2.ComponentHealth(component="llm", latency_ms_p50=9)))
        await pub.flush(10)
        async with running_bridge(config, host.address) as bridge:
            assert bridge.priming is not None
            await asyncio.wait_for(bridge.priming, 10)
            # Reported while the bridge runs, before anyone subscribed.
            pub.publish(new_event("llm", events_pb2.ComponentHealth(component="llm", latency_ms_p50=4)))
            pub.publish(new_event("tools", events_pb2.ComponentHealth(component="tools", latency_ms_p50=2)))
            pub.publish(new_event("llm", events_pb2.LlmToken(text="not a state")))
            last = await publish_tokens(pub, 1)
            async with asyncio.timeout(10):
                while bridge.dispatched_seq < last:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)

            # Asked for: without current_state a subscription starts with live events only.
            plain = await open_client(bridge.url)
            await subscribe(plain, ["component.*", "system.*"])
            assert (await recv(plain)).pong.nonce == 424242
            late = await open_client(bridge.url)
            await send(
                late,
                bridge_pb2.ClientFrame(
                    subscribe=bridge_pb2.SubscribeFrame(types=["component.*", "system.*"], current_state=True)
                ),
            )
            await send(late, bridge_pb2.ClientFrame(ping=bridge_pb2.PingFrame(nonce=424242)))
            frame = await recv(late)
            assert frame.WhichOneof("frame") == "events", frame
            got = {(event_type_of(e), e.source): e for e in frame.events.events}
            assert set(got) == {("system.started", "coda"), ("component.health", "llm"), ("component.health", "tools")}
            assert got[("component.health", "llm")].component_health.latency_ms_p50 == 4  # the newest
            seqs = [e.seq for e in frame.events.events]
            assert seqs == sorted(seqs)
            assert (await recv(late)).pong.nonce == 424242
            # A filter that matches none of them gets none; live events follow as usual.
            tokens = await open_client(bridge.url)
            await subscribe(tokens, ["llm.token"])
            assert (await recv(tokens)).pong.nonce == 424242
            after = await publish_tokens(pub, 1)
            assert await collect_seqs(tokens, after) == [after]
            # A resume gets only those older than its after_seq: the replay brings the newer ones.
            resumed = await open_client(bridge.url)
            frame = bridge_pb2.SubscribeFrame(types=["component.*", "system.*"], current_state=True, after_seq=seqs[0])
            await send(resumed, bridge_pb2.ClientFrame(subscribe=frame))
            first, replayed = (await recv(resumed)).events.events, (await recv(resumed)).events.events
            assert [e.seq for e in first] == [seqs[0]]
            replayed_seqs = [e.seq for e in replayed]  # every state event after it, the older health too
            assert replayed_seqs == sorted(replayed_seqs) and replayed_seqs[0] > seqs[0]
            assert set(seqs[1:]) <= set(replayed_seqs)
            for ws in (plain, late, tokens, resumed):
                await ws.close()
