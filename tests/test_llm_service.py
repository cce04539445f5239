"""`coda.v1.Llm` through a real host (bus + llm) and the replay server: streams, events, failures."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import grpc
import pytest

from coda.bus.client import subscribe
from coda.llm.replay import ReplayServer, Reply
from coda.runtime.host import Host
from coda.schema import event_type
from coda.v1 import events_pb2, llm_pb2, llm_pb2_grpc
from tests.conftest import make_config, running_host

DATA = Path(__file__).parent / "data" / "llm"
TOOLS = [
    llm_pb2.ToolSpec(
        name="get_time",
        description="Current time in a time zone",
        parameters_json_schema=json.dumps({"type": "object", "properties": {"timezone": {"type": "string"}}}),
    ),
    llm_pb2.ToolSpec(
        name="calculate",
        description="Evaluate arithmetic",
        parameters_json_schema=json.dumps(
            {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}
        ),
    ),
]


def user(text: str) -> llm_pb2.ChatMessage:
    return llm_pb2.ChatMessage(role=llm_pb2.ROLE_USER, content=text)


def start(text: str = "hi", *, session: str = "", provider: str = "", max_tokens: int = 0) -> llm_pb2.GenerateRequest:
    return llm_pb2.GenerateRequest(
        start=llm_pb2.GenerateStart(
            messages=[user(text)],
            tools=TOOLS,
            options=llm_pb2.GenerateOptions(provider=provider, max_tokens=max_tokens),
            session_id=session or uuid.uuid4().hex,
            correlation_id="turn-1",
        )
    )


def providers_env(url: str, **extra: str) -> dict[str, str]:
    return {
        "CODA_LLM__CHAIN": json.dumps(["local", "embedded"]),
        "CODA_LLM__PROVIDERS": json.dumps(
            [{"name": "local", "base_url": url, "model": "llama3.2", "read_timeout_seconds": 5}]
        ),
        "CODA_LLM__BREAKER_FAIL_MAX": "2",
        "CODA_LLM__BREAKER_RESET_SECONDS": "0.5",
        **extra,
    }


def dead_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/v1"


@pytest.fixture
async def replay() -> AsyncIterator[ReplayServer]:
    async with ReplayServer() as server:
        yield server


async def generate(host: Host, *requests: llm_pb2.GenerateRequest) -> list[llm_pb2.GenerateResponse]:
    async with grpc.aio.insecure_channel(host.address) as channel:
        call = llm_pb2_grpc.LlmStub(channel).Generate(iter(requests))
        return [response async for response in call]


def kinds(responses: Iterable[llm_pb2.GenerateResponse]) -> list[str]:
    return [r.WhichOneof("response") for r in responses]


async def bus_events(host: Host, session: str, until: str, types: tuple[str, ...] = ("llm.*",)) -> list:
    """The session's events from the start of the log up to the first one of type `until`."""
    events = []
    async with grpc.aio.insecure_channel(host.address) as channel:

        async def read() -> None:
            async for response in subscribe(channel, types, session_id=session, after_seq=0):
                for event in response.batch.events:
                    events.append(event)
                    if event_type(event) == until:
                        return

        await asyncio.wait_for(read(), 10)
    return events


async def test_streams_tokens_and_publishes_events(tmp_path: Path, replay: ReplayServer) -> None:
    replay.queue(Reply.recorded(DATA / "openai_text.sse"))
    async with running_host(make_config(tmp_path, **providers_env(replay.base_url)), only="bus,llm") as host:
        request = start("capital of France?")
        responses = await generate(host, request)
        assert kinds(responses)[0] == "started" and kinds(responses)[-1] == "finished"
        tokens = [r.token for r in responses if r.HasField("token")]
        assert [t.index for t in tokens] == list(range(15))
        finished = responses[-1].finished
        assert finished.text == "The capital of France is Paris. It's known for the Eiffel Tower."
        assert finished.text == "".join(t.text for t in tokens)
        assert (finished.prompt_tokens, finished.completion_tokens) == (24, 15)
        assert finished.provider == "local" and finished.model == "llama3.2" and finished.finish_reason == "stop"
        assert finished.duration_ms > 0 and finished.first_token_ms > 0 and finished.tokens_per_second > 0
        assert responses[0].started.provider == "local" and responses[0].started.tools == 2

        events = await bus_events(host, request.start.session_id, "llm.finished")
        types = [event_type(e) for e in events]
        assert types == ["llm.request_started", *["llm.token"] * 15, "llm.finished"]
        assert {e.correlation_id for e in events} == {"turn-1"}
        assert events[-1].llm_finished == finished


