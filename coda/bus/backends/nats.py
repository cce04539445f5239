"""The NATS JetStream backend: the log is a stream shared by every Coda process that uses it.

Mapping (see nats_subjects.py for subjects):
- an event's seq is its stream sequence, so seq order is the same in every process;
- an event is stored serialized with seq 0 (unknown before the ack) and gets its seq back on
  delivery by prefixing field 1, which is byte-for-byte the serialization with seq set;
- idempotent publish is JetStream's de-duplication: `Nats-Msg-Id` is the event id;
- live events reach this process's listener from one ordered consumer of the whole stream, so
  events published by other processes are fanned out here too, in stream order;
- `read_after` (replay) reads through ephemeral ordered consumers starting at `after_seq + 1`,
  filtered on the server by subject, kept between calls of one replay;
- the oldest retained seq is the stream's first sequence (polled, and bounded by max_events).

NATS is imported lazily: nothing of it is needed unless `bus.backend = "nats"`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from coda.bus.backends.base import BackendUnavailable, LogBackend
from coda.bus.backends.nats_subjects import filter_subjects, parse_subject, stream_subjects, subject_for
from coda.bus.filters import EventFilter
from coda.bus.log import Appended, Entry, Headers, LogStats, make_entry
from coda.config import BusConfig
from coda.schema import event_type
from coda.v1 import events_pb2
from coda.wire import encode_varint

log = logging.getLogger(__name__)

#: Wire tag of `Event.seq` (field 1, varint).
SEQ_TAG = b"\x08"
MSG_ID_HEADER = "Nats-Msg-Id"
#: Seconds between stream-state polls (first seq, retained count and bytes).
POLL_SECONDS = 1.0
#: A replay reader nobody asked for more within this many seconds is closed.
READER_IDLE_SECONDS = 10.0
#: Missed heartbeats make the ordered consumer recreate itself from the last seq it delivered.
HEARTBEAT_SECONDS = 1.0
#: The live follower is made again when the stream has held messages past its head, with no
#: delivery, for this long: nats-py recovers a lost consumer on missed heartbeats, but when its
#: recreation fails (the stream's leader is being elected) it only reports the error.
FOLLOWER_STALL_SECONDS = 5.0


def with_seq(data: bytes, seq: int) -> bytes:
    """The serialized Event `data` (seq unset) as it serializes with `seq` set."""
    return SEQ_TAG + encode_varint(seq) + data


@dataclass
class _Reader:
    """One replay's ordered consumer, parked between `read_after` calls."""

    subscription: Any
    subjects: tuple[str, ...]
    last_seq: int
    pending: int
    used: float


