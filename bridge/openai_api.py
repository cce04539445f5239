"""The OpenAI-compatible HTTP API's wire format, without I/O: request parsing and checks, the mapping of
the Assistant's Converse events to `chat.completion` / `chat.completion.chunk` objects, multipart
uploads, WAV files and OpenAI-shaped error bodies.

How a Chat Completions request becomes one Assistant turn (see docs/openai.md):
- The last `user` message is the turn's text. What follows it (the assistant's calls to the client's
  tools and their `tool` results) is the turn's continuation; what precedes it is the history.
- With a session (`X-Coda-Session` header or the `user` field) the Assistant keeps the conversation:
  only the text and its continuation are sent, the session's own history stands for the rest.
  Without one, each request is a new session and the history comes along with the turn.
- The client's `tools` are offered to the model next to Coda's own. A call to one ends the turn with
  `finish_reason: "tool_calls"`; the client runs it and sends the result back as a `tool` message.
"""

from __future__ import annotations

import json
import re
import struct
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from coda.schema import session_id_problem
from coda.v1 import events_pb2, llm_pb2

#: The Assistant, answering with its tools, memory and personality.
CHAT_MODEL = "coda"
#: Speech models: Coda's own names, and OpenAI's so that clients that hard-code them work unchanged.
TRANSCRIPTION_MODELS = ("coda-transcribe", "whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe")
SPEECH_MODELS = ("coda-speech", "tts-1", "tts-1-hd", "gpt-4o-mini-tts")
MODELS = (CHAT_MODEL, *TRANSCRIPTION_MODELS, *SPEECH_MODELS)
OWNER = "coda"
SESSION_HEADER = "x-coda-session"
#: OpenAI's `pcm` response format is 24 kHz 16-bit mono; clients play it at that rate.
OPENAI_PCM_RATE = 24_000
MAX_SPEECH_CHARS = 4096

_ROLES = {
    "system": llm_pb2.ROLE_SYSTEM,
    "developer": llm_pb2.ROLE_SYSTEM,
    "user": llm_pb2.ROLE_USER,
    "assistant": llm_pb2.ROLE_ASSISTANT,
    "tool": llm_pb2.ROLE_TOOL,
}


class ApiError(Exception):
    """An error answer: HTTP status and the OpenAI error object."""

    def __init__(
        self,
        status: int,
        message: str,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def json_bytes(self) -> bytes:
        return json.dumps(self.body()).encode()


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def unavailable(message: str) -> ApiError:
    return ApiError(503, message, kind="service_unavailable", code="upstream_unavailable")


def unknown_model(model: str, kind: str) -> ApiError:
    return ApiError(
        404, f"The model '{model}' does not exist or is not a {kind} model here", param="model", code="model_not_found"
    )


def models_list(created: int) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": m, "object": "model", "created": created, "owned_by": OWNER} for m in MODELS],
    }


def json_object(body: bytes) -> dict[str, Any]:
    """The request body as a JSON object; 400 otherwise."""
    try:
        parsed = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise bad_request("the request body must be a JSON object")
    return parsed


# --- chat completions: the request ----------------------------------------------------------------


@dataclass
class ChatRequest:
    model: str
    stream: bool
    include_usage: bool
    #: "" for a new session of its own.
    session_id: str
    text: str
    history: list[llm_pb2.ChatMessage]
    continuation: list[llm_pb2.ChatMessage]
    tools: list[llm_pb2.ToolSpec]


def parse_chat_request(body: bytes, session_header: str | None = None) -> ChatRequest:
    """A Chat Completions request body checked and split into one Assistant turn; raises ApiError."""
    data = json_object(body)
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required (a string)", param="model")
    if model != CHAT_MODEL:
        raise unknown_model(model, "chat")
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("'stream' must be a boolean", param="stream")
    options = data.get("stream_options") or {}
    if not isinstance(options, dict):
        raise bad_request("'stream_options' must be an object", param="stream_options")
    n = data.get("n", 1)
    if n not in (1, None):
        raise bad_request("only n=1 is supported", param="n")
    user = data.get("user")
    if user is not None and not isinstance(user, str):
        raise bad_request("'user' must be a string", param="user")
    session_id = (session_header or "").strip() or (user or "")
    if session_id:
        problem = session_id_problem(session_id)
        if problem:
            raise bad_request(f"invalid session id {session_id[:80]!r}: {problem}", param="user")
    messages = chat_messages(data.get("messages"))
    last_user = max((i for i, m in enumerate(messages) if m.role == llm_pb2.ROLE_USER), default=-1)
    if last_user < 0:
        raise bad_request("'messages' must contain a user message", param="messages")
    text = messages[last_user].content.strip()
    if not text:
        raise bad_request("the last user message is empty", param="messages")
    tools = tool_specs(data.get("tools"))
    if data.get("tool_choice") == "none":
        tools = []
    return ChatRequest(
        model=model,
        stream=stream,
        include_usage=bool(options.get("include_usage")),
        session_id=session_id,
        text=text,
        # With a session the Assistant keeps the history itself.
        history=[] if session_id else messages[:last_user],
        continuation=messages[last_user + 1 :],
        tools=tools,
    )


