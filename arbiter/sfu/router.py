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
"""

from __future__ import annotations

import logging
import struct
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import MalformedInput
from . import rtcp
from .ratelog import RateLimitedLog
from .srtp import PROTECT_ERRORS, TX_REPLAY_WINDOW

if TYPE_CHECKING:
    from .transport import WebRtcTransport

log = logging.getLogger(__name__)

Address = tuple[str, int]
Send = Callable[[bytes, Address], None]

_SSRC = struct.Struct("!I")
_SEQ = struct.Struct("!H")

VIDEO_CACHE = 1024  # >= 500 packets (~1 s of 1.5 Mbit/s video), power of two for masking
AUDIO_CACHE = 256  # >= 200 packets; Opus NACK is rare but cheap to serve
PLI_INTERVAL = 1.0  # at most one PLI per second per stream upstream (docs/PROTOCOL.md section 4)
# Even forced PLIs (new consumers) keep this floor: ten quick rejoins must not be ten keyframes
# (a keyframe costs the publisher's uplink several times a normal frame).
PLI_FLOOR = 0.3
NACK_REPEAT_INTERVAL = 0.1  # one resend per (consumer, seq) per 100 ms (docs/PROTOCOL.md section 4)
NACK_WINDOW = 1.0  # the rolling window of the retransmission byte budget
SAMPLE_INTERVAL = 0.1  # forwarded-byte samples per producer, read by the NACK budget
SAMPLES = 12  # > NACK_WINDOW / SAMPLE_INTERVAL
RESENT_PRUNE = 512  # a consumer's resend times are pruned past this many entries
# A retransmission re-protects a packet up to a cache's length behind the newest one; libsrtp
# refuses ("index too old") anything further back than the outbound replay window.
assert VIDEO_CACHE <= TX_REPLAY_WINDOW and AUDIO_CACHE <= TX_REPLAY_WINDOW
REMB_MIN = 150_000
REMB_MAX = 2_500_000


class Producer:
    """One publisher track, with its NACK cache, receive statistics and throttled PLI."""

    __slots__ = (
        "transport", "kind", "ssrc", "rtx_ssrc", "targets", "consumers", "cache", "mask",
        "packets", "base_seq", "max_seq", "cycles", "expected_prior", "received_prior",
        "last_sr_ntp", "last_sr_at", "last_pli_at", "octets", "samples", "closed",
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
        # Plaintext bytes forwarded (media and RTX), and (time, octets) samples of it taken by
        # `Router.tick`: what every connected consumer received, for the NACK budget.
        self.octets = 0
        self.samples: deque[tuple[float, int]] = deque(maxlen=SAMPLES)
        self.closed = False

    def octets_since(self, t: float) -> int:
        """`octets` at the first sample taken at or after `t` (so the window it opens is never
        longer than asked); with no such sample, `octets` now (an empty window)."""
        for at, octets in self.samples:
            if at >= t:
                return octets
        return self.octets

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
        targets = []
        for c in self.consumers:
            if c.transport.connected and c.transport.remote_addr is not None:
                targets.append((c.transport.protect_rtp, c.transport.remote_addr))
                if c.octets_start < 0:
                    c.octets_start = self.octets  # forwarding to it starts now
        self.targets = targets


class Consumer:
    """A Producer's track on one subscriber's consumer transport."""

    __slots__ = ("producer", "transport", "octets_start", "resent", "rtx_log", "rtx_bytes",
                 "closed")  # fmt: skip

    def __init__(self, producer: Producer, transport: WebRtcTransport) -> None:
        self.producer = producer
        self.transport = transport
        # The producer's `octets` when this consumer became a target (-1: not yet): bytes
        # forwarded before that never reached it and earn it no retransmission budget.
        self.octets_start = -1
        # NACK state, made on the first NACK: seq -> when last resent; (time, bytes) resent
        # within the last NACK_WINDOW and their sum.
        self.resent: dict[int, float] | None = None
        self.rtx_log: deque[tuple[float, int]] | None = None
        self.rtx_bytes = 0
        self.closed = False

    def nack_budget(self, now: float) -> int:
        """Bytes that may still be resent now: forwarded minus resent, both within the last
        NACK_WINDOW (docs/PROTOCOL.md section 4: a NACK flood at most doubles what a subscriber gets)."""
        producer = self.producer
        if self.octets_start < 0:
            return 0
        rtx_log = self.rtx_log
        if rtx_log is None:
            rtx_log = self.rtx_log = deque()
            self.resent = {}
        horizon = now - NACK_WINDOW
        while rtx_log and rtx_log[0][0] <= horizon:
            self.rtx_bytes -= rtx_log.popleft()[1]
        since = max(self.octets_start, producer.octets_since(horizon))
        return producer.octets - since - self.rtx_bytes

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
        self._pli_pending: set[Producer] = set()  # forced PLIs waiting for the floor
        self._next_sample = float("-inf")
        self._now = 0.0  # the last `now` seen: log rate limiting where none is passed in
        self._log = RateLimitedLog(log)

    # -- RTP: publisher -> subscribers (the hot path) --------------------------------------

    def on_rtp(self, transport: WebRtcTransport, packet: bytes) -> None:
        """`packet` is the decrypted RTP packet from a producer transport."""
        ssrc = _SSRC.unpack_from(packet, 8)[0]
        producer = transport.producers.get(ssrc)
        if producer is None:
            self.counters["unknown_ssrc"] += 1
            return
        producer.octets += len(packet)
        if producer.ssrc == ssrc:  # RTX packets are forwarded, not cached or counted
            seq = _SEQ.unpack_from(packet, 2)[0]
            producer.cache[seq & producer.mask] = packet
            producer.packets += 1
            producer.note_seq(seq)
        send = self.send
        for protect, addr in producer.targets:
            try:  # free in CPython 3.11+ unless it raises
                send(protect(packet), addr)
            except PROTECT_ERRORS:
                # One destination's SRTP refused it (e.g. the publisher's sequence number
                # jumped back past the replay window): the other destinations still get it.
                self.counters["protect_failed"] += 1
                self._log.exception("protect_rtp", self._now, "protect for %s failed", addr)

    # -- RTCP ------------------------------------------------------------------------------

    def on_rtcp(self, transport: WebRtcTransport, packet: bytes, now: float) -> None:
        """`packet` is a decrypted RTCP compound from either side. Raises MalformedInput when
        the compound's framing is broken; a bad packet inside it is counted ("rtcp_parse") and
        the rest of the compound still handled."""
        self._now = now
        for item in rtcp.iter_packets_untrusted(packet):
            pt = item.packet_type
            try:
                if pt == rtcp.PT_SR and transport.role == "producer":
                    self._on_sender_report(transport, item, now)
                elif pt == rtcp.PT_PSFB and transport.role == "consumer":
                    if item.fmt in (rtcp.FMT_PLI, rtcp.FMT_FIR):
                        self._on_keyframe_request(transport, item, now)
                elif pt == rtcp.PT_RTPFB and transport.role == "consumer":
                    if item.fmt == rtcp.FMT_NACK:
                        self._on_nack(transport, item, now)
                # RR, SDES, BYE, REMB and transport-cc from peers need no action here.
            except MalformedInput:
                self.counters["rtcp_parse"] += 1
            except PROTECT_ERRORS:
                self.counters["protect_failed"] += 1
                self._log.exception("protect_rtcp", now, "RTCP protect failed on %r", transport)

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
                try:
                    self.send(t.protect_rtcp(forwarded), t.remote_addr)
                except PROTECT_ERRORS:
                    self.counters["protect_failed"] += 1
                    self._log.exception("protect_sr", now, "SR protect failed on %r", t)

    def _consumer_for(self, transport: WebRtcTransport, media_ssrc: int) -> Consumer | None:
        return transport.consumers.get(media_ssrc)

    def _on_keyframe_request(self, transport: WebRtcTransport, item: rtcp.RtcpPacket,
                             now: float) -> None:
        for media_ssrc in rtcp.keyframe_request_ssrcs_untrusted(item):
            consumer = self._consumer_for(transport, media_ssrc)
            if consumer is not None:
                self.request_keyframe(consumer.producer, now)

    def request_keyframe(self, producer: Producer, now: float, force: bool = False) -> None:
        """One PLI upstream: at most one per second per stream for subscribers' requests, and
        no two within PLI_FLOOR even when forced (docs/PROTOCOL.md section 4). A forced request inside
        the floor is deferred to its end (`tick`), merged with any other waiting there."""
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
        producer = consumer.producer
        seqs = rtcp.parse_nack_untrusted(item)
        counters = self.counters
        budget = consumer.nack_budget(now)
        if budget <= 12:  # not even a bare RTP header fits: the whole NACK is over budget
            counters["nack_suppressed"] += len(seqs)
            return
        resent = consumer.resent
        rtx_log = consumer.rtx_log
        assert resent is not None and rtx_log is not None  # made by nack_budget
        if len(resent) > RESENT_PRUNE:
            horizon = now - NACK_REPEAT_INTERVAL
            consumer.resent = resent = {s: t for s, t in resent.items() if t > horizon}
        cache, mask, newest = producer.cache, producer.mask, producer.max_seq
        protect, send = transport.protect_rtp, self.send
        for i, seq in enumerate(seqs):
            if budget <= 12:  # spent: the rest are over budget, skip them cheaply (a flood)
                counters["nack_suppressed"] += len(seqs) - i
                break
            cached = cache[seq & mask]
            # The slot may hold a newer packet that wrapped into it: check its sequence, and
            # that it is within a cache's length of the newest (the SRTP window covers that).
            if (cached is None or _SEQ.unpack_from(cached, 2)[0] != seq
                    or (newest - seq) & 0xFFFF > mask):  # fmt: skip
                counters["nack_missed"] += 1
                continue
            last = resent.get(seq)
            size = len(cached)
            if (last is not None and now - last < NACK_REPEAT_INTERVAL) or size >= budget:
                counters["nack_suppressed"] += 1
                continue
            try:
                datagram = protect(cached)
            except PROTECT_ERRORS:
                # Costs this packet only, never the rest of the NACK or the compound.
                counters["nack_protect_failed"] += 1
                self._log.exception("nack_protect", now, "NACK resend to %s failed", addr)
                continue
            send(datagram, addr)
            counters["nack_retransmitted"] += 1
            resent[seq] = now
            rtx_log.append((now, size))
            consumer.rtx_bytes += size
            budget -= size

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
            for t in self.transports:
                for producer in t.producers_list:
                    producer.samples.append((now, producer.octets))

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

    def remove_producer(self, producer: Producer) -> None:
        """A track its publisher stopped sending (a renegotiation removed or changed it): closed
        with its consumers, and its SSRCs no longer route on the producer transport."""
        producer.close()
        transport = producer.transport
        for ssrc in (producer.ssrc, producer.rtx_ssrc):
            if ssrc is not None and transport.producers.get(ssrc) is producer:
                del transport.producers[ssrc]
        if producer in transport.producers_list:
            transport.producers_list.remove(producer)
        self._pli_pending.discard(producer)

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
