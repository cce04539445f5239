"""Sessions: who a conversation belongs to and how it is set up, kept in a small SQLite file.

The turns themselves live in Memory (AddTurn / History); the store keeps what Memory does not know:
the session's user, its settings, a turn count and the last user text for listings. A few recent
turns are also cached here so that a session still has history to show when Memory is down (for
the sessions held in memory: every open one and the most recently used idle ones).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import uuid
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from coda.schema import session_id_problem
from coda.v1 import events_pb2, memory_pb2

log = logging.getLogger(__name__)

RECENT_TURNS_CACHED = 20
#: Sessions kept in this process while no conversation has them open (most recently used first);
#: the rest live only in the file. Without a bound every session ever opened stayed in memory, and
#: an OpenAI client that sends each request as its own session grew the process without end.
IDLE_SESSIONS_KEPT = 256
#: How often (seconds) creating a session also forgets the sessions unused for `keep_days`.
PRUNE_INTERVAL_SECONDS = 3600.0


def new_session_id() -> str:
    return "s-" + uuid.uuid4().hex[:16]


def check_session_id(session_id: str) -> None:
    """A client-chosen id follows the one rule for session ids (the bus's), so no event of the session
    is refused later."""
    problem = session_id_problem(session_id)
    if problem:
        raise ValueError(f"invalid session id: {problem}")


@dataclass
class Session:
    session_id: str
    user_id: str
    settings: events_pb2.ConversationSettings
    turns: int = 0
    last_user_text: str = ""
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    #: Newest last; a fallback for History when Memory is unavailable.
    recent: deque[memory_pb2.Turn] = field(default_factory=lambda: deque(maxlen=RECENT_TURNS_CACHED))


class SessionStore:
    """Sessions by id, persisted in SQLite (path "" or ":memory:" keeps them in this process only).

    A session unused for `keep_days` is forgotten (0: never), at start and then at most once an hour
    as sessions are created: an OpenAI-compatible client that sends every request without a session
    leaves one behind per request, and the file would grow without end."""

    def __init__(
        self,
        path: str,
        idle_kept: int | None = None,
        keep_days: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if keep_days < 0:
            raise ValueError(f"assistant.sessions_keep_days must be 0 (keep) or more, got {keep_days}")
        target = path or ":memory:"
        if target != ":memory:":
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(target, check_same_thread=False)
        self._lock = threading.Lock()
        #: Sessions in memory, least recently used first: every open one and `idle_kept` others.
        self._live: OrderedDict[str, Session] = OrderedDict()
        #: Open conversations per session: a held session is one object for all of them.
        self._holders: Counter[str] = Counter()
        self._idle_kept = IDLE_SESSIONS_KEPT if idle_kept is None else idle_kept
        with self._lock, self._db:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS sessions ("
                " session_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, settings BLOB NOT NULL,"
                " turns INTEGER NOT NULL, last_user_text TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL)"
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS sessions_by_user ON sessions (user_id, updated)")
            self._db.execute("CREATE INDEX IF NOT EXISTS sessions_by_age ON sessions (updated)")
        self._keep_seconds = keep_days * 86400.0
        self._clock = clock
        self._pruned_at = -float("inf")
        self._prune_now()

    def get(self, session_id: str) -> Session | None:
        session = self._live.get(session_id)
        if session is not None:
            self._live.move_to_end(session_id)
            return session
        with self._lock:
            row = self._db.execute(
                "SELECT session_id, user_id, settings, turns, last_user_text, created, updated"
                " FROM sessions WHERE session_id = ?",
                (session_id,),
            ).fetchone()
        if row is None:
            return None
        session = _from_row(row)
        self._keep(session)
        return session

    def create(self, session_id: str, user_id: str, settings: events_pb2.ConversationSettings) -> Session:
        if self._clock() - self._pruned_at >= PRUNE_INTERVAL_SECONDS:
            self._prune_now()
        now = self._clock()
        session = Session(session_id=session_id, user_id=user_id, settings=settings, created=now, updated=now)
        self._keep(session)
        self.save(session)
        return session

    def hold(self, session: Session) -> None:
        """A conversation has the session open: it stays in memory until `release`."""
        self._holders[session.session_id] += 1
        self._live[session.session_id] = session
        self._live.move_to_end(session.session_id)

    def release(self, session: Session) -> None:
        """A conversation is done with the session (and its turns are saved)."""
        self._holders[session.session_id] -= 1
        if self._holders[session.session_id] <= 0:
            del self._holders[session.session_id]
        self._trim()

    @property
    def in_memory(self) -> int:
        return len(self._live)

    def _keep(self, session: Session) -> None:
        self._live[session.session_id] = session
        self._trim()

    def _trim(self) -> None:
        idle = [sid for sid in self._live if sid not in self._holders]
        for session_id in idle[: max(0, len(idle) - self._idle_kept)]:
            del self._live[session_id]

    def prune(self) -> int:
        """Forget the sessions unused for `keep_days` that no conversation holds; how many were."""
        if not self._keep_seconds:
            return 0
        cutoff = self._clock() - self._keep_seconds
        with self._lock, self._db:
            old = [row[0] for row in self._db.execute("SELECT session_id FROM sessions WHERE updated < ?", (cutoff,))]
            gone = [session_id for session_id in old if session_id not in self._holders]
            self._db.executemany("DELETE FROM sessions WHERE session_id = ?", [(sid,) for sid in gone])
        for session_id in gone:
            self._live.pop(session_id, None)
        return len(gone)

    def _prune_now(self) -> None:
        self._pruned_at = self._clock()
        count = self.prune()
        if count:
            log.info("forgot %d sessions unused for %g days", count, self._keep_seconds / 86400.0)

    def save(self, session: Session) -> None:
        session.updated = self._clock()
        with self._lock, self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    session.session_id,
                    session.user_id,
                    session.settings.SerializeToString(deterministic=True),
                    session.turns,
                    session.last_user_text,
                    session.created,
                    session.updated,
                ),
            )

    def record_turn(self, session: Session, turn: memory_pb2.Turn) -> None:
        session.turns += 1
        session.last_user_text = turn.user_text
        session.recent.append(turn)
        self.save(session)

    def list(self, user_id: str = "", limit: int = 50) -> list[Session]:
        """Sessions (of one user, or all), most recently used first."""
        query = "SELECT session_id, user_id, settings, turns, last_user_text, created, updated FROM sessions"
        params: tuple[object, ...] = ()
        if user_id:
            query += " WHERE user_id = ?"
            params = (user_id,)
        query += " ORDER BY updated DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(query, (*params, limit)).fetchall()
        return [self._live.get(row[0]) or _from_row(row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _from_row(row: tuple) -> Session:  # type: ignore[type-arg]
    session_id, user_id, blob, turns, last_user_text, created, updated = row
    settings = events_pb2.ConversationSettings()
    settings.ParseFromString(blob)
    return Session(
        session_id=session_id,
        user_id=user_id,
        settings=settings,
        turns=turns,
        last_user_text=last_user_text,
        created=created,
        updated=updated,
    )