def chat_messages(raw: Any) -> list[llm_pb2.ChatMessage]:
    if not isinstance(raw, list) or not raw:
        raise bad_request("'messages' must be a non-empty array", param="messages")
    messages: list[llm_pb2.ChatMessage] = []
    #: Tool messages do not carry the tool's name; it comes from the call they answer.
    call_names: dict[str, str] = {}
    for index, item in enumerate(raw):
        param = f"messages[{index}]"
        if not isinstance(item, dict):
            raise bad_request(f"{param} must be an object", param=param)
        role = _ROLES.get(item.get("role"))  # type: ignore[arg-type]
        if role is None:
            raise bad_request(f"{param}.role must be one of {', '.join(_ROLES)}", param=f"{param}.role")
        message = llm_pb2.ChatMessage(role=role, content=_content(item.get("content"), f"{param}.content"))
        if role == llm_pb2.ROLE_ASSISTANT:
            for position, call in enumerate(item.get("tool_calls") or []):
                tool_call = _tool_call(call, f"{param}.tool_calls[{position}]")
                call_names[tool_call.id] = tool_call.name
                message.tool_calls.append(tool_call)
        elif role == llm_pb2.ROLE_TOOL:
            call_id = item.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise bad_request(f"{param}.tool_call_id is required for a tool message", param=f"{param}.tool_call_id")
            message.tool_call_id = call_id
            message.name = call_names.get(call_id, "") or str(item.get("name") or "")
        messages.append(message)
    return messages


