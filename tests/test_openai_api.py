"""The OpenAI-compatible API end to end: a real Coda host and bridge on loopback, the official `openai`
client (httpx2, its HTTP library, and raw sockets only for what it cannot send), and the WebSocket routes beside it."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import struct
import time
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx2 as httpx
import jwt
import openai
import pytest
from assistant_helpers import replay_provider_env, sse_text, sse_tool_call
from conftest import make_config, running_host, wait_until
from openai import AsyncOpenAI
from test_bridge_helpers import open_client, recv, running_bridge, send
from test_bridge_server import http_get

from bridge.codec import JSON_PROTOCOL
from bridge.server import Bridge
from coda.config import Config
from coda.llm.replay import ReplayServer, Reply
from coda.v1 import assistant_pb2, bridge_pb2

#: The text components: everything but Voice (whose models take seconds to load).
TEXT_COMPONENTS = "bus,memory,tools,llm,assistant"
TOKEN = "s3cret-token"


@asynccontextmanager
async def coda(config: Config, only: str | None = TEXT_COMPONENTS) -> AsyncIterator[Bridge]:
    async with running_host(config, only=only) as host, running_bridge(config, host.address) as bridge:
        yield bridge


def client_of(bridge: Bridge, api_key: str = "unused", **options: object) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=bridge.api_url, api_key=api_key, max_retries=0, timeout=30, **options)  # type: ignore[arg-type]


async def test_models_and_a_question_answered_whole_and_streamed(tmp_path: Path) -> None:
    async with coda(make_config(tmp_path)) as bridge:
        client = client_of(bridge)
        models = [m.id async for m in client.models.list()]
        assert "coda" in models and "whisper-1" in models and "tts-1" in models
        assert (await client.models.retrieve("coda")).owned_by == "coda"

        answer = await client.chat.completions.create(
            model="coda", messages=[{"role": "user", "content": "what is 12 times 7"}]
        )
        assert answer.object == "chat.completion" and answer.model == "coda"
        choice = answer.choices[0]
        assert choice.finish_reason == "stop" and choice.message.role == "assistant"
        assert "84" in (choice.message.content or "")
        assert answer.usage is not None and answer.usage.completion_tokens > 0

        stream = await client.chat.completions.create(
            model="coda",
            messages=[{"role": "user", "content": "what is 12 times 7"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        assert {c.object for c in chunks} == {"chat.completion.chunk"} and len({c.id for c in chunks}) == 1
        assert chunks[0].choices[0].delta.role == "assistant"
        deltas = [c.choices[0].delta.content or "" for c in chunks if c.choices]
        assert len([d for d in deltas if d]) > 1, "the answer is streamed token by token"
        assert "".join(deltas) == choice.message.content
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        assert chunks[-1].choices == [] and chunks[-1].usage is not None

        # The raw stream ends with the [DONE] sentinel.
        async with httpx.AsyncClient(base_url=bridge.api_url, timeout=30) as http:
            body = {"model": "coda", "stream": True, "messages": [{"role": "user", "content": "what is 2 plus 2"}]}
            response = await http.post("/chat/completions", json=body)
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.text.split("\n\n") if line]
        assert events[-1] == "data: [DONE]" and "4" in response.text


async def test_a_session_keeps_context_and_without_one_the_history_comes_with_the_request(tmp_path: Path) -> None:
    async with coda(make_config(tmp_path)) as bridge:
        client = client_of(bridge)

        async def ask(text: str, history: list[dict[str, str]] | None = None, **options: object) -> str:
            messages = [*(history or []), {"role": "user", "content": text}]
            answer = await client.chat.completions.create(model="coda", messages=messages, **options)  # type: ignore[arg-type,call-overload]
            return answer.choices[0].message.content or ""

        session = {"extra_headers": {"X-Coda-Session": "s-openai-test"}}
        assert "84" in await ask("what is twelve times seven", **session)
        assert "28" in await ask("now divide that by 3", **session), "the session remembers the last result"
        # The `user` field names a session too.
        assert "84" in await ask("what is twelve times seven", user="s-openai-user")
        assert "28" in await ask("now divide that by 3", user="s-openai-user")
        # Without a session, a follow-up has nothing to follow ...
        alone = await ask("now divide that by 3")
        assert "28" not in alone
        # ... unless the request carries the conversation, as OpenAI clients do.
        history = [
            {"role": "user", "content": "what is twelve times seven"},
            {"role": "assistant", "content": "12 times 7 is 84."},
        ]
        assert "28" in await ask("now divide that by 3", history)
        # A session id the bus would refuse is refused here.
        with pytest.raises(openai.BadRequestError) as refused:
            await ask("hi", extra_headers={"X-Coda-Session": "../../etc/passwd"})
        assert refused.value.status_code == 400 and "session" in refused.value.message


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


async def test_requests_without_a_session_do_not_pile_up_in_the_assistant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("coda.assistant.sessions.IDLE_SESSIONS_KEPT", 3)
    config = make_config(tmp_path)
    async with running_host(config, only=TEXT_COMPONENTS) as host, running_bridge(config, host.address) as bridge:
        assistant = next(c for c in host.components if type(c).__name__ == "AssistantComponent")
        store = assistant.servicer._store  # type: ignore[attr-defined]
        client = client_of(bridge)
        for i in range(12):
            answer = await client.chat.completions.create(
                model="coda", messages=[{"role": "user", "content": f"what is {i} plus 1"}]
            )
            assert str(i + 1) in (answer.choices[0].message.content or "")
        # Each request was a session of its own, saved in the file; memory keeps only the newest
        # (each is let go once its turn is saved, a moment after the answer).
        await wait_until(lambda: store.in_memory <= 3, 10, "idle sessions to be let go")
        assert len(store.list(limit=100)) >= 12


@pytest.mark.parametrize("stream", [False, True])
async def test_a_client_tool_call_round_trip(tmp_path: Path, stream: bool) -> None:
    async with ReplayServer() as replay:
        replay.queue(
            Reply(body=sse_tool_call("get_weather", {"city": "Lisbon"}, call_id="call_weather_1")),
            Reply(body=sse_text(["It", " is", " sunny", " in", " Lisbon."])),
        )
        config = make_config(tmp_path, **replay_provider_env(replay.base_url))
        async with coda(config) as bridge:
            # The whole variant keeps a session: the pending turn is not saved, its continuation is.
            session = "" if stream else "s-weather"
            client = client_of(bridge, default_headers={"X-Coda-Session": session} if session else None)
            messages: list[dict[str, object]] = [{"role": "user", "content": "what is the weather in Lisbon?"}]
            if stream:
                chunks = [
                    c
                    async for c in await client.chat.completions.create(
                        model="coda",
                        messages=messages,
                        tools=[WEATHER_TOOL],
                        stream=True,  # type: ignore[list-item]
                    )
                ]
                calls = [call for c in chunks for call in (c.choices[0].delta.tool_calls or [])]
                assert [c.choices[0].finish_reason for c in chunks][-1] == "tool_calls"
                assert len(calls) == 1 and calls[0].index == 0
                call_id, name, arguments = calls[0].id, calls[0].function.name, calls[0].function.arguments  # type: ignore[union-attr]
            else:
                first = await client.chat.completions.create(model="coda", messages=messages, tools=[WEATHER_TOOL])  # type: ignore[arg-type,list-item]
                assert first.choices[0].finish_reason == "tool_calls"
                tool_calls = first.choices[0].message.tool_calls or []
                assert len(tool_calls) == 1
                call_id, name, arguments = (
                    tool_calls[0].id,
                    tool_calls[0].function.name,
                    tool_calls[0].function.arguments,
                )  # type: ignore[union-attr]
            assert (call_id, name, json.loads(arguments or "")) == ("call_weather_1", "get_weather", {"city": "Lisbon"})
            # The model was offered the client's tool next to Coda's own.
            offered = {t["function"]["name"] for t in replay.exchanges[0].request["tools"]}
            assert "get_weather" in offered and "calculate" in offered

            messages += [
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]},
                {"role": "tool", "tool_call_id": call_id, "content": '{"sky": "sunny", "celsius": 24}'},
            ]  # fmt: skip
            final = await client.chat.completions.create(model="coda", messages=messages, tools=[WEATHER_TOOL])  # type: ignore[arg-type,list-item]
            assert final.choices[0].finish_reason == "stop"
            assert final.choices[0].message.content == "It is sunny in Lisbon."
            # The model saw the question, its own call and the client's result.
            sent = replay.exchanges[1].request["messages"]
            assert sent[-1] == {"role": "tool", "content": '{"sky": "sunny", "celsius": 24}',
                                "tool_call_id": "call_weather_1", "name": "get_weather"}  # fmt: skip
            assert sent[-2]["role"] == "assistant" and sent[-2]["tool_calls"][0]["id"] == "call_weather_1"
            assert sent[-3] == {"role": "user", "content": "what is the weather in Lisbon?"}
            assert len(replay.exchanges) == 2, "the client's tool was not run by Coda"
            if session:
                assert bridge.assistant is not None
                info = (await bridge.assistant.GetSession(assistant_pb2.GetSessionRequest(session_id=session))).session
                assert [(t.user_text, t.assistant_text) for t in info.history] == [
                    ("what is the weather in Lisbon?", "It is sunny in Lisbon.")
                ]


async def test_a_client_leaving_a_stream_stops_the_turn(tmp_path: Path) -> None:
    async with ReplayServer() as replay:
        words = [f" word{i}" for i in range(400)]
        replay.queue(Reply(body=sse_text(words), chunk_delay=0.03))
        config = make_config(tmp_path, **replay_provider_env(replay.base_url))
        async with coda(config) as bridge, httpx.AsyncClient(base_url=bridge.api_url, timeout=30) as http:
            body = {"model": "coda", "stream": True, "messages": [{"role": "user", "content": "tell me a long story"}]}
            async with http.stream("POST", "/chat/completions", json=body) as response:
                async for line in response.aiter_lines():
                    if "word1" in line:
                        break
            # The client hung up: the model's stream is cancelled, long before its 12 s of words.
            await asyncio.wait_for(replay.exchanges[0].done.wait(), 10)
            assert replay.exchanges[0].client_closed


async def test_speech_and_transcription_round_trip_through_voice(tmp_path: Path) -> None:
    async with coda(make_config(tmp_path), only=None) as bridge:
        client = client_of(bridge)
        speech = await client.audio.speech.create(
            model="tts-1", voice="alloy", input="What is the weather like today?", response_format="wav"
        )
        wav_bytes = speech.content
        with wave.open(io.BytesIO(wav_bytes)) as wav:
            assert wav.getnchannels() == 1 and wav.getsampwidth() == 2 and wav.getframerate() >= 8000
            assert wav.getnframes() / wav.getframerate() > 0.5, "a second or so of speech"

        text = await client.audio.transcriptions.create(model="whisper-1", file=("question.wav", wav_bytes))
        assert "weather" in text.text.lower()

        # OpenAI's raw `pcm` is 24 kHz mono; made stereo it is still understood (Voice downmixes and resamples).
        pcm = (await client.audio.speech.create(model="tts-1", voice="alloy", input="Good morning, Lisbon.",
                                                response_format="pcm")).content  # fmt: skip
        samples = struct.unpack(f"<{len(pcm) // 2}h", pcm)
        stereo = struct.pack(f"<{2 * len(samples)}h", *(s for sample in samples for s in (sample, sample)))
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as out:
            out.setnchannels(2)
            out.setsampwidth(2)
            out.setframerate(24000)
            out.writeframes(stereo)
        text = await client.audio.transcriptions.create(model="whisper-1", file=("stereo.wav", buffer.getvalue()))
        assert "lisbon" in text.text.lower() or "morning" in text.text.lower()

        with pytest.raises(openai.BadRequestError) as bad_audio:
            await client.audio.transcriptions.create(model="whisper-1", file=("notes.wav", b"this is not audio"))
        assert bad_audio.value.status_code == 400 and "WAV" in bad_audio.value.message
        with pytest.raises(openai.NotFoundError):
            await client.audio.transcriptions.create(model="no-such-model", file=("question.wav", wav_bytes))
        with pytest.raises(openai.BadRequestError):
            await client.audio.speech.create(model="tts-1", voice="alloy", input="hi", response_format="flac")


async def test_bad_requests_get_openai_shaped_errors(tmp_path: Path) -> None:
    config = make_config(tmp_path, CODA_BRIDGE__MAX_BODY_BYTES="4096")
    async with coda(config) as bridge:
        client = client_of(bridge)
        with pytest.raises(openai.NotFoundError) as unknown:
            await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        assert unknown.value.status_code == 404 and unknown.value.code == "model_not_found"
        with pytest.raises(openai.BadRequestError) as no_user:
            await client.chat.completions.create(model="coda", messages=[{"role": "system", "content": "be brief"}])
        assert no_user.value.param == "messages"

        async with httpx.AsyncClient(base_url=bridge.api_url, timeout=30) as http:
            malformed = await http.post(
                "/chat/completions",
                content=b'{"model": "coda", "messages": [',
                headers={"Content-Type": "application/json"},
            )
            assert malformed.status_code == 400
            error = malformed.json()["error"]
            assert set(error) == {"message", "type", "param", "code"} and "JSON" in error["message"]

            big = {"model": "coda", "messages": [{"role": "user", "content": "x" * 5000}]}
            oversize = await http.post("/chat/completions", json=big)
            assert oversize.status_code == 413 and oversize.json()["error"]["code"] == "request_too_large"

            assert (await http.get("/no/such/route")).status_code == 404
            assert (await http.delete("/chat/completions")).status_code == 405
        # The openai package reports the oversize body as its own exception type too.
        with pytest.raises(openai.APIStatusError) as too_large:
            await client.chat.completions.create(model="coda", messages=[{"role": "user", "content": "x" * 5000}])
        assert too_large.value.status_code == 413

        # A chunked body past the limit is refused as well, and the connection still answers later requests.
        reader, writer = await asyncio.open_connection("127.0.0.1", bridge.port)
        writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"1400\r\n" + b"y" * 5120 + b"\r\n0\r\n\r\n")
        status_line = await asyncio.wait_for(reader.readline(), 10)
        assert status_line == b"HTTP/1.1 413 Content Too Large\r\n"
        writer.close()
        answer = await client.chat.completions.create(model="coda", messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content


async def test_auth_is_the_websockets_auth(tmp_path: Path) -> None:
    secret = "jwt-secret-for-tests-0123456789abcdef"
    config = make_config(tmp_path, CODA_BRIDGE__STATIC_TOKENS=json.dumps({TOKEN: ""}), CODA_BRIDGE__JWT_SECRET=secret)
    async with coda(config) as bridge:
        async with httpx.AsyncClient(base_url=bridge.api_url, timeout=30) as http:
            missing = await http.get("/models")
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
        assert missing.headers["www-authenticate"] == "Bearer"
        with pytest.raises(openai.AuthenticationError) as refused:
            await client_of(bridge, api_key="wrong-token").models.list()
        assert refused.value.status_code == 401 and refused.value.code == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            await client_of(bridge, api_key="wrong").chat.completions.create(
                model="coda", messages=[{"role": "user", "content": "hi"}]
            )
        models = [m.id async for m in client_of(bridge, api_key=TOKEN).models.list()]
        assert "coda" in models

        # A JWT bound to a session: its requests go to that session, and no other.
        claims = {"sub": "ana", "sid": "s-ana-jwt", "aud": "coda-bridge", "exp": int(time.time()) + 600}
        ana = client_of(bridge, api_key=jwt.encode(claims, secret, algorithm="HS256"))
        await ana.chat.completions.create(model="coda", messages=[{"role": "user", "content": "what is 12 times 7"}])
        followup = await ana.chat.completions.create(
            model="coda", messages=[{"role": "user", "content": "now divide that by 3"}]
        )
        assert "28" in (followup.choices[0].message.content or ""), "the token's session kept the context"
        with pytest.raises(openai.PermissionDeniedError):
            await ana.chat.completions.create(
                model="coda", messages=[{"role": "user", "content": "hi"}], user="s-someone-else"
            )
        expired = client_of(bridge, api_key=jwt.encode({**claims, "exp": 1}, secret, algorithm="HS256"))
        with pytest.raises(openai.AuthenticationError) as old:
            await expired.models.list()
        assert "expired" in old.value.message

        metrics = (await http_get(f"{bridge.http_url}/metrics"))[2]
        assert 'coda_bridge_api_requests_total{route="GET /v1/models",status="401"} 3.0' in metrics
        assert 'coda_bridge_api_requests_total{route="GET /v1/models",status="200"} 1.0' in metrics
        assert 'coda_bridge_api_requests_total{route="POST /v1/chat/completions",status="403"} 1.0' in metrics
        assert 'coda_bridge_api_seconds_count{route="POST /v1/chat/completions"} 4.0' in metrics


async def test_upstream_down_is_503(tmp_path: Path) -> None:
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{spare.getsockname()[1]}"
    config = make_config(tmp_path)
    async with running_bridge(config, dead, linked=False) as bridge:
        client = client_of(bridge)
        with pytest.raises(openai.InternalServerError) as down:
            await client.chat.completions.create(model="coda", messages=[{"role": "user", "content": "hi"}])
        assert down.value.status_code == 503 and down.value.code == "upstream_unavailable"
        with pytest.raises(openai.InternalServerError) as down:
            await client.audio.speech.create(model="tts-1", voice="alloy", input="hello")
        assert down.value.status_code == 503


async def test_requests_past_the_rate_limit_get_429(tmp_path: Path) -> None:
    config = make_config(tmp_path, CODA_BRIDGE__FRAMES_PER_SECOND="0.5", CODA_BRIDGE__FRAMES_BURST="2")
    async with running_bridge(config, "127.0.0.1:9", linked=False) as bridge:
        client = client_of(bridge)
        for _ in range(2):
            assert [m.id async for m in client.models.list()]
        with pytest.raises(openai.RateLimitError) as limited:
            await client.models.list()
        assert limited.value.status_code == 429 and limited.value.code == "rate_limit_exceeded"


async def test_api_connections_count_against_the_connection_limits(tmp_path: Path) -> None:
    config = make_config(tmp_path, CODA_BRIDGE__MAX_CONNECTIONS_PER_IP="1")
    async with running_bridge(config, "127.0.0.1:9", linked=False) as bridge:
        ws = await open_client(bridge.url, JSON_PROTOCOL)
        with pytest.raises(openai.RateLimitError) as refused:
            await client_of(bridge).models.list()
        assert refused.value.code == "too_many_connections"
        await ws.close()
        async with asyncio.timeout(10):
            while bridge.admission.total:  # noqa: ASYNC110 - the bridge lets the WebSocket go just after the close
                await asyncio.sleep(0.05)
        async with client_of(bridge) as client:
            assert [m.id async for m in client.models.list()]


async def test_the_websocket_page_and_health_routes_share_the_port(tmp_path: Path) -> None:
    async with coda(make_config(tmp_path)) as bridge:
        status, content_type, _ = await http_get(f"{bridge.http_url}/")
        assert status == 200 and content_type.startswith("text/html")
        assert (await http_get(f"{bridge.http_url}/healthz"))[0] == 200
        assert (await http_get(f"{bridge.http_url}/no-such-file.txt"))[0] == 404
        async with httpx.AsyncClient(timeout=10) as http:
            # Methods other than GET outside the API are refused by the front, which websockets could not do.
            refused = await http.post(f"{bridge.http_url}/", content=b"hello")
            assert refused.status_code == 405
        ws = await open_client(bridge.url, JSON_PROTOCOL)
        for request in (
            assistant_pb2.ConverseRequest(open=assistant_pb2.SessionOpen()),
            assistant_pb2.ConverseRequest(text=assistant_pb2.TextInput(text="what is 12 times 7")),
        ):
            await send(ws, bridge_pb2.ClientFrame(converse=request))
        text = ""
        async with asyncio.timeout(30):
            while True:
                received = await recv(ws)
                event = received.converse.event
                if event.HasField("llm_token"):
                    text += event.llm_token.text
                if event.HasField("conversation_turn"):
                    break
        assert "84" in text
        # The API answers while the WebSocket is open.
        answer = await client_of(bridge).chat.completions.create(
            model="coda", messages=[{"role": "user", "content": "what is 12 times 7"}]
        )
        assert "84" in (answer.choices[0].message.content or "")
        await ws.close()
