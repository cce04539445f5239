"""The OpenAI-compatible provider against a real loopback HTTP server replaying recorded streams."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from coda.config import LlmProviderConfig
from coda.llm.providers.openai import OpenAIProvider
from coda.llm.replay import ReplayServer, Reply
from coda.llm.types import Finish, GenerationRequest, Message, ProviderError, TextDelta, Tool, ToolCallDelta, Usage

DATA = Path(__file__).parent / "data" / "llm"
REQUEST = GenerationRequest(messages=(Message("user", "hi"),), tools=(Tool("get_time", "time", {"type": "object"}),))


@pytest.fixture
async def server() -> AsyncIterator[ReplayServer]:
    async with ReplayServer() as replay:
        yield replay


def provider_for(url: str, **options: float | str) -> OpenAIProvider:
    return OpenAIProvider(LlmProviderConfig(name="local", base_url=url, model="llama3.2", **options))  # type: ignore[arg-type]


async def collect(provider: OpenAIProvider, request: GenerationRequest = REQUEST) -> list:
    return [item async for item in provider.stream(request)]


async def test_streams_text_and_sends_a_proper_request(server: ReplayServer) -> None:
    server.queue(Reply.recorded(DATA / "openai_text.sse"))
    items = await collect(provider_for(server.base_url, api_key="sk-test"))
    assert "".join(i.text for i in items if isinstance(i, TextDelta)).startswith("The capital of France is Paris.")
    assert items[-2:] == [Finish("stop"), Usage(24, 15)]
    exchange = server.exchanges[0]
    assert exchange.path == "/v1/chat/completions"
    assert exchange.headers["authorization"] == "Bearer sk-test"
    assert exchange.request["model"] == "llama3.2" and exchange.request["stream"] is True
    assert exchange.request["tools"][0]["function"]["name"] == "get_time"


@pytest.mark.parametrize("chunk_size", [1, 7, 64])
async def test_events_split_across_http_chunks(server: ReplayServer, chunk_size: int) -> None:
    server.queue(Reply.recorded(DATA / "ollama_text.sse", chunk_size=chunk_size))
    items = await collect(provider_for(server.base_url))
    text = "".join(i.text for i in items if isinstance(i, TextDelta))
    assert text == "Hello! I'm doing well, thanks for asking — how can I help you today? ☕"


async def test_fragmented_tool_calls_arrive_as_deltas(server: ReplayServer) -> None:
    server.queue(Reply.recorded(DATA / "openai_tool_calls.sse"))
    items = await collect(provider_for(server.base_url))
    fragments = [i for i in items if isinstance(i, ToolCallDelta)]
    assert {f.index for f in fragments} == {0, 1}
    assert "".join(f.arguments for f in fragments if f.index == 0) == '{"timezone":"Asia/Tokyo"}'


async def test_crlf_and_keepalive_comments(server: ReplayServer) -> None:
    server.queue(Reply.recorded(DATA / "llamacpp_crlf_keepalive.sse"))
    items = await collect(provider_for(server.base_url))
    assert [i.text for i in items if isinstance(i, TextDelta)] == ["Hi", " there"]


@pytest.mark.parametrize(
    ("name", "status", "transient", "words"),
    [
        ("openai_error_401.json", 401, False, "Incorrect API key"),
        ("openai_error_429.json", 429, True, "Rate limit"),
        ("ollama_error_404.json", 404, False, "not found, try pulling it first"),
        ("vllm_error_500.json", 500, True, "CUDA out of memory"),
        ("llamacpp_error_503.json", 503, True, "Loading model"),
    ],
)
async def test_http_errors(server: ReplayServer, name: str, status: int, transient: bool, words: str) -> None:
    server.queue(Reply.recorded(DATA / name))
    with pytest.raises(ProviderError) as raised:
        await collect(provider_for(server.base_url))
    assert raised.value.status == status and raised.value.transient is transient
    assert words in raised.value.message and f"HTTP {status}" in raised.value.message


async def test_error_inside_stream(server: ReplayServer) -> None:
    server.queue(Reply.recorded(DATA / "openai_stream_error.sse"))
    seen: list = []
    with pytest.raises(ProviderError, match="error in stream: The server had an error"):
        async for item in provider_for(server.base_url).stream(REQUEST):
            seen.append(item)
    assert [i.text for i in seen if isinstance(i, TextDelta)] == ["Let", " me", " think"]


async def test_malformed_chunk_fails_clearly(server: ReplayServer) -> None:
    server.queue(Reply.recorded(DATA / "ollama_malformed.sse"))
    with pytest.raises(ProviderError, match="stream chunk is not JSON") as raised:
        await collect(provider_for(server.base_url))
    assert raised.value.transient is False


async def test_connection_refused() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ProviderError, match=f"cannot reach http://127.0.0.1:{port}/v1") as raised:
        await collect(provider_for(f"http://127.0.0.1:{port}/v1"))
    assert raised.value.transient


async def test_timeout_before_the_answer(server: ReplayServer) -> None:
    server.queue(Reply.recorded(DATA / "openai_text.sse", delay_before_headers=5))
    with pytest.raises(ProviderError, match=r"no answer from 127\.0\.0\.1:\d+ within 0\.3s"):
        await collect(provider_for(server.base_url, read_timeout_seconds=0.3))


async def test_timeout_between_chunks(server: ReplayServer) -> None:
    server.queue(Reply.recorded(DATA / "openai_text.sse", stall_after=3))
    seen: list = []
    with pytest.raises(ProviderError, match=r"stream stalled: no data from the server for 0\.3s"):
        async for item in provider_for(server.base_url, read_timeout_seconds=0.3).stream(REQUEST):
            seen.append(item)
    assert len([i for i in seen if isinstance(i, TextDelta)]) == 2
    await asyncio.wait_for(server.exchanges[0].done.wait(), 5)
    assert server.exchanges[0].client_closed


async def test_connection_dropped_mid_stream(server: ReplayServer) -> None:
    server.queue(Reply.recorded(DATA / "openai_text.sse", drop_after=4))
    with pytest.raises(ProviderError, match=r"stream broken|ended before the answer finished|closed in the middle"):
        await collect(provider_for(server.base_url))


async def test_closing_the_stream_closes_the_connection_within_a_chunk(server: ReplayServer) -> None:
    body = b"".join(
        f'data: {{"choices":[{{"index":0,"delta":{{"content":" w{i}"}},"finish_reason":null}}]}}\n\n'.encode()
        for i in range(400)
    )
    server.queue(Reply(body=body, chunk_delay=0.02))
    stream = provider_for(server.base_url).stream(REQUEST)
    received = 0
    async for item in stream:
        received += isinstance(item, TextDelta)
        if received == 3:
            break
    await stream.aclose()
    exchange = server.exchanges[0]
    await asyncio.wait_for(exchange.done.wait(), 5)
    assert exchange.client_closed
    assert exchange.closed_after_chunks is not None and exchange.closed_after_chunks <= received + 1
