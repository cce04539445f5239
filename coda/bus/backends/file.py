"""A durable log: append-only segment files of length-prefixed, checksummed serialized Events.

Layout: `<path>/<first seq, 20 digits>.seg`. A record is `<u32 length><u32 crc32><Event bytes>`
(little-endian), the Event with its seq set. The retained window is also held in memory (it is
bounded by `max_bytes`), so replay never touches the disk; the files are for restarts.

- Appends are written at once (one write per publish request) and fsynced every
  `fsync_interval_ms` in a worker thread (0: fsync inside every append, before the ack).
- Recovery reads every segment in order and truncates a torn or corrupt tail record, so a crash
  mid-write loses at most the records not yet fsynced, never the log's seq continuity.
- Retention drops whole segments once every event in them is older than the retained window.
- `<path>/EPOCH` holds the log's epoch, kept as long as its segments are: a directory without
  segments is a new log (seqs from 1) and gets a new epoch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from coda.bus.backends.base import new_epoch
from coda.bus.backends.memory import MemoryBackend
from coda.bus.log import FRAME, SEQ, Appended, Headers, make_entry
from coda.schema import event_type
from coda.v1 import events_pb2
from coda.wire import frame_payload

log = logging.getLogger(__name__)

RECORD_HEADER = struct.Struct("<II")
SEGMENT_SUFFIX = ".seg"
EPOCH_FILE = "EPOCH"


@dataclass
class Segment:
    first_seq: int
    path: Path
    size: int


def segment_bytes_for(max_bytes: int) -> int:
    """Segment size: small enough that dropping one frees little of the window, at least 1 MiB."""
    return min(64 * 1024 * 1024, max(1024 * 1024, max_bytes // 8))


def encode_record(data: bytes | memoryview) -> bytes:
    return RECORD_HEADER.pack(len(data), zlib.crc32(data)) + data


def decode_records(blob: bytes) -> tuple[list[bytes], int]:
    """The whole records at the start of `blob` and the offset where the valid part ends."""
    records: list[bytes] = []
    pos = 0
    while pos + RECORD_HEADER.size <= len(blob):
        length, crc = RECORD_HEADER.unpack_from(blob, pos)
        end = pos + RECORD_HEADER.size + length
        if end > len(blob):
            break
        data = blob[pos + RECORD_HEADER.size : end]
        if zlib.crc32(data) != crc:
            break
        records.append(data)
        pos = end
    return records, pos


class FileBackend(MemoryBackend):
    name = "file"

    def __init__(self, path: str | os.PathLike[str], max_events: int, max_bytes: int, fsync_interval_ms: float) -> None:
        super().__init__(max_events, max_bytes)
        self.path = Path(path)
        self.fsync_interval = max(0.0, fsync_interval_ms) / 1000.0
        self.segment_bytes = segment_bytes_for(max_bytes)
        self._segments: list[Segment] = []
        self._fd = -1
        self._retired_fds: list[int] = []
        self._dirty = False
        self._sync_task: asyncio.Task[None] | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    async def open(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self._recover()
        self.epoch = self._load_epoch(fresh=not self._segments)
        if not self._segments:
            self._start_segment(self.log.head_seq + 1)
        else:
            active = self._segments[-1]
            self._fd = os.open(active.path, os.O_WRONLY | os.O_APPEND)
        if self.fsync_interval > 0:
            self._sync_task = asyncio.create_task(self._sync_loop(), name="bus-file-fsync")

    def _recover(self) -> None:
        started = time.monotonic()
        now = time.monotonic_ns()
        for seg_path in sorted(self.path.glob(f"*{SEGMENT_SUFFIX}")):
            try:
                first_seq = int(seg_path.stem)
            except ValueError:
                log.warning("ignoring a file that is not a segment", extra={"file": str(seg_path)})
                continue
            blob = seg_path.read_bytes()
            records, valid = decode_records(blob)
            if valid < len(blob):
                log.warning(
                    "truncating a torn or corrupt tail of the bus log",
                    extra={"file": str(seg_path), "kept_bytes": valid, "dropped_bytes": len(blob) - valid},
                )
                with open(seg_path, "r+b") as handle:
                    handle.truncate(valid)
                    os.fsync(handle.fileno())
            for data in records:
                event = events_pb2.Event.FromString(data)
                if event.seq <= self.log.head_seq:
                    continue
                self.log.restore(make_entry(event.seq, event.id, event_type(event), event.session_id, data, now))
            self._segments.append(Segment(first_seq, seg_path, valid))
        if self._segments:
            log.info(
                "bus log recovered",
                extra={
                    "segments": len(self._segments),
                    "head_seq": self.log.head_seq,
                    "retained": self.log.retained_events,
                    "seconds": round(time.monotonic() - started, 3),
                },
            )
        self._drop_expired_segments()

    def _load_epoch(self, fresh: bool) -> str:
        """The epoch stored with the segments; a new one (stored) for a new log or a log from
        before epochs."""
        epoch_path = self.path / EPOCH_FILE
        if not fresh:
            with contextlib.suppress(FileNotFoundError):
                stored = epoch_path.read_text().strip()
                if stored:
                    return stored
        epoch = new_epoch()
        temporary = epoch_path.with_suffix(".tmp")
        with open(temporary, "w") as handle:
            handle.write(epoch + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, epoch_path)
        return epoch

    async def flush(self) -> None:
        if self._fd >= 0:
            self._sync_now()

    async def close(self) -> None:
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
            self._sync_task = None
        if self._fd >= 0:
            self._sync_now()
            os.close(self._fd)
            self._fd = -1

    # -- writing --------------------------------------------------------------------------------

    def append_now(self, events: Sequence[events_pb2.Event], headers: Headers | None = None) -> Appended:
        if self._fd < 0:
            raise RuntimeError("the file backend is not open")
        results = self.log.append_many(events, headers=headers)
        stored = results.stored
        if stored:
            self._write(b"".join([encode_record(frame_payload(entry[FRAME])) for entry in stored]), stored[-1][SEQ])
            if self.fsync_interval == 0:
                self._sync_now()
            self._drop_expired_segments()
        self._notify(stored)
        return results

    def _write(self, blob: bytes, last_seq: int) -> None:
        view = memoryview(blob)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._segments[-1].size += len(blob)
        self._dirty = True
        if self._segments[-1].size >= self.segment_bytes:
            self._retired_fds.append(self._fd)
            self._start_segment(last_seq + 1)
            if self.fsync_interval == 0:
                self._sync_now()

    def _start_segment(self, first_seq: int) -> None:
        path = self.path / f"{first_seq:020d}{SEGMENT_SUFFIX}"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._segments.append(Segment(first_seq, path, 0))
        self._dirty = True

    def _drop_expired_segments(self) -> None:
        first_retained = self.log.first_retained_seq
        # The active (last) segment always stays: it carries the head seq across restarts.
        while len(self._segments) > 1 and self._segments[1].first_seq <= first_retained:
            expired = self._segments.pop(0)
            with contextlib.suppress(FileNotFoundError):
                expired.path.unlink()

    # -- durability -----------------------------------------------------------------------------

    def _sync_now(self) -> None:
        if self._fd >= 0:
            os.fsync(self._fd)
        self._close_retired()
        self._dirty = False

    def _close_retired(self) -> None:
        for fd in self._retired_fds:
            os.fsync(fd)
            os.close(fd)
        self._retired_fds.clear()

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.fsync_interval)
            if not self._dirty:
                continue
            self._dirty = False
            fd, retired = self._fd, list(self._retired_fds)
            self._retired_fds.clear()
            # fsync in a thread so a slow disk never stalls publishing; the retired descriptors
            # are closed only after their own fsync, never while the thread still uses them.
            await asyncio.to_thread(_fsync_all, [fd, *retired])
            for old in retired:
                os.close(old)


def _fsync_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.fsync(fd)
