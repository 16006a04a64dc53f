"""Producer and Consumer: one publisher track, and that track on one subscriber's transport.

Plain state objects the Router owns (`Router.create_producer`, `Router.create_consumer`): the
Router keeps the SSRC tables that find them and closes them; a Producer holds the fan-out list
the forwarding loop walks (`targets`: one `(protect, addr)` per connected consumer), its NACK
cache and its RFC 3550 receive statistics; a Consumer holds its retransmission budget. Neither
touches a transport's state: they read a transport's keys and address, nothing more.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import rtcp
from .srtp import TX_REPLAY_WINDOW

if TYPE_CHECKING:
    from .transport import WebRtcTransport

Address = tuple[str, int]

VIDEO_CACHE = 1024  # >= 500 packets (~1 s of 1.5 Mbit/s video), power of two for masking
AUDIO_CACHE = 256  # >= 200 packets; Opus NACK is rare but cheap to serve
NACK_WINDOW = 1.0  # the rolling window of the retransmission byte budget
SAMPLE_INTERVAL = 0.1  # forwarded-byte samples per producer (`Router.tick`), read by the budget
SAMPLES = 12  # > NACK_WINDOW / SAMPLE_INTERVAL
# A retransmission re-protects a packet up to a cache's length behind the newest one; libsrtp
# refuses ("index too old") anything further back than the outbound replay window.
assert VIDEO_CACHE <= TX_REPLAY_WINDOW and AUDIO_CACHE <= TX_REPLAY_WINDOW


class Producer:
    """One publisher track, with its NACK cache, receive statistics and throttled PLI."""

    __slots__ = (
        "transport", "kind", "ssrc", "rtx_ssrc", "targets", "consumers", "cache", "mask",
        "packets", "base_seq", "max_seq", "cycles", "expected_prior", "received_prior",
        "last_sr_ntp", "last_sr_at", "last_pli_at", "octets", "samples", "closed", "level_ext",
    )  # fmt: skip

    def __init__(self, transport: WebRtcTransport, kind: str, ssrc: int, rtx_ssrc: int | None):
        self.transport = transport
        self.kind = kind
        self.ssrc = ssrc
        self.rtx_ssrc = rtx_ssrc
        # The negotiated RFC 6464 audio level extension id of an audio track, 0 when none: the
        # Router feeds the levels to its dominant speaker detection (speaker.py).
        self.level_ext = 0
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
        """Idempotent; detaches from the producer's fan-out (the Router drops it from its
        SSRC tables)."""
        if self.closed:
            return
        self.closed = True
        if self in self.producer.consumers:
            self.producer.consumers.remove(self)
            self.producer.rebuild_targets()
