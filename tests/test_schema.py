from coda import schema
from coda.v1 import events_pb2


def test_type_names_are_derived_from_the_oneof() -> None:
    assert schema.TYPE_BY_FIELD["llm_token"] == "llm.token"
    assert schema.TYPE_BY_FIELD["voice_stt_partial"] == "voice.stt_partial"
    assert schema.TYPE_BY_FIELD["tool_call_started"] == "tool.call_started"
    assert set(schema.FAMILIES) >= {
        "system",
        "component",
        "conversation",
        "voice",
        "llm",
        "memory",
        "tool",
        "personality",
        "trace",
    }
    assert len(set(schema.EVENT_TYPES)) == len(schema.EVENT_TYPES)


def test_new_event_fills_the_envelope() -> None:
    event = schema.new_event("llm", events_pb2.LlmToken(text="hi", index=3), session_id="s1", correlation_id="c1")
    assert schema.event_type(event) == "llm.token"
    assert event.id and event.time.seconds > 0
    assert (event.source, event.session_id, event.correlation_id) == ("llm", "s1", "c1")
    assert event.llm_token.text == "hi"


def test_new_event_rejects_non_payloads() -> None:
    import pytest

    with pytest.raises(TypeError, match="not an Event payload"):
        schema.new_event("x", events_pb2.EventBatch())


def test_event_without_payload_has_no_type() -> None:
    assert schema.event_type(events_pb2.Event()) == ""
