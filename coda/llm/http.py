"""A small streaming HTTP/1.1 client on asyncio streams, enough for model servers.

Why not a library: generation needs exactly one thing done well, a POST whose answer is read
chunk by chunk with a deadline per chunk, and a connection that is really closed the moment the
caller stops reading (cancellation must stop the model within one chunk). One connection per
request, no keep-alive, so closing is unambiguous.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

_MAX_HEADER_BYTES = 64 * 1024


class HttpTimeout(TimeoutError):
    """No answer (or no next chunk) within the deadline."""


class HttpProtocolError(ConnectionError):
    """The server's answer is not valid HTTP/1.1."""


@dataclass(frozen=True)
class Url:
    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, url: str) -> Url:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        return cls(parts.scheme, parts.hostname, port, path)

    @property
    def host_header(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


class HttpResponse:
    def __init__(
        self,
        status: int,
        reason: str,
        headers: dict[str, str],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        read_timeout: float,
    ) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers
        self._reader = reader
        self._writer = writer
        self._read_timeout = read_timeout

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (transfer coding removed); each wait is bounded by the read timeout."""
        if self.headers.get("transfer-encoding", "").lower().endswith("chunked"):
            while True:
                size_line = await self._read(self._reader.readline())
                try:
                    size = int(size_line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise HttpProtocolError(f"bad chunk size line {size_line[:40]!r}") from None
                if size == 0:
                    return
                data = await self._read(self._reader.readexactly(size + 2))
                yield data[:-2]
        elif "content-length" in self.headers:
            remaining = int(self.headers["content-length"])
            while remaining > 0:
                data = await self._read(self._reader.read(min(remaining, 65536)))
                if not data:
                    raise HttpProtocolError("connection closed before the end of the body")
                remaining -= len(data)
                yield data
        else:
            while data := await self._read(self._reader.read(65536)):
                yield data

    async def read_all(self, limit: int = 1024 * 1024) -> bytes:
        body = bytearray()
        async for chunk in self.chunks():
            body += chunk
            if len(body) >= limit:
                break
        return bytes(body[:limit])

    def close(self) -> None:
        """Drop the connection at once; the server sees it closed."""
        if not self._writer.is_closing():
            self._writer.close()

    async def _read(self, operation):  # type: ignore[no-untyped-def]
        try:
            return await asyncio.wait_for(operation, self._read_timeout)
        except TimeoutError:
            raise HttpTimeout(f"no data from the server for {self._read_timeout:g}s") from None
        except asyncio.IncompleteReadError:
            raise HttpProtocolError("connection closed in the middle of a chunk") from None


async def post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    connect_timeout: float,
    read_timeout: float,
) -> HttpResponse:
    """Send a POST and return once the status line and headers are in; the body is read by the caller."""
    target = Url.parse(url)
    ssl_context = ssl.create_default_context() if target.scheme == "https" else None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(target.host, target.port, ssl=ssl_context, limit=_MAX_HEADER_BYTES),
            connect_timeout,
        )
    except TimeoutError:
        raise HttpTimeout(f"no connection to {target.host_header} within {connect_timeout:g}s") from None
    try:
        lines = [
            f"POST {target.path} HTTP/1.1",
            f"Host: {target.host_header}",
            f"Content-Length: {len(body)}",
            "Connection: close",
            *(f"{name}: {value}" for name, value in headers.items()),
        ]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await asyncio.wait_for(writer.drain(), read_timeout)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), read_timeout)
    except TimeoutError:
        writer.close()
        raise HttpTimeout(f"no answer from {target.host_header} within {read_timeout:g}s") from None
    except asyncio.IncompleteReadError:
        writer.close()
        raise HttpProtocolError(f"{target.host_header} closed the connection without answering") from None
    except asyncio.LimitOverrunError:
        writer.close()
        raise HttpProtocolError(f"{target.host_header} sent oversized headers") from None
    except BaseException:
        writer.close()
        raise
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        writer.close()
        raise HttpProtocolError(f"bad status line {status_line[:60]!r}")
    response_headers: dict[str, str] = {}
    for line in header_lines:
        name, colon, value = line.partition(":")
        if colon:
            response_headers[name.strip().lower()] = value.strip()
    return HttpResponse(
        int(parts[1]), parts[2] if len(parts) > 2 else "", response_headers, reader, writer, read_timeout
    )
