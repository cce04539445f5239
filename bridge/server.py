"""The bridge process: a websockets server on one port for `/v1/ws`, `/healthz`, `/metrics` and `/`,
with the OpenAI-compatible API (`/v1/...`) beside it on the same port (bridge/http.py).

Events flow: UpstreamLink (one `*` bus subscription) -> Coalescer (one frame per window) ->
FanOut (encode once per group and subprotocol) -> each Connection: written to its socket at once
when nothing is waiting and its write buffer has room (the common case), else into its bounded
send queue, which its writer task drains with flow control. Nothing on that path awaits a client;
a client whose queue is full is cut off with 1013.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
import signal
import time
import uuid
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import grpc
from websockets.asyncio.server import Server, ServerConnection, broadcast, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.typing import Subprotocol

from coda import __version__
from coda.config import Config
from coda.runtime.gc_tuning import ChurnCollector
from coda.runtime.ratelimit import TokenBucket
from coda.v1 import assistant_pb2, assistant_pb2_grpc, bridge_pb2, bus_pb2, events_pb2

from . import codec
from .assistant import (
    IMPLICIT_OPEN,
    AssistantGate,
    AssistantUnavailable,
    ConverseStream,
    SessionRefused,
    implicit_open,
    principal_open,
)
from .auth import ANONYMOUS, Authenticator, HandshakeRefused, OriginPolicy, Principal, bearer_token
from .batching import Coalescer
from .codec import JSON_PROTOCOL, PROTOCOLS, EncodedEvent, ErrorCode, FrameError
from .fanout import FanOut, FilterError, GroupKey, compile_filter, select
from .health import ComponentStates, prime
from .http import HttpFront
from .limits import ConnectionAdmission, DropNotices
from .metrics import BREAKER_STATES, BridgeMetrics
from .openai_routes import OpenAiRoutes, too_large
from .upstream import RETRYABLE, Backoff, UpstreamLink

log = logging.getLogger(__name__)

WS_PATH = "/v1/ws"
STATIC_ROOT = Path(__file__).resolve().parent / "static"
#: Close codes (RFC 6455 and the registry): see docs/protocol.md.
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN_LATER = 1013


def _response(status: int, reason: str, body: bytes, content_type: str) -> Response:
    headers = Headers(
        [("Content-Type", content_type), ("Content-Length", str(len(body))), ("Cache-Control", "no-cache")]
    )
    return Response(status, reason, headers, body)


def _text(status: int, reason: str, text: str) -> Response:
    return _response(status, reason, (text + "\n").encode(), "text/plain; charset=utf-8")


class Bridge:
    def __init__(self, config: Config, coda_address: str | None = None) -> None:
        self.config = config
        settings = config.bridge
        self.settings = settings
        self.coda_address = coda_address or settings.coda_address or config.grpc.address
        #: The Assistant may be hosted elsewhere (`endpoints.assistant`); by default it is at Coda's address.
        self.assistant_address = config.endpoints.assistant or self.coda_address
        self.voice_address = config.endpoints.voice or self.coda_address
        self.metrics = BridgeMetrics()
        self.fanout = FanOut(self.metrics.delivery)
        self.admission = ConnectionAdmission(settings.max_connections, settings.max_connections_per_ip)
        self.authenticator = Authenticator(settings.jwt_secret, settings.jwt_audience, settings.static_tokens)
        self.origins = OriginPolicy(settings.allowed_origins)
        self.gate = AssistantGate(
            settings.assistant_failures_to_open,
            settings.assistant_reset_seconds,
            on_state=lambda state: self.metrics.breaker_state.set(BREAKER_STATES.get(state, 0)),
        )
        self.static_root = Path(settings.static_dir).resolve() if settings.static_dir else STATIC_ROOT
        self.connections: dict[str, Connection] = {}
        #: The newest seq handed to the fan-out; a resuming client replays up to here from the log.
        self.dispatched_seq = 0
        self._coalescer: Coalescer[EncodedEvent] = Coalescer(
            settings.batch_window_ms / 1000, settings.batch_max_events, settings.batch_max_window_ms / 1000
        )
        self._flush_timer: asyncio.TimerHandle | None = None
        #: Closed connections are cycles that only a full collection frees (see ChurnCollector).
        self.churn = ChurnCollector()
        self._churn_timer: asyncio.TimerHandle | None = None
        self._channel: grpc.aio.Channel | None = None
        self._assistant_channel: grpc.aio.Channel | None = None
        self._voice_channel: grpc.aio.Channel | None = None
        #: Plain HTTP requests on the same port (the OpenAI-compatible API): see bridge/http.py.
        routes = OpenAiRoutes(self)
        self.http_front = HttpFront(
            routes.handle,
            ws_path=WS_PATH,
            max_body_bytes=settings.max_body_bytes,
            too_large=too_large,
            head_timeout=settings.close_timeout_seconds * 2,
            idle_timeout=settings.idle_timeout_seconds or 60.0,
            server_header=f"coda-bridge/{__version__}",
            on_request=self.metrics.api_request,
            admit=routes.admit,
            release=routes.release,
        )
        self.upstream: UpstreamLink | None = None
        self._upstream_task: asyncio.Task[None] | None = None
        self._server: Server | None = None
        self.assistant: assistant_pb2_grpc.AssistantAsyncStub | None = None
        self.port = 0
        self._principals: dict[int, Principal] = {}
        #: Set once the upstream link has been up (dispatched_seq is then meaningful).
        self.linked = asyncio.Event()
        self.link_start_seq = 0
        #: The components' newest state events, sent to each new subscription (bridge/health.py).
        self.states = ComponentStates()
        self.priming: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"ws://{self.settings.host}:{self.port}{WS_PATH}"

    @property
    def http_url(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """The OpenAI-compatible API's base URL."""
        return f"{self.http_url}/v1"

    def voice_channel(self) -> grpc.aio.Channel:
        """The Voice service's channel (Coda's, unless `endpoints.voice` names another), opened on first use."""
        if self._voice_channel is None:
            channels = {self.coda_address: self._channel, self.assistant_address: self._assistant_channel}
            self._voice_channel = channels.get(self.voice_address) or self._open_channel(self.voice_address)
        return self._voice_channel

    # --- lifecycle

    async def start(self) -> None:
        settings = self.settings
        self._channel = self._open_channel(self.coda_address)
        self._assistant_channel = (
            self._channel if self.assistant_address == self.coda_address else self._open_channel(self.assistant_address)
        )
        self.assistant = assistant_pb2_grpc.AssistantStub(self._assistant_channel)
        self.upstream = UpstreamLink(
            self._channel,
            on_events=self._on_events,
            on_gap=self._on_upstream_gap,
            on_state=self._on_upstream_state,
            backoff=Backoff(settings.reconnect_initial_seconds, settings.reconnect_max_seconds),
            on_reset=self._on_upstream_reset,
        )
        self._upstream_task = asyncio.create_task(self.upstream.run(), name="bridge-upstream")
        hard_limit = settings.max_frame_bytes * max(1, settings.hard_frame_factor) if settings.max_frame_bytes else None
        self._server = await serve(
            self._handle,
            settings.host,
            settings.port,
            subprotocols=[Subprotocol(codec.JSON_PROTOCOL), Subprotocol(codec.PROTO_PROTOCOL)],
            select_subprotocol=_select_subprotocol,
            process_request=self._process_request,
            compression=None,
            ping_interval=settings.ping_interval_seconds or None,
            ping_timeout=settings.ping_timeout_seconds or None,
            close_timeout=settings.close_timeout_seconds,
            max_size=hard_limit,
            server_header=f"coda-bridge/{__version__}",
            create_connection=self.http_front.connection_class(),
        )
        sockname = next(iter(self._server.sockets)).getsockname()
        self.port = sockname[1]
        self.metrics.breaker_state.set(BREAKER_STATES.get(self.gate.state, 0))
        log.info("bridge serving", extra={"url": self.url, "api": self.api_url, "coda": self.coda_address})

    def _open_channel(self, address: str) -> grpc.aio.Channel:
        settings = self.settings
        size = self.config.grpc.max_message_bytes
        backoff_ms = max(1, int(settings.reconnect_initial_seconds * 1000))
        return grpc.aio.insecure_channel(
            address,
            options=[
                ("grpc.max_receive_message_length", size),
                ("grpc.max_send_message_length", size),
                # The channel's own reconnects follow the bridge's backoff (gRPC's default grows to 2 min).
                ("grpc.initial_reconnect_backoff_ms", backoff_ms),
                ("grpc.min_reconnect_backoff_ms", backoff_ms),
                ("grpc.max_reconnect_backoff_ms", max(1, int(settings.reconnect_max_seconds * 1000))),
            ],
        )

    async def stop(self) -> None:
        """Close every client with 1001, then release the upstream link."""
        if self._server is not None:
            for connection in list(self.connections.values()):
                connection.shutting_down = True
            self._server.close(close_connections=True, code=CLOSE_GOING_AWAY, reason="bridge shutting down")
            await self.http_front.close()
            await self._server.wait_closed()
            self._server = None
        if self._flush_timer is not None:
            self._flush_timer.cancel()
        if self._churn_timer is not None:
            self._churn_timer.cancel()
        if self.priming is not None:
            self.priming.cancel()
        if self._upstream_task is not None:
            self._upstream_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._upstream_task
            self._upstream_task = None
        for channel in {self._channel, self._assistant_channel, self._voice_channel} - {None}:
            await channel.close()  # type: ignore[union-attr]
        self._channel = self._assistant_channel = self._voice_channel = None

    async def run_until_signal(self) -> None:
        loop = asyncio.get_running_loop()
        received = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, received.set)
        await received.wait()
        await self.stop()

    # --- upstream events -> fan-out

    def _on_upstream_state(self, up: bool) -> None:
        self.metrics.upstream_up.set(1 if up else 0)
        if up and not self.linked.is_set() and self.upstream is not None:
            # Everything up to the bus head at first contact is history (replayed from the log on
            # resume); everything after it reaches clients live.
            self.dispatched_seq = max(self.dispatched_seq, self.upstream.cursor or 0)
            self.link_start_seq = self.dispatched_seq
            self.linked.set()
            self.priming = asyncio.create_task(
                prime(self.upstream.subscribe, self.states, self.link_start_seq), name="bridge-states"
            )
        if not up and self.upstream is not None and self.upstream.cursor is not None:
            self.metrics.upstream_reconnects.inc()

    def _on_events(self, events: list[events_pb2.Event]) -> None:
        encoded = [EncodedEvent.of(e) for e in events if not self._unencodable(e)]
        loop = asyncio.get_running_loop()
        if self._coalescer.add(encoded, loop.time()):
            self._flush()
        elif self._flush_timer is None and self._coalescer.deadline is not None:
            self._flush_timer = loop.call_at(self._coalescer.deadline, self._flush)

    def _unencodable(self, event: events_pb2.Event) -> bool:
        """True (logged, counted) for an event no frame can carry: skipped, never failing a batch."""
        problem = codec.encoding_problem(event)
        if problem is None:
            return False
        self.metrics.skipped_events.inc()
        log.warning("bus event skipped: it cannot be sent to clients", extra={"seq": event.seq, "reason": problem})
        return True

    def _flush(self) -> None:
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        loop = asyncio.get_running_loop()
        started = loop.time()
        events = self._coalescer.take(started)
        if not events:
            return
        self.dispatched_seq = events[-1].seq
        try:
            self.states.observe(events)
            self.fanout.dispatch(events)
        except Exception:
            # A bug here must not stop delivery for good: this batch is lost (logged), the next goes.
            self.metrics.skipped_events.inc(len(events))
            log.exception("dispatching a batch of bus events failed", extra={"last_seq": events[-1].seq})
        self._coalescer.flushed(loop.time() - started)

    def _on_upstream_gap(self, gap: events_pb2.Gap) -> None:
        # The bus no longer holds what happened while the link was down: tell every subscriber.
        self._flush()
        frame = bridge_pb2.ServerFrame(gap=gap)
        encoded = {p: codec.encode(frame, p) for p in PROTOCOLS}
        for connection in list(self.connections.values()):
            if connection.key is not None:
                connection.enqueue(encoded[connection.protocol])

    def _on_upstream_reset(self, reset: bus_pb2.LogReset) -> None:
        # The bus log was replaced (seqs start over): what is held of the old one goes out first,
        # then every connection is told, and the new log follows from its start (the link
        # replays it), live for everyone.
        self._flush()
        self.dispatched_seq = self.link_start_seq = 0
        frame = bridge_pb2.ServerFrame(reset=bus_pb2.LogReset(epoch=reset.epoch, previous_epoch=reset.previous_epoch))
        encoded = {p: codec.encode(frame, p) for p in PROTOCOLS}
        for connection in list(self.connections.values()):
            connection.log_reset(encoded[connection.protocol])

    def epoch(self) -> str:
        """The bus log epoch the bridge follows ("" before the link first came up)."""
        return (self.upstream.epoch if self.upstream is not None else None) or ""

    def head_seq(self) -> int:
        cursor = self.upstream.cursor if self.upstream is not None else None
        return max(self.dispatched_seq, cursor or 0)

    # --- HTTP routes and handshake checks

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        target = urlsplit(request.path)
        path = target.path
        if path == WS_PATH:
            try:
                self.origins.check(request.headers.get("Origin"))
                principal = self.authenticator.authenticate(
                    bearer_token(request.headers.get("Authorization"), target.query)
                )
            except HandshakeRefused as refused:
                self.metrics.refusals.labels(refused.label).inc()
                log.info("handshake refused", extra={"status": refused.status, "reason": refused.reason})
                return _text(refused.status, "Unauthorized" if refused.status == 401 else "Forbidden", refused.reason)
            ip = _client_ip(connection)
            refusal = self.admission.refusal(ip)
            if refusal is not None:
                self.metrics.refusals.labels(refusal[0]).inc()
                return _text(403, "Forbidden", refusal[1])
            self._principals[id(connection)] = principal
            return None
        if path == "/healthz":
            task = self._upstream_task
            if task is not None and task.done():
                reason = "cancelled" if task.cancelled() else repr(task.exception())
                return _text(503, "Service Unavailable", f"not ready: the bus link task has stopped: {reason}")
            up = self.upstream is not None and self.upstream.up
            if up:
                return _text(200, "OK", f"ok: linked to coda at {self.coda_address}")
            return _text(503, "Service Unavailable", f"not ready: no gRPC link to coda at {self.coda_address}")
        if path == "/metrics":
            self.metrics.connections.set(len(self.connections))
            return _response(200, "OK", self.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")
        return self._static(path)

    def _static(self, path: str) -> Response:
        relative = path.lstrip("/") or "index.html"
        if relative.endswith("/"):
            relative += "index.html"
        try:
            file = (self.static_root / relative).resolve()
        except (OSError, ValueError):
            return _text(404, "Not Found", "not found")
        if not file.is_relative_to(self.static_root) or not file.is_file():
            return _text(404, "Not Found", f"not found: {path}")
        content_type = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
        if content_type.startswith("text/") or content_type in {"application/javascript", "application/json"}:
            content_type += "; charset=utf-8"
        return _response(200, "OK", file.read_bytes(), content_type)

    # --- connections

    async def _handle(self, ws: ServerConnection) -> None:
        principal = self._principals.pop(id(ws), ANONYMOUS)
        ip = _client_ip(ws)
        refusal = self.admission.admit(ip)
        if refusal is not None:  # lost a race with another handshake from the same address
            self.metrics.refusals.labels(refusal[0]).inc()
            await ws.close(CLOSE_TRY_AGAIN_LATER, refusal[1])
            return
        connection = Connection(self, ws, principal, ws.subprotocol or JSON_PROTOCOL)
        self.connections[connection.id] = connection
        self.metrics.connections.set(len(self.connections))
        try:
            await connection.run()
        finally:
            self.connections.pop(connection.id, None)
            self.admission.release(ip)
            self.metrics.connections.set(len(self.connections))
            self._connection_released()

    def _connection_released(self) -> None:
        if self.churn.released():
            self._churn_timer = asyncio.get_running_loop().call_later(self.churn.max_delay, self._collect_churn)
        elif self.churn.due(len(self.connections)):
            self._collect_churn()

    def _collect_churn(self) -> None:
        if self._churn_timer is not None:
            self._churn_timer.cancel()
            self._churn_timer = None
        self.churn.collect()


def _select_subprotocol(connection: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    # A client that offers no subprotocol gets JSON; one that offers only unknown ones gets none,
    # which a browser treats as a failed handshake.
    for protocol in offered:
        if protocol in PROTOCOLS:
            return protocol
    return None


def _client_ip(connection: ServerConnection) -> str:
    address = connection.remote_address
    return str(address[0]) if address else ""


class _Replay:
    """A resume in progress: live frames wait in `held` until the log has been replayed up to `live_start`."""

    __slots__ = ("epoch", "held", "live_start", "task")

    def __init__(self, live_start: int | None, epoch: str = "") -> None:
        self.live_start = live_start
        #: The bus log epoch the replay's positions belong to ("" before the link was first up).
        self.epoch = epoch
        self.held: deque[tuple[str | bytes, int, int, int]] = deque()
        self.task: asyncio.Task[None] | None = None


class Connection:
    def __init__(self, bridge: Bridge, ws: ServerConnection, principal: Principal, protocol: str) -> None:
        settings = bridge.settings
        self.bridge = bridge
        self.ws = ws
        self.principal = principal
        self.protocol = protocol
        self.id = uuid.uuid4().hex[:16]
        self.metrics = bridge.metrics
        self.queue_limit = max(1, settings.send_queue_frames)
        #: Queued events frames are merged into one send up to about this many bytes.
        self.merge_limit = max(64 * 1024, settings.max_frame_bytes)
        #: (frame, last seq, oldest event time in ns, event count); seq 0 for frames without events
        self.queue: deque[tuple[str | bytes, int, int, int]] = deque()
        self._wakeup = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        #: True while the writer task is sending from the queue: direct writes must not overtake it.
        self._writing = False
        self.last_sent_seq = 0
        #: A client resuming from a seq this bridge has not dispatched yet (it saw it through
        #: another bridge): live events up to here are skipped, not sent twice.
        self.seq_floor = 0
        self._ahead_check: asyncio.Task[None] | None = None
        self.key: GroupKey | None = None
        self.replay: _Replay | None = None
        self.closing = False
        self.shutting_down = False
        self.frames = TokenBucket(settings.frames_per_second, settings.frames_burst)
        self.audio = TokenBucket(settings.audio_bytes_per_second, settings.audio_bytes_per_second)
        #: Rate-limit errors are coalesced, one per second per code (see DropNotices).
        self.drop_notices: dict[bridge_pb2.ErrorCode.ValueType, DropNotices] = {
            ErrorCode.ERROR_CODE_RATE_LIMITED: DropNotices(),
            ErrorCode.ERROR_CODE_AUDIO_RATE_LIMITED: DropNotices(),
        }
        self._drop_timers: dict[bridge_pb2.ErrorCode.ValueType, asyncio.TimerHandle] = {}
        self.max_frame_bytes = settings.max_frame_bytes
        self.idle_timeout = settings.idle_timeout_seconds
        self.last_activity = time.monotonic()
        assert bridge.assistant is not None
        self.converse = ConverseStream(bridge.assistant, bridge.gate, self.send)
        self._converse_opened = False

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other

    def limits(self) -> bridge_pb2.ConnectionLimits:
        s = self.bridge.settings
        return bridge_pb2.ConnectionLimits(
            max_frame_bytes=s.max_frame_bytes,
            frames_per_second=int(s.frames_per_second),
            audio_bytes_per_second=s.audio_bytes_per_second,
            idle_timeout_seconds=int(s.idle_timeout_seconds),
            send_queue_frames=s.send_queue_frames,
        )

    # --- outbound

    def offer(self, frame: str | bytes, last_seq: int, time_ns: int, count: int) -> bool:
        """FanOut calls this for every batch that matches; never blocks. True: written now."""
        if self.closing:
            return False
        if self.seq_floor:
            if last_seq <= self.seq_floor:
                return False
            trimmed = codec.events_after(frame, self.seq_floor)
            self.seq_floor = 0
            if trimmed is None:
                return False
            frame, count, time_ns = trimmed
            if self.replay is None:
                # Its own frame now, not the group's: sent (and counted) through the queue.
                self.enqueue(frame, last_seq, time_ns, count)
                return False
        if self.replay is not None:
            self.replay.held.append((frame, last_seq, time_ns, count))
            if len(self.replay.held) + len(self.queue) > self.queue_limit:
                self.cut_off()
            return False
        ws = self.ws
        if (
            not self.queue
            and not self._writing
            and ws.protocol.state is State.OPEN
            and ws.transport.get_write_buffer_size() < ws.write_limit_high
        ):
            # Nothing queued and the socket keeps up: write now, skipping the writer task's wake-up.
            # websockets' broadcast() is its synchronous write (no drain); the buffer check above is
            # the flow control, and a client whose buffer fills goes through the queue instead.
            broadcast((ws,), frame)
            self.last_sent_seq = last_seq
            return True
        self.enqueue(frame, last_seq, time_ns, count)
        return False

    def enqueue(self, frame: str | bytes, last_seq: int = 0, time_ns: int = 0, count: int = 0) -> None:
        if self.closing:
            return
        if len(self.queue) >= self.queue_limit:
            self.cut_off()
            return
        self.queue.append((frame, last_seq, time_ns, count))
        if len(self.queue) >= self.queue_limit // 2:
            self._room.clear()
        self._wakeup.set()

    def send(self, frame: bridge_pb2.ServerFrame) -> None:
        """Queue a frame of this connection only (hello, error, pong, converse)."""
        self.enqueue(codec.encode(frame, self.protocol))

    def error(self, code: bridge_pb2.ErrorCode.ValueType, message: str, client_frame_id: str = "") -> None:
        self.send(codec.error_frame(code, message, client_frame_id))

    def dropped(self, code: bridge_pb2.ErrorCode.ValueType, frame_id: str = "") -> None:
        """A frame was dropped by a rate limit: report it now, or count it into the next report."""
        count = self.drop_notices[code].drop(asyncio.get_running_loop().time())
        if count:
            self._report_drops(code, count, frame_id)
        else:
            self._arm_drop_timer(code)

    def _arm_drop_timer(self, code: bridge_pb2.ErrorCode.ValueType) -> None:
        due = self.drop_notices[code].due
        if due is not None and code not in self._drop_timers and not self.closing:
            self._drop_timers[code] = asyncio.get_running_loop().call_at(due, self._drop_timer_fired, code)

    def _drop_timer_fired(self, code: bridge_pb2.ErrorCode.ValueType) -> None:
        self._drop_timers.pop(code, None)
        count = self.drop_notices[code].flush(asyncio.get_running_loop().time())
        if count:
            self._report_drops(code, count)
        self._arm_drop_timer(code)

    def _report_drops(self, code: bridge_pb2.ErrorCode.ValueType, count: int, frame_id: str = "") -> None:
        if code == ErrorCode.ERROR_CODE_RATE_LIMITED:
            message = (
                f"more than {self.frames.rate:g} frames per second; {count} frame(s) dropped, "
                f"retry in {self.frames.retry_after():.2f}s"
            )
        else:
            message = f"audio above {self.audio.rate:g} bytes per second; {count} chunk(s) dropped"
        frame = codec.error_frame(code, message, frame_id)
        frame.error.dropped_frames = count
        self.send(frame)

    def log_reset(self, frame: str | bytes) -> None:
        """The bus log was replaced: a replay or resume position in the old one is dropped, then
        the reset frame. The live frames an unfinished replay held are dropped too: they follow
        events the replay never sent, and sending them would skip those silently; the reset
        tells the client that everything after what it has of the old log is gone."""
        self.seq_floor = 0
        self._cancel_replay()
        self.enqueue(frame)

    def cut_off(self) -> None:
        """Too slow: stop feeding it, say where to resume, close without waiting on the broadcast path."""
        if self.closing:
            return
        self.closing = True
        self.bridge.fanout.leave(self)
        self.queue.clear()
        self.metrics.slow_clients.inc()
        self.metrics.refusals.labels("slow_consumer").inc()
        reason = f"too slow: send queue full; resume with after_seq={self.last_sent_seq}"
        log.info("client cut off", extra={"connection": self.id, "last_seq": self.last_sent_seq})
        self._wakeup.set()
        asyncio.get_running_loop().create_task(self.ws.close(CLOSE_TRY_AGAIN_LATER, reason))

    async def _writer(self) -> None:
        queue = self.queue
        ws = self.ws
        low_water = self.queue_limit // 4
        merge_limit = self.merge_limit
        while not self.closing:
            await self._wakeup.wait()
            self._wakeup.clear()
            self._writing = True
            try:
                while queue and not self.closing:
                    frame, last_seq, time_ns, count = queue.popleft()
                    if count and queue and queue[0][3]:
                        # Behind: send every queued events frame as one, so a lagging client
                        # catches up with one send instead of many.
                        frames = [frame]
                        size = len(frame)
                        while queue and queue[0][3] and size < merge_limit:
                            more, last_seq, _, more_count = queue.popleft()
                            frames.append(more)
                            size += len(more)
                            count += more_count
                        frame = codec.merge_events_frames(frames)
                    await ws.send(frame)
                    latency = None
                    if count:
                        self.last_sent_seq = last_seq
                        latency = max(0.0, (time.time_ns() - time_ns) / 1e9)
                    self.metrics.delivery.sent(1, len(frame), count, latency)
                    if len(queue) <= low_water:
                        self._room.set()
            finally:
                self._writing = False

    async def _wait_for_room(self) -> None:
        await self._room.wait()

    # --- inbound

    async def run(self) -> None:
        head = self.bridge.head_seq()
        epoch = self.bridge.epoch()
        with contextlib.suppress(grpc.aio.AioRpcError, AttributeError):
            assert self.bridge.upstream is not None
            described = await self.bridge.upstream.describe(timeout=1.0)
            head = described.head_seq
            epoch = epoch or described.epoch
        self.send(
            bridge_pb2.ServerFrame(
                hello=bridge_pb2.HelloFrame(
                    connection_id=self.id,
                    protocol=self.protocol,
                    server_version=__version__,
                    head_seq=head,
                    limits=self.limits(),
                    session_id=self.principal.session_id,
                    user_id=self.principal.user_id,
                    epoch=epoch,
                )
            )
        )
        writer = asyncio.create_task(self._writer(), name=f"ws-writer-{self.id}")
        idle = asyncio.create_task(self._idle_watch(), name=f"ws-idle-{self.id}") if self.idle_timeout > 0 else None
        try:
            async for message in self.ws:
                self._receive(message)
        except ConnectionClosed:
            pass
        finally:
            self.closing = True
            self.bridge.fanout.leave(self)
            self._cancel_replay()
            for task in (writer, idle, self._ahead_check):
                if task is not None:
                    task.cancel()
            for timer in self._drop_timers.values():
                timer.cancel()
            await self.converse.close()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await writer

    async def _idle_watch(self) -> None:
        while True:
            remaining = self.last_activity + self.idle_timeout - time.monotonic()
            if remaining <= 0:
                self.metrics.refusals.labels("idle_timeout").inc()
                await self.ws.close(CLOSE_POLICY, f"idle timeout: no frame for {self.idle_timeout:g}s; send pings")
                return
            await asyncio.sleep(remaining)

    def _receive(self, message: str | bytes) -> None:
        self.last_activity = time.monotonic()
        self.metrics.frames_in.inc()
        self.metrics.bytes_in.inc(len(message))
        if not self.frames.try_take():
            self.metrics.refusals.labels("rate_limited").inc()
            self.dropped(ErrorCode.ERROR_CODE_RATE_LIMITED)
            return
        try:
            if isinstance(message, bytes):
                if self.protocol == JSON_PROTOCOL:
                    # Binary frames on the JSON subprotocol are raw PCM16 microphone audio.
                    codec.check_size(len(message), self.max_frame_bytes)
                    self._converse(
                        assistant_pb2.ConverseRequest(audio_chunk=assistant_pb2.AudioInputChunk(audio=message)), ""
                    )
                    return
                frame = codec.decode_binary(message, self.max_frame_bytes)
            else:
                if self.protocol != JSON_PROTOCOL:
                    raise FrameError(
                        ErrorCode.ERROR_CODE_MALFORMED_FRAME,
                        f"text frame on {self.protocol}: send serialized ClientFrame messages as binary frames",
                    )
                frame = codec.decode_text(message, self.max_frame_bytes)
            self._dispatch(frame)
        except FrameError as exc:
            label = {
                ErrorCode.ERROR_CODE_FRAME_TOO_LARGE: "frame_too_large",
                ErrorCode.ERROR_CODE_UNKNOWN_FRAME_TYPE: "unknown_frame_type",
            }.get(exc.code, "malformed_frame")
            self.metrics.refusals.labels(label).inc()
            self.send(exc.to_frame())

    def _dispatch(self, frame: bridge_pb2.ClientFrame) -> None:
        kind = frame.WhichOneof("frame")
        if kind == "ping":
            self.send(
                bridge_pb2.ServerFrame(
                    pong=bridge_pb2.PongFrame(nonce=frame.ping.nonce, head_seq=self.bridge.head_seq())
                )
            )
        elif kind == "subscribe":
            self._subscribe(frame.subscribe, frame.id)
        elif kind == "unsubscribe":
            self._cancel_replay()
            self.bridge.fanout.leave(self)
            self.key = None
        elif kind == "converse":
            self._converse(frame.converse, frame.id)

    def _subscribe(self, request: bridge_pb2.SubscribeFrame, frame_id: str) -> None:
        session = request.session_id
        bound = self.principal.session_id
        if bound:
            if session and session != bound:
                self.metrics.refusals.labels("permission_denied").inc()
                self.error(
                    ErrorCode.ERROR_CODE_PERMISSION_DENIED, f"your token allows session {bound!r} only", frame_id
                )
                return
            session = bound
        try:
            key = compile_filter(request.types, session)
        except FilterError as exc:
            self.error(ErrorCode.ERROR_CODE_INVALID_ARGUMENT, str(exc), frame_id)
            return
        self._cancel_replay()
        self.key = key
        if request.current_state:
            # The components' current state first (bridge/health.py); with after_seq only what is
            # older than the replay, which brings the rest.
            after = request.after_seq if request.HasField("after_seq") else None
            states = select(key, self.bridge.states.snapshot(after))
            if states:
                self.enqueue(codec.events_frame(states, self.protocol))
        # Unknown until the upstream link has been up once; the replay then waits for it.
        live_start = self.bridge.dispatched_seq if self.bridge.linked.is_set() else None
        resuming = request.HasField("after_seq")
        after_seq = request.after_seq
        epoch = self.bridge.epoch()
        if resuming and request.epoch and epoch and request.epoch != epoch:
            # The position is in a log the bus has since replaced: say so, replay this one whole.
            self.send(
                bridge_pb2.ServerFrame(
                    reset=bus_pb2.LogReset(epoch=epoch, previous_epoch=request.epoch, requested_after_seq=after_seq)
                )
            )
            after_seq = 0
        self.seq_floor = after_seq if resuming and (live_start is None or after_seq >= live_start) else 0
        if self.seq_floor and live_start is not None:
            self._ahead_check = asyncio.create_task(
                self._check_resume_position(after_seq, frame_id), name=f"ws-ahead-{self.id}"
            )
        if resuming and (live_start is None or after_seq < live_start):
            self.replay = _Replay(live_start, epoch)
            self.replay.task = asyncio.create_task(
                self._replay(key, after_seq, self.replay), name=f"ws-replay-{self.id}"
            )
        self.bridge.fanout.join(self, key)

    async def _check_resume_position(self, after_seq: int, frame_id: str) -> None:
        """A resume ahead of this bridge is fine while the bus has the seq; beyond the bus's head
        (its log was reset) it would wait for nothing, so it is refused as the bus refuses it."""
        upstream = self.bridge.upstream
        assert upstream is not None
        try:
            head = (await upstream.describe(timeout=2.0)).head_seq
        except grpc.aio.AioRpcError:
            return  # the bus is away: the link's own reconnect takes over
        if after_seq <= head or self.seq_floor != after_seq:
            return
        self.seq_floor = 0
        self.bridge.fanout.leave(self)
        self.key = None
        self.error(
            ErrorCode.ERROR_CODE_INVALID_ARGUMENT,
            f"afterSeq {after_seq} is beyond the newest seq {head} (was the bus log reset?); "
            f"subscribe with afterSeq <= {head}",
            frame_id,
        )

    def _cancel_replay(self) -> None:
        if self.replay is not None:
            if self.replay.task is not None:
                self.replay.task.cancel()
            self.replay = None

    async def _replay(self, key: GroupKey, after_seq: int, replay: _Replay) -> None:
        """Events (after_seq, live_start] from the bus log, then the held live frames: no gap, no duplicate."""
        upstream = self.bridge.upstream
        assert upstream is not None
        if replay.live_start is None:
            await self.bridge.linked.wait()
            replay.live_start = self.bridge.link_start_seq
            replay.epoch = replay.epoch or self.bridge.epoch()
        cursor = after_seq
        gap_sent = False
        backoff = Backoff(self.bridge.settings.reconnect_initial_seconds, self.bridge.settings.reconnect_max_seconds)
        while cursor < replay.live_start:
            # With the epoch: a bus whose log was replaced meanwhile (restarted while this replay
            # waited for it) answers with a reset, not with its new log's events under old seqs.
            call = upstream.subscribe(bus_pb2.SubscribeRequest(types=["*"], after_seq=cursor, epoch=replay.epoch))
            try:
                async for response in call:
                    if response.HasField("reset"):
                        # The link meets the same reset and hands it to every connection
                        # (log_reset): that ends this replay and sends the reset.
                        return
                    if response.HasField("gap"):
                        if not gap_sent:
                            gap_sent = True
                            self.send(bridge_pb2.ServerFrame(gap=response.gap))
                        cursor = max(cursor, response.gap.oldest_seq - 1)
                        continue
                    batch = [e for e in response.batch.events if cursor < e.seq <= replay.live_start]
                    if response.batch.events:
                        cursor = max(cursor, min(response.batch.events[-1].seq, replay.live_start))
                    wanted = select(key, [EncodedEvent.of(e) for e in batch])
                    if wanted:
                        await self._wait_for_room()
                        if self.closing:
                            return
                        self.enqueue(
                            codec.events_frame(wanted, self.protocol), wanted[-1].seq, wanted[0].time_ns, len(wanted)
                        )
                    if cursor >= replay.live_start:
                        break
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in RETRYABLE:
                    # Said, with what it misses, and then live delivery goes on: returning here left
                    # the live frames held by this replay until the client was cut off.
                    self.error(ErrorCode.ERROR_CODE_UNAVAILABLE, f"resume failed: {exc.details()}")
                    missed = replay.live_start - cursor
                    gap = events_pb2.Gap(requested_after_seq=after_seq, oldest_seq=replay.live_start + 1, missed=missed)
                    self.send(bridge_pb2.ServerFrame(gap=gap))
                    break
                await asyncio.sleep(backoff.next_delay())
            finally:
                call.cancel()
        if self.replay is not replay or self.closing:
            return
        self.replay = None
        for held in replay.held:
            self.enqueue(*held)

    def _converse(self, request: assistant_pb2.ConverseRequest, frame_id: str) -> None:
        kind = request.WhichOneof("request")
        if kind is None:
            self.error(ErrorCode.ERROR_CODE_INVALID_ARGUMENT, "converse frame has no request", frame_id)
            return
        if kind == "audio_chunk" and not self.audio.try_take(len(request.audio_chunk.audio)):
            self.metrics.refusals.labels("audio_rate_limited").inc()
            self.dropped(ErrorCode.ERROR_CODE_AUDIO_RATE_LIMITED, frame_id)
            return
        try:
            if kind == "open":
                request.open.CopyFrom(principal_open(self.principal, request.open))
            elif kind in IMPLICIT_OPEN and not self.converse.open:
                self.converse.submit(implicit_open(self.principal), frame_id)
            self.converse.submit(request, frame_id)
        except SessionRefused as exc:
            self.metrics.refusals.labels("permission_denied").inc()
            self.error(ErrorCode.ERROR_CODE_PERMISSION_DENIED, str(exc), frame_id)
        except AssistantUnavailable as exc:
            self.metrics.refusals.labels("assistant_unavailable").inc()
            self.error(ErrorCode.ERROR_CODE_UNAVAILABLE, str(exc), frame_id)
