"""Memory search latency at 1,000 / 10,000 / 100,000 items, through the core and through gRPC Search.

Embedding 100,000 texts would take minutes on a laptop CPU, so a few thousand generated sentences
are embedded for real and the rest of the corpus is derived from them by perturbation: each
derived item gets its base sentence with a numbered suffix and the base vector plus small
Gaussian noise (re-normalized). The benchmark measures ranking, not embedding throughput.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np

from coda import config as config_module
from coda.memory.embedders import load_embedder
from coda.memory.model import Item
from coda.memory.store import MemoryStore
from coda.runtime.host import Host
from coda.v1 import memory_pb2, memory_pb2_grpc

SUBJECTS = [
    "My sister",
    "My neighbour",
    "The dentist",
    "Our landlord",
    "My manager",
    "Grandma",
    "The plumber",
    "My friend Leo",
]
VERBS = ["lives in", "works near", "travels to", "recommended", "complained about", "loves", "visited", "moved to"]
OBJECTS = [
    "Berlin",
    "the old bakery",
    "a vegan restaurant",
    "the football club",
    "the lake house",
    "Lisbon",
    "the night market",
    "a jazz bar",
    "the hospital",
    "the climbing gym",
    "Tokyo",
    "the library",
]
WHEN = ["last week", "every Sunday", "in the summer", "since 2019", "on Tuesdays", "after work", "", "twice a year"]
QUERIES = [
    "where does my sister live",
    "who likes jazz",
    "which restaurant was recommended",
    "who goes to the climbing gym",
    "when do we visit the lake",
    "who moved abroad",
    "what happens on Sundays",
    "who had problems with the landlord",
]


def sentences(count: int, rng: random.Random) -> list[str]:
    combos = list(itertools.product(SUBJECTS, VERBS, OBJECTS, WHEN))
    rng.shuffle(combos)
    return [" ".join(p for p in combo if p) + "." for combo in combos[:count]]


def percentiles(samples: list[float]) -> str:
    ms = np.array(samples) * 1000.0
    return f"p50 {np.percentile(ms, 50):7.2f} ms  p99 {np.percentile(ms, 99):7.2f} ms"


def derive(texts: list[str], vectors: np.ndarray, total: int, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    base = rng.integers(0, len(texts), size=total)
    noisy = vectors[base] + rng.normal(scale=0.02, size=(total, vectors.shape[1])).astype(np.float32)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    return [f"{texts[b]} (note {i})" for i, b in enumerate(base)], noisy.astype(np.float32)


async def grpc_search(path: Path, queries: list[str], rounds: int) -> tuple[list[float], float]:
    env = {
        "CODA_GRPC__ADDRESS": "127.0.0.1:0",
        "CODA_METRICS__ADDRESS": "",
        "CODA_MEMORY__PATH": str(path),
        "CODA_MEMORY__CONSOLIDATE_INTERVAL_SECONDS": "0",
    }
    host = Host(config_module.load(None, env=env), "bus,memory")
    started = time.perf_counter()
    await host.start()
    worker = next(c for c in host.components if c.name == "memory").worker  # type: ignore[attr-defined]
    await worker.wait_backfilled()
    open_seconds = time.perf_counter() - started
    samples: list[float] = []
    async with grpc.aio.insecure_channel(host.address) as channel:
        stub = memory_pb2_grpc.MemoryStub(channel)
        for query in queries[:2]:
            await stub.Search(memory_pb2.SearchRequest(query=query, limit=10))
        for _ in range(rounds):
            for query in queries:
                t = time.perf_counter()
                await stub.Search(memory_pb2.SearchRequest(query=query, limit=10))
                samples.append(time.perf_counter() - t)
    await host.stop()
    return samples, open_seconds


async def main(quick: bool) -> None:
    sizes = [1_000, 10_000] if quick else [1_000, 10_000, 100_000]
    real = 400 if quick else 2_000
    rng = random.Random(7)
    embedder = load_embedder("minilm")
    assert embedder is not None
    texts = sentences(real, rng)
    t = time.perf_counter()
    vectors = embedder.embed(texts)
    embed_seconds = time.perf_counter() - t
    query_vectors = embedder.embed(QUERIES)
    print(f"memory: embedded {real} real sentences at {real / embed_seconds:.0f}/s; larger corpora are derived")
    print("        by perturbing those vectors (noise 0.02, re-normalized) and suffixing their texts")
    corpus_texts, corpus_vectors = derive(texts, vectors, sizes[-1], np.random.default_rng(7))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "memory.db"
        store = MemoryStore(path, embedder_name=embedder.name)
        have = 0
        for size in sizes:
            t = time.perf_counter()
            for start in range(have, size, 5_000):
                end = min(start + 5_000, size)
                items = [
                    Item("", text, "fact", 0.5, "", f"u{i % 50}") for i, text in enumerate(corpus_texts[start:end])
                ]
                store.store_many(items, corpus_vectors[start:end])
            insert_rate = (size - have) / (time.perf_counter() - t)
            have = size
            rounds = 3 if quick else 10
            samples = []
            for _ in range(rounds):
                for query, vector in zip(QUERIES, query_vectors, strict=True):
                    t = time.perf_counter()
                    store.search(query, vector, 10)
                    samples.append(time.perf_counter() - t)
            print(f"memory core search  n={size:>7,}  {percentiles(samples)}  (insert {insert_rate:,.0f} items/s)")
            store.close()
            del store  # the host under test loads its own copy; two in one process would skew the figures
            grpc_samples, open_seconds = await grpc_search(path, QUERIES, rounds)
            print(
                f"memory gRPC Search  n={size:>7,}  {percentiles(grpc_samples)}  "
                f"(query embedding included; host start + load {open_seconds:.2f} s)"
            )
            store = MemoryStore(path, embedder_name=embedder.name)
        store.close()


if __name__ == "__main__":
    import sys

    asyncio.run(main("--quick" in sys.argv))
