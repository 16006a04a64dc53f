"""Transport-wide congestion control feedback (draft-holmer-rmcat-transport-wide-cc-extensions-01).

Sans-IO, two halves:

- receive side (publisher transports): `TwccReceiver.on_packet` records the transport-wide
  sequence number and arrival time of every RTP packet; `TwccReceiver.build` turns what arrived
  since the last call into RTPFB FMT=15 feedback packets (`build_feedback`), sent every ~100 ms
  so the browser's own estimator adapts its sending rate (DESIGN section 4, RTCP);
- send side (consumer transports): `TwccSender.next_seq` numbers each outgoing packet and
  remembers (send time, size); `TwccSender.on_feedback` matches a parsed `Feedback` against
  that history and returns `PacketResults` for the downlink estimator (bwe.py).

Wire format (draft section 3.1): after the RTPFB header (RFC 4585 6.1) the FCI carries the base
sequence number, the packet status count, a 24-bit signed reference time in 64 ms units, an
8-bit feedback packet count, then packet status chunks (3.1.3 run length, 3.1.4 status vector
with 1-bit or 2-bit symbols) and one receive delta per received packet (3.1.5: 1 byte unsigned
or 2 bytes signed, 250 µs units, each relative to the previous received packet, the first one
relative to the reference time).

Times: `now` is seconds (float, any monotonic origin). Arrival times inside `Feedback` are
integers in µs on the *receiver's* clock: reference_time * 64000 + the cumulated deltas * 250.
"""

from __future__ import annotations

import itertools
import struct
from array import array
from collections.abc import Sequence
from typing import NamedTuple

from ..errors import MalformedInput
from .rtcp import FMT_TWCC, PT_RTPFB, RtcpPacket, _content_end

# Packet status symbols (draft section 3.1.1); 3 is reserved.
NOT_RECEIVED = 0
SMALL_DELTA = 1
LARGE_DELTA = 2

DELTA_US = 250  # receive delta unit (3.1.5)
REFERENCE_US = 64_000  # reference time unit (3.1)
_TICKS_PER_REF = REFERENCE_US // DELTA_US  # 256
MAX_RUN = 0x1FFF  # 13-bit run length (3.1.3)
# A feedback packet reports at most this many received packets, which keeps it under ~1250
# bytes even for the worst status pattern (each chunk holds at least one received packet or is
# a run of losses between two of them): it fits one datagram after SRTCP.
MAX_RECEIVED_PER_PACKET = 200

_HEAD = struct.Struct("!HHI")  # base seq, status count, reference time (24) + fb count (8)
_U16 = struct.Struct("!H")
_I16 = struct.Struct("!h")
_FB_HEADER = struct.Struct("!BBHII")  # RFC 4585 6.1: V/P/FMT, PT, length, sender, media SSRC


class Feedback(NamedTuple):
    """One decoded transport-cc feedback. `seqs` lists every reported 16-bit sequence number
    (base_seq, base_seq + 1, ... modulo 2^16); `arrivals_us[i]` is the arrival of `seqs[i]` in
    µs on the receiver's clock, or None when it was reported not received."""

    base_seq: int
    fb_count: int
    reference_time: int  # signed 24-bit, 64 ms units
    seqs: list[int]
    arrivals_us: list[int | None]


# -- parsing -------------------------------------------------------------------------------------


def parse_feedback_untrusted(fci: bytes) -> Feedback:
    """Decode the FCI of an RTPFB FMT=15 packet (the bytes after the media SSRC). Bytes after
    the last receive delta are padding (3.1: zero padding to 32 bits, or RTCP padding when the
    caller did not strip it) and ignored. Raises only MalformedInput."""
    try:
        return _parse(fci)
    except MalformedInput:
        raise
    except (struct.error, IndexError, TypeError, ValueError, OverflowError) as exc:
        raise MalformedInput(f"transport-cc feedback unparseable: {exc}") from None


def parse_feedback_packet_untrusted(pkt: RtcpPacket) -> Feedback:
    """The same from one packet of `rtcp.iter_packets_untrusted`: checks PT=205 / FMT=15, the
    length field and RTCP padding, then decodes the FCI."""
    try:
        fmt, end = _content_end(pkt, PT_RTPFB, 20)
    except MalformedInput:
        raise
    except (struct.error, IndexError, TypeError, ValueError, AttributeError) as exc:
        raise MalformedInput(f"RTCP packet unparseable: {exc}") from None
    if fmt != FMT_TWCC:
        raise MalformedInput("RTPFB packet is not transport-cc feedback")
    return parse_feedback_untrusted(bytes(pkt.data[12:end]))


