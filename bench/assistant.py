"""Assistant turn latency on the embedded defaults: time to first token and to first audio.

A typed turn ("what time is it in Tokyo": memory -> llm -> get_time -> llm) and a spoken one (the
same question as speech from the embedded TTS, streamed through Converse as fast as it goes), each
with voice output on, through a real host with every component. Times are taken by the client (from
sending the text, or from sending audio_end) and by the server (TurnTimings, from the end of the
user's input).

The share of time to first token spent in Coda's own plumbing (gRPC hops, the bus, the assistant's
orchestration) is the client-observed time minus what the engines report for the steps on that path:
Memory's own Recall time (its memory.retrieved event on the bus), the model's generation time
(LlmFinished.duration_ms of tool rounds, first_token_ms of the answer round) and the tool's own run
time (ToolResult.duration_ms).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import grpc

from coda import config as config_module
from coda.bus.client import subscribe
from coda.runtime.gc_tuning import tune_for_service
from coda.runtime.host import Host
from coda.v1 import assistant_pb2, assistant_pb2_grpc, events_pb2, voice_pb2, voice_pb2_grpc

QUESTION = "what time is it in Tokyo"
Request = assistant_pb2.ConverseRequest


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def describe(values: list[float]) -> str:
    return f"p50 {percentile(values, 0.5):7.1f} ms  p95 {percentile(values, 0.95):7.1f} ms"


async def speech_of(channel: grpc.aio.Channel, text: str) -> bytes:
    call = voice_pb2_grpc.VoiceStub(channel).Synthesize()
    await call.write(voice_pb2.SynthesizeRequest(config=voice_pb2.SynthesizeConfig(sample_rate=16000)))
    await call.write(voice_pb2.SynthesizeRequest(text=voice_pb2.SynthesizeText(text=text)))
    await call.done_writing()
    pcm = bytearray()
    async for response in call:
        pcm += response.audio.pcm
    return b"\0\0" * 4800 + bytes(pcm) + b"\0\0" * 19200


class Sample:
    def __init__(self) -> None:
        self.client_first_token = 0.0
        self.client_first_audio = 0.0
        self.turn: events_pb2.ConversationTurn | None = None
        self.engine_ms = 0.0
        self.turn_id = ""


async def one_turn(call: grpc.aio.StreamStreamCall, speech: bytes | None) -> Sample:
    sample = Sample()
    if speech is None:
        started = time.perf_counter()
        await call.write(Request(text=assistant_pb2.TextInput(text=QUESTION)))
    else:
        audio_format = voice_pb2.AudioFormat(encoding=voice_pb2.AUDIO_ENCODING_PCM16, sample_rate=16000, channels=1)
        await call.write(Request(audio_start=assistant_pb2.AudioInputStart(format=audio_format)))
        for offset in range(0, len(speech), 3200):
            await call.write(Request(audio_chunk=assistant_pb2.AudioInputChunk(audio=speech[offset : offset + 3200])))
        await call.write(Request(audio_end=assistant_pb2.AudioInputEnd()))
        started = time.perf_counter()
    seen: list[tuple[float, events_pb2.Event]] = []
    while True:
        response = await call.read()
        seen.append(((time.perf_counter() - started) * 1000.0, response.event))
        if response.event.HasField("conversation_turn"):
            break
    sample.turn = seen[-1][1].conversation_turn
    sample.turn_id = seen[-1][1].correlation_id
    token_at = next((i for i, (_, e) in enumerate(seen) if e.HasField("llm_token")), None)
    audio_at = next((ms for ms, e in seen if e.HasField("voice_tts_audio")), 0.0)
    sample.client_first_audio = audio_at
    if token_at is None:
        return sample
    sample.client_first_token = seen[token_at][0]
    before, after = [e for _, e in seen[:token_at]], [e for _, e in seen[token_at:]]
    # Engine time on the path to the first token: whole tool rounds and tool runs before it, then
    # the answering round's own time to its first token.
    sample.engine_ms = sum(e.llm_finished.duration_ms for e in before if e.HasField("llm_finished"))
    sample.engine_ms += sum(e.tool_result.duration_ms for e in before if e.HasField("tool_result"))
    sample.engine_ms += next((e.llm_finished.first_token_ms for e in after if e.HasField("llm_finished")), 0.0)
    return sample


async def run_kind(
    address: str, channel: grpc.aio.Channel, turns: int, speech: bytes | None
) -> tuple[list[Sample], str]:
    call = assistant_pb2_grpc.AssistantStub(channel).Converse()
    settings = events_pb2.ConversationSettings(voice_output=True)
    await call.write(Request(open=assistant_pb2.SessionOpen(user_id="bench", settings=settings)))
    session_id = ""
    while True:
        response = await call.read()
        if response.HasField("session"):
            session_id = response.session.session_id
        elif response.event.HasField("conversation_started"):
            break
    await one_turn(call, speech)  # warm-up: caches, first model and engine calls
    samples = [await one_turn(call, speech) for _ in range(turns)]
    await call.write(Request(close=assistant_pb2.SessionClose()))
    while await call.read() != grpc.aio.EOF:
        pass
    return samples, session_id


async def memory_engine_ms(channel: grpc.aio.Channel, session_id: str) -> dict[str, float]:
    """Memory's own Recall time per turn, from its memory.retrieved events on the bus."""
    found: dict[str, float] = defaultdict(float)

    async def read() -> None:
        async for response in subscribe(channel, ["memory.retrieved", "conversation.ended"], session_id, after_seq=0):
            for event in response.batch.events:
                if event.HasField("conversation_ended"):
                    return
                if event.source == "memory":
                    found[event.correlation_id] += event.memory_retrieved.duration_ms

    await asyncio.wait_for(read(), 10)
    return found


