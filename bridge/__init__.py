"""The WebSocket bridge: browsers speak `ClientFrame`/`ServerFrame` over WebSocket, the bridge speaks gRPC to Coda.

Pure cores (no I/O): `codec` (frames <-> bytes), `batching` (coalescer), `auth` (tokens, origins),
`limits` (connection admission), `fanout` (filters, encode-once broadcast), `openai_api` (the
OpenAI-compatible API's wire format); rate limits use `coda.runtime.ratelimit`.
I/O shells: `upstream` (the bus link), `assistant` (Converse streams behind a circuit breaker),
`server` (websockets server, HTTP routes, connections), `http` (the HTTP/1.1 front that shares the
port with websockets), `openai_routes` (the OpenAI-compatible API's routes), `cli` (`coda bridge`).
"""
