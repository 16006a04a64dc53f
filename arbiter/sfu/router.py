"""The Router: one room's media fan-out (docs/PROTOCOL.md section 4, "RTCP" and "The forwarding loop").

A Producer is one publisher track (its SSRC, and its RTX SSRC when negotiated). A Consumer is
that track on one subscriber's consumer transport. The SSRCs, payload types and header
extension ids are the publisher's, so a packet is forwarded as the same plaintext, protected
once per destination: one `unprotect`, then per destination one `protect` and one send.

Sans-IO by injection: the Router never touches a socket; it calls `send(datagram, addr)`,
which the endpoint binds to a non-blocking `sendto` and tests bind to a list. The clock is
passed in (`now`) by the caller; `tick(now)` runs every few tens of milliseconds (deferred
PLIs, the byte samples the NACK budget reads).

Feedback never amplifies (docs/PROTOCOL.md section 4, RTCP; issue 9):
- NACK: each (consumer, sequence number) is resent at most once per `NACK_REPEAT_INTERVAL`, and
  the bytes resent to a consumer within any second stay below the bytes of that stream
  forwarded to it in the same second, so a flood of NACKs can at most double what a subscriber
  already receives. A failing retransmission costs only itself.
- PLI: at most one per second per stream, and forced requests (a new consumer needs a
  keyframe) keep a `PLI_FLOOR` too: one inside it is deferred to the end of the floor (merged
  with any other), never lost.

Ownership (issue 12). The Router makes its transports (`create_transport`, the one way a
transport is made) and is their listener: a transport reports what happened to it (connected,
moved, closed, RTP and RTCP received) and never touches a Producer or Consumer. The Router owns
its Producers and Consumers and the SSRC tables that find them, per transport (`_Routes`), and
closes them when their transport closes; it tells its own listener (the MediaRoom) about
connected and closed transports after it has done its part.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from ..errors import MalformedInput
from . import rtcp
from .producer import SAMPLE_INTERVAL, Consumer, Producer
from .quality import Quality
from .ratelog import RateLimitedLog
from .rtp import extension_offset_untrusted
from .simulcast import (
    SimulcastConsumer,
    SimulcastTrack,
    forward_layer,
    learn_layer_untrusted,
    nack_simulcast,
)
from .speaker import DominantSpeaker, audio_level
from .srtp import PROTECT_ERRORS
from .transport import Role, WebRtcTransport
from .twcc import TwccReceiver, TwccSender

if TYPE_CHECKING:
    from .dtls import Certificate

log = logging.getLogger(__name__)

Address = tuple[str, int]
Send = Callable[[bytes, Address], None]

_SSRC = struct.Struct("!I")
_SEQ = struct.Struct("!H")

PLI_INTERVAL = 1.0  # at most one PLI per second per stream upstream (docs/PROTOCOL.md section 4)
# Even forced PLIs (new consumers) keep this floor: ten quick rejoins must not be ten keyframes
# (a keyframe costs the publisher's uplink several times a normal frame).
PLI_FLOOR = 0.3
# pylibsrtp's protect refuses RTP longer than its 1500-byte buffer minus the largest trailer
# (144): 1356 bytes, both profiles. A publisher's libsrtp has no such limit, so a longer
# authentic packet must be dropped here, before it fails to be re-protected per subscriber
# (found by scripts/fuzz_parsers.py: ValueError in Router.on_rtp, logged per packet).
MAX_FORWARD_RTP = 1356
REMB_MIN = 150_000
REMB_MAX = 2_500_000


class RouterListener(Protocol):
    """What a Router tells its owner (the MediaRoom), after doing its own part."""

    def transport_connected(self, transport: WebRtcTransport) -> None: ...

    def transport_closed(self, transport: WebRtcTransport) -> None: ...

    def active_speaker(self, publisher: str) -> None: ...

    def layers_wanted(self, track: SimulcastTrack, rids: tuple[str, ...] | None) -> None: ...


AnyConsumer = Consumer | SimulcastConsumer


class _Routes:
    """The Router's tables for one of its transports."""

    __slots__ = ("producers", "producer_list", "consumers", "remb_estimate", "simulcast",
                 "twcc_in", "twcc_out")  # fmt: skip

    def __init__(self) -> None:
        self.producers: dict[int, Producer] = {}  # media and RTX SSRC -> Producer
        self.producer_list: list[Producer] = []  # simulcast layers included once seen
        self.consumers: dict[int, AnyConsumer] = {}  # media and RTX SSRC -> Consumer
        self.remb_estimate = 1_000_000.0  # producer transports: what REMB announces
        self.simulcast: list[SimulcastTrack] = []  # producer transports: simulcast tracks
        # transport-cc (docs/PROTOCOL.md section 4, RTCP): arrivals we report to a publisher,
        # and the sequence numbers we stamp on what a subscriber receives.
        self.twcc_in: TwccReceiver | None = None
        self.twcc_out: TwccSender | None = None


