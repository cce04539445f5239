"""The memory component: hosts coda.v1.Memory backed by the embedded SQLite store."""

from __future__ import annotations

import grpc

from coda.memory.service import MemoryService
from coda.memory.worker import MemoryWorker
from coda.runtime.component import ServiceContext
from coda.v1 import memory_pb2_grpc


class MemoryComponent:
    name = "memory"
    service_names = ("coda.v1.Memory",)

    def __init__(self, ctx: ServiceContext) -> None:
        self.worker = MemoryWorker(ctx.config.memory, ctx.publisher)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        memory_pb2_grpc.add_MemoryServicer_to_server(MemoryService(self.worker), server)

    async def start(self) -> None:
        # The embedding model loads in the background; until then search is lexical only.
        await self.worker.start()

    async def stop(self) -> None:
        await self.worker.stop()


def create(ctx: ServiceContext) -> MemoryComponent:
    return MemoryComponent(ctx)
