"""The llama.cpp provider with the real bundled model: streaming, cancel, constrained tool calls,
bad model files, and the provider behind the gRPC LLM service (with fallback to "embedded")."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import jsonschema
import pytest

from coda.config import LlmProviderConfig
from coda.llm.models import DEFAULT_MODEL, resolve
from coda.llm.providers.llamacpp import LlamaCppProvider, chat_messages, tools_grammar
from coda.llm.types import (
    Finish,
    GenerationRequest,
    Message,
    ProviderError,
    StreamItem,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from coda.v1 import llm_pb2, llm_pb2_grpc
from tests.conftest import make_config, running_host

pytestmark = pytest.mark.skipif(
    not resolve(DEFAULT_MODEL).is_file(), reason="bundled model not installed (python scripts/install_models.py)"
)

TIMER_SCHEMA = {
    "type": "object",
    "properties": {
        "seconds": {"type": "integer", "minimum": 1, "description": "duration in seconds"},
        "label": {"type": "string"},
    },
    "required": ["seconds"],
    "additionalProperties": False,
}
TIMER = Tool("set_timer", "Start a countdown timer.", TIMER_SCHEMA)
WEATHER = Tool(
    "get_weather",
    "Current weather for a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
SYSTEM = Message("system", "You are Coda, a helpful voice assistant. Answer briefly.")


def ask(text: str, *, tools: tuple[Tool, ...] = (), max_tokens: int = 16) -> GenerationRequest:
    return GenerationRequest((SYSTEM, Message("user", text)), tools=tools, max_tokens=max_tokens)


@pytest.fixture(scope="module")
def provider() -> Iterator[LlamaCppProvider]:
    """One load for the module; each test's loop awaits the same (finished) load."""
    yield LlamaCppProvider(LlmProviderConfig(name="local", kind="llamacpp"), warm_prompt=SYSTEM.content)


async def collect(provider: LlamaCppProvider, request: GenerationRequest) -> list[StreamItem]:
    return [item async for item in provider.stream(request)]


async def test_streams_text_then_usage_and_finish(provider: LlamaCppProvider) -> None:
    await asyncio.gather(provider.load(), provider.load())  # concurrent loads share one
    items = await collect(provider, ask("What is the capital of France?"))
    texts = [i.text for i in items if isinstance(i, TextDelta)]
    assert len(texts) >= 3 and "Paris" in "".join(texts)
    assert isinstance(items[-2], Usage) and items[-2].prompt_tokens > 10 and items[-2].completion_tokens >= len(texts)
    assert items[-1] == Finish("stop")
    again = await collect(provider, ask("What is the capital of France?"))
    assert again == items  # fixed seed: the same answer


async def test_max_tokens_ends_with_length(provider: LlamaCppProvider) -> None:
    items = await collect(provider, ask("Count from one to fifty in words.", max_tokens=5))
    assert len([i for i in items if isinstance(i, TextDelta)]) == 5 and items[-1] == Finish("length")


