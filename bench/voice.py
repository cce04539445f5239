"""Voice benchmark: round-trip word error rate, STT real-time factor, TTS time to first audio and
real-time factor, all through the real gRPC service with the embedded engines.

Sentences are synthesized by eSpeak, streamed through Transcribe at full speed and compared with
the text, once with each STT language model ("domain": the assistant's commands; "general": the
bundled en-US model) on two sets: assistant commands and free dictation. Synthetic speech is out of domain for the recogniser: treat WER as a regression figure.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import grpc

from coda import config as config_module
from coda.runtime.host import Host
from coda.v1 import voice_pb2, voice_pb2_grpc
from coda.voice.quality import edit_distance, words

#: The assistant's own commands (the examples its help text gives, and more of the same kinds), which
#: the "domain" language model is built for; none is needed verbatim in its corpus to be recognised.
COMMANDS = [
    "what time is it in tokyo",
    "what is twelve times seven",
    "remember that my favourite colour is green",
    "what is my favourite colour",
    "set a timer for five minutes",
    "hello coda",
    "what can you do",
    "what time is it in new york",
    "what is forty two plus nineteen",
    "remind me in ten minutes to check the oven",
    "thank you",
    "what do you know about me",
]
#: Free dictation (questions for a configured LLM, other requests): the "general" model's ground.
SENTENCES = [
    "i would like a cup of coffee",
    "open the garage door",
    "what is the weather like today",
    "what is the capital of france",
    "please turn off the kitchen lights",
    "play some music in the living room",
    "call my mother tomorrow",
    "how many people live in london",
    "the quick brown fox jumps over the lazy dog",
    "set a timer for five minutes",
]
RATE = 16_000


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def synthesize(stub: voice_pb2_grpc.VoiceStub, text: str) -> tuple[bytes, float, float]:
    """(PCM16 at 16 kHz, seconds to the first audio chunk, wall seconds)."""

    async def requests():  # type: ignore[no-untyped-def]
        yield voice_pb2.SynthesizeRequest(config=voice_pb2.SynthesizeConfig(sample_rate=RATE))
        yield voice_pb2.SynthesizeRequest(text=voice_pb2.SynthesizeText(text=text + ".", flush=True))

    began = time.perf_counter()
    first = 0.0
    audio = bytearray()
    async for response in stub.Synthesize(requests()):
        if response.WhichOneof("response") == "audio":
            first = first or time.perf_counter() - began
            audio += response.audio.pcm
    return bytes(audio), first, time.perf_counter() - began


async def transcribe(stub: voice_pb2_grpc.VoiceStub, audio: bytes) -> tuple[str, float]:
    async def requests():  # type: ignore[no-untyped-def]
        fmt = voice_pb2.AudioFormat(encoding=voice_pb2.AUDIO_ENCODING_PCM16, sample_rate=RATE)
        yield voice_pb2.TranscribeRequest(config=voice_pb2.TranscribeConfig(format=fmt))
        for i in range(0, len(audio), 3200):
            yield voice_pb2.TranscribeRequest(audio=audio[i : i + 3200])
        yield voice_pb2.TranscribeRequest(end=voice_pb2.AudioStreamEnd())

    began = time.perf_counter()
    text = ""
    async for response in stub.Transcribe(requests()):
        if response.WhichOneof("response") == "final":
            text = response.final.text
    return text, time.perf_counter() - began


async def run_language_model(language_model: str, sets: dict[str, list[str]]) -> dict[str, object]:
    """Every sentence of every set through one host running `language_model`."""
    figures: dict[str, object] = {"first_audio": [], "tts_rtf": [], "stt_rtf": []}
    with tempfile.TemporaryDirectory() as tmp:
        config = config_module.load(
            None,
            env={
                "CODA_GRPC__ADDRESS": "127.0.0.1:0",
                "CODA_METRICS__ADDRESS": "",
                "CODA_BUS__PATH": str(Path(tmp) / "bus"),
                "CODA_VOICE__STT_LANGUAGE_MODEL": language_model,
            },
        )
        host = Host(config, "bus,voice")
        await host.start()
        try:
            async with grpc.aio.insecure_channel(host.address) as channel:
                stub = voice_pb2_grpc.VoiceStub(channel)
                for name, sentences in sets.items():
                    errors = total = exact = 0
                    for sentence in sentences:
                        pcm, first, tts_wall = await synthesize(stub, sentence)
                        seconds = len(pcm) / 2 / RATE
                        figures["first_audio"].append(first)  # type: ignore[attr-defined]
                        figures["tts_rtf"].append(tts_wall / seconds)  # type: ignore[attr-defined]
                        padded = bytes(RATE) + pcm + bytes(RATE * 2)  # 0.5 s before, 1 s after
                        text, stt_wall = await transcribe(stub, padded)
                        figures["stt_rtf"].append(stt_wall / (len(padded) / 2 / RATE))  # type: ignore[attr-defined]
                        errors += edit_distance(words(sentence), words(text))
                        total += len(words(sentence))
                        exact += words(sentence) == words(text)
                        print(f"  [{language_model}] {sentence!r:48} -> {text!r}")
                    figures[name] = (errors, total, exact, len(sentences))
        finally:
            await host.stop()
    return figures


async def main(quick: bool) -> None:
    sets = {"commands": COMMANDS[:4] if quick else COMMANDS, "dictation": SENTENCES[:3] if quick else SENTENCES}
    results = {model: await run_language_model(model, sets) for model in ("domain", "general")}
    for name in sets:
        for model, figures in results.items():
            errors, total, exact, count = figures[name]  # type: ignore[misc]
            print(
                f"voice: word error rate, {name}, {model} LM: {errors / total:.2f}"
                f" ({errors}/{total} words, {exact}/{count} sentences exact; pocketsphinx on espeak en-us)"
            )
    for model, figures in results.items():
        stt_rtf: list[float] = figures["stt_rtf"]  # type: ignore[assignment]
        print(
            f"voice: STT real-time factor, {model} LM: p50 {statistics.median(stt_rtf):.3f}"
            f" p99 {percentile(stt_rtf, 0.99):.3f} (full-speed stream)"
        )
    first_audio: list[float] = results["domain"]["first_audio"] + results["general"]["first_audio"]  # type: ignore[operator]
    tts_rtf: list[float] = results["domain"]["tts_rtf"] + results["general"]["tts_rtf"]  # type: ignore[operator]
    print(
        f"voice: TTS first audio p50 {statistics.median(first_audio) * 1000:.1f} ms p99 {percentile(first_audio, 0.99) * 1000:.1f} ms;"
        f" real-time factor p50 {statistics.median(tts_rtf):.4f} p99 {percentile(tts_rtf, 0.99):.4f}"
    )


if __name__ == "__main__":
    import sys

    asyncio.run(main("--quick" in sys.argv))
