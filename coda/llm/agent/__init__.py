"""The embedded intent agent: no model, sentence templates matched to intents served by tools."""

from coda.llm.agent.agent import AgentReply, IntentAgent

__all__ = ["AgentReply", "IntentAgent"]
