"""Hostile WebSocket frames and the oracle that judges the gateway's answers to them.

Shared by tests/test_hostile_ws.py (hypothesis strategies) and scripts/hostile_ws.py (a seeded
`random.Random` generator for tens of thousands of frames). The oracle is the wire contract
(docs/PROTOCOL.md section 3): every answer is a frame of a known type, every error carries a
documented (status, message) pair, and nothing is ever a 500.
"""

from __future__ import annotations

import contextlib
import json
import random
from dataclasses import dataclass, field
from typing import Any

import trio
from trio_websocket import ConnectionClosed

from arbiter.bench import sdp_client

from .signaling import WsClient

# Every error the gateway may answer a peer's frame with (status, message), byte for byte.
DOCUMENTED_ERRORS = {
    (400, "Invalid JSON"),
    (400, "Unknown action"),
    (400, "data must be an object"),
    (400, "Binary frames are not supported"),
    (400, "Missing valid type property"),
    (400, "Missing valid id property"),
    (400, "Invalid name"),
    (400, "WebSocket Connection Not Found"),
    (400, "Invalid handshake type"),
    (400, "Invalid chat content"),
    (400, "Invalid features"),
    (400, "Only clients chat"),
    (400, "Only clients have features"),
    (403, "Forbidden"),
    (403, "Room is full"),
    (404, "Room not found"),
    (404, "Receiver not found"),
    (409, "Duplicate id"),
    (409, "Already identified"),
    (429, "Too many messages"),
    (503, "SFU not connected, try again later"),
}
# Frame types the gateway (or, via it, the room's SFU) sends a client.
SERVER_TYPES = {
    "identified",
    "roster",
    "chatHistory",
    "clientJoin",
    "clientDisconnect",
    "sfuDisconnect",
    "chat",
    "features",
    "producer",
    "consumer",
    "error",
}
# Close codes a hostile frame may legitimately cause: an explicit disconnect (1000), an
# over-size frame (1009), a flood (1008).
ALLOWED_CLOSES = {1000, 1008, 1009}

PROBE = "probe"  # an unknown action: its error frame marks the end of one frame's answers


def verdict(message: Any) -> str | None:
    """None if `message` is a frame the contract allows, else what is wrong with it."""
    if not isinstance(message, dict) or message.get("type") not in SERVER_TYPES:
        return f"unknown frame {message!r}"
    kind = message["type"]
    if kind == "error":
        if (message.get("status"), message.get("message")) not in DOCUMENTED_ERRORS:
            return f"undocumented error {message!r}"
    if kind in ("producer", "consumer") and "error" in message:
        # The room SFU's answer to an offer or answer it cannot use (README "Decisions").
        err = message["error"]
        if not (
            isinstance(err, dict)
            and err.get("status") == 400
            and isinstance(err.get("message"), str)
            and err["message"]
        ):
            return f"unexpected SFU error {message!r}"
    return None


def valid_frames(room_id: int, me: str = "h1") -> list[dict[str, Any]]:
    """One well-formed frame of every action (the seeds that get mutated)."""
    offer = sdp_client.build_publisher_offer(
        "ufragx", "p" * 24, ":".join(["AB"] * 32), 1111, 2222, candidate=("127.0.0.1", 9)
    )
    return [
        {"action": "identify", "data": {"type": "client", "id": me, "roomId": room_id, "name": "H"}},
        {"action": "identify", "data": {"type": "sfu", "id": str(room_id), "token": "guess"}},
        {"action": "handshake", "data": {"type": "producer", "description": {"type": "offer", "sdp": offer}}},
        {"action": "handshake", "data": {"type": "consumer", "remotePeerId": "x", "description": {"type": "answer", "sdp": "v=0\r\n"}}},
        {"action": "handshake", "data": {"type": "producer", "candidate": {"candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host", "sdpMid": "0"}}},
        {"action": "handshake", "data": {"type": "consumer", "sender": "spoof", "receiver": "p1", "roomId": 999}},
        {"action": "disconnect", "data": {}},
        {"action": "disconnect", "data": {"clientId": "p1"}},
        {"action": "chat", "data": {"content": "hello"}},
        {"action": "features", "data": {"audio": True, "video": False}},
    ]  # fmt: skip


JSONISH_ATOMS: list[Any] = [
    None, True, False, 0, -1, 1, 2**31, 2**63, -(2**70), 1.5, -0.0, 1e308, "", " ", "a",
    "client", "sfu", "producer", "consumer", "offer", "answer", "\x00", "\u202e", "\ud7ff",
    "😀" * 3, "x" * 300, "1", "-1", "0", "1e3", " 1 ", "999999999999999999999", [], {},
]  # fmt: skip


