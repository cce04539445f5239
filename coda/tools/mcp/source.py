"""One mounted MCP server: connect, register its tools, follow list changes, restart it when it dies.

An `McpSource` owns one supervisor task. Each attempt starts the server (stdio) or reaches it
(streamable HTTP), initializes a session, lists the tools and registers each as an ordinary Coda
`Tool` named `<server>__<tool>`, whose `run` sends `tools/call` on the live session. The executor
therefore validates, times out, cancels, caps and counts those calls like any other tool's, with
one circuit breaker for the whole server (`mcp:<server>`).

When the connection ends (the process exited, a call found it closed, a ping went unanswered) the
supervisor trips that breaker with the reason, which publishes a `component.breaker` event and makes
the server's tools answer UNAVAILABLE, and tries again after a backoff delay. A good start closes the
breaker again. `notifications/tools/list_changed` makes it list the tools again and update the
registry (tools added, removed or changed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import mcp_types
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher

from coda import __version__
from coda.config import McpServerConfig
from coda.tools.api import ErrorCode, Tool, ToolContext, ToolFailure
from coda.tools.breakers import Breakers
from coda.tools.mcp import core, metrics
from coda.tools.registry import ToolRegistry
from coda.tools.validation import ToolDefinitionError

log = logging.getLogger(__name__)

CLIENT_INFO = mcp_types.Implementation(name="coda", version=__version__)
#: Seconds a ping may take before the server counts as gone.
PING_TIMEOUT_SECONDS = 5.0
#: Pages of tools/list followed at most (a server whose cursor never ends cannot hang the refresh).
MAX_LIST_PAGES = 100


class _WatchedDispatcher(JSONRPCDispatcher):  # type: ignore[type-arg]
    """The SDK's JSON-RPC dispatcher, telling its owner when its receive loop ends (the server is gone)."""

    def __init__(self, read: Any, write: Any, on_end: Callable[[], None]) -> None:
        super().__init__(read, write)
        self._on_end = on_end

    async def run(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super().run(*args, **kwargs)
        finally:
            self._on_end()


class McpSource:
    """One `[[tools.mcp]]` server, supervised; its tools live in the shared registry."""

    def __init__(self, config: McpServerConfig, registry: ToolRegistry, breakers: Breakers) -> None:
        self.config = config
        self.name = config.name
        self.breaker = core.breaker_name(config.name)
        self._registry = registry
        self._breakers = breakers
        #: Coda tool name -> MCP tool name, for the tools registered now.
        self.tools: dict[str, str] = {}
        self._session: ClientSession | None = None
        self._down_reason = f"MCP server {config.name!r} has not started yet"
        self._lost_reason = ""
        self._relist = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        #: Set once the first attempt has ended, well or badly (start-up waits for it).
        self.first_attempt = asyncio.Event()
        #: Completed starts (the first one included).
        self.starts = 0
        metrics.SERVER_UP.labels(self.name).set(0)

    @property
    def connected(self) -> bool:
        return self._session is not None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name=f"mcp:{self.name}")

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._session = None
        metrics.SERVER_UP.labels(self.name).set(0)

    # -- supervision ---------------------------------------------------------------------------

    async def _supervise(self) -> None:
        backoff = core.Backoff(self.config.restart_initial_seconds, self.config.restart_max_seconds)
        while not self._stopping:
            started_before = self.starts
            reason = await self._attempt()
            self.first_attempt.set()
            if self._stopping:
                return
            if self.starts > started_before:
                backoff.reset()
            first_failure = backoff.attempts == 0
            delay = backoff.next()
            self._down_reason = f"MCP server {self.name!r} {reason}; restarting in {delay:.1f}s"
            # Once per outage at warning level; the retries that follow only at info.
            log.log(
                logging.WARNING if first_failure else logging.INFO,
                "MCP server down",
                extra={"server": self.name, "reason": reason, "retry_in": delay},
            )
            self._breakers.trip(self.breaker, self._down_reason)
            await asyncio.sleep(delay)
            metrics.SERVER_RESTARTS.labels(self.name).inc()

    def _transport(self) -> contextlib.AbstractAsyncContextManager[Any]:
        if self.config.url:
            return streamable_http_client(self.config.url)
        params = StdioServerParameters(
            command=self.config.command,
            args=list(self.config.args),
            env=dict(self.config.env) or None,
            cwd=self.config.cwd or None,
        )
        return stdio_client(params, errlog=sys.stderr)

    def _gone(self) -> str:
        return "stopped: its process exited" if self.config.command else "closed the connection"

    def _lose(self, reason: str) -> None:
        """The connection is gone (said by the dispatcher, a call or a ping); the supervisor restarts."""
        if not self._lost_reason:
            self._lost_reason = reason
        self._wake.set()

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, mcp_types.ToolListChangedNotification):
            self._relist = True
            self._wake.set()
        elif isinstance(message, Exception):
            log.info("MCP transport error", extra={"server": self.name, "reason": repr(message)})

    async def _attempt(self) -> str:
        """One connection from start to end; returns why it ended."""
        self._lost_reason = ""
        self._relist = False
        self._wake.clear()
        what = self._gone()
        ended = ""
        connected = False
        try:
            async with contextlib.AsyncExitStack() as stack:
                try:
                    async with asyncio.timeout(self.config.connect_timeout_seconds or None):
                        read, write = await stack.enter_async_context(self._transport())
                        dispatcher = _WatchedDispatcher(read, write, lambda: self._lose(what))
                        session = await stack.enter_async_context(
                            ClientSession(
                                dispatcher=dispatcher, message_handler=self._on_message, client_info=CLIENT_INFO
                            )
                        )
                        await session.initialize()
                        await self._refresh(session)
                except TimeoutError:
                    ended = f"did not start within {self.config.connect_timeout_seconds:g}s"
                    return ended
                except Exception as exc:
                    ended = f"could not start: {_describe(exc)}"
                    return ended
                self._session = session
                connected = True
                self.starts += 1
                metrics.SERVER_UP.labels(self.name).set(1)
                self._breakers.reset(self.breaker, f"MCP server {self.name!r} is back with {len(self.tools)} tools")
                log.info("MCP server connected", extra={"server": self.name, "tools": ",".join(self.tools)})
                self.first_attempt.set()
                try:
                    ended = await self._serve(session)
                    return ended
                finally:
                    self._session = None
                    self._down_reason = f"MCP server {self.name!r} {self._lost_reason or 'lost its connection'}"
                    metrics.SERVER_UP.labels(self.name).set(0)
        except Exception as exc:
            # The SDK's task groups re-raise what ended the transport (a refused connection cancels
            # `initialize` and surfaces here), and closing a dead transport can fail too.
            log.debug("MCP connection ended with an error", extra={"server": self.name, "reason": repr(exc)})
            if ended:
                return ended
            if not connected:
                return f"could not start: {_describe(exc)}"
            return self._lost_reason or f"failed: {_describe(exc)}"

    async def _serve(self, session: ClientSession) -> str:
        """Wait for the connection to end, re-listing tools when the server says they changed."""
        ping = self.config.ping_interval_seconds if self.config.url else 0.0
        while True:
            if self._lost_reason:
                return self._lost_reason
            if self._relist:
                self._relist = False
                try:
                    await asyncio.wait_for(self._refresh(session), self.config.connect_timeout_seconds or None)
                except Exception as exc:
                    return self._lost_reason or f"failed to list its tools: {_describe(exc)}"
                continue
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), ping or None)
            except TimeoutError:
                try:
                    await asyncio.wait_for(session.send_ping(), PING_TIMEOUT_SECONDS)
                except Exception as exc:
                    return self._lost_reason or f"stopped answering pings: {_describe(exc)}"

    # -- tools ---------------------------------------------------------------------------------

    async def _list_tools(self, session: ClientSession) -> list[mcp_types.Tool]:
        tools: list[mcp_types.Tool] = []
        cursor: str | None = None
        for _ in range(MAX_LIST_PAGES):
            params = mcp_types.PaginatedRequestParams(cursor=cursor) if cursor else None
            listing = await session.list_tools(params=params)
            tools.extend(listing.tools)
            cursor = listing.next_cursor
            if not cursor:
                break
        return tools

    async def _refresh(self, session: ClientSession) -> None:
        """List the server's tools and make the registry match: add new ones, drop gone ones, update changed ones."""
        listed = {tool.name: tool for tool in await self._list_tools(session)}
        names = core.prefixed_names(self.name, listed)
        for gone in set(self.tools) - set(names):
            self._registry.remove(gone)
        registered: dict[str, str] = {}
        for coda_name, mcp_name in names.items():
            if coda_name in self.tools:
                self._registry.remove(coda_name)
            tool = self._tool(coda_name, listed[mcp_name])
            try:
                self._registry.add(tool, origin=f"mcp server {self.name}")
            except ToolDefinitionError as exc:
                log.error("MCP tool skipped", extra={"server": self.name, "tool": mcp_name, "reason": str(exc)})
                continue
            registered[coda_name] = mcp_name
        self.tools = registered
        metrics.SERVER_TOOLS.labels(self.name).set(len(registered))

    def _tool(self, coda_name: str, listed: mcp_types.Tool) -> Tool:
        return Tool(
            name=coda_name,
            description=core.description(listed, self.name),
            parameters=core.input_schema(listed),
            run=self._runner(listed.name),
            timeout_seconds=self.config.timeout_seconds or None,
            breaker=self.breaker,
        )

    def _runner(self, mcp_name: str) -> Callable[[dict[str, Any], ToolContext], Awaitable[Any]]:
        async def run(args: dict[str, Any], ctx: ToolContext) -> Any:
            return await self.call(mcp_name, args, ctx)

        return run

    async def call(self, mcp_name: str, args: dict[str, Any], ctx: ToolContext) -> Any:
        """Send tools/call on the live session; the executor around it owns timeout and cancel."""
        session = self._session
        if session is None:
            metrics.CLIENT_CALLS.labels(self.name, "unavailable").inc()
            raise ToolFailure(self._down_reason, ErrorCode.TOOL_ERROR_CODE_UNAVAILABLE)

        async def progress(progress: float, total: float | None, message: str | None) -> None:
            ctx.progress(message or "", core.progress_fraction(progress, total))

        outcome = "ok"
        start = time.perf_counter()
        try:
            result = await session.call_tool(mcp_name, args, progress_callback=progress)
            if result.is_error:
                outcome = "tool_error"
            return core.result_value(result, self.name, mcp_name)
        except MCPError as exc:
            outcome = "connection_closed" if exc.code == core.CONNECTION_CLOSED else "rpc_error"
            if exc.code == core.CONNECTION_CLOSED:
                self._lose(self._gone())
            raise core.call_failure(exc.code, exc.message, self.name, mcp_name) from None
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            metrics.CLIENT_CALLS.labels(self.name, outcome).inc()
            metrics.CLIENT_DURATION.labels(self.name).observe(time.perf_counter() - start)


def _describe(exc: BaseException) -> str:
    """A readable line for an exception, looking inside the task-group exception groups anyio raises."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text


async def start_all(sources: list[McpSource]) -> None:
    """Start every source; wait (at most the longest connect timeout, else 10 s) for each first attempt to end."""
    for source in sources:
        await source.start()
    if sources:
        limit = max(source.config.connect_timeout_seconds for source in sources) or None
        waits = [asyncio.create_task(source.first_attempt.wait()) for source in sources]
        _, pending = await asyncio.wait(waits, timeout=limit + 1.0 if limit else 10.0)
        for task in pending:
            task.cancel()
