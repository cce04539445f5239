"""The Assistant service end to end: real bus, memory, tools, llm and voice on a loopback host."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from assistant_helpers import (
    Request,
    answer_text,
    converser,
    final_turn,
    open_request,
    replay_provider_env,
    silence,
    sse_text,
    sse_tool_call,
    synthesize,
    text_request,
    types_of,
)
from conftest import WITH_LOCAL_MODEL, make_config, running_host

from coda.bus.client import subscribe
from coda.config import Config
from coda.llm.replay import ReplayServer, Reply
from coda.runtime.host import Host
from coda.tools.timer_store import StoredTimer, TimerStore
from coda.v1 import assistant_pb2, assistant_pb2_grpc, events_pb2, voice_pb2


def assistant_config(tmp_path: Path, **env: str) -> Config:
    return make_config(tmp_path, CODA_ASSISTANT__SESSIONS_PATH=str(tmp_path / "sessions.db"), **env)


@pytest.fixture
async def host(tmp_path: Path) -> AsyncIterator[Host]:
    async with running_host(assistant_config(tmp_path)) as started:
        yield started


@pytest.fixture
async def channel(host: Host) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(host.address) as opened:
        yield opened


async def bus_events(channel: grpc.aio.Channel, session_id: str, until_turn: str) -> list[events_pb2.Event]:
    """Everything the bus holds for a session, up to the conversation.turn of `until_turn`."""
    got: list[events_pb2.Event] = []

    async def read() -> None:
        async for response in subscribe(channel, ["*"], session_id=session_id, after_seq=0):
            for event in response.batch.events:
                got.append(event)
                if event.HasField("conversation_turn") and event.conversation_turn.turn_id == until_turn:
                    return

    await asyncio.wait_for(read(), 20)
    return got


def in_order(types: list[str], *expected: str) -> bool:
    """`expected` occurs in `types` as a subsequence (each one after the previous one)."""
    rest = iter(types)
    return all(any(t == wanted for t in rest) for wanted in expected)


async def test_typed_turn_with_a_tool_streams_every_step_and_publishes_it(channel: grpc.aio.Channel) -> None:
    chat = converser(channel)
    info = await chat.open(open_request(user_id="ann"))
    assert info.session_id and not info.resumed and info.settings.traits["warmth"] > 0
    events = await chat.turn("what time is it in Tokyo", turn_id="turn-tokyo")
    types = types_of(events)
    assert in_order(
        types,
        "memory.retrieved",
        "llm.request_started",
        "llm.tool_call_requested",
        "tool.call_started",
        "tool.result",
        "llm.token",
        "llm.finished",
        "conversation.turn",
    ), types
    assert next(e.tool_result for e in events if e.HasField("tool_result")).name == "get_time"
    assert "Tokyo" in answer_text(events)
    turn = final_turn(events)
    assert turn.user_text == "what time is it in Tokyo" and turn.provider == "embedded"
    assert turn.timings.first_token_ms > 0 and turn.timings.total_ms >= turn.timings.first_token_ms
    assert {e.correlation_id for e in events} == {"turn-tokyo"}
    spans = {e.trace_span.name for e in events if e.HasField("trace_span")}
    assert {"memory", "llm", "tool:get_time", "first_token", "total"} <= spans

    # The bus has the same turn: the components' own events and the assistant's, in order, same ids.
    published = [
        e for e in await bus_events(channel, info.session_id, "turn-tokyo") if e.correlation_id == "turn-tokyo"
    ]
    bus_types = types_of(published)
    assert in_order(bus_types, "llm.tool_call_requested", "tool.call_started", "tool.result", "llm.token"), bus_types
    assert bus_types[-1] == "conversation.turn"
    assert {"llm", "tools", "assistant"} <= {e.source for e in published}
    assert {e.trace_span.name for e in published if e.HasField("trace_span")} >= {"first_token", "total"}
    await chat.close()


async def test_remembered_in_one_session_recalled_in_another(channel: grpc.aio.Channel) -> None:
    first = converser(channel)
    session_a = await first.open(open_request(user_id="cleo"))
    stored = await first.turn("remember that my favourite colour is green")
    assert any(e.HasField("tool_result") and e.tool_result.name == "remember" for e in stored)
    ended = await first.close()
    assert ended[-1].conversation_ended.turns == 1

    second = converser(channel)
    session_b = await second.open(open_request(user_id="cleo"))
    assert session_b.session_id != session_a.session_id
    events = await second.turn("what is my favourite colour")
    assert "green" in final_turn(events).assistant_text.lower()
    await second.close()

    stub = assistant_pb2_grpc.AssistantStub(channel)
    listed = await stub.ListSessions(assistant_pb2.ListSessionsRequest(user_id="cleo"))
    assert [s.session_id for s in listed.sessions] == [session_b.session_id, session_a.session_id]
    assert listed.sessions[1].last_user_text == "remember that my favourite colour is green"
    got = await stub.GetSession(assistant_pb2.GetSessionRequest(session_id=session_a.session_id))
    assert [t.user_text for t in got.session.history] == ["remember that my favourite colour is green"]
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.GetSession(assistant_pb2.GetSessionRequest(session_id="s-none"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_spoken_turn_transcribes_answers_and_speaks(channel: grpc.aio.Channel) -> None:
    speech = await synthesize(channel, "what time is it in Tokyo", sample_rate=16000)
    chat = converser(channel)
    info = await chat.open(open_request(voice_output=True))
    audio_format = voice_pb2.AudioFormat(encoding=voice_pb2.AUDIO_ENCODING_PCM16, sample_rate=16000, channels=1)
    await chat.send(Request(audio_start=assistant_pb2.AudioInputStart(format=audio_format, turn_id="spoken")))
    audio = silence(0.3) + speech + silence(1.2)
    for offset in range(0, len(audio), 3200):
        await chat.send(Request(audio_chunk=assistant_pb2.AudioInputChunk(audio=audio[offset : offset + 3200])))
    await chat.send(Request(audio_end=assistant_pb2.AudioInputEnd()))
    events = await chat.read_until(lambda e: e.HasField("conversation_turn"), timeout=60)
    types = types_of(events)
    assert in_order(types, "voice.stt_started", "voice.vad_speech_started", "voice.stt_final", "llm.token"), types
    assert in_order(types, "llm.token", "voice.tts_started", "voice.tts_audio", "voice.tts_finished"), types
    final = next(e.voice_stt_final for e in events if e.HasField("voice_stt_final"))
    turn = final_turn(events)
    assert final.text and turn.user_text == final.text and turn.assistant_text
    audio_events = [e.voice_tts_audio for e in events if e.HasField("voice_tts_audio")]
    assert all(a.pcm for a in audio_events) and audio_events[0].text
    assert turn.timings.first_audio_ms > 0
    assert {"stt", "first_token", "first_audio", "total"} <= {
        e.trace_span.name for e in events if e.HasField("trace_span")
    }
    # On the bus, audio chunks are metadata only.
    published = await bus_events(channel, info.session_id, "spoken")
    bus_audio = [e.voice_tts_audio for e in published if e.HasField("voice_tts_audio")]
    assert bus_audio and not any(a.pcm for a in bus_audio)
    await chat.close()


async def test_session_resumes_after_the_client_drops(host: Host) -> None:
    async with grpc.aio.insecure_channel(host.address) as channel:
        chat = converser(channel)
        info = await chat.open(open_request(user_id="dan"))
        await chat.turn("what is 12 times 12")
        chat.call.cancel()  # the client goes away without closing
    async with grpc.aio.insecure_channel(host.address) as channel:
        again = converser(channel)
        resumed = await again.open(open_request(session_id=info.session_id))
        assert resumed.resumed and resumed.user_id == "dan"
        assert [t.user_text for t in resumed.history] == ["what is 12 times 12"]
        assert "144" in resumed.history[0].assistant_text
        events = await again.turn("what time is it in Paris")
        assert "Paris" in final_turn(events).assistant_text
        await again.close()
        with pytest.raises(grpc.aio.AioRpcError) as other:
            stranger = converser(channel)
            await stranger.open(open_request(session_id=info.session_id, user_id="eve"))
        assert other.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_refused_open_reports_its_status_to_a_client_still_writing(channel: grpc.aio.Channel) -> None:
    """open and the first text sent together (as the bridge, the OpenAI API and Wyoming do): the
    refusal must say why, not INTERNAL "Internal error from Core" (grpc/grpc#36066)."""
    stub = assistant_pb2_grpc.AssistantStub(channel)
    for _ in range(40):
        requests = [open_request(session_id="../../etc/passwd"), text_request("hello")]
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _response in stub.Converse(iter(requests)):
                pass
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()


async def test_invalid_messages_get_clear_errors(channel: grpc.aio.Channel) -> None:
    early = converser(channel)
    await early.send(text_request("hello"))
    with pytest.raises(grpc.aio.AioRpcError) as before_open:
        await early.call.read()
    assert before_open.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "open" in before_open.value.details()

    bad_open = converser(channel)
    await bad_open.send(open_request(traits={"humor": 3.0}))
    with pytest.raises(grpc.aio.AioRpcError) as bad_traits:
        await bad_open.call.read()
    assert bad_traits.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "humor" in bad_traits.value.details()

    # A session id the bus would refuse every event of is refused at open, with the rule.
    for bad_id in ("../../etc/passwd", "a'; DROP TABLE sessions;--"):
        bad_session = converser(channel)
        await bad_session.send(open_request(session_id=bad_id))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await bad_session.call.read()
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "A-Za-z0-9._:-" in (refused.value.details() or "")

    chat = converser(channel)
    await chat.open()
    errors = []
    for request in (
        Request(audio_chunk=assistant_pb2.AudioInputChunk(audio=b"\0\0")),
        Request(),
        text_request("   "),
        Request(settings=events_pb2.ConversationSettings(traits={"charm": 0.5})),
        Request(audio_start=assistant_pb2.AudioInputStart()),
    ):
        await chat.send(request)
        errors += await chat.read_until(lambda e: e.HasField("system_error"))
    messages = [e.system_error.message for e in errors]
    assert "audio_chunk without an open audio input" in messages[0]
    assert "unknown request" in messages[1] and "empty text" in messages[2] and "charm" in messages[3]
    assert "format" in messages[4]
    assert all(json.loads(e.system_error.details)["code"] == "INVALID_ARGUMENT" for e in errors)
    # The stream is still usable.
    assert "Tokyo" in final_turn(await chat.turn("what time is it in Tokyo")).assistant_text
    await chat.close()


async def test_settings_and_personality_changes_are_published(channel: grpc.aio.Channel) -> None:
    chat = converser(channel)
    info = await chat.open(open_request(user_id="fay"))
    change = events_pb2.ConversationSettings(language="en", persona="Be brief.", traits={"humor": 0.9})
    await chat.send(Request(settings=change))
    events = await chat.read_until(lambda e: e.HasField("personality_updated"))
    settings = next(e.conversation_settings for e in events if e.HasField("conversation_settings"))
    assert settings.persona == "Be brief." and settings.traits["humor"] == pytest.approx(0.9)
    assert settings.traits["warmth"] > 0, "untouched traits are kept"
    changes = events[-1].personality_updated.changes
    assert [(c.trait, round(c.current, 1)) for c in changes] == [("humor", 0.9)]
    stub = assistant_pb2_grpc.AssistantStub(channel)
    got = await stub.GetSession(assistant_pb2.GetSessionRequest(session_id=info.session_id))
    assert got.session.settings.persona == "Be brief."
    await chat.close()


# -- with a scripted model server in front of the embedded agent --------------------------------


LONG_ANSWER = [f" word{i}." if i % 8 == 7 else f" word{i}" for i in range(400)]


async def test_barge_in_stops_a_long_answer_within_one_chunk(tmp_path: Path) -> None:
    async with ReplayServer() as replay:
        slow = Reply(body=sse_text(LONG_ANSWER), chunk_delay=0.03)
        replay.queue(slow, Reply(body=sse_text(LONG_ANSWER), chunk_delay=0.03), Reply(body=sse_text(["Sure."])))
        config = assistant_config(tmp_path, **replay_provider_env(replay.base_url))
        async with running_host(config) as started, grpc.aio.insecure_channel(started.address) as channel:
            chat = converser(channel)
            info = await chat.open()

            # 1. CancelTurn during the answer.
            await chat.send(text_request("tell me a long story", turn_id="long-1"))
            before = await chat.read_until(lambda e: e.HasField("llm_token") and e.llm_token.index >= 5)
            await chat.send(Request(cancel=assistant_pb2.CancelTurn(turn_id="long-1")))
            after = await chat.read_until(lambda e: e.HasField("conversation_turn"))
            cut = types_of(after).index("conversation.interrupted")
            assert types_of(after[:cut]).count("llm.token") <= 1, "stops within one chunk"
            assert "llm.token" not in types_of(after[cut:])
            interrupted = after[cut].conversation_interrupted
            assert interrupted.reason == "cancel" and interrupted.spoken_text.startswith("word0 word1")
            assert final_turn(after).interrupted
            await asyncio.wait_for(replay.exchanges[0].done.wait(), 10)
            assert replay.exchanges[0].client_closed, "the model server's stream was cancelled"
            assert len(before) < len(LONG_ANSWER)

            # 2. A new text turn during the answer interrupts it ("new_turn") and is answered.
            await chat.send(text_request("another long story", turn_id="long-2"))
            await chat.read_until(lambda e: e.HasField("llm_token") and e.llm_token.index >= 3)
            await chat.send(text_request("stop, just say sure", turn_id="short"))
            events = await chat.read_until(
                lambda e: e.HasField("conversation_turn") and e.conversation_turn.turn_id == "short"
            )
            interruption = next(e.conversation_interrupted for e in events if e.HasField("conversation_interrupted"))
            assert interruption.reason == "new_turn" and interruption.turn_id == "long-2"
            assert final_turn(events).assistant_text == "Sure."

            history = (
                await assistant_pb2_grpc.AssistantStub(channel).GetSession(
                    assistant_pb2.GetSessionRequest(session_id=info.session_id)
                )
            ).session.history
            assert [(t.turn_id, t.interrupted) for t in history] == [
                ("long-1", True),
                ("long-2", True),
                ("short", False),
            ]
            assert history[0].assistant_text == interrupted.spoken_text
            await chat.close()


async def test_speaking_during_an_answer_barges_in(tmp_path: Path) -> None:
    async with ReplayServer() as replay:
        replay.queue(Reply(body=sse_text(LONG_ANSWER), chunk_delay=0.03), Reply(body=sse_text(["Okay."])))
        config = assistant_config(tmp_path, **replay_provider_env(replay.base_url))
        async with running_host(config) as started, grpc.aio.insecure_channel(started.address) as channel:
            speech = await synthesize(channel, "stop please", sample_rate=16000)
            chat = converser(channel)
            await chat.open()
            await chat.send(text_request("tell me a long story", turn_id="story"))
            await chat.read_until(lambda e: e.HasField("llm_token") and e.llm_token.index >= 3)
            audio_format = voice_pb2.AudioFormat(encoding=voice_pb2.AUDIO_ENCODING_PCM16, sample_rate=16000, channels=1)
            await chat.send(Request(audio_start=assistant_pb2.AudioInputStart(format=audio_format, turn_id="barge")))
            audio = silence(0.2) + speech + silence(1.2)
            for offset in range(0, len(audio), 3200):
                await chat.send(Request(audio_chunk=assistant_pb2.AudioInputChunk(audio=audio[offset : offset + 3200])))
            await chat.send(Request(audio_end=assistant_pb2.AudioInputEnd()))
            events = await chat.read_until(
                lambda e: e.HasField("conversation_turn") and e.conversation_turn.turn_id == "barge", timeout=60
            )
            types = types_of(events)
            assert in_order(types, "voice.vad_speech_started", "conversation.interrupted", "voice.stt_final"), types
            interrupted = next(e.conversation_interrupted for e in events if e.HasField("conversation_interrupted"))
            assert interrupted.reason == "barge_in" and interrupted.turn_id == "story"
            cut = types.index("conversation.interrupted")
            story_tokens_after = [e for e in events[cut:] if e.HasField("llm_token") and e.correlation_id == "story"]
            assert not story_tokens_after
            await chat.close()


async def test_model_failing_mid_stream_reports_then_falls_back(tmp_path: Path) -> None:
    async with ReplayServer() as replay:
        replay.queue(Reply(body=sse_text(LONG_ANSWER), drop_after=6))
        env = replay_provider_env(replay.base_url, CODA_LLM__BREAKER_FAIL_MAX="1")
        async with (
            running_host(assistant_config(tmp_path, **env)) as started,
            grpc.aio.insecure_channel(started.address) as channel,
        ):
            chat = converser(channel)
            await chat.open()
            failed = await chat.turn("tell me a story")
            error = next(e.llm_error for e in failed if e.HasField("llm_error"))
            assert error.code == "UNAVAILABLE" and error.message
            turn = final_turn(failed)
            assert turn.assistant_text.startswith("word0") and not turn.interrupted

            # The breaker is open now: the next turn skips the server and the embedded agent answers.
            events = await chat.turn("what time is it in Tokyo")
            fallback = next(e.llm_provider_fallback for e in events if e.HasField("llm_provider_fallback"))
            assert fallback.from_provider == "replay" and fallback.to_provider == "embedded" and fallback.reason
            assert "Tokyo" in final_turn(events).assistant_text and final_turn(events).provider == "embedded"
            assert len(replay.exchanges) == 1
            await chat.close()


async def test_a_hanging_tool_times_out_and_the_turn_completes(tmp_path: Path) -> None:
    async with ReplayServer() as replay:
        replay.queue(
            Reply(body=sse_tool_call("slow_lookup", {"word": "petrichor"}, call_id="call_slow")),
            Reply(body=sse_text(["The", " dictionary", " did", " not", " answer", " in", " time."])),
        )
        env = replay_provider_env(
            replay.base_url,
            CODA_TOOLS__PLUGINS='["assistant_slow_tool:slow_lookup"]',
            CODA_TOOLS__TIMEOUTS='{"slow_lookup": 0.5}',
        )
        async with (
            running_host(assistant_config(tmp_path, **env)) as started,
            grpc.aio.insecure_channel(started.address) as channel,
        ):
            chat = converser(channel)
            await chat.open()
            events = await chat.turn("what does petrichor mean")
            error = next(e.tool_error for e in events if e.HasField("tool_error"))
            assert error.call_id == "call_slow" and error.code == events_pb2.TOOL_ERROR_CODE_TIMEOUT
            assert final_turn(events).assistant_text == "The dictionary did not answer in time."
            tool_message = replay.exchanges[1].request["messages"][-1]
            assert tool_message["role"] == "tool" and tool_message["tool_call_id"] == "call_slow"
            assert json.loads(tool_message["content"])["code"] == "timeout"
            await chat.close()


# -- the embedded defaults: intent agent first, the bundled local model for the rest ---------------

SETUP_ADVICE = re.compile(r"coda\.toml|ollama|configure|\[llm|api key", re.IGNORECASE)


def answered_by(events: list[events_pb2.Event]) -> str:
    return [e.llm_finished.model for e in events if e.HasField("llm_finished")][-1]


async def test_the_local_model_answers_what_the_agent_defers_and_traits_shape_it(tmp_path: Path) -> None:
    async with (
        running_host(assistant_config(tmp_path, **WITH_LOCAL_MODEL)) as host,
        grpc.aio.insecure_channel(host.address) as channel,
    ):
        chat = converser(channel)
        await chat.open(open_request(user_id="nia"))
        # Chit-chat and general knowledge: the model, never setup advice.
        events = await chat.turn("hello there, how are you?", timeout=180)
        answer = final_turn(events).assistant_text
        assert answered_by(events) == "qwen2.5-coder-0.5b-instruct" and answer
        assert not SETUP_ADVICE.search(answer), answer
        events = await chat.turn("what is the capital of France?", timeout=120)
        assert "paris" in final_turn(events).assistant_text.lower()
        # Exact things stay with the agent and its tools, follow-ups included.
        events = await chat.turn("what is 12 times 7?", timeout=60)
        assert "84" in final_turn(events).assistant_text and answered_by(events) == "intent-agent"
        events = await chat.turn("now divide that by 4", timeout=60)
        assert "21" in final_turn(events).assistant_text
        # What Coda cannot do gets an honest no, not a made-up forecast.
        events = await chat.turn("will it rain tomorrow?", timeout=60)
        assert final_turn(events).assistant_text.startswith("Sorry, I can't check the weather")
        await chat.close()

        # Verbosity: a terse session hears at most two sentences, a chatty one more.
        lengths = {}
        for verbosity in (0.0, 1.0):
            chat = converser(channel)
            await chat.open(open_request(user_id="nia", traits={"verbosity": verbosity}))
            events = await chat.turn("do you have any tips for sleeping better?", timeout=240)
            answer = final_turn(events).assistant_text
            lengths[verbosity] = len(answer)
            if verbosity == 0.0:
                assert sum(len(s.split()) >= 3 for s in re.split(r"(?<=[.!?])\s+|\n+", answer)) <= 2, answer
            await chat.close()
        assert lengths[1.0] > 1.5 * lengths[0.0], lengths

        # Formality: a formal session hears no contractions, whatever the model wrote.
        chat = converser(channel)
        await chat.open(open_request(user_id="nia", traits={"formality": 1.0}))
        events = await chat.turn("hi! how are you doing today?", timeout=180)
        assert not re.search(r"\b\w+['\u2019](m|re|ve|ll|t)\b", final_turn(events).assistant_text, re.IGNORECASE)
        await chat.close()


COMPONENT_SOURCES = {"llm", "tools", "voice", "memory"}


async def test_component_events_keep_their_bus_id_on_converse(channel: grpc.aio.Channel) -> None:
    """A client reading Converse and the bus sees each component event once: under the same id in both."""
    chat = converser(channel)
    info = await chat.open(open_request(user_id="dee", voice_output=True))
    shown = await chat.turn("what is twelve times seven", turn_id="turn-ids")
    published = [e for e in await bus_events(channel, info.session_id, "turn-ids") if e.correlation_id == "turn-ids"]
    from_components = [e for e in shown if e.source in COMPONENT_SOURCES]
    assert {"llm.token", "tool.result", "memory.retrieved", "voice.tts_audio"} <= set(types_of(from_components))
    on_bus = {e.id: e for e in published}
    assert len(on_bus) == len(published)  # no id twice on the bus: the assistant does not republish them
    for event in from_components:
        assert event.id in on_bus, f"{types_of([event])[0]} {event.id} is not on the bus under that id"
        assert types_of([on_bus[event.id]]) == types_of([event])
    # And what the components published for the turn reaches Converse under the same ids.
    shown_ids = {e.id for e in shown}
    missing = [types_of([e])[0] for e in published if e.source in COMPONENT_SOURCES and e.id not in shown_ids]
    assert not missing, missing
    await chat.close()


async def test_a_timer_set_in_a_session_is_announced_and_spoken_there(channel: grpc.aio.Channel) -> None:
    chat = converser(channel)
    info = await chat.open(open_request(voice_output=True))
    events = await chat.turn("set a timer for 1 second called tea", turn_id="turn-timer")
    set_timer = next(e.tool_result for e in events if e.HasField("tool_result"))
    assert set_timer.name == "set_timer", set_timer
    timer_id = json.loads(set_timer.result_json)["timer_id"]
    # A second later, with no request from the client: the timer's event, the announcement, the speech
    # (on a slow machine it may come while the answer itself is still being spoken).
    seen = list(events)

    def spoken_announcement(event: events_pb2.Event) -> bool:
        return event.HasField("voice_tts_audio") and event.voice_tts_audio.text.startswith("Your timer is done")

    def complete(event: events_pb2.Event | None = None) -> bool:
        if event is not None:
            seen.append(event)
        return any(e.HasField("conversation_announcement") for e in seen) and any(map(spoken_announcement, seen))

    if not complete():
        await chat.read_until(complete, timeout=30)
    fired = next(e for e in seen if e.HasField("tool_timer_fired"))
    assert (fired.tool_timer_fired.timer_id, fired.tool_timer_fired.label) == (timer_id, "tea")
    announced = next(e for e in seen if e.HasField("conversation_announcement"))
    announcement = announced.conversation_announcement
    assert (announcement.reason, announcement.ref_id) == ("timer", timer_id)
    assert announcement.text == "Your timer is done: tea."
    for event in (fired, announced, next(filter(spoken_announcement, seen))):
        assert (event.session_id, event.correlation_id) == (info.session_id, "turn-timer")  # the turn that set it
    assert next(filter(spoken_announcement, seen)).voice_tts_audio.pcm
    # The bus has the timer's event and the announcement, each under the id Converse showed.
    published: set[str] = set()

    async def read_bus() -> None:
        async for response in subscribe(channel, ["tool.timer_fired", "conversation.announcement"], info.session_id, 0):
            published.update(e.id for e in response.batch.events)
            if len(published) >= 2:
                return

    await asyncio.wait_for(read_bus(), 20)
    assert published == {fired.id, announced.id}
    await chat.close()


async def test_a_timer_firing_during_a_spoken_answer_is_spoken_after_it(tmp_path: Path) -> None:
    story = [f"{word}{' ' if i % 6 else '. '}" for i, word in enumerate(["Once"] + ["upon"] * 29)]
    async with ReplayServer() as replay:
        # About 3 s of answer: the 1 s timer goes off while it is being spoken.
        replay.queue(
            Reply(body=sse_tool_call("set_timer", {"seconds": 1, "label": "tea"})),
            Reply(body=sse_text(["Timer", " set."])),
            Reply(body=sse_text(story), chunk_delay=0.1),
        )
        config = assistant_config(tmp_path, **replay_provider_env(replay.base_url))
        async with running_host(config) as started, grpc.aio.insecure_channel(started.address) as channel:
            chat = converser(channel)
            await chat.open(open_request(voice_output=True))
            await chat.turn("set a timer for 1 second called tea", turn_id="turn-timer")
            await chat.send(text_request("tell me a story", turn_id="story"))

            def spoken_announcement(event: events_pb2.Event) -> bool:
                return event.HasField("voice_tts_audio") and event.voice_tts_audio.text.startswith("Your timer")

            events = await chat.read_until(spoken_announcement, timeout=30)
            kinds = types_of(events)
            assert "conversation.announcement" in kinds
            assert "conversation.turn" in kinds, "the announcement was spoken over the answer"
            # The announcement's text is shown at once, during the answer...
            assert kinds.index("conversation.announcement") < kinds.index("conversation.turn")
            # ...and its speech follows all of the answer's.
            answer_audio = [
                i for i, e in enumerate(events) if e.HasField("voice_tts_audio") and e.correlation_id == "story"
            ]
            assert answer_audio and max(answer_audio) < len(events) - 1
            await chat.close()


async def test_a_timer_that_goes_off_while_the_page_is_away_is_announced_when_it_comes_back(
    channel: grpc.aio.Channel,
) -> None:
    chat = converser(channel)
    info = await chat.open(open_request())
    await chat.turn("set a timer for 1 second called tea")
    await chat.close()  # gone before it goes off
    await asyncio.sleep(2.5)
    back = converser(channel)
    await back.open(open_request(session_id=info.session_id))
    heard = await back.read_until(lambda e: e.HasField("conversation_announcement"), timeout=30)
    assert heard[-1].conversation_announcement.text == "Your timer is done: tea."
    await back.close()


async def test_a_timer_is_announced_only_in_its_own_session(channel: grpc.aio.Channel) -> None:
    setter, other = converser(channel), converser(channel)
    await setter.open(open_request())
    await other.open(open_request())
    heard = await setter.turn("set a timer for 1 second")
    if not any(e.HasField("conversation_announcement") for e in heard):  # not while the turn ran
        heard += await setter.read_until(lambda e: e.HasField("conversation_announcement"), timeout=30)
    announced = next(e for e in heard if e.HasField("conversation_announcement"))
    assert announced.conversation_announcement.text == "Your timer is done."
    assert not any(e.HasField("voice_tts_audio") for e in heard)  # voice output is off
    # The other session heard nothing: its next turn's events are its own.
    events = await other.turn("hello")
    assert not any(e.HasField("conversation_announcement") or e.HasField("tool_timer_fired") for e in events)
    await setter.close()
    await other.close()


async def test_a_timer_that_came_due_while_coda_was_down_is_announced_after_the_restart(tmp_path: Path) -> None:
    """The tools component sets kept timers again as it starts, and one already due goes off at once:
    possibly before the assistant follows the bus. It must still be announced to its session."""
    timers_path = str(tmp_path / "timers.db")
    store = TimerStore(timers_path)
    store.save(StoredTimer("t-late", "take the bread out", "s-late", "c-late", 600.0, time.time() - 60))
    store.close()
    async with (
        running_host(assistant_config(tmp_path, CODA_TOOLS__TIMERS_PATH=timers_path)) as host,
        grpc.aio.insecure_channel(host.address) as channel,
    ):
        back = converser(channel)
        await back.open(open_request(session_id="s-late"))
        heard = await back.read_until(lambda e: e.HasField("conversation_announcement"), timeout=30)
        assert heard[-1].conversation_announcement.text == "Your timer is done: take the bread out."
        await back.close()
