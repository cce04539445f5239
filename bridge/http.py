"""Plain HTTP/1.1 requests on the WebSocket port: a front that reads each connection's request head and
hands the connection either to websockets or to the HTTP API.

websockets serves `GET` only (its handshake parser refuses other methods), so a `POST` with a body
never reaches `process_request`. The front sits where websockets creates its connection: `serve(...,
create_connection=...)` gets a `ServerConnection` subclass whose `connection_made` puts a `HeadReader`
in front of it. The head reader parses the request head with h11 (sans-I/O, like websockets itself):
- `GET` outside the API (the WebSocket path, `/`, `/healthz`, `/metrics`, static files): the
  connection goes to websockets exactly as if it had read the bytes itself (the same bytes are fed
  to it), so those routes behave as before, and after the hand-over nothing of the front remains on
  the WebSocket's path.
- Anything under `/v1/` except the WebSocket path, and any other method: the connection is served
  here, with the same h11 parser (keep-alive, chunked request bodies, chunked streamed answers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import h11
from websockets.asyncio.server import ServerConnection

log = logging.getLogger(__name__)

#: Largest request head (request line and headers), as websockets allows.
MAX_HEAD_BYTES = 16 * 1024
READ_SIZE = 64 * 1024


@dataclass
class HttpRequest:
    method: str
    #: The path without the query.
    path: str
    query: str
    #: Header names in lower case; a repeated header keeps its last value.
    headers: dict[str, str]
    body: bytes
    client_ip: str

    def header(self, name: str) -> str | None:
        return self.headers.get(name)


@dataclass
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)
    #: A streamed answer: its chunks are sent as they come (chunked transfer coding).
    stream: AsyncIterator[bytes] | None = None


class BodyTooLarge(Exception):
    pass


Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]
#: The answer to a request whose body is over the limit (the request without its body, the limit in bytes).
Refusal = Callable[[HttpRequest, int], HttpResponse]


def served_by_websockets(method: bytes, target: bytes, ws_path: str) -> bool:
    """Which side serves a request: websockets (GET outside /v1/, and the WebSocket path) or the API."""
    path = target.split(b"?", 1)[0].decode("ascii", "replace")
    if path == ws_path:
        return True
    return method == b"GET" and not path.startswith("/v1/")


class HttpFront:
    """The HTTP side of the port: the connections it serves, its handler, its limits."""

    def __init__(
        self,
        handler: Handler,
        *,
        ws_path: str,
        max_body_bytes: int,
        too_large: Refusal,
        head_timeout: float = 10.0,
        idle_timeout: float = 60.0,
        server_header: str = "",
        on_request: Callable[[str, str, int, float], None] | None = None,
        admit: Callable[[str], HttpResponse | None] | None = None,
        release: Callable[[str], None] | None = None,
    ) -> None:
        self.handler = handler
        self.ws_path = ws_path
        self.max_body_bytes = max_body_bytes
        self.too_large = too_large
        self.head_timeout = head_timeout
        self.idle_timeout = idle_timeout
        self.server_header = server_header.encode()
        #: (method, path, status, seconds to the answer's head) for every answered request.
        self.on_request = on_request
        #: Connection admission by client address: `admit` answers a refused connection's first
        #: request (then it is closed); every admitted connection is `release`d when it ends.
        self.admit = admit
        self.release = release
        self._transports: set[asyncio.BaseTransport] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def connection_class(self, base: type[ServerConnection] = ServerConnection) -> type[ServerConnection]:
        """The `create_connection` for websockets' `serve`: its connections start behind a HeadReader."""
        front = self

        class FrontedConnection(base):  # type: ignore[valid-type,misc]
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                reader = HeadReader(front, self, transport)
                transport.set_protocol(reader)
                reader.connection_made(transport)

            def take_over(self, transport: asyncio.Transport, head: bytes) -> None:
                """Become the transport's protocol, as websockets made it, and read the head."""
                transport.set_protocol(self)
                super().connection_made(transport)
                self.data_received(head)

        return FrontedConnection

    async def close(self) -> None:
        """Close every connection the front holds (those not handed to websockets)."""
        for transport in list(self._transports):
            transport.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=2.0)

    # --- hand-over

    def hand_to_websockets(self, connection: ServerConnection, transport: asyncio.Transport, head: bytes) -> None:
        self._transports.discard(transport)
        connection.take_over(transport, head)  # type: ignore[attr-defined]

    def serve_here(self, transport: asyncio.Transport, parser: h11.Connection, first: h11.Request) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=READ_SIZE, loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        task = loop.create_task(self._serve(parser, first, reader, writer, transport), name="http-connection")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- serving one connection

    async def _serve(
        self,
        parser: h11.Connection,
        first: h11.Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        transport: asyncio.Transport,
    ) -> None:
        peer = transport.get_extra_info("peername")
        client_ip = str(peer[0]) if peer else ""
        event: Any = first
        refusal = self.admit(client_ip) if self.admit is not None else None
        if refusal is not None:
            refusal.headers.append(("Connection", "close"))
            with contextlib.suppress(Exception):
                await self._send(parser, writer, refusal)
            self._transports.discard(transport)
            transport.close()
            return
        try:
            while True:
                if not isinstance(event, h11.Request):
                    return
                await self._answer(parser, reader, writer, event, client_ip)
                if parser.our_state is not h11.DONE or parser.their_state is not h11.DONE:
                    return
                parser.start_next_cycle()
                event = await self._next(parser, reader, self.idle_timeout)
        except (h11.ProtocolError, ConnectionError, TimeoutError, asyncio.IncompleteReadError) as exc:
            log.debug("http connection ended", extra={"error": repr(exc)})
            if isinstance(exc, h11.RemoteProtocolError) and parser.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                with contextlib.suppress(Exception):
                    await self._send(
                        parser,
                        writer,
                        HttpResponse(
                            400,
                            b'{"error": {"message": "malformed HTTP request", "type": "invalid_request_error", "param": null, "code": null}}',
                        ),
                    )
        finally:
            self._transports.discard(transport)
            transport.close()
            if self.release is not None:
                self.release(client_ip)

    async def _next(self, parser: h11.Connection, reader: asyncio.StreamReader, timeout: float) -> Any:
        while True:
            event = parser.next_event()
            if event is not h11.NEED_DATA:
                return event
            async with asyncio.timeout(timeout):
                data = await reader.read(READ_SIZE)
            parser.receive_data(data)

    async def _answer(
        self,
        parser: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        head: h11.Request,
        client_ip: str,
    ) -> None:
        started = time.perf_counter()
        target = head.target.decode("ascii", "replace")
        path, _, query = target.partition("?")
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in head.headers}
        request = HttpRequest(head.method.decode("ascii", "replace"), path, query, headers, b"", client_ip)
        try:
            request.body = await self._body(parser, reader, headers)
        except BodyTooLarge:
            response = self.too_large(request, self.max_body_bytes)
            response.headers.append(("Connection", "close"))
        else:
            try:
                response = await self.handler(request)
            except Exception:
                log.exception("http handler failed", extra={"path": path})
                response = HttpResponse(
                    500,
                    b'{"error": {"message": "internal error", "type": "server_error", "param": null, "code": null}}',
                )
        if self.on_request is not None:
            self.on_request(request.method, path, response.status, time.perf_counter() - started)
        await self._send(parser, writer, response)

    async def _body(self, parser: h11.Connection, reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise BodyTooLarge
        body = bytearray()
        while True:
            event = await self._next(parser, reader, self.head_timeout)
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.max_body_bytes:
                    raise BodyTooLarge
            elif isinstance(event, h11.EndOfMessage):
                return bytes(body)
            else:
                raise ConnectionError("the client closed the connection before the request body ended")

    async def _send(self, parser: h11.Connection, writer: asyncio.StreamWriter, response: HttpResponse) -> None:
        headers = [("Content-Type", response.content_type), ("Cache-Control", "no-cache"), *response.headers]
        if self.server_header:
            headers.append(("Server", self.server_header.decode()))
        if response.stream is None:
            headers.append(("Content-Length", str(len(response.body))))
        reason = _REASONS.get(response.status, b"")
        writer.write(parser.send(h11.Response(status_code=response.status, headers=headers, reason=reason)) or b"")
        if response.stream is None:
            if response.body:
                writer.write(parser.send(h11.Data(data=response.body)) or b"")
        else:
            try:
                async for chunk in response.stream:
                    writer.write(parser.send(h11.Data(data=chunk)) or b"")
                    await writer.drain()
            finally:
                await response.stream.aclose()  # type: ignore[attr-defined]
        writer.write(parser.send(h11.EndOfMessage()) or b"")
        await writer.drain()


_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    401: b"Unauthorized",
    403: b"Forbidden",
    404: b"Not Found",
    405: b"Method Not Allowed",
    413: b"Content Too Large",
    429: b"Too Many Requests",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}


class HeadReader(asyncio.Protocol):
    """The first protocol of every connection: reads the request head, then hands the connection over."""

    def __init__(self, front: HttpFront, connection: ServerConnection, transport: asyncio.BaseTransport) -> None:
        self.front = front
        self.connection = connection
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.parser = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        self.head = bytearray()
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.front._transports.add(transport)
        self.timer = asyncio.get_running_loop().call_later(self.front.head_timeout, transport.abort)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.head += data
        self.parser.receive_data(data)
        try:
            event = self.parser.next_event()
        except h11.RemoteProtocolError:
            # Not HTTP/1.1 as h11 reads it: websockets answers it as it always did.
            self._hand_over(None)
            return
        if event is h11.NEED_DATA:
            return
        if isinstance(event, h11.Request) and not served_by_websockets(event.method, event.target, self.front.ws_path):
            # The API side goes on with this parser, which holds the request head (and any body bytes).
            self._hand_over(event)
        else:
            self._hand_over(None)

    def _hand_over(self, request: h11.Request | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if request is None:
            self.front.hand_to_websockets(self.connection, self.transport, bytes(self.head))
        else:
            self.front.serve_here(self.transport, self.parser, request)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.front._transports.discard(self.transport)
