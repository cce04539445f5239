"""Per-session conversation settings: defaults from config, and how a client's change applies (pure).

Rules, the same on SessionOpen and on a mid-session ConversationSettings request:
- `voice_output` always takes the client's value (a bool has no "unset" in proto3);
- `language`, `provider`, `persona` and `voice` change only when given (non-empty);
- `traits` merge over the current ones (each 0..1, known names only).
"""

from __future__ import annotations

from coda.assistant.personality import merge_traits, trait_changes
from coda.config import AssistantConfig
from coda.v1 import events_pb2

_TEXT_FIELDS = ("language", "provider", "persona", "voice")
LIMITS = {"language": 32, "provider": 64, "persona": 4000, "voice": 128}


class SettingsError(ValueError):
    """A requested setting is invalid; the message names it."""


def default_settings(config: AssistantConfig) -> events_pb2.ConversationSettings:
    settings = events_pb2.ConversationSettings(voice_output=config.voice_output)
    settings.traits.update(config.traits)
    return settings


def apply_settings(
    current: events_pb2.ConversationSettings, change: events_pb2.ConversationSettings
) -> tuple[events_pb2.ConversationSettings, list[events_pb2.TraitChange]]:
    """The settings after `change`, and the trait changes it made. Raises SettingsError, changing nothing."""
    for name in _TEXT_FIELDS:
        value = getattr(change, name)
        if len(value) > LIMITS[name]:
            raise SettingsError(f"setting {name!r} is too long ({len(value)} > {LIMITS[name]} characters)")
    try:
        traits = merge_traits(dict(current.traits), dict(change.traits))
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
    updated = events_pb2.ConversationSettings()
    updated.CopyFrom(current)
    updated.voice_output = change.voice_output
    for name in _TEXT_FIELDS:
        if getattr(change, name):
            setattr(updated, name, getattr(change, name))
    updated.traits.clear()
    updated.traits.update(traits)
    return updated, trait_changes(dict(current.traits), traits)
