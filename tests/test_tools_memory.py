"""`remember` / `recall` go through the Memory service over gRPC, scoped by the call's user and session."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from conftest import make_config, running_host
from tools_helpers import ExecuteStream

from coda.tools import ErrorCode
from coda.v1 import memory_pb2, memory_pb2_grpc


class DictMemory(memory_pb2_grpc.MemoryServicer):
    """A small Memory peer: items in a dict, searched by shared words, honouring the scope rules."""

    def __init__(self) -> None:
        self.items: dict[str, memory_pb2.MemoryItem] = {}
        self.searches: list[memory_pb2.SearchRequest] = []

    async def Store(
        self, request: memory_pb2.StoreRequest, context: grpc.aio.ServicerContext
    ) -> memory_pb2.StoreResponse:
        if not request.item.text:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "item.text is empty")
        item = memory_pb2.MemoryItem()
        item.CopyFrom(request.item)
        item.id = uuid.uuid4().hex
        self.items[item.id] = item
        return memory_pb2.StoreResponse(item=item)

    async def Search(
        self, request: memory_pb2.SearchRequest, context: grpc.aio.ServicerContext
    ) -> memory_pb2.SearchResponse:
        self.searches.append(request)
        words = set(request.query.lower().split())
        hits = []
        for item in self.items.values():
            in_scope = (not item.user_id and not item.session_id) or (
                (item.user_id and item.user_id == request.user_id)
                or (item.session_id and item.session_id == request.session_id)
            )
            overlap = len(words & set(item.text.lower().split()))
            if in_scope and overlap:
                hits.append(memory_pb2.ScoredItem(item=item, score=overlap / len(words)))
        hits.sort(key=lambda hit: -hit.score)
        return memory_pb2.SearchResponse(results=hits[: request.limit or 5])


@pytest.fixture
async def memory_peer() -> AsyncIterator[tuple[DictMemory, str]]:
    servicer = DictMemory()
    server = grpc.aio.server()
    memory_pb2_grpc.add_MemoryServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


async def test_remember_then_recall_over_grpc(tmp_path: Path, memory_peer: tuple[DictMemory, str]) -> None:
    memory, address = memory_peer
    config = make_config(tmp_path, CODA_ENDPOINTS__MEMORY=address)
    async with running_host(config, only="bus,tools") as host, grpc.aio.insecure_channel(host.address) as channel:
        stream = ExecuteStream(channel)
        ids = {"user_id": "ada", "session_id": "s1", "correlation_id": "t1"}
        stream.call("r1", "remember", {"text": "my sister lives in Lisbon"}, **ids)
        stream.call("r2", "remember", {"text": "I prefer tea over coffee", "kind": "preference"}, **ids)
        stream.call("other", "remember", {"text": "Lisbon is where Bob lives"}, user_id="bob", session_id="s9")
        stored = await stream.until_final("r1", "r2", "other")
        first = json.loads(stored["r1"][1].result_json)
        assert first["stored"] is True and first["kind"] == "fact" and first["id"]
        assert json.loads(stored["r2"][1].result_json)["kind"] == "preference"
        assert memory.items[first["id"]].user_id == "ada"

        stream.call("q", "recall", {"query": "where does my sister live Lisbon", "limit": 3}, **ids)
        kind, result = (await stream.until_final("q"))["q"]
        assert kind == "result"
        recalled = json.loads(result.result_json)
        assert [hit["text"] for hit in recalled["results"]] == ["my sister lives in Lisbon"]
        assert memory.searches[-1].user_id == "ada" and memory.searches[-1].limit == 3

        stream.call("kind", "remember", {"text": "x", "kind": "gossip"})
        assert (await stream.until_final("kind"))["kind"][1].field == "/kind"
        stream.close()


async def test_memory_unreachable_is_unavailable(tmp_path: Path) -> None:
    with_nothing = make_config(tmp_path, CODA_ENDPOINTS__MEMORY="127.0.0.1:9")
    async with running_host(with_nothing, only="bus,tools") as host, grpc.aio.insecure_channel(host.address) as ch:
        stream = ExecuteStream(ch)
        stream.call("r", "recall", {"query": "anything"})
        kind, error = (await stream.until_final("r"))["r"]
        assert kind == "error" and error.code == ErrorCode.TOOL_ERROR_CODE_UNAVAILABLE
        assert "memory service unavailable" in error.message
        stream.close()


async def test_remember_and_recall_with_the_real_memory_component(tmp_path: Path) -> None:
    pytest.importorskip("coda.memory.component")
    config = make_config(tmp_path)
    async with running_host(config, only="bus,memory,tools") as host, grpc.aio.insecure_channel(host.address) as ch:
        stream = ExecuteStream(ch)
        ids = {"user_id": "ada", "session_id": "s1"}
        stream.call("r", "remember", {"text": "My favourite colour is green"}, **ids)
        assert (await stream.until_final("r"))["r"][0] == "result"
        stream.call("q", "recall", {"query": "favourite colour"}, user_id="ada", session_id="s2")
        kind, result = (await stream.until_final("q", timeout=30))["q"]
        assert kind == "result", result
        texts = [hit["text"] for hit in json.loads(result.result_json)["results"]]
        assert "My favourite colour is green" in texts
        stream.close()


def tool_runner(stream: ExecuteStream) -> Callable[..., Awaitable[dict[str, object]]]:
    """`run(tool, arguments, user="kim")`: one call in the user's own session, its result as JSON."""
    calls = iter(range(1000))

    async def run(tool: str, arguments: dict[str, object], user: str = "kim") -> dict[str, object]:
        call_id = f"c{next(calls)}"
        stream.call(call_id, tool, arguments, user_id=user, session_id=f"s-{user}")
        kind, result = (await stream.until_final(call_id, timeout=30))[call_id]
        assert kind == "result", result
        body: dict[str, object] = json.loads(result.result_json)
        return body

    return run


