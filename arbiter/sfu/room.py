"""One room's SFU as a signaling peer: identifies, tracks participants, handles handshakes.

This module is the signaling half of the room SFU. It speaks the gateway protocol over any
`SignalingLink` (in-process memory or a remote worker's WebSocket), so the gateway cannot tell
where it runs. The media half (`media.MediaRoom`: transports, router) plugs in behind
`MediaHandler`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from .link import SignalingLink

log = logging.getLogger(__name__)


class MediaHandler(Protocol):
    """The media half: reacts to handshakes and departures, and sends through `send`."""

    async def on_handshake(self, message: dict[str, Any]) -> None: ...

    async def on_client_join(self, client_id: str) -> None: ...

    async def on_client_disconnect(self, client_id: str) -> None: ...

    async def on_chat(self, message: dict[str, Any]) -> None: ...

    async def on_features(self, client_id: str) -> None: ...

    async def on_preferences(self, subscriber: str, publisher: str, max_height: int,
                             paused: bool) -> None: ...  # fmt: skip


@dataclass
class Participant:
    id: str
    name: str = ""
    handshakes: int = 0
    features: dict[str, bool] = field(default_factory=dict)


class RoomSFU:
    def __init__(self, room_id: int, link: SignalingLink, media: MediaHandler | None = None):
        self.room_id = room_id
        self.link = link
        self.media = media
        self.participants: dict[str, Participant] = {}
        self.identified = trio.Event()
        # Frames the media half must send from synchronous code (transport hooks).
        self._notices, self._pending = trio.open_memory_channel[dict[str, Any]](256)

    async def send(self, action: str, data: dict[str, Any]) -> None:
        await self.link.send({"action": action, "data": data})

    def notify(self, action: str, data: dict[str, Any]) -> None:
        """Send a frame from synchronous code; dropped (and logged) if 256 are pending."""
        try:
            self._notices.send_nowait({"action": action, "data": data})
        except trio.WouldBlock:
            log.warning("room %d: notice %s dropped: too many pending", self.room_id, action)

    async def run(self) -> None:
        await self.send(
            "identify", {"type": "sfu", "id": str(self.room_id), "roomId": self.room_id}
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._send_notices)
            while True:
                try:
                    message = await self.link.receive()
                except (trio.EndOfChannel, trio.ClosedResourceError):
                    break
                await self.handle(message)
            nursery.cancel_scope.cancel()

    async def _send_notices(self) -> None:
        async for frame in self._pending:
            await self.link.send(frame)

    async def handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "identified":
            self.identified.set()
        elif kind == "roster":
            for client in message.get("clients", []):
                participant = self._participant(client.get("id"), client.get("name"))
                if participant is not None and isinstance(client.get("features"), dict):
                    participant.features = client["features"]
        elif kind == "clientJoin":
            participant = self._participant(message.get("clientId"), message.get("name"))
            if participant is not None and self.media is not None:
                await self.media.on_client_join(participant.id)
        elif kind in ("producer", "consumer"):
            sender = message.get("sender")
            participant = self._participant(sender, None)
            if participant is not None:
                participant.handshakes += 1
            log.debug("room %d: %s handshake from %s", self.room_id, kind, sender)
            if self.media is not None:
                await self.media.on_handshake(message)
        elif kind == "clientDisconnect":
            client_id = message.get("clientId")
            if isinstance(client_id, str):
                self.participants.pop(client_id, None)
                if self.media is not None:
                    await self.media.on_client_disconnect(client_id)
        elif kind == "features":
            participant = self.participants.get(message.get("id"))  # type: ignore[arg-type]
            if participant is not None and isinstance(message.get("features"), dict):
                participant.features = message["features"]
                if self.media is not None:
                    await self.media.on_features(participant.id)
        elif kind == "chat":
            # Chat from any client of the room: the media half relays it to data channels.
            if self.media is not None:
                await self.media.on_chat(message)
        elif kind == "preferences":
            # Checked by the gateway (docs/PROTOCOL.md section 3); re-checked: a link is a link.
            sender, publisher = message.get("sender"), message.get("remotePeerId")
            height, paused = message.get("maxHeight"), message.get("paused")
            if (
                self.media is not None
                and isinstance(sender, str)
                and isinstance(publisher, str)
                and isinstance(height, int)
                and isinstance(paused, bool)
            ):
                await self.media.on_preferences(sender, publisher, height, paused)
        elif kind == "error":
            log.warning("room %d: gateway error %s", self.room_id, message)
        else:
            log.debug("room %d: ignoring %s", self.room_id, kind)

    def _participant(self, client_id: Any, name: Any) -> Participant | None:
        if not isinstance(client_id, str):
            return None
        participant = self.participants.get(client_id)
        if participant is None:
            participant = self.participants[client_id] = Participant(client_id)
        if isinstance(name, str):
            participant.name = name
        return participant


async def run_signaling_only(room_id: int, link: SignalingLink) -> None:
    """An SFU factory without media (gateway tests and signaling-only deployments)."""
    await RoomSFU(room_id, link).run()
