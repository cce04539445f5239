"""The bus as a process: durable restart, SIGTERM drain, and the `coda events` CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import grpc

from coda.bus.client import subscribe
from coda.v1 import bus_pb2, bus_pb2_grpc
from tests.conftest import ROOT

SERVE = ["-m", "coda", "serve", "--only", "bus", "--address", "127.0.0.1:0", "--metrics-address", ""]


def serve(processes, tmp_path: Path, **env: str):  # type: ignore[no-untyped-def]
    child, banner = processes.start(
        SERVE, env={"CODA_CONFIG": "", "CODA_BUS__PATH": str(tmp_path / "bus"), **env}, banner="coda serving"
    )
    return child, banner.split(" on ", 1)[1].split()[0]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "coda", "events", *args], capture_output=True, text=True, cwd=ROOT, timeout=60
    )


def describe(address: str) -> bus_pb2.DescribeResponse:
    with grpc.insecure_channel(address) as channel:
        return bus_pb2_grpc.EventBusStub(channel).Describe(bus_pb2.DescribeRequest(), timeout=10)


def test_durable_restart_keeps_the_log_and_continues_the_seq(processes, tmp_path: Path) -> None:
    env = {"CODA_BUS__BACKEND": "file", "CODA_BUS__FSYNC_INTERVAL_MS": "20"}
    child, address = serve(processes, tmp_path, **env)
    seqs = [
        int(cli("publish", "llm.token", "--json", json.dumps({"text": f"t{i}"}), "--address", address).stdout)
        for i in range(3)
    ]
    info = describe(address)
    assert info.backend == "file" and info.head_seq == seqs[-1]
    assert processes.stop(child) == 0
    assert list((tmp_path / "bus").glob("*.seg"))

    child, address = serve(processes, tmp_path, **env)
    after = describe(address)
    # The restarted log holds everything from before (the host also adds its own system events).
    assert after.oldest_seq == 1 and after.head_seq > info.head_seq
    seq = int(cli("publish", "system.error", "--json", '{"message": "after restart"}', "--address", address).stdout)
    assert seq == after.head_seq + 1
    replay = cli("tail", "--json", "--after-seq", "0", "--count", str(seq), "--address", address)
    events = [json.loads(line) for line in replay.stdout.splitlines()]
    assert [int(e["seq"]) for e in events] == list(range(1, seq + 1))
    assert [e["llmToken"]["text"] for e in events if "llmToken" in e] == ["t0", "t1", "t2"]
    assert processes.stop(child) == 0


def test_sigterm_drains_subscribers_and_exits_zero(processes, tmp_path: Path) -> None:
    child, address = serve(processes, tmp_path)
    received: list[int] = []
    ended = threading.Event()
    outcome: list[str] = []

    def follow() -> None:
        import asyncio

        async def run() -> None:
            async with grpc.aio.insecure_channel(address) as channel:
                try:
                    async for response in subscribe(channel, ["llm.*"], after_seq=0):
                        received.extend(e.seq for e in response.batch.events)
                    outcome.append("ok")
                except grpc.aio.AioRpcError as exc:
                    outcome.append(exc.code().name)
            ended.set()

        asyncio.run(run())

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    published = [
        int(cli("publish", "llm.token", "--json", '{"text":"x"}', "--address", address).stdout) for _ in range(3)
    ]
    assert processes.stop(child) == 0
    assert ended.wait(20)
    assert outcome == ["ok"], outcome
    assert received == published


def test_cli_publish_tail_and_describe(processes, tmp_path: Path) -> None:
    child, address = serve(processes, tmp_path)
    seq = cli(
        "publish",
        "system.error",
        "--json",
        '{"message":"hi","level":"ERROR_LEVEL_ERROR"}',
        "--session",
        "s-1",
        "--correlation",
        "c-1",
        "--address",
        address,
    )
    assert seq.returncode == 0, seq.stderr
    n = int(seq.stdout)
    line = cli("tail", "--after-seq", str(n - 1), "--count", "1", "--address", address)
    assert line.returncode == 0 and line.stdout.split()[0] == str(n)
    assert "system.error" in line.stdout and "s-1" in line.stdout and '"message":"hi"' in line.stdout
    as_json = json.loads(
        cli(
            "tail", "--json", "--types", "system.error", "--after-seq", "0", "--count", "1", "--address", address
        ).stdout
    )
    assert as_json["systemError"] == {"level": "ERROR_LEVEL_ERROR", "message": "hi"}
    assert as_json["correlationId"] == "c-1"
    unknown = cli("publish", "nosuch.thing", "--address", address)
    assert unknown.returncode == 1 and "families: system" in unknown.stderr
    bad_session = cli("publish", "llm.token", "--session", "not ok", "--address", address)
    assert bad_session.returncode == 1 and "session_id" in bad_session.stderr
    info = json.loads(cli("describe", "--json", "--address", address).stdout)
    assert int(info["headSeq"]) >= n and info["backend"] == "memory"
    assert processes.stop(child) == 0
