"""Wyoming events to and from Coda's gRPC messages. Pure: no I/O.

- Describe -> Info: asr, tts (the Voice service's voices, the default first) and handle programs.
- A Transcript to handle -> the Coda session it belongs to: one per Home Assistant conversation id
  (sent in the Transcript's context), so follow-ups keep their context across connections.
- Converse responses -> the answer of the turn, or why there is none.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from wyoming.info import (
    AsrModel,
    AsrProgram,
    Attribution,
    HandleModel,
    HandleProgram,
    Info,
    TtsProgram,
    TtsVoice,
)

from coda import __version__
from coda.schema import session_id_problem
from coda.v1 import events_pb2, voice_pb2

ATTRIBUTION = Attribution(name="Coda", url="https://github.com/coda")
#: Coda's defaults (Whisper tiny.en, the Piper en_US voice, the intent agent) speak English.
LANGUAGES = ["en"]
SESSION_PREFIX = "wyoming-"

# Machine-readable codes of the Error events the server sends.
UNKNOWN_EVENT = "unknown-event"
BAD_AUDIO = "bad-audio"
BAD_REQUEST = "bad-request"
CODA_UNAVAILABLE = "coda-unavailable"
CODA_ERROR = "coda-error"


class TurnFailed(RuntimeError):
    """The assistant gave no answer; the message says why."""


def voice_language(voice: str) -> str:
    """The language of a voice named like 'en-us' (eSpeak) or 'en_US-joe-medium' (Piper)."""
    return re.split(r"[-_]", voice, maxsplit=1)[0].lower() or "en"


def describe(voice: voice_pb2.DescribeVoiceResponse) -> Info:
    def artifact(name: str, description: str) -> dict[str, Any]:
        return {
            "name": name,
            "attribution": ATTRIBUTION,
            "installed": True,
            "description": description,
            "version": __version__,
        }

    return Info(
        asr=[
            AsrProgram(
                **artifact("coda", f"Coda speech recognition ({voice.stt_engine})"),
                models=[AsrModel(**artifact(voice.stt_engine, f"Coda {voice.stt_engine}"), languages=LANGUAGES)],
            )
        ],
        tts=[
            TtsProgram(
                **artifact("coda", f"Coda speech synthesis ({voice.tts_engine})"),
                # Exactly the voices installed (the default first), so a client never picks a missing one.
                # Home Assistant shows a voice's description as its name: the name it is.
                voices=[TtsVoice(**artifact(name, name), languages=[voice_language(name)]) for name in voice.voices],
            )
        ],
        handle=[
            HandleProgram(
                **artifact("coda", "Coda assistant (memory, tools, local language model)"),
                models=[HandleModel(**artifact("coda-assistant", "Coda assistant"), languages=LANGUAGES)],
            )
        ],
    )


def conversation_key(context: dict[str, Any] | None) -> str:
    """The conversation a Transcript belongs to: Home Assistant's conversation_id (or a satellite's id)."""
    for key in ("conversation_id", "satellite_id"):
        value = (context or {}).get(key)
        if isinstance(value, str | int) and str(value):
            return str(value)
    return ""


def session_id_for(conversation: str) -> str:
    """Coda's session id for a conversation: readable when the id is safe, else a digest of it."""
    readable = SESSION_PREFIX + conversation
    if session_id_problem(readable) is None:
        return readable
    return SESSION_PREFIX + hashlib.sha256(conversation.encode()).hexdigest()[:32]


class TurnAnswer:
    """Collects the events of one Converse turn into its answer text."""

    def __init__(self) -> None:
        self.text: str | None = None
        self._errors: list[str] = []

    def add(self, event: events_pb2.Event) -> None:
        kind = event.WhichOneof("payload")
        if kind == "conversation_turn":
            self.text = event.conversation_turn.assistant_text
        elif kind in ("llm_error", "system_error", "tool_error"):
            payload = getattr(event, kind)
            if kind != "system_error" or payload.level != events_pb2.ERROR_LEVEL_WARNING:
                self._errors.append(payload.message)

    def answer(self) -> str:
        if self.text:
            return self.text
        reason = "; ".join(self._errors) or "the assistant ended the turn without an answer"
        raise TurnFailed(reason)
