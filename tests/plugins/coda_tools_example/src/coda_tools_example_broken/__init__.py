"""A plugin whose import fails: the tools service must log it and carry on."""

import coda_tools_example_missing_dependency  # noqa: F401

TOOLS: list[object] = []
