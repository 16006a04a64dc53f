"""Producer and Consumer: one publisher track, and that track on one subscriber's transport.

Plain state objects the Router owns (`Router.create_producer`, `Router.create_consumer`): the
Router keeps the SSRC tables that find them and closes them; a Producer holds the fan-out list
the forwarding loop walks (`targets`: one `(protect, addr)` per connected consumer), its NACK
cache and its RFC 3550 receive statistics; a Consumer holds its retransmission budget. Neither
touches a transport's state: they read a transport's keys and address, nothing more.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import MalformedInput
from . import rtcp
from .rtp import extension_offset_untrusted
from .srtp import PROTECT_ERRORS, TX_REPLAY_WINDOW

if TYPE_CHECKING:
    from .simulcast import SimulcastTrack
    from .transport import WebRtcTransport
    from .twcc import TwccSender

Address = tuple[str, int]

VIDEO_CACHE = 1024  # >= 500 packets (~1 s of 1.5 Mbit/s video), power of two for masking
AUDIO_CACHE = 256  # >= 200 packets; Opus NACK is rare but cheap to serve
NACK_WINDOW = 1.0  # the rolling window of the retransmission byte budget
SAMPLE_INTERVAL = 0.1  # forwarded-byte samples per producer (`Router.tick`), read by the budget
SAMPLES = 12  # > NACK_WINDOW / SAMPLE_INTERVAL
NACK_REPEAT_INTERVAL = 0.1  # one resend per (consumer, seq) per 100 ms (docs/PROTOCOL.md section 4)
RESENT_PRUNE = 512  # a consumer's resend times are pruned past this many entries
_SEQ = struct.Struct("!H")
# A retransmission re-protects a packet up to a cache's length behind the newest one; libsrtp
# refuses ("index too old") anything further back than the outbound replay window.
assert VIDEO_CACHE <= TX_REPLAY_WINDOW and AUDIO_CACHE <= TX_REPLAY_WINDOW


class Producer:
    """One publisher track, with its NACK cache, receive statistics and throttled PLI."""

    __slots__ = (
        "transport", "kind", "ssrc", "rtx_ssrc", "targets", "consumers", "cache", "mask",
        "packets", "base_seq", "max_seq", "cycles", "expected_prior", "received_prior",
        "last_sr_ntp", "last_sr_at", "last_pli_at", "octets", "samples", "closed", "level_ext",
        "twcc_ext", "group", "layer",
    )  # fmt: skip

    def __init__(self, transport: WebRtcTransport, kind: str, ssrc: int, rtx_ssrc: int | None):
        self.transport = transport
        self.kind = kind
        self.ssrc = ssrc
        self.rtx_ssrc = rtx_ssrc
        # The negotiated RFC 6464 audio level extension id of an audio track, 0 when none: the
        # Router feeds the levels to its dominant speaker detection (speaker.py).
        self.level_ext = 0
        # The publisher's transport-cc extension id (0: none): where the SFU writes its own
        # per-transport sequence number into each forwarded copy (docs/PROTOCOL.md section 4).
        self.twcc_ext = 0
        # A simulcast layer: its track (simulcast.py) and index (0 = lowest); None, 0 otherwise.
        self.group: SimulcastTrack | None = None
        self.layer = 0
        # (protect, addr, transport-cc sender or None) per connected, unpaused consumer: the
        # loop's whole per-destination state.
        self.targets: list[tuple[Callable[[bytes], bytes], Address, TwccSender | None]] = []
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
            if c.transport.connected and c.transport.remote_addr is not None and not c.paused:
                targets.append((c.transport.protect_rtp, c.transport.remote_addr, c.twcc))
                if c.octets_start < 0:
                    c.octets_start = self.octets  # forwarding to it starts now
        self.targets = targets


class Consumer:
    """A Producer's track on one subscriber's consumer transport."""

    __slots__ = ("producer", "transport", "octets_start", "resent", "rtx_log", "rtx_bytes",
                 "closed", "paused", "twcc")  # fmt: skip

    def __init__(
        self, producer: Producer, transport: WebRtcTransport, twcc: TwccSender | None = None
    ) -> None:
        self.producer = producer
        self.transport = transport
        self.paused = False  # video the subscriber does not show: not forwarded (preferences)
        self.twcc = twcc  # its transport's transport-cc sequence (None: not negotiated)
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

    def retransmit(
        self,
        seqs: list[int],
        now: float,
        send: Callable[[bytes, Address], None],
        counters: dict[str, int],
    ) -> None:
        """A subscriber's NACK: resend from the producer's cache, each (consumer, seq) at most
        once per NACK_REPEAT_INTERVAL and within `nack_budget` (docs/PROTOCOL.md section 4)."""
        transport, producer = self.transport, self.producer
        addr = transport.remote_addr
        if addr is None:
            return
        budget = self.nack_budget(now)
        if budget <= 12:  # not even a bare RTP header fits: the whole NACK is over budget
            counters["nack_suppressed"] += len(seqs)
            return
        resent = self.resent
        rtx_log = self.rtx_log
        assert resent is not None and rtx_log is not None  # made by nack_budget
        if len(resent) > RESENT_PRUNE:
            horizon = now - NACK_REPEAT_INTERVAL
            self.resent = resent = {s: t for s, t in resent.items() if t > horizon}
        cache, mask, newest = producer.cache, producer.mask, producer.max_seq
        protect = transport.protect_rtp
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
                # A fresh transport-cc number of ours: the cached one is the publisher's.
                datagram = protect(restamp(cached, producer.twcc_ext, self.twcc, now))
            except (MalformedInput, *PROTECT_ERRORS):
                # Costs this packet only, never the rest of the NACK or the compound.
                counters["nack_protect_failed"] += 1
                continue
            send(datagram, addr)
            counters["nack_retransmitted"] += 1
            resent[seq] = now
            rtx_log.append((now, size))
            self.rtx_bytes += size
            budget -= size

    def close(self) -> None:
        """Idempotent; detaches from the producer's fan-out (the Router drops it from its
        SSRC tables)."""
        if self.closed:
            return
        self.closed = True
        if self in self.producer.consumers:
            self.producer.consumers.remove(self)
            self.producer.rebuild_targets()


def restamp(packet: bytes, twcc_ext: int, twcc: TwccSender | None, now: float) -> bytes:
    """`packet` with a fresh transport-cc sequence number of ours (a cached packet carries the
    publisher's, meaningless on the subscriber's transport). MalformedInput on a bad header."""
    if twcc is None or not twcc_ext:
        return packet
    at = extension_offset_untrusted(packet, twcc_ext)
    if at < 0:
        return packet
    copy = bytearray(packet)
    _SEQ.pack_into(copy, at, twcc.next_seq(len(packet), now))
    return bytes(copy)
