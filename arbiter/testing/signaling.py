"""One gateway signaling client for tests, scripts and the benchmark (trio-websocket)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from trio_websocket import WebSocketConnection, open_websocket_url


class WsClient:
    """A trio-websocket client speaking the gateway protocol, with exact-frame helpers."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws

    async def send(self, action: str, data: Any = None, **extra: Any) -> None:
        frame: dict[str, Any] = {"action": action, **extra}
        if data is not None:
            frame["data"] = data
        await self.ws.send_message(json.dumps(frame))

    async def send_raw(self, text: str | bytes) -> None:
        await self.ws.send_message(text)

    async def recv(self, timeout: float = 5) -> dict[str, Any]:
        with trio.fail_after(timeout):
            message = json.loads(await self.ws.get_message())
        assert isinstance(message, dict)
        return message

    async def recv_type(self, kind: str, timeout: float = 5) -> dict[str, Any]:
        """Skip frames of other types (roster, chatHistory, ...) until one of `kind`."""
        with trio.fail_after(timeout):
            while True:
                message = await self.recv(timeout)
                if message.get("type") == kind:
                    return message

    async def identify_client(self, room_id: int, peer_id: str, name: str | None = None) -> dict:
        data: dict[str, Any] = {"type": "client", "id": peer_id, "roomId": room_id}
        if name is not None:
            data["name"] = name
        await self.send("identify", data)
        identified = await self.recv()
        assert identified["type"] == "identified", identified
        roster = await self.recv()
        assert roster["type"] == "roster"
        history = await self.recv()
        assert history["type"] == "chatHistory"
        return identified

    async def expect_silence(self, seconds: float = 0.2) -> None:
        with trio.move_on_after(seconds):
            message = await self.ws.get_message()
            raise AssertionError(f"unexpected frame {message}")


@asynccontextmanager
async def ws_client(url: str) -> AsyncIterator[WsClient]:
    async with open_websocket_url(url) as ws:
        yield WsClient(ws)
