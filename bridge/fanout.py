"""Encode-once fan-out: clients with the same filter form a group; each batch is encoded once per
(group, subprotocol) and the same frame is offered to every member without awaiting anyone.

Groups are indexed by session so that a batch only visits the groups that can match it: the
session-less groups and the groups of the sessions present in the batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Protocol

from coda.bus.filters import FilterError, compile_types

from .codec import EncodedEvent, events_frame
from .metrics import DeliveryStats

__all__ = ["FanOut", "FilterError", "GroupKey", "Member", "compile_filter"]

#: (admitted type names or None for all, session id or "" for all sessions)
GroupKey = tuple[frozenset[str] | None, str]


def compile_filter(patterns: Iterable[str], session_id: str) -> GroupKey:
    """The group key of a subscription; raises FilterError for a pattern that matches nothing."""
    return compile_types(list(patterns)), session_id


def select(key: GroupKey, events: list[EncodedEvent]) -> list[EncodedEvent]:
    types, session = key
    if types is None:
        return events if not session else [e for e in events if e.session_id == session]
    if not session:
        return [e for e in events if e.type in types]
    return [e for e in events if e.type in types and e.session_id == session]


class Member(Protocol):
    protocol: str

    def offer(self, frame: str | bytes, last_seq: int, time_ns: int, count: int) -> bool:
        """Take a shared, already encoded events frame (its last seq, oldest event time, size); must not block.

        True when the frame was written to the client now; False when it was queued (the member
        accounts for it when it sends it) or dropped."""
        ...


class _Group:
    __slots__ = ("key", "members")

    def __init__(self, key: GroupKey) -> None:
        self.key = key
        #: subprotocol -> members (a dict used as an ordered set)
        self.members: dict[str, dict[Member, None]] = {}

    def __len__(self) -> int:
        return sum(len(m) for m in self.members.values())


class FanOut:
    def __init__(self, stats: DeliveryStats | None = None, clock: Callable[[], int] = time.time_ns) -> None:
        #: Frames members wrote at once are counted here, once per group and batch.
        self.stats = stats if stats is not None else DeliveryStats()
        self._clock = clock
        self._groups: dict[GroupKey, _Group] = {}
        self._by_session: dict[str, dict[GroupKey, _Group]] = {}
        self._member_key: dict[Member, GroupKey] = {}
        #: frames encoded so far (one per group, subprotocol and batch): the work that scales with groups
        self.frames_encoded = 0

    @property
    def groups(self) -> int:
        return len(self._groups)

    @property
    def members(self) -> int:
        return len(self._member_key)

    def join(self, member: Member, key: GroupKey) -> None:
        """Add a member to the group of `key` (leaving its previous group)."""
        self.leave(member)
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(key)
            self._by_session.setdefault(key[1], {})[key] = group
        group.members.setdefault(member.protocol, {})[member] = None
        self._member_key[member] = key

    def leave(self, member: Member) -> None:
        key = self._member_key.pop(member, None)
        if key is None:
            return
        group = self._groups[key]
        members = group.members.get(member.protocol)
        if members is not None:
            members.pop(member, None)
            if not members:
                del group.members[member.protocol]
        if not group.members:
            del self._groups[key]
            sessions = self._by_session[key[1]]
            del sessions[key]
            if not sessions:
                del self._by_session[key[1]]

    def dispatch(self, events: list[EncodedEvent]) -> None:
        """Offer each group its matching events, encoded once per subprotocol."""
        if not events or not self._groups:
            return
        for group in list(self._by_session.get("", {}).values()):
            self._send(group, select(group.key, events))
        if len(self._by_session) > (1 if "" in self._by_session else 0):
            by_session: dict[str, list[EncodedEvent]] = {}
            for event in events:
                if event.session_id:
                    by_session.setdefault(event.session_id, []).append(event)
            for session, session_events in by_session.items():
                for group in list(self._by_session.get(session, {}).values()):
                    self._send(group, select((group.key[0], ""), session_events))

    def _send(self, group: _Group, events: list[EncodedEvent]) -> None:
        if not events:
            return
        last_seq, time_ns, count = events[-1].seq, events[0].time_ns, len(events)
        for protocol, members in list(group.members.items()):
            frame = events_frame(events, protocol)
            self.frames_encoded += 1
            # A member may leave while being offered (cut off): iterate over a snapshot.
            written = 0
            for member in list(members):
                written += member.offer(frame, last_seq, time_ns, count)
            if written:
                self.stats.sent(written, len(frame), count, max(0.0, (self._clock() - time_ns) / 1e9))
