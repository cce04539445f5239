"""The bridge keeps delivering whatever one event or one bus restart does: an event no frame can
carry is skipped (logged, counted), a replaced bus log reaches every client as a reset frame, and
/healthz tells when the link task is gone. Real gRPC servers, a real bridge, real WebSockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from conftest import ROOT, make_config, running_host, wait_until
from test_bridge_helpers import open_client, recv, running_bridge, send, subscribe

from bridge.codec import JSON_PROTOCOL, PROTO_PROTOCOL
from bridge.health import STATE_TYPES
from coda.schema import new_event
from coda.v1 import bridge_pb2, bus_pb2, bus_pb2_grpc, events_pb2


async def http_get(url: str) -> tuple[int, str]:
    def fetch() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    return await asyncio.to_thread(fetch)


def token(seq: int, text: str) -> events_pb2.Event:
    event = new_event("llm", events_pb2.LlmToken(text=text))
    event.seq = seq
    return event


class ScriptedBus(bus_pb2_grpc.EventBusServicer):
    """A real EventBus server that streams what the test puts in `batches` (as an older bus, or one
    with a bug, might): the bridge cannot count on the bus having refused every bad event."""

    def __init__(self) -> None:
        self.batches: asyncio.Queue[list[events_pb2.Event]] = asyncio.Queue()
        self.subscribed = asyncio.Event()

    async def Describe(self, request, context):  # type: ignore[no-untyped-def]
        return bus_pb2.DescribeResponse(head_seq=0, backend="memory", epoch="scripted")

    async def Subscribe(self, request, context):  # type: ignore[no-untyped-def]
        self.subscribed.set()
        while True:
            events = await self.batches.get()
            yield bus_pb2.SubscribeResponse(batch=events_pb2.EventBatch(events=events))


BusT = TypeVar("BusT", bound=bus_pb2_grpc.EventBusServicer)


@contextlib.asynccontextmanager
async def serving(bus: BusT) -> AsyncIterator[tuple[BusT, str]]:
    """A real gRPC server on loopback for a fake bus; its address."""
    server = grpc.aio.server()
    bus_pb2_grpc.add_EventBusServicer_to_server(bus, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield bus, f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


def scripted_bus() -> contextlib.AbstractAsyncContextManager[tuple[ScriptedBus, str]]:
    return serving(ScriptedBus())


async def texts_until(ws, last: str, timeout: float = 10.0) -> list[str]:  # type: ignore[no-untyped-def]
    found: list[str] = []
    async with asyncio.timeout(timeout):
        while last not in found:
            frame = await recv(ws, timeout)
            if frame.WhichOneof("frame") == "events":
                found.extend(e.llm_token.text for e in frame.events.events)
    return found


async def test_an_event_no_frame_can_carry_is_skipped_and_delivery_goes_on(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with scripted_bus() as (bus, address), running_bridge(config, address) as bridge:
        clients = [await open_client(bridge.url, JSON_PROTOCOL), await open_client(bridge.url, PROTO_PROTOCOL)]
        for ws in clients:
            await subscribe(ws, ["llm.*"])
            assert (await recv(ws)).WhichOneof("frame") == "pong"
        bad = token(2, "bad")
        bad.time.seconds = 253_402_300_800  # the year 10000: no JSON, no date
        await bus.batches.put([token(1, "a"), bad, token(3, "b")])
        await bus.batches.put([token(4, "c")])
        for ws in clients:
            assert await texts_until(ws, "c") == ["a", "b", "c"]
        # A client that connects later is served too, and the bridge says it is healthy.
        late = await open_client(bridge.url)
        await subscribe(late, ["llm.*"])
        assert (await recv(late)).WhichOneof("frame") == "pong"
        await bus.batches.put([token(5, "d")])
        assert await texts_until(late, "d") == ["d"]
        assert (await http_get(f"{bridge.http_url}/healthz"))[0] == 200
        metrics = (await http_get(f"{bridge.http_url}/metrics"))[1]
        assert "coda_bridge_skipped_events_total 1.0" in metrics
        assert bridge.upstream is not None and bridge.upstream.callback_failures == 0


async def test_healthz_reports_a_link_task_that_has_stopped(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with running_host(config, only="bus") as host, running_bridge(config, host.address) as bridge:
        assert (await http_get(f"{bridge.http_url}/healthz"))[0] == 200
        task = bridge._upstream_task
        assert task is not None
        task.cancel()  # the way any crash would end it
        with contextlib.suppress(asyncio.CancelledError):
            await task
        status, body = await http_get(f"{bridge.http_url}/healthz")
        assert status == 503 and "bus link task has stopped" in body, body


def free_address() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


async def publish(address: str, texts: list[str]) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        call = bus_pb2_grpc.EventBusStub(channel).Publish()
        events = [new_event("llm", events_pb2.LlmToken(text=t)) for t in texts]
        await call.write(bus_pb2.PublishRequest(events=events))
        acks = (await call.read()).acks
        await call.done_writing()
    return acks[-1].seq


@pytest.mark.parametrize(("before", "after"), [(3, 30), (30, 3)], ids=["new-head-passes-cursor", "new-head-below"])
async def test_a_memory_bus_restart_reaches_clients_as_a_reset_and_they_get_every_new_event(
    tmp_path: Path, before: int, after: int
) -> None:
    address = free_address()
    # The link's first retry comes 1-2 s after the bus went away: time for the new bus to take
    # `after` events first, the case that used to skip them. Either order must work.
    config = make_config(
        tmp_path,
        CODA_GRPC__ADDRESS=address,
        CODA_BRIDGE__RECONNECT_INITIAL_SECONDS="2",
        CODA_BRIDGE__RECONNECT_MAX_SECONDS="2",
    )
    async with running_bridge(config, address, linked=False) as bridge:
        async with running_host(config, only="bus"):
            await asyncio.wait_for(bridge.linked.wait(), 20)
            ws = await open_client(bridge.url)
            await subscribe(ws, ["llm.*"])
            assert (await recv(ws)).WhichOneof("frame") == "pong"
            first_epoch = bridge.epoch()
            await publish(address, [f"old{i}" for i in range(before)])
            assert await texts_until(ws, f"old{before - 1}") == [f"old{i}" for i in range(before)]
        async with running_host(config, only="bus"):
            await publish(address, [f"new{i}" for i in range(after)])
            frames: list[bridge_pb2.ServerFrame] = []
            seen: list[str] = []
            async with asyncio.timeout(30):
                while f"new{after - 1}" not in seen:
                    frame = await recv(ws, 30)
                    frames.append(frame)
                    if frame.WhichOneof("frame") == "events":
                        seen.extend(e.llm_token.text for e in frame.events.events)
            kinds = [f.WhichOneof("frame") for f in frames]
            assert "reset" in kinds and kinds.index("reset") < kinds.index("events"), kinds
            reset = frames[kinds.index("reset")].reset
            assert reset.previous_epoch == first_epoch and reset.epoch == bridge.epoch() != first_epoch
            assert seen == [f"new{i}" for i in range(after)]
            # A client resuming with a seq of the old log (and its epoch) gets a reset and the new log.
            again = await open_client(bridge.url)
            await send(
                again,
                bridge_pb2.ClientFrame(
                    subscribe=bridge_pb2.SubscribeFrame(types=["llm.*"], after_seq=before + 1, epoch=first_epoch)
                ),
            )
            first = await recv(again)
            assert first.WhichOneof("frame") == "reset" and first.reset.requested_after_seq == before + 1
            assert await texts_until(again, f"new{after - 1}") == [f"new{i}" for i in range(after)]


@pytest.mark.parametrize("after", [30, 5], ids=["new-head-passes-cursor", "new-head-below"])
async def test_a_resume_replay_meeting_a_replaced_bus_log_ends_in_a_reset_not_its_events(
    tmp_path: Path, after: int
) -> None:
    """Found by tests/test_faults.py: a client resuming while the bus restarted (its link not back
    yet) had its replay read the new log under the old one's seqs (events under the wrong seq, or
    an error frame when the new head was below the position). The replay now asks with the epoch."""
    address = free_address()
    # The link retries 2.5-5 s after the bus went away; the replay below starts before that.
    config = make_config(
        tmp_path,
        CODA_GRPC__ADDRESS=address,
        CODA_BRIDGE__RECONNECT_INITIAL_SECONDS="5",
        CODA_BRIDGE__RECONNECT_MAX_SECONDS="5",
    )
    async with running_bridge(config, address, linked=False) as bridge:
        async with running_host(config, only="bus"):
            await asyncio.wait_for(bridge.linked.wait(), 20)
            ws = await open_client(bridge.url)
            await subscribe(ws, ["llm.*"])
            assert (await recv(ws)).WhichOneof("frame") == "pong"
            old_epoch = bridge.epoch()
            last = await publish(address, [f"old{i}" for i in range(20)])
            await texts_until(ws, "old19")
            await ws.close()
        async with running_host(config, only="bus"):
            await publish(address, [f"new{i}" for i in range(after)])
            assert bridge.epoch() == old_epoch  # the link is not back yet
            again = await open_client(bridge.url)
            await send(
                again,
                bridge_pb2.ClientFrame(
                    subscribe=bridge_pb2.SubscribeFrame(types=["llm.*"], after_seq=last - 10, epoch=old_epoch)
                ),
            )
            frames: list[bridge_pb2.ServerFrame] = []
            async with asyncio.timeout(20):
                while not any(f"new{after - 1}" in str(f.events) for f in frames):
                    frames.append(await recv(again, 20))
            kinds = [f.WhichOneof("frame") for f in frames]
            assert "error" not in kinds, frames
            # Before the reset only the old log's events (what the replay had of it), then the new log whole.
            cut = kinds.index("reset")
            before_reset = [e.llm_token.text for f in frames[:cut] for e in f.events.events]
            assert all(text.startswith("old") for text in before_reset), before_reset
            assert frames[cut].reset.previous_epoch == old_epoch != frames[cut].reset.epoch == bridge.epoch()
            assert [e.llm_token.text for f in frames[cut:] for e in f.events.events] == [
                f"new{i}" for i in range(after)
            ]


class ResettingBus(bus_pb2_grpc.EventBusServicer):
    """A real EventBus server whose bridge link (every type, from the head it described) streams what
    the test puts in `link`; a client's replay never answers: that replay stays unfinished. The
    bridge's reading of component states from the log (bridge/health.py) gets nothing, and is told
    apart by its request, not by its order: it may reach the bus before the link does."""

    def __init__(self) -> None:
        self.link: asyncio.Queue[bus_pb2.SubscribeResponse] = asyncio.Queue()
        self.replays = 0

    async def Describe(self, request, context):  # type: ignore[no-untyped-def]
        return bus_pb2.DescribeResponse(head_seq=10, backend="memory", epoch="one")

    @staticmethod
    def kind_of(request: bus_pb2.SubscribeRequest) -> str:
        if list(request.types) == ["*"] and request.after_seq == 10:
            return "link"
        return "states" if tuple(request.types) == STATE_TYPES else "replay"

    async def Subscribe(self, request, context):  # type: ignore[no-untyped-def]
        kind = self.kind_of(request)
        if kind != "link":
            if kind == "replay":
                self.replays += 1
            await asyncio.Event().wait()
        while True:
            yield await self.link.get()


def batch(*seqs: int) -> bus_pb2.SubscribeResponse:
    return bus_pb2.SubscribeResponse(batch=events_pb2.EventBatch(events=[token(s, f"t{s}") for s in seqs]))


async def test_a_reset_during_an_unfinished_replay_does_not_send_the_live_events_it_held(tmp_path: Path) -> None:
    """Found by tests/test_faults.py: the live events a replay held were sent on a reset although
    the replay had not sent what comes before them: a silent hole before the reset frame."""
    async with serving(ResettingBus()) as (bus, address), running_bridge(make_config(tmp_path), address) as bridge:
        await bus.link.put(batch(11, 12))
        await wait_until(lambda: bridge.dispatched_seq >= 12, 10, "the link to deliver seq 12")
        ws = await open_client(bridge.url)
        await send(
            ws,
            bridge_pb2.ClientFrame(subscribe=bridge_pb2.SubscribeFrame(types=["llm.*"], after_seq=5, epoch="one")),
        )
        # The replay of (5, 12] has started, and waits.
        await wait_until(lambda: bus.replays >= 1, 10, "the replay to start")
        await bus.link.put(batch(13))  # live: held until the replay is done
        await bus.link.put(bus_pb2.SubscribeResponse(reset=bus_pb2.LogReset(epoch="two", previous_epoch="one")))
        await bus.link.put(batch(1, 2))  # the new log
        frames = []
        async with asyncio.timeout(10):
            while not frames or frames[-1].WhichOneof("frame") != "events" or "reset" not in str(frames):
                frames.append(await recv(ws))
        assert [f.WhichOneof("frame") for f in frames] == ["reset", "events"], frames
        assert frames[0].reset.epoch == "two"
        assert [e.seq for e in frames[1].events.events] == [1, 2]


class FailingReplayBus(ResettingBus):
    """The link's subscription streams `link`; a client's replay is refused with a status no retry
    will change."""

    async def Subscribe(self, request, context):  # type: ignore[no-untyped-def]
        kind = self.kind_of(request)
        if kind != "link":
            if kind == "replay":
                self.replays += 1
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the log is being compacted")
        while True:
            yield await self.link.get()


async def test_a_replay_the_bus_refuses_is_reported_as_a_gap_and_live_events_go_on(tmp_path: Path) -> None:
    """A replay that failed for good kept the live events it held until the client was cut off."""
    async with serving(FailingReplayBus()) as (bus, address), running_bridge(make_config(tmp_path), address) as bridge:
        await bus.link.put(batch(11, 12))
        await wait_until(lambda: bridge.dispatched_seq >= 12, 10, "the link to deliver seq 12")
        ws = await open_client(bridge.url)
        frame = bridge_pb2.SubscribeFrame(types=["llm.*"], after_seq=5, epoch="one")
        await send(ws, bridge_pb2.ClientFrame(subscribe=frame))
        await wait_until(lambda: bus.replays >= 1, 10, "the replay to be refused")
        await bus.link.put(batch(13))
        kinds = []
        async with asyncio.timeout(10):
            while "events" not in kinds:
                got = await recv(ws)
                kinds.append(got.WhichOneof("frame"))
                if kinds[-1] == "gap":
                    assert (got.gap.requested_after_seq, got.gap.oldest_seq, got.gap.missed) == (5, 13, 7)
                if kinds[-1] == "events":
                    assert [e.seq for e in got.events.events] == [13]
        assert kinds == ["error", "gap", "events"], kinds


NODE = shutil.which("node")


def node_websocket_flags() -> list[str] | None:
    """The node flags that give it a global WebSocket (Node 22+: none; 20-21: experimental), or
    None when this node has none."""
    for flags in ([], ["--experimental-websocket"]):
        probe = subprocess.run(
            [NODE, *flags, "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"],  # type: ignore[list-item]
            capture_output=True,
            timeout=30,
        )
        if probe.returncode == 0:
            return flags
    return None


@pytest.mark.skipif(NODE is None, reason="node is not installed")
async def test_the_javascript_client_resets_its_cursor_and_tells_the_page(tmp_path: Path) -> None:
    """bridge/static/coda-client.js itself, run by node against the real bridge over a real
    WebSocket: after a bus restart it emits `reset`, forgets its seq, and delivers the new log."""
    flags = node_websocket_flags()
    if flags is None:
        pytest.skip("this node has no WebSocket client")
    address = free_address()
    config = make_config(
        tmp_path,
        CODA_GRPC__ADDRESS=address,
        CODA_BRIDGE__RECONNECT_INITIAL_SECONDS="0.2",
        CODA_BRIDGE__RECONNECT_MAX_SECONDS="0.5",
    )
    script = tmp_path / "client.mjs"
    client_url = (ROOT / "bridge" / "static" / "coda-client.js").as_uri()
    script.write_text(
        f"""
