"""MediaRoom: the media half of a room SFU (docs/PROTOCOL.md section 4, "producer / consumer connections").

Each participant has one *producer* transport (its browser offered its microphone and camera)
and one *consumer* transport per remote publisher (we offered that publisher's tracks). The
room keeps who publishes what and who subscribes to whom; the Router does the fan-out; the
MediaEndpoint delivers datagrams. Everything here runs on the room's task, except the transport
hooks (`_connected`, `_address_changed`, `_transport_closed`), which the endpoint's task calls
synchronously; they only touch in-memory state.

Decisions where the contract is silent (also in README):
- A second producer offer from the same participant replaces its producer transport and its
  tracks: the old one and every consumer of it are closed, and fresh consumer offers go to
  everyone else (a browser that rebuilt its connection must not leave stale streams behind).
- A second consumer offer for the same (subscriber, publisher) pair replaces the first.
- An offer or answer we cannot use is answered with the handshake type and an `error` object
  `{"status": 400, "message": ...}` instead of a description; the media plane never raises
  for a peer's SDP.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from ..config import Config
from ..errors import MalformedInput
from . import sdp
from .datachannels import RoomDataChannels
from .router import Producer, Router
from .transport import CONSUMER, PRODUCER, WebRtcTransport

if TYPE_CHECKING:
    from .endpoint import MediaEndpoint
    from .room import RoomSFU

log = logging.getLogger(__name__)


@dataclass
class Publisher:
    transport: WebRtcTransport
    tracks: list[sdp.Track]
    producers: list[Producer] = field(default_factory=list)


class MediaRoom:
    """Publishers, subscriptions and the Router of one room. `close()` is idempotent."""

    def __init__(
        self, room_id: int, sfu: RoomSFU, endpoint: MediaEndpoint, config: Config
    ) -> None:
        self.room_id = room_id
        self.sfu = sfu
        self.endpoint = endpoint
        self.config = config
        self.router = Router(endpoint.send, endpoint.counters)
        endpoint.routers.add(self.router)
        endpoint.rooms[room_id] = self
        self.publishers: dict[str, Publisher] = {}
        # (subscriber id, publisher id) -> the subscriber's consumer transport for that publisher
        self.subscriptions: dict[tuple[str, str], WebRtcTransport] = {}
        self._session_id = secrets.randbits(62)
        self._version = 0
        self.closed = False
        self.datachannels = RoomDataChannels(self)  # SCTP on producer transports (issue 11)

    # -- MediaHandler --------------------------------------------------------------------------

    async def on_handshake(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        sender = message.get("sender")
        description = message.get("description")
        if not isinstance(sender, str) or not isinstance(description, dict):
            return  # a `candidate`: ICE-lite learns the address from STUN instead
        sdp_text = description.get("sdp")
        sdp_type = description.get("type")
        if not isinstance(sdp_text, str):
            await self._reject(sender, str(kind), None, "Invalid description")
            return
        if kind == "producer" and sdp_type == "offer":
            await self._producer_offer(sender, sdp_text)
        elif kind == "consumer" and sdp_type == "answer":
            publisher = message.get("remotePeerId")
            if isinstance(publisher, str):
                await self._consumer_answer(sender, publisher, sdp_text)
        else:
            await self._reject(sender, str(kind), message.get("remotePeerId"),
                               f"Unexpected {kind} {sdp_type}")  # fmt: skip

    async def on_client_join(self, client_id: str) -> None:
        """A newcomer is offered every existing publisher's tracks (docs/PROTOCOL.md section 4)."""
        for publisher_id in list(self.publishers):
            if publisher_id != client_id:
                await self._offer(client_id, publisher_id)
        self.datachannels.on_features(client_id)

    async def on_chat(self, message: dict[str, Any]) -> None:
        """A gateway `chat` frame: data channel users hear it on channel 100."""
        self.datachannels.on_chat(message)

    async def on_features(self, client_id: str) -> None:
        """A gateway `features` frame changed `client_id`'s state: channel 110 hears it."""
        self.datachannels.on_features(client_id)

    async def on_client_disconnect(self, client_id: str) -> None:
        """Close the participant's producer (and so every consumer of it) and its consumers."""
        publisher = self.publishers.pop(client_id, None)
        if publisher is not None:
            publisher.transport.close()
        for (subscriber, publisher_id), transport in list(self.subscriptions.items()):
            if client_id in (subscriber, publisher_id):
                transport.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for publisher in list(self.publishers.values()):
            publisher.transport.close()
        for transport in list(self.subscriptions.values()):
            transport.close()
        self.router.close()
        self.endpoint.routers.discard(self.router)
        if self.endpoint.rooms.get(self.room_id) is self:
            del self.endpoint.rooms[self.room_id]

    def transport_count(self) -> int:
        return len(self.router.transports)

    # -- producer ------------------------------------------------------------------------------

    async def _producer_offer(self, sender: str, sdp_text: str) -> None:
        now = trio.current_time()
        try:
            offer = sdp.parse_offer_untrusted(sdp_text)
        except MalformedInput as exc:
            await self._reject(sender, "producer", None, f"Invalid offer: {exc.message}")
            return
        old = self.publishers.pop(sender, None)
        if old is not None:
            old.transport.close()
        transport = self._transport(PRODUCER, sender, None)
        try:
            answer, tracks = sdp.build_producer_answer(
                offer, self._local(transport), video_codec=self.config.media.video_codec
            )
        except MalformedInput as exc:
            transport.close()
            await self._reject(sender, "producer", None, f"Invalid offer: {exc.message}")
            return
        remote = offer.remote
        application = sdp.application_section(offer)
        if application is not None:
            self.datachannels.attach(transport, application)
        transport.set_remote(remote.ice_ufrag, remote.ice_pwd, remote.fingerprints, now)
        # Tracks without a signalled SSRC cannot be routed without rewriting: not forwarded.
        tracks = [t for t in tracks if t.ssrc is not None]
        publisher = Publisher(transport, tracks)
        for track in tracks:
            assert track.ssrc is not None
            publisher.producers.append(
                self.router.create_producer(transport, track.kind, track.ssrc, track.rtx_ssrc)
            )
        self.publishers[sender] = publisher
        await self.sfu.send(
            "handshake",
            {
                "type": "producer",
                "receiver": sender,
                "roomId": self.room_id,
                "description": {"type": "answer", "sdp": answer},
            },
        )
        for member in list(self.sfu.participants):
            if member != sender:
                await self._offer(member, sender)

    # -- consumer ------------------------------------------------------------------------------

    async def _offer(self, subscriber: str, publisher_id: str) -> None:
        publisher = self.publishers.get(publisher_id)
        if publisher is None or not publisher.tracks or publisher.transport.closed:
            return
        old = self.subscriptions.pop((subscriber, publisher_id), None)
        if old is not None:
            old.close()
        transport = self._transport(CONSUMER, subscriber, publisher_id)
        for producer in publisher.producers:
            self.router.create_consumer(producer, transport)
        self._version += 1
        offer = sdp.build_consumer_offer(
            publisher.tracks,
            self._local(transport),
            session_id=self._session_id,
            version=self._version,
        )
        self.subscriptions[(subscriber, publisher_id)] = transport
        await self.sfu.send(
            "handshake",
            {
                "type": "consumer",
                "receiver": subscriber,
                "remotePeerId": publisher_id,
                "roomId": self.room_id,
                "description": {"type": "offer", "sdp": offer},
            },
        )

    async def _consumer_answer(self, sender: str, publisher_id: str, sdp_text: str) -> None:
        transport = self.subscriptions.get((sender, publisher_id))
        if transport is None:
            await self._reject(sender, "consumer", publisher_id, "No consumer offer pending")
            return
        try:
            remote = sdp.parse_answer_untrusted(sdp_text).remote
        except MalformedInput as exc:
            await self._reject(sender, "consumer", publisher_id, f"Invalid answer: {exc.message}")
            return
        transport.set_remote(
            remote.ice_ufrag, remote.ice_pwd, remote.fingerprints, trio.current_time()
        )

    # -- transports ----------------------------------------------------------------------------

    def _transport(self, role: str, owner: str, publisher: str | None) -> WebRtcTransport:
        transport = WebRtcTransport(
            role=role,
            owner=owner,
            publisher=publisher,
            certificate=self.endpoint.certificate,
            send=self.endpoint.send,
            now=trio.current_time(),
            consent_timeout=self.config.media.consent_timeout,
        )
        transport.router = self.router
        transport.on_connected = self._connected
        transport.on_address_change = self._address_changed
        self.router.add_transport(transport)
        self.endpoint.register(transport)
        transport.on_close.append(self._transport_closed)
        return transport

    def _local(self, transport: WebRtcTransport) -> sdp.LocalParams:
        return sdp.LocalParams(
            ice_ufrag=transport.ice.ufrag,
            ice_pwd=transport.ice.pwd,
            fingerprint=self.endpoint.certificate.fingerprint("sha-256"),
            candidates=self.endpoint.candidates(),
        )

    def _connected(self, transport: WebRtcTransport) -> None:
        # The gateway counts a room as joined once someone's media connected: a room claimed
        # and never joined closes after rooms.unjoined_timeout instead of the hour.
        self.sfu.notify("room", {"type": "mediaUp", "id": transport.owner})
        if transport.role != CONSUMER:
            return
        now = trio.current_time()
        for producer in {c.producer for c in transport.consumers.values()}:
            producer.rebuild_targets()
            # A new subscriber needs a keyframe to start decoding (docs/PROTOCOL.md section 4).
            self.router.request_keyframe(producer, now, force=True)
        if transport.publisher is not None:
            self.datachannels.on_consumer_connected(transport.owner, transport.publisher)

    def _address_changed(self, transport: WebRtcTransport, old: tuple[str, int] | None) -> None:
        if transport.role == CONSUMER:
            for producer in {c.producer for c in transport.consumers.values()}:
                producer.rebuild_targets()

    def _transport_closed(self, transport: WebRtcTransport) -> None:
        if transport.role == PRODUCER:
            publisher = self.publishers.get(transport.owner)
            if publisher is not None and publisher.transport is transport:
                del self.publishers[transport.owner]
                if transport.close_reason in ("consent", "peer_closed") and not self.closed:
                    # Its media stopped (lid closed, network gone) or its browser closed the
                    # connection without leaving: evict it so the room is told and a browser
                    # still alive rejoins (README). A replaced producer is closed by us first.
                    self.sfu.notify("disconnect", {"clientId": transport.owner})
            # Its subscribers' consumer transports carry nothing any more.
            for key, sub in list(self.subscriptions.items()):
                if key[1] == transport.owner and not sub.consumers:
                    sub.close()
        else:
            key = (transport.owner, transport.publisher or "")
            if self.subscriptions.get(key) is transport:
                del self.subscriptions[key]

    async def _reject(
        self, receiver: str, kind: str, remote_peer: Any, message: str
    ) -> None:
        self.endpoint.counters["sdp_rejected"] += 1
        log.info("room %d: %s from %s rejected: %s", self.room_id, kind, receiver, message)
        frame: dict[str, Any] = {
            "type": kind,
            "receiver": receiver,
            "roomId": self.room_id,
            "error": {"status": 400, "message": message},
        }
        if isinstance(remote_peer, str):
            frame["remotePeerId"] = remote_peer
        await self.sfu.send("handshake", frame)


async def run_media_room(
    room_id: int, link: Any, *, endpoint: MediaEndpoint, config: Config
) -> None:
    """The SFU factory of `arbiter serve`: the signaling peer with the media plane behind it."""
    from .room import RoomSFU

    sfu = RoomSFU(room_id, link)
    media = MediaRoom(room_id, sfu, endpoint, config)
    sfu.media = media
    try:
        await sfu.run()
    finally:
        media.close()  # synchronous: runs even while cancelled
