"""One gateway signaling client for tests, scripts and the benchmark (trio-websocket).

`WsClient` wraps one open `WebSocketConnection`: frames out (`send`, the identify and handshake
helpers, `send_raw` for hostile bytes), frames in (`recv`, `recv_type`), and helpers to read the
SFU's answers. Open one with `ws_client(url)` (an async context manager), `WsClient.connect`
(a connection whose reader lives in a given nursery) or `WsClient(ws)` around a connection opened
elsewhere. Imports neither pytest nor aiortc: `arbiter.bench` uses it without the test extras.
"""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    WebSocketConnection,
    connect_websocket_url,
    open_websocket_url,
)


class WsClient:
    """A trio-websocket client speaking the gateway protocol, with exact-frame helpers."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws

    @classmethod
    async def connect(cls, nursery: trio.Nursery, url: str, **options: Any) -> WsClient:
        """Connect with the connection's background reader in `nursery` (close it with
        `aclose`); `options` go to trio-websocket (`max_message_size`, ...)."""
        return cls(await connect_websocket_url(nursery, url, **options))

    @property
    def closed(self) -> CloseReason | None:
        return self.ws.closed

    async def aclose(self) -> None:
        await self.ws.aclose()

    def reset(self) -> None:
        """Drop the TCP connection with a RST and no close frame (a crashed client).

        trio-websocket has no public way to drop a connection unannounced; its stream's socket
        is the only handle. SO_LINGER 0 makes close() send RST instead of FIN.
        """
        sock = self.ws._stream.socket  # type: ignore[attr-defined]
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    # -- frames out ----------------------------------------------------------------------

    async def send(self, action: str, data: Any = None, **extra: Any) -> None:
        """`{"action": action, **extra, "data": data}`; no "data" key when `data` is None."""
        frame: dict[str, Any] = {"action": action, **extra}
        if data is not None:
            frame["data"] = data
        await self.ws.send_message(json.dumps(frame))

    async def send_raw(self, text: str | bytes) -> None:
        await self.ws.send_message(text)

    async def send_identify(self, room_id: Any, peer_id: str, name: str | None = None) -> None:
        """Identify as a client of `room_id` without waiting for the answer."""
        data: dict[str, Any] = {"type": "client", "id": peer_id, "roomId": room_id}
        if name is not None:
            data["name"] = name
        await self.send("identify", data)

    async def send_handshake(
        self,
        kind: str,
        description: dict[str, Any],
        *,
        remote_peer_id: str | None = None,
        room_id: Any = None,
    ) -> None:
        """A `handshake` of type `kind` ("producer" or "consumer") carrying `description`."""
        data: dict[str, Any] = {"type": kind}
        if remote_peer_id is not None:
            data["remotePeerId"] = remote_peer_id
        if room_id is not None:
            data["roomId"] = room_id
        data["description"] = description
        await self.send("handshake", data)

    async def send_offer(self, sdp: str, *, room_id: Any = None) -> None:
        """The producer offer (what this client publishes) to the room's SFU."""
        await self.send_handshake("producer", {"type": "offer", "sdp": sdp}, room_id=room_id)

    async def send_answer(self, publisher: str, sdp: str, *, room_id: Any = None) -> None:
        """The answer to the SFU's consumer offer for `publisher`'s tracks."""
        await self.send_handshake(
            "consumer", {"type": "answer", "sdp": sdp}, remote_peer_id=publisher, room_id=room_id
        )

    # -- frames in -----------------------------------------------------------------------

    async def recv_json(self, timeout: float | None = 5) -> Any:
        """The next frame, decoded, whatever JSON it is; `timeout=None` waits indefinitely."""
        with trio.fail_after(timeout if timeout is not None else float("inf")):
            return json.loads(await self.ws.get_message())

    async def recv(self, timeout: float | None = 5) -> dict[str, Any]:
        """The next frame, which must be a JSON object (the gateway sends nothing else)."""
        message = await self.recv_json(timeout)
        if not isinstance(message, dict):
            raise AssertionError(f"non-object frame {message!r}")
        return message

    async def recv_type(self, kind: str, timeout: float = 5) -> dict[str, Any]:
        """Skip frames of other types (roster, chatHistory, ...) until one of `kind`."""
        with trio.fail_after(timeout):
            while True:
                message = await self.recv(timeout)
                if message.get("type") == kind:
                    return message

    async def identify_client(self, room_id: int, peer_id: str, name: str | None = None) -> dict:
        """Identify and read the three frames that answer it: identified, roster, chatHistory."""
        await self.send_identify(room_id, peer_id, name)
        identified = await self.recv()
        assert identified["type"] == "identified", identified
        roster = await self.recv()
        assert roster["type"] == "roster"
        history = await self.recv()
        assert history["type"] == "chatHistory"
        return identified

    async def drain(self) -> CloseReason:
        """Read and discard frames until the connection closes; why it closed."""
        try:
            while True:
                await self.ws.get_message()
        except ConnectionClosed as exc:
            return exc.reason

    async def expect_silence(self, seconds: float = 0.2) -> None:
        with trio.move_on_after(seconds):
            message = await self.ws.get_message()
            raise AssertionError(f"unexpected frame {message}")


# -- reading the SFU's answers -----------------------------------------------------------------


def producer_answer(message: dict[str, Any]) -> str | None:
    """The SDP of the SFU's answer to this client's producer offer, if `message` is one."""
    description = message.get("description") or {}
    if message.get("type") == "producer" and description.get("type") == "answer":
        return description["sdp"]
    return None


def consumer_offer(message: dict[str, Any]) -> tuple[str, str] | None:
    """(publisher, SDP) of the SFU's consumer offer for a publisher, if `message` is one."""
    description = message.get("description") or {}
    if message.get("type") == "consumer" and description.get("type") == "offer":
        return message["remotePeerId"], description["sdp"]
    return None


def is_error(message: dict[str, Any]) -> bool:
    """The gateway's error frame, or an SFU answer carrying an `error`."""
    return message.get("type") == "error" or "error" in message


@asynccontextmanager
async def ws_client(url: str, **options: Any) -> AsyncIterator[WsClient]:
    """A `WsClient` on a fresh connection, closed on exit; `options` go to trio-websocket."""
    async with open_websocket_url(url, **options) as ws:
        yield WsClient(ws)