def random_jsonish(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth > 3 or roll < 0.6:
        return rng.choice(JSONISH_ATOMS)
    if roll < 0.8:
        return [random_jsonish(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = ["type", "id", "roomId", "data", "action", "content", "audio", "description", "k"]
    return {rng.choice(keys): random_jsonish(rng, depth + 1) for _ in range(rng.randrange(4))}


def mutate(rng: random.Random, frame: dict[str, Any]) -> str | bytes:
    """One random corruption of a valid frame, serialised (possibly no longer JSON at all)."""
    frame = json.loads(json.dumps(frame))
    data = frame.get("data")
    choice = rng.randrange(10)
    if choice == 0 and isinstance(data, dict) and data:
        data[rng.choice(sorted(data))] = random_jsonish(rng)
    elif choice == 1 and isinstance(data, dict) and data:
        del data[rng.choice(sorted(data))]
    elif choice == 2:
        frame["data"] = random_jsonish(rng)
    elif choice == 3:
        frame["action"] = rng.choice([random_jsonish(rng), "IDENTIFY", "identify ", "chat\x00"])
    elif choice == 4:
        text = json.dumps(frame)
        cut = rng.randrange(len(text))
        return text[:cut]
    elif choice == 5:
        text = bytearray(json.dumps(frame).encode())
        text[rng.randrange(len(text))] = rng.randrange(256)
        return text.decode("utf-8", "replace")
    elif choice == 6:
        return json.dumps(frame).encode()  # a binary frame
    elif choice == 7:
        depth = rng.randrange(1, 3000)
        return json.dumps(frame)[:-1] + ', "deep": ' + "[" * depth + "]" * depth + "}"
    elif choice == 8 and isinstance(data, dict):
        data[rng.choice(["type", "id", "content", "zz"])] = random_jsonish(rng)
    else:
        return json.dumps(random_jsonish(rng))
    return json.dumps(frame)


def random_frame(rng: random.Random, seeds: list[dict[str, Any]]) -> str | bytes:
    roll = rng.random()
    if roll < 0.1:
        return json.dumps(rng.choice(seeds))  # valid frames keep the state machine moving
    if roll < 0.85:
        return mutate(rng, rng.choice(seeds))
    return json.dumps(random_jsonish(rng))


@dataclass
class Tally:
    frames: int = 0
    by_outcome: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    reconnects: int = 0

    def count(self, key: str) -> None:
        self.by_outcome[key] = self.by_outcome.get(key, 0) + 1


async def flood_once(ws_url: str, frames: int, tally: Tally) -> None:
    """One connection that sends `frames` chats as fast as it can, reading its answers as a
    browser would, until the server closes it (past the burst, the refusals end in 1008).

    Its own nursery, cancelled at the end: trio-websocket's close handshake can wait a minute on
    a connection the server closed while frames were still in flight. Every wait is bounded.
    """
    async with trio.open_nursery() as conn:
        ws = await WsClient.connect(conn, ws_url)

        async def read() -> None:
            with trio.move_on_after(10):
                await ws.drain()

        conn.start_soon(read)
        with contextlib.suppress(ConnectionClosed), trio.move_on_after(10):
            for _ in range(frames):
                await ws.send_raw('{"action":"chat","data":{"content":"flood"}}')
        with trio.move_on_after(10):
            while not ws.closed:
                await trio.sleep(0.01)
        tally.count(f"flood close {ws.closed.code if ws.closed else 'none'}")
        conn.cancel_scope.cancel()


class HostileSession:
    """One WebSocket that sends frames and reads every answer up to a probe's error frame.

    Reconnects (and counts it) when a frame legitimately closed the connection; any other close,
    an undocumented frame or a missing probe answer is recorded as a violation.
    """

    def __init__(self, ws_url: str, tally: Tally, nursery: trio.Nursery) -> None:
        self.ws_url = ws_url
        self.tally = tally
        # The connection's background reader lives here, not in whichever task calls exchange.
        self.nursery = nursery
        self.ws: WsClient | None = None
        self.probes = 0

    async def _open(self) -> WsClient:
        if self.ws is None or self.ws.closed:
            if self.ws is not None:
                await self.ws.aclose()
            self.ws = await WsClient.connect(self.nursery, self.ws_url, max_message_size=1 << 20)
        return self.ws

    async def aclose(self) -> None:
        if self.ws is not None:
            with trio.move_on_after(2):
                await self.ws.aclose()
            self.ws = None

    async def exchange(self, frame: str | bytes, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Send `frame` and a probe; return every frame received before the probe's answer."""
        ws = await self._open()
        self.tally.frames += 1
        self.probes += 1
        probe = f"{PROBE}-{self.probes}"
        got: list[dict[str, Any]] = []
        try:
            await ws.send_raw(frame)
            await ws.send(probe)
            with trio.fail_after(timeout):
                while True:
                    message = await ws.recv_json(timeout=None)
                    if message == {
                        "type": "error",
                        "action": probe,
                        "status": 400,
                        "message": "Unknown action",
                    }:
                        break
                    if message == {
                        "type": "error",
                        "action": probe,
                        "status": 429,
                        "message": "Too many messages",
                    }:
                        # This socket outran its rate limit (documented): let the bucket refill.
                        self.tally.count("probe refused 429")
                        await trio.sleep(0.5)
                        break
                    problem = verdict(message)
                    if problem:
                        self.tally.violations.append(f"{frame!r:.200} -> {problem:.300}")
                    got.append(message)
        except ConnectionClosed as exc:
            code = exc.reason.code
            self.tally.count(f"close {code}")
            if code not in ALLOWED_CLOSES:
                self.tally.violations.append(f"{frame!r:.200} -> close {code}")
            self.tally.reconnects += 1
            await self.aclose()
        except trio.TooSlowError:
            self.tally.violations.append(f"{frame!r:.200} -> no answer to the probe")
            await self.aclose()
        for message in got:
            if message.get("type") == "error":
                self.tally.count(f"{message['status']} {message['message']}")
            elif "error" in message:
                self.tally.count(f"sfu {message['type']} error")
            else:
                self.tally.count(str(message.get("type")))
        if not got:
            self.tally.count("no answer")
        return got
