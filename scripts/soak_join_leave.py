"""Soak: 1,000 join/leave cycles against `arbiter serve` in its own process leave nothing behind.

Starts `arbiter serve` (fresh database in a temp dir, loopback), creates and claims one room,
puts a *resident* participant in it (publishing), then runs `--cycles` cycles of a participant
that identifies, offers its producer and completes ICE + DTLS + SRTP on it, answers the SFU's
consumer offer for the resident and connects it, waits until the resident has connected its
consumer of the newcomer, and leaves: even cycles with an explicit `disconnect` (the server
closes with 1000), odd cycles with a TCP reset and no WebSocket close at all
(arbiter/testing/soak.py).

At cycles 0 (the resident alone), 100, 1000 (and every `--every`) it samples, from outside the
server: connection rows in SQLite (read-only), the media plane's tables and open WebSockets from
GET /metrics, open file descriptors (/proc/<pid>/fd), threads and RSS (/proc/<pid>/status).
Finally the resident leaves too and the server is sampled once more.

Prints JSON: the samples, cycles per second, and RSS growth between cycle 100 and the last cycle
(target: under 5 %). Exit status 1 if anything was left behind or the RSS target was missed.

Usage: .venv/bin/python scripts/soak_join_leave.py [--cycles 1000] [--every 100] [--json out.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from arbiter.bench import procstat
from arbiter.sfu.dtls import Certificate
from arbiter.testing.soak import Resident, Tables, cycle

RSS_TARGET = 0.05


def sample(pid: int, db: Path, metrics: str, n: int, started: float) -> dict[str, Any]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT count(*) FROM connections").fetchone()[0]
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    threads = next(int(line.split()[1]) for line in status if line.startswith("Threads:"))
    return {
        "cycle": n,
        "elapsed_s": round(time.monotonic() - started, 1),
        "connection_rows": rows,
        **vars(Tables.from_metrics(metrics)),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": threads,
        "rss_kib": procstat.sample(pid).rss_kib,
    }


async def soak(cycles: int, every: int, log: Path | None) -> dict[str, Any]:
    certificate = Certificate.generate()
    samples: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="arbiter-soak-") as tmp:
        db = Path(tmp) / "arbiter.db"
        config = Path(tmp) / "arbiter.toml"
        config.write_text(
            '[http]\nhost = "127.0.0.1"\nport = 0\n'
            '[media]\nlisten = "127.0.0.1"\nport = 0\nannounced_ip = ["127.0.0.1"]\n'
            f'[rooms]\nidle_pool = 0\n[workers]\nlocal = 0\n[store]\npath = "{db}"\n'
            # The resident answers one consumer offer per cycle, ~100 a second here: far above
            # what one person's browser sends, so its per-connection rate limit is raised.
            "[limits]\nmessages_per_second = 1000.0\nmessage_burst = 1000\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("ARBITER_")}
        command = [sys.executable, "-m", "arbiter.cli", "serve", "--config", str(config)]
        if log is not None:  # the server's log (stderr) to a file, for post-mortems
            command = ["sh", "-c", 'exec "$0" "$@" 2>>"$SOAK_LOG"', *command]
            env["SOAK_LOG"] = str(log)
        async with (
            procstat.server_process(command, ready=b"listening on ", env=env) as (proc, line),
            trio.open_nursery() as nursery,
        ):
            url = line.split("listening on ", 1)[1].strip()
            ws_url = url.replace("http://", "ws://") + "/ws"
            async with httpx.AsyncClient(base_url=url, timeout=20) as http:
                room_id = (await http.put("/createRoom")).json()["roomId"]
                r = await http.patch("/claimRoom", json={"urlPath": "soak"})
                assert r.json() == {"roomId": room_id}, r.text
                resident = Resident(ws_url, room_id, certificate)
                with trio.fail_after(20):
                    await nursery.start(resident.run)

                async def take(n: int) -> None:
                    # Let the last leave reach the server before looking (bounded).
                    for _ in range(50):
                        metrics = (await http.get("/metrics")).text
                        if Tables.from_metrics(metrics).ws_connections <= 2:
                            break
                        await trio.sleep(0.02)
                    samples.append(sample(proc.pid, db, metrics, n, started))
                    print(json.dumps(samples[-1]), file=sys.stderr, flush=True)

                started = time.monotonic()
                await take(0)
                for n in range(1, cycles + 1):
                    with trio.fail_after(30):
                        await cycle(ws_url, room_id, resident, certificate, n, abrupt=n % 2 == 0)
                    if n % every == 0 or n == cycles:
                        gc.collect()  # ours, so the load generator's garbage stays small
                        await take(n)
                elapsed = time.monotonic() - started
                resident.stop.set()
                await trio.sleep(0.5)
                await take(-1)  # everyone gone
                nursery.cancel_scope.cancel()
    by_cycle = {s["cycle"]: s for s in samples}
    base = by_cycle.get(min(100, cycles), samples[1])
    last = by_cycle[cycles]
    rss_growth = (last["rss_kib"] - base["rss_kib"]) / base["rss_kib"]
    empty = by_cycle[-1]
    left_behind = {
        k: empty[k]
        for k in ("transports", "by_ufrag", "by_addr", "router_transports")
        if empty[k] != 0
    }
    if empty["connection_rows"] != 1 or empty["ws_connections"] != 1:  # the room's SFU only
        left_behind["connection_rows/ws_connections"] = (
            empty["connection_rows"], empty["ws_connections"],
        )  # fmt: skip
    return {
        "cycles": cycles,
        "cycles_per_s": round(cycles / elapsed, 1),
        "resident": {"joins_seen": resident.joins, "leaves_seen": resident.leaves,
                     "errors": resident.errors},  # fmt: skip
        "rss_growth_from_cycle": base["cycle"],
        "rss_growth": round(rss_growth, 4),
        "fd_change": last["fds"] - base["fds"],
        "thread_change": last["threads"] - base["threads"],
        "left_behind": left_behind,
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cycles", type=int, default=1000)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--log", type=Path, help="append the server's log to this file")
    args = parser.parse_args()
    result = trio.run(soak, args.cycles, args.every, args.log)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    ok = (
        not result["left_behind"]
        and result["rss_growth"] < RSS_TARGET
        and result["resident"] == {"joins_seen": args.cycles, "leaves_seen": args.cycles,
                                   "errors": []}  # fmt: skip
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
