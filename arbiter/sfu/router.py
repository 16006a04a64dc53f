"""The Router: one room's media fan-out (DESIGN section 4, "RTCP" and "The forwarding loop").

A Producer is one publisher track (its SSRC, and its RTX SSRC when negotiated). A Consumer is
that track on one subscriber's consumer transport. The SSRCs, payload types and header
extension ids are the publisher's, so a packet is forwarded as the same plaintext, protected
once per destination: one `unprotect`, then per destination one `protect` and one send.

Sans-IO by injection: the Router never touches a socket; it calls `send(datagram, addr)`,
which the endpoint binds to a non-blocking `sendto` and tests bind to a list. The clock is
passed in (`now`) by the caller.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import rtcp

if TYPE_CHECKING:
    from .transport import WebRtcTransport

log = logging.getLogger(__name__)

Address = tuple[str, int]
Send = Callable[[bytes, Address], None]

_SSRC = struct.Struct("!I")
_SEQ = struct.Struct("!H")

VIDEO_CACHE = 1024  # >= 500 packets (~1 s of 1.5 Mbit/s video), power of two for masking
AUDIO_CACHE = 256  # >= 200 packets; Opus NACK is rare but cheap to serve
PLI_INTERVAL = 1.0  # at most one PLI per second per stream upstream (DESIGN section 4)
REMB_MIN = 150_000
REMB_MAX = 2_500_000


class Producer:
    """One publisher track, with its NACK cache, receive statistics and throttled PLI."""

    __slots__ = (
        "transport", "kind", "ssrc", "rtx_ssrc", "targets", "consumers", "cache", "mask",
        "packets", "base_seq", "max_seq", "cycles", "expected_prior", "received_prior",
        "last_sr_ntp", "last_sr_at", "last_pli_at", "closed",
    )  # fmt: skip

    def __init__(self, transport: WebRtcTransport, kind: str, ssrc: int, rtx_ssrc: int | None):
        self.transport = transport
        self.kind = kind
        self.ssrc = ssrc
        self.rtx_ssrc = rtx_ssrc
        # (protect, addr) per connected consumer: the loop's whole per-destination state.
        self.targets: list[tuple[Callable[[bytes], bytes], Address]] = []
        self.consumers: list[Consumer] = []
        size = VIDEO_CACHE if kind == "video" else AUDIO_CACHE
        self.cache: list[bytes | None] = [None] * size
        self.mask = size - 1
        # RFC 3550 appendix A.1/A.3 receive statistics, for the RR we send upstream.
        self.packets = 0
        self.base_seq = -1
        self.max_seq = 0
        self.cycles = 0
        self.expected_prior = 0
        self.received_prior = 0
        self.last_sr_ntp = 0  # middle 32 bits of the last SR's NTP timestamp (LSR)
        self.last_sr_at = 0.0
        self.last_pli_at = float("-inf")
        self.closed = False

    def note_seq(self, seq: int) -> None:
        if self.base_seq < 0:
            self.base_seq = self.max_seq = seq
            return
        delta = (seq - self.max_seq) & 0xFFFF
        if 0 < delta < 0x8000:
            if seq < self.max_seq:
                self.cycles += 0x10000
            self.max_seq = seq

    def report_block(self, now: float) -> rtcp.ReportBlock:
        """This stream's RR report block (RFC 3550 6.4.1); jitter is not tracked (0)."""
        extended = self.cycles + self.max_seq
        expected = extended - self.base_seq + 1 if self.base_seq >= 0 else 0
        lost = max(0, expected - self.packets)
        expected_interval = expected - self.expected_prior
        received_interval = self.packets - self.received_prior
        self.expected_prior, self.received_prior = expected, self.packets
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = min(255, (lost_interval << 8) // expected_interval)
        dlsr = int((now - self.last_sr_at) * 65536) if self.last_sr_ntp else 0
        return rtcp.ReportBlock(
            self.ssrc, fraction, min(lost, 0x7FFFFF), extended & 0xFFFFFFFF, 0,
            self.last_sr_ntp, dlsr & 0xFFFFFFFF,
        )  # fmt: skip

    def close(self) -> None:
        """Idempotent; closes every consumer of this track."""
        if self.closed:
            return
        self.closed = True
        for consumer in list(self.consumers):
            consumer.close()
        self.targets = []

    def rebuild_targets(self) -> None:
        self.targets = [
            (c.transport.protect_rtp, c.transport.remote_addr)
            for c in self.consumers
            if c.transport.connected and c.transport.remote_addr is not None
        ]


class Consumer:
    """A Producer's track on one subscriber's consumer transport."""

    __slots__ = ("producer", "transport", "closed")

    def __init__(self, producer: Producer, transport: WebRtcTransport) -> None:
        self.producer = producer
        self.transport = transport
        self.closed = False

    def close(self) -> None:
        """Idempotent; detaches from the producer's fan-out and from the transport."""
        if self.closed:
            return
        self.closed = True
        if self in self.producer.consumers:
            self.producer.consumers.remove(self)
            self.producer.rebuild_targets()
        consumers = self.transport.consumers
        for ssrc in (self.producer.ssrc, self.producer.rtx_ssrc):
            if ssrc is not None and consumers.get(ssrc) is self:
                del consumers[ssrc]


class Router:
    """All producers and consumers of one room; forwards RTP and relays RTCP feedback."""

    def __init__(self, send: Send, counters: dict[str, int]) -> None:
        self.send = send
        self.counters = counters
        self.transports: set[WebRtcTransport] = set()
        self.closed = False

    # -- RTP: publisher -> subscribers (the hot path) --------------------------------------

    def on_rtp(self, transport: WebRtcTransport, packet: bytes) -> None:
        """`packet` is the decrypted RTP packet from a producer transport."""
        ssrc = _SSRC.unpack_from(packet, 8)[0]
        producer = transport.producers.get(ssrc)
        if producer is None:
            self.counters["unknown_ssrc"] += 1
            return
        if producer.ssrc == ssrc:  # RTX packets are forwarded, not cached or counted
            seq = _SEQ.unpack_from(packet, 2)[0]
            producer.cache[seq & producer.mask] = packet
            producer.packets += 1
            producer.note_seq(seq)
        send = self.send
        for protect, addr in producer.targets:
            send(protect(packet), addr)

    # -- RTCP ------------------------------------------------------------------------------

    def on_rtcp(self, transport: WebRtcTransport, packet: bytes, now: float) -> None:
        """`packet` is a decrypted RTCP compound from either side. Raises MalformedInput."""
        for item in rtcp.iter_packets_untrusted(packet):
            pt = item.packet_type
            if pt == rtcp.PT_SR and transport.role == "producer":
                self._on_sender_report(transport, item, now)
            elif pt == rtcp.PT_PSFB and transport.role == "consumer":
                if item.fmt in (rtcp.FMT_PLI, rtcp.FMT_FIR):
                    self._on_keyframe_request(transport, item, now)
            elif pt == rtcp.PT_RTPFB and transport.role == "consumer":
                if item.fmt == rtcp.FMT_NACK:
                    self._on_nack(transport, item)
            # RR, SDES, BYE, REMB and transport-cc from peers need no action here.

    def _on_sender_report(self, transport: WebRtcTransport, item: rtcp.RtcpPacket,
                          now: float) -> None:
        producer = transport.producers.get(item.sender_ssrc)
        if producer is None or producer.ssrc != item.sender_ssrc:
            return
        sr = rtcp.parse_sender_report_untrusted(item)
        producer.last_sr_ntp = (sr.ntp_timestamp >> 16) & 0xFFFFFFFF
        producer.last_sr_at = now
        # Forward the SR alone (no report blocks: those describe what the publisher receives
        # from us, meaningless downstream) so subscribers can lip-sync (RFC 3550 6.4.1).
        forwarded = rtcp.build_sender_report(
            item.sender_ssrc, sr.ntp_timestamp, sr.rtp_timestamp, sr.packet_count,
            sr.octet_count,
        )
        for consumer in producer.consumers:
            t = consumer.transport
            if t.connected and t.remote_addr is not None:
                self.send(t.protect_rtcp(forwarded), t.remote_addr)

    def _consumer_for(self, transport: WebRtcTransport, media_ssrc: int) -> Consumer | None:
        return transport.consumers.get(media_ssrc)

    def _on_keyframe_request(self, transport: WebRtcTransport, item: rtcp.RtcpPacket,
                             now: float) -> None:
        for media_ssrc in rtcp.keyframe_request_ssrcs_untrusted(item):
            consumer = self._consumer_for(transport, media_ssrc)
            if consumer is not None:
                self.request_keyframe(consumer.producer, now)

    def request_keyframe(self, producer: Producer, now: float, force: bool = False) -> None:
        """One PLI upstream, at most one per second per stream (DESIGN section 4)."""
        if producer.kind != "video" or producer.closed:
            return
        if not force and now - producer.last_pli_at < PLI_INTERVAL:
            self.counters["pli_throttled"] += 1
            return
        t = producer.transport
        if not t.connected or t.remote_addr is None:
            return
        producer.last_pli_at = now
        self.counters["pli_sent"] += 1
        self.send(t.protect_rtcp(rtcp.build_pli(t.rtcp_ssrc, producer.ssrc)), t.remote_addr)

    def _on_nack(self, transport: WebRtcTransport, item: rtcp.RtcpPacket) -> None:
        consumer = self._consumer_for(transport, item.media_ssrc)
        if consumer is None or transport.remote_addr is None:
            return
        producer = consumer.producer
        for seq in rtcp.parse_nack_untrusted(item):
            cached = producer.cache[seq & producer.mask]
            # The slot may hold a newer packet that wrapped into it: check its sequence.
            if cached is not None and _SEQ.unpack_from(cached, 2)[0] == seq:
                self.counters["nack_retransmitted"] += 1
                self.send(transport.protect_rtp(cached), transport.remote_addr)
            else:
                self.counters["nack_missed"] += 1

    # -- periodic reports upstream ---------------------------------------------------------

    def send_reports(self, now: float) -> None:
        """RR (loss, LSR/DLSR) and REMB to every connected publisher (RFC 3550 6.4.2)."""
        for t in self.transports:
            if t.role != "producer" or not t.connected or t.remote_addr is None:
                continue
            producers = [p for p in t.producers_list if p.packets]
            if not producers:
                continue
            blocks = [p.report_block(now) for p in producers]
            worst = max((b.fraction_lost for b in blocks), default=0) / 256
            t.remb_estimate = _next_estimate(t.remb_estimate, worst)
            video = [p.ssrc for p in producers if p.kind == "video"]
            compound = rtcp.build_receiver_report(t.rtcp_ssrc, blocks)
            if video:
                compound += rtcp.build_remb(t.rtcp_ssrc, int(t.remb_estimate), video)
            self.send(t.protect_rtcp(compound), t.remote_addr)

    # -- lifecycle -------------------------------------------------------------------------

    def add_transport(self, transport: WebRtcTransport) -> None:
        self.transports.add(transport)
        transport.on_close.append(self.remove_transport)

    def remove_transport(self, transport: WebRtcTransport) -> None:
        self.transports.discard(transport)

    def create_producer(
        self, transport: WebRtcTransport, kind: str, ssrc: int, rtx_ssrc: int | None
    ) -> Producer:
        """A publisher track on a producer transport, found by its media and RTX SSRCs."""
        producer = Producer(transport, kind, ssrc, rtx_ssrc)
        transport.producers[ssrc] = producer
        if rtx_ssrc is not None:
            transport.producers[rtx_ssrc] = producer
        transport.producers_list.append(producer)
        return producer

    def create_consumer(self, producer: Producer, transport: WebRtcTransport) -> Consumer:
        """`producer`'s track on a subscriber's consumer transport (same SSRCs: no rewrite)."""
        consumer = Consumer(producer, transport)
        producer.consumers.append(consumer)
        transport.consumers[producer.ssrc] = consumer
        if producer.rtx_ssrc is not None:
            transport.consumers[producer.rtx_ssrc] = consumer
        producer.rebuild_targets()
        return consumer

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
