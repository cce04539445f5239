"""The tools Coda ships with. Names and argument schemas are a contract with the LLM's agent."""

from __future__ import annotations

from coda.config import ToolsConfig
from coda.tools.api import Tool
from coda.tools.builtin.arithmetic import CALCULATE
from coda.tools.builtin.clock import get_time_tool
from coda.tools.builtin.memory import FORGET, RECALL, REMEMBER
from coda.tools.builtin.outside import http_get_tool, shell_tool
from coda.tools.builtin.status import SYSTEM_STATUS
from coda.tools.builtin.timers import (
    Timers,
    cancel_timer_tool,
    change_timer_tool,
    list_timers_tool,
    pause_timer_tool,
    resume_timer_tool,
    set_timer_tool,
)
from coda.tools.builtin.units import CONVERT_UNITS

#: Built-in tools that stay off unless a config flag turns them on.
OPT_IN: dict[str, str] = {"shell": "shell_enabled", "http_get": "http_enabled"}


def builtin_tools(config: ToolsConfig, timers: Timers) -> list[Tool]:
    return [
        get_time_tool(config.timezone),
        CALCULATE,
        CONVERT_UNITS,
        REMEMBER,
        RECALL,
        FORGET,
        set_timer_tool(timers, config.timezone),
        list_timers_tool(timers),
        change_timer_tool(timers, config.timezone),
        pause_timer_tool(timers),
        resume_timer_tool(timers),
        cancel_timer_tool(timers),
        SYSTEM_STATUS,
        shell_tool(config.output_max_bytes),
        http_get_tool(config.output_max_bytes),
    ]


def switched_off(config: ToolsConfig) -> set[str]:
    """Opt-in built-ins whose flag is off."""
    return {name for name, flag in OPT_IN.items() if not getattr(config, flag)}


__all__ = ["OPT_IN", "Timers", "builtin_tools", "switched_off"]
