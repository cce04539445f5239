"""Shared test fixtures: real servers on ephemeral loopback ports, and process cleanup."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path

import pytest

from coda import config as config_module
from coda.config import Config
from coda.runtime.host import Host

ROOT = Path(__file__).resolve().parent.parent

#: Hosts and processes of the tests run the intent agent without the local language model: loading
#: 0.5 GB of weights into each of hundreds of hosts would cost minutes and say nothing about what
#: those tests check. The tests of the model itself, and of the assistant answering with it, turn
#: it on (`WITH_LOCAL_MODEL`).
NO_LOCAL_MODEL = {"CODA_LLM__EMBEDDED_MODEL": ""}
WITH_LOCAL_MODEL = {"CODA_LLM__EMBEDDED_MODEL": "qwen2.5-coder-0.5b-instruct"}
os.environ.update(NO_LOCAL_MODEL)


def make_config(tmp_path: Path, **env: str) -> Config:
    """A config for tests: ephemeral loopback ports, files under tmp_path, CODA_* overrides in env."""
    base = {
        "CODA_GRPC__ADDRESS": "127.0.0.1:0",
        "CODA_METRICS__ADDRESS": "127.0.0.1:0",
        "CODA_BUS__PATH": str(tmp_path / "bus"),
        "CODA_MEMORY__PATH": str(tmp_path / "memory.db"),
        "CODA_ASSISTANT__SESSIONS_PATH": str(tmp_path / "sessions.db"),
        "CODA_TOOLS__TIMERS_PATH": str(tmp_path / "timers.db"),
        "CODA_GRPC__SHUTDOWN_GRACE_SECONDS": "1",
        "CODA_BRIDGE__PORT": "0",
        **NO_LOCAL_MODEL,
    }
    return config_module.load(None, env={**base, **env})


#: Seconds before pytest-timeout ends a test at which a hung one prints its asyncio tasks.
TASK_DUMP_LEAD_SECONDS = 8.0


def _running_loop_of(thread_id: int) -> asyncio.AbstractEventLoop | None:
    """The event loop a thread is running, found on its stack (asyncio keeps it thread-local)."""
    frame = sys._current_frames().get(thread_id)
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if isinstance(candidate, asyncio.AbstractEventLoop):
            return candidate
        frame = frame.f_back
    return None


def _dump_tasks(thread_id: int, name: str) -> None:
    """Print where each task of a hung test waits: pytest-timeout shows threads, and an asyncio
    test's thread is always in select(), which says nothing of what it awaits."""
    loop = _running_loop_of(thread_id)
    if loop is None:
        return
    for _ in range(3):  # the set of tasks may change under us
        try:
            tasks = list(asyncio.all_tasks(loop))
            break
        except RuntimeError:
            continue
    else:
        return
    out = sys.stderr
    print(f"\n{'+' * 20} asyncio tasks of {name}, {TASK_DUMP_LEAD_SECONDS:g} s before its timeout {'+' * 20}", file=out)
    for task in tasks:
        print(f"--- {task.get_name()}: {task.get_coro()!r}", file=out)
        with contextlib.suppress(Exception):
            task.print_stack(limit=10, file=out)
    out.flush()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    marker = item.get_closest_marker("timeout")
    timeout = float(marker.args[0]) if marker and marker.args else float(item.config.getini("timeout") or 0)
    timer = None
    if timeout > 2 * TASK_DUMP_LEAD_SECONDS and asyncio.iscoroutinefunction(getattr(item, "obj", None)):
        timer = threading.Timer(timeout - TASK_DUMP_LEAD_SECONDS, _dump_tasks, (threading.get_ident(), item.nodeid))
        timer.daemon = True
        timer.start()
    try:
        return (yield)
    finally:
        if timer is not None:
            timer.cancel()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@contextlib.asynccontextmanager
async def running_host(config: Config, only: str | None = None) -> AsyncIterator[Host]:
    """A real Coda host on an ephemeral port, stopped at exit."""
    host = Host(config, only)
    try:
        await host.start()
        yield host
    finally:
        await host.stop()


class Processes:
    """Starts child processes for a test and makes sure every one of them is gone afterwards."""

    def __init__(self) -> None:
        self._children: list[subprocess.Popen[str]] = []

    def start(
        self, args: list[str], *, env: dict[str, str] | None = None, banner: str = "", timeout: float = 60.0
    ) -> tuple[subprocess.Popen[str], str]:
        """Start `python -m <args>`; when `banner` is given, wait for a stdout line starting with it."""
        child = subprocess.Popen(
            [sys.executable, *args],
            stdout=subprocess.PIPE,
            stderr=None,
            text=True,
            cwd=ROOT,
            # Children run in the repository: timers stay in memory unless a test gives them a file,
            # never in the var/ of a `make run` there.
            env={**os.environ, "PYTHONUNBUFFERED": "1", "CODA_TOOLS__TIMERS_PATH": "", **(env or {})},
            start_new_session=True,
        )
        self._children.append(child)
        line = ""
        if banner:
            assert child.stdout is not None
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                line = child.stdout.readline()
                if not line:
                    raise RuntimeError(f"{args} exited ({child.wait()}) before printing {banner!r}")
                if line.startswith(banner):
                    break
            else:
                raise TimeoutError(f"{args} did not print {banner!r} in {timeout}s")
        return child, line.strip()

    def stop(self, child: subprocess.Popen[str], sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        if child.poll() is None:
            child.send_signal(sig)
            try:
                child.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()
        return child.returncode

    def cleanup(self) -> None:
        for child in self._children:
            if child.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()
            if child.stdout:
                child.stdout.close()


@pytest.fixture
def processes() -> Iterator[Processes]:
    procs = Processes()
    try:
        yield procs
    finally:
        procs.cleanup()


async def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll `condition` (state another task changes) until it holds; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)
