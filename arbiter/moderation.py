"""The `moderate` action (docs/PROTOCOL.md section 3): what a room's moderators may do.

A moderator is a client that identified with the room's moderator key (the claimer's browser
keeps it). Moderators may remove (`kick`) or ask to mute (`mute`) anyone who is not a
moderator, lock and unlock the room, and set or remove its password. Nobody can turn anyone's
microphone or camera on: `mute` is a request the target's own client carries out.

`Moderation` is part of the gateway (it reads the gateway's room tables and uses its leave and
broadcast); the room's access rules themselves (hashes, lock) belong to the room supervisor and
change only through its hooks, which also write them to SQLite (they survive a restart).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import access
from . import protocol as p
from .credentials import MAX_SECRET_CHARS
from .errors import BadRequest, Forbidden, NotFound
from .peer import CLOSE_KICKED, Peer, PeerKind

if TYPE_CHECKING:
    from .gateway import Gateway

OPS = frozenset({"kick", "mute", "lock", "unlock", "password"})


class Moderation:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    def moderate(self, peer: Peer, data: dict[str, Any]) -> None:
        gateway = self.gateway
        room = gateway.require_identified(peer)
        if peer.kind != PeerKind.CLIENT or not peer.moderator:
            raise Forbidden(p.NOT_A_MODERATOR)
        op = data.get("op")
        if op not in OPS:
            raise BadRequest(p.INVALID_MODERATION)
        assert peer.room_id is not None and peer.peer_id is not None
        if op in ("kick", "mute"):
            target_id = data.get("target")
            target = room.clients.get(target_id) if isinstance(target_id, str) else None
            if target is None:
                raise NotFound(p.RECEIVER_NOT_FOUND)
            if target is peer:
                raise BadRequest(p.INVALID_MODERATION)
            if target.moderator:
                raise Forbidden(p.NOT_ON_A_MODERATOR)
            if op == "kick":
                # Told first, then removed: the room hears clientDisconnect as for any leave,
                # and the 4003 close tells a browser not to rejoin by itself.
                target.send({"type": "kicked", "by": peer.peer_id})
                gateway.leave(target, "kicked by a moderator")
                target.request_close(CLOSE_KICKED, "removed by a moderator")
            else:
                target.send({"type": "muteRequest", "by": peer.peer_id})
            gateway.metrics.moderation.labels(op).inc()
            return
        if op in ("lock", "unlock"):
            gateway.hooks.set_locked(peer.room_id, op == "lock")
        else:
            password = data.get("password", ...)
            if password is None:
                gateway.hooks.set_password(peer.room_id, None)
            elif isinstance(password, str) and 0 < len(password) <= MAX_SECRET_CHARS:
                gateway.hooks.set_password(peer.room_id, access.hashed(peer, password))
            else:
                raise BadRequest(p.INVALID_PASSWORD)
        gateway.metrics.moderation.labels(op).inc()
        self.announce(peer.room_id, by=peer.peer_id)

    def announce(self, room_id: int, by: str | None = None) -> None:
        """Every client of the room learns its lock and password state (and which moderator
        changed it; an operator's change has no `by`)."""
        rules = self.gateway.hooks.room(room_id)
        room = self.gateway.rooms.get(room_id)
        if rules is None or room is None:
            return
        self.gateway.broadcast(
            list(room.clients.values()),
            {
                "type": "roomState",
                "locked": rules.locked,
                "passwordRequired": rules.password_hash is not None,
                **({"by": by} if by is not None else {}),
            },
        )
