"""A signaling connection as the gateway sees it, and what the gateway needs from the rooms.

A `Peer` is one signaling connection: a browser's WebSocket, a remote SFU worker's WebSocket, or
an in-process room SFU. Sending never blocks: each peer has a bounded queue drained by its own
writer task; a peer whose queue is full has stopped reading and is closed with 1008, so one slow
peer never stalls a room. Close codes and reasons are docs/PROTOCOL.md section 3's.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import trio

from . import protocol as p

CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008  # RFC 6455 section 7.4.1: a peer that does not drain its queue
CLOSE_TOO_BIG = 1009
# RFC 6455 section 7.4.1 (IANA registry): "Service Restart". The server is stopping (SIGTERM or
# SIGINT) and will be back: the client should rejoin calmly after a pause.
CLOSE_SERVICE_RESTART = 1012
SERVER_RESTARTING = "Server restarting"
# Application close code (RFC 6455 7.4.2 reserves 4000-4999 for applications): the room's SFU
# evicted this client because its media stopped (consent freshness expired, RFC 7675).
CLOSE_MEDIA_LOST = 4001
# A moderator removed this client (docs/PROTOCOL.md section 3, moderate kick): a browser must
# not rejoin on its own.
CLOSE_KICKED = 4003
QUEUE_FULL = "send queue full: peer is not reading"
# A producer offer the SFU has not answered within this long no longer blocks the next one
# (the SFU restarted, or lost it): the client must not be stuck with 429 forever.
OFFER_IN_FLIGHT_TIMEOUT = 10.0


def sfu_queue_size(send_queue: int) -> int:
    """A room SFU's inbox: roomier than a client's, because a whole room feeds it."""
    return 4 * send_queue


class PeerKind(StrEnum):
    """What an identified WebSocket peer is (docs/PROTOCOL.md section 3, identify)."""

    CLIENT = "client"  # a participant's browser (or any client)
    SFU = "sfu"  # a room's SFU
    WORKER = "worker"  # an SFU worker process that hosts rooms


class Peer:
    """One signaling connection as the gateway sees it."""

    def __init__(
        self,
        remote_addr: str,
        queue_size: int,
        *,
        trusted: bool = False,
        client_key: str | None = None,
    ) -> None:
        # Fresh and random: never taken from the peer (docs/PROTOCOL.md section 3, $connect).
        self.connection_id = secrets.token_urlsafe(12)
        self.remote_addr = remote_addr
        # The address per-address budgets are keyed by (the proxy-aware client address).
        self.client_key = client_key if client_key is not None else remote_addr
        self.trusted = trusted
        self.kind: PeerKind | None = None
        self.peer_id: str | None = None
        self.room_id: int | None = None
        self.name = ""
        self.features: dict[str, bool] = {"audio": True, "video": True}
        self.outbox, self.inbox = trio.open_memory_channel[str](queue_size)
        self.close_code: int | None = None
        self.close_reason = ""
        self.close_requested = trio.Event()
        # Set by Gateway.connect from the limits; None (never limited) until then.
        self.bucket: p.TokenBucket | None = None
        self.chat_bucket: p.TokenBucket | None = None
        self.refused = 0  # frames refused with 429 so far
        # When this client's last producer offer went to the SFU, until the SFU answers it.
        self.offer_sent_at: float | None = None
        self.identified = trio.Event()
        # When a client's identify was accepted (the gateway's monotonic clock), until its first
        # transport connects (mediaUp): arbiter_join_seconds and the "media connected" line.
        self.joined_at: float | None = None
        self.media_seen = False
        self.moderator = False
        # Results of slow credential checks done before the frame is handled (arbiter.access):
        # (kind, stored hash, fingerprint of the secret offered) -> matched.
        self.verified: dict[tuple[str, str, str], bool] = {}
        # A password a moderator is about to set, hashed off the event loop: (fingerprint, hash).
        self.prepared_hash: tuple[str, str] | None = None

    def send(self, message: dict[str, Any]) -> None:
        self.send_text(p.encode(message))

    def send_text(self, text: str) -> None:
        if self.close_code is not None:
            return
        try:
            self.outbox.send_nowait(text)
        except trio.WouldBlock:
            self.request_close(CLOSE_POLICY, QUEUE_FULL)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def request_close(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
            self.close_requested.set()

    def __repr__(self) -> str:
        return f"<Peer {self.connection_id} {self.kind}:{self.peer_id} room={self.room_id}>"


class RoomAccess(Protocol):
    """A room's access rules as the gateway reads them (owned by the room supervisor)."""

    password_hash: str | None
    moderator_key_hash: str | None
    locked: bool


class RoomHooks(Protocol):
    """What the gateway needs from the room supervisor."""

    def room_is_live(self, room_id: int) -> bool: ...

    def sfu_identified(self, room_id: int) -> None: ...

    def occupancy_changed(self, room_id: int, clients: int) -> None: ...

    def room_accepts_clients(self, room_id: int) -> bool: ...

    def room(self, room_id: int) -> RoomAccess | None: ...

    def set_locked(self, room_id: int, locked: bool) -> None: ...

    def set_password(self, room_id: int, password_hash: str | None) -> None: ...

    def media_up(self, room_id: int) -> None: ...

    def worker_attached(self, worker_id: str, peer: Peer, capacity: dict[str, Any]) -> None: ...

    def worker_load(self, worker_id: str, load: dict[str, Any]) -> None: ...

    def worker_gone(self, worker_id: str) -> None: ...


@dataclass
class RoomPeers:
    clients: dict[str, Peer] = field(default_factory=dict)
    sfu: Peer | None = None

    def everyone_but(self, peer: Peer) -> list[Peer]:
        others = [c for c in self.clients.values() if c is not peer]
        if self.sfu is not None and self.sfu is not peer:
            others.append(self.sfu)
        return others
