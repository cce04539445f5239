"""How events map to NATS subjects, and subscription filters to subject filters. Pure, no I/O.

An event's subject is `<prefix>.<family>.<kind>.<session>`: the dotted type gives two tokens and
the session a third, so both type patterns and a session filter can run on the server. A session
id may contain dots (see validation.py), which NATS reads as token separators, so the session
token escapes them; an event without a session uses a token no session id can be.
"""

from __future__ import annotations

from collections.abc import Sequence

from coda.bus.filters import EventFilter
from coda.schema import EVENT_TYPES

#: The session token of an event without a session: '%' is outside the session id alphabet.
NO_SESSION_TOKEN = "%"
#: More subjects than this in one consumer filter costs the server more than filtering here.
MAX_FILTER_SUBJECTS = 16


def session_token(session_id: str) -> str:
    return session_id.replace(".", "%2E") if session_id else NO_SESSION_TOKEN


def session_from_token(token: str) -> str:
    return "" if token == NO_SESSION_TOKEN else token.replace("%2E", ".")


def subject_for(prefix: str, type_name: str, session_id: str) -> str:
    return f"{prefix}.{type_name}.{session_token(session_id)}"


def parse_subject(prefix: str, subject: str) -> tuple[str, str]:
    """(dotted type, session id) of an event subject under `prefix`."""
    family, kind, token = subject[len(prefix) + 1 :].split(".", 2)
    return f"{family}.{kind}", session_from_token(token)


def stream_subjects(prefix: str) -> list[str]:
    return [f"{prefix}.>"]


def filter_subjects(prefix: str, event_filter: EventFilter, known: Sequence[str] = EVENT_TYPES) -> list[str]:
    """Subject filters admitting every event `event_filter` admits (and, where it maps, nothing more).

    A family whose every type is admitted becomes `<family>.*`; other admitted types are listed
    exactly. When that would be too many subjects, the filter widens to every type (the session
    still narrows it) and the bus filters the types on its side.
    """
    session = session_token(event_filter.session_id) if event_filter.session_id else "*"
    if event_filter.types is None:
        return [f"{prefix}.>"] if session == "*" else [f"{prefix}.*.*.{session}"]
    by_family: dict[str, list[str]] = {}
    for type_name in known:
        by_family.setdefault(type_name.split(".", 1)[0], []).append(type_name)
    subjects: list[str] = []
    for family, types in by_family.items():
        admitted = [t for t in types if t in event_filter.types]
        if not admitted:
            continue
        if len(admitted) == len(types):
            subjects.append(f"{prefix}.{family}.*.{session}")
        else:
            subjects.extend(f"{prefix}.{t}.{session}" for t in admitted)
    if len(subjects) > MAX_FILTER_SUBJECTS:
        return [f"{prefix}.*.*.{session}"]
    return subjects
