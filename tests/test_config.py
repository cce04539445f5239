import re
import tomllib
from pathlib import Path

import pytest

from coda import config as config_module
from coda.config import ConfigError


def test_defaults_match_the_documented_contract() -> None:
    config = config_module.load(None, env={})
    assert config.grpc.address == "127.0.0.1:50051"
    assert config.bridge.port == 8765
    assert config.metrics.address == "127.0.0.1:9464"
    assert config.bus.backend == "memory"
    assert config.log.level == "warning"


def test_file_then_environment_overrides(tmp_path: Path) -> None:
    path = tmp_path / "coda.toml"
    path.write_text('[bus]\nmax_events = 10\nbackend = "file"\n[bus.nats]\nreplicas = 3\n')
    config = config_module.load(path, env={"CODA_BUS__MAX_EVENTS": "20", "CODA_BUS__NATS__SERVERS": '["nats://a:1"]'})
    assert config.bus.max_events == 20
    assert config.bus.backend == "file"
    assert config.bus.nats.replicas == 3
    assert config.bus.nats.servers == ["nats://a:1"]
    assert config.source == str(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[bus]\nmax_evnts = 1\n", "unknown key(s) max_evnts in [bus]"),
        ("[bus]\nmax_events = 'many'\n", "bus.max_events: expected an integer"),
        ("[nope]\n", "unknown key(s) nope in top level"),
        ("[bus\n", "config file"),
    ],
)
def test_invalid_files_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "coda.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_module.load(path, env={})


def test_boolean_and_json_overrides_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"bus\.nats\.servers: expected JSON"):
        config_module.load(None, env={"CODA_BUS__NATS__SERVERS": "[oops"})


def test_render_round_trips(tmp_path: Path) -> None:
    config = config_module.load(None, env={"CODA_BUS__MAX_EVENTS": "7"})
    path = tmp_path / "out.toml"
    path.write_text(config_module.render(config))
    again = config_module.load(path, env={})
    assert again.bus.max_events == 7
    assert config_module.to_dict(again) == config_module.to_dict(config)


def test_every_key_is_documented_and_the_reference_is_fresh() -> None:
    text = config_module.reference_markdown()
    undocumented = [line for line in text.splitlines() if line.startswith("| `") and line.endswith("|  |")]
    assert not undocumented, f"config keys without a `#:` comment: {undocumented}"
    reference = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
    assert reference.read_text() == text, "docs/configuration.md is stale: run `coda config --reference`"


def test_coda_config_shows_that_secrets_are_set_but_never_what_they_are() -> None:
    config = config_module.load(
        None,
        env={
            "CODA_BRIDGE__JWT_SECRET": "jwt-very-secret",
            "CODA_BRIDGE__STATIC_TOKENS": '{"tok-live-123": "s-kitchen"}',
            "CODA_LLM__PROVIDERS": '[{"name": "cloud", "api_key": "sk-live-456"}]',
        },
    )
    text = config_module.render(config)
    for secret in ("jwt-very-secret", "tok-live-123", "sk-live-456"):
        assert secret not in text
    assert 'jwt_secret = "<redacted>"' in text and 'api_key = "<redacted>"' in text
    assert 'redacted_1 = "s-kitchen"' in text  # which session a token is bound to is not secret
    assert tomllib.loads(text)["bridge"]["static_tokens"] == {"redacted_1": "s-kitchen"}
    # Unset secrets stay visibly empty.
    assert 'jwt_secret = ""' in config_module.render(config_module.load(None, env={}))
