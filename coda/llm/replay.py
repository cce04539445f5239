"""A loopback HTTP server that replays recorded model-server answers (tests, benchmarks, demos).

No real model server can run here offline, so tests and `bench/llm.py` point the OpenAI-compatible
provider at this server instead. It speaks real HTTP/1.1 over TCP, streams a recorded
`text/event-stream` body with chunked transfer coding (one chunk per SSE event, or cut into
arbitrary byte sizes), and records what it was sent and when the client hung up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Reply:
    """One scripted answer."""

    status: int = 200
    body: bytes = b""
    content_type: str = "text/event-stream"
    #: Seconds between two chunks.
    chunk_delay: float = 0.0
    #: 0: one chunk per SSE event; otherwise fixed-size chunks (to split events and characters).
    chunk_size: int = 0
    #: Send this many chunks, then go silent with the connection open (for read timeouts).
    stall_after: int | None = None
    #: Send this many chunks, then drop the connection (a crash mid-stream).
    drop_after: int | None = None
    #: Wait this long before sending the status line (for first-byte timeouts).
    delay_before_headers: float = 0.0

    @classmethod
    def recorded(cls, path: str | Path, **options: Any) -> Reply:
        """A recording: `*.sse` streams with status 200; `*_error_<status>.json` error answers."""
        path = Path(path)
        body = path.read_bytes()
        if path.suffix == ".json":
            status = int(path.stem.rsplit("_", 1)[-1])
            return cls(status=status, body=body, content_type="application/json", **options)
        return cls(body=body, **options)

    def chunks(self) -> list[bytes]:
        if self.chunk_size:
            return [self.body[i : i + self.chunk_size] for i in range(0, len(self.body), self.chunk_size)]
        if self.content_type != "text/event-stream":
            return [self.body]
        events = self.body.replace(b"\r\n", b"\n").split(b"\n\n")
        return [event + b"\n\n" for event in events if event.strip()]


@dataclass
class Exchange:
    """What happened on one connection."""

    request: dict[str, Any]
    path: str
    headers: dict[str, str]
    chunks_total: int = 0
    chunks_sent: int = 0
    #: The client closed the connection before the answer was complete.
    client_closed: bool = False
    #: Chunks already sent when the server noticed the client had closed.
    closed_after_chunks: int | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class ReplayServer:
    def __init__(self, default: Reply | None = None) -> None:
        self.replies: list[Reply] = []
        self.default = default
        self.exchanges: list[Exchange] = []
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def queue(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.base_url

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()

    async def __aenter__(self) -> ReplayServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self._exchange(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        request_line, *lines = head.split("\r\n")
        headers = {}
        for line in lines:
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        try:
            request = json.loads(body) if body else {}
        except json.JSONDecodeError:
            request = {"invalid_json": body.decode("utf-8", "replace")}
        reply = self.replies.pop(0) if self.replies else self.default
        exchange = Exchange(request=request, path=request_line.split(" ")[1], headers=headers)
        self.exchanges.append(exchange)
        try:
            if reply is None:
                reply = Reply(status=500, body=b'{"error": {"message": "replay server has no reply queued"}}')
            await self._send(reply, exchange, reader, writer)
        except ConnectionError:
            self._note_hang_up(exchange)
        finally:
            exchange.done.set()

    async def _send(
        self, reply: Reply, exchange: Exchange, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        hung_up = asyncio.ensure_future(reader.read(1))  # the client never sends more: data or EOF means gone
        try:
            if reply.delay_before_headers:
                await asyncio.sleep(reply.delay_before_headers)
            chunks = reply.chunks()
            exchange.chunks_total = len(chunks)
            reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
                      500: "Internal Server Error", 503: "Service Unavailable"}.get(reply.status, "Status")  # fmt: skip
            writer.write(
                (
                    f"HTTP/1.1 {reply.status} {reason}\r\nContent-Type: {reply.content_type}\r\n"
                    "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                ).encode()
            )
            await writer.drain()
            for index, chunk in enumerate(chunks):
                if reply.drop_after is not None and index >= reply.drop_after:
                    return
                if reply.stall_after is not None and index >= reply.stall_after:
                    await hung_up
                    self._note_hang_up(exchange)
                    return
                if index and reply.chunk_delay:
                    await asyncio.wait([hung_up], timeout=reply.chunk_delay)
                if hung_up.done():
                    self._note_hang_up(exchange)
                    return
                writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                await writer.drain()
                exchange.chunks_sent += 1
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        finally:
            hung_up.cancel()

    @staticmethod
    def _note_hang_up(exchange: Exchange) -> None:
        exchange.client_closed = True
        exchange.closed_after_chunks = exchange.chunks_sent
