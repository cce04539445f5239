"""`coda events tail` as a terminal user runs it: Ctrl-C stops it quietly, whenever it comes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_bus_process import cli, serve

from tests.conftest import ROOT


def _tail(address: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "coda", "events", "tail", "--after-seq", "0", "--address", address],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "CODA_CONFIG": ""},
    )


def _interrupt(tail: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        tail.send_signal(signal.SIGINT)  # what Ctrl-C sends
        _, stderr = tail.communicate(timeout=20)
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
    return tail.returncode, stderr


def test_ctrl_c_on_tail_exits_quietly(processes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    child, address = serve(processes, tmp_path)
    published = cli("publish", "system.error", "--json", '{"message":"hi"}', "--address", address)
    assert published.returncode == 0, published.stderr
    # While tailing: the subscription is live (the retained events arrived).
    for attempt in range(4):
        tail = _tail(address)
        assert tail.stdout is not None
        first = tail.stdout.readline()
        assert first.split()[0] == "1", first
        code, stderr = _interrupt(tail)
        assert code == 130, (attempt, code, stderr)
        assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, (attempt, stderr)
    # While starting up (loading modules, connecting): the Ctrl-C lands wherever the command is.
    for delay in (0.2, 0.3, 0.4, 0.5, 0.65, 0.8, 1.0):
        tail = _tail(address)
        time.sleep(delay)
        code, stderr = _interrupt(tail)
        if "init_import_site" in stderr or ("Traceback" in stderr and str(ROOT) not in stderr):
            continue  # it landed while the interpreter itself was starting (site, runpy), before coda ran
        # -SIGINT: the signal came before Python had set up its handler (the default action ends it).
        assert code in (130, -signal.SIGINT), (delay, code, stderr)
        assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, (delay, stderr)
    assert processes.stop(child) == 0
