"""The receiving side of RTCP the SFU never needs (for tests, fuzzing and measurement): parsers
of SDES, BYE, REMB and transport-cc feedback as a browser would read what the SFU sends, FIR
and BYE builders, and NTP back to Unix time. The SFU's own RTCP is arbiter/sfu/rtcp.py (and
arbiter/sfu/twcc.py for transport-cc); these moved out of the product because nothing in it
uses them (issue 14)."""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NamedTuple

from arbiter.errors import MalformedInput
from arbiter.sfu.rtcp import (
    _REMB_HEAD,
    _U16,
    _U32,
    FMT_AFB,
    FMT_FIR,
    FMT_TWCC,
    MAX_COUNT,
    NTP_UNIX_OFFSET,
    PT_BYE,
    PT_PSFB,
    PT_RTPFB,
    PT_SDES,
    TWCC_DELTA_UNIT_US,
    TWCC_LARGE_DELTA,
    TWCC_NOT_RECEIVED,
    TWCC_SMALL_DELTA,
    RtcpPacket,
    _content_end,
    _feedback_header,
    _guard,
    _header,
)

_TWCC_HEAD = struct.Struct("!HHI")  # base seq, status count, ref time (24) + fb pkt count (8)
_I16 = struct.Struct("!h")


class TwccFeedback(NamedTuple):
    base_seq: int
    packet_status_count: int
    reference_time: int  # signed, in 64 ms units
    fb_pkt_count: int
    # (transport-wide seq, status symbol, receive delta in µs or None when not received)
    packets: list[tuple[int, int, int | None]]


@_guard
def parse_sdes_untrusted(pkt: RtcpPacket) -> list[tuple[int, dict[int, bytes]]]:
    """RFC 3550 6.5: SC chunks of SSRC + items, each list ended by a null item and padded to
    a 32-bit boundary. Returns [(ssrc, {item type: value})]."""
    count, end = _content_end(pkt, PT_SDES, 8 if pkt.data[0] & 0x1F else 4)
    data = pkt.data
    out: list[tuple[int, dict[int, bytes]]] = []
    off = 4
    for _ in range(count):
        if off + 4 > end:
            raise MalformedInput("SDES chunk truncated")
        ssrc = _U32.unpack_from(data, off)[0]
        off += 4
        items: dict[int, bytes] = {}
        while True:
            if off >= end:
                raise MalformedInput("SDES item list not terminated")
            item_type = data[off]
            if item_type == 0:
                off += 1
                off += -off % 4  # the next chunk starts on a 32-bit boundary
                break
            if off + 2 > end or off + 2 + data[off + 1] > end:
                raise MalformedInput("SDES item runs past the packet")
            length = data[off + 1]
            items[item_type] = data[off + 2:off + 2 + length]
            off += 2 + length
        out.append((ssrc, items))
    return out


@_guard
def parse_bye_untrusted(pkt: RtcpPacket) -> list[int]:
    """RFC 3550 6.6: the SSRCs leaving; the optional reason is ignored."""
    count, end = _content_end(pkt, PT_BYE, 4)
    if 4 + 4 * count > end:
        raise MalformedInput("BYE SSRC list runs past the packet")
    return [_U32.unpack_from(pkt.data, 4 + 4 * i)[0] for i in range(count)]


def build_bye(ssrcs: Sequence[int]) -> bytes:
    if not 1 <= len(ssrcs) <= MAX_COUNT:
        raise ValueError("a BYE carries 1..31 SSRCs")
    return _header(len(ssrcs), PT_BYE, 4 + 4 * len(ssrcs)) + b"".join(
        _U32.pack(s) for s in ssrcs)


def build_fir(sender_ssrc: int, media_ssrc: int, seq_nr: int) -> bytes:
    """RFC 5104 4.3.1: media SSRC field 0, one FCI entry naming the stream."""
    return _feedback_header(FMT_FIR, PT_PSFB, sender_ssrc, 0, 8) + _U32.pack(
        media_ssrc & 0xFFFFFFFF) + bytes((seq_nr & 0xFF, 0, 0, 0))