async def test_fragmented_tool_calls_come_out_whole(tmp_path: Path, replay: ReplayServer) -> None:
    replay.queue(Reply.recorded(DATA / "openai_tool_calls.sse", chunk_size=5))
    async with running_host(make_config(tmp_path, **providers_env(replay.base_url)), only="bus,llm") as host:
        request = start("time in Tokyo and 12*7?")
        responses = await generate(host, request)
        calls = [r.tool_call for r in responses if r.HasField("tool_call")]
        assert [(c.call_id, c.name, json.loads(c.arguments_json)) for c in calls] == [
            ("call_Xn3bVq8ZpHk2mR7sLw4tYc1E", "get_time", {"timezone": "Asia/Tokyo"}),
            ("call_Pq7wEr2TyUi9oA4sDf6gHj3K", "calculate", {"expression": "12*7"}),
        ]
        assert responses[-1].finished.finish_reason == "tool_calls"
        events = await bus_events(host, request.start.session_id, "llm.finished")
        assert [event_type(e) for e in events].count("llm.tool_call_requested") == 2


async def test_ollama_tool_call_and_length(tmp_path: Path, replay: ReplayServer) -> None:
    replay.queue(Reply.recorded(DATA / "ollama_tool_call.sse"), Reply.recorded(DATA / "ollama_length.sse"))
    async with running_host(make_config(tmp_path, **providers_env(replay.base_url)), only="bus,llm") as host:
        responses = await generate(host, start("tea timer"))
        assert json.loads(responses[1].tool_call.arguments_json) == {"label": "tea", "seconds": 300}
        assert responses[-1].finished.finish_reason == "tool_calls"  # Ollama said "stop"
        responses = await generate(host, start("story", max_tokens=6))
        assert responses[-1].finished.finish_reason == "length"
        assert replay.exchanges[1].request["max_tokens"] == 6


