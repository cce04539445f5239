"""The tools component: a registry of built-in and plugin tools served as `coda.v1.Tools`."""

from __future__ import annotations

import logging

import grpc

from coda.runtime.component import ServiceContext
from coda.tools.breakers import Breakers
from coda.tools.builtin import Timers, builtin_tools, switched_off
from coda.tools.executor import Executor, Limits
from coda.tools.mcp.core import check_servers
from coda.tools.mcp.source import McpSource, start_all
from coda.tools.plugins import load_entry_points, load_references
from coda.tools.registry import ToolRegistry
from coda.tools.service import ToolsServicer
from coda.tools.timer_store import TimerStore
from coda.v1 import tools_pb2_grpc

log = logging.getLogger(__name__)


class ToolsComponent:
    name = "tools"
    service_names = ("coda.v1.Tools",)

    def __init__(self, ctx: ServiceContext) -> None:
        config = ctx.config.tools
        self._config = config
        self.registry = ToolRegistry(allow=config.enabled, deny={*config.disabled, *switched_off(config)})
        self._timer_store = TimerStore(config.timers_path)
        self.timers = Timers(ctx.publisher, config.max_timers, self._timer_store)
        for tool in builtin_tools(config, self.timers):
            self.registry.add(tool)
        check_servers(config.mcp)
        breakers = Breakers(config.breaker_fail_max, config.breaker_reset_seconds, ctx.publisher)
        #: Mounted MCP servers (`[[tools.mcp]]`): their tools join the registry once connected.
        self.mcp_sources = [McpSource(server, self.registry, breakers) for server in config.mcp]
        self.executor = Executor(
            self.registry,
            breakers,
            ctx.publisher,
            Limits(
                default_timeout_seconds=config.timeout_seconds,
                timeouts=dict(config.timeouts),
                max_timeout_seconds=config.max_timeout_seconds,
                output_max_bytes=config.output_max_bytes,
            ),
            channel_factory=ctx.channel,
        )
        self._servicer = ToolsServicer(self.executor)

    def add_to_server(self, server: grpc.aio.Server) -> None:
        tools_pb2_grpc.add_ToolsServicer_to_server(self._servicer, server)

    async def start(self) -> None:
        # Plugins import third-party code, so they load here rather than in create().
        if self._config.entry_points:
            load_entry_points(self.registry)
        load_references(self.registry, self._config.plugins)
        await start_all(self.mcp_sources)
        restored, dropped = self.timers.restore()
        if restored or dropped:
            log.info("timers restored", extra={"restored": restored, "dropped_overdue": dropped})
        log.info("tools ready", extra={"tools": ",".join(entry.name for entry in self.registry.enabled())})

    async def stop(self) -> None:
        await self._servicer.close()
        await self.timers.cancel_all()
        self._timer_store.close()
        for source in self.mcp_sources:
            await source.stop()


def create(ctx: ServiceContext) -> ToolsComponent:
    return ToolsComponent(ctx)