def is_remb(pkt: RtcpPacket) -> bool:
    """A PSFB AFB packet whose FCI starts with the "REMB" identifier."""
    return (pkt.packet_type == PT_PSFB and pkt.fmt == FMT_AFB
            and pkt.data[12:16] == b"REMB")


@_guard
def parse_remb_untrusted(pkt: RtcpPacket) -> tuple[int, list[int]]:
    """(bitrate in bit/s = mantissa << exponent, the SSRCs it applies to)."""
    fmt, end = _content_end(pkt, PT_PSFB, 20)
    if fmt != FMT_AFB:
        raise MalformedInput("PSFB packet is not application layer feedback")
    ident, num, exp_hi, mant_lo = _REMB_HEAD.unpack_from(pkt.data, 12)
    if ident != b"REMB":
        raise MalformedInput("AFB packet is not REMB")
    if 20 + 4 * num > end:
        raise MalformedInput("REMB SSRC list runs past the packet")
    bitrate = (((exp_hi & 0x03) << 16) | mant_lo) << (exp_hi >> 2)
    return bitrate, [_U32.unpack_from(pkt.data, 20 + 4 * i)[0] for i in range(num)]


@_guard
def parse_twcc_untrusted(pkt: RtcpPacket) -> TwccFeedback:
    """draft-holmer-rmcat-transport-wide-cc-extensions-01 section 3.1.

    Status chunks (3.1.3, 3.1.4) are read until `packet_status_count` symbols are known; then
    one receive delta per "received" symbol (3.1.5): 1 byte unsigned or 2 bytes signed, in
    250 µs units. Bytes after the last delta are zero padding (Chrome pads without the P bit).
    """
    fmt, end = _content_end(pkt, PT_RTPFB, 20)
    if fmt != FMT_TWCC:
        raise MalformedInput("RTPFB packet is not transport-cc feedback")
    data = pkt.data
    base_seq, count, ref = _TWCC_HEAD.unpack_from(data, 12)
    reference_time = ref >> 8
    if reference_time & 0x800000:
        reference_time -= 0x1000000
    statuses: list[int] = []
    off = 20
    while len(statuses) < count:
        if off + 2 > end:
            raise MalformedInput("transport-cc status chunks truncated")
        chunk = _U16.unpack_from(data, off)[0]
        off += 2
        left = count - len(statuses)
        if not chunk & 0x8000:
            # Run length chunk: T=0, 2-bit symbol, 13-bit run length.
            statuses.extend([(chunk >> 13) & 0x03] * min(chunk & 0x1FFF, left))
        elif not chunk & 0x4000:
            # Status vector, S=0: fourteen 1-bit symbols (0 not received, 1 small delta).
            statuses.extend((chunk >> (13 - i)) & 0x01 for i in range(min(14, left)))
        else:
            # Status vector, S=1: seven 2-bit symbols.
            statuses.extend((chunk >> (12 - 2 * i)) & 0x03 for i in range(min(7, left)))
    packets: list[tuple[int, int, int | None]] = []
    for i, status in enumerate(statuses):
        seq = (base_seq + i) & 0xFFFF
        if status == TWCC_NOT_RECEIVED:
            packets.append((seq, status, None))
        elif status == TWCC_SMALL_DELTA:
            if off >= end:
                raise MalformedInput("transport-cc receive deltas truncated")
            packets.append((seq, status, data[off] * TWCC_DELTA_UNIT_US))
            off += 1
        elif status == TWCC_LARGE_DELTA:
            if off + 2 > end:
                raise MalformedInput("transport-cc receive deltas truncated")
            packets.append((seq, status, _I16.unpack_from(data, off)[0] * TWCC_DELTA_UNIT_US))
            off += 2
        else:
            raise MalformedInput("transport-cc reserved status symbol 3")
    return TwccFeedback(base_seq, count, reference_time, ref & 0xFF, packets)


def ntp_to_unix(ntp: int) -> float:
    """Inverse of `ntp_from_unix` within NTP era 0."""
    return (ntp >> 32) - NTP_UNIX_OFFSET + (ntp & 0xFFFFFFFF) / 4294967296.0
