"""Third-party tools: a real package installed with pip, found through its `coda.tools` entry points.

The package (tests/plugins/coda_tools_example) is installed into a temporary directory, not the
venv, and `python -m coda serve` runs with that directory on PYTHONPATH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from conftest import ROOT, Processes
from tools_helpers import ExecuteStream

from coda.tools import ErrorCode
from coda.v1 import tools_pb2, tools_pb2_grpc

PLUGIN_SOURCE = ROOT / "tests" / "plugins" / "coda_tools_example"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("plugin")
    source = work / "source"
    shutil.copytree(PLUGIN_SOURCE, source)  # pip's build files stay out of the repository
    site = work / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--target",
            str(site),
            str(source),
        ],
        check=True,
        timeout=120,
        env={**os.environ, "PIP_NO_INPUT": "1"},
    )
    assert list(site.glob("coda_tools_example-*.dist-info"))
    return site


async def test_installed_plugin_tools_are_served(plugin_site: Path, tmp_path: Path, processes: Processes) -> None:
    config_plugin = tmp_path / "coda_cfg_tools.py"
    config_plugin.write_text(
        "from coda.tools import tool\n"
        "@tool(name='shout', description='Upper-case a text.',"
        " parameters={'type': 'object', 'properties': {'text': {'type': 'string'}}, 'required': ['text']})\n"
        "def shout(text):\n    return text.upper()\n"
    )
    env = {
        "PYTHONPATH": os.pathsep.join([str(plugin_site), str(tmp_path), str(ROOT)]),
        "CODA_TOOLS__PLUGINS": json.dumps(["coda_cfg_tools:shout", "no_such_module:tools"]),
        "CODA_BUS__PATH": str(tmp_path / "bus"),
        "CODA_LOG__LEVEL": "error",
    }
    address = serve_bus_and_tools(processes, env)
    async with grpc.aio.insecure_channel(address) as channel:
        listed = await tools_pb2_grpc.ToolsStub(channel).ListTools(tools_pb2.ListToolsRequest(), timeout=10)
        names = {spec.name for spec in listed.tools}
        assert {"echo", "reverse", "initials", "shout", "calculate", "get_time"} <= names

        stream = ExecuteStream(channel)
        stream.call("e", "echo", {"text": "hi", "times": 2}, session_id="s1")
        stream.call("r", "reverse", {"text": "abc"})
        stream.call("i", "initials", {"name": "   "})
        stream.call("s", "shout", {"text": "quiet"})
        stream.call("bad", "echo", {"text": "hi", "times": 9})
        finals = await stream.until_final("e", "r", "i", "s", "bad", timeout=20)
        assert json.loads(finals["e"][1].result_json) == {"echo": "hi hi", "session_id": "s1"}
        assert [m.fraction for k, m in stream.of("e") if k == "progress"] == [0.5, 1.0]
        assert json.loads(finals["r"][1].result_json) == "cba"
        assert finals["i"][1].code == ErrorCode.TOOL_ERROR_CODE_INVALID_ARGUMENTS and finals["i"][1].field == "/name"
        assert json.loads(finals["s"][1].result_json) == "QUIET"
        assert finals["bad"][1].field == "/times"
        stream.close()


def serve_bus_and_tools(processes: Processes, env: dict[str, str]) -> str:
    """Start `coda serve --only bus,tools` as a process; its gRPC address."""
    _, banner = processes.start(
        ["-m", "coda", "serve", "--only", "bus,tools", "--address", "127.0.0.1:0", "--metrics-address", ""],
        env=env,
        banner="coda serving",
    )
    return banner.split(" on ", 1)[1].split()[0]


async def test_entry_points_can_be_switched_off(plugin_site: Path, tmp_path: Path, processes: Processes) -> None:
    env = {
        "PYTHONPATH": os.pathsep.join([str(plugin_site), str(ROOT)]),
        "CODA_TOOLS__ENTRY_POINTS": "false",
        "CODA_TOOLS__DISABLED": '["calculate"]',
        "CODA_BUS__PATH": str(tmp_path / "bus"),
        "CODA_LOG__LEVEL": "error",
    }
    address = serve_bus_and_tools(processes, env)
    async with grpc.aio.insecure_channel(address) as channel:
        listed = await tools_pb2_grpc.ToolsStub(channel).ListTools(tools_pb2.ListToolsRequest(), timeout=10)
        names = {spec.name for spec in listed.tools}
        assert "echo" not in names and "calculate" not in names and "get_time" in names
