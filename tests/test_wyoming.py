"""`coda wyoming`: Coda as Home Assistant's speech-to-text, text-to-speech and conversation agent.

The pure conversions first, then a real `coda wyoming` process in front of a real Coda host on
loopback, driven with the `wyoming` client library as Home Assistant drives it.
"""

from __future__ import annotations

import asyncio
import re
import signal
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from wyoming.asr import Transcribe, Transcript
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.event import Event
from wyoming.handle import Handled
from wyoming.info import Describe, Info
from wyoming.ping import Ping, Pong
from wyoming.tts import Synthesize, SynthesizeVoice

from coda.runtime.host import Host
from coda.schema import session_id_problem
from coda.v1 import events_pb2, voice_pb2
from coda.voice.audio import PcmResampler
from coda.voice.quality import word_error_rate
from coda.wyoming import events
from coda.wyoming.audio import AudioConverter, AudioRefused, WyomingFormat, check_format
from coda.wyoming.server import BANNER
from tests.conftest import Processes, make_config, running_host

READ_TIMEOUT = 90.0
QUESTION = re.compile(r"\b(12|twelve)\b.*\btimes\b.*\b(7|seven)\b")


# --- audio conversion (pure) ---------------------------------------------------------------------


def test_16_bit_audio_passes_through_untouched() -> None:
    fmt = WyomingFormat(16_000, 2, 1)
    converter = AudioConverter(fmt)
    assert converter.voice_format == voice_pb2.AudioFormat(
        encoding=voice_pb2.AUDIO_ENCODING_PCM16, sample_rate=16_000, channels=1
    )
    assert converter.push(fmt, b"\x01\x02\x03") == b"\x01\x02\x03"  # the service carries split samples


@pytest.mark.parametrize(
    ("width", "raw", "expected"),
    [
        (1, bytes([128, 255, 0, 64]), [0.0, 127 / 128, -1.0, -0.5]),
        (3, b"\x00\x00\x40" + b"\xff\xff\xff" + b"\x00\x00\x80", [0.5, -1 / 8_388_608, -1.0]),
        (4, np.array([2**30, -(2**31), 0], "<i4").tobytes(), [0.5, -1.0, 0.0]),
    ],
)
def test_8_24_and_32_bit_samples_become_float32_even_split_across_chunks(
    width: int, raw: bytes, expected: list[float]
) -> None:
    fmt = WyomingFormat(44_100, width, 2)
    converter = AudioConverter(fmt)
    assert converter.voice_format.encoding == voice_pb2.AUDIO_ENCODING_FLOAT32
    assert converter.voice_format.channels == 2 and converter.voice_format.sample_rate == 44_100
    out = b"".join(converter.push(fmt, raw[i : i + 1]) for i in range(len(raw)))  # one byte at a time
    assert np.frombuffer(out, "<f4").tolist() == pytest.approx(expected)


@pytest.mark.parametrize(
    ("fmt", "reason"),
    [
        (WyomingFormat(16_000, 5, 1), "width 5"),
        (WyomingFormat(16_000, 0, 1), "width 0"),
        (WyomingFormat(16_000, 2, 0), "0 channels"),
        (WyomingFormat(16_000, 2, 6), "6 channels"),
        (WyomingFormat(1_000, 2, 1), "1000 Hz"),
        (WyomingFormat(400_000, 2, 1), "400000 Hz"),
    ],
)
def test_audio_that_cannot_be_converted_is_refused_with_the_reason(fmt: WyomingFormat, reason: str) -> None:
    with pytest.raises(AudioRefused, match=reason):
        check_format(fmt)


def test_a_chunk_in_another_format_than_announced_is_refused() -> None:
    converter = AudioConverter(WyomingFormat(16_000, 2, 1))
    with pytest.raises(AudioRefused, match=r"48000 Hz.*announced 16000 Hz"):
        converter.push(WyomingFormat(48_000, 2, 1), b"\x00\x00")


# --- event mapping (pure) ------------------------------------------------------------------------


def test_info_lists_asr_tts_with_its_voices_default_first_and_handle() -> None:
    info = events.describe(
        voice_pb2.DescribeVoiceResponse(
            stt_engine="whisper", tts_engine="piper", voices=["en_US-joe-medium", "de", "en-us"]
        )
    )
    again = Info.from_event(info.event())  # what a client reads off the wire
    assert again.asr[0].models[0].name == "whisper" and again.asr[0].models[0].languages == ["en"]
    assert [(v.name, v.description, v.languages) for v in again.tts[0].voices] == [
        ("en_US-joe-medium", "en_US-joe-medium", ["en"]),
        ("de", "de", ["de"]),
        ("en-us", "en-us", ["en"]),
    ]
    assert again.handle[0].name == "coda" and again.handle[0].models[0].languages == ["en"]
    assert all(program.installed for program in (*again.asr, *again.tts, *again.handle))


def test_each_conversation_has_its_own_valid_session() -> None:
    assert events.conversation_key({"conversation_id": "01JF3ZQ"}) == "01JF3ZQ"
    assert events.conversation_key({"satellite_id": "kitchen"}) == "kitchen"
    assert events.conversation_key({"other": 1}) == events.conversation_key(None) == ""
    assert events.session_id_for("01JF3ZQ") == "wyoming-01JF3ZQ"
    odd = events.session_id_for("living room/../x")
    assert session_id_problem(odd) is None and odd == events.session_id_for("living room/../x")
    assert odd != events.session_id_for("living room/../y")
    assert session_id_problem(events.session_id_for("x" * 500)) is None


def test_the_answer_of_a_turn_or_why_there_is_none() -> None:
    answer = events.TurnAnswer()
    answer.add(events_pb2.Event(llm_token=events_pb2.LlmToken(text="12 times")))
    answer.add(events_pb2.Event(conversation_turn=events_pb2.ConversationTurn(assistant_text="12 times 7 is 84.")))
    assert answer.answer() == "12 times 7 is 84."
    failed = events.TurnAnswer()
    failed.add(
        events_pb2.Event(system_error=events_pb2.SystemError(message="slow", level=events_pb2.ERROR_LEVEL_WARNING))
    )
    failed.add(events_pb2.Event(llm_error=events_pb2.LlmError(message="every provider failed")))
    with pytest.raises(events.TurnFailed, match="every provider failed") as caught:
        failed.answer()
    assert "slow" not in str(caught.value)


# --- a real `coda wyoming` in front of a real Coda ----------------------------------------------


@dataclass
class Wyoming:
    port: int
    metrics_url: str

    def client(self) -> AsyncTcpClient:
        return AsyncTcpClient("127.0.0.1", self.port)


def start_wyoming(processes: Processes, coda_address: str) -> Wyoming:
    args = ["-m", "coda", "wyoming", "--uri", "tcp://127.0.0.1:0", "--address", coda_address]
    _, banner = processes.start([*args, "--metrics-address", "127.0.0.1:0"], banner=BANNER)
    port = int(re.search(r" on tcp://127\.0\.0\.1:(\d+) ", banner).group(1))  # type: ignore[union-attr]
    return Wyoming(port, banner.rsplit(" ", 1)[1])


@pytest.fixture
async def coda(tmp_path: Path) -> AsyncIterator[Host]:
    async with running_host(make_config(tmp_path)) as host:
        yield host


@pytest.fixture
async def wyoming(coda: Host, processes: Processes) -> Wyoming:
    return await asyncio.to_thread(start_wyoming, processes, coda.address)


async def read(client: AsyncTcpClient) -> Event:
    event = await asyncio.wait_for(client.read_event(), READ_TIMEOUT)
    assert event is not None, "the server closed the connection"
    return event


async def read_error(client: AsyncTcpClient, code: str) -> str:
    event = await read(client)
    assert Error.is_type(event.type), event
    error = Error.from_event(event)
    assert error.code == code, error
    return error.text


async def synthesize(client: AsyncTcpClient, text: str, voice: str = "") -> tuple[AudioStart, bytes]:
    await client.write_event(Synthesize(text=text, voice=SynthesizeVoice(name=voice) if voice else None).event())
    event = await read(client)
    assert AudioStart.is_type(event.type), event
    start, audio = AudioStart.from_event(event), b""
    while not AudioStop.is_type((event := await read(client)).type):
        chunk = AudioChunk.from_event(event)
        assert (chunk.rate, chunk.width, chunk.channels) == (start.rate, start.width, start.channels)
        audio += chunk.audio
    return start, audio


