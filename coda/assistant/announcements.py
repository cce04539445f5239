"""The assistant speaking up unprompted: a timer set in a session went off.

Timers live in the tools component, which publishes tool.timer_fired on the bus with the session
that set the timer. The assistant follows those events (`TimerWatch`, one bus subscription per
assistant process) and hands each to the Converse streams attached to that session
(`Attached`), which show it and announce it (conversation.announcement, spoken with voice output
on). One that goes off while no stream of its session is attached (the page was reloading, Coda had
just restarted) is kept for an hour and announced to the next stream that opens the session.

The watch starts by reading the timer events the bus log already holds and delivers those of the
last `REPLAY_SECONDS`: the tools component sets kept timers again as it starts, and one that came
due while Coda was down goes off at once, possibly before this watch has subscribed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

import grpc
from google.protobuf.message import Message

from coda.assistant.ports import EngineError, VoicePort
from coda.assistant.speech import speakable
from coda.bus.client import ResumingSubscription
from coda.v1 import events_pb2, voice_pb2

log = logging.getLogger(__name__)

TIMER_TYPES = ("tool.timer_fired",)
#: Timer events already on the bus when the watch starts are delivered if they are this recent. An
#: assistant restarted on its own within this long after a timer it had announced announces it again.
REPLAY_SECONDS = 30.0


def timer_announcement(fired: events_pb2.ToolTimerFired) -> str:
    """What the assistant says when a timer goes off."""
    label = fired.label.strip().rstrip(".")
    if label.lower() == "alarm":
        return "Your alarm is going off."
    return f"Your timer is done: {label}." if label else "Your timer is done."


class Listener(Protocol):
    def timer_fired(
        self, event: events_pb2.Event, announcement: events_pb2.Event | None = None
    ) -> events_pb2.Event | None:
        """Show the timer's event and the announcement; make and publish the announcement when it is
        None (the session's first stream), and return it for the session's other streams."""
        ...


#: How long a timer event that found no stream of its session waits for one, and how many wait per
#: session and in all (the oldest sessions' are forgotten first).
MISSED_KEPT_SECONDS = 3600.0
MISSED_PER_SESSION = 5
MISSED_SESSIONS = 1000


class Attached:
    """The Converse streams attached to each session, for events addressed to a session."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._by_session: dict[str, set[Listener]] = {}
        #: Timer events no stream of their session was attached for: (when, event), oldest first.
        self._missed: dict[str, deque[tuple[float, events_pb2.Event]]] = {}
        self._clock = clock

    def attach(self, session_id: str, listener: Listener) -> None:
        self._by_session.setdefault(session_id, set()).add(listener)
        missed = self._missed.pop(session_id, None)
        for when, event in missed or ():
            if self._clock() - when <= MISSED_KEPT_SECONDS:
                listener.timer_fired(event)

    def detach(self, session_id: str, listener: Listener) -> None:
        listeners = self._by_session.get(session_id)
        if listeners is not None:
            listeners.discard(listener)
            if not listeners:
                del self._by_session[session_id]

    def deliver(self, event: events_pb2.Event) -> int:
        """Hand a timer event to the streams of its session; how many got it."""
        listeners = list(self._by_session.get(event.session_id, ())) if event.session_id else []
        if not listeners and event.session_id:
            self._keep_missed(event)
        announcement: events_pb2.Event | None = None
        for listener in listeners:
            # One announcement per session on the bus, however many streams have the session open.
            announcement = listener.timer_fired(event, announcement) or announcement
        return len(listeners)

    def _keep_missed(self, event: events_pb2.Event) -> None:
        kept = self._missed.pop(event.session_id, None) or deque(maxlen=MISSED_PER_SESSION)
        kept.append((self._clock(), event))
        self._missed[event.session_id] = kept  # last in the dict: the most recently missed session
        while len(self._missed) > MISSED_SESSIONS:
            del self._missed[next(iter(self._missed))]


class TimerWatch:
    """Follows tool.timer_fired on the bus (resuming across bus restarts) and delivers each event."""

    def __init__(self, channel: Callable[[], grpc.aio.Channel], attached: Attached) -> None:
        # From the log's start: what is older than REPLAY_SECONDS is skipped below.
        self._subscription = ResumingSubscription(channel, TIMER_TYPES, after_seq=0)
        self._attached = attached
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="assistant-timer-watch")

    async def _run(self) -> None:
        oldest_ns = int((time.time() - REPLAY_SECONDS) * 1e9)
        try:
            async for response in self._subscription:
                for event in response.batch.events:
                    if event.HasField("tool_timer_fired") and event.time.ToNanoseconds() >= oldest_ns:
                        self._attached.deliver(event)
        except grpc.aio.AioRpcError as exc:
            log.warning("timer events unavailable", extra={"code": exc.code().name, "details": exc.details()})

    async def stop(self) -> None:
        self._subscription.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def speak(
    voice: VoicePort,
    config: voice_pb2.SynthesizeConfig,
    text: str,
    show: Callable[[str, Message, str], None],
) -> None:
    """Speak `text` on its own (not part of a turn); every voice event goes to `show(source, payload,
    event_id)` under the id Voice published it with."""
    try:
        synthesis = await voice.synthesize(config)

        async def read() -> None:
            async for response in synthesis:
                kind = response.WhichOneof("response")
                if kind is not None:
                    show("voice", getattr(response, kind), response.event_id)

        reader = asyncio.create_task(read())
        await synthesis.send(speakable(text))
        await synthesis.finish()
        await reader
    except EngineError as exc:
        show("assistant", events_pb2.VoiceTtsError(message=exc.message), "")
