"""`arbiter serve` as a child process, for tests that attack the server as a stranger would.

`served(tmp_path, toml)` writes `toml` (plus loopback listen addresses, an ephemeral port and a
store in `tmp_path`) to a config file, runs `python -m arbiter.cli serve --config` on it, waits
for its "Arbiter listening on" line and yields a `Served` with an httpx client. Everything the
test learns, it learns over real sockets; the database is read through `sqlite3` (read-only).
"""

from __future__ import annotations

import os
import sqlite3
import sys
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
"""


@dataclass
class Served:
    process: trio.Process
    url: str
    http: httpx.AsyncClient
    db_path: Path

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
        text = (await self.http.get("/metrics")).text
        for line in text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[-1])
        return 0.0


@asynccontextmanager
async def served(tmp_path: Path, toml: str = "", *, name: str = "arbiter") -> AsyncIterator[Served]:
    """Run `arbiter serve` with `toml` appended to the base config (sections may repeat keys
    of BASE only by not using them: TOML forbids a table twice, so pass whole new sections or
    use `[http]`-free snippets; `store.path` is always set here)."""
    db_path = tmp_path / f"{name}.db"
    config = tmp_path / f"{name}.toml"
    config.write_text(_merge(BASE, toml) + f'\n[store]\npath = "{db_path}"\n', encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
    env["PYTHONUNBUFFERED"] = "1"
    command = [sys.executable, "-m", "arbiter.cli", "serve", "--config", str(config)]
    async with procstat.server_process(command, ready=b"Arbiter listening on", env=env) as (
        process,
        line,
    ):
        url = line.split()[-1]
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            yield Served(process, url, http, db_path)


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
