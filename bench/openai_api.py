"""The OpenAI-compatible API's cost: time to the first answer token of a streamed chat completion
versus the same turn over a direct gRPC Converse call.

`coda serve` (the text components) and `coda bridge` run as their own processes; this process is
the client. Each sample is one new session asking "what is 12 times 7" (the intent agent answers
with the calculator): through the API, a `POST /v1/chat/completions` with `stream: true` on a
kept-alive HTTP connection, timed to the first SSE chunk with content; directly, a Converse call
(open, text, done writing), timed to the first `llm.token` event. The two alternate so that drift
on a shared machine hits both alike. What the API adds is the difference of the medians: the HTTP
front, JSON parsing, one more gRPC hop (bridge -> assistant) and the chunk encoding.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import httpx2

from coda.v1 import assistant_pb2, assistant_pb2_grpc

QUESTION = "what is 12 times 7"
Request = assistant_pb2.ConverseRequest


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def start(args: list[str], env: dict[str, str], banner: str) -> tuple[subprocess.Popen[str], str]:
    child = subprocess.Popen(
        [sys.executable, "-m", "coda", *args], stdout=subprocess.PIPE, text=True, env={**os.environ, **env}
    )
    assert child.stdout is not None
    line = child.stdout.readline().strip()
    if not line.startswith(banner):
        child.kill()
        raise RuntimeError(f"coda {' '.join(args)} did not start: {line!r}")
    return child, line


async def direct_turn(stub: assistant_pb2_grpc.AssistantStub) -> float:
    started = time.perf_counter()
    call = stub.Converse()
    await call.write(Request(open=assistant_pb2.SessionOpen()))
    await call.write(Request(text=assistant_pb2.TextInput(text=QUESTION)))
    await call.done_writing()
    first = 0.0
    async for response in call:
        if not first and response.event.HasField("llm_token"):
            first = time.perf_counter() - started
    assert first, "no answer token"
    return first


async def api_turn(http: httpx2.AsyncClient) -> float:
    body = {"model": "coda", "stream": True, "messages": [{"role": "user", "content": QUESTION}]}
    started = time.perf_counter()
    first = 0.0
    async with http.stream("POST", "/chat/completions", json=body) as response:
        assert response.status_code == 200, response.status_code
        async for line in response.aiter_lines():
            if first or not line.startswith("data: {"):
                continue
            chunk = json.loads(line.removeprefix("data: "))
            if chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                first = time.perf_counter() - started
    assert first, "no answer chunk"
    return first


async def measure(samples: int) -> None:
    data = Path(tempfile.mkdtemp(prefix="coda-bench-openai-"))
    env = {
        "CODA_GRPC__ADDRESS": "127.0.0.1:0",
        "CODA_METRICS__ADDRESS": "",
        "CODA_BUS__PATH": str(data / "bus"),
        "CODA_MEMORY__PATH": str(data / "memory.db"),
        "CODA_ASSISTANT__SESSIONS_PATH": str(data / "sessions.db"),
        "CODA_TOOLS__TIMERS_PATH": str(data / "timers.db"),
        "CODA_BRIDGE__PORT": "0",
        # Every sample is a request: the bridge's per-client rate limit would pace the benchmark.
        "CODA_BRIDGE__FRAMES_PER_SECOND": "0",
        "CODA_LLM__EMBEDDED_MODEL": "",
    }
    serve, banner = start(["serve", "--only", "bus,memory,tools,llm,assistant"], env, "coda serving")
    address = banner.split(" on ", 1)[1].split()[0]
    bridge = None
    try:
        bridge, line = start(["bridge", "--coda", address], env, "coda bridge serving")
        ws_url = line.split(" on ", 1)[1].split()[0]
        api_url = ws_url.replace("ws://", "http://").removesuffix("/ws")
        async with (
            grpc.aio.insecure_channel(address) as channel,
            httpx2.AsyncClient(base_url=api_url, timeout=30) as http,
        ):
            stub = assistant_pb2_grpc.AssistantStub(channel)
            for _ in range(5):  # warm both paths (connections, caches, the intent agent)
                await direct_turn(stub)
                await api_turn(http)
            direct: list[float] = []
            api: list[float] = []
            for _ in range(samples):
                direct.append(await direct_turn(stub))
                api.append(await api_turn(http))
    finally:
        for child in (bridge, serve):
            if child is not None:
                child.terminate()
                child.wait(20)
    print(f"time to first answer token, {samples} turns each ({QUESTION!r}, intent agent):")
    for name, values in (("gRPC Converse", direct), ("OpenAI API   ", api)):
        ms = [v * 1000 for v in values]
        print(f"  {name}  p50 {percentile(ms, 0.5):7.2f} ms  p90 {percentile(ms, 0.9):7.2f} ms")
    added = [(a - d) * 1000 for a, d in zip(api, direct, strict=True)]
    p50 = (percentile(api, 0.5) - percentile(direct, 0.5)) * 1000
    print(f"  API adds     p50 {p50:7.2f} ms  (paired differences: p50 {percentile(added, 0.5):.2f} ms, "
          f"p90 {percentile(added, 0.9):.2f} ms); target <= 5 ms p50")  # fmt: skip


def main(quick: bool) -> None:
    asyncio.run(measure(40 if quick else 200))