def report(label: str, samples: list[Sample], memory_ms: dict[str, float]) -> None:
    first_token = [s.client_first_token for s in samples]
    first_audio = [s.client_first_audio for s in samples if s.client_first_audio]
    print(f"{label} turn ({len(samples)} turns, voice output on; client clock from the end of the input)")
    print(f"  time to first token          {describe(first_token)}")
    if first_audio:
        print(f"  time to first audio chunk    {describe(first_audio)}")
    assert all(s.turn is not None for s in samples)
    server_token = [s.turn.timings.first_token_ms for s in samples if s.turn]
    server_audio = [s.turn.timings.first_audio_ms for s in samples if s.turn and s.turn.timings.first_audio_ms]
    print(f"  server first token (timings) {describe(server_token)}")
    if server_audio:
        print(f"  server first audio (timings) {describe(server_audio)}")
    stt = [s.turn.timings.stt_ms for s in samples if s.turn and s.turn.timings.stt_ms]
    if stt:
        print(f"  stt (end of speech->final)   {describe(stt)}")
    shares = []
    for s in samples:
        engines = s.engine_ms + memory_ms.get(s.turn_id, 0.0)
        path = s.client_first_token - (s.turn.timings.stt_ms if s.turn else 0.0)
        if path > 0:
            shares.append(max(0.0, 1.0 - engines / path))
    if shares:
        print(
            f"  plumbing share of time to first token (excl. stt): median {statistics.median(shares):.0%} "
            f"(engines {statistics.median([s.engine_ms + memory_ms.get(s.turn_id, 0.0) for s in samples]):.1f} ms)"
        )


async def main(quick: bool) -> None:
    turns = 5 if quick else 20
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            "CODA_GRPC__ADDRESS": "127.0.0.1:0",
            "CODA_METRICS__ADDRESS": "",
            "CODA_BUS__PATH": str(Path(tmp) / "bus"),
            "CODA_MEMORY__PATH": str(Path(tmp) / "memory.db"),
            "CODA_ASSISTANT__SESSIONS_PATH": str(Path(tmp) / "sessions.db"),
            "CODA_TOOLS__TIMERS_PATH": str(Path(tmp) / "timers.db"),
        }
        host = Host(config_module.load(None, env=env))
        await host.start()
        # As `coda serve` runs it: without this, young collections of a process holding every
        # model add pauses of a few milliseconds to some turns, which a served process does not have.
        tune_for_service()
        try:
            async with grpc.aio.insecure_channel(host.address) as channel:
                typed, typed_session = await run_kind(host.address, channel, turns, None)
                report("typed", typed, await memory_engine_ms(channel, typed_session))
                speech = await speech_of(channel, QUESTION)
                spoken, spoken_session = await run_kind(host.address, channel, turns, speech)
                report("spoken", spoken, await memory_engine_ms(channel, spoken_session))
        finally:
            await host.stop()


if __name__ == "__main__":
    import sys

    asyncio.run(main("--quick" in sys.argv))
