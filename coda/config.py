"""The one configuration system: a TOML file plus environment overrides, every default stated here.

Where the file comes from, first match wins: `--config PATH`, `$CODA_CONFIG`, `./coda.toml`.
Each section below is a `[section]` table in the file. Any key can be overridden from the
environment as `CODA_<SECTION>__<KEY>` (double underscore), e.g. `CODA_BUS__MAX_EVENTS=5000` or
`CODA_GRPC__ADDRESS=0.0.0.0:50051`. Lists and tables given in the environment are JSON
(`CODA_LLM__CHAIN='["ollama","embedded"]'`); booleans accept 1/0, true/false, yes/no, on/off.

`coda config` prints the effective configuration as TOML-like text; docs/configuration.md is the
reference for every key.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "CODA_"


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key."""


@dataclass
class GrpcConfig:
    #: Address every service of `coda serve` listens on.
    address: str = "127.0.0.1:50051"
    #: Largest gRPC message accepted or sent, in bytes.
    max_message_bytes: int = 4 * 1024 * 1024
    #: Seconds given to in-flight calls and streams to finish on shutdown.
    shutdown_grace_seconds: float = 5.0


@dataclass
class EndpointsConfig:
    """Where each component is reached over gRPC. Empty: the local `grpc.address`."""

    bus: str = ""
    llm: str = ""
    memory: str = ""
    tools: str = ""
    voice: str = ""
    assistant: str = ""


@dataclass
class MetricsConfig:
    #: Prometheus HTTP endpoint of `coda serve` (host:port); empty disables it.
    address: str = "127.0.0.1:9464"


@dataclass
class LogConfig:
    #: debug, info, warning (default: quiet), error.
    level: str = "warning"
    #: "text" or "json".
    format: str = "text"


@dataclass
class NatsConfig:
    #: NATS server URLs.
    servers: list[str] = field(default_factory=lambda: ["nats://127.0.0.1:4222"])
    #: JetStream stream name.
    stream: str = "CODA_EVENTS"
    #: Subject prefix; an event's subject is `<prefix>.<family>.<kind>`.
    subject_prefix: str = "coda.events"
    #: Retention by age in seconds (0: unlimited); count and bytes come from the bus section.
    max_age_seconds: float = 0.0
    #: Stream replicas (1 for a single server, 3 for a three-node cluster).
    replicas: int = 1
    #: JetStream de-duplication window for idempotent publish, in seconds.
    duplicate_window_seconds: float = 120.0
    #: Seconds to wait for a connection at start before failing.
    connect_timeout_seconds: float = 5.0


@dataclass
class BusConfig:
    #: "memory" (default), "file" (durable log under `path`) or "nats" (JetStream).
    backend: str = "memory"
    #: Directory of the durable log for the file backend.
    path: str = "var/bus"
    #: Retention: at most this many events ...
    max_events: int = 100_000
    #: ... and at most this many bytes of serialized events.
    max_bytes: int = 64 * 1024 * 1024
    #: Largest serialized event accepted by Publish.
    max_event_bytes: int = 256 * 1024
    #: A Subscribe batch holds at most this many events ...
    batch_max_events: int = 256
    #: ... and waits at most this long for more events once it has one.
    batch_max_ms: float = 2.0
    #: Events a subscriber may have queued before it is cut off with RESOURCE_EXHAUSTED.
    subscriber_queue_events: int = 10_000
    #: fsync the durable log every N milliseconds (0: on every append).
    fsync_interval_ms: float = 50.0
    nats: NatsConfig = field(default_factory=NatsConfig)


# --- component sections: each is owned by its component; add keys with a comment and a default.


@dataclass
class BridgeConfig:
    #: WebSocket + HTTP listen address of the bridge.
    host: str = "127.0.0.1"
    port: int = 8765
    #: Coda's gRPC address (bus and assistant); empty: `grpc.address`.
    coda_address: str = ""


@dataclass
class LlmConfig:
    #: Provider names tried in order (fallback chain); each must be in `providers` or "embedded".
    chain: list[str] = field(default_factory=lambda: ["embedded"])


