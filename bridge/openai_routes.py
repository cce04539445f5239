"""The OpenAI-compatible API's routes: authentication, rate limits and the gRPC calls behind them.

Chat completions are Assistant turns over `Converse`; transcription and speech are `Voice.Transcribe`
and `Voice.Synthesize`. The wire format is `openai_api` (pure); the HTTP side is `http.HttpFront`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc

from coda.runtime.ratelimit import TokenBucket
from coda.v1 import assistant_pb2, voice_pb2, voice_pb2_grpc

from . import openai_api as api
from .assistant import BREAKER_FAILURES, AssistantUnavailable
from .auth import HandshakeRefused, Principal, bearer_token
from .http import HttpRequest, HttpResponse

if TYPE_CHECKING:
    from .server import Bridge

log = logging.getLogger(__name__)

API_PREFIX = "/v1"
#: Client addresses whose request rate is tracked at once (the oldest is forgotten first).
RATE_TRACKED_CLIENTS = 10_000
AUDIO_CHUNK_BYTES = 32 * 1024
#: gRPC status -> HTTP status for the answers of the services behind the API.
_GRPC_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
}


def error_response(error: api.ApiError) -> HttpResponse:
    headers = [("WWW-Authenticate", "Bearer")] if error.status == 401 else []
    return HttpResponse(error.status, error.json_bytes(), headers=headers)


def json_response(payload: dict[str, Any], status: int = 200) -> HttpResponse:
    return HttpResponse(status, json.dumps(payload).encode())


def too_large(_request: HttpRequest, limit: int) -> HttpResponse:
    return error_response(api.ApiError(413, f"the request body is larger than {limit} bytes", code="request_too_large"))


def grpc_error(exc: grpc.aio.AioRpcError, service: str) -> api.ApiError:
    code = exc.code()
    status = _GRPC_STATUS.get(code)
    if status is None:
        return api.unavailable(f"{service} unavailable ({code.name}: {exc.details()})")
    return api.ApiError(status, f"{service}: {exc.details()}", code=code.name.lower())


class OpenAiRoutes:
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        settings = bridge.settings
        self._rate = settings.frames_per_second
        self._burst = settings.frames_burst
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        self._created = int(time.time())
        self._voice_stub: voice_pb2_grpc.VoiceAsyncStub | None = None

    def admit(self, client_ip: str) -> HttpResponse | None:
        """A new HTTP connection counts against the bridge's connection limits, as a WebSocket does."""
        refusal = self.bridge.admission.admit(client_ip)
        if refusal is None:
            return None
        self.bridge.metrics.refusals.labels(refusal[0]).inc()
        return error_response(api.ApiError(429, refusal[1], kind="rate_limit_error", code="too_many_connections"))

    def release(self, client_ip: str) -> None:
        self.bridge.admission.release(client_ip)

    async def handle(self, request: HttpRequest) -> HttpResponse:
        try:
            return await self._route(request)
        except api.ApiError as error:
            return error_response(error)

    async def _route(self, request: HttpRequest) -> HttpResponse:
        path = request.path.rstrip("/") or "/"
        if not path.startswith(API_PREFIX + "/"):
            raise api.ApiError(405, f"{request.method} is not allowed on {path}; only GET", code="method_not_allowed")
        # Limited before authentication, so that a flood of bad tokens costs no more than good requests.
        self._check_rate(request.client_ip)
        principal = self._authenticate(request)
        route = (request.method, path)
        if route == ("GET", "/v1/models"):
            return json_response(api.models_list(self._created))
        if request.method == "GET" and path.startswith("/v1/models/"):
            model = path.removeprefix("/v1/models/")
            if model not in api.MODELS:
                raise api.unknown_model(model, "known")
            return json_response({"id": model, "object": "model", "created": self._created, "owned_by": api.OWNER})
        if route == ("POST", "/v1/chat/completions"):
            return await self._chat(request, principal)
        if route == ("POST", "/v1/audio/transcriptions"):
            return await self._transcribe(request)
        if route == ("POST", "/v1/audio/speech"):
            return await self._speech(request)
        if path in ("/v1/models", "/v1/chat/completions", "/v1/audio/transcriptions", "/v1/audio/speech"):
            raise api.ApiError(405, f"{request.method} is not allowed on {path}", code="method_not_allowed")
        raise api.ApiError(404, f"unknown API route {request.method} {path}", code="unknown_url")

    def _authenticate(self, request: HttpRequest) -> Principal:
        try:
            return self.bridge.authenticator.authenticate(bearer_token(request.header("authorization"), request.query))
        except HandshakeRefused as refused:
            self.bridge.metrics.refusals.labels(refused.label).inc()
            raise api.ApiError(401, refused.reason, code="invalid_api_key") from None

    def _check_rate(self, client_ip: str) -> None:
        bucket = self._buckets.get(client_ip)
        if bucket is None:
            bucket = self._buckets[client_ip] = TokenBucket(self._rate, self._burst)
            if len(self._buckets) > RATE_TRACKED_CLIENTS:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(client_ip)
        if not bucket.try_take():
            self.bridge.metrics.refusals.labels("rate_limited").inc()
            raise api.ApiError(
                429,
                f"more than {self._rate:g} requests per second; retry in {bucket.retry_after():.2f}s",
                kind="rate_limit_error",
                code="rate_limit_exceeded",
            )

    # --- chat completions

    async def _chat(self, request: HttpRequest, principal: Principal) -> HttpResponse:
        chat = api.parse_chat_request(request.body, request.header(api.SESSION_HEADER))
        if principal.session_id:
            if chat.session_id and chat.session_id != principal.session_id:
                self.bridge.metrics.refusals.labels("permission_denied").inc()
                raise api.ApiError(
                    403, f"your token allows session {principal.session_id!r} only", code="permission_denied"
                )
            chat.session_id = principal.session_id
            chat.history = []
        try:
            self.bridge.gate.check()
        except AssistantUnavailable as exc:
            raise api.unavailable(str(exc)) from None
        turn_id = "t-" + uuid.uuid4().hex[:16]
        assembler = api.CompletionAssembler(turn_id=turn_id, include_usage=chat.include_usage)
        events = self._converse(chat, principal, turn_id)
        if not chat.stream:
            async for event in events:
                assembler.feed(event)
                if assembler.finished:
                    break
            await events.aclose()
            failure = assembler.failure()
            if failure is not None:
                raise failure
            return json_response(assembler.completion())
        # Wait for the first event before answering: a refused request still gets its HTTP status.
        first = await anext(events, None)
        if first is None:
            failure = assembler.failure()
            raise failure or api.unavailable("the assistant ended the conversation without an answer")
        return HttpResponse(
            200,
            content_type="text/event-stream",
            headers=[("X-Coda-Turn", turn_id)],
            stream=self._chunks(first, events, assembler),
        )

    async def _chunks(
        self, first: Any, events: AsyncGenerator[Any, None], assembler: api.CompletionAssembler
    ) -> AsyncIterator[bytes]:
        try:
            for chunk in assembler.feed(first):
                yield api.sse(chunk)
            if not assembler.finished:
                async for event in events:
                    for chunk in assembler.feed(event):
                        yield api.sse(chunk)
                    if assembler.finished:
                        break
            failure = assembler.failure()
            if failure is not None:
                yield api.sse(failure.body())
            yield api.SSE_DONE
        except api.ApiError as error:
            yield api.sse(error.body())
            yield api.SSE_DONE
        finally:
            await events.aclose()

    async def _converse(self, chat: api.ChatRequest, principal: Principal, turn_id: str) -> AsyncGenerator[Any, None]:
        """The turn's events from one Converse call: open the session, send the turn, read to its end."""
        stub = self.bridge.assistant
        assert stub is not None
        gate = self.bridge.gate
        # Open, the turn, then end of input (the Assistant ends the stream once the turn is over),
        # given as a list so that they leave together without a round trip each.
        requests = [
            assistant_pb2.ConverseRequest(
                open=assistant_pb2.SessionOpen(session_id=chat.session_id, user_id=principal.user_id)
            ),
            assistant_pb2.ConverseRequest(
                text=assistant_pb2.TextInput(
                    text=chat.text,
                    turn_id=turn_id,
                    client_tools=chat.tools,
                    history=chat.history,
                    continuation=chat.continuation,
                )
            ),
        ]
        call = stub.Converse(iter(requests))
        answered = False
        try:
            async for response in call:
                if not answered:
                    answered = True
                    gate.succeeded()
                if response.HasField("event"):
                    yield response.event
        except grpc.aio.AioRpcError as exc:
            if exc.code() in BREAKER_FAILURES:
                gate.failed(f"{exc.code().name}: {exc.details()}")
            raise grpc_error(exc, "assistant") from None
        finally:
            call.cancel()

    # --- audio

    def _voice(self) -> voice_pb2_grpc.VoiceAsyncStub:
        if self._voice_stub is None:
            self._voice_stub = voice_pb2_grpc.VoiceStub(self.bridge.voice_channel())
        return self._voice_stub

    async def _transcribe(self, request: HttpRequest) -> HttpResponse:
        upload = api.parse_transcription_request(request.header("content-type") or "", request.body)
        wav = upload.wav
        config = voice_pb2.TranscribeConfig(
            format=voice_pb2.AudioFormat(
                encoding=voice_pb2.AUDIO_ENCODING_PCM16, sample_rate=wav.sample_rate, channels=wav.channels
            ),
            language=upload.language,
            continuous=True,
        )

        async def requests() -> AsyncIterator[voice_pb2.TranscribeRequest]:
            yield voice_pb2.TranscribeRequest(config=config)
            for start in range(0, len(wav.pcm), AUDIO_CHUNK_BYTES):
                yield voice_pb2.TranscribeRequest(audio=wav.pcm[start : start + AUDIO_CHUNK_BYTES])
            yield voice_pb2.TranscribeRequest(end=voice_pb2.AudioStreamEnd())

        texts: list[str] = []
        language = upload.language
        call = self._voice().Transcribe(requests())
        try:
            async for response in call:
                if response.HasField("final"):
                    texts.append(response.final.text)
                    language = response.final.language or language
        except grpc.aio.AioRpcError as exc:
            raise grpc_error(exc, "voice") from None
        text = api.joined(texts)
        if upload.response_format == "text":
            return HttpResponse(200, (text + "\n").encode(), content_type="text/plain; charset=utf-8")
        duration = len(wav.pcm) / (2 * wav.channels * wav.sample_rate)
        return json_response({"text": text, "language": language, "duration": round(duration, 3)})

    async def _speech(self, request: HttpRequest) -> HttpResponse:
        speech = api.parse_speech_request(request.body, api.OPENAI_VOICES)
        rate = api.OPENAI_PCM_RATE if speech.response_format == "pcm" else 0
        call = self._voice().Synthesize()
        pcm = bytearray()
        sample_rate = rate
        try:
            await call.write(
                voice_pb2.SynthesizeRequest(config=voice_pb2.SynthesizeConfig(voice=speech.voice, sample_rate=rate))
            )
            await call.write(voice_pb2.SynthesizeRequest(text=voice_pb2.SynthesizeText(text=speech.text)))
            await call.done_writing()
            async for response in call:
                if response.HasField("started"):
                    sample_rate = response.started.sample_rate or sample_rate
                elif response.HasField("audio"):
                    pcm += response.audio.pcm
                    sample_rate = response.audio.sample_rate or sample_rate
        except grpc.aio.AioRpcError as exc:
            raise grpc_error(exc, "voice") from None
        finally:
            with contextlib.suppress(Exception):
                call.cancel()
        if not pcm:
            raise api.bad_request("nothing to say: the text has no speakable words", param="input")
        if speech.response_format == "pcm":
            return HttpResponse(200, bytes(pcm), content_type=api.SPEECH_FORMATS["pcm"])
        return HttpResponse(200, api.wav_bytes(bytes(pcm), sample_rate), content_type=api.SPEECH_FORMATS["wav"])
