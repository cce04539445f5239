"""Coda over the Wyoming protocol, so Home Assistant can use it for speech-to-text, text-to-speech
and as a conversation agent: `audio` and `events` (pure conversions), `handler` (one connection),
`server` (the process), `cli` (`coda wyoming`), `metrics`."""
