"""Pending timers in a small SQLite file, so that an alarm set for tomorrow morning survives a restart.

Rows hold wall-clock due times (seconds since the epoch): the monotonic clock the timers run on does
not survive the process.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StoredTimer:
    timer_id: str
    label: str
    session_id: str
    correlation_id: str
    #: Its whole length in seconds, as set or changed.
    seconds: float
    #: When it goes off, in seconds since the epoch (for a paused timer: as if resumed when saved).
    due: float
    #: Seconds left on a paused timer; None while it runs.
    paused_left: float | None = None


class TimerStore:
    """Pending timers by id; path "" or ":memory:" keeps them in this process only."""

    def __init__(self, path: str) -> None:
        target = path or ":memory:"
        if target != ":memory:":
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(target, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock, self._db:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS timers (timer_id TEXT PRIMARY KEY, label TEXT NOT NULL,"
                " session_id TEXT NOT NULL, correlation_id TEXT NOT NULL, seconds REAL NOT NULL, due REAL NOT NULL,"
                " paused_left REAL)"
            )
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(timers)")}
            if "paused_left" not in columns:  # a file written before timers could be paused
                self._db.execute("ALTER TABLE timers ADD COLUMN paused_left REAL")

    def save(self, timer: StoredTimer) -> None:
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO timers (timer_id, label, session_id, correlation_id, seconds, due, paused_left)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    timer.timer_id,
                    timer.label,
                    timer.session_id,
                    timer.correlation_id,
                    timer.seconds,
                    timer.due,
                    timer.paused_left,
                ),
            )

    def delete(self, timer_id: str) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM timers WHERE timer_id = ?", (timer_id,))

    def pending(self) -> list[StoredTimer]:
        """Every stored timer, soonest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT timer_id, label, session_id, correlation_id, seconds, due, paused_left FROM timers ORDER BY due"
            ).fetchall()
        return [StoredTimer(*row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
