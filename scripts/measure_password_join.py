"""Join time with a room password versus without (issue 10: scrypt must not show by > 50 ms).

Starts `arbiter serve` as its own process (loopback, fresh database), claims two rooms, one with
a password, then times `--joins` joins into each, interleaved: a WebSocket opened, `identify`
sent (with the password, or the moderator key, where the room needs one) and the `identified`
frame received. That is the part of a browser's join a password changes; the rest (camera,
ICE, DTLS) is the same either way. Prints medians and p90 per kind, as JSON.

Usage: .venv/bin/python scripts/measure_password_join.py [--joins 40] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from arbiter.testing.serve import served
from arbiter.testing.signaling import ws_client


async def one_join(ws_url: str, room: int, n: int, extra: dict[str, Any]) -> float:
    start = time.perf_counter()
    async with ws_client(ws_url) as ws:
        await ws.send("identify", {"type": "client", "id": f"p{n}", "roomId": room, **extra})
        answer = await ws.recv()
        elapsed = time.perf_counter() - start
    assert answer["type"] == "identified", answer
    return elapsed * 1000


async def measure(joins: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        async with served(Path(tmp), "[rooms]\nidle_pool = 2\n") as srv:
            rooms: dict[str, tuple[int, str]] = {}
            for name, body in (("open", {}), ("protected", {"password": "correct horse"})):
                with trio.fail_after(10):
                    while True:
                        r = await srv.http.patch("/claimRoom", json={"urlPath": name, **body})
                        if r.status_code == 200:
                            break
                        await trio.sleep(0.1)
                rooms[name] = (r.json()["roomId"], r.json()["moderatorKey"])
            kinds = {
                "no password": (rooms["open"][0], {}),
                "password": (rooms["protected"][0], {"password": "correct horse"}),
                "moderator key": (rooms["protected"][0], {"moderatorKey": rooms["protected"][1]}),
            }
            times: dict[str, list[float]] = {k: [] for k in kinds}
            for n in range(joins):
                for kind, (room, extra) in kinds.items():
                    times[kind].append(await one_join(srv.ws_url, room, n, extra))
    out: dict[str, Any] = {"joins": joins}
    for kind, values in times.items():
        ordered = sorted(values)
        out[kind] = {
            "median_ms": round(statistics.median(values), 2),
            "p90_ms": round(ordered[int(0.9 * (len(ordered) - 1))], 2),
        }
    out["password_minus_none_ms"] = round(
        out["password"]["median_ms"] - out["no password"]["median_ms"], 2
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--joins", type=int, default=40)
    parser.add_argument("--json")
    args = parser.parse_args()
    result = trio.run(measure, args.joins)
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
