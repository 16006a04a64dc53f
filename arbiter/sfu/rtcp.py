"""RTCP (RFC 3550 section 6) and the feedback messages a WebRTC SFU needs (RFC 4585, RFC 5104,
REMB, transport-wide congestion control).

Sans-IO: `iter_packets_untrusted` splits a decrypted compound datagram into `RtcpPacket`s; the
typed `parse_*_untrusted` functions decode the ones the caller cares about. Every parser re-reads
the header from `pkt.data` (it never trusts the attributes) and raises only `MalformedInput`.
Builders take trusted values and return the wire bytes; they raise ValueError on out-of-range
arguments (a bug on our side, not a peer's).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple, TypeVar

from ..errors import MalformedInput

# RTCP packet types (RFC 3550 12.1, RFC 4585 6.1).
PT_SR = 200
PT_RR = 201
PT_SDES = 202
PT_BYE = 203
PT_APP = 204
PT_RTPFB = 205
PT_PSFB = 206
PT_XR = 207

# Feedback message types, carried in the 5-bit count field.
FMT_NACK = 1  # RTPFB, RFC 4585 6.2.1
FMT_TWCC = 15  # RTPFB, draft-holmer-rmcat-transport-wide-cc-extensions-01 3.1
FMT_PLI = 1  # PSFB, RFC 4585 6.3.1
FMT_FIR = 4  # PSFB, RFC 5104 4.3.1
FMT_AFB = 15  # PSFB application layer feedback, RFC 4585 6.4; REMB is one

SDES_CNAME = 1  # RFC 3550 6.5.1

# Transport-cc packet status symbols (draft-holmer-...-01 3.1.1).
TWCC_NOT_RECEIVED = 0
TWCC_SMALL_DELTA = 1
TWCC_LARGE_DELTA = 2
TWCC_DELTA_UNIT_US = 250

MAX_COUNT = 31  # the 5-bit RC/SC field
NTP_UNIX_OFFSET = 2_208_988_800  # seconds from 1900-01-01 (NTP era 0) to 1970-01-01

_HDR = struct.Struct("!BBH")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_FB = struct.Struct("!BBHII")  # header, sender SSRC, media SSRC (RFC 4585 6.1)
_SR_INFO = struct.Struct("!IQIII")  # SSRC, NTP, RTP timestamp, packet count, octet count
_BLOCK = struct.Struct("!IIIIII")  # RFC 3550 6.4.1 report block
_REMB_HEAD = struct.Struct("!4sBBH")  # "REMB", num SSRC, exp (6) + mantissa (18)


class RtcpPacket:
    """One packet of a compound, undecoded beyond its common header."""

    __slots__ = ("packet_type", "fmt", "sender_ssrc", "media_ssrc", "data")

    def __init__(self, packet_type: int, fmt: int, sender_ssrc: int, media_ssrc: int,
                 data: bytes) -> None:
        self.packet_type = packet_type
        self.fmt = fmt  # the 5-bit count / FMT field
        self.sender_ssrc = sender_ssrc
        self.media_ssrc = media_ssrc  # feedback packets only (RFC 4585 6.1); 0 otherwise
        self.data = data  # this packet, header and padding included

    def __repr__(self) -> str:
        return (f"RtcpPacket(packet_type={self.packet_type}, fmt={self.fmt}, "
                f"sender_ssrc={self.sender_ssrc}, media_ssrc={self.media_ssrc}, "
                f"data={self.data!r})")


class ReportBlock(NamedTuple):
    """RFC 3550 6.4.1 reception report block."""

    ssrc: int
    fraction_lost: int  # 0..255, loss fraction * 256
    packets_lost: int  # cumulative, signed 24-bit
    highest_seq: int  # extended highest sequence number received
    jitter: int
    lsr: int  # middle 32 bits of the last SR's NTP timestamp
    dlsr: int  # delay since that SR, 1/65536 s


class SenderReport(NamedTuple):
    ssrc: int
    ntp_timestamp: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: list[ReportBlock]


class ReceiverReport(NamedTuple):
    ssrc: int
    reports: list[ReportBlock]


_T = TypeVar("_T")


def _guard(parse: Callable[[RtcpPacket], _T]) -> Callable[[RtcpPacket], _T]:
    """Turn any low-level decoding error into MalformedInput: the `_untrusted` contract."""

    def wrapper(pkt: RtcpPacket) -> _T:
        try:
            return parse(pkt)
        except MalformedInput:
            raise
        except (struct.error, IndexError, TypeError, ValueError, AttributeError,
                UnicodeError) as exc:
            raise MalformedInput(f"RTCP packet unparseable: {exc}") from None

    wrapper.__name__ = parse.__name__
    wrapper.__doc__ = parse.__doc__
    return wrapper


# -- framing -----------------------------------------------------------------------------------


def iter_packets_untrusted(compound: bytes) -> list[RtcpPacket]:
    """Split a compound RTCP packet (RFC 3550 6.1; RFC 5506 reduced-size is accepted too).

    Every packet must be version 2, its length field (32-bit words minus one, RFC 3550 6.4.1)
    must fit the buffer, and it must hold at least the sender SSRC (8 bytes); feedback packets
    (RFC 4585 6.1) at least the media SSRC too (12 bytes). Unknown types (APP, XR, ...) are
    returned like any other so the caller skips them.
    """
    try:
        size = len(compound)
        if size == 0:
            raise MalformedInput("empty RTCP packet")
        out: list[RtcpPacket] = []
        off = 0
        while off < size:
            if size - off < 4:
                raise MalformedInput("RTCP header truncated")
            b0, pt, words = _HDR.unpack_from(compound, off)
            if b0 >> 6 != 2:
                raise MalformedInput("RTCP version is not 2")
            length = (words + 1) * 4
            end = off + length
            if end > size:
                raise MalformedInput("RTCP length field runs past the datagram")
            if length < 8:
                raise MalformedInput("RTCP packet too short for a sender SSRC")
            if b0 & 0x20:
                # RFC 3550 6.4.1: the last octet counts padding octets, itself included.
                pad = compound[end - 1]
                if pad == 0 or pad > length - 8:
                    raise MalformedInput("RTCP padding count out of range")
            sender = _U32.unpack_from(compound, off + 4)[0]
            media = 0
            if pt == PT_RTPFB or pt == PT_PSFB:
                if length < 12:
                    raise MalformedInput("RTCP feedback packet too short for a media SSRC")
                media = _U32.unpack_from(compound, off + 8)[0]
            out.append(RtcpPacket(pt, b0 & 0x1F, sender, media, compound[off:end]))
            off = end
        return out
    except MalformedInput:
        raise
    except (struct.error, IndexError, TypeError, ValueError) as exc:
        raise MalformedInput(f"RTCP compound unparseable: {exc}") from None


def _content_end(pkt: RtcpPacket, packet_type: int, min_length: int) -> tuple[int, int]:
    """Validate `pkt.data`'s header against `packet_type`; return (fmt, end of content)."""
    data = pkt.data
    b0, pt, words = _HDR.unpack_from(data, 0)
    if b0 >> 6 != 2 or pt != packet_type:
        raise MalformedInput(f"not an RTCP packet of type {packet_type}")
    length = (words + 1) * 4
    if length != len(data):
        raise MalformedInput("RTCP length field does not match the packet")
    end = length
    if b0 & 0x20:
        pad = data[-1]
        if pad == 0 or pad > length - 8:
            raise MalformedInput("RTCP padding count out of range")
        end -= pad
    if end < min_length:
        raise MalformedInput("RTCP packet too short for its type")
    return b0 & 0x1F, end


