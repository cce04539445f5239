"""Connection admission: total connections and connections per client IP. Pure bookkeeping."""

from __future__ import annotations

from collections import Counter


class ConnectionAdmission:
    def __init__(self, max_total: int, max_per_ip: int) -> None:
        """A limit of 0 means unlimited."""
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self._per_ip: Counter[str] = Counter()
        self.total = 0

    def refusal(self, ip: str) -> tuple[str, str] | None:
        """(reason label, message) when a new connection from `ip` must be refused, else None."""
        if self.max_total and self.total >= self.max_total:
            return "max_connections", f"too many connections: the bridge allows {self.max_total}"
        if self.max_per_ip and self._per_ip[ip] >= self.max_per_ip:
            return "max_connections_per_ip", f"too many connections from {ip}: {self.max_per_ip} allowed per address"
        return None

    def admit(self, ip: str) -> tuple[str, str] | None:
        """Count the connection in and return None, or return why it is refused (and count nothing)."""
        refused = self.refusal(ip)
        if refused is None:
            self.total += 1
            self._per_ip[ip] += 1
        return refused

    def release(self, ip: str) -> None:
        if self._per_ip[ip] <= 0:
            return
        self.total -= 1
        self._per_ip[ip] -= 1
        if not self._per_ip[ip]:
            del self._per_ip[ip]

    def count(self, ip: str) -> int:
        return self._per_ip[ip]


class DropNotices:
    """Coalesces the error frames of one kind of refusal (rate limits): at most one per window.

    A client that bursts far above its rate used to get an error frame per dropped frame, which
    filled its send queue with errors and got it closed (1013) although it was reading. Now the
    first drop after a quiet window is reported at once, the drops after it are counted, and the
    count is reported when the window ends (the shell sets a timer at `due`). The reported counts
    add up to the frames dropped. Pure: times are passed in.
    """

    def __init__(self, window: float = 1.0) -> None:
        self.window = window
        #: Drops counted and not yet reported.
        self.pending = 0
        self._next_report = float("-inf")

    def drop(self, now: float) -> int:
        """Count one dropped frame; the count to report now, or 0 (it goes out at `due`)."""
        self.pending += 1
        return self.flush(now)

    @property
    def due(self) -> float | None:
        """When the counted drops are to be reported; None when none wait."""
        return self._next_report if self.pending else None

    def flush(self, now: float) -> int:
        """The count to report now (0: nothing, or the window has not ended)."""
        if not self.pending or now < self._next_report:
            return 0
        count, self.pending = self.pending, 0
        self._next_report = now + self.window
        return count
