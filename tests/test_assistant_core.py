"""The assistant's pure core: personality, settings, sessions, prompts, and the turn logic.

The turn tests give `Turn` in-process stand-ins for the four components (the ports' shape); the
real components over gRPC are exercised in test_assistant_service.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from coda.assistant.announcements import MISSED_KEPT_SECONDS, MISSED_PER_SESSION, Attached, timer_announcement
from coda.assistant.personality import (
    FormalRegister,
    TraitError,
    answer_token_limit,
    guidance,
    memory_note,
    system_prompt,
    trait_changes,
    validate_traits,
)
from coda.assistant.ports import EngineError
from coda.assistant.prompt import conversation_messages, tool_error_content
from coda.assistant.sessions import SessionStore, check_session_id
from coda.assistant.settings import SettingsError, apply_settings, default_settings
from coda.assistant.speech import speakable
from coda.assistant.turn import AudioInput, ToolCatalog, Turn
from coda.config import AssistantConfig
from coda.llm.providers.embedded import CANNED_MODEL, pieces
from coda.schema import event_type, session_id_problem
from coda.v1 import events_pb2, llm_pb2, memory_pb2, tools_pb2, voice_pb2

# -- personality and settings -----------------------------------------------------------------


def test_traits_pick_a_sentence_by_third() -> None:
    assert guidance({"verbosity": 0.1}) == ["Keep answers very short: one or two sentences."]
    assert guidance({"verbosity": 0.5}) == ["Keep answers concise."]
    assert guidance({"verbosity": 0.9}) == ["Give thorough answers with explanation and detail."]
    assert guidance({}) == []


def test_system_prompt_carries_persona_style_and_language_and_memories_come_last() -> None:
    prompt = system_prompt("You are Coda.", "Talk like a pirate.", {"humor": 0.9}, "fr")
    assert prompt.startswith("You are Coda.")
    assert "Talk like a pirate." in prompt
    assert "playful" in prompt
    assert "'fr'" in prompt
    memories = [memory_pb2.ScoredItem(item=memory_pb2.MemoryItem(text="the user likes green"), score=0.9)]
    older = memory_pb2.Turn(user_text="one", assistant_text="two")
    messages = conversation_messages(prompt, [older], "what colour?", memory_note(memories))
    # Recalled memories change every turn: they sit after the history, so the prefix stays cacheable.
    assert [m.content for m in messages[:3]] == [prompt, "one", "two"]
    assert "- the user likes green" in messages[-2].content and messages[-2].role == llm_pb2.ROLE_SYSTEM
    assert messages[-1].content == "what colour?"
    assert memory_note([]) == "" and len(conversation_messages(prompt, [], "hi")) == 2


@pytest.mark.parametrize(("traits", "message"), [({"charm": 0.5}, "unknown"), ({"humor": 1.5}, "0..1")])
def test_invalid_traits_are_named(traits: dict[str, float], message: str) -> None:
    with pytest.raises(TraitError, match=message):
        validate_traits(traits)


def test_trait_changes_list_only_what_moved() -> None:
    changes = trait_changes({"warmth": 0.5, "humor": 0.2}, {"warmth": 0.5, "humor": 0.8})
    assert [(c.trait, round(c.previous, 2), round(c.current, 2)) for c in changes] == [("humor", 0.2, 0.8)]


def test_settings_merge_and_reject_without_half_applying() -> None:
    current = default_settings(AssistantConfig())
    updated, changes = apply_settings(
        current, events_pb2.ConversationSettings(voice_output=True, language="de", traits={"humor": 0.9})
    )
    assert updated.voice_output and updated.language == "de"
    assert updated.traits["humor"] == pytest.approx(0.9) and "warmth" in updated.traits
    assert [c.trait for c in changes] == ["humor"]
    again, _ = apply_settings(updated, events_pb2.ConversationSettings(voice_output=True, persona="terse"))
    assert again.language == "de" and again.persona == "terse"
    with pytest.raises(SettingsError, match=r"0\.\.1"):
        apply_settings(updated, events_pb2.ConversationSettings(language="fr", traits={"humor": 2.0}))
    assert updated.language == "de"


@given(st.dictionaries(st.sampled_from(["warmth", "humor", "verbosity", "formality"]), st.floats(0, 1)))
def test_any_valid_traits_apply_and_are_reported(traits: dict[str, float]) -> None:
    current = default_settings(AssistantConfig())
    updated, changes = apply_settings(current, events_pb2.ConversationSettings(traits=traits))
    for name, value in traits.items():
        assert updated.traits[name] == pytest.approx(value, abs=1e-6)
    changed = {c.trait for c in changes}
    assert changed <= set(traits)
    assert all(abs(current.traits[n] - updated.traits[n]) > 1e-6 for n in changed)


# -- sessions, prompts, speech ----------------------------------------------------------------


def test_session_store_persists_and_lists_most_recent_first(tmp_path: Path) -> None:
    path = str(tmp_path / "s" / "sessions.db")
    store = SessionStore(path)
    settings = events_pb2.ConversationSettings(language="en")
    first = store.create("s-1", "ann", settings)
    store.create("s-2", "bob", settings)
    store.create("s-3", "ann", settings)
    store.record_turn(first, memory_pb2.Turn(turn_id="t1", user_text="hello", assistant_text="hi"))
    store.close()
    reopened = SessionStore(path)
    assert [s.session_id for s in reopened.list("ann")] == ["s-1", "s-3"]
    session = reopened.get("s-1")
    assert session is not None and session.turns == 1 and session.last_user_text == "hello"
    assert session.settings.language == "en"
    assert reopened.get("nope") is None


def test_session_store_keeps_open_sessions_and_a_bounded_number_of_idle_ones(tmp_path: Path) -> None:
    store = SessionStore(str(tmp_path / "sessions.db"), idle_kept=2)
    settings = events_pb2.ConversationSettings()
    held = store.create("s-held", "ann", settings)
    store.hold(held)
    for i in range(10):
        session = store.create(f"s-{i}", "ann", settings)
        store.hold(session)
        store.record_turn(session, memory_pb2.Turn(turn_id=f"t{i}", user_text=f"hello {i}", assistant_text="hi"))
        store.release(session)
    assert store.in_memory == 3  # the open one and the two most recently used
    assert store.get("s-held") is held, "an open session is one object for every conversation"
    again = store.get("s-0")  # forgotten here, read back from the file
    assert again is not None and again.turns == 1 and again.last_user_text == "hello 0"
    assert store.in_memory == 3
    store.hold(held)
    store.release(held)
    assert store.get("s-held") is held, "still held by its first conversation"
    store.release(held)
    for i in range(5, 10):
        store.get(f"s-{i}")
    assert store.in_memory == 2


def test_session_store_forgets_sessions_unused_for_keep_days(tmp_path: Path) -> None:
    now = [1_000_000.0]
    path = str(tmp_path / "sessions.db")
    day = 86400.0
    store = SessionStore(path, keep_days=30, clock=lambda: now[0])
    settings = events_pb2.ConversationSettings()
    store.create("s-old", "ann", settings)
    held = store.create("s-held", "ann", settings)
    store.hold(held)
    now[0] += 20 * day
    recent = store.create("s-recent", "ann", settings)
    store.record_turn(recent, memory_pb2.Turn(turn_id="t1", user_text="hi", assistant_text="hello"))
    now[0] += 15 * day  # s-old and s-held unused for 35 days, s-recent for 15
    assert store.prune() == 1, "an old session a conversation still holds stays"
    assert store.get("s-old") is None and store.get("s-held") is held and store.get("s-recent") is recent
    assert [s.session_id for s in store.list()] == ["s-recent", "s-held"]
    store.release(held)
    store.close()
    # At start, and then hourly as sessions are created: nothing to call by hand.
    now[0] += 40 * day
    reopened = SessionStore(path, keep_days=30, clock=lambda: now[0])
    assert reopened.list() == []
    reopened.create("s-new", "ann", settings)
    now[0] += 31 * day
    reopened.create("s-newer", "ann", settings)
    assert [s.session_id for s in reopened.list()] == ["s-newer"]
    forever = SessionStore(str(tmp_path / "forever.db"), clock=lambda: now[0])
    forever.create("s-kept", "ann", settings)
    now[0] += 3650 * day
    assert forever.prune() == 0 and forever.get("s-kept") is not None
    with pytest.raises(ValueError, match="sessions_keep_days"):
        SessionStore("", keep_days=-1)


@pytest.mark.parametrize("bad", ["x" * 200, "bad\nid", " padded", "../../etc/passwd", "a'; DROP TABLE sessions;--"])
def test_session_ids_follow_the_buss_rule(bad: str) -> None:
    assert session_id_problem(bad), "the bus refuses it"
    with pytest.raises(ValueError, match="invalid session id"):
        check_session_id(bad)
    check_session_id("s-kitchen.2026:ok_1")


def test_messages_put_recent_turns_oldest_first() -> None:
    older, newer = memory_pb2.Turn(user_text="one", assistant_text="1"), memory_pb2.Turn(user_text="two")
    older.time.FromSeconds(10)
    newer.time.FromSeconds(20)
    messages = conversation_messages("sys", [newer, older], "three")
    assert [(m.role, m.content) for m in messages] == [
        (llm_pb2.ROLE_SYSTEM, "sys"),
        (llm_pb2.ROLE_USER, "one"),
        (llm_pb2.ROLE_ASSISTANT, "1"),
        (llm_pb2.ROLE_USER, "two"),
        (llm_pb2.ROLE_USER, "three"),
    ]


def test_tool_errors_reach_the_model_as_json() -> None:
    error = events_pb2.ToolError(code=events_pb2.TOOL_ERROR_CODE_TIMEOUT, message="took longer than 1 s")
    assert json.loads(tool_error_content(error)) == {"error": "took longer than 1 s", "code": "timeout"}


def test_speakable_drops_markup() -> None:
    assert speakable("**Hello** `world` see [docs](http://x)") == "Hello world see docs"


# -- the turn, with in-process stand-ins for the components --------------------------------------


class Generation:
    def __init__(self, responses: list[llm_pb2.GenerateResponse], delay: float, fail_after: int | None) -> None:
        self._responses = responses
        self._delay = delay
        self._fail_after = fail_after
        self.cancelled = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[llm_pb2.GenerateResponse]:
        for index, response in enumerate(self._responses):
            if self._fail_after is not None and index >= self._fail_after:
                raise EngineError("llm", "UNAVAILABLE", "provider replay dropped the connection")
            if self.cancelled.is_set():
                yield llm_pb2.GenerateResponse(finished=events_pb2.LlmFinished(finish_reason="cancelled"))
                return
            await asyncio.sleep(self._delay)
            yield response

    async def cancel(self) -> None:
        self.cancelled.set()

    def abort(self) -> None:
        self.cancelled.set()


def tokens(*words: str) -> list[llm_pb2.GenerateResponse]:
    return [llm_pb2.GenerateResponse(token=events_pb2.LlmToken(text=w, index=i)) for i, w in enumerate(words)]


def finished(reason: str = "stop", model: str = "") -> llm_pb2.GenerateResponse:
    return llm_pb2.GenerateResponse(finished=events_pb2.LlmFinished(finish_reason=reason, provider="fake", model=model))


def tool_call(name: str, call_id: str) -> llm_pb2.GenerateResponse:
    return llm_pb2.GenerateResponse(
        tool_call=events_pb2.LlmToolCallRequested(call_id=call_id, name=name, arguments_json="{}")
    )


@dataclass
class FakeLlm:
    """Answers each Generate with the next script; a script ending in a tool call asks for that tool."""

    scripts: list[list[llm_pb2.GenerateResponse]]
    delay: float = 0.0
    fail_after: int | None = None
    starts: list[llm_pb2.GenerateStart] = field(default_factory=list)
    generations: list[Generation] = field(default_factory=list)
    prefills: list[llm_pb2.GenerateStart] = field(default_factory=list)
    prefill_seconds: float = 0.0

    async def prefill(self, start: llm_pb2.GenerateStart) -> None:
        self.prefills.append(start)
        await asyncio.sleep(self.prefill_seconds)

    async def generate(self, start: llm_pb2.GenerateStart) -> Generation:
        self.starts.append(start)
        script = self.scripts[min(len(self.starts) - 1, len(self.scripts) - 1)]
        generation = Generation(script, self.delay, self.fail_after)
        self.generations.append(generation)
        return generation


@dataclass
class FakeTools:
    executed: list[tools_pb2.ToolCall] = field(default_factory=list)

    async def list_tools(self) -> list[llm_pb2.ToolSpec]:
        return [llm_pb2.ToolSpec(name="lookup", description="looks up", parameters_json_schema="{}")]

    async def execute(self, calls: Sequence[tools_pb2.ToolCall]) -> AsyncIterator[tools_pb2.ExecuteResponse]:
        for call in calls:
            self.executed.append(call)
            yield tools_pb2.ExecuteResponse(started=events_pb2.ToolCallStarted(call_id=call.call_id, name=call.name))
            yield tools_pb2.ExecuteResponse(
                result=events_pb2.ToolResult(call_id=call.call_id, name=call.name, result_json='{"ok": true}')
            )


@dataclass
class FakeMemory:
    down: bool = False
    #: Refuse recall as the memory service refuses a text over its limit.
    refuse_long: bool = False
    turns: list[memory_pb2.AddTurnRequest] = field(default_factory=list)
    stored: list[memory_pb2.StoreRequest] = field(default_factory=list)

    async def recall(self, request: memory_pb2.RecallRequest) -> memory_pb2.RecallResponse:
        if self.down:
            raise EngineError("memory", "UNAVAILABLE", "connection refused")
        if self.refuse_long and len(request.text) > 8000:
            raise EngineError("memory", "INVALID_ARGUMENT", f"text is {len(request.text)} characters; at most 8000")
        return memory_pb2.RecallResponse()

    async def add_turn(self, request: memory_pb2.AddTurnRequest) -> None:
        if self.down:
            raise EngineError("memory", "UNAVAILABLE", "connection refused")
        self.turns.append(request)

    async def history(self, session_id: str, max_turns: int) -> list[memory_pb2.Turn]:
        return [r.turn for r in self.turns]

    async def store(self, request: memory_pb2.StoreRequest) -> memory_pb2.StoreResponse:
        self.stored.append(request)
        item = memory_pb2.MemoryItem(id="m1", text=request.item.text, importance=request.item.importance)
        return memory_pb2.StoreResponse(item=item, event_id="stored-event")


class FakeVoice:
    #: What Transcribe answers, in order, one response per audio chunk read (None: no spoken input here).
    heard: list[voice_pb2.TranscribeResponse] | None = None

    async def transcribe(
        self, config: voice_pb2.TranscribeConfig, audio: AsyncIterator[bytes]
    ) -> AsyncIterator[voice_pb2.TranscribeResponse]:
        assert self.heard is not None, "no spoken input in these tests"
        chunks = aiter(audio)
        for response in self.heard:
            await anext(chunks, None)
            yield response

    async def synthesize(self, config: voice_pb2.SynthesizeConfig) -> object:
        raise AssertionError("no voice output in these tests")


@dataclass
class Engines:
    llm: FakeLlm
    tools: FakeTools = field(default_factory=FakeTools)
    memory: FakeMemory = field(default_factory=FakeMemory)
    voice: FakeVoice = field(default_factory=FakeVoice)


@dataclass
class Sink:
    shown: list[events_pb2.Event] = field(default_factory=list)
    published: list[events_pb2.Event] = field(default_factory=list)
    tokens: int = 0
    three_tokens: asyncio.Event = field(default_factory=asyncio.Event)

    def show(self, event: events_pb2.Event) -> None:
        self.shown.append(event)
        self.tokens += event.HasField("llm_token")
        if self.tokens >= 3:
            self.three_tokens.set()

    def announce(self, event: events_pb2.Event) -> None:
        self.published.append(event)
        self.shown.append(event)

    def types(self) -> list[str]:
        return [event_type(e) for e in self.shown]


def make_turn(engines: Engines, sink: Sink, traits: dict[str, float] | None = None, **config: object) -> Turn:
    store = SessionStore("")
    settings = default_settings(AssistantConfig())
    settings.traits.update(traits or {})
    session = store.create("s-test", "ann", settings)
    return Turn(
        turn_id="t-1",
        session=session,
        engines=engines,  # type: ignore[arg-type]
        tools=ToolCatalog(engines, 30.0),  # type: ignore[arg-type]
        sink=sink,
        config=AssistantConfig(**config),  # type: ignore[arg-type]
    )


def heard(*partials: str, final: str) -> list[voice_pb2.TranscribeResponse]:
    said = [voice_pb2.TranscribeResponse(speech_started=events_pb2.VoiceVadSpeechStarted())]
    said += [voice_pb2.TranscribeResponse(partial=events_pb2.VoiceSttPartial(text=p)) for p in partials]
    said.append(voice_pb2.TranscribeResponse(speech_ended=events_pb2.VoiceVadSpeechEnded()))
    return [*said, voice_pb2.TranscribeResponse(final=events_pb2.VoiceSttFinal(text=final))]


async def test_partial_transcripts_prefill_the_prompt_the_answer_starts_with() -> None:
    """While the user speaks, the model gets the prompt with the words heard so far: the same messages
    as the answer's up to the user's words, so its prompt cache holds all of them but the last few."""
    engines = Engines(FakeLlm([[*tokens("Paris."), finished()]], prefill_seconds=0.05))
    engines.voice.heard = heard(
        "what is the", "what is the capital", "what is the capital of", final="What is the capital of France?"
    )
    await make_turn(engines, Sink(), prefill_while_speaking=True).run(audio=await spoken())
    answered = engines.llm.starts[0]
    assert answered.messages[-1].content == "What is the capital of France?"
    # One at a time: the partial that came while the first prefill ran was skipped.
    assert [p.messages[-1].content for p in engines.llm.prefills] == ["what is the"]
    prefill = engines.llm.prefills[0]
    assert prefill.messages[:-1] == answered.messages[:-1]
    assert prefill.tools == answered.tools and prefill.options == answered.options


async def test_no_prefill_when_it_is_off_the_default_or_the_turn_is_typed() -> None:
    engines = Engines(FakeLlm([[*tokens("Hi."), finished()]]))
    engines.voice.heard = heard("hello", final="Hello there.")
    await make_turn(engines, Sink()).run(audio=await spoken())
    await make_turn(engines, Sink(), prefill_while_speaking=True).run(text="hello")
    assert len(engines.llm.starts) == 2 and engines.llm.prefills == []


async def spoken(chunks: int = 8) -> AudioInput:
    """An ended spoken input of `chunks` chunks (the fake recogniser reads one per response)."""
    audio = AudioInput(voice_pb2.AudioFormat(encoding=voice_pb2.AUDIO_ENCODING_PCM16, sample_rate=16000, channels=1))
    for _ in range(chunks):
        await audio.push(bytes(640))
    audio.end(0.0)
    return audio


async def test_tool_rounds_feed_results_back_then_answer() -> None:
    engines = Engines(
        FakeLlm([[tool_call("lookup", "c1"), finished("tool_calls")], [*tokens("It", " is", " ok."), finished()]])
    )
    sink = Sink()
    await make_turn(engines, sink).run(text="look it up")
    assert [c.name for c in engines.tools.executed] == ["lookup"]
    assert engines.tools.executed[0].user_id == "ann" and engines.tools.executed[0].correlation_id == "t-1"
    second = engines.llm.starts[1].messages
    assert second[-2].role == llm_pb2.ROLE_ASSISTANT and second[-2].tool_calls[0].id == "c1"
    assert second[-1].role == llm_pb2.ROLE_TOOL and second[-1].tool_call_id == "c1" and second[-1].name == "lookup"
    types = sink.types()
    assert types.index("llm.tool_call_requested") < types.index("tool.call_started") < types.index("tool.result")
    assert types.index("tool.result") < types.index("llm.token") and types[-1] == "conversation.turn"
    turn = sink.shown[-1].conversation_turn
    assert turn.assistant_text == "It is ok." and not turn.interrupted and turn.timings.first_token_ms > 0
    assert {e.correlation_id for e in sink.shown} == {"t-1"} and {e.session_id for e in sink.shown} == {"s-test"}
    spans = [e.trace_span.name for e in sink.published if e.HasField("trace_span")]
    assert {"memory", "llm", "tool:lookup", "first_token", "total"} <= set(spans)
    assert engines.memory.turns[0].turn.assistant_text == "It is ok."


async def test_tool_rounds_are_bounded_and_the_answer_says_so() -> None:
    engines = Engines(FakeLlm([[tool_call("lookup", "again"), finished("tool_calls")]]))
    sink = Sink()
    await make_turn(engines, sink, max_tool_rounds=2).run(text="loop forever")
    assert len(engines.tools.executed) == 2
    assert len(engines.llm.starts) == 3 and not engines.llm.starts[-1].tools
    assert "every tool call allowed" in engines.llm.starts[-1].messages[-1].content
    assert "stopped after 2 tool steps" in sink.shown[-1].conversation_turn.assistant_text
    assert any(e.HasField("system_error") and "limit" in e.system_error.message for e in sink.shown)


async def test_interrupt_stops_forwarding_at_once_and_keeps_what_was_said() -> None:
    engines = Engines(FakeLlm([[*tokens(*[f" w{i}" for i in range(200)]), finished()]], delay=0.005))
    sink = Sink()
    turn = make_turn(engines, sink)
    task = asyncio.create_task(turn.run(text="talk a lot"))
    await asyncio.wait_for(sink.three_tokens.wait(), 10)
    turn.interrupt("cancel")
    said = "".join(e.llm_token.text for e in sink.shown if e.HasField("llm_token")).strip()
    count = len(sink.shown)
    await task
    assert not any(e.HasField("llm_token") for e in sink.shown[count:])
    assert engines.llm.generations[0].cancelled.is_set()
    interrupted = next(e.conversation_interrupted for e in sink.shown if e.HasField("conversation_interrupted"))
    assert interrupted.reason == "cancel" and interrupted.spoken_text == said
    assert engines.memory.turns[0].turn.interrupted and engines.memory.turns[0].turn.assistant_text == said
    assert sink.shown[-1].conversation_turn.interrupted


async def test_llm_failure_mid_stream_is_reported_and_the_turn_ends() -> None:
    engines = Engines(FakeLlm([[*tokens("Half", " an"), finished()]], fail_after=2))
    sink = Sink()
    await make_turn(engines, sink).run(text="hello")
    error = next(e.llm_error for e in sink.shown if e.HasField("llm_error"))
    assert error.code == "UNAVAILABLE" and "dropped" in error.message
    assert sink.shown[-1].conversation_turn.assistant_text == "Half an"
    assert engines.memory.turns, "the failed turn is still kept in the history"


async def test_memory_down_answers_anyway_with_a_warning() -> None:
    engines = Engines(FakeLlm([[*tokens("Hi."), finished()]]), memory=FakeMemory(down=True))
    sink = Sink()
    await make_turn(engines, sink).run(text="hello there")
    warnings = [e.system_error.message for e in sink.shown if e.HasField("system_error")]
    assert any("memory is unavailable" in w for w in warnings) and any("could not be saved" in w for w in warnings)
    assert sink.shown[-1].conversation_turn.assistant_text == "Hi."


async def test_a_long_exchange_without_tools_becomes_an_episode() -> None:
    engines = Engines(FakeLlm([[*tokens("Paris", " is", " lovely."), finished()]]))
    sink = Sink()
    await make_turn(engines, sink).run(text="I am going to Paris next week with my sister")
    assert engines.memory.stored and engines.memory.stored[0].item.kind == memory_pb2.MEMORY_KIND_EPISODE
    assert "Paris next week" in engines.memory.stored[0].item.text


@pytest.mark.parametrize(
    ("answer", "model"),
    [
        ("Sorry, I can't help with that. I can tell the time anywhere and do arithmetic.", CANNED_MODEL),
        ("Sorry, I can't check the weather: I run offline.", CANNED_MODEL),
        ("I'm sorry, but I can't assist with sending messages to your family.", "qwen"),
        ("I don't know who won the game last night, I have no live data.", "qwen"),
    ],
)
async def test_stock_phrases_and_refusals_never_become_episodes(answer: str, model: str) -> None:
    engines = Engines(FakeLlm([[*tokens(*pieces(answer)), finished(model=model)]]))
    sink = Sink()
    await make_turn(engines, sink).run(text="could you please send a message to my family about the trip")
    assert engines.memory.turns, "the turn itself is still kept in the session history"
    assert not engines.memory.stored


def test_verbosity_bounds_the_answer_length() -> None:
    assert answer_token_limit({"verbosity": 0.1}) < answer_token_limit({}) < answer_token_limit({"verbosity": 0.9})


@pytest.mark.parametrize(("verbosity", "said"), [(0.1, 2), (0.5, 3), (0.9, 6)])
async def test_verbosity_ends_the_answer_after_whole_sentences(verbosity: float, said: int) -> None:
    text = "One is first. Two follows it. Three comes then. Sure. Four is here. Five is now. Six ends it."
    engines = Engines(FakeLlm([[*tokens(*pieces(text)), finished()]]))
    sink = Sink()
    await make_turn(engines, sink, traits={"verbosity": verbosity}).run(text="tell me about numbers please")
    answer = sink.shown[-1].conversation_turn.assistant_text
    # "Sure." is too short to count as one of the sentences.
    sentences = text.removesuffix(".").split(". ")
    kept = sentences[: said + (said > 3)]
    assert answer == " ".join(s + "." for s in kept)
    shown = "".join(e.llm_token.text for e in sink.shown if e.HasField("llm_token"))
    assert shown.strip() == answer, "what is cut is not shown either"
    assert engines.llm.generations[0].cancelled.is_set() == (said < 6)
    assert not sink.shown[-1].conversation_turn.interrupted


def test_a_formal_register_writes_out_contractions_across_tokens() -> None:
    register = FormalRegister()
    tokens_in = [
        "I",
        "'m",
        " sure",
        " you",
        "\u2019re",
        " right",
        ";",
        " don",
        "'t",
        " worry",
        ", it",
        "'s",
        " Sam",
        "'s",
    ]
    said = "".join(register.feed(t) for t in tokens_in) + register.flush()
    assert said == "I am sure you are right; do not worry, it is Sam's"
    assert FormalRegister().flush() == ""


@pytest.mark.parametrize(
    ("formality", "answer"), [(0.9, "I am glad you cannot wait."), (0.1, "I'm glad you can't wait.")]
)
async def test_formality_shapes_what_is_said(formality: float, answer: str) -> None:
    engines = Engines(FakeLlm([[*tokens("I", "'m", " glad", " you", " can", "'t", " wait."), finished()]]))
    sink = Sink()
    await make_turn(engines, sink, traits={"formality": formality}).run(text="guess what is coming")
    assert sink.shown[-1].conversation_turn.assistant_text == answer
    assert "".join(e.llm_token.text for e in sink.shown if e.HasField("llm_token")) == answer


async def test_a_text_memory_refuses_is_not_reported_as_memory_down() -> None:
    engines = Engines(FakeLlm([[*tokens("Long", " read."), finished()]]), memory=FakeMemory(refuse_long=True))
    sink = Sink()
    await make_turn(engines, sink).run(text="word " * 2000)
    warnings = [e.system_error.message for e in sink.shown if e.HasField("system_error")]
    assert any("did not search for this text" in w and "at most 8000" in w for w in warnings), warnings
    assert not any("unavailable" in w for w in warnings)
    assert sink.shown[-1].conversation_turn.assistant_text == "Long read."


class _Stream:
    """A Converse stream as `Attached` sees it: records what it was handed."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str | None]] = []

    def timer_fired(
        self, event: events_pb2.Event, announcement: events_pb2.Event | None = None
    ) -> events_pb2.Event | None:
        made = announcement or events_pb2.Event(id=f"announced-by-{id(self)}")
        self.got.append((event.id, announcement.id if announcement else None))
        return made