def _parse(fci: bytes) -> Feedback:
    size = len(fci)
    if size < 8:
        raise MalformedInput("transport-cc FCI shorter than its 8-byte header")
    base, count, ref = _HEAD.unpack_from(fci, 0)
    reference_time = ref >> 8
    if reference_time & 0x800000:  # signed 24-bit (libwebrtc reads it so; 3.1 "reference time")
        reference_time -= 0x1000000
    # Each 2-byte chunk covers at most MAX_RUN statuses: refuse a count the packet cannot hold
    # before allocating anything for it.
    if count > MAX_RUN * ((size - 8) // 2):
        raise MalformedInput("transport-cc packet status count exceeds what the chunks can hold")
    symbols = bytearray(count)
    filled = 0
    off = 8
    while filled < count:
        if off + 2 > size:
            raise MalformedInput("transport-cc status chunks truncated")
        chunk = _U16.unpack_from(fci, off)[0]
        off += 2
        left = count - filled
        if not chunk & 0x8000:
            # 3.1.3 run length chunk: T=0 | symbol (2) | run length (13).
            symbol = (chunk >> 13) & 0x03
            if symbol == 3:
                raise MalformedInput("transport-cc run length chunk with reserved symbol 3")
            run = min(chunk & MAX_RUN, left)
            if symbol:
                symbols[filled : filled + run] = bytes((symbol,)) * run
            filled += run
        elif not chunk & 0x4000:
            # 3.1.4 status vector, S=0: fourteen 1-bit symbols, first one in the high bit.
            n = min(14, left)
            for i in range(n):
                symbols[filled + i] = (chunk >> (13 - i)) & 0x01
            filled += n
        else:
            # 3.1.4 status vector, S=1: seven 2-bit symbols.
            n = min(7, left)
            for i in range(n):
                symbol = (chunk >> (12 - 2 * i)) & 0x03
                if symbol == 3:
                    raise MalformedInput("transport-cc status vector with reserved symbol 3")
                symbols[filled + i] = symbol
            filled += n
    seqs = [(base + i) & 0xFFFF for i in range(count)]
    arrivals: list[int | None] = [None] * count
    tick = reference_time * _TICKS_PER_REF  # running arrival in 250 µs ticks (3.1.5)
    for i in range(count):
        symbol = symbols[i]
        if symbol == SMALL_DELTA:
            if off >= size:
                raise MalformedInput("transport-cc receive deltas truncated")
            tick += fci[off]
            off += 1
            arrivals[i] = tick * DELTA_US
        elif symbol == LARGE_DELTA:
            if off + 2 > size:
                raise MalformedInput("transport-cc receive deltas truncated")
            tick += _I16.unpack_from(fci, off)[0]
            off += 2
            arrivals[i] = tick * DELTA_US
    return Feedback(base, ref & 0xFF, reference_time, seqs, arrivals)


# -- building ------------------------------------------------------------------------------------


def _encode_chunks(symbols: bytearray) -> bytearray:
    """Packet status chunks for `symbols`: a run-length chunk for a run of 14 or more equal
    symbols (or for all the remaining ones), a 1-bit status vector while the next 14 symbols
    carry no large delta, else a run-length chunk for a run of 7 or more, else a 2-bit vector.
    Every vector chunk so holds a received packet, which bounds the chunk bytes."""
    out = bytearray()
    n = len(symbols)
    i = 0
    while i < n:
        first = symbols[i]
        run = 1
        while i + run < n and run < MAX_RUN and symbols[i + run] == first:
            run += 1
        left = n - i
        if run >= 14 or run == left:
            out += _U16.pack((first << 13) | run)
            i += run
        elif LARGE_DELTA not in symbols[i : i + 14]:
            chunk = 0x8000
            for k in range(min(14, left)):
                chunk |= symbols[i + k] << (13 - k)
            out += _U16.pack(chunk)
            i += 14
        elif run >= 7:
            out += _U16.pack((first << 13) | run)
            i += run
        else:
            chunk = 0xC000
            for k in range(min(7, left)):
                chunk |= symbols[i + k] << (12 - 2 * k)
            out += _U16.pack(chunk)
            i += 7
    return out


def _packet(sender_ssrc: int, media_ssrc: int, base_seq: int, fb_count: int, reference: int,
            symbols: bytearray, deltas: bytearray) -> bytes:  # fmt: skip
    fci = bytearray(_HEAD.pack(base_seq & 0xFFFF, len(symbols),
                               ((reference & 0xFFFFFF) << 8) | (fb_count & 0xFF)))  # fmt: skip
    fci += _encode_chunks(symbols)
    fci += deltas
    # RTCP padding to 32 bits (RFC 3550 6.4.1, as libwebrtc writes it): zeros, then the count.
    pad = -(12 + len(fci)) % 4
    b0 = 0x80 | FMT_TWCC
    if pad:
        fci += bytes(pad - 1) + bytes((pad,))
        b0 |= 0x20
    return _FB_HEADER.pack(b0, PT_RTPFB, (12 + len(fci)) // 4 - 1, sender_ssrc & 0xFFFFFFFF,
                           media_ssrc & 0xFFFFFFFF) + bytes(fci)  # fmt: skip


def build_feedback(sender_ssrc: int, media_ssrc: int, base_seq: int, fb_count: int,
                   packets: Sequence[tuple[int, int]]) -> list[bytes]:  # fmt: skip
    """Complete RTCP transport-cc packets for the received `packets`, (seq, arrival µs) in
    sequence order; a seq missing between base_seq and the last one is reported not received.

    Returns a list: a new feedback packet (fb_count + 1, a new base and reference time) starts
    when a receive delta does not fit 16 signed bits (3.1.5, about ±8.2 s) or after
    MAX_RECEIVED_PER_PACKET received packets. Seqs may be 16-bit or unwrapped: only their
    distance from base_seq modulo 2^16 is used. Arrival times are quantized down to 250 µs
    (the reference time to 64 ms), so parse(build(x)) gives x back exactly for arrivals that are
    multiples of 250 µs and whose reference time fits 24 signed bits (±6.2 days); a receiver
    with a longer life wraps it, and the sender unwraps it (TwccSender)."""
    out: list[bytes] = []
    n = len(packets)
    i = 0
    base = base_seq
    while i < n:
        reference = packets[i][1] // REFERENCE_US
        prev_tick = reference * _TICKS_PER_REF
        symbols = bytearray()
        deltas = bytearray()
        j = i
        while j < n and j - i < MAX_RECEIVED_PER_PACKET:
            seq, arrival = packets[j]
            offset = (seq - base) & 0xFFFF
            if offset == 0xFFFF:  # the 16-bit status count would overflow
                if j > i:
                    break
                base, offset = seq & 0xFFFF, 0
            if offset < len(symbols):
                raise ValueError("packets must be in increasing sequence order, no duplicates")
            tick = arrival // DELTA_US
            delta = tick - prev_tick
            if not -0x8000 <= delta <= 0x7FFF:
                break  # j > i here: the first delta of a packet is 0..255 by construction
            symbols += bytes(offset - len(symbols))  # the gap: not received
            if 0 <= delta <= 0xFF:
                symbols.append(SMALL_DELTA)
                deltas.append(delta)
            else:
                symbols.append(LARGE_DELTA)
                deltas += _I16.pack(delta)
            prev_tick = tick
            j += 1
        out.append(_packet(sender_ssrc, media_ssrc, base, fb_count, reference, symbols, deltas))
        fb_count = (fb_count + 1) & 0xFF
        base = (base + len(symbols)) & 0xFFFF
        i = j
    return out


# -- receive side --------------------------------------------------------------------------------

_EMPTY = -(1 << 62)  # a ring slot tag no unwrapped sequence number can take


class TwccReceiver:
    """Arrival recorder for one publisher transport (libwebrtc's RemoteEstimatorProxy in
    periodic mode). Sequence numbers are unwrapped against the highest one seen. The first
    arrival of a seq counts, duplicates are ignored. A packet older than the next feedback's
    start moves that start back, so the next feedback reports it (and re-reports what follows
    it), as libwebrtc does. At most `capacity` sequence numbers are kept: older ones are dropped
    unreported and counted in `dropped`."""

    def __init__(self, capacity: int = 8192) -> None:
        if capacity & (capacity - 1) or capacity < 16:
            raise ValueError("capacity must be a power of two >= 16")
        self._mask = capacity - 1
        self._capacity = capacity
        self._tags = array("q", [_EMPTY]) * capacity
        self._arrivals = array("q", bytes(8 * capacity))
        self._max = _EMPTY  # highest unwrapped seq received
        self._start = _EMPTY  # first seq the next feedback reports
        self._origin = 0.0  # `now` of the first packet: arrival times start at 0
        self._fb_count = 0
        self.received = 0
        self.duplicates = 0
        self.dropped = 0  # sequence numbers that left the window before being reported

    def on_packet(self, seq: int, now: float) -> None:
        """A packet with transport-wide sequence number `seq` (16 bits) arrived at `now`."""
        top = self._max
        if top == _EMPTY:
            self._origin = now
            ext = seq & 0xFFFF
            self._max = self._start = ext
        else:
            diff = (seq - top) & 0xFFFF
            ext = top + diff - 0x10000 if diff >= 0x8000 else top + diff
            if ext <= top - self._capacity:
                self.dropped += 1  # too late to fit the window
                return
        slot = ext & self._mask
        if self._tags[slot] == ext:
            self.duplicates += 1
            return
        self._tags[slot] = ext
        self._arrivals[slot] = round((now - self._origin) * 1_000_000)
        self.received += 1
        if ext < self._start:
            self._start = ext  # reordered behind an earlier feedback: report it again from here
        if ext > top:
            self._max = ext
            floor = ext - self._capacity + 1
            if self._start < floor:
                self.dropped += floor - self._start
                self._start = floor

    def build(self, now: float, sender_ssrc: int, media_ssrc: int) -> list[bytes]:
        """Feedback packets for everything received since the previous call ([] if nothing).
        `now` is unused (arrival times are those recorded); it keeps the call sans-IO-shaped."""
        del now
        top = self._max
        start = self._start
        if top == _EMPTY or start > top:
            return []
        tags = self._tags
        arrivals = self._arrivals
        mask = self._mask
        packets: list[tuple[int, int]] = []
        for ext in range(start, top + 1):
            slot = ext & mask
            if tags[slot] == ext:
                packets.append((ext, arrivals[slot]))
        self._start = top + 1
        if not packets:
            return []
        out = build_feedback(sender_ssrc, media_ssrc, packets[0][0], self._fb_count, packets)
        self._fb_count = (self._fb_count + len(out)) & 0xFF
        return out


# -- send side -----------------------------------------------------------------------------------


class PacketResults(NamedTuple):
    """What one feedback said about packets this side sent, in send order: parallel lists.
    `arrival_us[i]` is None for a packet reported lost; arrival times are on the remote clock
    (unwrapped across feedbacks), send times on ours; both in µs."""

    source: int  # which TwccSender: arrival times are comparable only within one source
    send_us: list[int]
    arrival_us: list[int | None]
    sizes: list[int]


_sources = itertools.count(1)


class TwccSender:
    """Transport-wide sequence numbers and send history for one consumer transport.

    Each packet is reported at most once as received and at most once as lost; a packet
    reported lost and later received (the receiver re-reports after reordering) is reported
    again as received."""

    def __init__(self, capacity: int = 4096) -> None:
        if capacity & (capacity - 1) or capacity < 16:
            raise ValueError("capacity must be a power of two >= 16")
        self._mask = capacity - 1
        self._capacity = capacity
        self._tags = array("q", [_EMPTY]) * capacity
        self._send_us = array("q", bytes(8 * capacity))
        self._sizes = array("q", bytes(8 * capacity))
        self._state = bytearray(capacity)  # 0 unreported, 1 reported lost, 2 reported received
        self._next = 0  # next unwrapped seq
        self._ref_raw: int | None = None  # last feedback's 24-bit reference time
        self._ref = 0  # its unwrapped value
        self.source = next(_sources)
        self.sent_bytes = 0  # everything numbered so far: the estimator's probe pacing reads it

    def next_seq(self, size: int, now: float) -> int:
        """The 16-bit sequence number to write into the next outgoing packet of `size` bytes."""
        ext = self._next
        self._next = ext + 1
        slot = ext & self._mask
        self._tags[slot] = ext
        self._send_us[slot] = round(now * 1_000_000)
        self._sizes[slot] = size
        self._state[slot] = 0
        self.sent_bytes += size
        return ext & 0xFFFF

    def on_feedback(self, fb: Feedback) -> PacketResults:
        """Match `fb` against the send history: packets never sent, out of the history, or
        already reported are skipped."""
        send_us: list[int] = []
        arrival_us: list[int | None] = []
        sizes: list[int] = []
        result = PacketResults(self.source, send_us, arrival_us, sizes)
        if self._next == 0:
            return result
        # 3.1: the reference time wraps at 2^24 * 64 ms; keep it continuous across feedbacks
        # so arrival times of different feedbacks compare.
        raw = fb.reference_time & 0xFFFFFF
        if self._ref_raw is None:
            self._ref = fb.reference_time
        else:
            d = (raw - self._ref_raw) & 0xFFFFFF
            self._ref += d - 0x1000000 if d >= 0x800000 else d
        self._ref_raw = raw
        shift = (self._ref - fb.reference_time) * REFERENCE_US
        last = self._next - 1
        diff = (fb.base_seq - last) & 0xFFFF
        base = last + diff - 0x10000 if diff >= 0x8000 else last + diff
        oldest = last - self._capacity + 1
        tags, state, mask = self._tags, self._state, self._mask
        arrivals = fb.arrivals_us
        # Only the part of the feedback that falls inside the history can match.
        for i in range(max(0, oldest - base), min(len(arrivals), last - base + 1)):
            ext = base + i
            slot = ext & mask
            if tags[slot] != ext:
                continue
            arrival = arrivals[i]
            if arrival is None:
                if state[slot]:
                    continue
                state[slot] = 1
                send_us.append(self._send_us[slot])
                arrival_us.append(None)
            else:
                if state[slot] == 2:
                    continue
                state[slot] = 2
                send_us.append(self._send_us[slot])
                arrival_us.append(arrival + shift)
            sizes.append(self._sizes[slot])
        return result
