"""Memory: short-term turns and long-term items per session and user, with hybrid search."""
