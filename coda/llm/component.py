"""The `llm` component: `coda.v1.Llm` over the configured provider chain."""

from __future__ import annotations

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

    def add_to_server(self, server: grpc.aio.Server) -> None:
        llm_pb2_grpc.add_LlmServicer_to_server(self._servicer, server)

    async def start(self) -> None:
        log.info("llm chain", extra={"chain": " -> ".join(target_of(link.provider) for link in self.chain.route())})

    async def stop(self) -> None:
        """Generations are streams of the gRPC server; its grace period drains them."""


def create(ctx: ServiceContext) -> LlmComponent:
    return LlmComponent(ctx)
