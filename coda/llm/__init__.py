"""The LLM component: `coda.v1.Llm/Generate` over a chain of providers with breakers and fallback."""
