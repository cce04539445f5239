"""Token bucket: `rate` tokens per second, at most `burst` saved up. Pure, with an injectable clock."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        """A rate of 0 or less means unlimited."""
        self.rate = rate
        self.burst = max(burst, 1.0) if rate > 0 else 0.0
        self._clock = clock
        self._tokens = self.burst
        self._updated = clock()

    @property
    def unlimited(self) -> bool:
        return self.rate <= 0

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now

    def try_take(self, amount: float = 1.0) -> bool:
        """Take `amount` tokens if there are that many; an amount larger than the burst never fits."""
        if self.unlimited:
            return True
        self._refill()
        if self._tokens >= amount:
            self._tokens -= amount
            return True
        return False

    def retry_after(self, amount: float = 1.0) -> float:
        """Seconds until `amount` tokens will be available (inf when it exceeds the burst)."""
        if self.unlimited:
            return 0.0
        if amount > self.burst:
            return float("inf")
        self._refill()
        return max(0.0, (amount - self._tokens) / self.rate)
