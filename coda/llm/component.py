"""The `llm` component: `coda.v1.Llm` over the configured provider chain."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import grpc

from coda.llm.chain import ProviderChain, target_of
from coda.llm.servicer import LlmServicer
from coda.runtime.component import ServiceContext
from coda.v1 import llm_pb2, llm_pb2_grpc

log = logging.getLogger(__name__)


class LlmComponent:
    name = "llm"
    service_names = (llm_pb2.DESCRIPTOR.services_by_name["Llm"].full_name,)

    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self.chain = ProviderChain(ctx.config.llm, ctx.publisher)
        self._servicer = LlmServicer(self.chain, ctx.publisher)
        self._loading: asyncio.Task[None] | None = None

    def add_to_server(self, server: grpc.aio.Server) -> None:
        llm_pb2_grpc.add_LlmServicer_to_server(self._servicer, server)

    async def start(self) -> None:
        log.info("llm chain", extra={"chain": " -> ".join(target_of(link.provider) for link in self.chain.route())})
        # Local models load in the background: the service answers at once (the intent agent needs no
        # model) and the first question for the model does not pay for loading it.
        self._loading = asyncio.create_task(self._load_models(), name="llm-load-models")

    async def _load_models(self) -> None:
        for link in self.chain.listed():
            load = getattr(link.provider, "load", None)
            if load is not None:
                try:
                    await load()
                except Exception as exc:  # a provider reports its own errors again on use
                    log.error("llm provider %s did not load: %s", link.provider.name, exc)

    async def stop(self) -> None:
        """Generations are streams of the gRPC server; its grace period drains them."""
        if self._loading is not None:
            self._loading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loading


def create(ctx: ServiceContext) -> LlmComponent:
    return LlmComponent(ctx)
