"""LLM service overhead per token: gRPC Generate (with llm.* events to the bus) vs the provider alone.

Both read the same long answer from the replay server (real HTTP/1.1 on loopback, one SSE event
per chunk, no delay), so the difference is what the service adds per token: tool-call and usage
bookkeeping, one GenerateResponse over gRPC and one llm.token event published to the bus.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time

import grpc

from coda import config as config_module
from coda.config import LlmProviderConfig
from coda.llm.providers.openai import OpenAIProvider
from coda.llm.replay import ReplayServer, Reply
from coda.llm.types import GenerationRequest, Message, TextDelta
from coda.runtime.host import Host
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

        with tempfile.TemporaryDirectory() as tmp:
            env = {
                "CODA_GRPC__ADDRESS": "127.0.0.1:0",
                "CODA_METRICS__ADDRESS": "",
                "CODA_BUS__PATH": tmp,
                "CODA_LLM__CHAIN": '["replay"]',
                "CODA_LLM__PROVIDERS": json.dumps([{"name": "replay", "base_url": replay.base_url, "model": "bench"}]),
            }
            host = Host(config_module.load(None, env=env), only="bus,llm")
            await host.start()
            try:
                async with grpc.aio.insecure_channel(host.address) as channel:
                    stub = llm_pb2_grpc.LlmStub(channel)
                    start = llm_pb2.GenerateRequest(
                        start=llm_pb2.GenerateStart(
                            messages=[llm_pb2.ChatMessage(role=llm_pb2.ROLE_USER, content="talk")]
                        )
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
            finally:
                await host.stop()

    d50, g50 = statistics.median(direct_us), statistics.median(grpc_us)
    print(f"llm: {tokens} tokens x {runs} runs, replayed SSE over loopback HTTP")
    print(
        f"  provider directly : p50 {d50:7.1f} µs/token  p99 {percentile(direct_us, 0.99):7.1f}  ({1e6 / d50:,.0f} tokens/s)"
    )
    print(
        f"  gRPC Generate     : p50 {g50:7.1f} µs/token  p99 {percentile(grpc_us, 0.99):7.1f}  ({1e6 / g50:,.0f} tokens/s)"
    )
    print(f"  service overhead  : {g50 - d50:7.1f} µs/token  (ratio {g50 / d50:.2f}x)")


if __name__ == "__main__":
    import sys

    asyncio.run(main("--quick" in sys.argv))
