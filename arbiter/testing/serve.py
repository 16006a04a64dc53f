"""`arbiter serve` as a child process, for tests that attack the server as a stranger would.

`served(tmp_path, toml)` writes `toml` (plus loopback listen addresses, an ephemeral port and a
store in `tmp_path`) to a config file, runs `python -m arbiter.cli serve --config` on it, waits
for its "Arbiter listening on" line and yields a `Served` with an httpx client. Everything the
test learns, it learns over real sockets; the database is read through `sqlite3` (read-only).
With `stderr=True` the server's stderr (its log) goes to `<name>.stderr` in `tmp_path`, for tests
that count tracebacks and error lines (`Served.log_problems`); by default it is discarded.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

from ..bench import procstat

BASE = """
[http]
host = "127.0.0.1"
port = 0
[media]
listen = "127.0.0.1"
port = 0
announced_ip = ["127.0.0.1"]
[workers]
local = 0
"""


@dataclass
class Served:
    process: trio.Process
    url: str
    http: httpx.AsyncClient
    db_path: Path
    stderr_path: Path | None = None

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"

    def query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Read the server's real SQLite database (WAL: readers never block the server)."""
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)
        try:
            return list(conn.execute(sql, args).fetchall())
        finally:
            conn.close()

    async def metric(self, name: str) -> float:
        """A Prometheus sample by its full name and labels, e.g. 'x_total{reason="y"}'."""
        for sample, value in await self._samples():
            if sample == name:
                return value
        return 0.0

    async def counters(self, name: str, label: str = "reason") -> Counter[str]:
        """Every sample of a counter family with one label, by that label's value: `counters(
        "arbiter_media_datagrams_total")` is the media endpoint's counters by reason."""
        prefix = f'{name}{{{label}="'
        out: Counter[str] = Counter()
        for sample, value in await self._samples():
            if sample.startswith(prefix) and sample.endswith('"}'):
                out[sample[len(prefix) : -2]] = int(value)
        return out

    async def _samples(self) -> list[tuple[str, float]]:
        text = (await self.http.get("/metrics")).text
        return [(line.rsplit(" ", 1)[0], float(line.rsplit(" ", 1)[1]))
                for line in text.splitlines() if line and not line.startswith("#")]  # fmt: skip

    def log(self) -> str:
        """What the server wrote to stderr so far (needs `served(..., stderr=True)`)."""
        assert self.stderr_path is not None, "served(..., stderr=True) captures the log"
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def log_problems(self) -> list[str]:
        """Log lines that are tracebacks or ERROR/CRITICAL records (the format is
        "time LEVEL logger: message", arbiter/cli.py)."""
        return [line for line in self.log().splitlines()
                if line.startswith("Traceback") or " ERROR " in line or " CRITICAL " in line]  # fmt: skip


@asynccontextmanager
async def served(
    tmp_path: Path, toml: str = "", *, name: str = "arbiter", stderr: bool = False
) -> AsyncIterator[Served]:
    """Run `arbiter serve` with `toml` merged into the base config (`_merge`: a section may
    repeat, its keys override BASE's; `store.path` is always set here). `stderr`: keep the
    server's log in `tmp_path / f"{name}.stderr"` (`Served.log`) instead of discarding it."""
    db_path = tmp_path / f"{name}.db"
    config = tmp_path / f"{name}.toml"
    config.write_text(_merge(BASE, toml) + f'\n[store]\npath = "{db_path}"\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
    env["PYTHONUNBUFFERED"] = "1"
    command = [sys.executable, "-m", "arbiter.cli", "serve", "--config", str(config)]
    stderr_path = tmp_path / f"{name}.stderr" if stderr else None
    if stderr_path is not None:
        # server_process discards stderr; the shell redirects it and execs the server, so the
        # pid (and the signals server_process sends it) is still the server's own.
        command = ["sh", "-c", 'exec "$@" 2>"$0"', str(stderr_path), *command]
    async with procstat.server_process(command, ready=b"Arbiter listening on", env=env) as (
        process,
        line,
    ):
        url = line.split()[-1]
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            yield Served(process, url, http, db_path, stderr_path)


def _merge(base: str, extra: str) -> str:
    """Append `extra`'s keys into `base`'s sections of the same name (a tiny TOML-table merge:
    both are written by tests, one `key = value` per line)."""
    sections: dict[str, list[str]] = {}
    order: list[str] = []
    for text in (base, extra):
        current = ""
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("[") and line.endswith("]"):
                current = line[1:-1].strip()
                continue
            if current not in sections:
                sections[current] = []
                order.append(current)
            key = line.split("=", 1)[0].strip()
            sections[current] = [x for x in sections[current] if x.split("=", 1)[0].strip() != key]
            sections[current].append(line)
    return "\n".join(f"[{s}]\n" + "\n".join(sections[s]) for s in order if s) + "\n"
