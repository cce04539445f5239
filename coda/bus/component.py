"""The bus component: the EventBus service, its log backend, and the in-process publisher."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from coda.bus.backends import open_backend
from coda.bus.local import LocalPublisher
from coda.bus.service import SERVICE_NAME, BusService, add_to_server
from coda.runtime.component import ServiceContext


class BusComponent:
    name = "bus"
    service_names: Sequence[str] = (SERVICE_NAME,)

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.backend = open_backend(ctx.config.bus)
        self.service = BusService(ctx.config.bus, self.backend)
        #: What every component hosted in this process publishes through.
        self.publisher = LocalPublisher(self.service)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        add_to_server(self.service, server)

    async def start(self) -> None:
        await self.backend.open()
        self.publisher.start()

    async def stop(self) -> None:
        """Take the last local events, end subscriber streams after their queues drain, sync the log."""
        await self.publisher.flush(timeout=2.0)
        await self.service.close_streams(timeout=self.ctx.config.grpc.shutdown_grace_seconds)
        await self.publisher.close()
        await self.backend.close()


def create(ctx: ServiceContext) -> BusComponent:
    return BusComponent(ctx)