async def test_a_bad_message_mid_generation_stops_it_at_once_with_invalid_argument(
    tmp_path: Path, replay: ReplayServer
) -> None:
    """A request that does not parse, sent while the model streams, ends the call with
    INVALID_ARGUMENT and stops the upstream like a cancel (it used to run the whole answer first)."""
    body = b"".join(
        f'data: {{"choices":[{{"index":0,"delta":{{"content":" w{i}"}},"finish_reason":null}}]}}\n\n'.encode()
        for i in range(500)
    )
    replay.queue(Reply(body=body, chunk_delay=0.02))  # about 10 s of answer
    async with running_host(make_config(tmp_path, **providers_env(replay.base_url)), only="bus,llm") as host:
        async with grpc.aio.insecure_channel(host.address) as channel:
            generate = channel.stream_stream(
                "/coda.v1.Llm/Generate", request_serializer=None, response_deserializer=None
            )
            call = generate()
            await call.write(start("talk forever").SerializeToString())
            tokens = 0
            while tokens < 3:
                response = llm_pb2.GenerateResponse.FromString(await call.read())
                tokens += response.HasField("token")
            began = time.monotonic()
            await call.write(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff garbage")
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                while True:
                    await call.read()
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert time.monotonic() - began < 3.0
        await asyncio.wait_for(replay.exchanges[0].done.wait(), 5)


async def test_cancel_stops_the_upstream_within_a_chunk(tmp_path: Path, replay: ReplayServer) -> None:
    body = b"".join(
        f'data: {{"choices":[{{"index":0,"delta":{{"content":" w{i}"}},"finish_reason":null}}]}}\n\n'.encode()
        for i in range(500)
    )
    replay.queue(Reply(body=body, chunk_delay=0.02))
    async with running_host(make_config(tmp_path, **providers_env(replay.base_url)), only="bus,llm") as host:
        request = start("talk forever")
        cancel = asyncio.Event()

        async def requests() -> AsyncIterator[llm_pb2.GenerateRequest]:
            yield request
            await cancel.wait()
            yield llm_pb2.GenerateRequest(cancel=llm_pb2.GenerateCancel())

        responses = []
        async with grpc.aio.insecure_channel(host.address) as channel:
            async for response in llm_pb2_grpc.LlmStub(channel).Generate(requests()):
                responses.append(response)
                if len([r for r in responses if r.HasField("token")]) == 3:
                    cancel.set()
        finished = responses[-1].finished
        assert finished.finish_reason == "cancelled" and finished.provider == "local"
        assert finished.text.startswith(" w0 w1 w2")
        exchange = replay.exchanges[0]
        await asyncio.wait_for(exchange.done.wait(), 5)
        assert exchange.client_closed
        # Tokens already in flight when the cancel arrived, plus at most the chunk being read.
        tokens = len([r for r in responses if r.HasField("token")])
        assert exchange.closed_after_chunks is not None and exchange.closed_after_chunks <= tokens + 1
        assert exchange.closed_after_chunks < 100
        events = await bus_events(host, request.start.session_id, "llm.finished")
        assert events[-1].llm_finished.finish_reason == "cancelled"


async def test_client_disconnect_closes_the_upstream(tmp_path: Path, replay: ReplayServer) -> None:
    body = b"".join(
        f'data: {{"choices":[{{"index":0,"delta":{{"content":" w{i}"}},"finish_reason":null}}]}}\n\n'.encode()
        for i in range(500)
    )
    replay.queue(Reply(body=body, chunk_delay=0.02))
    async with running_host(make_config(tmp_path, **providers_env(replay.base_url)), only="bus,llm") as host:
        async with grpc.aio.insecure_channel(host.address) as channel:
            call = llm_pb2_grpc.LlmStub(channel).Generate(iter([start("talk")]))
            async for response in call:
                if response.HasField("token"):
                    break
            call.cancel()
        await asyncio.wait_for(replay.exchanges[0].done.wait(), 5)
        assert replay.exchanges[0].client_closed and replay.exchanges[0].closed_after_chunks < 100


@pytest.mark.parametrize(
    ("requests_", "reason"),
    [
        ([], "no request"),
        ([llm_pb2.GenerateRequest(cancel=llm_pb2.GenerateCancel())], "first request must be a start"),
        ([llm_pb2.GenerateRequest(start=llm_pb2.GenerateStart())], "messages is empty"),
        (
            [
                llm_pb2.GenerateRequest(
                    start=llm_pb2.GenerateStart(
                        messages=[user("x")],
                        tools=[llm_pb2.ToolSpec(name="t", parameters_json_schema='{"type": "object", "required": 3}')],
                    )
                )
            ],
            "not a valid JSON Schema",
        ),
        ([start(provider="nope")], "unknown provider 'nope'"),
    ],
)
async def test_invalid_requests(tmp_path: Path, requests_: list, reason: str) -> None:
    async with running_host(make_config(tmp_path), only="bus,llm") as host:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await generate(host, *requests_)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert reason in (raised.value.details() or "")


async def test_fallback_to_embedded_and_breaker_cycle(tmp_path: Path, replay: ReplayServer) -> None:
    replay.queue(
        Reply.recorded(DATA / "vllm_error_500.json"),
        Reply.recorded(DATA / "llamacpp_error_503.json"),
        Reply.recorded(DATA / "openai_text.sse"),
    )
    async with running_host(make_config(tmp_path, **providers_env(replay.base_url)), only="bus,llm") as host:
        session = uuid.uuid4().hex
        for expected_reason in ("CUDA out of memory", "Loading model"):
            responses = await generate(host, start("what is 6 times 7", session=session))
            assert kinds(responses)[:2] == ["started", "fallback"]
            fallback = responses[1].fallback
            assert (fallback.from_provider, fallback.to_provider) == ("local", "embedded")
            assert expected_reason in fallback.reason
            assert responses[-1].finished.provider == "embedded"
            assert json.loads(responses[-2].tool_call.arguments_json) == {"expression": "6*7"}

        # Two failures opened the breaker: the next call does not reach the server at all.
        responses = await generate(host, start("hello", session=session))
        assert "circuit breaker open" in responses[1].fallback.reason
        assert len(replay.exchanges) == 2
        async with grpc.aio.insecure_channel(host.address) as channel:
            listed = await llm_pb2_grpc.LlmStub(channel).ListProviders(llm_pb2.ListProvidersRequest())
        assert [(p.name, p.kind, p.breaker) for p in listed.providers] == [
            ("local", "openai", events_pb2.BREAKER_STATE_OPEN),
            ("embedded", "embedded", events_pb2.BREAKER_STATE_CLOSED),
        ]

        # After the reset timeout a trial request goes through, succeeds, and closes the breaker.
        await asyncio.sleep(0.6)
        responses = await generate(host, start("hello", session=session))
        assert responses[-1].finished.provider == "local" and "fallback" not in kinds(responses)

        breaker = await bus_events(host, "", "component.breaker", types=("component.breaker",))
        assert breaker[0].component_breaker.state == events_pb2.BREAKER_STATE_OPEN
        assert "Loading model" in breaker[0].component_breaker.reason
        changes = []
        async with grpc.aio.insecure_channel(host.address) as channel:

            async def read() -> None:
                async for response in subscribe(channel, ["component.breaker"], after_seq=0):
                    changes.extend(e.component_breaker.state for e in response.batch.events)
                    if len(changes) >= 3:
                        return

            await asyncio.wait_for(read(), 10)
        assert changes == [
            events_pb2.BREAKER_STATE_OPEN,
            events_pb2.BREAKER_STATE_HALF_OPEN,
            events_pb2.BREAKER_STATE_CLOSED,
        ]
        events = await bus_events(host, session, "llm.provider_fallback")
        assert event_type(events[0]) == "llm.request_started"


async def test_client_errors_fall_back_without_tripping_the_breaker(tmp_path: Path, replay: ReplayServer) -> None:
    replay.queue(*(Reply.recorded(DATA / "ollama_error_404.json") for _ in range(3)))
    async with running_host(make_config(tmp_path, **providers_env(replay.base_url)), only="bus,llm") as host:
        for _ in range(3):
            responses = await generate(host, start("hello"))
            assert 'model "llama3.9" not found' in responses[1].fallback.reason
        assert len(replay.exchanges) == 3  # a 404 is this request's problem, not a dead server


async def test_malformed_before_first_token_falls_back(tmp_path: Path, replay: ReplayServer) -> None:
    replay.queue(Reply.recorded(DATA / "proxy_garbage.sse"))
    async with running_host(make_config(tmp_path, **providers_env(replay.base_url)), only="bus,llm") as host:
        responses = await generate(host, start("hello"))
        assert "not JSON" in responses[1].fallback.reason
        assert responses[-1].finished.provider == "embedded"


@pytest.mark.parametrize("recording", ["ollama_malformed.sse", "openai_stream_error.sse"])
async def test_failure_after_tokens_ends_unavailable(tmp_path: Path, replay: ReplayServer, recording: str) -> None:
    replay.queue(Reply.recorded(DATA / recording))
    async with running_host(make_config(tmp_path, **providers_env(replay.base_url)), only="bus,llm") as host:
        request = start("hello")
        seen = []
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            async with grpc.aio.insecure_channel(host.address) as channel:
                async for response in llm_pb2_grpc.LlmStub(channel).Generate(iter([request])):
                    seen.append(response)
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "provider local failed after" in (raised.value.details() or "")
        assert "fallback" not in kinds(seen) and "token" in kinds(seen)
        events = await bus_events(host, request.start.session_id, "llm.error")
        assert events[-1].llm_error.code == "UNAVAILABLE"


async def test_all_providers_failing_is_unavailable_naming_each(tmp_path: Path) -> None:
    env = {
        "CODA_LLM__CHAIN": json.dumps(["first", "second"]),
        "CODA_LLM__PROVIDERS": json.dumps(
            [{"name": "first", "base_url": dead_url()}, {"name": "second", "base_url": dead_url()}]
        ),
    }
    async with running_host(make_config(tmp_path, **env), only="bus,llm") as host:
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await generate(host, start("hello"))
        assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
        details = raised.value.details() or ""
        assert details.startswith("all LLM providers failed: first: cannot reach")
        assert "; second: cannot reach" in details


async def test_embedded_default_answers_through_grpc(tmp_path: Path) -> None:
    async with running_host(make_config(tmp_path), only="bus,llm") as host:
        responses = await generate(host, start("what time is it in Tokyo"))
        assert json.loads(responses[1].tool_call.arguments_json) == {"timezone": "Asia/Tokyo"}
        conversation = llm_pb2.GenerateStart(
            messages=[
                user("what time is it in Tokyo"),
                llm_pb2.ChatMessage(
                    role=llm_pb2.ROLE_ASSISTANT,
                    tool_calls=[
                        llm_pb2.ChatToolCall(id="c1", name="get_time", arguments_json='{"timezone": "Asia/Tokyo"}')
                    ],
                ),
                llm_pb2.ChatMessage(
                    role=llm_pb2.ROLE_TOOL,
                    tool_call_id="c1",
                    content='{"iso": "2026-01-02T03:04:00+09:00", "timezone": "Asia/Tokyo"}',
                ),
            ],
            tools=TOOLS,
        )
        responses = await generate(host, llm_pb2.GenerateRequest(start=conversation))
        tokens = [r.token.text for r in responses if r.HasField("token")]
        assert len(tokens) > 3
        assert "".join(tokens) == "It's 03:04 on Friday, 2 January 2026 in Tokyo." == responses[-1].finished.text
        assert responses[-1].finished.provider == "embedded"
