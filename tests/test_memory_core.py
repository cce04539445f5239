"""Memory core without sockets: BM25, vector index, scope filters, ranking, the SQLite store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coda.memory.bm25 import LexicalIndex
from coda.memory.consolidation import summarize
from coda.memory.model import KINDS, Item, NotFound, Scope, Turn
from coda.memory.ranking import Interner, Weights, boosted, scope_mask
from coda.memory.store import MemoryStore
from coda.memory.text import approx_tokens
from coda.memory.vectors import VectorIndex, normalize


def item(text: str, kind: str = "fact", importance: float = 0.5, user: str = "", session: str = "") -> Item:
    return Item(id="", text=text, kind=kind, importance=importance, session_id=session, user_id=user)


def test_bm25_prefers_documents_with_more_rare_query_terms() -> None:
    index = LexicalIndex()
    docs = {
        1: "My sister Anna lives in Berlin",
        2: "Berlin is the capital of Germany",
        3: "I like green tea in the morning",
        4: "Anna plays the cello",
    }
    for key, text in docs.items():
        index.add(key, text)
    scores = index.score("where does Anna live in Berlin")
    assert max(scores, key=scores.__getitem__) == 1
    assert 3 not in scores
    index.remove(1)
    assert 1 not in index.score("Anna Berlin")
    assert index.score("the of") == {}  # stop words only


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.text(alphabet="abcde fgh", min_size=1, max_size=30), min_size=1, max_size=20),
    st.text(alphabet="abcde fgh", min_size=1, max_size=20),
)
def test_bm25_relevance_is_normalized(texts: list[str], query: str) -> None:
    index = LexicalIndex()
    for key, text in enumerate(texts):
        index.add(key, text)
    for score in index.score(query).values():
        assert 0.0 < score <= 1.0


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_vector_index_matches_brute_force_after_adds_and_removes(data: st.DataObject) -> None:
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    n = data.draw(st.integers(1, 60))
    vectors = rng.normal(size=(n, 8)).astype(np.float32)
    index = VectorIndex(8, n_labels=1, capacity=2)
    index.add(list(range(n)), vectors, np.arange(n)[:, None] % 3)
    removed = set(data.draw(st.lists(st.integers(0, n - 1), max_size=n)))
    index.remove(sorted(removed))
    kept = [k for k in range(n) if k not in removed]
    assert len(index) == len(kept)
    query = rng.normal(size=8).astype(np.float32)
    k = data.draw(st.integers(1, 10))
    label = data.draw(st.integers(0, 2))
    got = index.search(query, k, lambda labels: labels[:, 0] == label)
    allowed = [key for key in kept if key % 3 == label]
    expected = sorted(allowed, key=lambda key: -float(normalize(vectors[key])[0] @ normalize(query)[0]))[:k]
    assert [key for key, _ in got] == expected


scopes = st.builds(
    Scope,
    user_id=st.sampled_from(["", "u1", "u2", "nobody"]),
    session_id=st.sampled_from(["", "s1", "s2", "never"]),
    kinds=st.frozensets(st.sampled_from(KINDS), max_size=2),
)
items = st.builds(
    item,
    text=st.just("x"),
    kind=st.sampled_from(KINDS),
    user=st.sampled_from(["", "u1", "u2"]),
    session=st.sampled_from(["", "s1", "s2"]),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(items, min_size=1, max_size=20), scopes)
def test_vectorized_scope_filter_agrees_with_scope_allows(population: list[Item], scope: Scope) -> None:
    users, sessions, kinds = Interner(), Interner(), Interner()
    labels = np.array([(users.code(i.user_id), sessions.code(i.session_id), kinds.code(i.kind)) for i in population])
    mask = scope_mask(scope, users, sessions, kinds)(labels)
    assert list(mask) == [scope.allows(i) for i in population]


def test_scope_rules() -> None:
    mine = item("x", user="u1", session="s1")
    assert Scope(user_id="u1", session_id="s2").allows(mine)  # a user's items follow the user
    assert not Scope(user_id="u2").allows(mine)
    assert not Scope(session_id="s2").allows(item("x", session="s1"))
    assert Scope(user_id="u2", session_id="s9").allows(item("global"))


def test_a_session_scoped_principal_never_sees_a_users_items_from_elsewhere() -> None:
    # A Converse without a user (a static token's session) asks with the session alone.
    theirs = item("x", user="u1")  # a user's fact, bound to no session (what `remember` stores)
    assert not Scope(session_id="s2").allows(theirs)
    assert not Scope(session_id="s2").allows(item("x", user="u1", session="s1"))
    assert Scope(session_id="s1").allows(item("x", user="u1", session="s1"))  # stored in this session
    assert Scope(session_id="s2").allows(item("x", session="s2"))
    assert Scope(session_id="s2").allows(item("global"))
    assert Scope().allows(theirs)  # an operator's search sees everything


def test_boosts_reorder_relevant_items_but_never_create_relevance() -> None:
    weights = Weights()
    assert boosted(weights, 0.0, 1.0, 0.0) == 0.0
    assert boosted(weights, 0.5, 1.0, 0.0) > boosted(weights, 0.5, 0.1, 0.0)
    assert boosted(weights, 0.5, 0.5, 0.0) > boosted(weights, 0.5, 0.5, 365 * 86400.0)


def test_store_survives_reopen_with_items_vectors_and_turns(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    store = MemoryStore(path, embedder_name="test")
    vector = normalize(np.arange(4, dtype=np.float32))[0]
    stored = store.store(item("I like green tea", user="u1"), vector)
    store.add_turn("s1", "u1", Turn("t1", "hello", "hi there", 1.0), keep=10)
    store.close()
    reopened = MemoryStore(path, embedder_name="test")
    assert reopened.get(stored.id).text == "I like green tea"
    assert reopened.embedded_count == 1
    hits = reopened.search("tea", vector, 5)
    assert [h.item.id for h in hits] == [stored.id]
    assert [t.user_text for t in reopened.history("s1", 10, 1000)] == ["hello"]
    # Vectors of another embedder are not mixed in: they are re-embedded instead.
    other = MemoryStore(path, embedder_name="another-model")
    assert other.embedded_count == 0 and other.missing_embeddings(10) == [(stored.id, "I like green tea")]
    other.close()
    reopened.close()


def test_lexical_search_works_without_any_embedding(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path / "m.db")
    store.store(item("my dentist appointment is on Tuesday"))
    store.store(item("the cat sleeps on the sofa"))
    hits = store.search("when is the dentist appointment", None, 5)
    assert [h.item.text for h in hits] == ["my dentist appointment is on Tuesday"]
    store.close()


def test_min_relevance_cuts_unrelated_items_before_boosts(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path / "m.db", embedder_name="test")
    axis = np.eye(4, dtype=np.float32)
    near = store.store(item("the boiler is in the attic", importance=0.1), axis[0])
    # Important and fresh, but unrelated: importance must not lift it over the threshold.
    store.store(item("my favourite film is Alien", importance=1.0), axis[1])
    pending = store.store(item("the boiler was serviced in May"))  # not embedded yet: lexical only
    query = normalize(np.array([1.0, 0.2, 0.0, 0.0]))[0]
    hits = store.search("where is the boiler", query, 5, min_relevance=0.3)
    assert [h.item.id for h in hits] == [near.id, pending.id]
    assert hits[0].relevance >= 0.3 and hits[0].score < hits[0].relevance  # boosts come after the cut
    assert store.search("what film do I like", axis[2], 5, min_relevance=0.3) == []
    store.close()


def test_embedder_files_are_checked_against_pinned_digests(tmp_path: Path) -> None:
    from coda.memory import embedders

    for name in embedders.MINILM_SHA256:
        (tmp_path / name).write_bytes(b"not the model")
    with pytest.raises(embedders.EmbedderUnavailable) as error:
        embedders.load_embedder("minilm", str(tmp_path))
    message = str(error.value)
    assert str(tmp_path / "config.json") in message and embedders.MINILM_INSTALL in message
    with pytest.raises(embedders.EmbedderUnavailable, match="not found"):
        embedders.load_embedder("minilm", str(tmp_path / "missing"))


def test_forget_removes_text_from_the_database_files(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    store = MemoryStore(path)
    secret = "my bank PIN is 90210-zebra"
    kept = store.store(item("the sky is blue", user="u2"))
    doomed = store.store(item(secret, user="u1"))
    store.add_turn("s1", "u1", Turn("t1", f"remember {secret}", "ok", 1.0), keep=10)
    deleted, turns = store.forget_user("u1")
    assert deleted == [doomed.id] and turns == 1
    with pytest.raises(NotFound):
        store.get(doomed.id)
    assert store.search("PIN zebra", None, 5) == []
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("m.db"))
    assert b"90210-zebra" not in raw and b"the sky is blue" in raw
    assert store.get(kept.id)
    store.close()


def test_history_is_bounded_by_turns_and_tokens(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path / "m.db")
    for i in range(10):
        store.add_turn("s", "", Turn(f"t{i}", f"question {i} " + "x" * 40, "answer", float(i)), keep=6)
    assert [t.turn_id for t in store.history("s", 3, 10_000)] == ["t7", "t8", "t9"]
    assert len(store.history("s", 100, 10_000)) == 6  # keep bound
    one_turn = approx_tokens("question 9 " + "x" * 40) + approx_tokens("answer")
    assert [t.turn_id for t in store.history("s", 100, 2 * one_turn + 1)] == ["t8", "t9"]
    store.close()


def test_consolidation_replaces_old_episodes_by_a_summary(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path / "m.db")
    episodes = [
        "We planned the trip to Lisbon. The flight leaves on Friday.",
        "The hotel in Lisbon is near the river. Breakfast is included.",
        "Lisbon trip budget is 900 euros.",
    ]
    old = [store.store(Item("", t, "episode", 0.4, "s1", "u1", created_at=100.0)) for t in episodes]
    recent = store.store(item("We talked about Lisbon today", kind="episode", session="s1", user="u1"))
    fact = store.store(Item("", "Lisbon is in Portugal", "fact", 0.9, "s1", "u1", created_at=100.0))
    results = store.consolidate(
        cutoff=1000.0,
        scope=Scope(user_id="u1"),
        min_episodes=2,
        summarize=lambda items, vectors: summarize([i.text for i in items], 3, vectors),
    )
    assert len(results) == 1
    summary = results[0].summary
    assert summary.kind == "summary" and "Lisbon" in summary.text and summary.importance == 0.4
    assert set(results[0].source_ids) == {i.id for i in old}
    assert set(store.summary_sources(summary.id)) == {i.id for i in old}
    remaining = {store.get(i).id for i in (recent.id, fact.id, summary.id)}
    assert len(remaining) == 3 and len(store) == 3
    store.close()


def test_summary_keeps_sentence_order_and_drops_duplicates() -> None:
    text = summarize(["Alpha beta. Gamma delta.", "Alpha beta.", "Gamma delta epsilon."], 10)
    assert text == "Alpha beta. Gamma delta. Gamma delta epsilon."
