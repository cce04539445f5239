"""Pinned weight files: the sha256 of a file Coda loads, checked against the one it ships.

Hashing a model costs about 1 s per 500 MB, so a digest is remembered per process by path, size and
modification time: a test suite or a process that starts many engines hashes each file once.
Components raise their own errors (with their own fix) from `pin_mismatch`'s description.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

_digests: dict[tuple[str, int, int], str] = {}
_lock = threading.Lock()


def file_sha256(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _lock:
        known = _digests.get(key)
    if known is not None:
        return known
    with path.open("rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()
    with _lock:
        _digests[key] = digest
    return digest


def pin_mismatch(path: Path, expected: str) -> str | None:
    """None when `path` has the pinned digest, else what differs ("sha256 <actual>, expected <pin>")."""
    actual = file_sha256(path)
    pinned = expected.strip().lower()
    return None if actual == pinned else f"sha256 {actual}, expected {pinned}"
