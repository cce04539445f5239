"""Prometheus metrics of MCP: calls to mounted servers (client side) and requests `coda mcp` served."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

CLIENT_CALLS = Counter(
    "coda_mcp_client_calls_total",
    "tools/call requests sent to mounted MCP servers, by server and outcome (ok, tool_error, rpc_error, "
    "connection_closed, cancelled, unavailable).",
    ["server", "outcome"],
)
CLIENT_DURATION = Histogram(
    "coda_mcp_client_call_duration_seconds",
    "Duration of tools/call requests to mounted MCP servers, by server.",
    ["server"],
    buckets=_BUCKETS,
)
SERVER_UP = Gauge("coda_mcp_server_up", "Whether a mounted MCP server is connected (1) or down (0).", ["server"])
SERVER_RESTARTS = Counter(
    "coda_mcp_server_restarts_total",
    "Times a mounted MCP server was started again after it died or failed.",
    ["server"],
)
SERVER_TOOLS = Gauge("coda_mcp_server_tools", "Tools a mounted MCP server currently offers.", ["server"])

SERVED_REQUESTS = Counter(
    "coda_mcp_served_requests_total",
    "Requests `coda mcp` answered, by method (tools/list, tools/call) and outcome (ok, tool_error, unavailable).",
    ["method", "outcome"],
)
SERVED_DURATION = Histogram(
    "coda_mcp_served_request_duration_seconds",
    "Duration of requests `coda mcp` answered, by method.",
    ["method"],
    buckets=_BUCKETS,
)
