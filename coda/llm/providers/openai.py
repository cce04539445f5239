"""OpenAI-compatible Chat Completions streaming: OpenAI, Ollama (/v1), vLLM, llama.cpp server, LM Studio."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator

from coda.config import LlmProviderConfig
from coda.llm import http
from coda.llm.openai_format import (
    TRANSIENT_STATUSES,
    MalformedChunk,
    StreamError,
    error_message,
    parse_chunk,
    request_body,
)
from coda.llm.sse import SseDecoder
from coda.llm.types import Finish, GenerationRequest, Prefilled, ProviderError, StreamItem

log = logging.getLogger(__name__)


class OpenAIProvider:
    kind = "openai"

    def __init__(self, config: LlmProviderConfig) -> None:
        self.name = config.name
        self.model = config.model
        self.base_url = config.base_url.rstrip("/")
        self._config = config
        http.Url.parse(self.base_url)  # a bad URL is a configuration error, reported at start

    async def prefill(self, request: GenerationRequest) -> Prefilled:
        """A remote server's prompt cache is its own business: nothing to do."""
        return Prefilled()

    async def stream(self, request: GenerationRequest) -> AsyncIterator[StreamItem]:
        body = json.dumps(request_body(request, self.model)).encode()
        headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
        if self._config.api_key:
            headers["Authorization"] = f"Bearer {self._config.api_key}"
        try:
            response = await http.post(
                f"{self.base_url}/chat/completions",
                body,
                headers,
                connect_timeout=self._config.connect_timeout_seconds,
                read_timeout=self._config.read_timeout_seconds,
            )
        except http.HttpTimeout as exc:
            raise ProviderError(self.name, str(exc)) from None
        except OSError as exc:
            raise ProviderError(self.name, f"cannot reach {self.base_url}: {exc.strerror or exc}") from None
        try:
            if response.status >= 400:
                detail = await self._read_error(response)
                transient = response.status >= 500 or response.status in TRANSIENT_STATUSES
                raise ProviderError(self.name, detail, transient=transient, status=response.status)
            async for item in self._items(response):
                yield item
        finally:
            # Also on cancellation: the server sees the connection close and stops generating.
            response.close()

    async def _items(self, response: http.HttpResponse) -> AsyncIterator[StreamItem]:
        decoder = SseDecoder()
        finished = False
        try:
            async for chunk in response.chunks():
                for event in decoder.feed(chunk):
                    if event.data.strip() == "[DONE]":
                        if not finished:
                            raise ProviderError(self.name, "stream ended ([DONE]) without a finish reason")
                        return
                    try:
                        items = parse_chunk(event.data)
                    except MalformedChunk as exc:
                        # Dropping a chunk could silently drop words of the answer: fail instead.
                        raise ProviderError(self.name, str(exc), transient=False) from None
                    except StreamError as exc:
                        raise ProviderError(self.name, f"error in stream: {exc}") from None
                    for item in items:
                        finished = finished or isinstance(item, Finish)
                        yield item
        except http.HttpTimeout as exc:
            raise ProviderError(self.name, f"stream stalled: {exc}") from None
        except OSError as exc:
            raise ProviderError(self.name, f"stream broken: {exc}") from None
        if not finished:
            raise ProviderError(self.name, "stream ended before the answer finished")

    async def _read_error(self, response: http.HttpResponse) -> str:
        try:
            body = await response.read_all(64 * 1024)
        except (OSError, http.HttpTimeout):
            body = b""
        return error_message(response.status, response.reason, body)
