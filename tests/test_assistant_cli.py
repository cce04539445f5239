"""`coda chat` against a real `coda serve` process."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import wave
from pathlib import Path

import grpc
import pytest
from assistant_helpers import silence, synthesize, write_wav
from conftest import ROOT, Processes

from coda.assistant.cli import WavError, read_wav


def serve_env(tmp_path: Path) -> dict[str, str]:
    return {
        "CODA_GRPC__ADDRESS": "127.0.0.1:0",
        "CODA_METRICS__ADDRESS": "",
        "CODA_BUS__PATH": str(tmp_path / "bus"),
        "CODA_MEMORY__PATH": str(tmp_path / "memory.db"),
        "CODA_ASSISTANT__SESSIONS_PATH": str(tmp_path / "sessions.db"),
        "CODA_TOOLS__TIMERS_PATH": str(tmp_path / "timers.db"),
        "CODA_GRPC__SHUTDOWN_GRACE_SECONDS": "1",
    }


def chat(address: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coda", "chat", "--address", address, *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        timeout=60,
    )


async def test_coda_chat_piped_and_spoken(processes: Processes, tmp_path: Path) -> None:
    server, banner = processes.start(["-m", "coda", "serve"], env=serve_env(tmp_path), banner="coda serving")
    address = banner.split(" on ", 1)[1].split()[0]

    typed = chat(address, "--user", "gus", stdin="what time is it in Tokyo\n")
    assert typed.returncode == 0, typed.stderr
    assert "Tokyo" in typed.stdout and typed.stdout.count("\n") == 1, "stdout holds just the answer"
    assert "[tool get_time" in typed.stderr and "[session s-" in typed.stderr
    session_id = typed.stderr.split("[session ", 1)[1].split()[0]

    resumed = chat(address, "--session", session_id, stdin="what is 6 times 7\n")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed, 1 earlier turns" in resumed.stderr and "42" in resumed.stdout

    async with grpc.aio.insecure_channel(address) as channel:
        speech = await synthesize(channel, "what time is it in Tokyo", sample_rate=16000)
    question = write_wav(tmp_path / "question.wav", silence(0.3) + speech + silence(1.2))
    answer = tmp_path / "answer.wav"
    spoken = chat(address, "--voice", str(question), "--save-audio", str(answer))
    assert spoken.returncode == 0, spoken.stderr
    assert "[you said: " in spoken.stderr and spoken.stdout.strip()
    assert read_wav(answer).pcm, "the spoken answer was written"

    processes.stop(server)
    down = chat(address, stdin="hello\n")
    assert down.returncode == 1 and "cannot reach Coda" in down.stderr


def test_read_wav_rejects_what_it_cannot_send(tmp_path: Path) -> None:
    with pytest.raises(WavError, match="cannot read"):
        read_wav(tmp_path / "missing.wav")
    stereo = tmp_path / "stereo.wav"
    with wave.open(str(stereo), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\x10\x00\x30\x00" * 100)
    mono = read_wav(stereo)
    assert mono.sample_rate == 8000 and len(mono.pcm) == 200 and mono.pcm[:2] == b"\x20\x00"


def test_coda_chat_announces_a_timer_while_waiting_for_input(processes: Processes, tmp_path: Path) -> None:
    server, banner = processes.start(["-m", "coda", "serve"], env=serve_env(tmp_path), banner="coda serving")
    address = banner.split(" on ", 1)[1].split()[0]
    child = subprocess.Popen(
        [sys.executable, "-m", "coda", "chat", "--address", address],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: queue.Queue[str] = queue.Queue()
    assert child.stdin is not None and child.stdout is not None
    threading.Thread(target=lambda: [lines.put(line) for line in child.stdout], daemon=True).start()  # type: ignore[union-attr]
    try:
        child.stdin.write("set a timer for 1 second called tea\n")
        child.stdin.flush()
        # The answer, then (nothing typed since) the announcement, printed while the chat waits for input.
        answer = lines.get(timeout=60)
        assert "1 second" in answer, answer
        assert lines.get(timeout=30) == "Your timer is done: tea.\n"
        child.stdin.close()
        assert child.wait(30) == 0, child.stderr.read()  # type: ignore[union-attr]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    processes.stop(server)