@dataclass
class MemoryConfig:
    #: SQLite database file of the embedded store.
    path: str = "var/memory.db"


@dataclass
class ToolsConfig:
    #: Default per-call timeout in seconds.
    timeout_seconds: float = 10.0


@dataclass
class VoiceConfig:
    #: Silence that ends an utterance, in milliseconds.
    silence_ms: int = 700


@dataclass
class AssistantConfig:
    #: Most tool rounds in one turn before the answer is forced.
    max_tool_rounds: int = 4


@dataclass
class Config:
    grpc: GrpcConfig = field(default_factory=GrpcConfig)
    endpoints: EndpointsConfig = field(default_factory=EndpointsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    bus: BusConfig = field(default_factory=BusConfig)
    bridge: BridgeConfig = field(default_factory=BridgeConfig)
    llm: LlmConfig = field(default_factory=LlmConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    voice: VoiceConfig = field(default_factory=VoiceConfig)
    assistant: AssistantConfig = field(default_factory=AssistantConfig)
    #: Where the file came from ("" when none was read).
    source: str = ""

    def endpoint(self, component: str) -> str:
        """The gRPC address of a component: its `endpoints` entry or the local server."""
        return getattr(self.endpoints, component) or self.grpc.address


def _convert(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return _build(hint, value, key)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"1", "true", "yes", "on", "0", "false", "no", "off"}:
            return value.lower() in {"1", "true", "yes", "on"}
        raise ConfigError(f"{key}: expected a boolean, got {value!r}")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
    if hint is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if origin is list:
        (item_hint,) = typing.get_args(hint)
        if isinstance(value, str):
            value = _json(value, key)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_convert(v, item_hint, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, item_hint = typing.get_args(hint)
        if isinstance(value, str):
            value = _json(value, key)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        return {str(k): _convert(v, item_hint, f"{key}.{k}") for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        return value
    return value


def _json(text: str, key: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{key}: expected JSON, got {text!r} ({exc.msg})") from None


def _build(cls: Any, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"[{prefix}]" if prefix else "top level"
        raise ConfigError(f"unknown key(s) {', '.join(unknown)} in {where}; known: {', '.join(sorted(names))}")
    kwargs = {
        name: _convert(value, hints[name], f"{prefix}.{name}" if prefix else name) for name, value in data.items()
    }
    return cls(**kwargs)


def _merge(base: dict[str, Any], path: list[str], value: str) -> None:
    node = base
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{'.'.join(path)}: cannot override inside a non-table value")
    node[path[-1]] = value


def _env_overrides(env: typing.Mapping[str, str]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        path = [p.lower() for p in name[len(ENV_PREFIX) :].split("__")]
        _merge(data, path, value)
    return data


def _deep_update(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value
    return base


def load(path: str | os.PathLike[str] | None = None, env: typing.Mapping[str, str] | None = None) -> Config:
    """Load the configuration: defaults, then the file, then environment overrides."""
    env = os.environ if env is None else env
    chosen = path or env.get("CODA_CONFIG") or ("coda.toml" if Path("coda.toml").is_file() else None)
    data: dict[str, Any] = {}
    if chosen:
        try:
            data = tomllib.loads(Path(chosen).read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {chosen} not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {chosen}: {exc}") from None
    _deep_update(data, _env_overrides(env))
    data.pop("source", None)
    config: Config = _build(Config, data, "")
    config.source = str(chosen or "")
    return config


def to_dict(config: Config) -> dict[str, Any]:
    data = dataclasses.asdict(config)
    data.pop("source", None)
    return data


def render(config: Config) -> str:
    """The effective configuration as TOML text (what `coda config` prints)."""
    lines: list[str] = []

    def emit(table: dict[str, Any], name: str) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
        tables = {k: v for k, v in table.items() if isinstance(v, dict)}
        if name:
            lines.append(f"\n[{name}]")
        for key, value in scalars.items():
            lines.append(f"{key} = {_toml_value(value)}")
        for key, value in tables.items():
            emit(value, f"{name}.{key}" if name else key)

    emit(to_dict(config), "")
    return "\n".join(lines).lstrip() + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return str(value)
