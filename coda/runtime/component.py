"""The contract between the host and a component (bus, llm, memory, tools, voice, assistant).

Each component package exposes `create(ctx: ServiceContext) -> Component` in its `component`
module. `create` must not do I/O; `start` may (load models, open files) and `stop` drains.
Components reach each other only over gRPC, through `ctx.channel(name)`, even when hosted in the
same process, so that any split across processes behaves the same.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import grpc

from coda.bus.publisher import EventPublisher
from coda.config import Config

#: Component name -> module with `create(ctx)`, in start order (the bus first).
COMPONENTS: dict[str, str] = {
    "bus": "coda.bus.component",
    "memory": "coda.memory.component",
    "tools": "coda.tools.component",
    "llm": "coda.llm.component",
    "voice": "coda.voice.component",
    "assistant": "coda.assistant.component",
}


class Component(Protocol):
    #: The component's name, a key of COMPONENTS.
    name: str
    #: Fully-qualified gRPC service names it serves (for health and reflection).
    service_names: Sequence[str]

    def add_to_server(self, server: grpc.aio.Server) -> None: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class ChannelPool:
    """Shared, lazily created gRPC channels to other components, closed by the host."""

    def __init__(self, config: Config) -> None:
        self._config = config
        self._channels: dict[str, grpc.aio.Channel] = {}
        #: The address this process is bound to; empty endpoints resolve to it.
        self.local_address = config.grpc.address

    def address_of(self, component: str) -> str:
        return getattr(self._config.endpoints, component) or self.local_address

    def channel(self, component: str) -> grpc.aio.Channel:
        address = self.address_of(component)
        channel = self._channels.get(address)
        if channel is None:
            size = self._config.grpc.max_message_bytes
            channel = grpc.aio.insecure_channel(
                address,
                options=[
                    ("grpc.max_receive_message_length", size),
                    ("grpc.max_send_message_length", size),
                    ("grpc.enable_retries", 1),
                ],
            )
            self._channels[address] = channel
        return channel

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()


@dataclass
class ServiceContext:
    config: Config
    publisher: EventPublisher
    channels: ChannelPool
    #: Names of the components hosted by this process.
    hosted: frozenset[str] = field(default_factory=frozenset)

    def channel(self, component: str) -> grpc.aio.Channel:
        """A channel to a component; call it in `start()` or per request, not in `create()`."""
        return self.channels.channel(component)


def load_factory(name: str):  # type: ignore[no-untyped-def]
    try:
        module = importlib.import_module(COMPONENTS[name])
    except KeyError:
        raise ValueError(f"unknown component {name!r}; known: {', '.join(COMPONENTS)}") from None
    return module.create
