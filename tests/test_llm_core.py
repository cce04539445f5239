"""Pure cores of the LLM component: SSE decoding, tool-call assembly, the OpenAI wire format, request checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coda.llm.openai_format import MalformedChunk, StreamError, error_message, parse_chunk, request_body
from coda.llm.requests import InvalidRequest, from_start
from coda.llm.sse import SseDecoder, SseEvent
from coda.llm.toolcalls import ToolCallAssembler, ToolCallError
from coda.llm.types import Finish, GenerationRequest, Message, TextDelta, Tool, ToolCall, ToolCallDelta, Usage
from coda.v1 import llm_pb2

DATA = Path(__file__).parent / "data" / "llm"


# --- SSE


def test_sse_events_lines_and_comments() -> None:
    decoder = SseDecoder()
    events = decoder.feed(b": keep-alive\n\ndata: one\ndata: two\n\nevent: ping\nid: 7\ndata:x\n\n")
    assert events == [SseEvent("one\ntwo"), SseEvent("x", event="ping", id="7")]


def test_sse_crlf_split_between_cr_and_lf() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\n\r") == [SseEvent("a")]
    assert decoder.feed(b"\ndata: b\r\n\r\n") == [SseEvent("b")]


def test_sse_incomplete_event_at_end_is_dropped() -> None:
    decoder = SseDecoder()
    assert decoder.feed(b"data: partial") == []
    assert decoder.close() == []


@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=200))
def test_sse_any_split_gives_the_same_events(cuts: list[int]) -> None:
    body = (DATA / "ollama_text.sse").read_bytes() + (DATA / "llamacpp_crlf_keepalive.sse").read_bytes()
    whole = SseDecoder().feed(body)
    decoder, events, position = SseDecoder(), [], 0
    for size in cuts:
        events += decoder.feed(body[position : position + size])
        position += size
    events += decoder.feed(body[position:])
    assert events == whole
    assert any("☕" in e.data for e in events)


# --- tool calls


def test_tool_calls_assembled_from_fragments_by_index() -> None:
    assembler = ToolCallAssembler()
    assembler.add(ToolCallDelta(0, id="call_a", name="get_time"))
    assembler.add(ToolCallDelta(1, id="call_b", name="calculate", arguments='{"expr'))
    for piece in ['{"time', 'zone": "Asia/', 'Tokyo"}']:
        assembler.add(ToolCallDelta(0, arguments=piece))
    assembler.add(ToolCallDelta(1, arguments='ession": "12*7"}'))
    assert assembler.complete() == [
        ToolCall("call_a", "get_time", {"timezone": "Asia/Tokyo"}),
        ToolCall("call_b", "calculate", {"expression": "12*7"}),
    ]


def test_tool_call_without_arguments_is_an_empty_object() -> None:
    assembler = ToolCallAssembler()
    assembler.add(ToolCallDelta(0, name="system_status"))
    assert assembler.complete() == [ToolCall("call_0", "system_status", {})]


@pytest.mark.parametrize(
    ("delta", "message"),
    [
        (ToolCallDelta(0, arguments="{}"), "no function name"),
        (ToolCallDelta(0, name="calc", arguments='{"a": '), "invalid JSON arguments"),
        (ToolCallDelta(0, name="calc", arguments="[1, 2]"), "not a JSON object"),
    ],
)
def test_tool_call_errors(delta: ToolCallDelta, message: str) -> None:
    assembler = ToolCallAssembler()
    assembler.add(delta)
    with pytest.raises(ToolCallError, match=message):
        assembler.complete()


# --- OpenAI format


def _items(name: str) -> list:
    items = []
    for event in SseDecoder().feed((DATA / name).read_bytes()):
        if event.data != "[DONE]":
            items += parse_chunk(event.data)
    return items


def test_openai_text_recording() -> None:
    items = _items("openai_text.sse")
    text = "".join(i.text for i in items if isinstance(i, TextDelta))
    assert text == "The capital of France is Paris. It's known for the Eiffel Tower."
    assert items[-2:] == [Finish("stop"), Usage(24, 15)]


def test_openai_fragmented_tool_calls_recording() -> None:
    assembler = ToolCallAssembler()
    items = _items("openai_tool_calls.sse")
    for item in items:
        if isinstance(item, ToolCallDelta):
            assembler.add(item)
    assert [(c.name, c.arguments) for c in assembler.complete()] == [
        ("get_time", {"timezone": "Asia/Tokyo"}),
        ("calculate", {"expression": "12*7"}),
    ]
    assert Finish("tool_calls") in items


def test_stream_error_and_malformed_chunks() -> None:
    with pytest.raises(StreamError, match="server_error"):
        parse_chunk('{"error": {"message": "boom", "type": "server_error"}}')
    with pytest.raises(MalformedChunk, match="not JSON"):
        parse_chunk('{"choices": [')
    with pytest.raises(MalformedChunk, match="not a JSON object"):
        parse_chunk("[1]")
    assert parse_chunk('{"choices": [], "usage": null}') == []


def test_error_bodies_of_each_server() -> None:
    def message(name: str, status: int) -> str:
        return error_message(status, "Reason", (DATA / name).read_bytes())

    assert "Incorrect API key" in message("openai_error_401.json", 401)
    assert message("openai_error_401.json", 401).startswith("HTTP 401 Reason: ")
    assert 'model "llama3.9" not found' in message("ollama_error_404.json", 404)
    assert "CUDA out of memory" in message("vllm_error_500.json", 500)
    assert "Loading model" in message("llamacpp_error_503.json", 503)
    assert error_message(502, "Bad Gateway", b"<html>oops</html>") == "HTTP 502 Bad Gateway: <html>oops</html>"


def test_request_body_carries_tools_options_and_history() -> None:
    request = GenerationRequest(
        messages=(
            Message("user", "time in Tokyo?"),
            Message("assistant", tool_calls=(ToolCall("c1", "get_time", {"timezone": "Asia/Tokyo"}),)),
            Message("tool", '{"time": "12:00"}', tool_call_id="c1", name="get_time"),
        ),
        tools=(Tool("get_time", "Tell the time", {"type": "object", "properties": {}}),),
        temperature=0.2,
        max_tokens=50,
    )
    body = request_body(request, "llama3.2")
    assert body["model"] == "llama3.2" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["tools"][0]["function"]["name"] == "get_time"
    assert body["temperature"] == pytest.approx(0.2) and body["max_tokens"] == 50
    call = body["messages"][1]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {"timezone": "Asia/Tokyo"}
    assert body["messages"][2] == {
        "role": "tool",
        "content": '{"time": "12:00"}',
        "tool_call_id": "c1",
        "name": "get_time",
    }


# --- request checks


def _start(**fields) -> llm_pb2.GenerateStart:  # type: ignore[no-untyped-def]
    fields.setdefault("messages", [llm_pb2.ChatMessage(role=llm_pb2.ROLE_USER, content="hi")])
    return llm_pb2.GenerateStart(**fields)


def test_valid_start() -> None:
    tool = llm_pb2.ToolSpec(
        name="calculate", parameters_json_schema='{"type": "object", "properties": {"expression": {"type": "string"}}}'
    )
    request = from_start(_start(tools=[tool], options=llm_pb2.GenerateOptions(temperature=0.5, max_tokens=9)))
    assert request.messages == (Message("user", "hi"),)
    assert request.tools[0].parameters["properties"]["expression"] == {"type": "string"}
    assert request.temperature == 0.5 and request.max_tokens == 9


@pytest.mark.parametrize(
    ("start", "reason"),
    [
        (llm_pb2.GenerateStart(), "messages is empty"),
        (_start(messages=[llm_pb2.ChatMessage(content="x")]), "role is unspecified"),
        (_start(messages=[llm_pb2.ChatMessage(role=llm_pb2.ROLE_TOOL, content="x")]), "without tool_call_id"),
        (_start(tools=[llm_pb2.ToolSpec(name="bad name")]), "must be 1-64 letters"),
        (_start(tools=[llm_pb2.ToolSpec(name="t"), llm_pb2.ToolSpec(name="t")]), "given twice"),
        (_start(tools=[llm_pb2.ToolSpec(name="t", parameters_json_schema="{nope")]), "not valid JSON"),
        (_start(tools=[llm_pb2.ToolSpec(name="t", parameters_json_schema='{"type": 5}')]), "not a valid JSON Schema"),
        (
            _start(tools=[llm_pb2.ToolSpec(name="t", parameters_json_schema='{"type": "string"}')]),
            "must describe an object",
        ),
        (_start(options=llm_pb2.GenerateOptions(temperature=3)), "temperature"),
    ],
)
def test_invalid_starts(start: llm_pb2.GenerateStart, reason: str) -> None:
    # Twice: the second time, a tool schema's verdict comes from the cache of checked schemas.
    for _ in range(2):
        with pytest.raises(InvalidRequest, match=reason):
            from_start(start)
