"""Circuit breakers around external engines, with fallback to the embedded ones.

A pybreaker circuit counts failures of the external engine; once open, calls skip it and go
straight to the fallback (or fail fast with EngineUnavailable when there is none) until the reset
timeout lets one trial call through. State changes are published as `component.breaker` events
and kept in a metric.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from typing import NoReturn, TypeVar

import pybreaker

from coda.bus.publisher import EventPublisher
from coda.schema import new_event
from coda.v1 import events_pb2
from coda.voice import metrics
from coda.voice.engines.base import (
    AudioPiece,
    EngineError,
    EngineUnavailable,
    SttEngine,
    SttStream,
    Transcript,
    TtsEngine,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

_STATES = {
    pybreaker.STATE_CLOSED: events_pb2.BREAKER_STATE_CLOSED,
    pybreaker.STATE_OPEN: events_pb2.BREAKER_STATE_OPEN,
    pybreaker.STATE_HALF_OPEN: events_pb2.BREAKER_STATE_HALF_OPEN,
}
#: Failures an external engine can have; anything else is a bug and propagates as such.
ENGINE_FAILURES = (EngineError, OSError, TimeoutError)


def _raise(exc: BaseException) -> NoReturn:
    raise exc


class Breaker:
    """An async-friendly pybreaker circuit: ask `allow()`, then report the outcome."""

    def __init__(
        self,
        target: str,
        *,
        failures: int,
        reset_seconds: float,
        publisher: EventPublisher | None,
        component: str = "voice",
    ) -> None:
        self.target = target
        self._publisher = publisher
        self._component = component
        self._last_reason = ""
        self._circuit = pybreaker.CircuitBreaker(
            fail_max=failures, reset_timeout=reset_seconds, name=target, listeners=[_StateListener(self)]
        )
        metrics.BREAKER_STATE.labels(target=target).set(events_pb2.BREAKER_STATE_CLOSED)

    @property
    def state(self) -> str:
        return self._circuit.current_state

    def allow(self) -> bool:
        """False while open and the reset timeout has not passed (the fail-fast window)."""
        if self._circuit.current_state != pybreaker.STATE_OPEN:
            return True
        # pybreaker only exposes this through its storage; it moves to half-open on the next call.
        opened_at = self._circuit._state_storage.opened_at
        return opened_at is None or datetime.now(UTC) >= opened_at + timedelta(seconds=self._circuit.reset_timeout)

    def record_success(self) -> None:
        self._circuit.call(lambda: None)

    def record_failure(self, exc: BaseException) -> None:
        self._last_reason = str(exc)
        # The caller already has the failure in hand; this only counts it.
        with contextlib.suppress(Exception):
            self._circuit.call(_raise, exc)

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        if not self.allow():
            raise EngineUnavailable(f"{self.target} is unavailable (circuit open after: {self._last_reason})")
        try:
            result = await operation()
        except ENGINE_FAILURES as exc:
            self.record_failure(exc)
            raise
        self.record_success()
        return result

    def _changed(self, old: str, new: str) -> None:
        metrics.BREAKER_STATE.labels(target=self.target).set(_STATES[new])
        log.warning(
            "engine circuit changed", extra={"target": self.target, "from": old, "to": new, "reason": self._last_reason}
        )
        if self._publisher is not None:
            payload = events_pb2.ComponentBreaker(
                component=self._component,
                target=self.target,
                state=_STATES[new],
                previous_state=_STATES.get(old, events_pb2.BREAKER_STATE_UNSPECIFIED),
                reason=self._last_reason if new != pybreaker.STATE_CLOSED else "recovered",
            )
            self._publisher.publish(new_event(self._component, payload))


class _StateListener(pybreaker.CircuitBreakerListener):
    def __init__(self, breaker: Breaker) -> None:
        self._breaker = breaker

    def state_change(self, cb, old_state, new_state) -> None:  # type: ignore[no-untyped-def]
        self._breaker._changed(old_state.name if old_state else "", new_state.name)


class _FallbackSttStream:
    """Feeds the external engine and keeps the utterance (bounded) so that a failure part-way
    can be replayed into the fallback engine without losing what the user said."""

    def __init__(self, owner: FallbackStt, stream: SttStream, language: str) -> None:
        self._owner = owner
        self._stream = stream
        self._language = language
        self._on_primary = True
        self._replay: bytearray | None = bytearray()

    async def _switch(self, exc: BaseException) -> None:
        self._owner.breaker.record_failure(exc)
        if self._replay is None or self._owner.fallback is None:
            raise EngineUnavailable(f"{self._owner.breaker.target} failed mid-utterance: {exc}") from exc
        log.warning("stt engine failed mid-utterance; replaying into fallback", extra={"error": str(exc)})
        await self._stream.close()
        self._stream = await self._owner.fallback.open(self._language)
        self._on_primary = False
        replay, self._replay = bytes(self._replay), None
        await self._stream.feed(replay)

    async def feed(self, pcm: bytes) -> None:
        if self._on_primary and self._replay is not None:
            self._replay += pcm
            if len(self._replay) > self._owner.max_replay_bytes:
                self._replay = None  # too long to keep; a failure now loses the utterance
        try:
            await self._stream.feed(pcm)
        except ENGINE_FAILURES as exc:
            if not self._on_primary:
                raise
            await self._switch(exc)

    async def partial(self) -> str:
        try:
            return await self._stream.partial()
        except ENGINE_FAILURES as exc:
            if not self._on_primary:
                raise
            await self._switch(exc)
            return ""

    async def finish(self) -> Transcript:
        if self._on_primary:
            try:
                result = await self._stream.finish()
            except ENGINE_FAILURES as exc:
                await self._switch(exc)
            else:
                self._owner.breaker.record_success()
                return result
        return await self._stream.finish()

    async def close(self) -> None:
        await self._stream.close()


class FallbackStt:
    """An external STT engine behind a breaker, with an optional embedded fallback."""

    def __init__(
        self, primary: SttEngine, fallback: SttEngine | None, breaker: Breaker, max_replay_seconds: float
    ) -> None:
        if fallback is not None and fallback.sample_rate != primary.sample_rate:
            raise ValueError("the fallback STT engine must take the same sample rate as the primary")
        self.primary = primary
        self.fallback = fallback
        self.breaker = breaker
        self.name = primary.name
        self.sample_rate = primary.sample_rate
        self.max_replay_bytes = int(max_replay_seconds * primary.sample_rate) * 2

    async def load(self) -> None:
        await self.primary.load()
        if self.fallback is not None:
            await self.fallback.load()

    def supports(self, language: str) -> bool:
        return self.primary.supports(language) or (self.fallback is not None and self.fallback.supports(language))

    async def open(self, language: str) -> SttStream:
        try:
            stream = await self.breaker.call(lambda: self.primary.open(language))
        except ENGINE_FAILURES as exc:
            if self.fallback is None:
                raise EngineUnavailable(str(exc)) from exc
            log.info("stt falling back to embedded engine", extra={"error": str(exc)})
            return await self.fallback.open(language)
        return _FallbackSttStream(self, stream, language)

    async def close(self) -> None:
        await self.primary.close()
        if self.fallback is not None:
            await self.fallback.close()


class FallbackTts:
    """An external TTS engine behind a breaker, with an optional embedded fallback, per sentence."""

    def __init__(self, primary: TtsEngine, fallback: TtsEngine | None, breaker: Breaker) -> None:
        self.primary = primary
        self.fallback = fallback
        self.breaker = breaker
        self.name = primary.name
        self.sample_rate = primary.sample_rate

    async def load(self) -> None:
        await self.primary.load()
        if self.fallback is not None:
            await self.fallback.load()

    async def synthesize(self, text: str, voice: str) -> AsyncIterator[AudioPiece]:
        failure: BaseException | None = None
        if self.breaker.allow():
            spoke = False
            try:
                async with aclosing(self.primary.synthesize(text, voice)) as pieces:
                    async for piece in pieces:
                        spoke = True
                        yield piece
            except ENGINE_FAILURES as exc:
                self.breaker.record_failure(exc)
                if spoke:  # half a sentence was heard; repeating it from another voice is worse
                    raise EngineUnavailable(f"{self.breaker.target} failed mid-sentence: {exc}") from exc
                failure = exc
            else:
                self.breaker.record_success()
                return
        else:
            failure = EngineUnavailable(f"{self.breaker.target} is unavailable (circuit open)")
        if self.fallback is None:
            raise EngineUnavailable(str(failure)) from failure
        # The external engine's voice names mean nothing to the fallback: use its default.
        async with aclosing(self.fallback.synthesize(text, "")) as pieces:
            async for piece in pieces:
                yield piece

    async def close(self) -> None:
        await self.primary.close()
        if self.fallback is not None:
            await self.fallback.close()
