"""Turning a `GenerateStart` into a checked `GenerationRequest`; bad input gets a precise reason."""

from __future__ import annotations

import functools
import json
import re
from typing import Any

import jsonschema

from coda.llm.types import GenerationRequest, Message, Tool, ToolCall
from coda.v1 import llm_pb2

_ROLES = {
    llm_pb2.ROLE_SYSTEM: "system",
    llm_pb2.ROLE_USER: "user",
    llm_pb2.ROLE_ASSISTANT: "assistant",
    llm_pb2.ROLE_TOOL: "tool",
}
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class InvalidRequest(ValueError):
    """The request cannot be served as sent; the message says which field and why."""


def from_start(start: llm_pb2.GenerateStart) -> GenerationRequest:
    if not start.messages:
        raise InvalidRequest("start.messages is empty: a generation needs at least one message")
    messages = tuple(_message(i, m) for i, m in enumerate(start.messages))
    tools = _tools(start.tools)
    options = start.options
    temperature = options.temperature if options.HasField("temperature") else None
    if temperature is not None and not 0.0 <= temperature <= 2.0:
        raise InvalidRequest(f"options.temperature must be between 0 and 2, got {temperature:g}")
    return GenerationRequest(
        messages=messages,
        tools=tools,
        model=options.model,
        temperature=temperature,
        max_tokens=options.max_tokens,
    )


def _message(index: int, message: llm_pb2.ChatMessage) -> Message:
    role = _ROLES.get(message.role)
    if role is None:
        raise InvalidRequest(f"messages[{index}].role is unspecified; use system, user, assistant or tool")
    if role == "tool" and not message.tool_call_id:
        raise InvalidRequest(f"messages[{index}] is a tool result without tool_call_id")
    calls = []
    for j, call in enumerate(message.tool_calls):
        where = f"messages[{index}].tool_calls[{j}]"
        if not call.name:
            raise InvalidRequest(f"{where}.name is empty")
        calls.append(ToolCall(id=call.id, name=call.name, arguments=_json_object(call.arguments_json or "{}", where)))
    return Message(
        role=role,
        content=message.content,
        tool_call_id=message.tool_call_id,
        name=message.name,
        tool_calls=tuple(calls),
    )


def _tools(specs: Any) -> tuple[Tool, ...]:
    tools: list[Tool] = []
    seen: set[str] = set()
    for i, spec in enumerate(specs):
        where = f"tools[{i}]"
        if not _TOOL_NAME.match(spec.name):
            raise InvalidRequest(f"{where}.name {spec.name!r} must be 1-64 letters, digits, '_' or '-'")
        if spec.name in seen:
            raise InvalidRequest(f"{where}.name {spec.name!r} is given twice")
        seen.add(spec.name)
        schema_json = spec.parameters_json_schema or '{"type": "object", "properties": {}}'
        schema = _json_object(schema_json, f"{where} ({spec.name}) parameters_json_schema")
        problem = _schema_problem(schema_json)
        if problem is not None:
            path, message = problem
            raise InvalidRequest(
                f"{where} ({spec.name}) parameters_json_schema is not a valid JSON Schema at {path}: {message}"
            )
        if schema.get("type", "object") != "object":
            raise InvalidRequest(
                f'{where} ({spec.name}) parameters_json_schema must describe an object ("type": "object")'
            )
        tools.append(Tool(name=spec.name, description=spec.description, parameters=schema))
    return tuple(tools)


@functools.lru_cache(maxsize=512)
def _schema_problem(schema_json: str) -> tuple[str, str] | None:
    """(path, message) when `schema_json`, a JSON object, is not a valid JSON Schema; None when it is.

    Cached by text: a caller sends the same tool schemas with every request, and checking one
    against its metaschema costs about half a millisecond, several per request on the path to the
    first token.
    """
    schema = json.loads(schema_json)
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        return "/".join(str(p) for p in exc.path) or "(root)", exc.message
    return None


def _json_object(text: str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"{where} is not valid JSON ({exc.msg} at position {exc.pos})") from None
    if not isinstance(value, dict):
        raise InvalidRequest(f"{where} must be a JSON object")
    return value