def _content(content: Any, param: str) -> str:
    """Text content: a string, null, or an array of text parts (other parts are not supported)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad_request(f"{param}: only text content parts are supported", param=param)
            texts.append(part["text"])
        return "".join(texts)
    raise bad_request(f"{param} must be a string or an array of text parts", param=param)


def _tool_call(call: Any, param: str) -> llm_pb2.ChatToolCall:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str):
        raise bad_request(f"{param} must be a function call with a name", param=param)
    arguments = function.get("arguments") or "{}"
    if not isinstance(arguments, str):
        arguments = json.dumps(arguments)
    return llm_pb2.ChatToolCall(id=str(call.get("id") or ""), name=function["name"], arguments_json=arguments)


def tool_specs(raw: Any) -> list[llm_pb2.ToolSpec]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise bad_request("'tools' must be an array", param="tools")
    specs = []
    for index, tool in enumerate(raw):
        param = f"tools[{index}]"
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
            raise bad_request(f"{param} must be {{'type': 'function', 'function': {{'name': ...}}}}", param=param)
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(parameters, dict):
            raise bad_request(f"{param}.function.parameters must be a JSON Schema object", param=param)
        specs.append(
            llm_pb2.ToolSpec(
                name=function["name"],
                description=str(function.get("description") or ""),
                parameters_json_schema=json.dumps(parameters),
            )
        )
    return specs


# --- chat completions: the answer ------------------------------------------------------------------


def new_completion_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


def client_error_of(event: events_pb2.Event) -> str | None:
    """The message of a `system.error` the Assistant sends for an invalid request, else None."""
    if not event.HasField("system_error"):
        return None
    try:
        details = json.loads(event.system_error.details or "{}")
    except json.JSONDecodeError:
        return None
    if isinstance(details, dict) and details.get("code") == "INVALID_ARGUMENT":
        return event.system_error.message
    return None


@dataclass
class CompletionAssembler:
    """Follows one turn's events and says what to send: stream chunks as they come, or the whole
    completion at the end. Events of other turns (the turn id is the correlation id) are skipped."""

    turn_id: str
    completion_id: str = field(default_factory=new_completion_id)
    model: str = CHAT_MODEL
    created: int = field(default_factory=lambda: int(time.time()))
    include_usage: bool = False
    text: list[str] = field(default_factory=list)
    tool_calls: list[events_pb2.LlmToolCallRequested] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: Set by conversation.turn (or conversation.interrupted): the turn is over.
    finished: bool = False
    interrupted: bool = False
    llm_error: str = ""
    client_error: str = ""
    _started: bool = False

    def feed(self, event: events_pb2.Event) -> list[dict[str, Any]]:
        """Take one event; return the chunks it makes (for a streamed answer)."""
        problem = client_error_of(event)
        if problem is not None and not event.correlation_id:
            self.client_error = problem
            return []
        if event.correlation_id != self.turn_id or self.finished:
            return []
        kind = event.WhichOneof("payload")
        if kind == "llm_token":
            return self._delta({"content": event.llm_token.text}) if event.llm_token.text else []
        if kind == "llm_finished":
            self.prompt_tokens += event.llm_finished.prompt_tokens
            self.completion_tokens += event.llm_finished.completion_tokens
        elif kind == "llm_error":
            self.llm_error = event.llm_error.message
        elif kind == "conversation_interrupted":
            self.finished = self.interrupted = True
        elif kind == "conversation_turn":
            return self._end(event.conversation_turn)
        return []

    def _delta(self, delta: dict[str, Any]) -> list[dict[str, Any]]:
        chunks = []
        if not self._started:
            self._started = True
            chunks.append(self._chunk({"role": "assistant", "content": ""}))
        if "content" in delta:
            self.text.append(delta["content"])
        chunks.append(self._chunk(delta))
        return chunks

    def _end(self, turn: events_pb2.ConversationTurn) -> list[dict[str, Any]]:
        self.finished = True
        self.interrupted = turn.interrupted
        chunks: list[dict[str, Any]] = []
        said = "".join(self.text)
        # What the turn added after the model's tokens (a note that the tool limit was reached).
        rest = turn.assistant_text[len(said) :] if turn.assistant_text.startswith(said) else ""
        if rest.strip():
            chunks += self._delta({"content": rest})
        self.tool_calls = list(turn.client_tool_calls)
        if self.tool_calls:
            chunks += self._delta({"tool_calls": [_tool_call_json(c, i) for i, c in enumerate(self.tool_calls)]})
        if not self._started:
            chunks += self._delta({"content": ""})
        chunks.append(self._chunk({}, self.finish_reason))
        if self.include_usage:
            chunks.append(self._chunk_object([], usage=self.usage()))
        return chunks

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_calls else "stop"

    def failure(self) -> ApiError | None:
        """Why the turn gave no answer to send (once the stream has ended), or None."""
        if self.client_error and not self.finished:
            return bad_request(f"the assistant refused the request: {self.client_error}", param="messages")
        if not self.finished:
            return unavailable("the assistant ended the conversation before the answer was complete")
        if self.llm_error and not "".join(self.text).strip() and not self.tool_calls:
            return unavailable(f"the language model failed: {self.llm_error}")
        return None

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }

    def completion(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": "".join(self.text) or None}
        if self.tool_calls:
            message["tool_calls"] = [_tool_call_json(c) for c in self.tool_calls]
        return {
            "id": self.completion_id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": self.finish_reason, "logprobs": None}],
            "usage": self.usage(),
        }

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return self._chunk_object([{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}])

    def _chunk_object(self, choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if usage is not None:
            chunk["usage"] = usage
        return chunk


def _tool_call_json(call: events_pb2.LlmToolCallRequested, index: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": call.call_id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments_json or "{}"},
    }
    if index is not None:
        out["index"] = index
    return out


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


SSE_DONE = b"data: [DONE]\n\n"


# --- multipart/form-data (audio uploads) -------------------------------------------------------------


@dataclass(frozen=True)
class FormPart:
    name: str
    filename: str | None
    content_type: str
    data: bytes


def parse_multipart(content_type: str, body: bytes) -> dict[str, FormPart]:
    """The parts of a multipart/form-data body by field name; raises ApiError (400)."""
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        raise bad_request("the request must be multipart/form-data")
    match = re.search(r'boundary="?([^";]+)"?', params)
    if not match:
        raise bad_request("multipart/form-data without a boundary")
    delimiter = b"--" + match.group(1).encode("latin-1")
    sections = body.split(delimiter)
    if len(sections) < 3 or not sections[-1].startswith(b"--"):
        raise bad_request("malformed multipart body: no closing boundary")
    parts: dict[str, FormPart] = {}
    for section in sections[1:-1]:
        if not section.startswith(b"\r\n"):
            raise bad_request("malformed multipart body")
        head, separator, data = section[2:].partition(b"\r\n\r\n")
        if not separator or not data.endswith(b"\r\n"):
            raise bad_request("malformed multipart part")
        headers = {}
        for line in head.decode("utf-8", "replace").split("\r\n"):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        field_name = re.search(r'\bname="([^"]*)"', disposition)
        if field_name is None:
            raise bad_request("a multipart part has no name")
        filename = re.search(r'\bfilename="([^"]*)"', disposition)
        parts[field_name.group(1)] = FormPart(
            name=field_name.group(1),
            filename=filename.group(1) if filename else None,
            content_type=headers.get("content-type", ""),
            data=data[:-2],
        )
    return parts


def form_text(parts: dict[str, FormPart], name: str, default: str = "") -> str:
    part = parts.get(name)
    return part.data.decode("utf-8", "replace").strip() if part is not None else default


# --- WAV ---------------------------------------------------------------------------------------------

_WAVE_PCM = 1
_WAVE_EXTENSIBLE = 0xFFFE


@dataclass(frozen=True)
class Wav:
    sample_rate: int
    channels: int
    #: PCM16 little-endian, channels interleaved.
    pcm: bytes


def parse_wav(data: bytes) -> Wav:
    """A 16-bit PCM WAV file (any rate, 1-4 channels); raises ApiError (400) for anything else."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise bad_request("the audio file is not a WAV file (RIFF/WAVE); send 16-bit PCM WAV", param="file")
    position = 12
    fmt: tuple[int, int, int, int] | None = None
    while position + 8 <= len(data):
        chunk_id, size = data[position : position + 4], struct.unpack_from("<I", data, position + 4)[0]
        start = position + 8
        if chunk_id == b"fmt ":
            if size < 16 or start + 16 > len(data):
                raise bad_request("the WAV file's fmt chunk is truncated", param="file")
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", data, start)
            if tag == _WAVE_EXTENSIBLE and size >= 40:
                tag = struct.unpack_from("<H", data, start + 24)[0]
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise bad_request("the WAV file has no fmt chunk before its data", param="file")
            tag, channels, rate, bits = fmt
            if tag != _WAVE_PCM or bits != 16:
                raise bad_request(
                    f"unsupported WAV encoding (format {tag}, {bits} bits); send 16-bit PCM", param="file"
                )
            if not 1 <= channels <= 4 or not 4_000 <= rate <= 192_000:
                raise bad_request(f"unsupported WAV layout: {channels} channels at {rate} Hz", param="file")
            # A streamed WAV may declare a size larger than what follows: take what is there.
            pcm = data[start : min(len(data), start + size)]
            frame = 2 * channels
            pcm = pcm[: len(pcm) - len(pcm) % frame]
            if not pcm:
                raise bad_request("the WAV file has no audio", param="file")
            return Wav(rate, channels, pcm)
        position = start + size + (size & 1)
    raise bad_request("the WAV file has no data chunk", param="file")


