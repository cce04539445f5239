"""The pure part of the MCP bridge: names, config checks, result and error conversion, restart backoff.

No I/O here; `source` and `server` are the asyncio shells around it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import mcp_types

from coda.config import McpServerConfig
from coda.tools.api import ErrorCode, InvalidArguments, ToolFailure
from coda.tools.registry import NAME_PATTERN

#: Between the server prefix and the MCP tool name: `files__read`. Tool names must match
#: NAME_PATTERN (OpenAI's function-name rule: letters, digits, '_' and '-', at most 64), so no dots.
SEPARATOR = "__"
SERVER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_INVALID_CHARS = re.compile(r"[^A-Za-z0-9_-]")
MAX_NAME = 64
#: Longest message taken from a failing MCP tool's content.
MAX_ERROR_CHARS = 2000


def breaker_name(server: str) -> str:
    """The one circuit breaker every tool of a server shares."""
    return f"mcp:{server}"


def check_servers(servers: Sequence[McpServerConfig]) -> None:
    """Raise ValueError naming the first bad `[[tools.mcp]]` entry."""
    seen: set[str] = set()
    for index, server in enumerate(servers):
        where = f"tools.mcp[{index}]"
        if not SERVER_NAME.match(server.name) or SEPARATOR in server.name:
            raise ValueError(
                f"{where}: name {server.name!r} must be 1-32 letters, digits, '_' or '-' without '{SEPARATOR}' "
                "(it prefixes the server's tool names)"
            )
        if server.name in seen:
            raise ValueError(f"{where}: another MCP server is already named {server.name!r}")
        seen.add(server.name)
        if bool(server.command) == bool(server.url):
            raise ValueError(
                f"{where} ({server.name}): set exactly one of `command` (stdio) or `url` (streamable HTTP)"
            )
        if server.url and not server.url.startswith(("http://", "https://")):
            raise ValueError(f"{where} ({server.name}): url {server.url!r} must start with http:// or https://")
        for key in ("timeout_seconds", "connect_timeout_seconds", "restart_initial_seconds", "restart_max_seconds"):
            if getattr(server, key) < 0:
                raise ValueError(f"{where} ({server.name}): {key} must not be negative")


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def prefixed_names(server: str, tool_names: Iterable[str]) -> dict[str, str]:
    """Coda's name for each MCP tool of `server`: `<server>__<tool>`, made to fit NAME_PATTERN.

    Characters the pattern refuses become '_'; a name too long is cut and ends in a hash of the
    original; two tools that end up with one name are told apart by that hash too. The mapping is
    deterministic (the same listing always gives the same names). Returns {coda_name: mcp_name}.
    """
    prefix = server + SEPARATOR
    names: dict[str, str] = {}
    # Names that need no change go first, so they keep their plain form when another would clash.
    for original in sorted(set(tool_names), key=lambda n: (bool(_INVALID_CHARS.search(n)), n)):
        clean = _INVALID_CHARS.sub("_", original) or "_"
        name = prefix + clean
        if len(name) > MAX_NAME or name in names:
            suffix = "_" + _short_hash(original)
            name = (prefix + clean)[: MAX_NAME - len(suffix)] + suffix
        if not NAME_PATTERN.match(name) or name in names:
            continue  # a server name too long to leave room: check_servers keeps it at 32
        names[name] = original
    return names


def input_schema(tool: mcp_types.Tool) -> dict[str, Any]:
    """The tool's arguments schema as Coda registers it (MCP requires an object schema)."""
    schema = dict(tool.input_schema or {})
    schema.setdefault("type", "object")
    return schema


def description(tool: mcp_types.Tool, server: str) -> str:
    text = tool.description or tool.title or f"The {tool.name} tool of MCP server {server}."
    return " ".join(text.split())


def _text_of(blocks: Sequence[Any]) -> str:
    return "\n".join(block.text for block in blocks if isinstance(block, mcp_types.TextContent))


