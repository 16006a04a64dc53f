"""Hostile signaling at volume: generated frames against `arbiter serve`, a call alongside.

Starts `arbiter serve` in its own process (the bench's ArbiterTarget: fresh database, loopback,
default limits), creates room X (the target) and room Y (a two-person call: synthetic
participants with real ICE, DTLS and SRTP publishing recorded audio and video). Then, while the
call runs, sends `--frames` generated frames (mutated valid frames of every action, random
JSON-ish values, truncated and byte-flipped JSON, binary frames, deep nesting; seeded) from
`--sockets` WebSockets to room X, each followed by a probe so every answer is judged against
the contract (arbiter/testing/hostile.py), plus a flooder (refused with 429, then closed 1008) and
over-size frames (closed 1009). At the end: the server's health, a fresh client identifying,
and the call's per-SSRC accounting (received == sent, no sequence gap), forwarding latency and
error frames.

Usage: .venv/bin/python scripts/hostile_ws.py [--frames 20000] [--sockets 8] [--seed 1] [--json out]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import trio
from trio_websocket import ConnectionClosed

from arbiter.bench import payloads
from arbiter.bench.arbiter_target import ArbiterTarget
from arbiter.bench.participant import join_call
from arbiter.sfu.dtls import Certificate
from arbiter.testing.hostile import HostileSession, Tally, flood_once, random_frame, valid_frames
from arbiter.testing.signaling import ws_client


async def flood(ws_url: str, stop: trio.Event, tally: Tally) -> None:
    """Connections that send chats as fast as they can, reading their answers, until closed."""
    rounds = 0
    while not stop.is_set() and rounds < 1000:
        rounds += 1
        await flood_once(ws_url, 2000, tally)


async def oversize(ws_url: str, stop: trio.Event, tally: Tally) -> None:
    rounds = 0
    while not stop.is_set() and rounds < 1000:
        rounds += 1
        async with ws_client(ws_url) as ws:
            await ws.send_raw("x" * 70_000)  # over limits.max_message_bytes (65536)
            try:
                with trio.fail_after(5):
                    await ws.ws.get_message()
                tally.count("oversize answered")
            except ConnectionClosed as exc:
                tally.count(f"oversize close {exc.reason.code}")
        await trio.sleep(0.1)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    recording = payloads.load()
    certificate = Certificate.generate()
    target = ArbiterTarget()
    tally = Tally()
    result: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        await nursery.start(target.run)
        ws_url = target.url.replace("http://", "ws://") + "/ws"
        room_x = await target.new_room()
        room_y = await target.new_room()
        with trio.fail_after(20):
            a, b = await join_call(target, room_y, [1, 2], certificate, nursery)
        stop = trio.Event()
        started = time.monotonic()
        async with trio.open_nursery() as call:
            for p in (a, b):
                assert p.publisher_leg is not None
                call.start_soon(
                    p.publisher_leg.publish, recording, p.number, p.audio_ssrc, p.video_ssrc,
                    trio.current_time() + 3600,
                )  # fmt: skip
            async with trio.open_nursery() as attack:
                attack.start_soon(flood, ws_url, stop, tally)
                attack.start_soon(oversize, ws_url, stop, tally)
                async with trio.open_nursery() as senders:
                    per_socket = args.frames // args.sockets
                    for i in range(args.sockets):
                        senders.start_soon(
                            garbage,
                            ws_url,
                            room_x,
                            args.seed * 1000 + i,
                            per_socket,
                            tally,
                            senders,
                        )
                stop.set()
            call.cancel_scope.cancel()
        barrage_s = time.monotonic() - started
        await trio.sleep(1.0)  # the last packets drain
        streams_ok = True
        latencies: list[int] = []
        sent_total = received_total = 0
        for sender, receiver in ((a, b), (b, a)):
            assert sender.publisher_leg is not None
            sent = sender.publisher_leg.sent_by_ssrc
            streams = receiver.subscriptions[sender.peer_id].streams
            received = {ssrc: s.packets for ssrc, s in streams.items()}
            expected = {ssrc: s.expected for ssrc, s in streams.items()}
            streams_ok &= received == sent == expected
            sent_total += sum(sent.values())
            received_total += sum(received.values())
            latencies += [ns for s in streams.values() for ns in s.latencies_ns]
        latencies.sort()
        async with httpx.AsyncClient(base_url=target.url, timeout=10) as http:
            health = (await http.get("/health")).status_code
        async with ws_client(ws_url) as fresh:
            await fresh.send_identify(room_x, "fresh")
            identified = (await fresh.recv(timeout=None))["type"]
        result = {
            "frames": tally.frames,
            "sockets": args.sockets,
            "barrage_seconds": round(barrage_s, 1),
            "frames_per_second": round(tally.frames / barrage_s),
            "outcomes": dict(sorted(tally.by_outcome.items(), key=lambda kv: -kv[1])),
            "violations": tally.violations[:20],
            "violation_count": len(tally.violations),
            "reconnects": tally.reconnects,
            "health_after": health,
            "fresh_client_after": identified,
            "call_packets_sent": sent_total,
            "call_packets_received": received_total,
            "call_lost": sent_total - received_total,
            "call_exact": streams_ok,
            "call_latency_ms_p50": round(latencies[len(latencies) // 2] / 1e6, 2),
            "call_latency_ms_p99": round(latencies[len(latencies) * 99 // 100] / 1e6, 2),
            "call_latency_ms_max": round(latencies[-1] / 1e6, 2),
            "call_error_frames": len(a.errors) + len(b.errors),
            "call_closed": [p.close_code for p in (a, b)],
        }
        for p in (a, b):
            await p.leave()
        nursery.cancel_scope.cancel()
    return result


async def garbage(
    ws_url: str, room: int, seed: int, count: int, tally: Tally, nursery: trio.Nursery
) -> None:
    rng = random.Random(seed)
    seeds = valid_frames(room, me=f"h{seed}")
    session = HostileSession(ws_url, tally, nursery)
    for _ in range(count):
        await session.exchange(random_frame(rng, seeds))
    await session.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--sockets", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json")
    args = parser.parse_args()
    out = trio.run(main, args)
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    sys.exit(
        0 if out["violation_count"] == 0 and out["call_exact"] and out["health_after"] == 200 else 1
    )
