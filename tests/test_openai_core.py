"""The OpenAI-compatible API's pure parts (bridge/openai_api.py and the front's routing rule), without sockets."""

from __future__ import annotations

import io
import json
import wave

import pytest

from bridge import openai_api as api
from bridge.http import served_by_websockets
from coda.assistant.conversation import client_input
from coda.schema import new_event
from coda.v1 import assistant_pb2, events_pb2, llm_pb2


def body(**fields: object) -> bytes:
    return json.dumps({"model": "coda", **fields}).encode()


def error_of(call: object) -> api.ApiError:
    with pytest.raises(api.ApiError) as raised:
        call()  # type: ignore[operator]
    return raised.value


def test_a_request_splits_into_history_text_and_continuation() -> None:
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": "Where?"},
        {"role": "user", "content": [{"type": "text", "text": "in "}, {"type": "text", "text": "Lisbon"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Lisbon"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]  # fmt: skip
    chat = api.parse_chat_request(body(messages=messages, stream=True))
    assert chat.text == "in Lisbon" and chat.stream and chat.session_id == ""
    assert [m.role for m in chat.history] == [llm_pb2.ROLE_SYSTEM, llm_pb2.ROLE_USER, llm_pb2.ROLE_ASSISTANT]
    call, result = chat.continuation
    assert call.tool_calls[0] == llm_pb2.ChatToolCall(id="c1", name="get_weather", arguments_json='{"city":"Lisbon"}')
    # The tool message takes its tool's name from the call it answers.
    assert (result.role, result.tool_call_id, result.name, result.content) == (
        llm_pb2.ROLE_TOOL,
        "c1",
        "get_weather",
        "sunny",
    )


def test_a_session_from_the_header_or_user_drops_the_history() -> None:
    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": "b"},
        {"role": "user", "content": "c"},
    ]
    by_header = api.parse_chat_request(body(messages=messages, user="s-user"), session_header="s-header")
    assert by_header.session_id == "s-header" and by_header.history == [] and by_header.text == "c"
    assert api.parse_chat_request(body(messages=messages, user="s-user")).session_id == "s-user"
    error = error_of(lambda: api.parse_chat_request(body(messages=messages), session_header="a/b"))
    assert error.status == 400 and "session" in error.message


def test_client_tools_become_tool_specs_unless_tool_choice_is_none() -> None:
    tool = {"type": "function", "function": {"name": "lookup", "description": "d",
                                             "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}  # fmt: skip
    messages = [{"role": "user", "content": "x"}]
    (spec,) = api.parse_chat_request(body(messages=messages, tools=[tool])).tools
    assert spec.name == "lookup" and json.loads(spec.parameters_json_schema)["properties"] == {"q": {"type": "string"}}
    assert api.parse_chat_request(body(messages=messages, tools=[tool], tool_choice="none")).tools == []
    assert (
        error_of(lambda: api.parse_chat_request(body(messages=messages, tools=[{"type": "web"}]))).param == "tools[0]"
    )


@pytest.mark.parametrize(
    ("raw", "status", "param"),
    [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        (body(model="gpt-4o", messages=[{"role": "user", "content": "x"}]), 404, "model"),
        (json.dumps({"messages": [{"role": "user", "content": "x"}]}).encode(), 400, "model"),
        (body(messages=[]), 400, "messages"),
        (body(messages=[{"role": "system", "content": "only a system prompt"}]), 400, "messages"),
        (body(messages=[{"role": "wizard", "content": "x"}]), 400, "messages[0].role"),
        (body(messages=[{"role": "user", "content": [{"type": "image_url"}]}]), 400, "messages[0].content"),
        (body(messages=[{"role": "user", "content": "x"}], n=2), 400, "n"),
        (body(messages=[{"role": "user", "content": "x"}], stream="yes"), 400, "stream"),
        (
            body(messages=[{"role": "user", "content": "x"}, {"role": "tool", "content": "r"}]),
            400,
            "messages[1].tool_call_id",
        ),
    ],
)
def test_bad_chat_requests(raw: bytes, status: int, param: str | None) -> None:
    error = error_of(lambda: api.parse_chat_request(raw))
    assert (error.status, error.param) == (status, param)
    assert set(error.body()["error"]) == {"message", "type", "param", "code"}


def turn_events(turn_id: str, tokens: list[str], **turn: object) -> list[events_pb2.Event]:
    events = [
        new_event("llm", events_pb2.LlmToken(text=t, index=i), correlation_id=turn_id) for i, t in enumerate(tokens)
    ]
    events.append(
        new_event(
            "llm", events_pb2.LlmFinished(prompt_tokens=10, completion_tokens=len(tokens)), correlation_id=turn_id
        )
    )
    events.append(new_event("assistant", events_pb2.ConversationTurn(turn_id=turn_id, **turn), correlation_id=turn_id))  # type: ignore[arg-type]
    return events


def test_events_become_chunks_and_a_completion() -> None:
    assembler = api.CompletionAssembler(turn_id="t-1", include_usage=True)
    other = new_event("llm", events_pb2.LlmToken(text="not ours"), correlation_id="t-other")
    chunks = assembler.feed(other)
    for event in turn_events("t-1", ["12 times", " 7 is 84."], assistant_text="12 times 7 is 84."):
        chunks += assembler.feed(event)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:3]] == ["12 times", " 7 is 84."]
    assert chunks[3]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "stop", "logprobs": None}
    assert chunks[4]["choices"] == [] and chunks[4]["usage"]["total_tokens"] == 12
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"} and len({c["id"] for c in chunks}) == 1
    completion = assembler.completion()
    assert completion["choices"][0]["message"] == {"role": "assistant", "content": "12 times 7 is 84."}
    assert assembler.failure() is None


def test_a_turn_ending_in_client_tool_calls() -> None:
    call = events_pb2.LlmToolCallRequested(call_id="c9", name="lookup", arguments_json='{"q": "x"}')
    assembler = api.CompletionAssembler(turn_id="t-2")
    chunks = [c for e in turn_events("t-2", [], client_tool_calls=[call]) for c in assembler.feed(e)]
    delta = chunks[1]["choices"][0]["delta"]
    assert delta["tool_calls"] == [
        {"id": "c9", "type": "function", "index": 0, "function": {"name": "lookup", "arguments": '{"q": "x"}'}}
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    message = assembler.completion()["choices"][0]["message"]
    assert message["content"] is None and message["tool_calls"][0]["function"]["name"] == "lookup"


def test_turns_without_an_answer_fail_with_the_right_status() -> None:
    unfinished = api.CompletionAssembler(turn_id="t-3")
    assert unfinished.failure().status == 503  # type: ignore[union-attr]
    failed = api.CompletionAssembler(turn_id="t-4")
    failed.feed(new_event("llm", events_pb2.LlmError(message="no provider"), correlation_id="t-4"))
    for event in turn_events("t-4", []):
        failed.feed(event)
    assert failed.failure().status == 503 and "no provider" in failed.failure().message  # type: ignore[union-attr]
    refused = api.CompletionAssembler(turn_id="t-5")
    details = json.dumps({"code": "INVALID_ARGUMENT", "request": "text"})
    refused.feed(new_event("assistant", events_pb2.SystemError(message="too many client tools", details=details)))
    assert refused.failure().status == 400  # type: ignore[union-attr]


def wav_file(channels: int = 1, rate: int = 16000, width: int = 2, frames: int = 800) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(width)
        out.setframerate(rate)
        out.writeframes(b"\x01" * (frames * channels * width))
    return buffer.getvalue()


def test_wav_files() -> None:
    wav = api.parse_wav(wav_file(channels=2, rate=44100))
    assert (wav.channels, wav.sample_rate, len(wav.pcm)) == (2, 44100, 800 * 4)
    assert api.parse_wav(api.wav_bytes(b"\x00\x01" * 10, 22050)) == api.Wav(22050, 1, b"\x00\x01" * 10)
    for bad in (b"", b"ID3\x04 an mp3", wav_file(width=1), wav_file(frames=0), wav_file()[:40]):
        assert error_of(lambda bad=bad: api.parse_wav(bad)).status == 400


def multipart(fields: dict[str, bytes | str], boundary: str = "b0undary") -> tuple[str, bytes]:
    out = b""
    for name, value in fields.items():
        filename = f'; filename="{name}.wav"' if isinstance(value, bytes) else ""
        data = value if isinstance(value, bytes) else value.encode()
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{filename}\r\n\r\n'.encode() + data + b"\r\n"
        )
    return f"multipart/form-data; boundary={boundary}", out + f"--{boundary}--\r\n".encode()


def test_transcription_uploads() -> None:
    content_type, data = multipart({"model": "whisper-1", "file": wav_file(), "language": "en"})
    upload = api.parse_transcription_request(content_type, data)
    assert upload.language == "en" and upload.response_format == "json" and upload.wav.sample_rate == 16000
    content_type, data = multipart({"model": "whisper-9", "file": wav_file()})
    assert error_of(lambda: api.parse_transcription_request(content_type, data)).status == 404
    content_type, data = multipart({"model": "whisper-1"})
    assert error_of(lambda: api.parse_transcription_request(content_type, data)).param == "file"
    assert error_of(lambda: api.parse_transcription_request("application/json", b"{}")).status == 400
    assert error_of(lambda: api.parse_transcription_request(content_type, data[:-10])).status == 400


def test_speech_requests() -> None:
    request = api.parse_speech_request(
        json.dumps({"model": "tts-1", "input": "hi", "voice": "alloy"}).encode(), api.OPENAI_VOICES
    )
    assert request == api.SpeechRequest(text="hi", voice="", response_format="wav")
    assert (
        api.parse_speech_request(
            json.dumps({"model": "tts-1", "input": "hi", "voice": "en_US-x", "response_format": "pcm"}).encode()
        ).voice
        == "en_US-x"
    )
    assert error_of(lambda: api.parse_speech_request(b'{"model": "tts-1", "input": ""}')).param == "input"
    assert (
        error_of(lambda: api.parse_speech_request(b'{"model": "tts-1", "input": "a", "response_format": "mp3"}')).param
        == "response_format"
    )
    assert error_of(lambda: api.parse_speech_request(b'{"model": "coda", "input": "a"}')).status == 404


def test_the_front_routes_gets_outside_the_api_to_websockets() -> None:
    assert served_by_websockets(b"GET", b"/v1/ws?token=x", "/v1/ws")
    assert served_by_websockets(b"GET", b"/", "/v1/ws") and served_by_websockets(b"GET", b"/healthz", "/v1/ws")
    assert not served_by_websockets(b"GET", b"/v1/models", "/v1/ws")
    assert not served_by_websockets(b"POST", b"/v1/chat/completions", "/v1/ws")
    assert not served_by_websockets(b"POST", b"/", "/v1/ws")


def test_the_assistant_checks_client_input() -> None:
    def text(**fields: object) -> assistant_pb2.TextInput:
        return assistant_pb2.TextInput(text="hi", **fields)  # type: ignore[arg-type]

    tool = llm_pb2.ToolSpec(name="lookup", parameters_json_schema='{"type": "object"}')
    assert client_input(text(client_tools=[tool])).tool_names == {"lookup"}
    for bad in (
        text(client_tools=[tool, tool]),
        text(client_tools=[llm_pb2.ToolSpec(name="has space")]),
        text(client_tools=[llm_pb2.ToolSpec(name="x", parameters_json_schema="[1]")]),
        text(history=[llm_pb2.ChatMessage(content="no role")]),
    ):
        with pytest.raises(ValueError):
            client_input(bad)