import {{ CodaClient }} from {json.dumps(client_url)};
import readline from "node:readline";
const client = new CodaClient({{ url: process.argv[2], reconnectInitialMs: 100, reconnectMaxMs: 300 }});
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\\n");
client.addEventListener("hello", (e) => say({{ kind: "hello", epoch: e.detail.epoch || "" }}));
client.addEventListener("event", (e) => say({{ kind: "event", text: e.detail.event.llmToken?.text, lastSeq: client.lastSeq }}));
client.addEventListener("reset", (e) => say({{ kind: "reset", ...e.detail, lastSeq: client.lastSeq, epoch: client.epoch }}));
client.connect();
client.subscribe({{ types: ["llm.*"] }});
readline.createInterface({{ input: process.stdin }}).on("line", () => process.exit(0));
"""
    )
    async with running_bridge(config, address, linked=False) as bridge:
        proc = await asyncio.create_subprocess_exec(
            NODE,  # type: ignore[arg-type]
            *flags,
            "--no-warnings",
            str(script),
            bridge.url,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stdin is not None

        async def next_line(kind: str) -> dict[str, object]:
            async with asyncio.timeout(30):
                while True:
                    line = await proc.stdout.readline()  # type: ignore[union-attr]
                    assert line, "the node client ended"
                    said = json.loads(line)
                    if said["kind"] == kind:
                        return said

        try:
            async with running_host(config, only="bus"):
                await asyncio.wait_for(bridge.linked.wait(), 20)
                await asyncio.sleep(0.5)  # the client has its hello and its subscription in
                await publish(address, ["old0", "old1"])
                assert (await next_line("event"))["text"] == "old0"
                first_epoch = bridge.epoch()
                assert (await next_line("event"))["text"] == "old1"
            async with running_host(config, only="bus"):
                await publish(address, ["new0"])
                reset = await next_line("reset")
                assert reset["previousEpoch"] == first_epoch and reset["epoch"] == bridge.epoch() != first_epoch
                assert reset["lastSeq"] == 0
                event = await next_line("event")
                assert event["text"] == "new0"
        finally:
            proc.stdin.write(b"bye\n")
            with contextlib.suppress(Exception):
                await proc.stdin.drain()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