# -- SR / RR -----------------------------------------------------------------------------------


def _blocks_untrusted(data: bytes, offset: int, count: int, end: int) -> list[ReportBlock]:
    if offset + count * _BLOCK.size > end:
        raise MalformedInput("RTCP report blocks run past the packet")
    blocks = []
    for _ in range(count):
        ssrc, loss, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(data, offset)
        lost = loss & 0xFFFFFF
        if lost & 0x800000:  # signed 24-bit (RFC 3550 6.4.1, "cumulative number of packets lost")
            lost -= 0x1000000
        blocks.append(ReportBlock(ssrc, loss >> 24, lost, highest, jitter, lsr, dlsr))
        offset += _BLOCK.size
    return blocks


@_guard
def parse_sender_report_untrusted(pkt: RtcpPacket) -> SenderReport:
    """RFC 3550 6.4.1. Profile-specific extensions after the blocks are ignored."""
    count, end = _content_end(pkt, PT_SR, 4 + _SR_INFO.size)
    ssrc, ntp, rtp_ts, packets, octets = _SR_INFO.unpack_from(pkt.data, 4)
    reports = _blocks_untrusted(pkt.data, 4 + _SR_INFO.size, count, end)
    return SenderReport(ssrc, ntp, rtp_ts, packets, octets, reports)


