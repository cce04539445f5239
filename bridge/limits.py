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
