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

Packets are built with the SFU's own builders (`arbiter.sfu.rtcp`), except transport-cc
feedback, for which rtcp.py has only a parser: `build_twcc` below, checked against that parser
in tests/test_bench.py.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass, field

from ..sfu import rtcp
from ..sfu.sdp_grammar import URI_TRANSPORT_CC as TWCC_URI

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
    """Transport-cc feedback for (transport-wide seq, arrival monotonic seconds) pairs.

    One run-length or two-bit vector chunk per run; receive deltas in 250 µs units, 1 byte
    (symbol 1) when 0..255, else 2 bytes signed (symbol 2). Missing sequence numbers in the
    covered range are reported as not received (symbol 0)."""
    if not arrivals:
        return None
    arrivals = sorted(dict(arrivals).items())
    base = arrivals[0][0]
    span = arrivals[-1][0] - base + 1
    if span > 0x7FFF:
        arrivals = [a for a in arrivals if a[0] - base < 0x7FFF]
        span = arrivals[-1][0] - base + 1
    at = dict(arrivals)
    reference = int(arrivals[0][1] * 1000 / 64)  # 64 ms units
    previous = reference * 64_000  # µs
    symbols: list[int] = []
    deltas = bytearray()
    for seq in range(base, base + span):
        t = at.get(seq)
        if t is None:
            symbols.append(rtcp.TWCC_NOT_RECEIVED)
            continue
        us = int(t * 1_000_000)
        delta = round((us - previous) / rtcp.TWCC_DELTA_UNIT_US)
        previous += delta * rtcp.TWCC_DELTA_UNIT_US
        if 0 <= delta <= 255:
            symbols.append(rtcp.TWCC_SMALL_DELTA)
            deltas.append(delta)
        else:
            delta = max(-0x8000, min(0x7FFF, delta))
            symbols.append(rtcp.TWCC_LARGE_DELTA)
            deltas += struct.pack("!h", delta)
    chunks = bytearray()
    i = 0
    while i < len(symbols):  # run-length chunks (3.1.3): 0 | S (2 bits) | run (13 bits)
        j = i
        while j < len(symbols) and symbols[j] == symbols[i] and j - i < 0x1FFF:
            j += 1
        chunks += struct.pack("!H", (symbols[i] << 13) | (j - i))
        i = j
    body = struct.pack("!HHI", base & 0xFFFF, span, ((reference & 0xFFFFFF) << 8)
                       | (fb_count & 0xFF)) + chunks + deltas  # fmt: skip
    body += bytes(-len(body) % 4)
    header = struct.pack("!BBHII", 0x80 | rtcp.FMT_TWCC, rtcp.PT_RTPFB, (12 + len(body)) // 4 - 1,
                         sender_ssrc, media_ssrc)  # fmt: skip
    return header + body


def transport_seq(packet: bytes, extension_id: int) -> int | None:
    """The transport-wide sequence number from a one-byte-header extension (RFC 8285 4.2)."""
    if not packet[0] & 0x10:
        return None
    cc = packet[0] & 0x0F
    offset = 12 + 4 * cc
    if len(packet) < offset + 4 or packet[offset : offset + 2] != b"\xbe\xde":
        return None
    end = offset + 4 + 4 * struct.unpack_from("!H", packet, offset + 2)[0]
    pos = offset + 4
    end = min(end, len(packet))
    while pos < end:
        byte = packet[pos]
        if byte == 0:
            pos += 1
            continue
        ident, length = byte >> 4, (byte & 0x0F) + 1
        if ident == 15:
            return None
        if ident == extension_id and length == 2 and pos + 3 <= end:
            return struct.unpack_from("!H", packet, pos + 1)[0]
        pos += 1 + length
    return None


def twcc_extension_id(sdp_text: str) -> int | None:
    """The id the server's SDP gives the transport-wide-cc extension, or None."""
    for line in sdp_text.splitlines():
        if line.startswith("a=extmap:") and TWCC_URI in line:
            ident = line[len("a=extmap:") :].split()[0].split("/")[0]
            return int(ident)
    return None


def ntp_now() -> int:
    return rtcp.ntp_from_unix(time.time())
