"""One Converse stream: the session it is attached to, the turns it runs, and what the client may send.

The protocol (decided and documented here):
- The first message must be `open`; anything else, or an invalid open (bad session id, a session of
  another user, invalid settings), ends the stream with INVALID_ARGUMENT / PERMISSION_DENIED: without
  a session there is nothing to keep open.
- After that, an invalid message (audio chunk without audio_start, an empty text, a second open, an
  unknown request, invalid settings) does NOT end the stream: the client gets a `system.error` event
  (source "assistant", details naming the request) and the session goes on.
- `text` interrupts a running turn (reason "new_turn") and starts a new one. `audio_start` starts a
  spoken turn; once the user is heard (voice.vad_speech_started) a running answer is interrupted
  ("barge_in"). `cancel` interrupts the running turn ("cancel"). `settings` applies to the next turn.
  `close` publishes conversation.ended and ends the stream. A `text` may carry the client's own tools,
  history and continuation (clients that keep the conversation themselves, like the OpenAI-compatible
  API): invalid ones are refused like any invalid message. A client that goes away without `close`
  leaves the session resumable; its running turn is interrupted ("disconnect") and saved.
- A timer set in the session that goes off while a stream is attached to it is shown there
  (tool.timer_fired, under its bus id) and announced (conversation.announcement; spoken with voice
  output on), between turns or during one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Callable

from google.protobuf.message import Message

from coda.assistant import metrics
from coda.assistant.announcements import speak, timer_announcement
from coda.assistant.ports import EngineError, Engines
from coda.assistant.sessions import Session, SessionStore, check_session_id, new_session_id
from coda.assistant.settings import SettingsError, apply_settings, default_settings
from coda.assistant.turn import SOURCE, AudioInput, ClientInput, ToolCatalog, Turn, new_turn_id
from coda.bus.publisher import EventPublisher
from coda.config import AssistantConfig
from coda.schema import new_event
from coda.v1 import assistant_pb2, events_pb2, llm_pb2, memory_pb2, voice_pb2

log = logging.getLogger(__name__)

MAX_TEXT_CHARS = 16_000
MAX_TURN_ID = 128
MAX_CLIENT_TOOLS = 128
MAX_CONTEXT_MESSAGES = 1_000
#: All the text a client's history and continuation may carry together.
MAX_CONTEXT_CHARS = 1_000_000
#: The OpenAI function-name rule, which every OpenAI-compatible server enforces.
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def client_input(request: assistant_pb2.TextInput) -> ClientInput:
    """The client's tools, history and continuation of a text turn, checked; raises ValueError."""
    if len(request.client_tools) > MAX_CLIENT_TOOLS:
        raise ValueError(f"too many client tools ({len(request.client_tools)} > {MAX_CLIENT_TOOLS})")
    names: set[str] = set()
    for tool in request.client_tools:
        if not _TOOL_NAME.fullmatch(tool.name):
            raise ValueError(f"invalid client tool name {tool.name[:80]!r}: 1-64 of A-Z a-z 0-9 _ -")
        if tool.name in names:
            raise ValueError(f"client tool {tool.name!r} is defined twice")
        names.add(tool.name)
        if tool.parameters_json_schema:
            try:
                schema = json.loads(tool.parameters_json_schema)
            except json.JSONDecodeError as exc:
                raise ValueError(f"client tool {tool.name!r}: parameters schema is not JSON ({exc.msg})") from None
            if not isinstance(schema, dict):
                raise ValueError(f"client tool {tool.name!r}: parameters schema is not a JSON object")
    context = [*request.history, *request.continuation]
    if len(context) > MAX_CONTEXT_MESSAGES:
        raise ValueError(f"too many context messages ({len(context)} > {MAX_CONTEXT_MESSAGES})")
    if sum(len(m.content) for m in context) > MAX_CONTEXT_CHARS:
        raise ValueError(f"history and continuation too long (more than {MAX_CONTEXT_CHARS} characters)")
    for message in context:
        if message.role == llm_pb2.ROLE_UNSPECIFIED:
            raise ValueError("a context message has no role")
    return ClientInput(tuple(request.client_tools), tuple(request.history), tuple(request.continuation))


