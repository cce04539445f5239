"""Connection churn does not grow the bridge: closed connections are freed, not kept until a rare full GC.

Each closed WebSocket connection is a web of reference cycles, and service processes collect the
oldest generation rarely (`tune_for_service`), so before `ChurnCollector` every 1,000
connects/closes kept about 4 MB more of the bridge's memory.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import make_config, running_host, wait_until
from test_bridge_helpers import open_client, running_bridge

from coda.runtime.gc_tuning import ChurnCollector, tune_for_service


@contextmanager
def service_gc() -> Iterator[None]:
    """The GC settings of a `coda bridge` process, restored afterwards for the rest of the suite."""
    thresholds = gc.get_threshold()
    tune_for_service()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_collections_come_after_enough_releases_relative_to_what_is_live() -> None:
    churn = ChurnCollector(every=3, max_delay=1.0)
    assert churn.collect() == 0 and churn.collections == 0, "nothing released: no collection"
    assert churn.released() is True, "the first release starts the timer"
    assert churn.released() is False
    assert not churn.due(live=0)
    churn.released()
    assert churn.due(live=0)
    assert not churn.due(live=40), "with 40 still open, a collection waits for 10 releases"
    churn.collect()
    assert churn.pending == 0 and churn.collections == 1
    assert churn.released() is True, "the next release starts a new timer"


async def test_closed_connections_are_freed_under_service_gc_settings(tmp_path: Path) -> None:
    config = make_config(tmp_path, CODA_BRIDGE__MAX_CONNECTIONS_PER_IP="1000")
    async with running_host(config, only="bus") as host, running_bridge(config, host.address) as bridge:
        bridge.churn = ChurnCollector(every=50, max_delay=0.5)
        with service_gc():
            clients = await asyncio.gather(*(open_client(bridge.url) for _ in range(120)))
            await wait_until(lambda: len(bridge.connections) == 120, 10, "every connection to be served")
            alive = [weakref.ref(connection) for connection in bridge.connections.values()]
            alive += [weakref.ref(connection.ws) for connection in bridge.connections.values()]
            # Long-lived connections end up in the oldest generation, as in a running bridge.
            gc.collect()
            await asyncio.gather(*(client.close() for client in clients))
            del clients
            await wait_until(lambda: not bridge.connections, 10, "every connection to end")
            await wait_until(lambda: all(ref() is None for ref in alive), 10, "closed connections to be freed")
            assert bridge.churn.collections >= 2, "120 releases: two by count (50 each), the rest by timer"
