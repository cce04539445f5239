"""The NATS subject mapping (pure): event subjects round-trip, and a subscription's subject filter
admits every event its EventFilter admits, and nothing else where the patterns map exactly."""

from __future__ import annotations

import fnmatch

from hypothesis import given, settings
from hypothesis import strategies as st

from coda.bus.backends.nats import with_seq
from coda.bus.backends.nats_subjects import (
    MAX_FILTER_SUBJECTS,
    filter_subjects,
    parse_subject,
    session_token,
    subject_for,
)
from coda.bus.filters import EventFilter
from coda.schema import EVENT_TYPES, FAMILIES, new_event
from coda.v1 import events_pb2

PREFIX = "coda.events"
sessions = st.one_of(
    st.just(""), st.from_regex(r"[A-Za-z0-9._:%-]{1,20}", fullmatch=True).filter(lambda s: "%" not in s)
)
patterns = st.one_of(
    st.sampled_from(EVENT_TYPES),
    st.sampled_from([f"{family}.*" for family in FAMILIES]),
    st.sampled_from(["voice.stt_*", "*.error", "llm.t*", "*", "*.*"]),
)


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: `*` is one token, `>` the rest (one or more tokens)."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)


@given(type_name=st.sampled_from(EVENT_TYPES), session=sessions)
def test_subjects_round_trip_and_stay_four_tokens_after_the_prefix(type_name: str, session: str) -> None:
    subject = subject_for(PREFIX, type_name, session)
    assert parse_subject(PREFIX, subject) == (type_name, session)
    tokens = subject[len(PREFIX) + 1 :].split(".")
    assert len(tokens) == 3 and all(tokens) and not any(c in subject for c in " *>")


@settings(max_examples=300, deadline=None)
@given(
    chosen=st.lists(patterns, max_size=4),
    session=sessions,
    type_name=st.sampled_from(EVENT_TYPES),
    event_session=sessions,
)
def test_filter_subjects_admit_what_the_filter_admits(
    chosen: list[str], session: str, type_name: str, event_session: str
) -> None:
    event_filter = EventFilter(chosen, session)
    subjects = filter_subjects(PREFIX, event_filter)
    assert 1 <= len(subjects) <= MAX_FILTER_SUBJECTS
    subject = subject_for(PREFIX, type_name, event_session)
    on_server = any(subject_matches(s, subject) for s in subjects)
    wanted = (not chosen or any(fnmatch.fnmatchcase(type_name, p) for p in chosen)) and (
        not session or session == event_session
    )
    if wanted:
        assert on_server, (subjects, subject)
    # Types are listed exactly (or as whole families), so the server admits nothing extra, unless
    # the list would have been too long and was widened to every type of the session.
    widened = event_filter.types is not None and subjects == [
        f"{PREFIX}.*.*.{session_token(session) if session else '*'}"
    ]
    if not widened:
        assert on_server == wanted, (subjects, subject)


def test_common_patterns_map_to_the_expected_subjects() -> None:
    assert filter_subjects(PREFIX, EventFilter(["*"])) == [f"{PREFIX}.>"]
    assert filter_subjects(PREFIX, EventFilter(["llm.*"])) == [f"{PREFIX}.llm.*.*"]
    assert filter_subjects(PREFIX, EventFilter(["llm.token"], "a.b")) == [f"{PREFIX}.llm.token.a%2Eb"]
    assert filter_subjects(PREFIX, EventFilter([], "s1")) == [f"{PREFIX}.*.*.s1"]
    assert session_token("") == "%" and session_token("x.y") == "x%2Ey"


@given(seq=st.integers(1, 2**63), text=st.text(max_size=50))
def test_with_seq_is_the_serialization_with_seq_set(seq: int, text: str) -> None:
    event = new_event("t", events_pb2.LlmToken(text=text), session_id="s")
    stored = with_seq(event.SerializeToString(), seq)
    event.seq = seq
    assert stored == event.SerializeToString()