@contextlib.asynccontextmanager
async def tools_on_real_memory(tmp_path: Path) -> AsyncIterator[ExecuteStream]:
    """An Execute stream to a host running the real Memory component, its embeddings backfilled."""
    pytest.importorskip("coda.memory.component")
    config = make_config(tmp_path)
    async with running_host(config, only="bus,memory,tools") as host, grpc.aio.insecure_channel(host.address) as ch:
        worker = next(c for c in host.components if c.name == "memory").worker  # type: ignore[attr-defined]
        await worker.wait_backfilled()
        yield ExecuteStream(ch)


async def test_remembered_facts_answer_paraphrases_and_unrelated_recall_is_empty(tmp_path: Path) -> None:
    async with tools_on_real_memory(tmp_path) as stream:
        ids = {"user_id": "sam", "session_id": "s1"}
        stream.call("n", "remember", {"text": "my name is Sam", "kind": "fact"}, **ids)
        stream.call("h", "remember", {"text": "I live in Lisbon", "kind": "fact"}, **ids)
        assert {kind for kind, _ in (await stream.until_final("n", "h")).values()} == {"result"}

        async def recall(query: str) -> list[str]:
            stream.call(query, "recall", {"query": query}, user_id="sam", session_id="s2")
            kind, result = (await stream.until_final(query, timeout=30))[query]
            assert kind == "result", result
            return [hit["text"] for hit in json.loads(result.result_json)["results"]]

        assert (await recall("what's my name?"))[0] == "my name is Sam"
        assert (await recall("where am I from?"))[0] == "I live in Lisbon"
        assert await recall("how far away is the moon?") == []
        stream.close()


