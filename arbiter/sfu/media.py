"""MediaRoom: the media half of a room SFU (docs/PROTOCOL.md section 4, "producer / consumer connections").

Each participant has one *producer* transport (its browser offered its microphone and camera)
and one *consumer* transport per remote publisher (we offered that publisher's tracks). The
room keeps who publishes what and who subscribes to whom; the Router does the fan-out; the
MediaEndpoint delivers datagrams. Everything here runs on the room's task, except the Router's
listener calls (`transport_connected`, `transport_closed`), which reach it synchronously from
the endpoint's task; they only touch in-memory state.

Renegotiation (docs/PROTOCOL.md section 4; issue 11). Browsers re-offer on every
`negotiationneeded`, so a connection, once made, is renegotiated and never replaced:
- A producer offer from a participant that already publishes renegotiates its producer
  connection. The same peer connection (its DTLS fingerprint) with the same ICE credentials:
  same transport, same answer credentials, tracks added, kept or removed by mid (a track whose
  mid, kind and SSRCs are unchanged keeps its Producer, so its consumers are untouched). New
  ICE credentials: an ICE restart of the same transport (new SFU credentials, DTLS and SRTP
  kept). Another fingerprint means the browser built a new peer connection: a new producer
  transport takes over the publisher's tracks and the old one is closed (no eviction).
- When a publisher's tracks change, each of its subscribers gets a re-offer on its existing
  consumer connection (same transport and credentials): m-sections are only appended or marked
  inactive, never removed or reordered (RFC 8829 section 5.2.2).
- A consumer answer from the same peer connection is applied to the same transport; one from a
  new peer connection (a client that rebuilds its connection for every offer) gets a new
  transport with the credentials of the offer it answered.
- Subscribers may renegotiate their consumer connections themselves (a consumer `offer`, e.g.
  after `pc.restartIce()`), or ask the SFU to offer new ICE credentials (`restartIce: true`).
- An offer or answer we cannot use is answered with the handshake type and an `error` object
  `{"status": 400, "message": ...}` instead of a description; the media plane never raises
  for a peer's SDP, and a refused renegotiation leaves the connection as it was.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import trio

from ..config import Config
from ..errors import MalformedInput
from . import sdp
from .datachannels import RoomDataChannels
from .ice import random_pwd, random_ufrag
from .producer import Producer
from .simulcast import SimulcastTrack, new_ssrcs
from .transport import CONSUMER, PRODUCER, CloseReason, WebRtcTransport

if TYPE_CHECKING:
    from .media_worker import MediaWorker
    from .room import RoomSFU

log = logging.getLogger(__name__)

# A consumer connection never has more m-sections than an SDP we parse may have: a publisher
# that keeps adding tracks under new mids past this is not offered the extra ones
# (counted `consumer_sections_full`).
MAX_CONSUMER_SECTIONS = sdp.MAX_SECTIONS
MAX_PREFERENCES = 4096  # (subscriber, publisher) pairs remembered per room; room limits are far below


@dataclass
class Publisher:
    """One participant's producer connection and the tracks its last answered offer sends."""

    transport: WebRtcTransport
    tracks: list[sdp.Track] = field(default_factory=list)
    producers: dict[str, Producer | SimulcastTrack] = field(default_factory=dict)  # by mid
    session_id: int = field(default_factory=lambda: secrets.randbits(62))
    version: int = 0  # o= version of our last answer


@dataclass
class Subscription:
    """One consumer connection: what the SFU offered a subscriber of one publisher's tracks."""

    transport: WebRtcTransport
    sections: list[sdp.Track] = field(default_factory=list)  # every m-section offered, in order
    inactive: set[str] = field(default_factory=set)  # mids whose track the publisher stopped
    session_id: int = field(default_factory=lambda: secrets.randbits(62))
    version: int = 0  # o= version of our last offer or answer
    unanswered: int = 0  # our offers the subscriber has not answered yet
    fresh: set[Producer | SimulcastTrack] = field(default_factory=set)  # keyframe once answered
    ssrcs: dict[str, tuple[int, int]] = field(default_factory=dict)  # simulcast mid -> ours


