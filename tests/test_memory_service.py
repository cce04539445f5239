"""coda.v1.Memory over real gRPC: persistence, semantic ranking, forgetting, concurrency, errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from coda.bus.client import subscribe
from coda.config import Config
from coda.memory.component import MemoryComponent
from coda.runtime.host import Host
from coda.schema import event_type
from coda.v1 import memory_pb2 as pb
from coda.v1 import memory_pb2_grpc
from tests.conftest import make_config, running_host

FACT, PREFERENCE, EPISODE = pb.MEMORY_KIND_FACT, pb.MEMORY_KIND_PREFERENCE, pb.MEMORY_KIND_EPISODE


def memory_of(host: Host) -> MemoryComponent:
    return next(c for c in host.components if isinstance(c, MemoryComponent))


async def stub_for(host: Host) -> tuple[grpc.aio.Channel, memory_pb2_grpc.MemoryStub]:
    channel = grpc.aio.insecure_channel(host.address)
    return channel, memory_pb2_grpc.MemoryStub(channel)


def fact(text: str, user: str = "u1", session: str = "", kind: int = FACT, importance: float = 0.5) -> pb.StoreRequest:
    return pb.StoreRequest(
        item=pb.MemoryItem(text=text, kind=kind, importance=importance, user_id=user, session_id=session)
    )


@pytest.fixture
async def served(config: Config) -> AsyncIterator[tuple[Host, memory_pb2_grpc.MemoryStub]]:
    async with running_host(config, only="bus,memory") as host:
        channel, stub = await stub_for(host)
        try:
            yield host, stub
        finally:
            await channel.close()


async def test_items_and_turns_survive_a_restart(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with running_host(config, only="bus,memory") as host:
        channel, stub = await stub_for(host)
        stored = (await stub.Store(fact("I am allergic to peanuts"))).item
        await stub.AddTurn(
            pb.AddTurnRequest(session_id="s1", user_id="u1", turn=pb.Turn(user_text="hi", assistant_text="hello"))
        )
        await channel.close()
    async with running_host(config, only="bus,memory") as host:
        channel, stub = await stub_for(host)
        await memory_of(host).worker.wait_backfilled()
        hits = (await stub.Search(pb.SearchRequest(query="which foods make me sick", user_id="u1"))).results
        assert hits and hits[0].item.id == stored.id and hits[0].item.text == "I am allergic to peanuts"
        turns = (await stub.History(pb.HistoryRequest(session_id="s1"))).turns
        assert [(t.user_text, t.assistant_text) for t in turns] == [("hi", "hello")]
        await channel.close()


async def test_an_empty_query_lists_the_scope_most_important_first(served) -> None:  # type: ignore[no-untyped-def]
    _host, stub = served
    for text, importance in (("I parked on level 3", 0.5), ("my favourite food is sushi", 0.9)):
        await stub.Store(fact(text, importance=importance))
    await stub.Store(fact("my name is Lee", user="u2"))
    await stub.Store(fact("the house wifi is on channel 6", user=""))  # global
    listed = (await stub.Search(pb.SearchRequest(query="", user_id="u1", kinds=[FACT]))).results
    texts = [hit.item.text for hit in listed]
    assert texts[0] == "my favourite food is sushi"  # the most important
    assert sorted(texts[1:]) == ["I parked on level 3", "the house wifi is on channel 6"]  # not u2's
    one = (await stub.Search(pb.SearchRequest(query=" ", limit=1, user_id="u1"))).results
    assert [hit.item.text for hit in one] == ["my favourite food is sushi"]
    # Unscoped, an empty query would list every user's items: refused.
    with pytest.raises(grpc.aio.AioRpcError) as unscoped:
        await stub.Search(pb.SearchRequest(query=""))
    assert unscoped.value.code() == grpc.StatusCode.INVALID_ARGUMENT


PARAPHRASES = [
    ("what colour do I like", "my favourite colour is green"),
    ("which foods make me sick", "I am allergic to peanuts"),
    ("where does my sibling live", "My sister Anna lives in Berlin"),
    ("what car do I have", "I drive a blue Toyota Corolla"),
    ("when am I seeing the dentist", "My dentist appointment is on Tuesday afternoon"),
]


async def test_search_ranks_paraphrases_above_unrelated_items(served) -> None:  # type: ignore[no-untyped-def]
    host, stub = served
    worker = memory_of(host).worker
    await worker.embedder_ready.wait()
    assert worker.embedder_state == "ready"
    for _, memory in PARAPHRASES:
        await stub.Store(fact(memory))
    for query, memory in PARAPHRASES:
        hits = (await stub.Search(pb.SearchRequest(query=query, limit=5, user_id="u1"))).results
        assert hits[0].item.text == memory, (query, [(h.item.text, h.score) for h in hits])
        assert all(h.score <= hits[0].score for h in hits)


async def test_forget_deletes_rows_for_good(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _host, stub = served
    secret = "my passport number is XK-7741-QUOKKA"
    doomed = (await stub.Store(fact(secret, user="alice"))).item
    other = (await stub.Store(fact("alice likes jazz", user="alice"))).item
    kept = (await stub.Store(fact("bob likes rock", user="bob"))).item
    await stub.AddTurn(pb.AddTurnRequest(session_id="s-alice", user_id="alice", turn=pb.Turn(user_text=secret)))
    by_id = await stub.Forget(pb.ForgetRequest(ids=pb.ForgetIds(ids=[doomed.id])))
    assert list(by_id.deleted_ids) == [doomed.id]
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.Update(pb.UpdateRequest(item=pb.MemoryItem(id=doomed.id, importance=1.0), fields=["importance"]))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    by_user = await stub.Forget(pb.ForgetRequest(user_id="alice"))
    assert list(by_user.deleted_ids) == [other.id] and by_user.deleted_turns == 1
    assert (await stub.History(pb.HistoryRequest(session_id="s-alice"))).turns == []
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("memory.db"))  # noqa: ASYNC240
    assert b"QUOKKA" not in raw and b"alice likes jazz" not in raw
    assert b"bob likes rock" in raw
    # One search per text: a query mixing three topics is relevant to none of them.
    found = {
        h.item.id
        for query in ("my passport number", "alice likes jazz", "bob likes rock")
        for h in (await stub.Search(pb.SearchRequest(query=query, limit=10))).results
    }
    assert found == {kept.id}


async def test_forget_by_query_deletes_only_matches(served) -> None:  # type: ignore[no-untyped-def]
    host, stub = served
    await memory_of(host).worker.embedder_ready.wait()
    cat = (await stub.Store(fact("my cat is called Whiskers"))).item
    await stub.Store(fact("I work as a nurse"))
    deleted = await stub.Forget(
        pb.ForgetRequest(query=pb.ForgetQuery(query="my cat Whiskers", min_score=0.5, user_id="u1"))
    )
    assert list(deleted.deleted_ids) == [cat.id]


async def test_concurrent_session_streams_lose_no_writes(served) -> None:  # type: ignore[no-untyped-def]
    _host, stub = served
    streams, per_stream = 4, 12

    async def writer(n: int) -> list[pb.SessionResponse]:
        async def requests() -> AsyncIterator[pb.SessionRequest]:
            for i in range(per_stream):
                yield pb.SessionRequest(request_id=f"{n}-{i}", store=fact(f"writer {n} note {i}", user=f"w{n}"))
                yield pb.SessionRequest(
                    request_id=f"{n}-{i}-turn",
                    add_turn=pb.AddTurnRequest(session_id=f"s{n}", turn=pb.Turn(user_text=f"turn {i}")),
                )

        return [r async for r in stub.Session(requests())]

    results = await asyncio.gather(*(writer(n) for n in range(streams)))
    for responses in results:
        assert len(responses) == 2 * per_stream
        assert [r.WhichOneof("result") for r in responses] == ["store", "add_turn"] * per_stream
    for n in range(streams):
        hits = (await stub.Search(pb.SearchRequest(query=f"writer {n} note", limit=100, user_id=f"w{n}"))).results
        assert {h.item.text for h in hits if h.item.user_id == f"w{n}"} == {
            f"writer {n} note {i}" for i in range(per_stream)
        }
        turns = (await stub.History(pb.HistoryRequest(session_id=f"s{n}", max_turns=100))).turns
        assert [t.user_text for t in turns] == [f"turn {i}" for i in range(per_stream)]


async def test_every_invalid_request_is_invalid_argument_with_a_reason(served) -> None:  # type: ignore[no-untyped-def]
    _host, stub = served
    stored = (await stub.Store(fact("something to update"))).item
    invalid = [
        (stub.Store, fact("   ")),
        (stub.Store, fact("x", importance=1.5)),
        (stub.Store, fact("x", importance=-0.1)),
        (stub.Store, fact("x", kind=pb.MEMORY_KIND_UNSPECIFIED)),
        (stub.Store, fact("x", kind=42)),
        (stub.Store, pb.StoreRequest()),
        (stub.Search, pb.SearchRequest(query="")),
        (stub.Search, pb.SearchRequest(query="x", limit=100_000)),
        (stub.Search, pb.SearchRequest(query="x", kinds=[42])),
        (stub.Recall, pb.RecallRequest(text="x")),
        (stub.Recall, pb.RecallRequest(session_id="s", max_items=100_000)),
        (stub.Update, pb.UpdateRequest(item=pb.MemoryItem(id=stored.id), fields=["colour"])),
        (stub.Update, pb.UpdateRequest(item=pb.MemoryItem(id=stored.id))),
        (stub.Update, pb.UpdateRequest(item=pb.MemoryItem(text="x"), fields=["text"])),
        (stub.Update, pb.UpdateRequest(item=pb.MemoryItem(id=stored.id, text=""), fields=["text"])),
        (stub.Forget, pb.ForgetRequest()),
        (stub.Forget, pb.ForgetRequest(ids=pb.ForgetIds())),
        (stub.Forget, pb.ForgetRequest(query=pb.ForgetQuery(query="x"))),
        (stub.Forget, pb.ForgetRequest(session_id="")),
        (stub.AddTurn, pb.AddTurnRequest(session_id="s", turn=pb.Turn())),
        (stub.AddTurn, pb.AddTurnRequest(turn=pb.Turn(user_text="x"))),
        (stub.History, pb.HistoryRequest()),
    ]
    for call, request in invalid:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await call(request)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request
        assert error.value.details(), request
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.Update(pb.UpdateRequest(item=pb.MemoryItem(id="nope", importance=0.1), fields=["importance"]))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_session_stream_isolates_failing_operations(served) -> None:  # type: ignore[no-untyped-def]
    _host, stub = served
    requests = [
        pb.SessionRequest(request_id="bad-store", store=fact("")),
        pb.SessionRequest(request_id="good-store", store=fact("I like hiking in the Alps")),
        pb.SessionRequest(request_id="no-op"),
        pb.SessionRequest(
            request_id="missing",
            update=pb.UpdateRequest(item=pb.MemoryItem(id="gone", importance=0.2), fields=["importance"]),
        ),
        pb.SessionRequest(request_id="search", search=pb.SearchRequest(query="hiking Alps")),
    ]
    responses = [r async for r in stub.Session(iter(requests))]
    assert [r.request_id for r in responses] == [r.request_id for r in requests]
    assert responses[0].error.code == "INVALID_ARGUMENT" and "empty" in responses[0].error.message
    assert responses[1].store.item.id
    assert responses[2].error.code == "INVALID_ARGUMENT"
    assert responses[3].error.code == "NOT_FOUND"
    assert responses[4].search.results[0].item.id == responses[1].store.item.id


async def test_recall_gives_relevant_items_and_bounded_recent_turns(tmp_path: Path) -> None:
    config = make_config(tmp_path, CODA_MEMORY__SHORT_TERM_TOKENS="60", CODA_MEMORY__SHORT_TERM_KEEP_TURNS="8")
    async with running_host(config, only="bus,memory") as host:
        channel, stub = await stub_for(host)
        await memory_of(host).worker.embedder_ready.wait()
        stored = (await stub.Store(fact("I am vegetarian", kind=PREFERENCE))).item
        await stub.Store(fact("Paris is in France", user="someone-else"))
        for i in range(12):
            turn = pb.Turn(turn_id=f"t{i}", user_text=f"message number {i}", assistant_text="noted, " + "y" * 40)
            await stub.AddTurn(pb.AddTurnRequest(session_id="s1", user_id="u1", turn=turn))
        recall = await stub.Recall(
            pb.RecallRequest(session_id="s1", user_id="u1", text="suggest a dinner without meat", max_turns=5)
        )
        assert recall.items[0].item.id == stored.id
        assert all(h.item.user_id in ("u1", "") for h in recall.items)
        assert recall.items[0].item.accessed_at.ToNanoseconds() > stored.accessed_at.ToNanoseconds()
        turn_ids = [t.turn_id for t in recall.recent_turns]
        assert turn_ids == ["t9", "t10", "t11"]  # 60 tokens hold three 17-token turns
        few = await stub.Recall(pb.RecallRequest(session_id="s1", text="x", max_turns=2))
        assert [t.turn_id for t in few.recent_turns] == ["t10", "t11"]
        # Turns beyond the kept window became long-term episodes of the session.
        episodes = await stub.Search(pb.SearchRequest(query="message number", limit=20, kinds=[EPISODE]))
        assert {h.item.text.splitlines()[0] for h in episodes.results} == {
            f"User: message number {i}" for i in range(4)
        }
        await channel.close()


async def test_consolidation_summarizes_old_episodes_and_publishes(served) -> None:  # type: ignore[no-untyped-def]
    host, stub = served
    bus = grpc.aio.insecure_channel(host.address)
    texts = [
        "We booked a cabin in Norway for July. The cabin has a sauna.",
        "Flights to Oslo cost 300 euros. We fly on July 3.",
        "In Norway we want to hike to Preikestolen.",
    ]
    ids = [(await stub.Store(fact(t, kind=EPISODE, session="trip"))).item.id for t in texts]
    await stub.Store(fact("Oslo is the capital of Norway", session="trip"))
    result = await stub.Consolidate(pb.ConsolidateRequest(user_id="u1", older_than_seconds=0))
    assert result.consolidated == 3 and len(result.summaries) == 1
    summary = result.summaries[0]
    assert summary.kind == pb.MEMORY_KIND_SUMMARY and "Norway" in summary.text
    hits = (await stub.Search(pb.SearchRequest(query="Norway cabin trip", limit=10, user_id="u1"))).results
    assert summary.id in {h.item.id for h in hits} and not set(ids) & {h.item.id for h in hits}
    seen: dict[str, list] = {}
    async for response in subscribe(bus, ["memory.*"], after_seq=0):
        for event in response.batch.events:
            seen.setdefault(event_type(event), []).append(event)
        if "memory.consolidated" in seen:
            break
    assert len(seen["memory.stored"]) >= 4 and "memory.retrieved" in seen
    consolidated = seen["memory.consolidated"][0].memory_consolidated
    assert consolidated.summary_id == summary.id and sorted(consolidated.source_ids) == sorted(ids)
    await bus.close()


async def test_search_works_lexically_while_the_embedder_is_unavailable(tmp_path: Path) -> None:
    config = make_config(tmp_path, CODA_MEMORY__EMBEDDER_MODEL_DIR=str(tmp_path / "no-model-here"))
    async with running_host(config, only="bus,memory") as host:
        channel, stub = await stub_for(host)
        worker = memory_of(host).worker
        await worker.embedder_ready.wait()
        assert worker.embedder_state == "failed"
        await stub.Store(fact("the boiler needs a service in March"))
        hits = (await stub.Search(pb.SearchRequest(query="boiler service", user_id="u1"))).results
        assert [h.item.text for h in hits] == ["the boiler needs a service in March"]
        await channel.close()


async def test_turn_recall_finds_facts_by_paraphrase_and_nothing_for_unrelated_questions(served) -> None:  # type: ignore[no-untyped-def]
    host, stub = served
    await memory_of(host).worker.wait_backfilled()

    def stated(text: str, kind: int = FACT) -> pb.StoreRequest:
        # As the `remember` tool stores it: no importance, so the kind's default applies.
        return pb.StoreRequest(item=pb.MemoryItem(text=text, kind=kind, user_id="sam"))

    name = (await stub.Store(stated("my name is Sam"))).item
    home = (await stub.Store(stated("I live in Lisbon"))).item
    await stub.Store(stated("User: what's your name?\nAssistant: I'm Coda, your assistant.", EPISODE))
    await stub.Store(stated("User: where is the nearest pharmacy?\nAssistant: I can't look places up.", EPISODE))
    await stub.Store(stated("I like jazz", PREFERENCE))
    assert name.importance == pytest.approx(0.8) and name.kind == FACT

    async def recall(text: str) -> list[str]:
        response = await stub.Recall(pb.RecallRequest(session_id="s1", user_id="sam", text=text))
        return [h.item.id for h in response.items]

    assert (await recall("what's my name?"))[0] == name.id  # above the episode that asked a name
    assert (await recall("where do I live?"))[0] == home.id
    assert (await recall("where am I from?"))[0] == home.id  # no word in common
    for unrelated in ("how tall is Mount Everest?", "tell me a joke", "what's the capital of Australia?"):
        assert await recall(unrelated) == [], unrelated
    # The recall tool's Search applies the same threshold.
    assert (await stub.Search(pb.SearchRequest(query="tell me a joke", user_id="sam"))).results == []