async def test_forget_deletes_what_was_asked_and_takes_entries_off_lists(tmp_path: Path) -> None:
    """Through the real Memory component: `forget` deletes the matching memory and leaves the others,
    takes one entry off a list (editing the memory, deleting it once empty), never touches another
    user's memories, and refuses an item that names nothing."""
    async with tools_on_real_memory(tmp_path) as stream:
        ids = {"user_id": "jo", "session_id": "s1"}
        said = {
            "code": "my gym locker code is 4471",
            "sister": "my sister lives in Porto",
            "list": "my shopping list includes eggs and bread",
        }
        for key, text in said.items():
            stream.call(key, "remember", {"text": text}, **ids)
        stream.call("bob", "remember", {"text": "my gym locker code is 1234"}, user_id="bob", session_id="s9")
        assert {kind for kind, _ in (await stream.until_final(*said, "bob")).values()} == {"result"}

        async def run(call_id: str, tool: str, arguments: dict[str, object], user: str = "jo") -> dict[str, object]:
            stream.call(call_id, tool, arguments, user_id=user, session_id="s2")
            kind, result = (await stream.until_final(call_id, timeout=30))[call_id]
            assert kind == "result", result
            return json.loads(result.result_json)

        asked = iter(range(100))

        async def recalled(query: str, user: str = "jo") -> list[str]:
            return [hit["text"] for hit in (await run(f"q{next(asked)}", "recall", {"query": query}, user))["results"]]

        forgotten = await run("f1", "forget", {"query": "my gym locker code"})
        assert forgotten == {"query": "my gym locker code", "forgotten": ["my gym locker code is 4471"]}
        assert not any("4471" in text for text in await recalled("my gym locker code"))
        assert "my gym locker code is 1234" in await recalled("my gym locker code", user="bob")
        assert "my sister lives in Porto" in await recalled("where does my sister live")

        taken = await run("l1", "forget", {"query": "shopping list", "item": "the eggs"})
        assert taken == {"list": "shopping list", "item": "the eggs", "removed": True}
        assert "my shopping list includes bread" in await recalled("my shopping list")
        assert (await run("l2", "forget", {"query": "my shopping list", "item": "eggs"}))["removed"] is False
        assert (await run("l3", "forget", {"query": "shopping list", "item": "bread"}))["removed"] is True
        left = await recalled("my shopping list")
        assert not any("shopping list" in text for text in left), left

        assert (await run("f2", "forget", {"query": "my cat's name"}))["forgotten"] == []

        stream.call("bad", "forget", {"query": "shopping list", "item": "the"}, user_id="jo", session_id="s2")
        kind, error = (await stream.until_final("bad"))["bad"]
        assert kind == "error" and error.code == ErrorCode.TOOL_ERROR_CODE_INVALID_ARGUMENTS
        assert "names no entry" in error.message
        stream.close()


async def test_a_new_value_of_a_single_valued_fact_replaces_the_old_one(tmp_path: Path) -> None:
    """ "my locker code is 5678" after "... 4471", "my brother moved to Austin" after "... lives in
    Denver": one fact, the new value. Descriptions that can both be true are both kept, and another
    user's fact of the same shape is not touched."""
    async with tools_on_real_memory(tmp_path) as stream:
        run = tool_runner(stream)

        async def recalled(query: str, user: str = "kim") -> list[str]:
            return [hit["text"] for hit in (await run("recall", {"query": query}, user))["results"]]

        await run("remember", {"text": "my locker code is 1111"}, user="lee")
        for text in ("my locker code is 4471", "my brother lives in Denver", "my car is blue"):
            assert "replaced" not in await run("remember", {"text": text})
        assert (await run("remember", {"text": "my locker code is 5678"}))["replaced"] == ["my locker code is 4471"]
        moved = await run("remember", {"text": "my brother moved to Austin"})
        assert moved["replaced"] == ["my brother lives in Denver"]
        assert "replaced" not in await run("remember", {"text": "my car is in the garage"})

        codes = await recalled("my locker code")
        assert "my locker code is 5678" in codes and not any("4471" in text for text in codes)
        brother = await recalled("where does my brother live")
        assert "my brother moved to Austin" in brother and not any("Denver" in text for text in brother)
        assert {"my car is blue", "my car is in the garage"} <= set(await recalled("my car"))
        assert "my locker code is 1111" in await recalled("my locker code", user="lee")
        stream.close()


async def test_recall_of_me_lists_what_the_user_told_and_nothing_of_others(tmp_path: Path) -> None:
    """ "what do you know about me?" has no words to search for: recall of "me" lists the user's own
    facts and preferences (global memories, other users' and past exchanges are not theirs)."""
    async with tools_on_real_memory(tmp_path) as stream:
        run = tool_runner(stream)

        async def about(user: str, limit: int = 5) -> list[str]:
            return [hit["text"] for hit in (await run("recall", {"query": "me", "limit": limit}, user))["results"]]

        assert await about("kim") == []
        told = ["my favourite food is sushi", "I parked on level 3", "I like my coffee black"]
        for text in told:
            await run("remember", {"text": text})
        await run("remember", {"text": "my name is Lee"}, user="lee")
        assert sorted(await about("kim")) == sorted(told)
        assert await about("lee") == ["my name is Lee"]
        assert len(await about("kim", limit=2)) == 2
        stream.close()
