"""Logging set-up for every `arbiter` command: stdlib logging, two formats, an access log.

- **text** (the default): `2026-01-31 12:00:00,123 INFO arbiter.gateway: room 5: peer a joined`
  (time, level, logger, message: what `arbiter.testing.serve.Served.log_problems` reads).
- **json**: one object per line, `{"ts": "2026-01-31T12:00:00.123Z", "level": "INFO",
  "logger": "arbiter.gateway", "message": "...", "room": 5, "peer": "a", ...}`: the fixed keys,
  then the record's structured fields (what the code passes as `extra=`; see `fields`), then
  `exc` with the traceback when there is one.

Records carry ids, counts and reasons as fields, never names or chat text (docs/PROTOCOL.md
section 6). The access log (`log.access`) is hypercorn's, on the `arbiter.access` logger; in JSON
its request atoms become fields (client, method, path, status, bytes, duration_ms).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ACCESS_LOGGER = "arbiter.access"
# hypercorn's access-log atoms (hypercorn.logging.AccessLogAtoms): the client address, the
# request line, the status, the response size, the duration in microseconds.
ACCESS_FORMAT = '%(h)s "%(r)s" %(s)s %(b)s %(D)sus'
_ACCESS_FIELDS = {"h": "client", "m": "method", "U": "path", "s": "status", "b": "bytes"}

# Attributes every LogRecord has: whatever else a record carries came from `extra=`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields of a record: its `extra=` values (JSON-able ones as they are)."""
    out: dict[str, Any] = {}
    for key, value in record.__dict__.items():
        if key in _STANDARD or key.startswith("_"):
            continue
        out[key] = (
            value if isinstance(value, (str, int, float, bool, type(None), list)) else str(value)
        )
    if record.name == ACCESS_LOGGER and isinstance(record.args, Mapping):
        for atom, key in _ACCESS_FIELDS.items():
            if atom in record.args:
                out[key] = record.args[atom]
        if "D" in record.args:
            out["duration_ms"] = round(int(record.args["D"]) / 1000, 3)
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ms), level, logger, message, then the fields."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line: dict[str, Any] = {
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in fields(record).items():
            line.setdefault(key, value)
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, separators=(",", ":"))


def setup(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Configure the root logger once per process (replacing earlier handlers): `level` of
    `arbiter.config.LOG_LEVELS`, `fmt` "text" or "json", to `stream` (default stderr)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    # hypercorn announces "Running on ..." itself; the server's start-up summary says it once.
    logging.getLogger("hypercorn.error").setLevel(
        max(logging.WARNING, root.level) if root.level > logging.DEBUG else logging.DEBUG
    )


def access_logger(enabled: bool) -> logging.Logger | None:
    """The logger hypercorn writes its access log to (`log.access`), or None for none."""
    return logging.getLogger(ACCESS_LOGGER) if enabled else None