@_guard
def parse_receiver_report_untrusted(pkt: RtcpPacket) -> ReceiverReport:
    """RFC 3550 6.4.2."""
    count, end = _content_end(pkt, PT_RR, 8)
    ssrc = _U32.unpack_from(pkt.data, 4)[0]
    return ReceiverReport(ssrc, _blocks_untrusted(pkt.data, 8, count, end))


def _pack_block(block: ReportBlock) -> bytes:
    # Clamp the signed 24-bit cumulative loss rather than wrap it (RFC 3550 6.4.1).
    lost = min(0x7FFFFF, max(-0x800000, block.packets_lost)) & 0xFFFFFF
    return _BLOCK.pack(
        block.ssrc & 0xFFFFFFFF, (min(255, max(0, block.fraction_lost)) << 24) | lost,
        block.highest_seq & 0xFFFFFFFF, block.jitter & 0xFFFFFFFF,
        block.lsr & 0xFFFFFFFF, block.dlsr & 0xFFFFFFFF,
    )


def _header(count: int, packet_type: int, length: int) -> bytes:
    """Common header for a packet of `length` bytes (a multiple of 4), no padding."""
    return _HDR.pack(0x80 | count, packet_type, length // 4 - 1)


def build_receiver_report(ssrc: int, reports: Sequence[ReportBlock]) -> bytes:
    """RR packets (RFC 3550 6.4.2): at most 31 blocks each, so more blocks give several RRs
    one after the other in the compound (RFC 3550 6.4). No blocks gives one empty RR."""
    out = bytearray()
    first = True
    for i in range(0, len(reports), MAX_COUNT):
        chunk = reports[i:i + MAX_COUNT]
        out += _header(len(chunk), PT_RR, 8 + 24 * len(chunk)) + _U32.pack(ssrc)
        out += b"".join(_pack_block(b) for b in chunk)
        first = False
    if first:
        out += _header(0, PT_RR, 8) + _U32.pack(ssrc)
    return bytes(out)


def build_sender_report(ssrc: int, ntp_timestamp: int, rtp_timestamp: int, packet_count: int,
                        octet_count: int, reports: Sequence[ReportBlock] = ()) -> bytes:
    """SR (RFC 3550 6.4.1); blocks beyond 31 follow in RR packets (RFC 3550 6.4)."""
    head = reports[:MAX_COUNT]
    out = _header(len(head), PT_SR, 28 + 24 * len(head)) + _SR_INFO.pack(
        ssrc, ntp_timestamp & 0xFFFFFFFFFFFFFFFF, rtp_timestamp & 0xFFFFFFFF,
        packet_count & 0xFFFFFFFF, octet_count & 0xFFFFFFFF,
    ) + b"".join(_pack_block(b) for b in head)
    if len(reports) > MAX_COUNT:
        out += build_receiver_report(ssrc, reports[MAX_COUNT:])
    return out


# -- SDES / BYE --------------------------------------------------------------------------------


def build_sdes(ssrc: int, cname: str) -> bytes:
    """One SDES chunk with a CNAME item (RFC 3550 6.5.1)."""
    value = cname.encode()
    if len(value) > 255:
        raise ValueError("CNAME longer than 255 bytes")
    chunk = _U32.pack(ssrc) + bytes((SDES_CNAME, len(value))) + value + b"\x00"
    chunk += b"\x00" * (-len(chunk) % 4)
    return _header(1, PT_SDES, 4 + len(chunk)) + chunk


# -- feedback: PLI, FIR, NACK ------------------------------------------------------------------


def _feedback_header(fmt: int, packet_type: int, sender_ssrc: int, media_ssrc: int,
                     fci_length: int) -> bytes:
    return _FB.pack(0x80 | fmt, packet_type, (12 + fci_length) // 4 - 1,
                    sender_ssrc & 0xFFFFFFFF, media_ssrc & 0xFFFFFFFF)


@_guard
def keyframe_request_ssrcs_untrusted(pkt: RtcpPacket) -> list[int]:
    """Media SSRCs a PLI (RFC 4585 6.3.1) or FIR (RFC 5104 4.3.1) asks a keyframe for.

    A FIR's media SSRC field is 0 by RFC 5104 4.3.1.2; the targets are in its FCI entries
    (SSRC, command sequence number, 24 reserved bits)."""
    fmt, end = _content_end(pkt, PT_PSFB, 12)
    if fmt == FMT_PLI:
        return [_U32.unpack_from(pkt.data, 8)[0]]
    if fmt == FMT_FIR:
        if (end - 12) % 8:
            raise MalformedInput("FIR FCI is not a whole number of 8-byte entries")
        return [_U32.unpack_from(pkt.data, off)[0] for off in range(12, end, 8)]
    raise MalformedInput("PSFB packet is neither PLI nor FIR")


def build_pli(sender_ssrc: int, media_ssrc: int) -> bytes:
    """RFC 4585 6.3.1: no FCI."""
    return _feedback_header(FMT_PLI, PT_PSFB, sender_ssrc, media_ssrc, 0)


@_guard
def parse_nack_untrusted(pkt: RtcpPacket) -> list[int]:
    """Generic NACK (RFC 4585 6.2.1): each PID + BLP entry expanded to sequence numbers,
    PID first, then PID+i+1 for every set bit i of BLP, modulo 2^16. Duplicates across
    entries are dropped (first occurrence kept) so one request costs one retransmission."""
    fmt, end = _content_end(pkt, PT_RTPFB, 16)
    if fmt != FMT_NACK:
        raise MalformedInput("RTPFB packet is not a generic NACK")
    if (end - 12) % 4:
        raise MalformedInput("NACK FCI is not a whole number of 4-byte entries")
    data = pkt.data
    seqs: dict[int, None] = {}
    for off in range(12, end, 4):
        pid, blp = _U16.unpack_from(data, off)[0], _U16.unpack_from(data, off + 2)[0]
        seqs[pid] = None
        for i in range(16):
            if blp >> i & 1:
                seqs[(pid + i + 1) & 0xFFFF] = None
    return list(seqs)


def build_nack(sender_ssrc: int, media_ssrc: int, seqs: Iterable[int]) -> bytes:
    """Pack sequence numbers into PID/BLP entries (RFC 4585 6.2.1). A seq within 1..16 after
    the current entry's PID (modulo 2^16) becomes a BLP bit, so pass them in ascending
    order for the tightest packing; any order is still correct."""
    entries: list[list[int]] = []
    for seq in seqs:
        seq &= 0xFFFF
        if entries:
            diff = (seq - entries[-1][0]) & 0xFFFF
            if 1 <= diff <= 16:
                entries[-1][1] |= 1 << (diff - 1)
                continue
            if diff == 0:
                continue
        entries.append([seq, 0])
    if not entries:
        raise ValueError("a NACK needs at least one sequence number")
    fci = b"".join(_U16.pack(pid) + _U16.pack(blp) for pid, blp in entries)
    return _feedback_header(FMT_NACK, PT_RTPFB, sender_ssrc, media_ssrc, len(fci)) + fci


# -- REMB (draft-alvestrand-rmcat-remb-03 section 2.2) -----------------------------------------


def build_remb(sender_ssrc: int, bitrate: int, ssrcs: Sequence[int]) -> bytes:
    """REMB with a 6-bit exponent and 18-bit mantissa (rounded down); media SSRC field 0."""
    if bitrate < 0 or len(ssrcs) > 255:
        raise ValueError("REMB needs bitrate >= 0 and at most 255 SSRCs")
    mantissa, exp = int(bitrate), 0
    while mantissa > 0x3FFFF:
        mantissa >>= 1
        exp += 1
    if exp > 63:
        raise ValueError("REMB bitrate too large for a 6-bit exponent")
    fci = _REMB_HEAD.pack(b"REMB", len(ssrcs), (exp << 2) | (mantissa >> 16),
                          mantissa & 0xFFFF) + b"".join(_U32.pack(s) for s in ssrcs)
    return _feedback_header(FMT_AFB, PT_PSFB, sender_ssrc, 0, len(fci)) + fci


# -- transport-wide congestion control feedback ------------------------------------------------


# -- NTP timestamps (RFC 3550 section 4) -------------------------------------------------------


def ntp_from_unix(t: float) -> int:
    """64-bit NTP timestamp (seconds since 1900 in the high 32 bits, fraction in the low 32)
    for a Unix time; wraps at the NTP era boundary (2036) as the wire format does."""
    seconds = math.floor(t)
    fraction = min(int((t - seconds) * 4294967296.0), 0xFFFFFFFF)
    return (((seconds + NTP_UNIX_OFFSET) & 0xFFFFFFFF) << 32) | fraction


def ntp_middle32(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp: the LSR field of a report block (RFC 3550 6.4.1)."""
    return (ntp >> 16) & 0xFFFFFFFF