class Router:
    """All producers and consumers of one room; forwards RTP and relays RTCP feedback.

    A `TransportListener` (transport.py) of every transport it made."""

    def __init__(self, send: Send, counters: dict[str, int]) -> None:
        self.send = send
        self.counters = counters
        self.transports: dict[WebRtcTransport, _Routes] = {}
        self.listener: RouterListener | None = None
        self.closed = False
        self._pli_pending: set[Producer] = set()  # forced PLIs waiting for the floor
        self._next_sample = float("-inf")
        self._now = 0.0  # the last `now` seen: log rate limiting where none is passed in
        self._log = RateLimitedLog(log)
        self.speakers = DominantSpeaker()
        # Congestion control and layer choice (quality.py): reads this Router's tables.
        self.quality = Quality(self.transports, send, counters, self._layers_wanted)

    # -- RTP: publisher -> subscribers (the hot path) --------------------------------------

    def on_rtp(self, transport: WebRtcTransport, packet: bytes, now: float) -> None:
        """`packet` is the decrypted RTP packet from a producer transport."""
        counters = self.counters
        size = len(packet)
        if size < 12:
            counters["rtp_parse"] += 1
            return
        if size > MAX_FORWARD_RTP:
            counters["oversize"] += 1
            return
        counters["rtp_in"] += 1
        ssrc = _SSRC.unpack_from(packet, 8)[0]
        routes = self.transports.get(transport)
        if routes is None:
            counters["unknown_ssrc"] += 1
            return
        producer = routes.producers.get(ssrc)
        if producer is None and routes.simulcast:
            producer = self._learn_layer(routes, packet, ssrc)
        if producer is None:
            counters["unknown_ssrc"] += 1
            return
        twcc_at = -1
        if producer.twcc_ext:
            try:  # where the transport-wide sequence number is: read here, written per copy
                twcc_at = extension_offset_untrusted(packet, producer.twcc_ext)
            except MalformedInput:
                counters["rtp_parse"] += 1
                return
            if twcc_at >= 0 and routes.twcc_in is not None:
                routes.twcc_in.on_packet(_SEQ.unpack_from(packet, twcc_at)[0], now)
        media = producer.ssrc == ssrc
        if media or producer.group is None:  # a layer's RTX is not forwarded: not counted
            producer.octets += size
        if media:  # RTX packets are forwarded, not cached or counted
            seq = _SEQ.unpack_from(packet, 2)[0]
            producer.cache[seq & producer.mask] = packet
            producer.packets += 1
            producer.note_seq(seq)
            if producer.level_ext:
                self._on_audio_level(producer, packet)
        if producer.group is not None:
            if media:  # a layer's own RTX (the publisher's retransmissions) is not forwarded
                forward_layer(producer, packet, twcc_at, now, self.send, counters)
            return
        send = self.send
        for protect, addr, twcc in producer.targets:
            try:  # free in CPython 3.11+ unless it raises
                if twcc is not None and twcc_at >= 0:
                    copy = bytearray(packet)
                    _SEQ.pack_into(copy, twcc_at, twcc.next_seq(size, now))
                    send(protect(bytes(copy)), addr)
                else:
                    send(protect(packet), addr)
            except PROTECT_ERRORS:
                # One destination's SRTP refused it (e.g. the publisher's sequence number
                # jumped back past the replay window): the other destinations still get it.
                self.counters["protect_failed"] += 1
                self._log.exception("protect_rtp", self._now, "protect for %s failed", addr)

    def _learn_layer(self, routes: _Routes, packet: bytes, ssrc: int) -> Producer | None:
        """A simulcast layer's first packet on an SSRC the SDP did not tell: its mid and RID
        (or repaired RID, for its RTX) header extensions say which layer it is (RFC 8852)."""
        try:
            learnt = learn_layer_untrusted(routes.simulcast, packet, ssrc)
        except MalformedInput:
            self.counters["rtp_parse"] += 1
            return None
        if learnt is None:
            return None
        track, index, rtx = learnt
        layer = track.layers[index]
        if layer is None:
            if rtx:
                return None  # RTX before its layer's first packet: nothing to repair yet
            layer = Producer(track.transport, "video", ssrc, None)
            layer.group, layer.layer, layer.twcc_ext = track, index, track.twcc_ext
            track.layers[index] = layer
            routes.producer_list.append(layer)
            self.counters["simulcast_layers"] += 1
        elif rtx and layer.rtx_ssrc is None:
            layer.rtx_ssrc = ssrc
        else:
            return None  # a second SSRC for one rid: the first keeps it
        routes.producers[ssrc] = layer
        return layer

    def _on_audio_level(self, producer: Producer, packet: bytes) -> None:
        level = audio_level(packet, producer.level_ext)
        if level is None:
            return
        speaker = self.speakers.update(producer.transport.owner, level, self._now)
        if speaker is not None and self.listener is not None:
            self.listener.active_speaker(speaker)

    # -- RTCP ------------------------------------------------------------------------------

    def on_rtcp(self, transport: WebRtcTransport, packet: bytes, now: float) -> None:
        """`packet` is a decrypted RTCP compound from either side. Raises MalformedInput when
        the compound's framing is broken; a bad packet inside it is counted ("rtcp_parse") and
        the rest of the compound still handled."""
        self.counters["rtcp_in"] += 1
        self._now = now
        for item in rtcp.iter_packets_untrusted(packet):
            pt = item.packet_type
            try:
                if pt == rtcp.PT_SR and transport.role == Role.PRODUCER:
                    self._on_sender_report(transport, item, now)
                elif pt == rtcp.PT_PSFB and transport.role == Role.CONSUMER:
                    if item.fmt in (rtcp.FMT_PLI, rtcp.FMT_FIR):
                        self._on_keyframe_request(transport, item, now)
                elif pt == rtcp.PT_RTPFB and transport.role == Role.CONSUMER:
                    if item.fmt == rtcp.FMT_NACK:
                        self._on_nack(transport, item, now)
                    elif item.fmt == rtcp.FMT_TWCC:
                        self.quality.on_transport_feedback(transport, item, now)
                elif pt == rtcp.PT_RR and transport.role == Role.CONSUMER:
                    self.quality.on_receiver_report(transport, item, now)
                # SDES, BYE and REMB from peers need no action here.
            except MalformedInput:
                self.counters["rtcp_parse"] += 1
            except PROTECT_ERRORS:
                self.counters["protect_failed"] += 1
                self._log.exception("protect_rtcp", now, "RTCP protect failed on %r", transport)

    def _on_sender_report(self, transport: WebRtcTransport, item: rtcp.RtcpPacket,
                          now: float) -> None:
        routes = self.transports.get(transport)
        producer = routes.producers.get(item.sender_ssrc) if routes is not None else None
        if producer is None or producer.ssrc != item.sender_ssrc:
            return
        sr = rtcp.parse_sender_report_untrusted(item)
        producer.last_sr_ntp = (sr.ntp_timestamp >> 16) & 0xFFFFFFFF
        producer.last_sr_at = now
        if producer.group is not None:
            self._layer_sender_report(producer, sr, now)
            return
        # Forward the SR alone (no report blocks: those describe what the publisher receives
        # from us, meaningless downstream) so subscribers can lip-sync (RFC 3550 6.4.1).
        forwarded = rtcp.build_sender_report(
            item.sender_ssrc, sr.ntp_timestamp, sr.rtp_timestamp, sr.packet_count,
            sr.octet_count,
        )
        for consumer in producer.consumers:
            t = consumer.transport
            if t.connected and t.remote_addr is not None:
                try:
                    self.send(t.protect_rtcp(forwarded), t.remote_addr)
                except PROTECT_ERRORS:
                    self.counters["protect_failed"] += 1
                    self._log.exception("protect_sr", now, "SR protect failed on %r", t)

    def _layer_sender_report(self, layer: Producer, sr: rtcp.SenderReport, now: float) -> None:
        """A simulcast layer's SR, to the consumers that get that layer: on their SSRC, with the
        RTP timestamp on their timeline and their own counts (RFC 3550 6.4.1, lip sync)."""
        assert layer.group is not None
        for consumer in layer.group.consumers:
            rewriter = consumer.rewriter
            timestamp = rewriter.translate_timestamp(layer.layer, sr.rtp_timestamp)
            t = consumer.transport
            if timestamp is None or not t.connected or t.remote_addr is None:
                continue
            report = rtcp.build_sender_report(
                consumer.ssrc, sr.ntp_timestamp, timestamp, rewriter.packets & 0xFFFFFFFF,
                rewriter.octets & 0xFFFFFFFF,
            )  # fmt: skip
            try:
                self.send(t.protect_rtcp(report), t.remote_addr)
            except PROTECT_ERRORS:
                self.counters["protect_failed"] += 1

    def _consumer_for(self, transport: WebRtcTransport, media_ssrc: int) -> Consumer | None:
        routes = self.transports.get(transport)
        return routes.consumers.get(media_ssrc) if routes is not None else None

    def _on_keyframe_request(self, transport: WebRtcTransport, item: rtcp.RtcpPacket,
                             now: float) -> None:
        for media_ssrc in rtcp.keyframe_request_ssrcs_untrusted(item):
            consumer = self._consumer_for(transport, media_ssrc)
            if isinstance(consumer, SimulcastConsumer):
                layer = consumer.rewriter.current
                track = consumer.producer
                if 0 <= layer < len(track.layers) and track.layers[layer] is not None:
                    self.request_keyframe(track.layers[layer], now)  # type: ignore[arg-type]
            elif consumer is not None:
                self.request_keyframe(consumer.producer, now)

    def request_keyframe(
        self, producer: Producer | SimulcastTrack, now: float, force: bool = False
    ) -> None:
        """One PLI upstream: at most one per second per stream for subscribers' requests, and
        no two within PLI_FLOOR even when forced (docs/PROTOCOL.md section 4). A forced request inside
        the floor is deferred to its end (`tick`), merged with any other waiting there. For a
        simulcast track: its layers that some consumer gets or waits for."""
        if isinstance(producer, SimulcastTrack):
            wanted = {c.rewriter.target for c in producer.consumers}
            wanted |= {c.rewriter.current for c in producer.consumers}
            for index, layer in enumerate(producer.layers):
                if layer is not None and index in wanted:
                    self.request_keyframe(layer, now, force)
            return
        if producer.kind != "video" or producer.closed:
            return
        since = now - producer.last_pli_at
        if since < PLI_FLOOR or (not force and since < PLI_INTERVAL):
            if not force:
                self.counters["pli_throttled"] += 1
            elif producer in self._pli_pending:
                self.counters["pli_coalesced"] += 1
            else:
                self.counters["pli_deferred"] += 1
                self._pli_pending.add(producer)
            return
        if producer in self._pli_pending:
            self.counters["pli_coalesced"] += 1  # the deferred request is answered by this PLI
        self._send_pli(producer, now)

    def _send_pli(self, producer: Producer, now: float) -> None:
        self._pli_pending.discard(producer)
        t = producer.transport
        if not t.connected or t.remote_addr is None:
            return
        producer.last_pli_at = now
        self.counters["pli_sent"] += 1
        self.send(t.protect_rtcp(rtcp.build_pli(t.rtcp_ssrc, producer.ssrc)), t.remote_addr)

    def _on_nack(self, transport: WebRtcTransport, item: rtcp.RtcpPacket, now: float) -> None:
        consumer = self._consumer_for(transport, item.media_ssrc)
        addr = transport.remote_addr
        if consumer is None or addr is None or not transport.connected:
            return
        if isinstance(consumer, SimulcastConsumer):
            nack_simulcast(consumer, rtcp.parse_nack_untrusted(item), now, self.send,
                           self.counters)  # fmt: skip
            return
        consumer.retransmit(rtcp.parse_nack_untrusted(item), now, self.send, self.counters)

    def tick(self, now: float) -> None:
        """Timers: deferred forced PLIs whose floor has passed; forwarded-byte samples."""
        self._now = now
        if self._pli_pending:
            for producer in list(self._pli_pending):
                if producer.closed:
                    self._pli_pending.discard(producer)
                elif now - producer.last_pli_at >= PLI_FLOOR:
                    self._send_pli(producer, now)
        if now >= self._next_sample:
            self._next_sample = now + SAMPLE_INTERVAL
            for routes in self.transports.values():
                for producer in routes.producer_list:
                    producer.samples.append((now, producer.octets))
                for consumer in routes.consumers.values():
                    if isinstance(consumer, SimulcastConsumer):
                        consumer.samples.append((now, consumer.octets))
        for routes in self.transports.values():
            for track in routes.simulcast:
                waiting = {c.rewriter.target for c in track.consumers
                           if c.rewriter.wants_keyframe and c.transport.connected}  # fmt: skip
                for index in waiting:
                    # A switch waits for the target layer's keyframe (PLI_FLOOR bounds it).
                    layer = track.layers[index] if index < len(track.layers) else None
                    if layer is not None:
                        self.request_keyframe(layer, now, force=True)
        self.quality.tick(now)

    # -- periodic reports upstream ---------------------------------------------------------

    def send_reports(self, now: float) -> None:
        """RR (loss, LSR/DLSR) and REMB to every connected publisher (RFC 3550 6.4.2)."""
        for t, routes in self.transports.items():
            if t.role != Role.PRODUCER or not t.connected or t.remote_addr is None:
                continue
            producers = [p for p in routes.producer_list if p.packets]
            if not producers:
                continue
            blocks = [p.report_block(now) for p in producers]
            worst = max((b.fraction_lost for b in blocks), default=0) / 256
            routes.remb_estimate = _next_estimate(routes.remb_estimate, worst)
            video = [p.ssrc for p in producers if p.kind == "video"]
            compound = rtcp.build_receiver_report(t.rtcp_ssrc, blocks)
            if video and routes.twcc_in is None:  # REMB only without transport-cc
                compound += rtcp.build_remb(t.rtcp_ssrc, int(routes.remb_estimate), video)
            self.send(t.protect_rtcp(compound), t.remote_addr)

    # -- lifecycle -------------------------------------------------------------------------

    def create_transport(
        self,
        *,
        role: Role,
        owner: str,
        certificate: Certificate,
        now: float,
        consent_timeout: float = 30.0,
        publisher: str | None = None,
        ice_ufrag: str | None = None,
        ice_pwd: str | None = None,
    ) -> WebRtcTransport:
        """A transport of this room, sending through this Router's `send`, reporting to it."""
        transport = WebRtcTransport(
            role=role, owner=owner, certificate=certificate, send=self.send, now=now,
            consent_timeout=consent_timeout, publisher=publisher, ice_ufrag=ice_ufrag,
            ice_pwd=ice_pwd,
        )  # fmt: skip
        transport.listener = self
        self.transports[transport] = _Routes()
        return transport

    def producers_of(self, transport: WebRtcTransport) -> list[Producer]:
        routes = self.transports.get(transport)
        return list(routes.producer_list) if routes is not None else []

    def consumers_of(self, transport: WebRtcTransport) -> dict[int, Consumer]:
        """`transport`'s Consumers by media and RTX SSRC (a copy)."""
        routes = self.transports.get(transport)
        return dict(routes.consumers) if routes is not None else {}

    def create_producer(
        self, transport: WebRtcTransport, kind: str, ssrc: int, rtx_ssrc: int | None
    ) -> Producer:
        """A publisher track on a producer transport, found by its media and RTX SSRCs."""
        routes = self.transports[transport]
        producer = Producer(transport, kind, ssrc, rtx_ssrc)
        routes.producers[ssrc] = producer
        if rtx_ssrc is not None:
            routes.producers[rtx_ssrc] = producer
        routes.producer_list.append(producer)
        return producer

    def create_simulcast(
        self,
        transport: WebRtcTransport,
        mid: str,
        rids: tuple[str, ...],
        *,
        mid_ext: int,
        rid_ext: int,
        rrid_ext: int,
        codec: str,
        rtx_pt: int | None,
        twcc_ext: int = 0,
    ) -> SimulcastTrack:
        """A simulcast track on a producer transport; its layers' SSRCs are learnt from the
        RID extensions of their first packets (`on_rtp`)."""
        routes = self.transports[transport]
        track = SimulcastTrack(
            transport, mid, rids, mid_ext=mid_ext, rid_ext=rid_ext, rrid_ext=rrid_ext,
            codec=codec, rtx_pt=rtx_pt, twcc_ext=twcc_ext,
        )  # fmt: skip
        routes.simulcast.append(track)
        return track

    def enable_transport_cc(self, transport: WebRtcTransport) -> None:
        """The transport negotiated transport-cc: a producer transport gets our feedback, a
        consumer transport our sequence numbers (docs/PROTOCOL.md section 4, RTCP)."""
        routes = self.transports.get(transport)
        if routes is None:
            return
        if transport.role == Role.PRODUCER and routes.twcc_in is None:
            routes.twcc_in = TwccReceiver()
        elif transport.role == Role.CONSUMER and routes.twcc_out is None:
            routes.twcc_out = TwccSender()

    def set_preferences(
        self, transport: WebRtcTransport, max_height: int, paused: bool, now: float
    ) -> None:
        """A subscriber's `preferences` for the publisher its consumer transport carries: video
        consumers stop (paused) or cap their layer (maxHeight); audio always flows."""
        routes = self.transports.get(transport)
        if routes is None:
            return
        resumed = []
        for consumer in set(routes.consumers.values()):
            if isinstance(consumer, SimulcastConsumer):
                consumer.max_height = max_height
                if paused and not consumer.paused:
                    consumer.rewriter.target = -1  # at once: a paused tile costs nothing
                consumer.paused = paused
            elif consumer.producer.kind == "video" and consumer.paused != paused:
                consumer.paused = paused
                consumer.producer.rebuild_targets()
                if not paused:
                    resumed.append(consumer.producer)
        for producer in resumed:
            self.request_keyframe(producer, now, force=True)  # it decodes from a keyframe
        self.quality.next_allocation = now  # choose layers on the next tick

    def remove_producer(self, producer: Producer | SimulcastTrack) -> None:
        """A track its publisher stopped sending (a renegotiation removed or changed it): closed
        with its consumers, and its SSRCs no longer route on the producer transport."""
        if isinstance(producer, SimulcastTrack):
            self._close_simulcast(producer)
            return
        self._close_producer(producer)
        routes = self.transports.get(producer.transport)
        if routes is not None:
            for ssrc in (producer.ssrc, producer.rtx_ssrc):
                if ssrc is not None and routes.producers.get(ssrc) is producer:
                    del routes.producers[ssrc]
            if producer in routes.producer_list:
                routes.producer_list.remove(producer)

    def create_simulcast_consumer(
        self, track: SimulcastTrack, transport: WebRtcTransport, ssrc: int, rtx_ssrc: int | None
    ) -> SimulcastConsumer:
        """A simulcast track on a subscriber's consumer transport, on our SSRCs."""
        routes = self.transports[transport]
        consumer = SimulcastConsumer(track, transport, ssrc, rtx_ssrc, routes.twcc_out)
        track.consumers.append(consumer)
        routes.consumers[ssrc] = consumer
        if rtx_ssrc is not None:
            routes.consumers[rtx_ssrc] = consumer
        self.quality.next_allocation = self._now  # choose its layer on the next tick
        return consumer

    def _close_simulcast(self, track: SimulcastTrack) -> None:
        for consumer in list(track.consumers):
            self._close_consumer(consumer)
        routes = self.transports.get(track.transport)
        for layer in track.layers:
            if layer is None:
                continue
            self._pli_pending.discard(layer)
            if routes is not None:
                for ssrc in (layer.ssrc, layer.rtx_ssrc):
                    if ssrc is not None and routes.producers.get(ssrc) is layer:
                        del routes.producers[ssrc]
                if layer in routes.producer_list:
                    routes.producer_list.remove(layer)
        if routes is not None and track in routes.simulcast:
            routes.simulcast.remove(track)
        track.close()

    def create_consumer(self, producer: Producer, transport: WebRtcTransport) -> Consumer:
        """`producer`'s track on a subscriber's consumer transport (same SSRCs: no rewrite)."""
        routes = self.transports[transport]
        consumer = Consumer(producer, transport, routes.twcc_out)
        producer.consumers.append(consumer)
        routes.consumers[producer.ssrc] = consumer
        if producer.rtx_ssrc is not None:
            routes.consumers[producer.rtx_ssrc] = consumer
        producer.rebuild_targets()
        return consumer

    def _close_producer(self, producer: Producer) -> None:
        for consumer in list(producer.consumers):
            self._close_consumer(consumer)
        producer.close()
        self._pli_pending.discard(producer)

    def _close_consumer(self, consumer: AnyConsumer) -> None:
        consumer.close()
        routes = self.transports.get(consumer.transport)
        if routes is None:
            return
        if isinstance(consumer, SimulcastConsumer):
            ssrcs = (consumer.ssrc, consumer.rtx_ssrc)
            self.quality.forget(consumer)
        else:
            ssrcs = (consumer.producer.ssrc, consumer.producer.rtx_ssrc)
        for ssrc in ssrcs:
            if ssrc is not None and routes.consumers.get(ssrc) is consumer:
                del routes.consumers[ssrc]

    def _layers_wanted(self, track: SimulcastTrack, rids: tuple[str, ...] | None) -> None:
        if self.listener is not None:
            self.listener.layers_wanted(track, rids)

    # -- TransportListener: what a transport reports ------------------------------------------

    def on_transport_connected(self, transport: WebRtcTransport) -> None:
        self._retarget(transport)
        if self.listener is not None:
            self.listener.transport_connected(transport)

    def on_transport_address_change(
        self, transport: WebRtcTransport, old: Address | None
    ) -> None:
        self._retarget(transport)

    def _retarget(self, transport: WebRtcTransport) -> None:
        """A consumer transport's keys or address changed: its producers' fan-out lists too."""
        routes = self.transports.get(transport)
        if routes is not None and routes.consumers:
            for producer in {c.producer for c in routes.consumers.values()}:
                if isinstance(producer, Producer):  # simulcast consumers need no fan-out list
                    producer.rebuild_targets()

    def on_transport_closed(self, transport: WebRtcTransport) -> None:
        """Closes the transport's producers (and so their consumers) and its consumers."""
        routes = self.transports.get(transport)
        if routes is None:
            return
        if routes.producer_list:
            self.speakers.remove(transport.owner)
        for track in list(routes.simulcast):
            self._close_simulcast(track)
        for producer in list(routes.producer_list):
            self._close_producer(producer)
        for consumer in list(routes.consumers.values()):
            self._close_consumer(consumer)
        del self.transports[transport]
        if self.listener is not None:
            self.listener.transport_closed(transport)

    def close(self) -> None:
        """Idempotent; closes every transport (which closes its producers and consumers)."""
        if self.closed:
            return
        self.closed = True
        for transport in list(self.transports):
            transport.close()
        self.transports.clear()


def _next_estimate(current: float, loss: float) -> float:
    """A loss-based bandwidth estimate for REMB (the shape of Chrome's loss controller):
    back off multiplicatively above 10% loss, grow 8% per report below 2%."""
    if loss > 0.10:
        current *= 1 - 0.5 * loss
    elif loss < 0.02:
        current *= 1.08
    return min(REMB_MAX, max(REMB_MIN, current))