def result_value(result: mcp_types.CallToolResult, server: str, tool: str) -> Any:
    """The JSON value a successful call answers; a result flagged `isError` raises ToolFailure (FAILED).

    Structured content wins when the server sends it; otherwise text blocks become one string (or a
    list of strings), and other blocks (images, resources) keep their MCP JSON shape.
    """
    if result.is_error:
        message = _text_of(result.content).strip() or "no message"
        raise ToolFailure(f"MCP tool {tool!r} of server {server!r} failed: {message[:MAX_ERROR_CHARS]}")
    if result.structured_content is not None:
        return result.structured_content
    if all(isinstance(block, mcp_types.TextContent) for block in result.content):
        texts = [block.text for block in result.content if isinstance(block, mcp_types.TextContent)]
        return texts[0] if len(texts) == 1 else texts
    return [block.model_dump(mode="json", by_alias=True, exclude_none=True) for block in result.content]


#: JSON-RPC error codes (mcp_types.jsonrpc) that say the connection is gone.
CONNECTION_CLOSED = mcp_types.CONNECTION_CLOSED


def call_failure(code: int, message: str, server: str, tool: str) -> ToolFailure:
    """The ToolFailure for a JSON-RPC error answering tools/call."""
    if code == mcp_types.INVALID_PARAMS:
        return InvalidArguments(f"MCP server {server!r} refused the arguments of {tool!r}: {message}")
    if code == CONNECTION_CLOSED:
        return ToolFailure(
            f"MCP server {server!r} closed the connection during {tool!r}: {message}",
            ErrorCode.TOOL_ERROR_CODE_UNAVAILABLE,
        )
    if code == mcp_types.METHOD_NOT_FOUND:
        return ToolFailure(
            f"MCP server {server!r} does not serve tools: {message}", ErrorCode.TOOL_ERROR_CODE_UNAVAILABLE
        )
    return ToolFailure(f"MCP server {server!r} failed {tool!r} (JSON-RPC error {code}): {message}")


def progress_fraction(progress: float, total: float | None) -> float:
    """An MCP progress notification as Coda's 0..1 fraction (negative: unknown)."""
    if not total or total <= 0:
        return -1.0
    return max(0.0, min(1.0, progress / total))


@dataclass
class Backoff:
    """Restart delays: `initial`, doubling up to `maximum`; `reset` after a good start."""

    initial: float
    maximum: float
    attempts: int = 0

    def next(self) -> float:
        delay = min(self.maximum, self.initial * (2**self.attempts)) if self.initial > 0 else 0.0
        self.attempts += 1
        return max(0.0, delay)

    def reset(self) -> None:
        self.attempts = 0


# --- serving Coda's tools over MCP (`coda mcp`) ----------------------------------------------------


def served_tool(name: str, description_text: str, parameters_json: str) -> mcp_types.Tool:
    """A Coda ToolSpec as an MCP tool (its JSON Schema is passed through unchanged)."""
    try:
        schema = json.loads(parameters_json) if parameters_json else {}
    except json.JSONDecodeError:
        schema = {}
    if not isinstance(schema, dict) or schema.get("type") != "object":
        schema = {"type": "object", "properties": {}}
    return mcp_types.Tool(name=name, description=description_text, input_schema=schema)


def served_result(result_json: str) -> mcp_types.CallToolResult:
    """A Coda ToolResult as an MCP result: the JSON as text, and as structured content when an object."""
    try:
        value = json.loads(result_json) if result_json else None
    except json.JSONDecodeError:
        value = None
    return mcp_types.CallToolResult(
        content=[mcp_types.TextContent(type="text", text=result_json)],
        structured_content=value if isinstance(value, dict) else None,
    )


def served_error(code_name: str, message: str, field: str = "") -> mcp_types.CallToolResult:
    """A Coda ToolError as an MCP tool error result (`isError`), readable by the calling model."""
    where = f" (field {field})" if field else ""
    return mcp_types.CallToolResult(
        content=[mcp_types.TextContent(type="text", text=f"{code_name}: {message}{where}")], is_error=True
    )
