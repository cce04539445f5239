"""Ending a client-streaming call before the client has finished sending, so that it learns why.

grpc's asyncio client reports INTERNAL "Internal error from Core" instead of the server's status
when one of its writes meets a call the server has already ended (grpc/grpc#36066, fix proposed in
grpc/grpc#43486). A client that sends its setup and its first content together (config and text,
open and text) races any refusal of the setup, and a client streaming audio races a call that ends
once its utterance is transcribed. Reading what the client is still sending, up to a moment, before
ending the call takes the race away for such clients; a client still streaming after that may yet
see INTERNAL.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import grpc

#: How long a refusal waits for the client to finish sending what it was about to send.
DRAIN_SECONDS = 0.25


async def drain(requests: AsyncIterator[Any], seconds: float) -> None:
    """Read and drop the client's requests until it half-closes, it fails, or `seconds` pass."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(seconds):
            async for _ in requests:
                pass


async def refuse(
    context: grpc.aio.ServicerContext,
    requests: AsyncIterator[Any],
    code: grpc.StatusCode,
    details: str,
    drain_seconds: float = DRAIN_SECONDS,
) -> NoReturn:
    """End the call with `code` and `details` once the client's pending requests have been read."""
    await drain(requests, drain_seconds)
    await context.abort(code, details)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover
