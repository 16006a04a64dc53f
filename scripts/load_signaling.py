"""Signaling load: N concurrent WebSocket clients in R rooms identify and exchange handshakes.

Starts `arbiter serve` in its own process (fresh database, loopback), creates and claims R
rooms over HTTP, then opens N WebSocket clients spread evenly over the rooms. Every client
identifies and sends its room's SFU a real producer offer (the bench's browser-like SDP); the
SFU answers it and offers that publisher's tracks to everyone else in the room, so every
client also receives consumer offers. Measured, from the clients' side:

- identify round trip (identify sent -> `identified` received);
- handshake routing round trip (producer offer sent -> the SFU's answer received: client ->
  gateway -> room SFU -> gateway -> client);
- consumer offers received (exact expected count: each client gets one per other publisher);
- error frames and failed connections (must be zero);
- the server's CPU seconds and RSS (from /proc).

Usage: .venv/bin/python scripts/load_signaling.py [--clients 2000] [--rooms 200] [--spread S]
       [--json out]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

from arbiter.bench import procstat, sdp_client
from arbiter.config import LimitsConfig
from arbiter.sfu.ice import random_pwd, random_ufrag
from arbiter.testing.signaling import consumer_offer, is_error, producer_answer, ws_client

FINGERPRINT = ":".join(["AB"] * 32)  # never checked: these clients never start DTLS


@dataclasses.dataclass
class Client:
    identify_ms: float = 0.0
    answer_ms: float = 0.0
    consumer_offers: int = 0
    errors: list[dict] = dataclasses.field(default_factory=list)
    failed: str = ""
    connected: bool = False


def _config(tmp: Path, clients_per_room: int) -> Path:
    limits = {f.name for f in dataclasses.fields(LimitsConfig)}
    extra = ""
    # Rate limits protect a public server from one abusive address; this load comes from one
    # address on purpose, so lift the ones this version of Arbiter has.
    if "create_room_per_minute" in limits:
        extra += "create_room_per_minute = 100000\n"
    if "rooms_per_address" in limits:
        extra += "rooms_per_address = 0\n"
    if "messages_per_second" in limits:
        extra += "messages_per_second = 1000\n"
    if "message_burst" in limits:
        extra += "message_burst = 10000\n"
    path = tmp / "arbiter.toml"
    path.write_text(
        '[http]\nhost = "127.0.0.1"\nport = 0\n'
        '[media]\nlisten = "127.0.0.1"\nport = 0\nannounced_ip = ["127.0.0.1"]\n'
        # No client does ICE here: keep their transports (and so them) from being evicted.
        "consent_timeout = 3600.0\n"
        f"[rooms]\nidle_pool = 0\nmax_rooms = 100000\nmax_participants = {clients_per_room}\n"
        f"[limits]\nsend_queue = 1024\n{extra}"
        f'[store]\npath = "{tmp}/arbiter.db"\n[workers]\nlocal = 0\n'
    )
    return path


async def run_client(
    url: str, room: int, index: int, others: int, out: Client, go: trio.Event, done: trio.Event,
    delay: float,
) -> None:
    peer_id = f"c{index}"
    try:
        async with ws_client(url, max_message_size=1 << 20) as ws:
            out.connected = True
            await go.wait()
            await trio.sleep(delay)
            t0 = time.perf_counter()
            await ws.send_identify(room, peer_id)
            offer = sdp_client.build_publisher_offer(
                random_ufrag(), random_pwd(), FINGERPRINT, 2 * index + 1, 2 * index + 2,
                candidate=("127.0.0.1", 9),
            )  # fmt: skip
            sent_offer = 0.0
            while True:
                message = await ws.recv(timeout=None)
                if message.get("type") == "identified":
                    out.identify_ms = (time.perf_counter() - t0) * 1000
                    sent_offer = time.perf_counter()
                    await ws.send_offer(offer, room_id=room)
                elif producer_answer(message) is not None:
                    out.answer_ms = (time.perf_counter() - sent_offer) * 1000
                elif consumer_offer(message) is not None:
                    out.consumer_offers += 1
                elif is_error(message):
                    out.errors.append(message)
                if out.answer_ms and out.consumer_offers >= others:
                    break
            await done.wait()  # stay connected until everyone is done
    except Exception as exc:  # a failed connection is a result, reported
        out.failed = repr(exc)[:200]


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * (len(values) - 1) + 0.5))], 2)


async def main(args: argparse.Namespace) -> dict:
    per_room = args.clients // args.rooms
    with tempfile.TemporaryDirectory() as tmp:
        config = _config(Path(tmp), per_room)
        server = await trio.lowlevel.open_process(
            [sys.executable, "-m", "arbiter.cli", "serve", "--config", str(config)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            assert server.stdout is not None
            text = b""
            with trio.fail_after(20):
                while b"listening on " not in text or not text.endswith(b"\n"):
                    text += await server.stdout.receive_some(4096)
            base = text.decode().split("listening on ", 1)[1].split()[0]
            rooms = []
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                for i in range(args.rooms):
                    room = (await http.put("/createRoom")).json()["roomId"]
                    await http.patch("/claimRoom", json={"urlPath": f"load-{i}"})
                    rooms.append(room)
            cpu0 = procstat.sample(server.pid).cpu_s
            rss0 = procstat.sample(server.pid).rss_kib
            clients = [Client() for _ in range(per_room * args.rooms)]
            go, done = trio.Event(), trio.Event()
            ws_url = base.replace("http://", "ws://") + "/ws"
            t0 = time.perf_counter()
            with trio.fail_after(args.timeout):
                async with trio.open_nursery() as nursery:
                    for i, client in enumerate(clients):
                        delay = args.spread * i / len(clients)
                        nursery.start_soon(run_client, ws_url, rooms[i % args.rooms], i,
                                           per_room - 1, client, go, done, delay)  # fmt: skip
                        if i % 100 == 99:
                            await trio.sleep(0.05)  # don't SYN-flood our own listen backlog
                    while not all(c.connected or c.failed for c in clients):
                        await trio.sleep(0.05)
                    connected = time.perf_counter() - t0
                    # --spread 0: everyone identifies and offers at once, the worst moment for
                    # routing; otherwise the joins are spread evenly over that many seconds.
                    go.set()
                    while not all(c.failed or (c.answer_ms and c.consumer_offers >= per_room - 1)
                                  for c in clients):  # fmt: skip
                        await trio.sleep(0.1)
                    exchanged = time.perf_counter() - t0 - connected
                    sample = procstat.sample(server.pid)
                    done.set()
        finally:
            server.terminate()
            with trio.move_on_after(5):
                await server.wait()
    ok = [c for c in clients if not c.failed]
    return {
        "clients": len(clients),
        "rooms": args.rooms,
        "joins_spread_over_s": args.spread,
        "all_connected_s": round(connected, 2),
        "exchange_s": round(exchanged, 2),
        "failed_connections": len(clients) - len(ok),
        "error_frames": sum(len(c.errors) for c in clients),
        "identify_ms_p50": percentile([c.identify_ms for c in ok], 0.5),
        "identify_ms_p99": percentile([c.identify_ms for c in ok], 0.99),
        "handshake_round_trip_ms_p50": percentile([c.answer_ms for c in ok], 0.5),
        "handshake_round_trip_ms_p99": percentile([c.answer_ms for c in ok], 0.99),
        "consumer_offers": sum(c.consumer_offers for c in ok),
        "consumer_offers_expected": len(ok) * (per_room - 1),
        "server_cpu_s": round(sample.cpu_s - cpu0, 2),
        "server_rss_mib": round(sample.rss_kib / 1024, 1),
        "server_rss_growth_mib": round((sample.rss_kib - rss0) / 1024, 1),
        "first_failures": [c.failed for c in clients if c.failed][:3],
        "first_errors": [e for c in clients for e in c.errors][:3],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--rooms", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--spread", type=float, default=0.0,
                        help="seconds over which the joins are spread (0: all at once)")  # fmt: skip
    parser.add_argument("--json")
    arguments = parser.parse_args()
    os.environ.pop("ARBITER_HTTP_PORT", None)
    result = trio.run(main, arguments)
    print(json.dumps(result, indent=2))
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(result, indent=2) + "\n")
