"""How a room SFU talks to the gateway (docs/PROTOCOL.md section 3), seen from the SFU.

The SFU speaks the gateway's frames over a `SignalingLink`: in memory when it runs inside the
gateway's process (`arbiter.rooms.InProcessLink`), or over a WebSocket when it runs in an SFU
worker. Defined here, in `arbiter/sfu/`, so the SFU needs nothing from the gateway, the rooms,
the store or the web to run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

# Longest chat message, in characters: the gateway refuses longer ones from WebSocket clients
# and the SFU cuts data-channel chat to it.
MAX_CHAT_CHARS = 2000


class SignalingLink(Protocol):
    """The same frames over memory or a WebSocket."""

    async def send(self, message: dict[str, Any]) -> None: ...

    async def receive(self) -> dict[str, Any]:
        """The next frame for the SFU; raises trio.EndOfChannel when the link is gone."""
        ...


# A room SFU: runs room `room_id` over the link until cancelled or the link ends.
SfuFactory = Callable[[int, SignalingLink], Awaitable[None]]
