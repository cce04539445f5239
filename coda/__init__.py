"""Coda: a gRPC-first runtime for a local-first voice and text assistant."""

import os

__version__ = "0.1.0"

# numpy's OpenBLAS keeps its worker threads spinning for a while after every matrix product. Beside
# llama.cpp, CTranslate2 and onnxruntime on a few cores, that spinning delays whatever model runs
# next: measured on 2 cores, the language model's first token came ~100 ms later right after a
# memory search had embedded the question (291-306 ms against 159-180 ms with one BLAS thread).
# Coda's products are small: one sentence's embedding takes 10 ms on one thread, 7 ms on all. Set
# before anything imports numpy; an explicit OPENBLAS_NUM_THREADS wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