async def transcribe(client: AsyncTcpClient, audio: bytes, rate: int, width: int = 2, channels: int = 1) -> str:
    """Stream audio as Home Assistant does: Transcribe, AudioStart, 100 ms chunks, AudioStop."""
    await client.write_event(Transcribe(language="en").event())
    await client.write_event(AudioStart(rate=rate, width=width, channels=channels).event())
    step = rate * width * channels // 10
    for offset in range(0, len(audio), step):
        chunk = AudioChunk(rate=rate, width=width, channels=channels, audio=audio[offset : offset + step])
        await client.write_event(chunk.event())
    await client.write_event(AudioStop().event())
    event = await read(client)
    assert Transcript.is_type(event.type), event
    return Transcript.from_event(event).text


async def handle(client: AsyncTcpClient, text: str, conversation_id: str) -> Handled:
    await client.write_event(Transcript(text=text, context={"conversation_id": conversation_id}).event())
    event = await read(client)
    assert Handled.is_type(event.type), event
    return Handled.from_event(event)


def spoken_16k(start: AudioStart, audio: bytes) -> bytes:
    """Synthesized speech as Home Assistant's microphone would send it: 16 kHz 16-bit mono, with pauses."""
    pcm = PcmResampler(start.rate, 16_000).process(audio)
    return bytes(16_000) + pcm + bytes(32_000)


async def test_home_assistant_uses_coda_for_speech_and_conversation(wyoming: Wyoming) -> None:
    async with wyoming.client() as client:
        await client.write_event(Describe().event())
        info = Info.from_event(await read(client))
        assert [p.name for p in info.asr] == ["coda"] and info.asr[0].models[0].name == "whisper"
        voices = [v.name for v in info.tts[0].voices]
        assert voices[0] == "en_US-joe-medium" and "en-us" in voices  # Piper first, eSpeak's beside it
        assert [p.name for p in info.handle] == ["coda"]

        start, audio = await synthesize(client, "What is twelve times seven?")
        assert (start.width, start.channels) == (2, 1)
        assert 0.8 < len(audio) / 2 / start.rate < 5  # about 1.6 s of speech
        assert np.abs(np.frombuffer(audio, "<i2")).max() > 1000  # not silence

        text = await transcribe(client, spoken_16k(start, audio), 16_000)
        assert QUESTION.search(text.lower()), text

        handled = await handle(client, text, "ha-conversation-1")
        assert "84" in (handled.text or "") and handled.context == {"conversation_id": "ha-conversation-1"}

        _, espeak = await synthesize(client, "Hello there.", voice="en-us")
        assert len(espeak) > 0.3 * 2 * start.rate

    # A follow-up on another connection (Home Assistant opens one per request) keeps the context.
    async with wyoming.client() as client:
        handled = await handle(client, "now divide that by 3", "ha-conversation-1")
        assert "28" in (handled.text or ""), handled

    metrics = await asyncio.to_thread(lambda: urllib.request.urlopen(wyoming.metrics_url, timeout=10).read().decode())
    for kind, count in (("describe", 1), ("tts", 2), ("asr", 1), ("handle", 2)):
        assert f'coda_wyoming_requests_total{{kind="{kind}",outcome="ok"}} {count:.1f}' in metrics
        assert f'coda_wyoming_request_seconds_count{{kind="{kind}"}} {count:.1f}' in metrics


