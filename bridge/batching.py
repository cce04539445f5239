"""Coalescing: at most one frame per window, so fast events share frames. Pure; the caller owns the timer.

An event after a quiet spell (nothing flushed for a window) leaves at once: a lone event pays no
wait. After a flush, what arrives within the window waits for it to end and leaves as one frame.
Under load the window stretches: when the flush timer fires late (the process is busy) and when
a flush itself takes long (many clients), so that writing to clients never takes more than a
fraction of the bridge's time.
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")

#: Flushing may take at most about 1/(1 + COST_SHARE) of the time: the window (the quiet time
#: after a flush) is at least this many times the last flush's duration.
COST_SHARE = 1


class Coalescer(Generic[T]):
    """Collects items; a batch is due one window after the previous flush, or at once when full.

    The shell calls `add()` with the current time, flushes when it returns True, and otherwise
    arms a timer for `deadline` (set only while a batch is pending) and flushes when it fires,
    calling `take(now)` and then `flushed(duration)`.
    """

    def __init__(self, window: float, max_items: int, max_window: float | None = None) -> None:
        self.base_window = max(0.0, window)
        #: Under load the window stretches up to this; equal to `window` disables stretching.
        self.max_window = max(self.base_window, max_window if max_window is not None else self.base_window)
        self.window = self.base_window
        self.max_items = max(1, max_items)
        self._items: list[T] = []
        self.deadline: float | None = None
        self.last_flush = float("-inf")
        self._late = 0.0

    def __len__(self) -> int:
        return len(self._items)

    def add(self, items: list[T], now: float) -> bool:
        """Add items; True when the batch should be flushed now (quiet before, full, or no window)."""
        if not items:
            return False
        deadline = self.deadline
        if deadline is None or not self._items:
            deadline = self.deadline = max(now, self.last_flush + self.window)
        self._items.extend(items)
        return deadline <= now or len(self._items) >= self.max_items

    def due(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline

    def take(self, now: float) -> list[T]:
        """The pending batch; `now` is when it is flushed."""
        self._late = max(0.0, now - self.deadline) if self.deadline is not None else 0.0
        items, self._items, self.deadline = self._items, [], None
        self.last_flush = now
        return items

    def flushed(self, duration: float) -> None:
        """Writing the batch taken last took `duration`: adapt the window. It stretches to twice
        how late the flush ran (the process is busy) or COST_SHARE times the duration (many
        clients), whichever is longer; it relaxes back by half per light flush."""
        # The next window starts when this flush ended: under load the process gets its share
        # of time back between flushes instead of flushing back to back.
        self.last_flush += duration
        wanted = max(2 * self._late, COST_SHARE * duration)
        if wanted > self.window / 2:
            self.window = min(self.max_window, max(self.window, wanted))
        else:
            self.window = max(self.base_window, self.window / 2)
