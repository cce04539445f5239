"""MCP: a real MCP server process mounted into a real Coda host, and `coda mcp` driven by the `mcp` client SDK."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import mcp_types
import pytest
from assistant_helpers import converser, final_turn, replay_provider_env, sse_text, sse_tool_call
from conftest import ROOT, Processes, make_config, running_host
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from tools_helpers import ExecuteStream, collect_events

from coda import config as config_module
from coda.config import McpServerConfig
from coda.llm.replay import ReplayServer, Reply
from coda.tools import ErrorCode, InvalidArguments, ToolFailure
from coda.tools.mcp import core
from coda.v1 import events_pb2, tools_pb2, tools_pb2_grpc

E = ErrorCode
FIXTURE = str(Path(__file__).resolve().parent / "mcp_fixture_server.py")
FIXTURE_TOOLS = {"fx__add", "fx__crash", "fx__echo", "fx__fail", "fx__grow", "fx__shrink", "fx__slow"}


# -- the pure core -------------------------------------------------------------------------------


def test_names_get_the_server_prefix_and_fit_the_function_name_rules() -> None:
    names = core.prefixed_names("files", ["read", "a.b", "a_b", "x" * 80, "dir/list"])
    assert names["files__read"] == "read"
    assert names["files__a_b"] == "a_b", "a name needing no change keeps its plain form"
    dotted = next(name for name, original in names.items() if original == "a.b")
    assert dotted.startswith("files__a_b_") and dotted != "files__a_b"
    assert names["files__dir_list"] == "dir/list"
    long = next(name for name, original in names.items() if original == "x" * 80)
    assert len(long) == 64
    assert all(core.NAME_PATTERN.match(name) for name in names)
    assert core.prefixed_names("files", ["read", "a.b", "a_b"]) == core.prefixed_names("files", ["a_b", "a.b", "read"])


@pytest.mark.parametrize(
    ("servers", "message"),
    [
        ([McpServerConfig(name="a.b", command="x")], "name 'a.b' must be"),
        ([McpServerConfig(name="a__b", command="x")], "without '__'"),
        ([McpServerConfig(name="a", command="x"), McpServerConfig(name="a", command="y")], "already named 'a'"),
        ([McpServerConfig(name="a")], "exactly one of `command`"),
        ([McpServerConfig(name="a", command="x", url="http://h/mcp")], "exactly one of `command`"),
        ([McpServerConfig(name="a", url="ftp://h")], "must start with http"),
    ],
)
def test_bad_server_entries_are_refused_by_name(servers: list[McpServerConfig], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        core.check_servers(servers)


def test_coda_config_shows_a_servers_environment_names_but_not_their_values() -> None:
    servers = [{"name": "gh", "command": "github-mcp", "env": {"GITHUB_TOKEN": "ghp-live-123"}}]
    text = config_module.render(config_module.load(None, env={"CODA_TOOLS__MCP": json.dumps(servers)}))
    assert "GITHUB_TOKEN" in text and "ghp-live-123" not in text


def test_results_and_errors_convert() -> None:
    text = mcp_types.TextContent(type="text", text="hello")
    assert core.result_value(mcp_types.CallToolResult(content=[text]), "s", "t") == "hello"
    structured = mcp_types.CallToolResult(content=[text], structured_content={"result": 3})
    assert core.result_value(structured, "s", "t") == {"result": 3}
    image = mcp_types.ImageContent(type="image", data="aGk=", mime_type="image/png")
    assert core.result_value(mcp_types.CallToolResult(content=[text, image]), "s", "t")[1]["mimeType"] == "image/png"
    with pytest.raises(ToolFailure, match="MCP tool 't' of server 's' failed: boom") as failed:
        core.result_value(
            mcp_types.CallToolResult(content=[mcp_types.TextContent(type="text", text="boom")], is_error=True), "s", "t"
        )
    assert failed.value.code == E.TOOL_ERROR_CODE_FAILED
    assert isinstance(core.call_failure(mcp_types.INVALID_PARAMS, "bad", "s", "t"), InvalidArguments)
    assert core.call_failure(mcp_types.CONNECTION_CLOSED, "gone", "s", "t").code == E.TOOL_ERROR_CODE_UNAVAILABLE
    assert core.call_failure(-1, "odd", "s", "t").code == E.TOOL_ERROR_CODE_FAILED
    assert core.progress_fraction(1, 4) == 0.25 and core.progress_fraction(3, None) == -1.0
    assert core.progress_fraction(9, 4) == 1.0


def test_backoff_doubles_to_its_cap_and_resets() -> None:
    backoff = core.Backoff(0.5, 3.0)
    assert [backoff.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    backoff.reset()
    assert backoff.next() == 0.5


def test_served_tools_and_results_keep_schemas_and_flag_errors() -> None:
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
    tool = core.served_tool("t", "d", json.dumps(schema))
    assert tool.input_schema == schema
    assert core.served_tool("t", "d", "not json").input_schema["type"] == "object"
    ok = core.served_result('{"a":1}')
    assert ok.structured_content == {"a": 1} and not ok.is_error
    assert core.served_result("[1]").structured_content is None
    error = core.served_error("INVALID_ARGUMENTS", "x: required", "/x")
    assert error.is_error and "INVALID_ARGUMENTS: x: required (field /x)" in error.content[0].text


# -- a real MCP server process mounted into a real host ------------------------------------------


def mcp_env(*servers: dict[str, Any], **extra: str) -> dict[str, str]:
    return {"CODA_TOOLS__MCP": json.dumps(list(servers)), **extra}


def fixture_server(**overrides: Any) -> dict[str, Any]:
    return {"name": "fx", "command": sys.executable, "args": [FIXTURE], "restart_initial_seconds": 0.2, **overrides}


async def listed(channel: grpc.aio.Channel) -> dict[str, tools_pb2.ListToolsResponse]:
    response = await tools_pb2_grpc.ToolsStub(channel).ListTools(tools_pb2.ListToolsRequest())
    return {spec.name: spec for spec in response.tools}


async def eventually(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.2) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


async def test_a_mounted_server_is_listed_called_validated_timed_out_and_restarted(tmp_path: Path) -> None:
    config = make_config(tmp_path, **mcp_env(fixture_server()))
    async with running_host(config, "bus,tools") as host, grpc.aio.insecure_channel(host.address) as channel:
        tools = await listed(channel)
        assert set(tools) >= FIXTURE_TOOLS and "calculate" in tools, sorted(tools)
        schema = json.loads(tools["fx__add"].parameters_json_schema)
        assert schema["type"] == "object" and set(schema["required"]) == {"a", "b"}
        assert schema["properties"]["a"]["type"] == "number"
        assert tools["fx__add"].description == "Add two numbers."

        stream = ExecuteStream(channel)
        stream.call("ok", "fx__add", {"a": 2, "b": 3.5})
        stream.call("bad", "fx__add", {"a": "two"})
        stream.call("fails", "fx__fail", {})
        final = await stream.until_final("ok", "bad", "fails", timeout=20)
        assert final["ok"][0] == "result" and json.loads(final["ok"][1].result_json) == {"result": 5.5}
        assert final["bad"][0] == "error" and final["bad"][1].code == E.TOOL_ERROR_CODE_INVALID_ARGUMENTS
        assert final["bad"][1].field in ("/a", "/b")
        assert final["fails"][0] == "error" and final["fails"][1].code == E.TOOL_ERROR_CODE_FAILED
        assert "the disk is on fire" in final["fails"][1].message

        # A slow call times out; another is cancelled; both after reporting progress.
        stream.call("late", "fx__slow", {"seconds": 60}, timeout_ms=1500)
        stream.call("stop", "fx__slow", {"seconds": 60})
        await stream.until(lambda kind, msg: kind == "progress" and msg.call_id == "stop", timeout=20)
        stream.cancel("stop")
        final = await stream.until_final("late", "stop", timeout=20)
        assert final["late"][1].code == E.TOOL_ERROR_CODE_TIMEOUT
        assert final["stop"][1].code == E.TOOL_ERROR_CODE_CANCELLED
        assert any(kind == "progress" and msg.message == "sleeping" for kind, msg in stream.of("late"))

        # notifications/tools/list_changed updates the registry.
        stream.call("grow", "fx__grow", {})
        await stream.until_final("grow", timeout=20)

        async def doubled() -> bool:
            return "fx__double" in await listed(channel)

        await eventually(doubled, timeout=15)
        stream.call("twice", "fx__double", {"x": 21})
        assert json.loads((await stream.until_final("twice", timeout=20))["twice"][1].result_json) == {"result": 42}
        stream.call("shrink", "fx__shrink", {})
        await stream.until_final("shrink", timeout=20)

        async def undoubled() -> bool:
            return "fx__double" not in await listed(channel)

        await eventually(undoubled, timeout=15)
        stream.call("gone", "fx__double", {"x": 1})
        assert (await stream.until_final("gone", timeout=20))["gone"][1].code == E.TOOL_ERROR_CODE_NOT_FOUND

        # The server dies: UNAVAILABLE, a component.breaker event saying why, then a restart.
        stream.call("crash", "fx__crash", {})
        crashed = (await stream.until_final("crash", timeout=20))["crash"][1]
        assert crashed.code == E.TOOL_ERROR_CODE_UNAVAILABLE, crashed
        stream.call("while-down", "fx__echo", {"text": "anyone?"})
        down = (await stream.until_final("while-down", timeout=20))["while-down"][1]
        assert down.code == E.TOOL_ERROR_CODE_UNAVAILABLE and "fx" in down.message, down

        def reopened_and_closed(events: list[events_pb2.Event]) -> bool:
            states = [e.component_breaker.state for e in events if e.component_breaker.target == "mcp:fx"]
            return events_pb2.BREAKER_STATE_OPEN in states and states[-1] == events_pb2.BREAKER_STATE_CLOSED

        events = await collect_events(channel, ["component.breaker"], reopened_and_closed, timeout=40)
        opened = next(e.component_breaker for e in events if e.component_breaker.state == events_pb2.BREAKER_STATE_OPEN)
        assert opened.component == "tools" and "MCP server 'fx'" in opened.reason and "restarting in" in opened.reason
        assert "process exited" in opened.reason, opened.reason
        closed = [e.component_breaker for e in events if e.component_breaker.state == events_pb2.BREAKER_STATE_CLOSED]
        assert "MCP server 'fx' is back with" in closed[-1].reason, closed[-1].reason

        stream.call("back", "fx__echo", {"text": "hello again"})
        back = (await stream.until_final("back", timeout=20))["back"]
        assert back[0] == "result" and json.loads(back[1].result_json) == {"result": "hello again"}
        stream.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_streamable_http_server_is_mounted_by_url(tmp_path: Path, processes: Processes) -> None:
    port = free_port()
    child, _ = processes.start([FIXTURE, "--http", str(port)])
    url = f"http://127.0.0.1:{port}/mcp"

    async def reachable() -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    await eventually(reachable, timeout=30)
    server = {"name": "web", "url": url, "restart_initial_seconds": 0.2, "restart_max_seconds": 1.0}
    config = make_config(tmp_path, **mcp_env(server))
    async with running_host(config, "bus,tools") as host, grpc.aio.insecure_channel(host.address) as channel:
        assert "web__echo" in await listed(channel)
        stream = ExecuteStream(channel)
        stream.call("1", "web__echo", {"text": "over http"})
        kind, message = (await stream.until_final("1", timeout=20))["1"]
        assert kind == "result" and json.loads(message.result_json) == {"result": "over http"}

        # The HTTP server goes away: calls answer UNAVAILABLE at once; it comes back on its port and so do they.
        processes.stop(child)
        stream.call("2", "web__echo", {"text": "anyone?"})
        kind, message = (await stream.until_final("2", timeout=20))["2"]
        assert kind == "error" and message.code == E.TOOL_ERROR_CODE_UNAVAILABLE, message

        def down_for_a_reason(events: list[events_pb2.Event]) -> bool:
            return any(
                e.component_breaker.target == "mcp:web"
                and e.component_breaker.state == events_pb2.BREAKER_STATE_OPEN
                and "MCP server 'web' closed the connection; restarting in" in e.component_breaker.reason
                for e in events
            )

        await collect_events(channel, ["component.breaker"], down_for_a_reason, timeout=20)
        child, _ = processes.start([FIXTURE, "--http", str(port)])
        attempt = 2

        async def answers() -> bool:
            nonlocal attempt
            attempt += 1
            stream.call(str(attempt), "web__echo", {"text": "back"})
            kind, _message = (await stream.until_final(str(attempt), timeout=20))[str(attempt)]
            return kind == "result"

        await eventually(answers, timeout=40, interval=0.5)
        stream.close()
    processes.stop(child)


async def test_an_assistant_turn_calls_a_mounted_tool(tmp_path: Path) -> None:
    async with ReplayServer() as replay:
        replay.queue(
            Reply(body=sse_tool_call("fx__add", {"a": 40, "b": 2}, call_id="call_add")),
            Reply(body=sse_text(["The", " sum", " is", " 42."])),
        )
        env = replay_provider_env(replay.base_url, **mcp_env(fixture_server()))
        async with (
            running_host(make_config(tmp_path, **env)) as host,
            grpc.aio.insecure_channel(host.address) as channel,
        ):
            chat = converser(channel)
            await chat.open()
            events = await chat.turn("what is forty plus two", timeout=60)
            result = next(e.tool_result for e in events if e.HasField("tool_result"))
            assert result.name == "fx__add" and json.loads(result.result_json) == {"result": 42.0}
            assert final_turn(events).assistant_text == "The sum is 42."
            offered = {t["function"]["name"] for t in replay.exchanges[0].request["tools"]}
            assert "fx__add" in offered
            tool_message = replay.exchanges[1].request["messages"][-1]
            assert tool_message["role"] == "tool" and json.loads(tool_message["content"]) == {"result": 42.0}
            await chat.close()


# -- `coda mcp`: Coda's tools served over MCP ----------------------------------------------------


def _child_env() -> dict[str, str]:
    return {"PYTHONPATH": str(ROOT), "CODA_LLM__EMBEDDED_MODEL": "", "CODA_METRICS__ADDRESS": ""}


async def check_coda_over_mcp(session: ClientSession) -> None:
    await session.initialize()
    tools = {tool.name: tool for tool in (await session.list_tools()).tools}
    assert {"calculate", "get_time", "memory_search", "memory_remember"} <= set(tools), sorted(tools)
    assert tools["calculate"].input_schema["required"] == ["expression"]

    result = await session.call_tool("calculate", {"expression": "12*7"})
    assert not result.is_error and result.structured_content == {"expression": "12*7", "result": 84}
    progress: list[tuple[float, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, message))

    status = await session.call_tool("system_status", {}, progress_callback=on_progress)
    assert not status.is_error and status.structured_content["components"]["tools"] == "SERVING"
    assert progress and progress[0][1] == "checking component health", progress

    bad = await session.call_tool("calculate", {"expr": "12*7"})
    assert bad.is_error and bad.content[0].text.startswith("INVALID_ARGUMENTS:"), bad
    unknown = await session.call_tool("no_such_tool", {})
    assert unknown.is_error and "NOT_FOUND" in unknown.content[0].text

    stored = await session.call_tool("memory_remember", {"text": "My bicycle is painted teal"})
    assert not stored.is_error and stored.structured_content["stored"] is True
    found = await session.call_tool("memory_search", {"query": "what colour is my bicycle"})
    assert not found.is_error
    assert any("teal" in hit["text"] for hit in found.structured_content["results"]), found.structured_content
    refused = await session.call_tool("memory_search", {"query": ""})
    assert refused.is_error


@pytest.fixture
async def coda_host(tmp_path: Path) -> AsyncIterator[str]:
    async with running_host(make_config(tmp_path), "bus,memory,tools") as host:
        yield host.address


async def test_coda_mcp_over_stdio(coda_host: str) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "coda", "mcp", "--address", coda_host], env=_child_env(), cwd=str(ROOT)
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await asyncio.wait_for(check_coda_over_mcp(session), 120)


async def test_coda_mcp_over_streamable_http(coda_host: str, processes: Processes) -> None:
    child, banner = processes.start(
        ["-m", "coda", "mcp", "--address", coda_host, "--http", "127.0.0.1:0"],
        env={**os.environ, **_child_env()},
        banner="coda mcp serving",
    )
    url = banner.split()[3]
    assert url.startswith("http://127.0.0.1:") and url.endswith("/mcp")
    async with streamable_http_client(url) as (read, write), ClientSession(read, write) as session:
        await asyncio.wait_for(check_coda_over_mcp(session), 120)
    assert processes.stop(child) in (0, -15)
