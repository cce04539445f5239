"""Model Context Protocol: other servers' tools mounted into Coda's registry, and Coda's tools served as MCP.

- `core`: the pure part (tool names under a server prefix, result and error conversion, restart backoff).
- `source`: one `[[tools.mcp]]` server, supervised: connected over stdio or streamable HTTP, its tools
  registered as ordinary tools (the tools service's executor validates, times out, cancels and caps
  them), restarted with backoff when it dies, its tool list followed on `notifications/tools/list_changed`.
- `server` and `cli`: `coda mcp`, an MCP server in front of a running Coda's Tools and Memory services.
"""
