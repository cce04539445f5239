"""Streaming out of a worker thread: how the embedded engines (eSpeak NG, Piper) run their
CPU-heavy synthesis in the executor while the event loop receives each chunk as it is produced.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable
from typing import TypeVar

T = TypeVar("T")

#: `sink(item)` hands one item to the event loop; True means "stop": nobody is listening any more.
Sink = Callable[[T], bool]


async def stream_from_thread(produce: Callable[[Sink[T]], None]) -> AsyncGenerator[T, None]:
    """Run `produce(sink)` in the default executor and yield each item it passes to `sink`, as it comes.

    `produce` must stop at its next item once `sink` returns True (the iterator was closed or the
    loop is gone); an exception it raises is re-raised here after the items before it.
    """
    loop = asyncio.get_running_loop()
    # Unbounded on purpose: callers produce one sentence per call, which is short, and a bound would
    # make the worker wait on a consumer that may never come back.
    queue: asyncio.Queue[tuple[T] | BaseException | None] = asyncio.Queue()
    stopped = False

    def deliver(item: tuple[T] | BaseException | None) -> bool:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the loop is closed: nobody is listening any more
            return True
        return False

    def sink(item: T) -> bool:
        return stopped or deliver((item,))

    def run() -> None:
        try:
            produce(sink)
        except BaseException as exc:
            deliver(exc)
            return
        deliver(None)

    future = loop.run_in_executor(None, run)
    try:
        while (item := await queue.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item[0]
    finally:
        stopped = True
        # Not awaited: a cancelled consumer must not wait; the worker stops at its next item.
        future.add_done_callback(lambda f: f.exception())
