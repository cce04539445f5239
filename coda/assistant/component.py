"""The assistant component: hosts the Assistant service (Converse, GetSession, ListSessions)."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from coda.assistant.announcements import TimerWatch
from coda.assistant.clients import GrpcEngines
from coda.assistant.service import AssistantServicer
from coda.assistant.sessions import SessionStore
from coda.runtime.component import ServiceContext
from coda.v1 import assistant_pb2, assistant_pb2_grpc


class AssistantComponent:
    name = "assistant"
    service_names: Sequence[str] = (assistant_pb2.DESCRIPTOR.services_by_name["Assistant"].full_name,)

    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        config = ctx.config.assistant
        # Channels are looked up per call, so building the clients here does no I/O.
        engines = GrpcEngines.over(ctx.channel, config.memory_timeout_seconds)
        self.servicer = AssistantServicer(config, engines, lambda: ctx.publisher)
        self._timers = TimerWatch(lambda: ctx.channel("bus"), self.servicer.attached)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        assistant_pb2_grpc.add_AssistantServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        config = self._ctx.config.assistant
        self.servicer.attach_store(SessionStore(config.sessions_path, keep_days=config.sessions_keep_days))
        self._timers.start()

    async def stop(self) -> None:
        await self._timers.stop()
        await self.servicer.drain(self._ctx.config.assistant.cancel_grace_seconds + 2.0)
        self.servicer.close()


def create(ctx: ServiceContext) -> AssistantComponent:
    return AssistantComponent(ctx)