def test_a_timer_event_reaches_the_streams_of_its_session_with_one_announcement() -> None:
    attached = Attached()
    first, second, elsewhere = _Stream(), _Stream(), _Stream()
    attached.attach("s-1", first)
    attached.attach("s-1", second)
    attached.attach("s-2", elsewhere)
    fired = events_pb2.Event(id="timer-event", session_id="s-1", tool_timer_fired=events_pb2.ToolTimerFired())
    assert attached.deliver(fired) == 2
    # One stream made (and published) the announcement; the other was handed that one.
    (maker,) = [stream for stream in (first, second) if stream.got == [("timer-event", None)]]
    handed = second if maker is first else first
    assert handed.got == [("timer-event", f"announced-by-{id(maker)}")]
    assert elsewhere.got == []
    attached.detach("s-1", first)
    attached.detach("s-1", second)
    assert attached.deliver(fired) == 0
    assert attached.deliver(events_pb2.Event(id="no-session", tool_timer_fired=events_pb2.ToolTimerFired())) == 0
    assert timer_announcement(events_pb2.ToolTimerFired(label="tea.")) == "Your timer is done: tea."
    assert timer_announcement(events_pb2.ToolTimerFired(label="alarm")) == "Your alarm is going off."


def test_a_timer_that_finds_no_stream_is_announced_to_the_next_one_within_the_hour() -> None:
    now = [0.0]
    attached = Attached(clock=lambda: now[0])
    fired = events_pb2.Event(id="missed", session_id="s-1", tool_timer_fired=events_pb2.ToolTimerFired())
    assert attached.deliver(fired) == 0  # the page was reloading
    other = _Stream()
    attached.attach("s-2", other)
    assert other.got == []  # another session's stream is not told
    late, again = _Stream(), _Stream()
    attached.attach("s-1", late)
    assert late.got == [("missed", None)]  # it makes (and publishes) the announcement
    attached.attach("s-1", again)
    assert again.got == []  # once
    attached.detach("s-1", late)
    attached.detach("s-1", again)
    # Kept an hour, then forgotten; at most MISSED_PER_SESSION per session.
    for i in range(MISSED_PER_SESSION + 2):
        attached.deliver(events_pb2.Event(id=f"m{i}", session_id="s-1", tool_timer_fired=events_pb2.ToolTimerFired()))
    reader = _Stream()
    attached.attach("s-1", reader)
    assert [got for got, _ in reader.got] == [f"m{i}" for i in range(2, MISSED_PER_SESSION + 2)]
    attached.deliver(events_pb2.Event(id="old", session_id="s-3", tool_timer_fired=events_pb2.ToolTimerFired()))
    now[0] = MISSED_KEPT_SECONDS + 1
    too_late = _Stream()
    attached.attach("s-3", too_late)
    assert too_late.got == []
    assert timer_announcement(events_pb2.ToolTimerFired()) == "Your timer is done."
