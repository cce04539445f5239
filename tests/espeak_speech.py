"""eSpeak NG speech for tests, the same audio for a text whatever ran before it.

eSpeak NG's audio for a text depends on what it synthesised earlier in the same process (neither its
random seed, libc's, nor Terminate plus Initialize resets that state), so tests that spoke through it
in-process heard different audio depending on which tests ran first, and recognition bounds held in
one order and failed in another. Here each (text, voice, rate) is rendered once per test session,
in a fresh process, where eSpeak's first rendering is always the same.

Run as a script it writes the PCM16 mono audio of one text to stdout: `python espeak_speech.py TEXT VOICE RATE`.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

_rendered: dict[tuple[str, str, int], bytes] = {}
_SCRIPT = str(Path(__file__).resolve())


async def espeak_speech(text: str, voice: str = "en-us", rate: int = 16_000) -> bytes:
    """PCM16 mono at `rate` Hz of `text` in eSpeak's `voice` (rendered in a fresh process, cached)."""
    key = (text, voice, rate)
    if key not in _rendered:
        child = await asyncio.create_subprocess_exec(
            sys.executable,
            _SCRIPT,
            text,
            voice,
            str(rate),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        audio, errors = await child.communicate()
        if child.returncode != 0 or not audio:
            raise RuntimeError(f"eSpeak could not render {text!r}: {errors.decode(errors='replace')[-500:]}")
        _rendered[key] = audio
    return _rendered[key]


async def _render(text: str, voice: str, rate: int) -> bytes:
    from coda.voice.audio import PcmResampler
    from coda.voice.engines.espeak_tts import EspeakTts

    tts = EspeakTts()
    await tts.load()
    audio = b"".join([piece.pcm async for piece in tts.synthesize(text, voice)])
    return PcmResampler(tts.sample_rate, rate).process(audio)


if __name__ == "__main__":
    said, voice_name, sample_rate = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sys.stdout.buffer.write(asyncio.run(_render(said, voice_name, sample_rate)))
