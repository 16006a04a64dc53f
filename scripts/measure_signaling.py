"""Measure the signaling core: HTTP getRoomId throughput/latency and idle WebSocket capacity.

Starts `arbiter serve` as its own process on loopback (a fresh database in a temp dir), claims
a room, then:
1. HTTP: `--clients` concurrent keep-alive clients issue GET /getRoomId for `--seconds`;
   reports requests/s and latency p50/p99.
2. WebSockets: opens `--sockets` idle WebSocket connections (accepted, $connect row written,
   nothing else sent), checks the server counts them all, and reports the server's RSS
   before/after (from /proc/<pid>/status).

Usage: .venv/bin/python scripts/measure_signaling.py [--clients 50] [--seconds 10]
       [--sockets 2000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import trio
from trio_websocket import open_websocket_url

from arbiter.bench.procstat import spawn_serve


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def start_server(tmp: Path, max_participants: int) -> tuple[subprocess.Popen[str], str]:
    config = tmp / "arbiter.toml"
    config.write_text(
        '[http]\nhost = "127.0.0.1"\nport = 0\n[media]\nlisten = "127.0.0.1"\nport = 0\n'
        f'[store]\npath = "{tmp / "bench.db"}"\n[rooms]\nidle_pool = 1\n[workers]\nlocal = 0\n'
        f"max_participants = {max_participants}\n"
    )
    return spawn_serve(config)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def http_load(url: str, clients: int, seconds: float, pid: int) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        with trio.fail_after(10):
            while (await http.patch("/claimRoom", json={"urlPath": "bench"})).status_code != 200:
                await trio.sleep(0.05)
    latencies: list[float] = []
    errors = 0
    deadline = trio.current_time() + seconds

    async def client() -> None:
        nonlocal errors
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=url, timeout=10, limits=limits) as http:
            while trio.current_time() < deadline:
                t0 = time.perf_counter()
                r = await http.get("/getRoomId", params={"urlPath": "bench"})
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors += 1

    cpu0, t0 = cpu_seconds(pid), time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(clients):
            nursery.start_soon(client)
    elapsed = time.perf_counter() - t0
    return {
        "clients": clients,
        "requests": len(latencies),
        "errors": errors,
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "server_cpu_s_per_1000_requests": round(
            (cpu_seconds(pid) - cpu0) / max(1, len(latencies)) * 1000, 3
        ),
    }


async def idle_sockets(url: str, count: int, pid: int) -> dict[str, float]:
    ws_url = url.replace("http://", "ws://") + "/ws"
    rss0 = rss_kib(pid)
    held = 0
    failures = 0
    all_open = trio.Event()
    release = trio.Event()

    async def one(i: int) -> None:
        nonlocal held, failures
        try:
            async with open_websocket_url(ws_url):
                held += 1
                if held + failures == count:
                    all_open.set()
                await release.wait()
        except Exception:
            failures += 1
            if held + failures == count:
                all_open.set()

    t0 = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for i in range(count):
            nursery.start_soon(one, i)
            if i % 100 == 99:
                await trio.sleep(0.05)  # do not SYN-flood the listen backlog
        with trio.move_on_after(120):
            await all_open.wait()
        open_s = time.perf_counter() - t0
        await trio.sleep(1.0)
        rss1 = rss_kib(pid)
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            health = (await http.get("/health")).json()
        release.set()
    return {
        "requested": count,
        "held": held,
        "failed": failures,
        "server_reported_connections": health["connections"],
        "seconds_to_open_all": round(open_s, 2),
        "rss_before_mib": round(rss0 / 1024, 1),
        "rss_after_mib": round(rss1 / 1024, 1),
        "kib_per_socket": round((rss1 - rss0) / max(1, held), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(Path(tmp), max_participants=args.sockets + 10)
        try:
            result = {
                "http_getRoomId": trio.run(http_load, url, args.clients, args.seconds, proc.pid),
                "idle_websockets": trio.run(idle_sockets, url, args.sockets, proc.pid),
            }
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