class CountingServer:
    """Wraps the loaded llama.cpp server: counts the chunks of a generation and sees it return."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.chunks = 0
        self.returned = threading.Event()

    def handle_chat_completions(self, body: dict[str, Any], callback: Callable[[dict[str, Any]], bool]) -> Any:
        def counted(chunk: dict[str, Any]) -> bool:
            self.chunks += 1
            return callback(chunk)

        try:
            return self.server.handle_chat_completions(body, counted)
        finally:
            self.returned.set()


async def test_cancel_after_first_token_then_next_request_works(provider: LlamaCppProvider) -> None:
    await provider.load()
    counting = CountingServer(provider._server)
    provider._server = counting
    try:
        stream = provider.stream(ask("Write a long story about a cat.", max_tokens=400))
        assert isinstance(await anext(stream), TextDelta)
        await stream.aclose()
        at_close = counting.chunks
        assert await asyncio.to_thread(counting.returned.wait, 30)
    finally:
        provider._server = counting.server
    # llama.cpp stopped at the next token (the chunk in flight when the stream closed, at most).
    assert counting.chunks - at_close <= 2
    items = await asyncio.wait_for(collect(provider, ask("Say hello.", max_tokens=4)), 60)
    assert any(isinstance(i, TextDelta) for i in items) and isinstance(items[-1], Finish)


async def test_cancelling_the_consumer_task_releases_the_generation(provider: LlamaCppProvider) -> None:
    got_token = asyncio.Event()

    async def consume() -> None:
        async for item in provider.stream(ask("Write a long poem about the sea.", max_tokens=400)):
            if isinstance(item, TextDelta):
                got_token.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_token.wait(), 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    items = await asyncio.wait_for(collect(provider, ask("Say hello.", max_tokens=4)), 60)
    assert isinstance(items[-1], Finish)


async def test_tool_call_is_constrained_to_an_offered_tool_and_its_schema(provider: LlamaCppProvider) -> None:
    items = await collect(provider, ask("set a timer for 5 minutes", tools=(TIMER, WEATHER), max_tokens=8))
    calls = [i for i in items if isinstance(i, ToolCallDelta)]
    assert len(calls) == 1 and not any(isinstance(i, TextDelta) for i in items)
    assert calls[0].name == "set_timer" and calls[0].id.startswith("call_")
    jsonschema.validate(json.loads(calls[0].arguments), TIMER_SCHEMA)
    assert items[-1] == Finish("tool_calls")

    weather = await collect(provider, ask("What's the weather in Paris?", tools=(TIMER, WEATHER)))
    call = next(i for i in weather if isinstance(i, ToolCallDelta))
    assert call.name == "get_weather" and json.loads(call.arguments)["city"] == "Paris"


async def test_greeting_with_tools_on_offer_is_text(provider: LlamaCppProvider) -> None:
    items = await collect(provider, ask("hello", tools=(TIMER, WEATHER)))
    assert not any(isinstance(i, ToolCallDelta) for i in items)
    assert "".join(i.text for i in items if isinstance(i, TextDelta)).strip()
    assert items[-1].reason in ("stop", "length")  # type: ignore[union-attr]


async def test_tool_results_go_back_to_the_model(provider: LlamaCppProvider) -> None:
    call = ToolCall("call_1", "get_weather", {"city": "Paris"})
    request = GenerationRequest(
        (
            SYSTEM,
            Message("user", "What's the weather in Paris?"),
            Message("assistant", tool_calls=(call,)),
            Message("tool", '{"temperature_c": 18, "sky": "sunny"}', tool_call_id="call_1", name="get_weather"),
        ),
        tools=(TIMER, WEATHER),
        max_tokens=24,
    )
    items = await collect(provider, request)
    text = "".join(i.text for i in items if isinstance(i, TextDelta))
    assert "18" in text or "sunny" in text.lower()


async def test_prefill_puts_the_prompt_in_the_cache_for_the_generation_that_follows(
    provider: LlamaCppProvider,
) -> None:
    """What the assistant does with a partial transcript: the final's prompt then needs only the
    tokens after the words heard so far."""
    heard_so_far = await provider.prefill(ask("Who wrote Romeo and"))
    assert heard_so_far.evaluated_tokens > 0 and heard_so_far.prompt_tokens > heard_so_far.evaluated_tokens
    final = await provider.prefill(ask("Who wrote Romeo and Juliet?"))
    # All but the last words and the template's end (about 7 tokens) came from the cache.
    assert final.cached_tokens >= heard_so_far.prompt_tokens - 6, (heard_so_far, final)
    assert final.evaluated_tokens <= 8, final
    items = await collect(provider, ask("Who wrote Romeo and Juliet?"))
    assert any(isinstance(i, TextDelta) for i in items) and isinstance(items[-1], Finish)


def threads_cpu_and_nice() -> dict[int, tuple[int, int]]:
    """Per thread of this process: (CPU time in clock ticks, nice value), from /proc."""
    seen = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        # After the command's ")": field 3 (state) is fields[0]; utime, stime and nice are fields 14, 15, 19.
        seen[int(tid)] = (int(fields[11]) + int(fields[12]), int(fields[16]))
    return seen


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux's")
async def test_the_model_computes_on_threads_below_the_rest_of_the_process(provider: LlamaCppProvider) -> None:
    """So that speech synthesis, which a listener waits on, gets the cores first."""
    await collect(provider, ask("hello", max_tokens=2))  # loaded, its threads started
    before = threads_cpu_and_nice()
    await collect(provider, ask("Tell me about the sea.", max_tokens=24))
    after = threads_cpu_and_nice()
    base = os.getpriority(os.PRIO_PROCESS, os.getpid())
    # Threads that computed for at least 0.2 s (20 ticks) of the ~1 s generation: the model's.
    busy = {tid: nice for tid, (cpu, nice) in after.items() if cpu - before.get(tid, (0, 0))[0] >= 20}
    assert busy, (before, after)
    assert set(busy.values()) == {min(19, base + LlmProviderConfig().nice)}, busy
    assert after[os.getpid()][1] == base  # the rest of the process is left as it was
    with pytest.raises(ValueError, match="nice must be 0 to 19"):
        LlamaCppProvider(LlmProviderConfig(name="bad", kind="llamacpp", nice=20))


def test_prompt_and_grammar_carry_the_tools() -> None:
    messages = chat_messages(ask("hi", tools=(TIMER,)))
    assert messages[0]["role"] == "system" and messages[0]["content"].startswith(SYSTEM.content)
    assert '"name": "set_timer"' in messages[0]["content"]
    grammar = tools_grammar((TIMER, WEATHER))
    assert grammar.startswith("%llguidance") and '"const": "get_weather"' in grammar


async def assert_load_fails(path: Path, fragment: str, **config: str) -> ProviderError:
    provider = LlamaCppProvider(LlmProviderConfig(name="mine", kind="llamacpp", path=str(path), **config))
    with pytest.raises(ProviderError) as failed:
        await collect(provider, ask("hi"))
    error = failed.value
    assert not error.transient and str(path) in error.message and fragment in error.message
    with pytest.raises(ProviderError):  # the failure is remembered, not retried per request
        await provider.load()
    return error


async def test_missing_file(tmp_path: Path) -> None:
    error = await assert_load_fails(tmp_path / "nope.gguf", "does not exist")
    assert "llm.providers.<name>.path" in error.message


async def test_file_that_is_not_gguf(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"<html>not found</html>")
    await assert_load_fails(path, "not a GGUF file")


async def test_sha256_mismatch(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"GGUF" + bytes(100))
    await assert_load_fails(path, "expected " + "0" * 64, sha256="0" * 64)


async def test_corrupt_gguf_fails_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "truncated.gguf"
    with resolve(DEFAULT_MODEL).open("rb") as model:
        path.write_bytes(model.read(2_000_000))  # right magic, tensors missing
    await assert_load_fails(path, "could not load")


def grpc_start(text: str) -> llm_pb2.GenerateRequest:
    return llm_pb2.GenerateRequest(
        start=llm_pb2.GenerateStart(
            messages=[llm_pb2.ChatMessage(role=llm_pb2.ROLE_USER, content=text)],
            options=llm_pb2.GenerateOptions(max_tokens=8),
            session_id=uuid.uuid4().hex,
        )
    )


async def test_grpc_streams_from_llamacpp_and_falls_back_from_a_corrupt_model(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.gguf"
    corrupt.write_bytes(b"GGUF" + bytes(4096))
    config = make_config(
        tmp_path,
        CODA_LLM__PROVIDERS=json.dumps(
            [{"name": "local", "kind": "llamacpp"}, {"name": "broken", "kind": "llamacpp", "path": str(corrupt)}]
        ),
        CODA_LLM__CHAIN=json.dumps(["broken", "embedded"]),
        CODA_LLM__EMBEDDED_MODEL="",  # the fallback answers with the intent agent alone
    )
    async with running_host(config, only="bus,llm") as host, grpc.aio.insecure_channel(host.address) as channel:
        stub = llm_pb2_grpc.LlmStub(channel)
        request = grpc_start("What is the capital of France?")
        request.start.options.provider = "local"
        responses = [r async for r in stub.Generate(iter([request]))]
        tokens = [r.token.text for r in responses if r.HasField("token")]
        finished = responses[-1].finished
        assert len(tokens) >= 3 and finished.provider == "local" and finished.text == "".join(tokens)
        assert finished.model == DEFAULT_MODEL

        responses = [r async for r in stub.Generate(iter([grpc_start("hi")]))]
        fallback = next(r.fallback for r in responses if r.HasField("fallback"))
        assert (fallback.from_provider, fallback.to_provider) == ("broken", "embedded")
        assert str(corrupt) in fallback.reason
        assert responses[-1].finished.provider == "embedded" and responses[-1].finished.text

        listed = await stub.ListProviders(llm_pb2.ListProvidersRequest())
        assert {p.name: p.kind for p in listed.providers}["broken"] == "llamacpp"

        # Prefill: the named provider's cache; a corrupt model answers UNAVAILABLE naming it; the agent
        # alone has no cache; bad requests are refused.
        partial = grpc_start("Who wrote Romeo and").start
        partial.options.provider = "local"
        first = await stub.Prefill(llm_pb2.PrefillRequest(start=partial))
        again = await stub.Prefill(llm_pb2.PrefillRequest(start=partial))
        assert first.provider == "local" and first.evaluated_tokens > 0, first
        assert again.evaluated_tokens <= 1 and again.cached_tokens >= again.prompt_tokens - 1, again
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.Prefill(
                llm_pb2.PrefillRequest(start=grpc_start("hello").start)
            )  # the chain starts with "broken"
        assert failed.value.code() == grpc.StatusCode.UNAVAILABLE and str(corrupt) in (failed.value.details() or "")
        agent = grpc_start("hello").start
        agent.options.provider = "embedded"
        assert (await stub.Prefill(llm_pb2.PrefillRequest(start=agent))).evaluated_tokens == 0
        for bad, why in ((llm_pb2.GenerateStart(), "messages is empty"), (_named(partial, "nope"), "unknown provider")):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Prefill(llm_pb2.PrefillRequest(start=bad))
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and why in (refused.value.details() or "")


def _named(start: llm_pb2.GenerateStart, provider: str) -> llm_pb2.GenerateStart:
    named = llm_pb2.GenerateStart()
    named.CopyFrom(start)
    named.options.provider = provider
    return named
