"""Coda's tools: a registry of tools with validated arguments, served over gRPC as `coda.v1.Tools`.

The extension API is re-exported here: `Tool`, `ToolContext`, `tool`, `ToolFailure`,
`InvalidArguments` and `ErrorCode` (see coda.tools.api).
"""

from coda.tools.api import NO_ARGUMENTS, ErrorCode, InvalidArguments, Tool, ToolContext, ToolFailure, tool

__all__ = ["NO_ARGUMENTS", "ErrorCode", "InvalidArguments", "Tool", "ToolContext", "ToolFailure", "tool"]