async def test_bad_input_gets_an_error_and_the_same_connection_goes_on(wyoming: Wyoming) -> None:
    async with wyoming.client() as client:
        await client.write_event(Event(type="open-the-pod-bay-doors"))
        assert "open-the-pod-bay-doors" in await read_error(client, events.UNKNOWN_EVENT)
        await client.write_event(Describe().event())
        assert Info.is_type((await read(client)).type)

        # Audio that cannot be converted: one Error, the rest of that stream is dropped quietly.
        await client.write_event(AudioStart(rate=16_000, width=5, channels=1).event())
        assert "width 5" in await read_error(client, events.BAD_AUDIO)
        await client.write_event(AudioChunk(rate=16_000, width=5, channels=1, audio=bytes(50)).event())
        await client.write_event(AudioStop().event())
        # A chunk that changes format mid-stream.
        await client.write_event(AudioStart(rate=16_000, width=2, channels=1).event())
        await client.write_event(AudioChunk(rate=8_000, width=2, channels=1, audio=bytes(320)).event())
        assert "announced 16000 Hz" in await read_error(client, events.BAD_AUDIO)
        await client.write_event(AudioStop().event())
        await client.write_event(AudioChunk(rate=16_000, width=2, channels=1, audio=bytes(320)).event())
        assert "without audio-start" in await read_error(client, events.BAD_REQUEST)

        await client.write_event(Synthesize(text="  ").event())
        assert "needs text" in await read_error(client, events.BAD_REQUEST)
        await client.write_event(Synthesize(text="Hi.", voice=SynthesizeVoice(name="klingon-9")).event())
        assert "klingon-9" in await read_error(client, events.BAD_REQUEST)
        await client.write_event(Transcript(text="").event())
        assert "no text" in await read_error(client, events.BAD_REQUEST)
        await client.write_event(Event(type="audio-start", data={"rate": 16_000}))
        assert "malformed audio-start" in await read_error(client, events.BAD_REQUEST)

        # The same connection still does everything, here with 24-bit stereo audio at 44.1 kHz. Piper's
        # voice differs a little on every call (its VITS model samples noise), and one word may be
        # misheard ("Open the brush door."); audio converted wrongly would be heard as nothing like it.
        said = "Open the garage door and turn on the kitchen lights."
        start, audio = await synthesize(client, said)
        pcm = np.frombuffer(
            PcmResampler(start.rate, 44_100).process(bytes(start.rate) + audio + bytes(2 * start.rate)), "<i2"
        )
        int24 = (pcm.astype(np.int32) << 8).astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3]
        stereo = np.repeat(int24, 2, axis=0).tobytes()
        text = await transcribe(client, stereo, 44_100, width=3, channels=2)
        assert word_error_rate(said, text) <= 0.3, text


async def test_handle_while_coda_is_down_is_an_error_and_the_connection_stays(
    tmp_path: Path, processes: Processes
) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{probe.getsockname()[1]}"
    wyoming = await asyncio.to_thread(start_wyoming, processes, dead)
    async with wyoming.client() as client:
        await client.write_event(Transcript(text="what is 12 times 7", context={"conversation_id": "c1"}).event())
        text = await read_error(client, events.CODA_UNAVAILABLE)
        assert f"Coda is not reachable at {dead}" in text
        await client.write_event(Describe().event())
        assert "not reachable" in await read_error(client, events.CODA_UNAVAILABLE)
        await client.write_event(Ping(text="still there?").event())
        assert Pong.from_event(await read(client)).text == "still there?"

        # Coda comes up at that address: the same connection gets answers within seconds.
        config = make_config(tmp_path, CODA_GRPC__ADDRESS=dead)
        async with running_host(config, only="bus,memory,tools,llm,assistant"):
            deadline = asyncio.get_running_loop().time() + 30
            while True:
                await client.write_event(
                    Transcript(text="what is 12 times 7", context={"conversation_id": "c1"}).event()
                )
                event = await read(client)
                if Handled.is_type(event.type):
                    break
                assert Error.from_event(event).code == events.CODA_UNAVAILABLE
                assert asyncio.get_running_loop().time() < deadline, "Coda was not found again within 30 s"
                await asyncio.sleep(0.5)
            assert "84" in (Handled.from_event(event).text or "")


async def test_coda_up_starts_the_wyoming_server(tmp_path: Path, processes: Processes) -> None:
    env = {
        "CODA_GRPC__ADDRESS": "127.0.0.1:0",
        "CODA_METRICS__ADDRESS": "",
        "CODA_BUS__PATH": str(tmp_path / "bus"),
        "CODA_MEMORY__PATH": str(tmp_path / "memory.db"),
        "CODA_ASSISTANT__SESSIONS_PATH": str(tmp_path / "sessions.db"),
        "CODA_TOOLS__TIMERS_PATH": str(tmp_path / "timers.db"),
        "CODA_BRIDGE__PORT": "0",
        "CODA_WYOMING__URI": "tcp://127.0.0.1:0",
        "CODA_WYOMING__METRICS_ADDRESS": "",
    }
    up, banner = await asyncio.to_thread(processes.start, ["-m", "coda", "up"], env=env, banner=BANNER, timeout=120)
    assert banner.endswith("metrics off")
    port = int(re.search(r" on tcp://127\.0\.0\.1:(\d+) ", banner).group(1))  # type: ignore[union-attr]
    async with AsyncTcpClient("127.0.0.1", port) as client:
        handled = await handle(client, "what is 12 times 7", "up-1")
        assert "84" in (handled.text or "")
    assert await asyncio.to_thread(processes.stop, up, signal.SIGTERM, 30) == 0
