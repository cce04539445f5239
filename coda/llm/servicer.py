"""The gRPC face of the LLM component: moves messages, owns cancellation, maps failures to status codes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc

from coda.bus.publisher import EventPublisher
from coda.llm import metrics
from coda.llm.chain import Link, ProviderChain
from coda.llm.generation import Generation, GenerationUnavailable
from coda.llm.requests import InvalidRequest, from_start
from coda.llm.types import GenerationRequest, ProviderError
from coda.runtime.malformed import MalformedRequest
from coda.schema import new_event
from coda.v1 import events_pb2, llm_pb2, llm_pb2_grpc

log = logging.getLogger(__name__)


class LlmServicer(llm_pb2_grpc.LlmServicer):
    def __init__(self, chain: ProviderChain, publisher: EventPublisher) -> None:
        self._chain = chain
        self._publisher = publisher

    # grpc.aio lets a streaming method write with context.write and return None; the generated base
    # class only knows the iterator form.
    async def Generate(  # type: ignore[override]
        self, request_iterator: AsyncIterator[llm_pb2.GenerateRequest], context: grpc.aio.ServicerContext
    ) -> None:
        try:
            first = await anext(aiter(request_iterator))
        except StopAsyncIteration:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no request: the first request must be a start")
        if first.WhichOneof("request") != "start":
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"the first request must be a start, got {first.WhichOneof('request') or 'an empty request'}",
            )
        start = first.start
        request, route = await self._checked(start, context)
        generation = Generation(
            request, route, self._publisher, session_id=start.session_id, correlation_id=start.correlation_id
        )
        await self._serve(generation, request_iterator, context)

    async def _checked(
        self, start: llm_pb2.GenerateStart, context: grpc.aio.ServicerContext
    ) -> tuple[GenerationRequest, list[Link]]:
        """The request and the providers to try, or the call ended with INVALID_ARGUMENT saying why."""
        try:
            return from_start(start), self._chain.route(start.options.provider)
        except InvalidRequest as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except KeyError:
            known = ", ".join(self._chain.links)
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"unknown provider {start.options.provider!r}; configured: {known}"
            )
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    async def _serve(
        self,
        generation: Generation,
        request_iterator: AsyncIterator[llm_pb2.GenerateRequest],
        context: grpc.aio.ServicerContext,
    ) -> None:
        control: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def watch() -> None:
            try:
                async for request in request_iterator:
                    if not control.done():
                        control.set_result("cancel" if request.HasField("cancel") else "second start")
                    return
            except MalformedRequest:
                # Stopped like a cancel; the guard ends the call with INVALID_ARGUMENT once this returns.
                if not control.done():
                    control.set_result("malformed")

        async def produce() -> None:
            async for response in generation.run():
                await context.write(response)

        producer = asyncio.create_task(produce())
        watcher = asyncio.create_task(watch())
        try:
            first: list[asyncio.Future[Any]] = [producer, control]
            await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
            if not producer.done():
                producer.cancel()  # closes the upstream stream within the chunk being read
                with contextlib.suppress(asyncio.CancelledError):
                    await producer
                if control.result() in ("cancel", "malformed"):
                    await context.write(generation.cancelled())
                    return
                await context.write(generation.cancelled())
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, "only the first request may be a start; later ones may cancel"
                )
            producer.result()
        except GenerationUnavailable as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            log.exception("llm generation failed")
            self._publisher.publish(
                new_event("llm", events_pb2.LlmError(message=f"internal error: {exc}", code="INTERNAL"))
            )
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error in llm: {type(exc).__name__}: {exc}")
        finally:
            for task in (producer, watcher):
                task.cancel()
            await asyncio.gather(producer, watcher, return_exceptions=True)

    async def Prefill(
        self, prefill: llm_pb2.PrefillRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.PrefillResponse:
        prompt, route = await self._checked(prefill.start, context)
        # The provider a generation would try first; its breaker is neither consulted nor fed.
        link = next((link for link in route if link.state == events_pb2.BREAKER_STATE_CLOSED), None)
        if link is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no provider to prefill: every circuit is open")
        try:
            done = await link.provider.prefill(prompt)
        except ProviderError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"prefill failed: {exc.message}")
        name = link.provider.name
        metrics.PREFILL_TOKENS.labels(name, "evaluated").inc(done.evaluated_tokens)
        metrics.PREFILL_TOKENS.labels(name, "cached").inc(done.cached_tokens)
        return llm_pb2.PrefillResponse(
            provider=name,
            prompt_tokens=done.prompt_tokens,
            cached_tokens=done.cached_tokens,
            evaluated_tokens=done.evaluated_tokens,
        )

    async def ListProviders(
        self, request: llm_pb2.ListProvidersRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.ListProvidersResponse:
        return llm_pb2.ListProvidersResponse(
            providers=[
                llm_pb2.ProviderInfo(
                    name=link.provider.name,
                    kind=link.provider.kind,
                    model=link.provider.model,
                    base_url=link.provider.base_url,
                    breaker=link.state,  # type: ignore[arg-type]
                )
                for link in self._chain.listed()
            ]
        )