class ClientError(Exception):
    """The client broke the protocol in a way that ends the stream; `code` is a grpc.StatusCode name."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Conversation:
    """The state of one Converse stream. Responses go to `send` (the stream's outbox)."""

    def __init__(
        self,
        *,
        store: SessionStore,
        engines: Engines,
        tools: ToolCatalog,
        config: AssistantConfig,
        publisher: EventPublisher,
        send: Callable[[assistant_pb2.ConverseResponse], None],
        spawn: Callable[[asyncio.Future[None]], None] | None = None,
    ) -> None:
        self._store = store
        self._engines = engines
        self._tools = tools
        self._config = config
        self._publisher = publisher
        self._send = send
        self._spawn = spawn
        self.session: Session | None = None
        #: The turn whose answer is running (or last ran).
        self._answering: Turn | None = None
        #: The spoken turn still listening, if any.
        self._listening: Turn | None = None
        self._audio: AudioInput | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the sink turns report to -----------------------------------------------------------------

    def show(self, event: events_pb2.Event) -> None:
        self._send(assistant_pb2.ConverseResponse(event=event))

    def announce(self, event: events_pb2.Event) -> None:
        self._publisher.publish(event)
        self.show(event)

    def _announce(self, payload: Message, correlation_id: str = "") -> None:
        assert self.session is not None
        self.announce(new_event(SOURCE, payload, session_id=self.session.session_id, correlation_id=correlation_id))

    def timer_fired(
        self, event: events_pb2.Event, announcement: events_pb2.Event | None = None
    ) -> events_pb2.Event | None:
        """A timer set in this session went off: show it, say so, and speak it with voice output on.

        `announcement`: already published by another stream of the session; shown, not published again."""
        if self.session is None:
            return None
        session_id, correlation_id = self.session.session_id, event.correlation_id
        shown = events_pb2.Event()
        shown.CopyFrom(event)
        shown.seq = 0  # like every event on Converse; its id is the bus event's
        self.show(shown)  # the tools component's own event, under its bus id
        fired = event.tool_timer_fired
        text = timer_announcement(fired)
        if announcement is None:
            announcement = new_event(
                SOURCE,
                events_pb2.ConversationAnnouncement(text=text, reason="timer", ref_id=fired.timer_id),
                session_id=session_id,
                correlation_id=correlation_id,
            )
            self.announce(announcement)
        else:
            self.show(announcement)
        if not self.session.settings.voice_output:
            return announcement
        settings = self.session.settings
        config = voice_pb2.SynthesizeConfig(
            voice=settings.voice, language=settings.language, session_id=session_id, correlation_id=correlation_id
        )

        def show(source: str, payload: Message, event_id: str) -> None:
            self.show(
                new_event(source, payload, session_id=session_id, correlation_id=correlation_id, event_id=event_id)
            )

        answering = self._answering if self._answering is not None and not self._answering.finished else None

        async def speak_after_the_answer() -> None:
            # Spoken after the answer being spoken now, never over it (the client plays audio in
            # the order it arrives); the text and the event were shown at once.
            if answering is not None:
                await answering.wait()
            await speak(self._engines.voice, config, text, show)

        task = asyncio.create_task(speak_after_the_answer(), name="announcement")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return announcement

    def _client_error(
        self, request: str, message: str, level: events_pb2.ErrorLevel.ValueType = events_pb2.ERROR_LEVEL_ERROR
    ) -> None:
        """An invalid message: reported on this stream only (it is the client's mistake, not the system's)."""
        metrics.CLIENT_ERRORS.labels(request).inc()
        details = json.dumps({"code": "INVALID_ARGUMENT", "request": request})
        event = new_event(
            SOURCE,
            events_pb2.SystemError(level=level, message=message, details=details),
            session_id=self.session.session_id if self.session else "",
        )
        self.show(event)

    # -- open -------------------------------------------------------------------------------------

    async def open(self, request: assistant_pb2.SessionOpen) -> assistant_pb2.SessionInfo:
        config = self._config
        session_id = request.session_id
        resumed = False
        session: Session | None = None
        if session_id:
            try:
                check_session_id(session_id)
            except ValueError as exc:
                raise ClientError("INVALID_ARGUMENT", str(exc)) from None
            session = self._store.get(session_id)
        settings_change = request.settings if request.HasField("settings") else None
        if session is not None:
            if request.user_id and request.user_id != session.user_id:
                raise ClientError("PERMISSION_DENIED", f"session {session_id} belongs to another user")
            resumed = True
            if settings_change is not None:
                session.settings = self._checked_settings(session.settings, settings_change)
                self._store.save(session)
        else:
            settings = default_settings(config)
            if settings_change is not None:
                settings = self._checked_settings(settings, settings_change)
            session = self._store.create(
                session_id or new_session_id(), request.user_id or config.default_user_id, settings
            )
        self.session = session
        self._store.hold(session)
        history = await self._history(session)
        # A session id the store did not know but Memory did (e.g. the store file was lost) is a resume too.
        resumed = resumed or bool(history)
        if history and not session.turns:
            session.turns = len(history)
            session.last_user_text = history[-1].user_text
            self._store.save(session)
        metrics.SESSIONS.labels("resumed" if resumed else "new").inc()
        self._announce(
            events_pb2.ConversationStarted(user_id=session.user_id, resumed=resumed, settings=session.settings)
        )
        return assistant_pb2.SessionInfo(
            session_id=session.session_id,
            user_id=session.user_id,
            settings=session.settings,
            history=history,
            resumed=resumed,
        )

    @staticmethod
    def _checked_settings(
        current: events_pb2.ConversationSettings, change: events_pb2.ConversationSettings
    ) -> events_pb2.ConversationSettings:
        try:
            settings, _ = apply_settings(current, change)
        except SettingsError as exc:
            raise ClientError("INVALID_ARGUMENT", str(exc)) from None
        return settings

    async def _history(self, session: Session) -> list[memory_pb2.Turn]:
        try:
            return await self._engines.memory.history(session.session_id, self._config.history_turns)
        except EngineError as exc:
            log.warning("history unavailable", extra={"session_id": session.session_id, "error": str(exc)})
            return list(session.recent)

    # -- requests after open --------------------------------------------------------------------

    async def handle(self, request: assistant_pb2.ConverseRequest) -> bool:
        """Act on one client message; False when the stream should end (the session was closed)."""
        kind = request.WhichOneof("request")
        if kind == "text":
            await self._on_text(request.text)
        elif kind == "audio_start":
            await self._on_audio_start(request.audio_start)
        elif kind == "audio_chunk":
            if self._audio is None or not self._audio.open:
                self._client_error("audio_chunk", "audio_chunk without an open audio input: send audio_start first")
            else:
                await self._audio.push(request.audio_chunk.audio)
        elif kind == "audio_end":
            if self._audio is None or self._audio.ended_at is not None:
                self._client_error("audio_end", "audio_end without an open audio input")
            else:
                self._audio.end(time.perf_counter())
        elif kind == "cancel":
            self._on_cancel(request.cancel.turn_id)
        elif kind == "settings":
            self._on_settings(request.settings)
        elif kind == "close":
            await self._on_close(request.close.reason or "closed by the client")
            return False
        elif kind == "open":
            self._client_error("open", "the session is already open; one open per stream")
        else:
            self._client_error("unknown", "empty or unknown request")
        return True

    def _turn_id(self, requested: str, request: str) -> str | None:
        if not requested:
            return new_turn_id()
        if len(requested) > MAX_TURN_ID or not requested.isprintable():
            self._client_error(request, f"invalid turn_id: at most {MAX_TURN_ID} printable characters")
            return None
        return requested

    def _new_turn(self, turn_id: str, client: ClientInput | None = None) -> Turn:
        assert self.session is not None
        return Turn(
            turn_id=turn_id,
            session=self.session,
            engines=self._engines,
            tools=self._tools,
            sink=self,
            config=self._config,
            on_turn_done=lambda _turn, record: self._store.record_turn(self.session, record),  # type: ignore[arg-type]
            on_speech_started=self._user_spoke,
            client=client,
        )

    def _start(self, turn: Turn, *, text: str | None = None, audio: AudioInput | None = None) -> None:
        task = asyncio.create_task(turn.run(text=text, audio=audio), name=f"turn {turn.turn_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if self._spawn is not None:
            self._spawn(task)

    async def _on_text(self, request: assistant_pb2.TextInput) -> None:
        text = request.text.strip()
        if not text:
            self._client_error("text", "empty text input")
            return
        if len(text) > MAX_TEXT_CHARS:
            self._client_error("text", f"text input too long ({len(text)} > {MAX_TEXT_CHARS} characters)")
            return
        try:
            client = client_input(request)
        except ValueError as exc:
            self._client_error("text", str(exc))
            return
        turn_id = self._turn_id(request.turn_id, "text")
        if turn_id is None:
            return
        await self._end_running("new_turn")
        turn = self._new_turn(turn_id, client)
        self._answering = turn
        self._start(turn, text=text)

    async def _on_audio_start(self, request: assistant_pb2.AudioInputStart) -> None:
        audio_format = request.format
        if audio_format.encoding == voice_pb2.AUDIO_ENCODING_UNSPECIFIED or audio_format.sample_rate == 0:
            self._client_error("audio_start", "audio_start needs a format with an encoding and a sample_rate")
            return
        if self._audio is not None and self._audio.open:
            self._client_error("audio_start", "an audio input is already open: send audio_end first")
            return
        turn_id = self._turn_id(request.turn_id, "audio_start")
        if turn_id is None:
            return
        if self._listening is not None and not self._listening.answering:
            self._listening.interrupt("new_turn")
        self._audio = AudioInput(audio_format)
        turn = self._new_turn(turn_id)
        self._listening = turn
        self._start(turn, audio=self._audio)

    async def _user_spoke(self, turn: Turn) -> None:
        """A spoken turn heard speech: barge in on the running answer (or wait for it when barge-in is off)."""
        previous = self._answering
        if previous is not None and previous is not turn and not previous.finished:
            if self._config.barge_in:
                await previous.interrupt_and_wait("barge_in")
            else:
                await previous.wait()
        if self._listening is turn:
            self._answering = turn

    def _on_cancel(self, turn_id: str) -> None:
        running = [t for t in (self._answering, self._listening) if t is not None and not t.finished]
        if turn_id:
            running = [t for t in running if t.turn_id == turn_id]
        if not running:
            self._client_error("cancel", "no running turn to cancel", level=events_pb2.ERROR_LEVEL_WARNING)
        for turn in running:
            turn.interrupt("cancel")

    def _on_settings(self, change: events_pb2.ConversationSettings) -> None:
        assert self.session is not None
        try:
            settings, trait_changes = apply_settings(self.session.settings, change)
        except SettingsError as exc:
            self._client_error("settings", str(exc))
            return
        self.session.settings = settings
        self._store.save(self.session)
        self._announce(settings)
        if trait_changes:
            self._announce(events_pb2.PersonalityUpdated(changes=trait_changes))

    async def _on_close(self, reason: str) -> None:
        await self._end_running("cancel")
        assert self.session is not None
        self._announce(events_pb2.ConversationEnded(reason=reason, turns=self.session.turns))

    async def _end_running(self, reason: str) -> None:
        """Interrupt the turns still running and wait until they are saved."""
        for turn in (self._answering, self._listening):
            if turn is not None and not turn.finished:
                await turn.interrupt_and_wait(reason)

    async def wait_idle(self) -> None:
        """Wait for the running turns to finish on their own (the client has nothing more to say)."""
        if self._audio is not None and self._audio.open:
            self._audio.end(time.perf_counter())
        await self._tasks_done()

    async def release_session(self) -> None:
        """Once the turns still running are saved, let the store forget the session if idle."""
        await self._tasks_done()
        if self.session is not None:
            self._store.release(self.session)

    async def _tasks_done(self) -> None:
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    def detach(self) -> None:
        """The stream is gone: stop what runs; the turns save themselves in the background."""
        for turn in (self._answering, self._listening):
            if turn is not None:
                turn.interrupt("disconnect")
