"""Circuit breakers around engines that can fail (external servers, neural models), with fallback
to the embedded ones.

The shared circuit breaker counts failures of the primary engine; once open, calls skip it and go
straight to the fallback (or fail fast with EngineUnavailable when there is none) until the reset
timeout lets one trial call through. An engine that fails to load opens its circuit at once. State
changes are published as `component.breaker` events and kept in a metric.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import TypeVar

from coda.bus.publisher import EventPublisher
from coda.runtime.breaker import CLOSED, Breaker, BreakerChange
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
    VoiceNotFound,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Failures an external engine can have; anything else is a bug and propagates as such.
ENGINE_FAILURES = (EngineError, OSError, TimeoutError)


def _not_an_engine_failure(exc: BaseException) -> bool:
    return not isinstance(exc, ENGINE_FAILURES)


class EngineBreaker:
    """The circuit around one external engine: ask `allow()`, then report the outcome."""

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
        self._circuit = Breaker(
            target,
            fail_max=failures,
            reset_seconds=reset_seconds,
            exclude=_not_an_engine_failure,
            on_change=self._changed,
        )
        metrics.BREAKER_STATE.labels(target=target).set(events_pb2.BREAKER_STATE_CLOSED)

    @property
    def state(self) -> str:
        return self._circuit.state

    def allow(self) -> bool:
        """False while open and the reset timeout has not passed (the fail-fast window)."""
        return self._circuit.allow()

    def record_success(self) -> None:
        self._circuit.record_success()

    def record_failure(self, exc: BaseException) -> None:
        # The caller already has the failure in hand; this only counts it.
        self._circuit.record_failure(exc)

    def trip(self, exc: BaseException) -> None:
        """Open the circuit now: the engine failed in a way retrying at once cannot mend (it did not load)."""
        for _ in range(self._circuit.fail_max):
            if self._circuit.state != CLOSED:
                break
            self._circuit.record_failure(exc)

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        if not self._circuit.allow():
            raise EngineUnavailable(f"{self.target} is unavailable (circuit open after: {self._circuit.last_failure})")
        return await self._circuit.call(operation)

    def _changed(self, change: BreakerChange) -> None:
        metrics.BREAKER_STATE.labels(target=self.target).set(change.proto_state)
        last_reason = change.last_failure
        log.warning(
            "engine circuit changed",
            extra={"target": self.target, "from": change.previous, "to": change.state, "reason": last_reason},
        )
        if self._publisher is not None:
            payload = events_pb2.ComponentBreaker(
                component=self._component,
                target=self.target,
                state=change.proto_state,
                previous_state=change.proto_previous,
                reason=last_reason if change.state != CLOSED else "recovered",
            )
            self._publisher.publish(new_event(self._component, payload))


async def load_primary(
    primary: SttEngine | TtsEngine, fallback: SttEngine | TtsEngine | None, breaker: EngineBreaker, kind: str
) -> bool:
    """Load the primary engine; False when it failed and the fallback stands in (not fatal: the service
    starts, the open circuit says why). Without a fallback the failure is raised."""
    try:
        await primary.load()
    except ENGINE_FAILURES as exc:
        if fallback is None:
            raise
        log.error(
            f"{kind} engine failed to load; the fallback engine stands in",
            extra={"engine": primary.name, "fallback": fallback.name, "error": str(exc)},
        )
        breaker.trip(exc)
        return False
    return True


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

    async def pause(self, trailing_ms: int) -> None:
        # A failure here shows again in finish(), which switches to the fallback engine.
        with contextlib.suppress(*ENGINE_FAILURES):
            await self._stream.pause(trailing_ms)

    async def resume(self) -> None:
        with contextlib.suppress(*ENGINE_FAILURES):
            await self._stream.resume()

    async def close(self) -> None:
        await self._stream.close()


class FallbackStt:
    """An STT engine that can fail (a Wyoming server, Whisper) behind a breaker, with an optional
    embedded fallback."""

    def __init__(
        self,
        primary: SttEngine,
        fallback: SttEngine | None,
        breaker: EngineBreaker,
        max_replay_seconds: float,
        *,
        preload_fallback: bool = True,
    ) -> None:
        if fallback is not None and fallback.sample_rate != primary.sample_rate:
            raise ValueError("the fallback STT engine must take the same sample rate as the primary")
        self.primary = primary
        self.fallback = fallback
        self.breaker = breaker
        self.name = primary.name
        self.sample_rate = primary.sample_rate
        self.max_replay_bytes = int(max_replay_seconds * primary.sample_rate) * 2
        #: False when the primary rarely fails once loaded (an embedded model): the fallback is then
        #: loaded only if the primary does not load, and otherwise on first use.
        self.preload_fallback = preload_fallback

    async def load(self) -> None:
        loaded = await load_primary(self.primary, self.fallback, self.breaker, "stt")
        if self.fallback is not None and (not loaded or self.preload_fallback):
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
    """A TTS engine behind a breaker (a Wyoming server, Piper), with an optional embedded fallback,
    per sentence. Voices only the fallback has (eSpeak's, beside Piper's) go straight to it."""

    def __init__(self, primary: TtsEngine, fallback: TtsEngine | None, breaker: EngineBreaker) -> None:
        self.primary = primary
        self.fallback = fallback
        self.breaker = breaker
        self.name = primary.name
        self.sample_rate = primary.sample_rate
        self.default_voice = primary.default_voice

    async def load(self) -> None:
        await load_primary(self.primary, self.fallback, self.breaker, "tts")
        self.sample_rate = self.primary.sample_rate
        if self.fallback is not None:
            await self.fallback.load()

    def voices(self) -> tuple[str, ...]:
        names = list(self.primary.voices())
        if self.fallback is not None:
            names += [v for v in self.fallback.voices() if v not in names]
        return tuple(names)

    def has_voice(self, voice: str) -> bool:
        return self.primary.has_voice(voice) or (self.fallback is not None and self.fallback.has_voice(voice))

    async def synthesize(self, text: str, voice: str) -> AsyncGenerator[AudioPiece, None]:
        if voice and not self.primary.has_voice(voice):
            if self.fallback is None or not self.fallback.has_voice(voice):
                raise VoiceNotFound(f"voice {voice!r} is not installed; installed voices: {', '.join(self.voices())}")
            # A voice only the fallback has was asked for by name: not a failure of the primary.
            async with aclosing(self.fallback.synthesize(text, voice)) as pieces:
                async for piece in pieces:
                    yield piece
            return
        failure: BaseException | None = None
        if self.breaker.allow():
            spoke = False
            try:
                async with aclosing(self.primary.synthesize(text, voice)) as pieces:
                    async for piece in pieces:
                        spoke = True
                        yield piece
            except VoiceNotFound:
                raise  # the request's fault, not the engine's: no failure counted, nobody else speaks
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
