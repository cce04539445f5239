"""The tool registry: which tools exist, which are enabled, and their compiled argument schemas."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

from jsonschema import Draft202012Validator

from coda.tools.api import ErrorCode, Tool, ToolFailure
from coda.tools.validation import ToolDefinitionError, compile_schema

#: Tool names as LLM function-calling APIs accept them.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True)
class RegisteredTool:
    tool: Tool
    validator: Draft202012Validator
    #: Where it came from: "builtin", an entry point or a config plugin reference.
    origin: str

    @property
    def name(self) -> str:
        return self.tool.name

    @property
    def parameters_json(self) -> str:
        return json.dumps(self.tool.parameters, separators=(",", ":"), sort_keys=True)


class ToolRegistry:
    """Tools by name, with an allow-list and a deny-list deciding which are enabled."""

    def __init__(self, allow: Iterable[str] = (), deny: Iterable[str] = ()) -> None:
        self._tools: dict[str, RegisteredTool] = {}
        self._allow = frozenset(allow)
        self._deny = frozenset(deny)

    def add(self, tool: Tool, origin: str = "builtin") -> RegisteredTool:
        """Register a tool; raises ToolDefinitionError when its definition is unusable."""
        if not isinstance(tool, Tool):
            raise ToolDefinitionError(f"{origin}: expected a coda.tools.Tool, got {type(tool).__name__}")
        if not NAME_PATTERN.match(tool.name):
            raise ToolDefinitionError(f"{origin}: tool name {tool.name!r} must match {NAME_PATTERN.pattern}")
        existing = self._tools.get(tool.name)
        if existing is not None:
            raise ToolDefinitionError(f"{origin}: tool {tool.name!r} is already registered by {existing.origin}")
        if not callable(tool.run):
            raise ToolDefinitionError(f"{origin}: tool {tool.name!r} has no callable run")
        entry = RegisteredTool(tool, compile_schema(tool.parameters, tool.name), origin)
        self._tools[tool.name] = entry
        return entry

    def remove(self, name: str) -> bool:
        """Unregister a tool (an MCP server dropped it); False when it was not registered."""
        return self._tools.pop(name, None) is not None

    def is_enabled(self, name: str) -> bool:
        return name in self._tools and name not in self._deny and (not self._allow or name in self._allow)

    def get(self, name: str) -> RegisteredTool:
        """An enabled tool; raises ToolFailure with NOT_FOUND or DISABLED otherwise."""
        entry = self._tools.get(name)
        if entry is None:
            known = ", ".join(sorted(t.name for t in self.enabled())) or "none"
            raise ToolFailure(f"unknown tool {name!r}; available: {known}", ErrorCode.TOOL_ERROR_CODE_NOT_FOUND)
        if not self.is_enabled(name):
            raise ToolFailure(
                f"tool {name!r} is disabled by configuration (see tools.enabled / tools.disabled "
                "and tools.shell_enabled / tools.http_enabled)",
                ErrorCode.TOOL_ERROR_CODE_DISABLED,
            )
        return entry

    def enabled(self) -> list[RegisteredTool]:
        """Enabled tools, sorted by name."""
        return [self._tools[name] for name in sorted(self._tools) if self.is_enabled(name)]

    def names(self) -> list[str]:
        """Every registered tool name, enabled or not."""
        return sorted(self._tools)
