"""The WebSocket signaling gateway (docs/PROTOCOL.md section 3), independent of the transport.

Peers (`arbiter.peer.Peer`) are browsers' WebSockets, remote SFU workers' WebSockets or
in-process room SFUs. The gateway cannot tell the two kinds of SFU apart; only `trusted` (set
for in-process SFUs) exempts a peer from presenting the worker token.

All handling is synchronous: a frame is decoded, checked, routed and answered without awaiting,
so the gateway's state can never be seen half-updated by another task. Sending never blocks:
each peer has a bounded queue drained by its own writer task; a peer whose queue is full has
stopped reading and is closed with 1008, so one slow peer never stalls a room.

Frames from a WebSocket are rate limited per connection (`limits.messages_per_second`, burst
`limits.message_burst`): a frame over the limit is dropped unread and answered 429 "Too many
messages"; after `limits.max_refused_messages` refusals the connection is closed with 1008.
In-process SFUs and identified remote SFUs are exempt (see `_admit`).
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from typing import Any

from . import access
from . import protocol as p
from .access import AccessChecker
from .config import Config
from .errors import (
    BadRequest,
    Conflict,
    Forbidden,
    MalformedInput,
    NotFound,
    PeerError,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from .limits import AddressLimiter
from .metrics import Metrics
from .moderation import Moderation
from .peer import (
    CLOSE_KICKED,
    CLOSE_MEDIA_LOST,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_SERVICE_RESTART,
    CLOSE_TOO_BIG,
    OFFER_IN_FLIGHT_TIMEOUT,
    QUEUE_FULL,
    SERVER_RESTARTING,
    Peer,
    PeerKind,
    RoomHooks,
    RoomPeers,
    sfu_queue_size,
)
from .store import Store
from .turn import ice_servers

__all__ = [
    "CLOSE_KICKED",
    "CLOSE_MEDIA_LOST",
    "CLOSE_NORMAL",
    "CLOSE_POLICY",
    "CLOSE_TOO_BIG",
    "QUEUE_FULL",
    "Gateway",
    "Peer",
    "RoomHooks",
    "sfu_queue_size",
]

log = logging.getLogger(__name__)


class Gateway:
    def __init__(
        self,
        config: Config,
        store: Store,
        hooks: RoomHooks,
        metrics: Metrics,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.store = store
        self.hooks = hooks
        self.metrics = metrics
        self.clock = clock
        self.monotonic = monotonic  # rate limits: immune to wall-clock steps
        self.peers: dict[str, Peer] = {}
        self.rooms: dict[int, RoomPeers] = {}
        # Refused identifies per client address (guessing room ids, passwords).
        self.failed_identifies = AddressLimiter(config.limits.failed_identifies_per_minute)
        self.access = AccessChecker(hooks, self.failed_identifies, monotonic)
        # Set when the server shuts down: departures then are not people leaving.
        self.stopping = False
        # SFU workers' control connections by worker id, and the token they (and the room SFUs
        # they start) present: workers.token, or a random one per boot for local workers only.
        self.workers: dict[str, Peer] = {}
        self.worker_token = config.workers.token
        self.moderation = Moderation(self)
        self.active_speaker: dict[int, str] = {}

    # -- connection lifecycle ------------------------------------------------------------------

    def connect(self, peer: Peer) -> None:
        """$connect: the peer exists; write its row."""
        self.peers[peer.connection_id] = peer
        if not peer.trusted:
            limits = self.config.limits
            peer.bucket = p.TokenBucket(
                limits.messages_per_second, limits.message_burst, self.monotonic()
            )
            peer.chat_bucket = p.TokenBucket(
                limits.chat_per_second, limits.chat_burst, self.monotonic()
            )
        self.store.add_connection(peer.connection_id, peer.remote_addr, self.clock())
        self.metrics.ws_connections.set(len(self.peers))

    def close(self, peer: Peer) -> None:
        """The socket is gone (or the in-process SFU stopped). Idempotent."""
        if self.peers.pop(peer.connection_id, None) is None:
            return
        if peer.kind == PeerKind.WORKER and peer.peer_id is not None:
            self.workers.pop(peer.peer_id, None)
            self.hooks.worker_gone(peer.peer_id)
        self.leave(peer, peer.close_reason or "connection closed")
        self.store.remove_connection(peer.connection_id)
        peer.outbox.close()
        self.metrics.ws_connections.set(len(self.peers))

    def participant_count(self) -> int:
        """Clients identified in a room, all rooms together (arbiter_participants)."""
        return sum(len(room.clients) for room in self.rooms.values())

    def server_restarting(self) -> None:
        """The server is stopping (SIGTERM/SIGINT): every browser's socket, identified or not,
        gets `{"type":"serverRestarting"}` and is closed with 1012 "Service Restart" (RFC 6455
        7.4.1), so the web client rejoins after a pause instead of reporting an error. SFU and
        worker connections are left to the shutdown itself."""
        self.stopping = True
        text = p.encode({"type": "serverRestarting"})
        for peer in list(self.peers.values()):
            if peer.trusted or peer.kind in (PeerKind.SFU, PeerKind.WORKER):
                continue
            peer.send_text(text)
            peer.request_close(CLOSE_SERVICE_RESTART, SERVER_RESTARTING)

    def client_count(self, room_id: int) -> int:
        room = self.rooms.get(room_id)
        return len(room.clients) if room else 0

    def sfu_of(self, room_id: int) -> Peer | None:
        room = self.rooms.get(room_id)
        return room.sfu if room else None

    def close_room(self, room_id: int) -> None:
        """The room was closed (by an operator, or empty): its clients are told the SFU is
        gone and their sockets are closed (1000 "Room closed"); the URL is free again."""
        room = self.rooms.get(room_id)
        if room is None:
            return
        clients = list(room.clients.values())
        # Not sfuDisconnect: that means "rejoin", and rejoining would open a new room.
        self.broadcast(clients, {"type": "roomClosed", "roomId": room_id})
        for peer in [*clients, *([room.sfu] if room.sfu else [])]:
            self.leave(peer, "room closed")
        for peer in clients:
            peer.request_close(CLOSE_NORMAL, "Room closed")

    # -- frames --------------------------------------------------------------------------------

    def handle_text(self, peer: Peer, text: str | bytes) -> None:
        """Handle one frame from `peer`. Never raises: errors become error frames."""
        decoded = self.admit(peer, text)
        if decoded is not None:
            self.handle_frame(peer, *decoded)

    def admit(self, peer: Peer, text: str | bytes) -> tuple[str, dict[str, Any]] | None:
        """Rate-limit and decode one frame; None when it was refused (and answered)."""
        if not self._admit(peer, text):
            return None
        try:
            return p.decode_frame_untrusted(text)
        except PeerError as exc:
            self._error(peer, p.action_of_untrusted(text), exc.status, exc.message)
            return None

    def handle_frame(self, peer: Peer, action: str, data: dict[str, Any]) -> None:
        """Handle one decoded frame (in-process SFUs call this directly). Never raises."""
        self.metrics.ws_frames.labels(action).inc()
        try:
            self._dispatch(peer, action, data)
        except (PeerError, Unavailable) as exc:
            self._error(peer, action, exc.status, exc.message)
        except Exception:
            log.exception("gateway: unexpected error handling %s from %r", action, peer)
            self._error(peer, action, 500, p.SERVER_BROKE)

    def _dispatch(self, peer: Peer, action: str, data: dict[str, Any]) -> None:
        if action == "identify":
            self._identify(peer, data)
        elif action == "handshake":
            self._handshake(peer, data)
        elif action == "disconnect":
            if peer.kind == PeerKind.SFU and "clientId" in data:
                self._evict(peer, data["clientId"])
            else:
                self.leave(peer, "disconnect")
                peer.request_close(CLOSE_NORMAL, "disconnect")
        elif action == "chat":
            self._chat(peer, data)
        elif action == "features":
            self._features(peer, data)
        elif action == "room":
            self._room_event(peer, data)
        elif action == "load":
            if peer.kind != PeerKind.WORKER or peer.peer_id is None:
                raise Forbidden(p.FORBIDDEN)
            self.hooks.worker_load(peer.peer_id, data)
        elif action == "moderate":
            self.moderation.moderate(peer, data)
        elif action == "preferences":
            self._preferences(peer, data)
        else:
            raise BadRequest(p.UNKNOWN_ACTION)

    def _admit(self, peer: Peer, text: str | bytes) -> bool:
        """The rate limit: take one token, or refuse the frame (429) without reading it.

        Every frame counts, valid or not: garbage costs the server as much as a real frame.
        An identified SFU is exempt: its identify proved the worker token (or it runs in this
        process), and it speaks for a whole room (a 16-person join is ~240 consumer offers).
        """
        if peer.bucket is None or peer.kind in (PeerKind.SFU, PeerKind.WORKER):
            return True
        if peer.bucket.take(self.monotonic()):
            return True
        peer.refused += 1
        # Name the action when the frame is small enough to peek at cheaply; floods of big
        # frames are answered with action null.
        action = p.action_of_untrusted(text) if len(text) <= 4096 else None
        self._error(peer, action, 429, p.TOO_MANY_MESSAGES)
        limit = self.config.limits.max_refused_messages
        if limit and peer.refused >= limit:
            # It kept flooding after being told: stop reading it (1008 policy violation).
            peer.request_close(CLOSE_POLICY, p.TOO_MANY_MESSAGES)
        return False

    def _error(self, peer: Peer, action: str | None, status: int, message: str) -> None:
        self.metrics.ws_errors.labels(str(status)).inc()
        peer.send(p.error_frame(action, status, message))

    # -- identify ------------------------------------------------------------------------------

    def _identify(self, peer: Peer, data: dict[str, Any]) -> None:
        kind = data.get("type")
        if kind not in tuple(PeerKind):
            raise BadRequest(p.MISSING_TYPE)
        if peer.kind is not None:
            # One identity per connection: switching rooms means a new connection (or a
            # `disconnect` first), which keeps every notice about a peer unambiguous.
            raise Conflict("Already identified")
        if peer.trusted:
            self._identify_sfu(peer, data)
            peer.identified.set()
            return
        # Refused identifies are budgeted per address: room ids and (later) passwords must
        # not be guessable by trying. An address out of budget is not even evaluated.
        key = peer.client_key
        now = self.monotonic()
        if self.failed_identifies.exhausted(key, now):
            self._refuse_identify(peer)
            return
        try:
            if kind == PeerKind.CLIENT:
                self._identify_client(peer, data)
            elif kind == PeerKind.WORKER:
                self._identify_worker(peer, data)
            else:
                self._identify_sfu(peer, data)
        except (NotFound, Forbidden, Unauthorized) as exc:
            if self.failed_identifies.retry_after(key, now):
                self._refuse_identify(peer)
                return
            raise exc
        peer.identified.set()

    def _refuse_identify(self, peer: Peer) -> None:
        self.metrics.identify_refused.inc()
        self._error(peer, "identify", 429, p.TOO_MANY_REQUESTS)
        peer.request_close(CLOSE_POLICY, p.TOO_MANY_REQUESTS)

    def _live_room(self, value: Any, *, client: bool) -> int:
        try:
            room_id = p.parse_room_id_untrusted(value)
        except MalformedInput as exc:
            raise NotFound(p.ROOM_NOT_FOUND) from exc
        if not self.hooks.room_is_live(room_id):
            raise NotFound(p.ROOM_NOT_FOUND)
        if client and not self.hooks.room_accepts_clients(room_id):
            # An unclaimed idle-pool room is nobody's call yet: waiting in one would put a
            # stranger into whichever call claims it next.
            raise NotFound(p.ROOM_NOT_FOUND)
        return room_id

    def _identify_client(self, peer: Peer, data: dict[str, Any]) -> None:
        room_id = self._live_room(data.get("roomId"), client=True)
        peer_id = p.parse_peer_id_untrusted(data.get("id"))
        name = p.parse_name_untrusted(data.get("name"), default=peer_id)
        rules = self.hooks.room(room_id)
        assert rules is not None  # _live_room checked it
        # A key that does not match is ignored: the other rules apply as if it were absent.
        key = rules.moderator_key_hash
        moderator = key is not None and access.matches(peer, "key", key, data.get("moderatorKey"))
        if not moderator:
            if rules.password_hash is not None:
                password = data.get("password")
                if password is None or password == "":
                    raise Unauthorized(p.PASSWORD_REQUIRED)
                if not access.matches(peer, "password", rules.password_hash, password):
                    raise Forbidden(p.WRONG_PASSWORD)
            if rules.locked:
                raise Forbidden(p.ROOM_LOCKED)
        room = self.rooms.setdefault(room_id, RoomPeers())
        if len(room.clients) >= self.config.rooms.max_participants:
            raise Forbidden(p.ROOM_FULL)
        if peer_id in room.clients:
            raise Conflict(p.DUPLICATE_ID)
        others = room.everyone_but(peer)
        peer.kind, peer.peer_id, peer.room_id, peer.name = PeerKind.CLIENT, peer_id, room_id, name
        peer.moderator = moderator
        room.clients[peer_id] = peer
        peer.joined_at, peer.media_seen = self.monotonic(), False
        log.info("room %d: peer %s joined (%d in the room)", room_id, peer_id, len(room.clients),
                 extra={"room": room_id, "peer": peer_id, "participants": len(room.clients),
                        "moderator": moderator})  # fmt: skip
        self._store_identity(peer)
        peer.send(self._identified(peer))
        peer.send(
            {
                "type": "roster",
                "clients": [
                    {
                        "id": c.peer_id,
                        "name": c.name,
                        "features": c.features,
                        "moderator": c.moderator,
                    }
                    for c in room.clients.values()
                    if c is not peer
                ],
            }
        )
        history = self.store.recent_chat(room_id, p.CHAT_HISTORY)
        peer.send(
            {
                "type": "chatHistory",
                "messages": [
                    {
                        "type": "chat",
                        "sender": m.sender,
                        "name": m.name,
                        "content": m.content,
                        "ts": m.ts,
                    }
                    for m in history
                ],
            }
        )
        if room_id in self.active_speaker:
            peer.send({"type": "activeSpeaker", "id": self.active_speaker[room_id]})
        self.broadcast(
            others,
            {"type": "clientJoin", "clientId": peer_id, "name": name, "moderator": moderator},
        )
        self.hooks.occupancy_changed(room_id, len(room.clients))

    def _check_worker_token(self, token: Any) -> None:
        """The worker token, compared in constant time; none configured: nobody gets in."""
        expected = self.worker_token
        if (
            not expected
            or not isinstance(token, str)
            or not hmac.compare_digest(token.encode(), expected.encode())
        ):
            raise Forbidden(p.FORBIDDEN)

    def _identify_worker(self, peer: Peer, data: dict[str, Any]) -> None:
        """An SFU worker's control connection (docs/PROTOCOL.md section 1)."""
        self._check_worker_token(data.get("token"))
        worker_id = p.parse_peer_id_untrusted(data.get("id"))
        if worker_id in self.workers:
            raise Conflict(p.DUPLICATE_ID)
        capacity = data.get("capacity")
        peer.kind, peer.peer_id, peer.name = PeerKind.WORKER, worker_id, "worker"
        self.workers[worker_id] = peer
        peer.send(
            {
                "type": "identified",
                "status": 200,
                "connectionId": peer.connection_id,
                "id": worker_id,
            }
        )
        self.hooks.worker_attached(worker_id, peer, capacity if isinstance(capacity, dict) else {})

    def _identify_sfu(self, peer: Peer, data: dict[str, Any]) -> None:
        if not peer.trusted:
            self._check_worker_token(data.get("token"))
        # An SFU's id is the room id it serves (docs/PROTOCOL.md section 3).
        room_id = self._live_room(data.get("id", data.get("roomId")), client=False)
        room = self.rooms.setdefault(room_id, RoomPeers())
        if room.sfu is not None:
            raise Conflict(p.DUPLICATE_ID)
        peer.kind, peer.peer_id, peer.room_id = PeerKind.SFU, str(room_id), room_id
        peer.name = "sfu"
        room.sfu = peer
        self._store_identity(peer)
        peer.send(self._identified(peer))
        peer.send(
            {
                "type": "roster",
                "clients": [{"id": c.peer_id, "name": c.name} for c in room.clients.values()],
            }
        )
        self.hooks.sfu_identified(room_id)

    def _identified(self, peer: Peer) -> dict[str, Any]:
        frame: dict[str, Any] = {
            "type": "identified",
            "status": 200,
            "connectionId": peer.connection_id,
            "id": peer.peer_id,
            "roomId": peer.room_id,
        }
        if peer.kind == PeerKind.CLIENT:
            assert peer.room_id is not None
            rules = self.hooks.room(peer.room_id)
            frame["moderator"] = peer.moderator
            frame["locked"] = bool(rules and rules.locked)
            # TURN credentials only for identified clients, named after the connection so
            # coturn's logs tie relayed traffic to it (docs/PROTOCOL.md section 3).
            frame["iceServers"] = ice_servers(self.config.ice, self.clock(), who=peer.connection_id)
        return frame

    def _store_identity(self, peer: Peer) -> None:
        assert peer.kind and peer.peer_id and peer.room_id
        self.store.identify_connection(
            peer.connection_id,
            type=peer.kind,
            peer_id=peer.peer_id,
            room_id=peer.room_id,
            name=peer.name,
            now=self.clock(),
        )

    # -- leave ---------------------------------------------------------------------------------

    def leave(self, peer: Peer, reason: str = "") -> None:
        """Undo identify: tell the room. Idempotent; the connection row stays until close.
        `reason` is for the log line (default: the close reason, else "left")."""
        if peer.kind is None or peer.room_id is None:
            return
        room_id, kind, peer_id = peer.room_id, peer.kind, peer.peer_id
        peer.kind = peer.peer_id = peer.room_id = None
        room = self.rooms.get(room_id)
        if room is None:
            return
        if kind == PeerKind.CLIENT and peer_id is not None and room.clients.get(peer_id) is peer:
            del room.clients[peer_id]
            stayed = self.monotonic() - peer.joined_at if peer.joined_at is not None else 0.0
            why = reason or peer.close_reason or "left"
            log.info("room %d: peer %s left after %.0f s, %s (%d in the room)", room_id, peer_id,
                     stayed, why, len(room.clients),
                     extra={"room": room_id, "peer": peer_id, "participants": len(room.clients),
                            "reason": why, "seconds": round(stayed, 1)})  # fmt: skip
            peer.joined_at = None
            if self.active_speaker.get(room_id) == peer_id:
                del self.active_speaker[room_id]  # newcomers must not be shown a departed one
            self.broadcast(
                room.everyone_but(peer), {"type": "clientDisconnect", "clientId": peer_id}
            )
            self.hooks.occupancy_changed(room_id, len(room.clients))
            if not room.clients and not self.stopping:
                # A room that becomes empty unlocks: nobody is left who could unlock it. (Not
                # when the server stops: the lock must survive a restart.)
                self.hooks.set_locked(room_id, False)
        elif kind == PeerKind.SFU and room.sfu is peer:
            room.sfu = None
            for client in room.clients.values():
                client.offer_sent_at = None  # that SFU will never answer
            self.broadcast(
                list(room.clients.values()), {"type": "sfuDisconnect", "roomId": room_id}
            )
        if not room.clients and room.sfu is None:
            del self.rooms[room_id]
            self.active_speaker.pop(room_id, None)
        if peer.connection_id in self.peers:
            self.store.identify_connection(
                peer.connection_id,
                type=None,
                peer_id=None,
                room_id=None,
                name=None,
                now=None,
            )

    def _evict(self, sfu: Peer, client_id: Any) -> None:
        """An SFU's `disconnect {clientId}`: that client of *its* room lost its media.

        The room is told `clientDisconnect` as for any leave, and the client's socket is closed
        with 4001 so a browser that is still alive reconnects and joins again.
        """
        room = self.require_identified(sfu)
        target = room.clients.get(client_id) if isinstance(client_id, str) else None
        if target is None:
            raise NotFound(p.RECEIVER_NOT_FOUND)
        self.leave(target, "media connection lost")
        target.request_close(CLOSE_MEDIA_LOST, "media connection lost")

    # -- routing -------------------------------------------------------------------------------

    def require_identified(self, peer: Peer) -> RoomPeers:
        if peer.kind is None or peer.room_id is None:
            raise BadRequest(p.NOT_IDENTIFIED)
        return self.rooms[peer.room_id]

    def _handshake(self, peer: Peer, data: dict[str, Any]) -> None:
        room = self.require_identified(peer)
        if data.get("type") not in ("producer", "consumer"):
            raise BadRequest(p.INVALID_HANDSHAKE)
        message = dict(data)
        # Identity comes from identify, never from the message (docs/PROTOCOL.md section 3).
        message["sender"] = peer.peer_id
        message["roomId"] = peer.room_id
        if peer.kind == PeerKind.CLIENT:
            if room.sfu is None:
                raise Unavailable(p.SFU_NOT_CONNECTED)
            offer = data.get("type") == "producer" and _is_offer(data.get("description"))
            now = self.monotonic()
            if (
                offer
                and peer.offer_sent_at is not None
                and now - peer.offer_sent_at < OFFER_IN_FLIGHT_TIMEOUT
            ):
                # One producer offer in flight per client (docs/PROTOCOL.md section 4, Overload).
                raise TooManyRequests(p.OFFER_IN_FLIGHT)
            self._to_sfu(room.sfu, message)
            if offer:
                peer.offer_sent_at = now
        else:
            receiver = data.get("receiver")
            target = room.clients.get(receiver) if isinstance(receiver, str) else None
            if target is None:
                raise NotFound(p.RECEIVER_NOT_FOUND)
            if data.get("type") == "producer":
                target.offer_sent_at = None  # answered (or refused): the next may go
            target.send(message)

    def _to_sfu(self, sfu: Peer, message: dict[str, Any]) -> None:
        """A client's frame for its room SFU, refused past the SFU inbox's high-water mark.

        The inbox itself is bounded and an SFU that stops draining it is restarted; clients
        must never be able to cause that, so their frames stop at half its size and the rest
        stays for the gateway's own notices (joins, departures) (docs/PROTOCOL.md section 4,
        Overload).
        """
        stats = sfu.outbox.statistics()
        if stats.current_buffer_used * 2 >= stats.max_buffer_size:
            self.metrics.sfu_busy.inc()
            raise Unavailable(p.SFU_BUSY)
        sfu.send(message)

    def _chat(self, peer: Peer, data: dict[str, Any]) -> None:
        room = self.require_identified(peer)
        if peer.kind != PeerKind.CLIENT:
            raise BadRequest("Only clients chat")
        content = data.get("content")
        if not isinstance(content, str) or not content.strip() or len(content) > p.MAX_CHAT_CHARS:
            raise BadRequest("Invalid chat content")
        assert peer.room_id is not None and peer.peer_id is not None
        if peer.chat_bucket is not None and not peer.chat_bucket.take(self.monotonic()):
            # Stored and sent to everyone: a chat flood would fill every member's queue.
            raise TooManyRequests(p.TOO_MANY_MESSAGES)
        self._store_chat(room, peer.room_id, peer.peer_id, peer.name, content)

    def _store_chat(
        self, room: RoomPeers, room_id: int, sender: str, name: str, content: str
    ) -> None:
        limits = self.config.limits
        row = self.store.add_chat(
            room_id,
            sender,
            name,
            content,
            self.clock(),
            max_rows=limits.chat_rows_per_room,
            max_bytes=limits.chat_bytes_per_room,
        )
        # The room's SFU hears chat too: it relays it to data-channel users (channel 100).
        self.broadcast(
            [*room.clients.values(), *([room.sfu] if room.sfu else [])],
            {
                "type": "chat",
                "sender": row.sender,
                "name": row.name,
                "content": row.content,
                "ts": row.ts,
            },
        )

    def _features(self, peer: Peer, data: dict[str, Any]) -> None:
        room = self.require_identified(peer)
        if peer.kind != PeerKind.CLIENT:
            raise BadRequest("Only clients have features")
        audio, video = data.get("audio"), data.get("video")
        if not isinstance(audio, bool) or not isinstance(video, bool):
            raise BadRequest("Invalid features")
        peer.features = {"audio": audio, "video": video}
        self.broadcast(
            room.everyone_but(peer),
            {"type": "features", "id": peer.peer_id, "features": peer.features},
        )

    def _preferences(self, peer: Peer, data: dict[str, Any]) -> None:
        """What a subscriber wants of one publisher's video (docs/PROTOCOL.md section 3): relayed
        to the room SFU with `sender` set here, never taken from the frame."""
        room = self.require_identified(peer)
        if peer.kind != PeerKind.CLIENT:
            raise BadRequest("Only clients have preferences")
        publisher, height, paused = (
            data.get("remotePeerId"),
            data.get("maxHeight"),
            data.get("paused"),
        )
        if (
            not isinstance(publisher, str)
            or publisher not in room.clients
            or publisher == peer.peer_id
            or isinstance(height, bool)
            or not isinstance(height, int)
            or not 0 <= height <= p.MAX_VIDEO_HEIGHT
            or not isinstance(paused, bool)
        ):
            raise BadRequest(p.INVALID_PREFERENCES)
        if room.sfu is None:
            raise Unavailable(p.SFU_NOT_CONNECTED)
        self._to_sfu(
            room.sfu,
            {"type": "preferences", "sender": peer.peer_id, "roomId": peer.room_id,
             "remotePeerId": publisher, "maxHeight": height, "paused": paused},
        )  # fmt: skip

    def _room_event(self, peer: Peer, data: dict[str, Any]) -> None:
        """What a room SFU tells the gateway about its room (docs/PROTOCOL.md section 3)."""
        room = self.require_identified(peer)
        if peer.kind != PeerKind.SFU:
            raise Forbidden(p.FORBIDDEN)
        assert peer.room_id is not None
        kind = data.get("type")
        if kind == "mediaUp":
            self.hooks.media_up(peer.room_id)
            client_id = data.get("id")
            client = room.clients.get(client_id) if isinstance(client_id, str) else None
            if client is not None and client.joined_at is not None and not client.media_seen:
                # The first transport of this client that connected: its join is complete.
                client.media_seen = True
                seconds = self.monotonic() - client.joined_at
                self.metrics.join_seconds.observe(seconds)
                log.info("room %d: peer %s media connected %.2f s after joining", peer.room_id,
                         client_id, seconds, extra={"room": peer.room_id, "peer": client_id,
                                                    "join_seconds": round(seconds, 3)})  # fmt: skip
        elif kind == "chat":
            sender = data.get("sender")
            content = data.get("content")
            client = room.clients.get(sender) if isinstance(sender, str) else None
            if client is None or not isinstance(content, str) or not content.strip():
                raise BadRequest("Invalid chat content")
            self._store_chat(room, peer.room_id, sender, client.name, content[: p.MAX_CHAT_CHARS])
        elif kind == "features":
            # A data-channel user's state (channel 110): treated like its `features` frame.
            client_id = data.get("id")
            client = room.clients.get(client_id) if isinstance(client_id, str) else None
            if client is None:
                raise NotFound(p.RECEIVER_NOT_FOUND)
            self._features(
                client, data.get("features") if isinstance(data.get("features"), dict) else {}
            )
        elif kind == "layers":
            # Which of a publisher's simulcast layers anyone watches: the publisher stops
            # encoding the others (docs/PROTOCOL.md section 4, Quality).
            client_id, mid, active = data.get("receiver"), data.get("mid"), data.get("active")
            client = room.clients.get(client_id) if isinstance(client_id, str) else None
            if client is None:
                raise NotFound(p.RECEIVER_NOT_FOUND)
            if (
                not isinstance(mid, str)
                or not isinstance(active, list)
                or not all(isinstance(rid, str) for rid in active)
            ):
                raise BadRequest("Invalid layers")
            client.send({"type": "layers", "mid": mid, "active": active})
        elif kind == "activeSpeaker":
            speaker = data.get("id")
            if not isinstance(speaker, str) or speaker not in room.clients:
                raise NotFound(p.RECEIVER_NOT_FOUND)
            self.active_speaker[peer.room_id] = speaker
            self.broadcast(list(room.clients.values()), {"type": "activeSpeaker", "id": speaker})
        else:
            raise BadRequest("Invalid room event")

    def broadcast(self, peers: list[Peer], message: dict[str, Any]) -> None:
        text = p.encode(message)  # encode once for the whole room
        for target in peers:
            target.send_text(text)


def _is_offer(description: Any) -> bool:
    return isinstance(description, dict) and description.get("type") == "offer"
