"""Argument checking: JSON parsing and JSON Schema (Draft 2020-12) validation with a named field.

Every failure is an `InvalidArguments` whose `field` is a JSON pointer (RFC 6901) to the offending
value, or to the missing / unexpected property, so a caller (often an LLM) can correct itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError, best_match

from coda.tools.api import InvalidArguments


class ToolDefinitionError(ValueError):
    """A tool cannot be registered (bad name, bad schema, duplicate)."""


def compile_schema(schema: Mapping[str, Any], tool_name: str) -> Draft202012Validator:
    """A validator for a tool's arguments; the schema must be valid and describe an object."""
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ToolDefinitionError(f"tool {tool_name!r}: invalid parameters schema: {exc.message}") from None
    if schema.get("type") != "object":
        raise ToolDefinitionError(f"tool {tool_name!r}: parameters schema must have type 'object'")
    return Draft202012Validator(schema)


def parse_arguments(text: str) -> dict[str, Any]:
    """The arguments object from its JSON text; empty text means no arguments."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArguments(
            f"arguments are not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise InvalidArguments("arguments are nested too deeply") from None
    if not isinstance(value, dict):
        raise InvalidArguments(f"arguments must be a JSON object, got {_json_type(value)}")
    return value


def validate_arguments(validator: Draft202012Validator, arguments: dict[str, Any]) -> None:
    """Raise InvalidArguments naming the most relevant offending field, if any."""
    error = best_match(validator.iter_errors(arguments))
    if error is None:
        return
    field = _offending_field(error)
    raise InvalidArguments(f"{field or 'arguments'}: {error.message}", field=field)


def json_pointer(path: Iterable[Any]) -> str:
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def _offending_field(error: ValidationError) -> str:
    path = list(error.absolute_path)
    instance = error.instance
    if error.validator == "required" and isinstance(instance, dict):
        missing = (
            [name for name in error.schema.get("required", []) if name not in instance]
            if isinstance(error.schema, dict)
            else []
        )
        if missing:
            path.append(missing[0])
    elif error.validator == "additionalProperties" and isinstance(instance, dict):
        schema = error.schema if isinstance(error.schema, dict) else {}
        known = set(schema.get("properties", {}))
        extra = sorted(name for name in instance if name not in known)
        if extra:
            path.append(extra[0])
    return json_pointer(path)


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"
