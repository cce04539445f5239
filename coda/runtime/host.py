"""Host: runs a set of components on one grpc.aio server, with health, reflection and metrics.

This is the one way a Coda service starts, from `coda serve`, `coda up` and the tests alike.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Iterable
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from coda import __version__
from coda.config import Config
from coda.runtime.component import COMPONENTS, ChannelPool, Component, ServiceContext, load_factory
from coda.runtime.malformed import RejectMalformedRequests
from coda.schema import new_event
from coda.v1 import events_pb2

log = logging.getLogger(__name__)

OVERALL = ""  # the health service's name for the whole server


def parse_components(only: str | Iterable[str] | None) -> list[str]:
    """Component names in start order; `only` is a comma list or names (None: all)."""
    if only is None:
        return list(COMPONENTS)
    names = [n.strip() for n in only.split(",")] if isinstance(only, str) else [n.strip() for n in only]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in COMPONENTS]
    if unknown:
        raise ValueError(f"unknown component(s) {', '.join(unknown)}; known: {', '.join(COMPONENTS)}")
    if not names:
        raise ValueError("no component selected")
    return [n for n in COMPONENTS if n in names]


class Host:
    def __init__(self, config: Config, only: str | Iterable[str] | None = None) -> None:
        self.config = config
        self.names = parse_components(only)
        self.components: list[Component] = []
        self.address = config.grpc.address
        self.metrics_address = ""
        self._server: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._metrics_server: Any = None
        self._channels = ChannelPool(config)
        self.ctx: ServiceContext | None = None
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        size = self.config.grpc.max_message_bytes
        server = grpc.aio.server(
            interceptors=[RejectMalformedRequests()],
            options=[
                ("grpc.max_receive_message_length", size),
                ("grpc.max_send_message_length", size),
                ("grpc.so_reuseport", 0),
            ],
        )
        self._server = server
        port = server.add_insecure_port(self.config.grpc.address)
        if port == 0:
            raise OSError(f"cannot listen on {self.config.grpc.address}")
        host = self.config.grpc.address.rsplit(":", 1)[0]
        self.address = f"{host}:{port}"
        self._channels.local_address = self.address

        hosted = frozenset(self.names)
        ctx = ServiceContext(self.config, publisher=None, channels=self._channels, hosted=hosted)  # type: ignore[arg-type]
        self.ctx = ctx
        if "bus" in hosted:
            bus = load_factory("bus")(ctx)
            ctx.publisher = bus.publisher
            self.components.append(bus)
        else:
            from coda.bus.client import GrpcPublisher

            ctx.publisher = GrpcPublisher(lambda: ctx.channel("bus"), source="coda")
        self.components.extend(load_factory(name)(ctx) for name in self.names if name != "bus")

        service_names: list[str] = []
        for component in self.components:
            component.add_to_server(server)
            service_names.extend(component.service_names)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            [
                *service_names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            server,
        )
        for name in [OVERALL, *service_names]:
            await self._health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

        await server.start()
        for component in self.components:
            await component.start()
            for name in component.service_names:
                await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        await self._health.set(OVERALL, health_pb2.HealthCheckResponse.SERVING)

        if self.config.metrics.address:
            mhost, mport = self.config.metrics.address.rsplit(":", 1)
            self._metrics_server, _ = start_http_server(int(mport), addr=mhost)
            self.metrics_address = f"{mhost}:{self._metrics_server.server_port}"

        ctx.publisher.publish(
            new_event(
                "coda",
                events_pb2.SystemStarted(version=__version__, components=self.names, address=self.address),
            )
        )
        if "bus" in hosted:
            # With the log in this process, "serving" means the log already shows the start: a
            # client reading the head next sees it (on NATS the append is otherwise still in flight).
            # A log that is down does not hold up the start; the event goes when it is back.
            await bus.publisher.settle()
        log.info("coda serving", extra={"address": self.address, "components": ",".join(self.names)})

    async def stop(self, reason: str = "shutdown") -> None:
        """Stop accepting, drain streams, stop components (flushing durable state), exit cleanly."""
        if self._server is None or self._stopped.is_set():
            return
        self._stopped.set()
        await self._health.enter_graceful_shutdown()
        if self.ctx is not None and self.ctx.publisher is not None:
            self.ctx.publisher.publish(new_event("coda", events_pb2.SystemStopping(reason=reason)))
        # Components stop first so that their streams end cleanly (subscribers get their final
        # batches) before the server cancels whatever is left after the grace period.
        for component in reversed(self.components):
            try:
                await component.stop()
            except Exception:
                log.exception("component stop failed", extra={"component": component.name})
        await self._server.stop(self.config.grpc.shutdown_grace_seconds)
        await self._channels.close()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        log.info("coda stopped")

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    async def run_until_signal(self) -> None:
        """Serve until SIGTERM or SIGINT, then shut down gracefully."""
        loop = asyncio.get_running_loop()
        received = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, received.set)
        await received.wait()
        await self.stop("signal")
