"""Coalescing: events that arrive within a short window leave as one frame. Pure; the caller owns the timer."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Coalescer(Generic[T]):
    """Collects items; a batch is due `window` seconds after its first item, or at once when full.

    The shell calls `add()` with the current time, flushes when it returns True, and otherwise
    arms a timer for `deadline` (set only while a batch is pending) and flushes when it fires.
    """

    def __init__(self, window: float, max_items: int, max_window: float | None = None) -> None:
        self.base_window = max(0.0, window)
        #: Under load the window stretches up to this (see `note_lag`); equal to `window` disables it.
        self.max_window = max(self.base_window, max_window if max_window is not None else self.base_window)
        self.window = self.base_window
        self.max_items = max(1, max_items)
        self._items: list[T] = []
        self.deadline: float | None = None

    def note_lag(self, lag: float) -> None:
        """Report how late the last flush ran. A late flush means the sends of each batch take longer
        than the window, so the window grows (twice the lag) and batches carry more events per send;
        it shrinks back by half per punctual flush."""
        if lag > self.window / 2:
            self.window = min(self.max_window, max(self.window, 2 * lag))
        else:
            self.window = max(self.base_window, self.window / 2)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, items: list[T], now: float) -> bool:
        """Add items; True when the batch should be flushed now (full, or no window)."""
        if not items:
            return False
        if not self._items:
            self.deadline = now + self.window
        self._items.extend(items)
        return len(self._items) >= self.max_items or self.window == 0.0

    def due(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline

    def take(self) -> list[T]:
        items, self._items, self.deadline = self._items, [], None
        return items
