"""The voice component: the coda.v1.Voice service with its engines, loaded off the event loop."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from coda.runtime.component import ServiceContext
from coda.v1 import voice_pb2_grpc
from coda.voice.engines.factory import Engines, build_engines
from coda.voice.service import VoiceServicer


class VoiceComponent:
    name = "voice"
    service_names: Sequence[str] = ("coda.v1.Voice",)

    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx
        self.servicer = VoiceServicer(ctx.config.voice, ctx.publisher)
        self.engines: Engines | None = None

    def add_to_server(self, server: grpc.aio.Server) -> None:
        voice_pb2_grpc.add_VoiceServicer_to_server(self.servicer, server)

    async def start(self) -> None:
        engines = build_engines(self._ctx.config.voice, self._ctx.publisher)
        await engines.vad.load()
        await engines.stt.load()
        await engines.tts.load()
        self.engines = engines
        self.servicer.set_engines(engines)

    async def stop(self) -> None:
        if self.engines is not None:
            await self.engines.stt.close()
            await self.engines.tts.close()


def create(ctx: ServiceContext) -> VoiceComponent:
    return VoiceComponent(ctx)
