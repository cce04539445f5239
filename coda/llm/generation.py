"""One generation: run the request along the provider chain, stream responses, publish llm.* events.

Fallback semantics: a provider that fails (or whose breaker is open) before anything was sent to
the caller is skipped and the next one in the chain takes over (`fallback` response and
llm.provider_fallback event). Once a token or tool call has gone out, a failure is not retried
elsewhere, since a second provider would repeat or contradict what the caller already has: the
generation ends with llm.error and UNAVAILABLE ("failed after N tokens").
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from google.protobuf.message import Message as ProtoMessage

from coda.bus.publisher import EventPublisher
from coda.llm import metrics
from coda.llm.chain import Link
from coda.llm.toolcalls import ToolCallAssembler, ToolCallError
from coda.llm.types import Finish, GenerationRequest, ProviderError, TextDelta, ToolCallDelta, Usage
from coda.runtime.breaker import CircuitOpenError
from coda.schema import new_event
from coda.v1 import events_pb2, llm_pb2

log = logging.getLogger(__name__)


class GenerationUnavailable(Exception):
    """No provider could answer (or one failed mid-answer); maps to UNAVAILABLE."""


@dataclass
class _Progress:
    started: float = field(default_factory=time.monotonic)
    first_output: float | None = None
    text: list[str] = field(default_factory=list)
    tokens: int = 0
    tool_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int | None = None
    provider: str = ""
    model: str = ""

    @property
    def emitted(self) -> bool:
        return self.first_output is not None


class Generation:
    def __init__(
        self,
        request: GenerationRequest,
        route: list[Link],
        publisher: EventPublisher,
        *,
        session_id: str = "",
        correlation_id: str = "",
    ) -> None:
        self.request = request
        self._route = route
        self._publisher = publisher
        self._session_id = session_id
        self._correlation_id = correlation_id
        self._progress = _Progress()
        self._finished = False

    async def run(self) -> AsyncIterator[llm_pb2.GenerateResponse]:
        """The responses, ending with `finished`; raises GenerationUnavailable when nobody can answer."""
        first = self._route[0].provider
        started = events_pb2.LlmRequestStarted(
            model=self.request.model or first.model,
            provider=first.name,
            temperature=self.request.temperature or 0.0,
            messages=len(self.request.messages),
            tools=len(self.request.tools),
        )
        yield self._emit(llm_pb2.GenerateResponse(started=started), started)
        failures: list[str] = []
        for position, link in enumerate(self._route):
            name = link.provider.name
            try:
                async for response in self._attempt(link):
                    yield response
                return
            except (ProviderError, CircuitOpenError) as exc:
                reason = _reason(exc)
                failures.append(f"{name}: {reason}")
                metrics.ERRORS.labels(name, _kind(exc)).inc()
                log.warning("llm provider failed", extra={"provider": name, "reason": reason})
                if self._progress.emitted:
                    self._fail(
                        name,
                        f"provider {name} failed after {self._progress.tokens} token(s) and "
                        f"{self._progress.tool_calls} tool call(s): {reason}",
                    )
                if position + 1 == len(self._route):
                    self._fail(name, "all LLM providers failed: " + "; ".join(failures))
                following = self._route[position + 1].provider.name
                fallback = events_pb2.LlmProviderFallback(from_provider=name, to_provider=following, reason=reason)
                metrics.FALLBACKS.labels(name, following).inc()
                yield self._emit(llm_pb2.GenerateResponse(fallback=fallback), fallback)

    async def _attempt(self, link: Link) -> AsyncIterator[llm_pb2.GenerateResponse]:
        provider = link.provider
        progress = self._progress
        progress.provider, progress.model = provider.name, self.request.model or provider.model
        assembler = ToolCallAssembler()
        finish_reason = "stop"
        with link.breaker.guarded():
            async for item in provider.stream(self.request):
                if isinstance(item, TextDelta):
                    if progress.first_output is None:
                        progress.first_output = time.monotonic()
                    token = events_pb2.LlmToken(text=item.text, index=progress.tokens)
                    progress.tokens += 1
                    progress.text.append(item.text)
                    yield self._emit(llm_pb2.GenerateResponse(token=token), token)
                elif isinstance(item, ToolCallDelta):
                    assembler.add(item)
                elif isinstance(item, Usage):
                    progress.prompt_tokens, progress.completion_tokens = item.prompt_tokens, item.completion_tokens
                elif isinstance(item, Finish):
                    finish_reason = item.reason
                    progress.model = item.model or progress.model
            try:
                calls = assembler.complete()
            except ToolCallError as exc:
                raise ProviderError(provider.name, str(exc), transient=False) from None
        for call in calls:
            if progress.first_output is None:
                progress.first_output = time.monotonic()
            progress.tool_calls += 1
            requested = events_pb2.LlmToolCallRequested(
                call_id=call.id, name=call.name, arguments_json=json.dumps(call.arguments)
            )
            yield self._emit(llm_pb2.GenerateResponse(tool_call=requested), requested)
        if calls and finish_reason == "stop":
            finish_reason = "tool_calls"  # Ollama reports "stop" after tool calls
        yield self._finish(finish_reason)

    def cancelled(self) -> llm_pb2.GenerateResponse:
        """The `finished` response of a generation stopped by the caller."""
        return self._finish("cancelled")

    def _finish(self, reason: str) -> llm_pb2.GenerateResponse:
        progress = self._progress
        now = time.monotonic()
        duration = now - progress.started
        completion = progress.completion_tokens
        if completion is None:  # the provider reported no usage: count what was streamed
            completion = progress.tokens + progress.tool_calls
        generating = now - (progress.first_output or progress.started)
        rate = completion / generating if generating > 0 else 0.0
        first_ms = (progress.first_output - progress.started) * 1000 if progress.first_output else 0.0
        finished = events_pb2.LlmFinished(
            text="".join(progress.text),
            prompt_tokens=progress.prompt_tokens,
            completion_tokens=completion,
            duration_ms=duration * 1000,
            tokens_per_second=rate,
            provider=progress.provider,
            model=progress.model,
            finish_reason=reason,
            first_token_ms=first_ms,
        )
        self._finished = True
        provider = progress.provider or "none"
        metrics.REQUESTS.labels(provider, reason).inc()
        metrics.TOKENS.labels(provider, "prompt").inc(progress.prompt_tokens)
        metrics.TOKENS.labels(provider, "completion").inc(completion)
        metrics.DURATION.labels(provider).observe(duration)
        if progress.first_output:
            metrics.FIRST_TOKEN.labels(provider).observe(progress.first_output - progress.started)
        return self._emit(llm_pb2.GenerateResponse(finished=finished), finished)

    def _fail(self, provider: str, message: str) -> None:
        self._publish(events_pb2.LlmError(provider=provider, message=message, code="UNAVAILABLE"))
        metrics.REQUESTS.labels(self._progress.provider or provider, "error").inc()
        raise GenerationUnavailable(message)

    def _emit(self, response: llm_pb2.GenerateResponse, payload: ProtoMessage) -> llm_pb2.GenerateResponse:
        # The caller forwards the payload as an event under the bus copy's id: one event, not two.
        response.event_id = self._publish(payload)
        return response

    def _publish(self, payload: ProtoMessage) -> str:
        event = new_event("llm", payload, session_id=self._session_id, correlation_id=self._correlation_id)
        self._publisher.publish(event)
        return event.id


def _reason(exc: BaseException) -> str:
    if isinstance(exc, CircuitOpenError):
        return "circuit breaker open after repeated failures; not trying until it resets"
    if isinstance(exc, ProviderError):
        return exc.message
    return str(exc)


def _kind(exc: BaseException) -> str:
    if isinstance(exc, CircuitOpenError):
        return "breaker_open"
    if isinstance(exc, ProviderError) and exc.status:
        return f"http_{exc.status}"
    return "transient" if isinstance(exc, ProviderError) and exc.transient else "invalid_answer"
