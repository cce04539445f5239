"""TTS benchmark: time to first audio and real-time factor of Piper (the default voice) against
eSpeak NG, through the real gRPC Synthesize with each engine, for a one-sentence and a
three-sentence answer sent at once (as a finished LLM answer would be).

First audio is from opening the call to the first audio chunk; the real-time factor is the call's
wall time over the seconds of audio it returned (below 1: faster than real time). Each engine gets
one warm-up call first, so model loading is not counted.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from bench.voice import voice_stub
from coda.v1 import voice_pb2, voice_pb2_grpc

ANSWERS = {
    "1 sentence": "Your timer for five minutes is set.",
    "3 sentences": (
        "It is twelve degrees and cloudy in London right now. "
        "Rain is likely later this afternoon. "
        "You may want to take an umbrella."
    ),
}


async def synthesize(stub: voice_pb2_grpc.VoiceStub, text: str) -> tuple[float, float, float]:
    """(seconds to the first audio chunk, wall seconds, seconds of audio) at the engine's own rate."""

    async def requests():  # type: ignore[no-untyped-def]
        yield voice_pb2.SynthesizeRequest(config=voice_pb2.SynthesizeConfig())
        yield voice_pb2.SynthesizeRequest(text=voice_pb2.SynthesizeText(text=text, flush=True))

    began = time.perf_counter()
    first = 0.0
    audio_seconds = 0.0
    async for response in stub.Synthesize(requests()):
        if response.WhichOneof("response") == "audio":
            first = first or time.perf_counter() - began
            audio_seconds += response.audio.samples / response.audio.sample_rate
    return first, time.perf_counter() - began, audio_seconds


async def run_engine(engine: str, rounds: int) -> dict[str, tuple[float, float]]:
    """Answer name -> (median first audio seconds, median real-time factor) for one engine."""
    results: dict[str, tuple[float, float]] = {}
    async with voice_stub(CODA_VOICE__TTS_ENGINE=engine) as stub:
        await synthesize(stub, "Warming up.")
        for name, text in ANSWERS.items():
            firsts, factors = [], []
            for _ in range(rounds):
                first, wall, seconds = await synthesize(stub, text)
                firsts.append(first)
                factors.append(wall / seconds)
            results[name] = (statistics.median(firsts), statistics.median(factors))
    return results


async def main(quick: bool) -> None:
    rounds = 3 if quick else 10
    for engine in ("piper", "espeak"):
        for name, (first, factor) in (await run_engine(engine, rounds)).items():
            print(
                f"tts: {engine:6} {name:11}: first audio p50 {first * 1000:6.1f} ms,"
                f" real-time factor p50 {factor:.3f} ({rounds} runs)"
            )


if __name__ == "__main__":
    import sys

    asyncio.run(main("--quick" in sys.argv))
