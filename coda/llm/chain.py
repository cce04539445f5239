"""The provider chain: every provider behind its own circuit breaker, in fallback order."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import pybreaker

from coda.bus.publisher import EventPublisher
from coda.config import LlmConfig
from coda.llm import metrics
from coda.llm.providers import Provider, build_providers
from coda.llm.types import ProviderError
from coda.schema import new_event
from coda.v1 import events_pb2

log = logging.getLogger(__name__)

BREAKER_STATES = {
    pybreaker.STATE_CLOSED: events_pb2.BREAKER_STATE_CLOSED,
    pybreaker.STATE_OPEN: events_pb2.BREAKER_STATE_OPEN,
    pybreaker.STATE_HALF_OPEN: events_pb2.BREAKER_STATE_HALF_OPEN,
}


def _not_the_providers_fault(exc: BaseException) -> bool:
    """Cancellation, and failures caused by this request (a 4xx, a malformed answer), do not trip it."""
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):
        return True
    return isinstance(exc, ProviderError) and not exc.transient


class _BreakerEvents(pybreaker.CircuitBreakerListener):
    def __init__(self, provider: Provider, publisher: EventPublisher) -> None:
        self._provider = provider
        self._publisher = publisher
        self.last_failure = ""

    def failure(self, cb: pybreaker.CircuitBreaker, exc: BaseException) -> None:
        self.last_failure = str(exc)

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        state = BREAKER_STATES[new_state.name]
        previous = BREAKER_STATES.get(old_state.name, 0) if old_state else 0
        metrics.BREAKER_STATE.labels(self._provider.name).set(state)
        reason = {
            pybreaker.STATE_OPEN: f"{cb.fail_counter} consecutive failures; last: {self.last_failure}",
            pybreaker.STATE_HALF_OPEN: f"{cb.reset_timeout:g}s passed; letting a trial request through",
            pybreaker.STATE_CLOSED: "a request succeeded",
        }[new_state.name]
        log.warning(
            "llm provider breaker %s",
            new_state.name,
            extra={"provider": self._provider.name, "reason": reason},
        )
        self._publisher.publish(
            new_event(
                "llm",
                events_pb2.ComponentBreaker(
                    component="llm",
                    target=target_of(self._provider),
                    state=state,  # type: ignore[arg-type]
                    previous_state=previous,  # type: ignore[arg-type]
                    reason=reason,
                ),
            )
        )


def target_of(provider: Provider) -> str:
    return f"{provider.name} ({provider.kind}{': ' + provider.base_url if provider.base_url else ''})"


@dataclass
class Link:
    provider: Provider
    breaker: pybreaker.CircuitBreaker

    @property
    def state(self) -> int:
        return BREAKER_STATES[self.breaker.current_state]


class ProviderChain:
    def __init__(
        self, config: LlmConfig, publisher: EventPublisher, providers: dict[str, Provider] | None = None
    ) -> None:
        self.order = list(config.chain)
        self.links: dict[str, Link] = {}
        for name, provider in (providers or build_providers(config)).items():
            breaker = pybreaker.CircuitBreaker(
                fail_max=config.breaker_fail_max,
                reset_timeout=config.breaker_reset_seconds,
                exclude=[_not_the_providers_fault],
                listeners=[_BreakerEvents(provider, publisher)],
                name=name,
                throw_new_error_on_trip=False,
            )
            self.links[name] = Link(provider, breaker)
            metrics.BREAKER_STATE.labels(name).set(events_pb2.BREAKER_STATE_CLOSED)

    def route(self, provider: str = "") -> list[Link]:
        """The links to try: the configured chain, or the named provider first and then the chain."""
        if not provider:
            return [self.links[n] for n in self.order]
        if provider not in self.links:
            raise KeyError(provider)
        return [self.links[provider], *(self.links[n] for n in self.order if n != provider)]

    def listed(self) -> list[Link]:
        """Chain members first (fallback order), then providers configured but outside the chain."""
        return [self.links[n] for n in self.order] + [link for n, link in self.links.items() if n not in self.order]
