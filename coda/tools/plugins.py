"""Third-party tools: the `coda.tools` entry point group and `tools.plugins` config references.

An entry point or reference ("package.module:attribute") resolves to a Tool, a list of Tools, or
a callable returning either. A plugin that fails to import or yields something else is logged and
skipped; it never stops the service.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable
from importlib.metadata import entry_points
from typing import Any

from coda.tools.api import Tool
from coda.tools.registry import ToolRegistry
from coda.tools.validation import ToolDefinitionError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "coda.tools"


class PluginError(ValueError):
    """A plugin reference does not resolve to tools."""


def tools_from(obj: Any, origin: str) -> list[Tool]:
    """The tools an entry point or reference resolves to."""
    if isinstance(obj, Tool):
        return [obj]
    if isinstance(obj, list | tuple):
        if all(isinstance(item, Tool) for item in obj):
            return list(obj)
        raise PluginError(f"{origin}: a list of tools may hold only coda.tools.Tool objects")
    if callable(obj):
        produced = obj()
        if isinstance(produced, Tool):
            return [produced]
        if isinstance(produced, list | tuple) and all(isinstance(item, Tool) for item in produced):
            return list(produced)
        raise PluginError(f"{origin}: the factory returned {type(produced).__name__}, not a Tool or a list of Tools")
    raise PluginError(f"{origin}: expected a Tool, a list of Tools or a callable, got {type(obj).__name__}")


def resolve_reference(reference: str) -> Any:
    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise PluginError(f"plugin {reference!r} must look like 'package.module:attribute'")
    obj: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


def _register_all(registry: ToolRegistry, tools: Iterable[Tool], origin: str) -> list[str]:
    added: list[str] = []
    for tool in tools:
        try:
            registry.add(tool, origin)
        except ToolDefinitionError as exc:
            log.error("tool plugin skipped a tool", extra={"plugin": origin, "reason": str(exc)})
            continue
        added.append(tool.name)
    return added


def load_entry_points(registry: ToolRegistry, group: str = ENTRY_POINT_GROUP) -> list[str]:
    """Register the tools of every installed entry point; returns the names added."""
    added: list[str] = []
    for entry_point in entry_points(group=group):
        origin = f"entry point {entry_point.name} = {entry_point.value}"
        try:
            tools = tools_from(entry_point.load(), origin)
        except Exception as exc:
            log.error("tool plugin failed to load", extra={"plugin": origin, "reason": f"{type(exc).__name__}: {exc}"})
            continue
        added.extend(_register_all(registry, tools, origin))
    return added


def load_references(registry: ToolRegistry, references: Iterable[str]) -> list[str]:
    """Register the tools of each "package.module:attribute" reference; returns the names added."""
    added: list[str] = []
    for reference in references:
        origin = f"plugin {reference}"
        try:
            tools = tools_from(resolve_reference(reference), origin)
        except Exception as exc:
            log.error("tool plugin failed to load", extra={"plugin": origin, "reason": f"{type(exc).__name__}: {exc}"})
            continue
        added.extend(_register_all(registry, tools, origin))
    return added