def _ext(track: sdp.Track, uri: str) -> int:
    """The id the track's publisher gave header extension `uri` (RFC 8285), 0 when none."""
    return next((i for i, u in track.header_extensions if u == uri), 0)


def _identity(producer: Producer | SimulcastTrack) -> tuple[Any, ...]:
    """What a track must keep across a renegotiation to keep its Producer (and consumers)."""
    if isinstance(producer, SimulcastTrack):
        return ("video", None, None, producer.rids)
    return (producer.kind, producer.ssrc, producer.rtx_ssrc, ())


def _same_peer(transport: WebRtcTransport, fingerprints: list[tuple[str, str]]) -> bool:
    """The remote SDP comes from the peer connection this transport negotiated with: its DTLS
    certificate (RFC 8122 fingerprint) is per peer connection in every browser and aiortc."""
    return bool(set(fingerprints) & set(transport.remote_fingerprints))


class MediaRoom:
    """Publishers, subscriptions and the Router of one room. `close()` is idempotent."""

    def __init__(
        self, room_id: int, sfu: RoomSFU, worker: MediaWorker, config: Config
    ) -> None:
        self.room_id = room_id
        self.sfu = sfu
        self.worker = worker
        self.endpoint = worker.endpoint
        self.config = config
        self.router = worker.create_router()
        self.router.listener = self
        worker.add_room(self)
        self.publishers: dict[str, Publisher] = {}
        # (subscriber id, publisher id) -> the subscriber's consumer connection for that publisher
        self.subscriptions: dict[tuple[str, str], Subscription] = {}
        # (subscriber, publisher) -> (maxHeight, paused): the `preferences` action
        self.preferences: dict[tuple[str, str], tuple[int, bool]] = {}
        self.closed = False
        self.datachannels = RoomDataChannels(self)  # SCTP on producer transports (issue 11)

    # -- MediaHandler --------------------------------------------------------------------------

    async def on_handshake(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        sender = message.get("sender")
        description = message.get("description")
        publisher = message.get("remotePeerId")
        if not isinstance(sender, str):
            return
        if not isinstance(description, dict):
            if kind == "consumer" and message.get("restartIce") is True:
                if isinstance(publisher, str):
                    await self._restart_consumer_ice(sender, publisher)
            return  # a `candidate`: ICE-lite learns the address from STUN instead
        sdp_text = description.get("sdp")
        sdp_type = description.get("type")
        if not isinstance(sdp_text, str):
            await self._reject(sender, str(kind), None, "Invalid description")
            return
        if kind == "producer" and sdp_type == "offer":
            await self._producer_offer(sender, sdp_text)
        elif kind == "consumer" and sdp_type in ("answer", "offer"):
            if isinstance(publisher, str):
                if sdp_type == "answer":
                    await self._consumer_answer(sender, publisher, sdp_text)
                else:
                    await self._consumer_offer(sender, publisher, sdp_text)
        else:
            await self._reject(sender, str(kind), publisher, f"Unexpected {kind} {sdp_type}")

    async def on_client_join(self, client_id: str) -> None:
        """A newcomer is offered every existing publisher's tracks (docs/PROTOCOL.md section 4)."""
        for publisher_id in list(self.publishers):
            if publisher_id != client_id:
                await self._sync(client_id, publisher_id)
        self.datachannels.on_features(client_id)

    async def on_chat(self, message: dict[str, Any]) -> None:
        """A gateway `chat` frame: data channel users hear it on channel 100."""
        self.datachannels.on_chat(message)

    async def on_features(self, client_id: str) -> None:
        """A gateway `features` frame changed `client_id`'s state: channel 110 hears it."""
        self.datachannels.on_features(client_id)

    async def on_preferences(
        self, subscriber: str, publisher: str, max_height: int, paused: bool
    ) -> None:
        """What `subscriber` wants of `publisher`'s video (docs/PROTOCOL.md section 4,
        Quality): kept for its consumer connection, now and when it is made later."""
        if len(self.preferences) >= MAX_PREFERENCES and (subscriber, publisher) not in self.preferences:
            return
        self.preferences[(subscriber, publisher)] = (max_height, paused)
        subscription = self.subscriptions.get((subscriber, publisher))
        if subscription is not None:
            self.router.set_preferences(subscription.transport, max_height, paused, trio.current_time())

    async def on_client_disconnect(self, client_id: str) -> None:
        """Close the participant's producer (and so every consumer of it) and its consumers."""
        publisher = self.publishers.pop(client_id, None)
        if publisher is not None:
            publisher.transport.close()
        for key, subscription in list(self.subscriptions.items()):
            if client_id in key:
                self.subscriptions.pop(key, None)
                subscription.transport.close()
        for key in [k for k in self.preferences if client_id in k]:
            del self.preferences[key]

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for publisher in list(self.publishers.values()):
            publisher.transport.close()
        for subscription in list(self.subscriptions.values()):
            subscription.transport.close()
        self.router.close()
        self.worker.remove_room(self)

    def transport_count(self) -> int:
        return len(self.router.transports)

    # -- producer ------------------------------------------------------------------------------

    async def _producer_offer(self, sender: str, sdp_text: str) -> None:
        """A first offer makes the producer connection; a later one renegotiates it."""
        now = trio.current_time()
        try:
            offer = sdp.parse_offer_untrusted(sdp_text)
        except MalformedInput as exc:
            await self._reject(sender, "producer", None, f"Invalid offer: {exc.message}")
            return
        remote = offer.remote
        publisher = self.publishers.get(sender)
        if publisher is not None and publisher.transport.closed:
            publisher = None  # its transport died and the hook already dropped it
        current = publisher.transport if publisher is not None else None
        # What this offer is: the first (new transport), the same peer connection (same
        # transport; an ICE restart when its credentials changed) or a rebuilt one.
        rebuilt = current is not None and not _same_peer(current, remote.fingerprints)
        restart = (
            current is not None
            and not rebuilt
            and (remote.ice_ufrag, remote.ice_pwd)
            != (current.ice.remote_ufrag, current.ice.remote_pwd)
        )
        transport = current
        if current is None or rebuilt:
            transport = self._transport(PRODUCER, sender, None)
        assert transport is not None
        local = self._local(transport)
        if restart:
            local = sdp.LocalParams(
                random_ufrag(), random_pwd(), local.fingerprint, local.candidates
            )
        previous = {t.mid: t for t in publisher.tracks} if publisher is not None else {}
        version = publisher.version + 1 if publisher is not None else 1
        session_id = publisher.session_id if publisher is not None else secrets.randbits(62)
        try:
            answer, tracks = sdp.build_producer_answer(
                offer,
                local,
                video_codec=self.config.media.video_codec,
                session_id=session_id,
                version=version,
                previous=previous,
                transport_cc=True,
            )
        except MalformedInput as exc:
            if transport is not current:
                transport.close()
            await self._reject(sender, "producer", None, f"Invalid offer: {exc.message}")
            return
        if publisher is None:
            publisher = Publisher(transport, session_id=session_id)
            self.publishers[sender] = publisher
        publisher.version = version
        application = sdp.application_section(offer)
        if application is not None and transport.datachannels is None:
            self.datachannels.attach(transport, application)
        if publisher.transport is not transport:
            # A rebuilt peer connection: the new transport takes over, the old one goes (its
            # producers and their consumers with it; `transport_closed` evicts no one).
            old, publisher.transport = publisher.transport, transport
            publisher.producers = {}
            old.close(CloseReason.REPLACED)
        if restart:
            old_ufrag = transport.restart_ice(
                now,
                ufrag=local.ice_ufrag,
                pwd=local.ice_pwd,
                remote_ufrag=remote.ice_ufrag,
                remote_pwd=remote.ice_pwd,
            )
            self.endpoint.rekey(transport, old_ufrag)
        elif transport.dtls is None:
            transport.set_remote(remote.ice_ufrag, remote.ice_pwd, remote.fingerprints, now)
        self._set_tracks(publisher, tracks)
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
                await self._sync(member, sender)

    def _set_tracks(self, publisher: Publisher, tracks: list[sdp.Track]) -> None:
        """Producers follow the answered tracks by mid: an unchanged track (kind, SSRCs) keeps
        its Producer and so its consumers; a removed or changed one is closed."""
        kept: list[sdp.Track] = []
        ssrcs: set[int] = set()
        for track in tracks:
            # Tracks without a signalled SSRC cannot be routed without rewriting: not forwarded;
            # nor can two tracks claiming one SSRC (the first one keeps it).
            own = {s for s in (track.ssrc, track.rtx_ssrc) if s is not None}
            if (track.ssrc is None and not track.rids) or own & ssrcs:
                continue
            ssrcs |= own
            kept.append(track)
        by_mid = {t.mid: t for t in kept}
        for mid, producer in list(publisher.producers.items()):
            track = by_mid.get(mid)
            if (
                producer.closed
                or track is None
                or (track.kind, track.ssrc, track.rtx_ssrc, track.rids) != _identity(producer)
            ):
                self.router.remove_producer(producer)
                del publisher.producers[mid]
        for track in kept:
            twcc_ext = _ext(track, sdp.URI_TRANSPORT_CC)
            if twcc_ext:
                self.router.enable_transport_cc(publisher.transport)
            if track.mid not in publisher.producers:
                publisher.producers[track.mid] = self._make_producer(publisher, track, twcc_ext)
            if track.kind == "audio":  # its levels feed the dominant speaker detection
                publisher.producers[track.mid].level_ext = next(
                    (i for i, uri in track.header_extensions if uri == sdp.URI_AUDIO_LEVEL), 0
                )
        publisher.tracks = kept

    def _make_producer(
        self, publisher: Publisher, track: sdp.Track, twcc_ext: int
    ) -> Producer | SimulcastTrack:
        if track.rids:
            rtx = [c.payload_type for c in track.codecs[1:] if c.name == "rtx"]
            return self.router.create_simulcast(
                publisher.transport, track.mid, track.rids, mid_ext=_ext(track, sdp.URI_MID),
                rid_ext=_ext(track, sdp.URI_RID), rrid_ext=_ext(track, sdp.URI_REPAIRED_RID),
                codec=track.codecs[0].name, rtx_pt=rtx[0] if rtx else None, twcc_ext=twcc_ext,
            )  # fmt: skip
        assert track.ssrc is not None
        producer = self.router.create_producer(
            publisher.transport, track.kind, track.ssrc, track.rtx_ssrc
        )
        producer.twcc_ext = twcc_ext
        return producer

    def _consumer_track(self, subscription: Subscription, track: sdp.Track) -> sdp.Track:
        """The track as this subscriber is offered it: a simulcast track as ONE stream on SSRCs
        of ours (docs/PROTOCOL.md section 4, Quality), anything else as the publisher sends it."""
        if not track.rids:
            return track
        ssrcs = subscription.ssrcs.get(track.mid)
        if ssrcs is None:
            ssrcs = subscription.ssrcs[track.mid] = new_ssrcs(set())
        has_rtx = any(c.name == "rtx" for c in track.codecs)
        return replace(track, ssrc=ssrcs[0], rtx_ssrc=ssrcs[1] if has_rtx else None, rids=())

    # -- consumer ------------------------------------------------------------------------------

    async def _sync(self, subscriber: str, publisher_id: str) -> None:
        """Bring `subscriber`'s consumer connection for `publisher_id` up to date: make it (an
        offer) if there is none, else re-offer on it when the publisher's tracks changed."""
        publisher = self.publishers.get(publisher_id)
        if publisher is None or publisher.transport.closed:
            return
        key = (subscriber, publisher_id)
        subscription = self.subscriptions.get(key)
        if subscription is not None and subscription.transport.closed:
            del self.subscriptions[key]  # a rebuilt pc never answered: start over
            subscription = None
        if subscription is None:
            if not publisher.tracks:
                return  # a publisher without forwardable tracks is offered to nobody
            transport = self._transport(CONSUMER, subscriber, publisher_id)
            subscription = self.subscriptions[key] = Subscription(transport)
            subscription.sections = [
                self._consumer_track(subscription, t)
                for t in publisher.tracks[:MAX_CONSUMER_SECTIONS]
            ]
            self._attach(subscription, publisher)
            await self._send_offer(subscriber, publisher_id, subscription)
            return
        sections = list(subscription.sections)
        inactive: set[str] = set()
        by_mid = {t.mid: t for t in publisher.tracks}
        for index, section in enumerate(sections):
            track = by_mid.get(section.mid)
            if track is None or track.kind != section.kind:
                inactive.add(section.mid)  # keeps its place, codecs and mid (RFC 8829 5.2.2)
            else:
                sections[index] = self._consumer_track(subscription, track)
        offered = {s.mid for s in sections}
        for track in publisher.tracks:
            if track.mid in offered:
                continue
            if len(sections) >= MAX_CONSUMER_SECTIONS:
                self.endpoint.counters["consumer_sections_full"] += 1
                continue
            sections.append(self._consumer_track(subscription, track))
        changed = sections != subscription.sections or inactive != subscription.inactive
        subscription.sections, subscription.inactive = sections, inactive
        fresh = self._attach(subscription, publisher)
        if changed:
            await self._send_offer(subscriber, publisher_id, subscription)
        elif fresh and subscription.transport.connected:
            # Same tracks on new Producers (a rebuilt publisher connection): no re-offer, but
            # the subscriber needs a keyframe of each.
            now = trio.current_time()
            for producer in fresh:
                self.router.request_keyframe(producer, now, force=True)

    def _attach(self, subscription: Subscription, publisher: Publisher) -> set[Producer]:
        """A Consumer on the subscription's transport for every active section's Producer that
        has none yet; returns those Producers (they wait for a keyframe)."""
        transport = subscription.transport
        fresh: set[Producer | SimulcastTrack] = set()
        for section in subscription.sections:
            producer = publisher.producers.get(section.mid)
            if producer is None or section.mid in subscription.inactive:
                continue
            if any(uri == sdp.URI_TRANSPORT_CC for _, uri in section.header_extensions):
                self.router.enable_transport_cc(transport)  # offered: we stamp our numbers
            assert section.ssrc is not None
            consumer = self.router.consumers_of(transport).get(section.ssrc)
            if consumer is not None and consumer.producer is producer:
                continue
            if isinstance(producer, SimulcastTrack):
                self.router.create_simulcast_consumer(
                    producer, transport, section.ssrc, section.rtx_ssrc
                )
            else:
                self.router.create_consumer(producer, transport)
            fresh.add(producer)
        preference = self.preferences.get((transport.owner, transport.publisher or ""))
        if fresh and preference is not None:
            self.router.set_preferences(transport, *preference, trio.current_time())
        subscription.fresh |= fresh
        return fresh

    async def _send_offer(
        self, subscriber: str, publisher_id: str, subscription: Subscription
    ) -> None:
        subscription.version += 1
        subscription.unanswered += 1
        offer = sdp.build_consumer_offer(
            subscription.sections,
            self._local(subscription.transport),
            session_id=subscription.session_id,
            version=subscription.version,
            inactive=subscription.inactive,
        )
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
        key = (sender, publisher_id)
        subscription = self.subscriptions.get(key)
        if subscription is None or subscription.unanswered <= 0:
            await self._reject(sender, "consumer", publisher_id, "No consumer offer pending")
            return
        try:
            remote = sdp.parse_answer_untrusted(sdp_text).remote
        except MalformedInput as exc:
            await self._reject(sender, "consumer", publisher_id, f"Invalid answer: {exc.message}")
            return
        subscription.unanswered -= 1
        now = trio.current_time()
        transport = subscription.transport
        if transport.dtls is not None and (
            transport.closed or not _same_peer(transport, remote.fingerprints)
        ):
            # The subscriber answered our offer from a new peer connection (it rebuilds its
            # connection for every offer): a new transport with the credentials it answered.
            transport = self._replace_consumer_transport(key, subscription)
        if transport.dtls is None:
            transport.set_remote(remote.ice_ufrag, remote.ice_pwd, remote.fingerprints, now)
        elif (remote.ice_ufrag, remote.ice_pwd) != (
            transport.ice.remote_ufrag,
            transport.ice.remote_pwd,
        ):
            # Its side of an ICE restart we offered (or one it made on its own): checks with
            # its new credentials are the ones that count from now on.
            transport.ice.set_remote(remote.ice_ufrag, remote.ice_pwd)
        if subscription.unanswered == 0 and subscription.fresh:
            fresh, subscription.fresh = subscription.fresh, set()
            if transport.connected:
                # New tracks on a connected transport: the subscriber can decode them now.
                for producer in fresh:
                    self.router.request_keyframe(producer, now, force=True)

    def _replace_consumer_transport(
        self, key: tuple[str, str], subscription: Subscription
    ) -> WebRtcTransport:
        old = subscription.transport
        transport = self._transport(
            CONSUMER, key[0], key[1], ice_ufrag=old.ice.ufrag, ice_pwd=old.ice.pwd
        )
        subscription.transport = transport
        subscription.fresh = set()
        old.close(CloseReason.REPLACED)
        publisher = self.publishers.get(key[1])
        if publisher is not None:
            self._attach(subscription, publisher)
        return transport

    async def _consumer_offer(self, sender: str, publisher_id: str, sdp_text: str) -> None:
        """The subscriber renegotiates its consumer connection (e.g. `pc.restartIce()`): the
        SFU answers for the same transport; new ICE credentials restart ICE on it."""
        subscription = self.subscriptions.get((sender, publisher_id))
        if subscription is None or subscription.transport.closed:
            await self._reject(sender, "consumer", publisher_id, "No consumer connection")
            return
        if subscription.unanswered:
            # Glare (RFC 8829 section 4.1.8.1): the SFU's offer is on its way; the subscriber
            # answers it first and offers again afterwards if it still needs to.
            await self._reject(sender, "consumer", publisher_id, "Consumer offer pending")
            return
        transport = subscription.transport
        try:
            offer = sdp.parse_offer_untrusted(sdp_text)
            if transport.dtls is None or not _same_peer(transport, offer.remote.fingerprints):
                raise MalformedInput("SDP: not the peer connection of this consumer connection")
            remote = offer.remote
            restart = (remote.ice_ufrag, remote.ice_pwd) != (
                transport.ice.remote_ufrag,
                transport.ice.remote_pwd,
            )
            local = self._local(transport)
            if restart:
                local = sdp.LocalParams(
                    random_ufrag(), random_pwd(), local.fingerprint, local.candidates
                )
            answer = sdp.build_consumer_answer(
                offer,
                subscription.sections,
                local,
                session_id=subscription.session_id,
                version=subscription.version + 1,
                inactive=subscription.inactive,
            )
        except MalformedInput as exc:
            await self._reject(sender, "consumer", publisher_id, f"Invalid offer: {exc.message}")
            return
        subscription.version += 1
        if restart:
            old_ufrag = transport.restart_ice(
                trio.current_time(),
                ufrag=local.ice_ufrag,
                pwd=local.ice_pwd,
                remote_ufrag=remote.ice_ufrag,
                remote_pwd=remote.ice_pwd,
            )
            self.endpoint.rekey(transport, old_ufrag)
        await self.sfu.send(
            "handshake",
            {
                "type": "consumer",
                "receiver": sender,
                "remotePeerId": publisher_id,
                "roomId": self.room_id,
                "description": {"type": "answer", "sdp": answer},
            },
        )

    async def _restart_consumer_ice(self, sender: str, publisher_id: str) -> None:
        """`{"type":"consumer","remotePeerId":P,"restartIce":true}`: the SFU re-offers on that
        consumer connection with new ICE credentials (RFC 8445 section 9)."""
        subscription = self.subscriptions.get((sender, publisher_id))
        if subscription is None or subscription.transport.closed:
            await self._reject(sender, "consumer", publisher_id, "No consumer connection")
            return
        transport = subscription.transport
        old_ufrag = transport.restart_ice(trio.current_time())
        self.endpoint.rekey(transport, old_ufrag)
        await self._send_offer(sender, publisher_id, subscription)

    # -- transports ----------------------------------------------------------------------------

    def _transport(
        self,
        role: str,
        owner: str,
        publisher: str | None,
        *,
        ice_ufrag: str | None = None,
        ice_pwd: str | None = None,
    ) -> WebRtcTransport:
        transport = self.router.create_transport(
            role=role,
            owner=owner,
            publisher=publisher,
            certificate=self.endpoint.certificate,
            now=trio.current_time(),
            consent_timeout=self.config.media.consent_timeout,
            ice_ufrag=ice_ufrag,
            ice_pwd=ice_pwd,
        )
        self.endpoint.register(transport)
        return transport

    def _local(self, transport: WebRtcTransport) -> sdp.LocalParams:
        return sdp.LocalParams(
            ice_ufrag=transport.ice.ufrag,
            ice_pwd=transport.ice.pwd,
            fingerprint=self.endpoint.certificate.fingerprint("sha-256"),
            candidates=self.endpoint.candidates(),
        )

    # -- RouterListener (the Router has already retargeted and closed what it owns) ------------

    def transport_connected(self, transport: WebRtcTransport) -> None:
        # The gateway counts a room as joined once someone's media connected: a room claimed
        # and never joined closes after rooms.unjoined_timeout instead of the hour.
        self.sfu.notify("room", {"type": "mediaUp", "id": transport.owner})
        if transport.role != CONSUMER:
            return
        now = trio.current_time()
        for producer in {c.producer for c in self.router.consumers_of(transport).values()}:
            # A new subscriber needs a keyframe to start decoding (docs/PROTOCOL.md section 4).
            self.router.request_keyframe(producer, now, force=True)
        if transport.publisher is not None:
            self.datachannels.on_consumer_connected(transport.owner, transport.publisher)

    def layers_wanted(self, track: SimulcastTrack, rids: tuple[str, ...] | None) -> None:
        """The layers of a publisher's simulcast track some subscriber gets changed: the
        publisher encodes only those (docs/PROTOCOL.md section 4, Quality)."""
        if rids is not None and not track.transport.closed:
            self.sfu.notify(
                "room",
                {"type": "layers", "receiver": track.transport.owner, "mid": track.mid,
                 "active": list(rids)},
            )  # fmt: skip

    def active_speaker(self, publisher: str) -> None:
        """The Router's dominant speaker changed (speaker.py): every client hears it."""
        self.sfu.notify("room", {"type": "activeSpeaker", "id": publisher})

    def transport_closed(self, transport: WebRtcTransport) -> None:
        if transport.role == PRODUCER:
            publisher = self.publishers.get(transport.owner)
            if publisher is None or publisher.transport is not transport:
                return  # replaced by a rebuilt peer connection's transport, or already gone
            del self.publishers[transport.owner]
            if transport.close_reason in (CloseReason.CONSENT, CloseReason.PEER_CLOSED) and not self.closed:
                # Its media stopped (lid closed, network gone) or its browser closed the
                # connection without leaving: evict it so the room is told and a browser
                # still alive rejoins (README).
                self.sfu.notify("disconnect", {"clientId": transport.owner})
            # Its subscribers' consumer connections carry nothing any more.
            for key, subscription in list(self.subscriptions.items()):
                if key[1] == transport.owner:
                    subscription.transport.close()
        else:
            key = (transport.owner, transport.publisher or "")
            subscription = self.subscriptions.get(key)
            if subscription is None or subscription.transport is not transport:
                return
            if transport.close_reason == CloseReason.PEER_CLOSED and subscription.unanswered:
                # The browser closed this connection to answer our offer on a new one: its
                # answer brings the subscription back (`_consumer_answer`).
                return
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
    room_id: int, link: Any, *, worker: MediaWorker, config: Config
) -> None:
    """The SFU factory of `arbiter serve`: the signaling peer with the media plane behind it."""
    from .room import RoomSFU

    sfu = RoomSFU(room_id, link)
    media = MediaRoom(room_id, sfu, worker, config)
    sfu.media = media
    try:
        await sfu.run()
    finally:
        media.close()  # synchronous: runs even while cancelled
