"""LLM service overhead per token: gRPC Generate (with llm.* events to the bus) vs the provider alone;
then the bundled local model (llama.cpp in process): load time, tokens/s, time to first token with
the system prompt cached and uncached, and how often tool calls come out right.

Both read the same long answer from the replay server (real HTTP/1.1 on loopback, one SSE event
per chunk, no delay), so the difference is what the service adds per token: tool-call and usage
bookkeeping, one GenerateResponse over gRPC and one llm.token event published to the bus.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time

import grpc
import jsonschema

from bench.host import bench_host
from coda.config import AssistantConfig, LlmProviderConfig
from coda.llm.models import DEFAULT_MODEL, resolve
from coda.llm.providers.llamacpp import LlamaCppProvider
from coda.llm.providers.openai import OpenAIProvider
from coda.llm.replay import ReplayServer, Reply
from coda.llm.types import GenerationRequest, Message, TextDelta, Tool, ToolCallDelta
from coda.v1 import llm_pb2, llm_pb2_grpc


def long_answer(tokens: int) -> bytes:
    chunks = [
        "data: "
        + json.dumps({"choices": [{"index": 0, "delta": {"content": f" word{i}"}, "finish_reason": None}]})
        + "\n\n"
        for i in range(tokens)
    ]
    chunks.append('data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n')
    chunks.append(f'data: {{"choices":[],"usage":{{"prompt_tokens":10,"completion_tokens":{tokens}}}}}\n\n')
    chunks.append("data: [DONE]\n\n")
    return "".join(chunks).encode()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def main(quick: bool) -> None:
    tokens, runs = (500, 5) if quick else (2000, 15)
    body = long_answer(tokens)
    async with ReplayServer(default=Reply(body=body)) as replay:
        provider = OpenAIProvider(LlmProviderConfig(name="replay", base_url=replay.base_url, model="bench"))
        request = GenerationRequest(messages=(Message("user", "talk"),))

        async def direct() -> float:
            started = time.perf_counter()
            count = sum([isinstance(item, TextDelta) async for item in provider.stream(request)])
            assert count == tokens
            return (time.perf_counter() - started) / tokens * 1e6

        providers = json.dumps([{"name": "replay", "base_url": replay.base_url, "model": "bench"}])
        async with (
            bench_host("bus,llm", CODA_LLM__CHAIN='["replay"]', CODA_LLM__PROVIDERS=providers) as host,
            grpc.aio.insecure_channel(host.address) as channel,
        ):
            stub = llm_pb2_grpc.LlmStub(channel)
            start = llm_pb2.GenerateRequest(
                start=llm_pb2.GenerateStart(messages=[llm_pb2.ChatMessage(role=llm_pb2.ROLE_USER, content="talk")])
            )

            async def through_grpc() -> float:
                started = time.perf_counter()
                count = 0
                async for response in stub.Generate(iter([start])):
                    count += response.HasField("token")
                assert count == tokens
                return (time.perf_counter() - started) / tokens * 1e6

            await direct()
            await through_grpc()  # warm-up: connections, code paths
            direct_us, grpc_us = [], []
            for _ in range(runs):
                direct_us.append(await direct())
                grpc_us.append(await through_grpc())

    d50, g50 = statistics.median(direct_us), statistics.median(grpc_us)
    print(f"llm: {tokens} tokens x {runs} runs, replayed SSE over loopback HTTP")
    print(
        f"  provider directly : p50 {d50:7.1f} µs/token  p99 {percentile(direct_us, 0.99):7.1f}  ({1e6 / d50:,.0f} tokens/s)"
    )
    print(
        f"  gRPC Generate     : p50 {g50:7.1f} µs/token  p99 {percentile(grpc_us, 0.99):7.1f}  ({1e6 / g50:,.0f} tokens/s)"
    )
    print(f"  service overhead  : {g50 - d50:7.1f} µs/token  (ratio {g50 / d50:.2f}x)")
    await local_model(quick)


#: A typed turn's system prompt of about 300 tokens: the default persona plus recalled memories.
SYSTEM_PROMPT = (
    AssistantConfig().persona
    + "\n\nStyle: Be warm but brief.\n\nThings you remember that may be relevant:\n"
    + "\n".join(
        f"- {fact}"
        for fact in [
            "The user's name is Sam and they live in Lisbon.",
            "Sam works as a nurse on night shifts three times a week.",
            "Sam's sister Ana is visiting next weekend.",
            "Sam prefers temperatures in Celsius and times in 24-hour format.",
            "Sam is learning to play the piano and practises in the evening.",
            "Sam has a cat called Miso who needs medicine at 8 in the morning.",
            "Sam does not eat meat and likes Portuguese and Indian food.",
            "Sam's favourite band is Radiohead.",
            "Sam runs 5 km on Sundays along the river.",
            "Sam asked to be reminded to call the bank about a card.",
        ]
    )
)
TIMER = Tool(
    "set_timer",
    "Start a countdown timer.",
    {
        "type": "object",
        "properties": {"seconds": {"type": "integer", "minimum": 1, "description": "duration in seconds"}},
        "required": ["seconds"],
        "additionalProperties": False,
    },
)
WEATHER = Tool(
    "get_weather",
    "Current weather for a city.",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
#: (request, the tool it should call or "" for a text answer)
TOOL_CASES = [
    ("set a timer for 5 minutes", "set_timer"),
    ("start a 10 second timer", "set_timer"),
    ("what's the weather in Paris?", "get_weather"),
    ("is it raining in London right now?", "get_weather"),
    ("hello", ""),
    ("what is the capital of France?", ""),
]


async def local_model(quick: bool) -> None:
    if not resolve(DEFAULT_MODEL).is_file():
        print(f"llm local model: {DEFAULT_MODEL} not installed (python scripts/install_models.py); skipped")
        return
    runs = 4 if quick else 10
    provider = LlamaCppProvider(LlmProviderConfig(name="local", kind="llamacpp"), warm_prompt=SYSTEM_PROMPT)
    started = time.perf_counter()
    await provider.load()
    load_s = time.perf_counter() - started

    async def first_token(system: str, question: str) -> float:
        request = GenerationRequest((Message("system", system), Message("user", question)), max_tokens=4)
        started = time.perf_counter()
        first = 0.0
        async for item in provider.stream(request):
            if isinstance(item, TextDelta) and not first:
                first = time.perf_counter() - started
        return first * 1000

    # Cached: the same system prompt, a new question each time (only the question is evaluated).
    cached = [await first_token(SYSTEM_PROMPT, f"Question {i}: what can you do?") for i in range(runs)]
    # Uncached: a different first line defeats the prefix cache, so the whole prompt is evaluated.
    # (half as many runs: each evaluates ~300 tokens, seconds on a small CPU)
    uncached = [await first_token(f"Session {i}.\n{SYSTEM_PROMPT}", "What can you do?") for i in range(runs // 2)]

    request = GenerationRequest((Message("user", "Tell me a long story about a lighthouse."),), max_tokens=64)
    stamps = [time.perf_counter() async for item in provider.stream(request) if isinstance(item, TextDelta)]
    tokens_per_s = (len(stamps) - 1) / (stamps[-1] - stamps[0])

    schemas = {t.name: t.parameters for t in (TIMER, WEATHER)}
    valid = right = calls_made = 0
    for question, expected in TOOL_CASES:
        items = [
            item
            async for item in provider.stream(
                GenerationRequest((Message("user", question),), tools=(TIMER, WEATHER), max_tokens=24)
            )
        ]
        calls = [i for i in items if isinstance(i, ToolCallDelta)]
        if calls:
            calls_made += 1
            try:
                jsonschema.validate(json.loads(calls[0].arguments), schemas[calls[0].name])
                valid += 1
            except (KeyError, jsonschema.ValidationError):
                pass
        right += (calls[0].name if calls else "") == expected
    made = sum(1 for _, expected in TOOL_CASES if expected)

    print(
        f"llm local model: {provider.model} (llama.cpp in process; first token: {runs} cached, {runs // 2} uncached runs)"
    )
    print(f"  load (sha256 + weights + warm-up) : {load_s:6.2f} s")
    print(f"  generation                        : {tokens_per_s:6.1f} tokens/s")
    for label, values in (("cached", cached), ("uncached", uncached)):
        print(
            f"  first token, system prompt {label:8s}: p50 {statistics.median(values):6.0f} ms"
            f"  p90 {percentile(values, 0.9):6.0f} ms"
        )
    print(
        f"  tool calls: {valid}/{calls_made} schema-valid; right choice (call or text) "
        f"{right}/{len(TOOL_CASES)} ({made} expect a call)"
    )


if __name__ == "__main__":
    import sys

    asyncio.run(main("--quick" in sys.argv))
