"""Sentence templates with slots, matched to intents (in the spirit of Home Assistant's default agent).

`match_intent(text)` normalises a user utterance and returns the first intent whose template
matches, with its slots already turned into tool arguments ("Tokyo" -> "Asia/Tokyo",
"twelve times seven" -> "12*7", "5 minutes" -> 300).

One module per domain, each registering its templates; they are imported here in the order they are
tried (the first template that matches and builds an intent wins, so the more specific come first).
"""

from __future__ import annotations

# Imported for their templates, which they register as they load (base.ORDER sets the order tried).
from coda.llm.agent.intents import arithmetic, clock, conversation, conversions, memory, timers  # noqa: F401
from coda.llm.agent.intents.base import CONVERSATIONAL, Intent, match_intent, normalise
from coda.llm.agent.intents.clock import HOME
from coda.llm.agent.intents.conversions import conversion_arguments, spoken_quantity
from coda.llm.agent.intents.memory import memory_kind
from coda.llm.agent.intents.timers import whole

__all__ = [
    "CONVERSATIONAL",
    "HOME",
    "Intent",
    "conversion_arguments",
    "match_intent",
    "memory_kind",
    "normalise",
    "spoken_quantity",
    "whole",
]
