"""Structured logging: one JSON (or logfmt-like text) line per record, quiet by default.

Use the standard library everywhere: `log = logging.getLogger(__name__)` and pass fields with
`extra=`: `log.info("subscriber cut off", extra={"last_seq": 42})`. `configure()` is called once
by each entry point.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

_STANDARD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _fields(record: logging.LogRecord) -> dict[str, object]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        extras = " ".join(f"{k}={v}" for k, v in _fields(record).items())
        line = f"{stamp} {record.levelname.lower():7} {record.name}: {record.getMessage()}"
        if extras:
            line += f"  {extras}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure(level: str = "warning", fmt: str = "text") -> None:
    """Route all logging to stderr with the chosen format; idempotent."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


@contextmanager
def progress(log: logging.Logger, operation: str, **fields: object) -> Iterator[None]:
    """Log the start and end (with duration) of a long operation such as loading a model.

    Logged at WARNING so it shows even at the quiet default level when it is slow (over 1 s).
    """
    start = time.perf_counter()
    log.info(f"{operation}...", extra=fields)
    try:
        yield
    finally:
        elapsed = time.perf_counter() - start
        level = logging.WARNING if elapsed > 1.0 else logging.INFO
        log.log(level, f"{operation} done", extra={**fields, "seconds": round(elapsed, 2)})