class NatsBackend(LogBackend):
    name = "nats"

    def __init__(self, config: BusConfig) -> None:
        super().__init__()
        self.config = config
        self.nats = config.nats
        self.prefix = config.nats.subject_prefix.rstrip(".")
        self.servers = list(config.nats.servers)
        #: Seconds to wait for JetStream acks, and for this process to see what it appended.
        self.ack_timeout = max(1.0, config.nats.connect_timeout_seconds)
        self._nc: Any = None
        self._js: Any = None
        self._live: Any = None
        self._pump_task: asyncio.Task[None] | None = None
        #: The follower's head and when it was last seen moving or up to date with the stream.
        self._progress = (0, 0.0)
        self._ready = False
        self._reason = f"not connected to NATS at {', '.join(self.servers)} yet"
        self._head = 0
        self._head_changed = asyncio.Event()
        self._stream_first = 1
        self._stream_bytes = 0
        self._readers: dict[tuple[int, tuple[str, ...]], _Reader] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and follow the stream; when NATS is unreachable, keep trying in the background."""
        try:
            await self._connect()
        except Exception as exc:
            self._reason = f"NATS at {', '.join(self.servers)} is unreachable ({_describe(exc)}); retrying"
            log.error("bus backend unavailable", extra={"reason": self._reason})
            self._tasks.append(asyncio.create_task(self._connect_loop(), name="bus-nats-connect"))
        self._tasks.append(asyncio.create_task(self._poll_loop(), name="bus-nats-poll"))

    async def _connect_loop(self) -> None:
        delay = 0.2
        while not self._closing:
            await asyncio.sleep(delay)
            delay = min(2.0, delay * 2)
            try:
                await self._connect()
                return
            except Exception as exc:
                self._reason = f"NATS at {', '.join(self.servers)} is unreachable ({_describe(exc)}); retrying"

    async def _connect(self) -> None:
        import nats

        nc = await nats.connect(
            servers=self.servers,
            name="coda-bus",
            connect_timeout=max(1, round(self.nats.connect_timeout_seconds)),
            allow_reconnect=True,
            # nats-py retries a first connect forever when this is -1, which would hang start-up:
            # try each server once here (our own loop retries) and reconnect forever once connected.
            max_reconnect_attempts=1,
            reconnect_time_wait=0.25,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            error_cb=self._on_error,
        )
        nc.options["max_reconnect_attempts"] = -1
        try:
            js = nc.jetstream(timeout=self.ack_timeout)
            await self._ensure_stream(js)
            info = await js.stream_info(self.nats.stream)
        except BaseException:
            await nc.close()
            raise
        self._nc, self._js = nc, js
        self.epoch = stream_epoch(self.nats.stream, info.created)
        self._update_state(info.state)
        if self._head == 0 or self._head > info.state.last_seq:
            self._head = info.state.last_seq
        await self._follow()
        self._ready = True
        log.info(
            "bus connected to NATS JetStream",
            extra={"servers": self.servers, "stream": self.nats.stream, "head_seq": self._head},
        )

    async def _ensure_stream(self, js: Any) -> None:
        from nats.js import api
        from nats.js.errors import BadRequestError

        stream = api.StreamConfig(
            name=self.nats.stream,
            subjects=stream_subjects(self.prefix),
            retention=api.RetentionPolicy.LIMITS,
            discard=api.DiscardPolicy.OLD,
            max_msgs=self.config.max_events,
            max_bytes=self.config.max_bytes,
            max_age=self.nats.max_age_seconds or None,
            max_msg_size=self.config.max_event_bytes + 1024,
            storage=api.StorageType.FILE,
            num_replicas=self.nats.replicas,
            # JetStream refuses a de-duplication window longer than the retention age.
            duplicate_window=min(self.nats.duplicate_window_seconds, self.nats.max_age_seconds or float("inf")),
        )
        try:
            await js.add_stream(stream)
        except BadRequestError:
            # It exists with other limits: apply ours (an operator changed the config).
            await js.update_stream(stream)

    async def _follow(self) -> None:
        from nats.js import api

        self._live = await self._js.subscribe(
            f"{self.prefix}.>",
            stream=self.nats.stream,
            ordered_consumer=True,
            idle_heartbeat=HEARTBEAT_SECONDS,
            config=api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self._head + 1),
        )
        self._pump_task = asyncio.create_task(self._pump(self._live), name="bus-nats-follow")
        self._progress = (self._head, time.monotonic())

    async def _refollow(self) -> None:
        """Replace a stalled live follower with a new one from the head (see FOLLOWER_STALL_SECONDS)."""
        log.warning("bus NATS follower stalled; subscribing again", extra={"head_seq": self._head})
        await self._stop_following()
        await self._follow()

    async def _stop_following(self) -> None:
        if self._pump_task is not None:
            self._pump_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._pump_task
            self._pump_task = None
        if self._live is not None:
            await _unsubscribe(self._live)
            self._live = None

    def _follower_stalled(self, stream_last_seq: int, now: float) -> bool:
        """Whether the stream has had messages past the follower's head, which did not move, for
        FOLLOWER_STALL_SECONDS (a poll that finds it moved or up to date starts the count again)."""
        if self._head != self._progress[0] or stream_last_seq <= self._head:
            self._progress = (self._head, now)
            return False
        return now - self._progress[1] >= FOLLOWER_STALL_SECONDS

    async def _pump(self, subscription: Any) -> None:
        """Move delivered messages to the listener in batches, skipping any it already had."""
        # Draining the subscription's queue directly takes a whole burst per wake-up; the byte
        # count nats-py keeps for slow-consumer detection is settled here as next_msg would.
        queue: asyncio.Queue[Any] = subscription._pending_queue
        while True:
            batch = [await queue.get()]
            while len(batch) < 512 and not queue.empty():
                batch.append(queue.get_nowait())
            stored: list[Entry] = []
            now = time.monotonic_ns()
            for msg in batch:
                subscription._pending_size -= len(msg.data)
                queue.task_done()
                seq = msg.metadata.sequence.stream
                if seq <= self._head:
                    continue  # redelivered after the ordered consumer was recreated
                self._head = seq
                entry = self._stored_or_none(msg, seq, now)
                if entry is None:
                    continue
                stored.append(entry)
                # An estimate until the next poll reads the stream's own figure.
                self._stream_bytes += len(msg.data) + len(msg.subject)
            if stored:
                self._head_changed.set()
                self._head_changed = asyncio.Event()
                try:
                    self._notify(stored)
                except Exception:
                    log.exception("bus listener failed")

    def _stored_or_none(self, msg: Any, seq: int, now: int) -> Entry | None:
        """The log entry of a stream message; None (logged) for one not published by a Coda bus."""
        try:
            type_name, session_id = parse_subject(self.prefix, msg.subject)
        except ValueError:
            log.warning("skipping a message that is not a Coda event", extra={"seq": seq, "subject": msg.subject})
            return None
        event_id = (msg.headers or {}).get(MSG_ID_HEADER, "")
        return make_entry(seq, event_id, type_name, session_id, with_seq(msg.data, seq), now)

    async def close(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        await self._stop_following()
        for reader in list(self._readers.values()):
            await _unsubscribe(reader.subscription)
        self._readers.clear()
        if self._nc is not None:
            # Drain only a live connection, and briefly: a dead NATS must not hold up shutdown.
            if self._nc.is_connected:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(2.0):
                        await self._nc.drain()
            with contextlib.suppress(Exception):
                await self._nc.close()
            self._nc = None
        self._ready = False

    # -- connection state -----------------------------------------------------------------------

    async def _on_disconnected(self) -> None:
        if not self._closing:
            self._ready = False
            self._reason = f"lost the connection to NATS ({', '.join(self.servers)}); reconnecting"
            log.warning("bus backend disconnected from NATS")

    async def _on_reconnected(self) -> None:
        self._ready = True
        log.info("bus backend reconnected to NATS", extra={"server": str(self._nc.connected_url.netloc)})

    async def _on_error(self, exc: Exception) -> None:
        log.debug("NATS client error", extra={"error": _describe(exc)})

    def check_ready(self) -> None:
        if not self._ready or self._js is None:
            raise BackendUnavailable(self._reason)

    # -- writing --------------------------------------------------------------------------------

    async def append(self, events: Sequence[events_pb2.Event], headers: Headers | None = None) -> Appended:
        self.check_ready()
        payloads: list[tuple[events_pb2.Event, bytes]] = []
        futures: list[asyncio.Future[Any]] = []
        try:
            # The whole append is bounded, sending included: nats-py's publish_async waits without
            # limit for one of its 4000 pending-ack slots, and a slot is only freed when its future
            # is done, so a future left behind (a reply lost with a dead stream leader) would hold
            # a slot forever, and enough of them would hang every later publish.
            async with asyncio.timeout(self.ack_timeout):
                for event in events:
                    event.seq = 0
                    data = event.SerializeToString()
                    payloads.append((event, data))
                    subject = subject_for(self.prefix, event_type(event), event.session_id)
                    futures.append(await self._js.publish_async(subject, data, headers={MSG_ID_HEADER: event.id}))
                acks = await asyncio.gather(*futures)
        except TimeoutError as exc:
            raise BackendUnavailable(
                f"NATS JetStream did not acknowledge within {self.ack_timeout:g}s (stream {self.nats.stream!r})"
            ) from exc
        except BackendUnavailable:
            raise
        except Exception as exc:
            raise BackendUnavailable(f"NATS JetStream refused the publish: {_describe(exc)}") from exc
        finally:
            # Free every slot still taken, on any way out (a cancelled caller included); a done
            # future is not touched by cancel().
            for future in futures:
                future.cancel()
        appended = Appended([], set(), [])
        now = time.monotonic_ns()
        for index, ((event, data), ack) in enumerate(zip(payloads, acks, strict=True)):
            event.seq = ack.seq
            appended.seqs.append(ack.seq)
            if ack.duplicate:
                appended.duplicates.add(index)
            else:
                appended.stored.append(
                    make_entry(ack.seq, event.id, event_type(event), event.session_id, with_seq(data, ack.seq), now)
                )
        if appended.seqs:
            # Read your writes: return once this process's subscribers can have what was acked.
            await self._wait_for_head(max(appended.seqs), self.ack_timeout)
        return appended

    async def _wait_for_head(self, seq: int, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while self._head < seq:
                    await self._head_changed.wait()
        return self._head >= seq

    # -- reading --------------------------------------------------------------------------------

    async def prepare_subscribe(self, after_seq: int | None) -> None:
        self.check_ready()
        if after_seq is None or after_seq <= self._head:
            return
        # Another process may have had `after_seq` acked a moment before we delivered it.
        info = await self._stream_info()
        if info.state.last_seq >= after_seq:
            await self._wait_for_head(after_seq, self.ack_timeout)

    async def read_after(self, after_seq: int, limit: int, event_filter: EventFilter | None = None) -> list[Entry]:
        self.check_ready()
        subjects = tuple(filter_subjects(self.prefix, event_filter or EventFilter()))
        reader = self._readers.pop((after_seq, subjects), None)
        try:
            if reader is None:
                reader = await self._open_reader(after_seq, subjects)
            entries = await self._read(reader, limit)
        except BackendUnavailable:
            if reader is not None:
                await _unsubscribe(reader.subscription)
            raise
        if reader.pending > 0:
            reader.used = time.monotonic()
            self._readers[(reader.last_seq, subjects)] = reader
        else:
            await _unsubscribe(reader.subscription)
        return entries

    async def _open_reader(self, after_seq: int, subjects: tuple[str, ...]) -> _Reader:
        from nats.js import api

        config = api.ConsumerConfig(
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            opt_start_seq=after_seq + 1,
            inactive_threshold=READER_IDLE_SECONDS * 3,
        )
        if len(subjects) == 1:
            subject = subjects[0]
        else:
            subject, config.filter_subjects = "", list(subjects)
        try:
            subscription = await self._js.subscribe(
                subject, stream=self.nats.stream, ordered_consumer=True, config=config
            )
            info = await subscription.consumer_info()
        except Exception as exc:
            raise BackendUnavailable(f"cannot read the NATS stream: {_describe(exc)}") from exc
        # Delivery starts as the consumer is created: what it already pushed is no longer pending.
        matching = info.num_pending + info.delivered.consumer_seq
        return _Reader(subscription, subjects, after_seq, matching, time.monotonic())

    async def _read(self, reader: _Reader, limit: int) -> list[Entry]:
        entries: list[Entry] = []
        now = time.monotonic_ns()
        while reader.pending > 0 and len(entries) < limit:
            try:
                msg = await reader.subscription.next_msg(timeout=self.ack_timeout)
            except Exception as exc:
                raise BackendUnavailable(f"reading the NATS stream stalled: {_describe(exc)}") from exc
            seq = msg.metadata.sequence.stream
            reader.pending = msg.metadata.num_pending
            if seq <= reader.last_seq:
                continue
            reader.last_seq = seq
            entry = self._stored_or_none(msg, seq, now)
            if entry is not None:
                entries.append(entry)
        return entries

    # -- state ----------------------------------------------------------------------------------

    async def _stream_info(self) -> Any:
        try:
            return await self._js.stream_info(self.nats.stream)
        except Exception as exc:
            raise BackendUnavailable(f"cannot reach the NATS stream {self.nats.stream!r}: {_describe(exc)}") from exc

    def _update_state(self, state: Any) -> None:
        self._stream_first = state.first_seq
        self._stream_bytes = state.bytes

    async def _poll_loop(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            if self._ready:
                try:
                    state = (await self._js.stream_info(self.nats.stream)).state
                    self._update_state(state)
                    if self._follower_stalled(state.last_seq, time.monotonic()):
                        await self._refollow()
                except Exception as exc:
                    log.debug("NATS stream poll failed", extra={"error": _describe(exc)})
            idle = time.monotonic() - READER_IDLE_SECONDS
            for key, reader in list(self._readers.items()):
                if reader.used < idle:
                    del self._readers[key]
                    await _unsubscribe(reader.subscription)

    @property
    def head_seq(self) -> int:
        return self._head

    @property
    def first_retained_seq(self) -> int:
        # Count retention is known exactly; bytes and age retention come from the last poll.
        first = max(self._stream_first, self._head + 1 - self.config.max_events, 1)
        return min(first, self._head + 1)

    def stats(self) -> LogStats:
        oldest = self.first_retained_seq
        retained = self._head + 1 - oldest
        return LogStats(
            self._head,
            oldest if retained else 0,
            retained,
            min(self._stream_bytes, self.config.max_bytes),
            self.config.max_events,
            self.config.max_bytes,
        )


async def _unsubscribe(subscription: Any) -> None:
    with contextlib.suppress(Exception):
        await subscription.unsubscribe()


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if type(exc).__name__ in text else f"{type(exc).__name__}: {text}"


def stream_epoch(stream: str, created: object) -> str:
    """The epoch of a JetStream stream: its name and creation time, the same for every bus process
    sharing it and across restarts, new when the stream is deleted and made again (its sequence
    then starts over)."""
    return hashlib.sha256(f"{stream}\0{created}".encode()).hexdigest()[:16]