def wav_bytes(pcm: bytes, sample_rate: int, channels: int = 1) -> bytes:
    """A PCM16 WAV file."""
    header = struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + len(pcm),
        b"WAVE",
        b"fmt ",
        16,
        _WAVE_PCM,
        channels,
        sample_rate,
        sample_rate * channels * 2,
        channels * 2,
        16,
        b"data",
        len(pcm),
    )
    return header + pcm


# --- speech ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpeechRequest:
    text: str
    voice: str
    #: "wav" or "pcm".
    response_format: str


SPEECH_FORMATS = {"wav": "audio/wav", "pcm": "audio/pcm"}


def parse_speech_request(body: bytes, default_voices: Sequence[str] = ("alloy",)) -> SpeechRequest:
    data = json_object(body)
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("'model' is required (a string)", param="model")
    if model not in SPEECH_MODELS:
        raise unknown_model(model, "speech")
    text = data.get("input")
    if not isinstance(text, str) or not text.strip():
        raise bad_request("'input' must be a non-empty string", param="input")
    if len(text) > MAX_SPEECH_CHARS:
        raise bad_request(f"'input' is longer than {MAX_SPEECH_CHARS} characters", param="input")
    voice = data.get("voice", "")
    if not isinstance(voice, str):
        raise bad_request("'voice' must be a string", param="voice")
    response_format = data.get("response_format", "wav")
    if response_format not in SPEECH_FORMATS:
        raise bad_request(
            f"response_format {response_format!r} is not supported; use one of {', '.join(SPEECH_FORMATS)}",
            param="response_format",
        )
    # OpenAI's voice names mean nothing to Coda's engines: they get the engine's default voice.
    return SpeechRequest(text=text, voice="" if voice in default_voices else voice, response_format=response_format)


OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse")


@dataclass(frozen=True)
class TranscriptionRequest:
    wav: Wav
    language: str
    #: "json" or "text".
    response_format: str


def parse_transcription_request(content_type: str, body: bytes) -> TranscriptionRequest:
    parts = parse_multipart(content_type, body)
    model = form_text(parts, "model")
    if not model:
        raise bad_request("'model' is required", param="model")
    if model not in TRANSCRIPTION_MODELS:
        raise unknown_model(model, "transcription")
    upload = parts.get("file")
    if upload is None or not upload.data:
        raise bad_request("'file' is required (a WAV file)", param="file")
    response_format = form_text(parts, "response_format", "json")
    if response_format not in ("json", "text"):
        raise bad_request(
            f"response_format {response_format!r} is not supported; use json or text", param="response_format"
        )
    return TranscriptionRequest(
        wav=parse_wav(upload.data), language=form_text(parts, "language"), response_format=response_format
    )


def joined(texts: Iterable[str]) -> str:
    return " ".join(t.strip() for t in texts if t.strip())
