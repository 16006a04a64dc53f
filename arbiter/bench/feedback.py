"""What a browser's receiver sends back (issue 12): the RTCP of a synthetic subscriber.

Per subscribing leg, as Chrome does on a consumer connection:

- a receiver report every second (RFC 3550 6.4.2) with one block per received SSRC, its
  fraction lost and cumulative loss from sequence gaps, the interarrival jitter of A.8 from the
  RTP timestamps, and LSR/DLSR from the last sender report heard for that SSRC;
- a generic NACK (RFC 4585 6.2.1) for video sequence numbers found missing, sent at the next
  20 ms tick and repeated every 100 ms while still missing, for at most 1 s;
- a PLI (RFC 4585 6.3.1) for every video SSRC when its first packet arrives;
- transport-cc feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01) every 100 ms, only
  when the server's offer carries the transport-wide-cc header extension (our answer mirrors the
  offer's extensions, as a browser's does). Arbiter does not offer it; Janus does.

Packets are built with the SFU's own builders (`arbiter.sfu.rtcp`, and `arbiter.sfu.twcc`
for transport-cc feedback).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..errors import MalformedInput
from ..sfu import rtcp
from ..sfu.rtp import extension_offset_untrusted
from ..sfu.sdp_grammar import URI_TRANSPORT_CC as TWCC_URI
from ..sfu.twcc import build_feedback

VIDEO_CLOCK, AUDIO_CLOCK = 90_000, 48_000
NACK_TICK = 0.02  # seconds between NACK decisions
NACK_REPEAT = 0.1  # a still-missing packet is asked for again after this
NACK_GIVE_UP = 1.0  # and forgotten after this
RR_INTERVAL = 1.0
TWCC_INTERVAL = 0.1


@dataclass
class ReceptionState:
    """RFC 3550 A.3 and A.8 bookkeeping of one received SSRC."""

    clock: int
    video: bool
    expected_prior: int = 0
    received_prior: int = 0
    transit: float | None = None
    jitter: float = 0.0  # in timestamp units
    last_sr: int = 0  # middle 32 bits of the last SR's NTP timestamp
    last_sr_at: float = 0.0
    # extended seq -> (first noticed, last NACKed or 0.0)
    missing: dict[int, list[float]] = field(default_factory=dict)

    def arrival(self, rtp_timestamp: int, now: float) -> None:
        transit = now * self.clock - rtp_timestamp
        if self.transit is not None:
            d = abs(transit - self.transit)
            self.jitter += (d - self.jitter) / 16
        self.transit = transit


def block(ssrc: int, packets: int, expected: int, highest: int, state: ReceptionState,
          now: float) -> rtcp.ReportBlock:  # fmt: skip
    """A report block from cumulative counts (RFC 3550 A.3)."""
    expected_interval = expected - state.expected_prior
    received_interval = packets - state.received_prior
    state.expected_prior, state.received_prior = expected, packets
    lost_interval = expected_interval - received_interval
    fraction = 0 if expected_interval <= 0 or lost_interval <= 0 else \
        (lost_interval << 8) // expected_interval  # fmt: skip
    dlsr = int((now - state.last_sr_at) * 65536) if state.last_sr else 0
    return rtcp.ReportBlock(ssrc, fraction, expected - packets, max(0, highest),
                            int(state.jitter), state.last_sr, dlsr)  # fmt: skip


def build_twcc(sender_ssrc: int, media_ssrc: int, fb_count: int,
               arrivals: list[tuple[int, float]]) -> bytes | None:  # fmt: skip
    """Transport-cc feedback for (transport-wide seq, arrival monotonic seconds) pairs, with
    the SFU's own builder (`arbiter.sfu.twcc.build_feedback`): missing sequence numbers in the
    covered range are reported as not received; one compound when it takes several packets."""
    if not arrivals:
        return None
    ordered = sorted(dict(arrivals).items())
    base = ordered[0][0]
    ordered = [(seq, t) for seq, t in ordered if seq - base < 0x7FFF]
    packets = [(seq, int(t * 1_000_000)) for seq, t in ordered]
    return b"".join(build_feedback(sender_ssrc, media_ssrc, base & 0xFFFF, fb_count, packets))


def transport_seq(packet: bytes, extension_id: int) -> int | None:
    """The transport-wide sequence number in header extension `extension_id` (RFC 8285)."""
    try:
        at = extension_offset_untrusted(packet, extension_id)
    except MalformedInput:
        return None
    if at < 0 or at + 2 > len(packet):
        return None
    return int.from_bytes(packet[at : at + 2], "big")


def twcc_extension_id(sdp_text: str) -> int | None:
    """The id the server's SDP gives the transport-wide-cc extension, or None."""
    for line in sdp_text.splitlines():
        if line.startswith("a=extmap:") and TWCC_URI in line:
            ident = line[len("a=extmap:") :].split()[0].split("/")[0]
            return int(ident)
    return None


def ntp_now() -> int:
    return rtcp.ntp_from_unix(time.time())
