"""The provider chain: every provider behind its own circuit breaker, in fallback order."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from coda.bus.publisher import EventPublisher
from coda.config import LlmConfig
from coda.llm import metrics
from coda.llm.providers import Provider, build_providers
from coda.llm.types import ProviderError
from coda.runtime.breaker import Breaker, BreakerChange
from coda.schema import new_event
from coda.v1 import events_pb2

log = logging.getLogger(__name__)


def _not_the_providers_fault(exc: BaseException) -> bool:
    """Failures caused by this request (a 4xx, a malformed answer) do not trip it; the shared
    breaker already leaves cancellation out."""
    return isinstance(exc, ProviderError) and not exc.transient


def _breaker_events(provider: Provider, publisher: EventPublisher) -> Callable[[BreakerChange], None]:
    def changed(change: BreakerChange) -> None:
        metrics.BREAKER_STATE.labels(provider.name).set(change.proto_state)
        log.warning(
            "llm provider breaker %s",
            change.state,
            extra={"provider": provider.name, "reason": change.reason},
        )
        publisher.publish(
            new_event(
                "llm",
                events_pb2.ComponentBreaker(
                    component="llm",
                    target=target_of(provider),
                    state=change.proto_state,
                    previous_state=change.proto_previous,
                    reason=change.reason,
                ),
            )
        )

    return changed


def target_of(provider: Provider) -> str:
    return f"{provider.name} ({provider.kind}{': ' + provider.base_url if provider.base_url else ''})"


@dataclass
class Link:
    provider: Provider
    breaker: Breaker

    @property
    def state(self) -> int:
        return self.breaker.proto_state


class ProviderChain:
    def __init__(
        self, config: LlmConfig, publisher: EventPublisher, providers: dict[str, Provider] | None = None
    ) -> None:
        self.order = list(config.chain)
        self.links: dict[str, Link] = {}
        for name, provider in (providers or build_providers(config)).items():
            breaker = Breaker(
                name,
                fail_max=config.breaker_fail_max,
                reset_seconds=config.breaker_reset_seconds,
                exclude=_not_the_providers_fault,
                on_change=_breaker_events(provider, publisher),
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
