"""RTP packets (RFC 3550 section 5.1) with header extensions (RFC 8285) and RTX (RFC 4588).

Sans-IO: bytes in, values out. Two tiers:

- Hot-path accessors (`ssrc_of`, `seq_of`, `payload_type_of`, `is_rtcp`) read one field with a
  precompiled `struct.Struct`; they allocate nothing beyond the returned int. The forwarding loop
  checks the datagram length once (>= 12, the fixed header) and then calls these; they are NOT
  `_untrusted` and may raise `struct.error` on shorter input.
- `*_untrusted` parsers validate everything and raise only `MalformedInput`.

`build_rtp` exists for tests and for the benchmark's synthetic publishers.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import MalformedInput

RTP_VERSION = 2
FIXED_HEADER_LENGTH = 12

# RFC 8285 section 4.2 (one-byte) and 4.3 (two-byte) "defined by profile" values.
ONE_BYTE_PROFILE = 0xBEDE
TWO_BYTE_PROFILE_MASK = 0xFFF0
TWO_BYTE_PROFILE = 0x1000

_HEADER = struct.Struct("!BBHII")  # V/P/X/CC, M/PT, sequence, timestamp, SSRC
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_EXT_HEADER = struct.Struct("!HH")  # defined-by-profile, length in 32-bit words
# One precompiled struct per possible CSRC count (CC is 4 bits, RFC 3550 5.1).
_CSRCS = tuple(struct.Struct(f"!{n}I") for n in range(16))


def is_rtcp(packet: bytes) -> bool:
    """True if a datagram on the muxed RTP/RTCP port is RTCP (RFC 5761 section 4).

    RTCP packet types 192..223 sit in the second byte where RTP has M + PT; RTP payload types
    64..95 are avoided precisely so that this byte range is unambiguous.
    """
    return len(packet) >= 2 and 192 <= packet[1] <= 223


def ssrc_of(packet: bytes) -> int:
    """SSRC of an RTP packet. Caller guarantees len(packet) >= 12."""
    return _U32.unpack_from(packet, 8)[0]


def seq_of(packet: bytes) -> int:
    """Sequence number of an RTP packet. Caller guarantees len(packet) >= 12."""
    return _U16.unpack_from(packet, 2)[0]


def payload_type_of(packet: bytes) -> int:
    """Payload type (marker bit stripped). Caller guarantees len(packet) >= 12."""
    return packet[1] & 0x7F


@dataclass(slots=True)
class RtpHeader:
    """A parsed RTP fixed header plus CSRCs and header extensions (RFC 3550 5.1, RFC 8285)."""

    version: int
    padding: bool
    extension: bool
    csrc_count: int
    marker: bool
    payload_type: int
    sequence_number: int
    timestamp: int
    ssrc: int
    csrcs: tuple[int, ...]
    header_length: int  # offset of the payload
    extensions: dict[int, bytes]  # RFC 8285 element id -> value
    payload_length: int  # excluding padding


def _one_byte_extensions_untrusted(packet: bytes, start: int, end: int) -> dict[int, bytes]:
    """RFC 8285 section 4.2: ID (4 bits), L (4 bits, length - 1), data; 0 bytes are padding."""
    out: dict[int, bytes] = {}
    i = start
    while i < end:
        b = packet[i]
        if b == 0:  # padding byte between or after elements
            i += 1
            continue
        ext_id = b >> 4
        if ext_id == 15:
            # Reserved ID: "the local identifier value 15 is reserved for future extension and
            # MUST NOT be used"; a receiver stops processing the block (RFC 8285 4.2).
            break
        length = (b & 0x0F) + 1
        i += 1
        if i + length > end:
            raise MalformedInput("RTP one-byte header extension runs past its block")
        out[ext_id] = packet[i : i + length]
        i += length
    return out


def _two_byte_extensions_untrusted(packet: bytes, start: int, end: int) -> dict[int, bytes]:
    """RFC 8285 section 4.3: ID (8 bits), length (8 bits, may be 0), data; ID 0 is padding."""
    out: dict[int, bytes] = {}
    i = start
    while i < end:
        ext_id = packet[i]
        if ext_id == 0:
            i += 1
            continue
        if i + 2 > end:
            raise MalformedInput("RTP two-byte header extension truncated")
        length = packet[i + 1]
        i += 2
        if i + length > end:
            raise MalformedInput("RTP two-byte header extension runs past its block")
        out[ext_id] = packet[i : i + length]
        i += length
    return out


def parse_rtp_header_untrusted(packet: bytes) -> RtpHeader:
    """Parse and validate an RTP header (RFC 3550 5.1 and A.1). Raises only MalformedInput."""
    try:
        size = len(packet)
        if size < FIXED_HEADER_LENGTH:
            raise MalformedInput("RTP packet shorter than the 12-byte fixed header")
        b0, b1, seq, ts, ssrc = _HEADER.unpack_from(packet, 0)
        if b0 >> 6 != RTP_VERSION:
            raise MalformedInput("RTP version is not 2")
        cc = b0 & 0x0F
        offset = FIXED_HEADER_LENGTH + 4 * cc
        if offset > size:
            raise MalformedInput("RTP CSRC list truncated")
        csrcs: tuple[int, ...] = _CSRCS[cc].unpack_from(packet, FIXED_HEADER_LENGTH)
        extensions: dict[int, bytes] = {}
        has_ext = bool(b0 & 0x10)
        if has_ext:
            # RFC 3550 5.3.1: 16-bit profile value, 16-bit length in words, then the data.
            if offset + 4 > size:
                raise MalformedInput("RTP header extension header truncated")
            profile, words = _EXT_HEADER.unpack_from(packet, offset)
            start = offset + 4
            offset = start + 4 * words
            if offset > size:
                raise MalformedInput("RTP header extension runs past the packet")
            if profile == ONE_BYTE_PROFILE:
                extensions = _one_byte_extensions_untrusted(packet, start, offset)
            elif profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE:
                extensions = _two_byte_extensions_untrusted(packet, start, offset)
            # Any other profile is opaque to us: skip it, as RFC 3550 5.3.1 allows.
        padding = 0
        has_padding = bool(b0 & 0x20)
        if has_padding:
            # RFC 3550 5.1: the last octet counts the padding octets, itself included.
            if size == offset:
                raise MalformedInput("RTP padding bit set on a packet with no payload")
            padding = packet[-1]
            if padding == 0 or padding > size - offset:
                raise MalformedInput("RTP padding count is zero or larger than the payload")
        return RtpHeader(
            version=RTP_VERSION,
            padding=has_padding,
            extension=has_ext,
            csrc_count=cc,
            marker=bool(b1 & 0x80),
            payload_type=b1 & 0x7F,
            sequence_number=seq,
            timestamp=ts,
            ssrc=ssrc,
            csrcs=csrcs,
            header_length=offset,
            payload_length=size - offset - padding,
            extensions=extensions,
        )
    except MalformedInput:
        raise
    except (struct.error, IndexError, TypeError, ValueError) as exc:
        raise MalformedInput(f"RTP packet unparseable: {exc}") from None


def get_extension_untrusted(packet: bytes, ext_id: int) -> bytes | None:
    """The value of header extension `ext_id` (the negotiated a=extmap id), or None."""
    offset, length = extension_span_untrusted(packet, ext_id)
    return None if offset < 0 else packet[offset : offset + length]


def rtx_original_seq_untrusted(packet: bytes) -> int:
    """RFC 4588 section 4: an RTX payload starts with the 2-byte original sequence number."""
    header = parse_rtp_header_untrusted(packet)
    if header.payload_length < 2:
        raise MalformedInput("RTX packet has no original sequence number")
    return _U16.unpack_from(packet, header.header_length)[0]


def _pack_one_byte_extensions(extensions: Mapping[int, bytes]) -> bytes:
    """RFC 8285 4.2 block (with its 0xBEDE header), zero-padded to a 32-bit boundary."""
    body = bytearray()
    for ext_id, value in sorted(extensions.items()):
        if not 1 <= ext_id <= 14:
            raise ValueError(f"one-byte header extension id must be 1..14, got {ext_id}")
        if not 1 <= len(value) <= 16:
            raise ValueError("one-byte header extension value must be 1..16 bytes")
        body.append((ext_id << 4) | (len(value) - 1))
        body += value
    body += b"\x00" * (-len(body) % 4)
    return _EXT_HEADER.pack(ONE_BYTE_PROFILE, len(body) // 4) + bytes(body)


def build_rtp(
    payload_type: int,
    sequence_number: int,
    timestamp: int,
    ssrc: int,
    payload: bytes,
    marker: bool = False,
    extensions: Mapping[int, bytes] | None = None,
) -> bytes:
    """Serialize an RTP packet (RFC 3550 5.1), with one-byte header extensions if given."""
    if not 0 <= payload_type <= 127:
        raise ValueError("payload type must be 0..127")
    b0 = RTP_VERSION << 6
    ext = b""
    if extensions:
        b0 |= 0x10
        ext = _pack_one_byte_extensions(extensions)
    b1 = (0x80 if marker else 0) | payload_type
    header = _HEADER.pack(
        b0, b1, sequence_number & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc & 0xFFFFFFFF
    )
    return header + ext + payload


# -- Hot-path inspection for simulcast (layers.py): offsets into the packet, no objects --------


def payload_offset_untrusted(packet: bytes) -> int:
    """Offset of the payload: after the fixed header, the CSRCs and the header extension block
    (RFC 3550 5.1 and 5.3.1). Raises MalformedInput when the header runs past the packet."""
    size = len(packet)
    if size < FIXED_HEADER_LENGTH:
        raise MalformedInput("RTP packet shorter than the 12-byte fixed header")
    b0 = packet[0]
    if b0 >> 6 != RTP_VERSION:
        raise MalformedInput("RTP version is not 2")
    offset = FIXED_HEADER_LENGTH + 4 * (b0 & 0x0F)
    if b0 & 0x10:
        if offset + 4 > size:
            raise MalformedInput("RTP header extension header truncated")
        offset += 4 + 4 * ((packet[offset + 2] << 8) | packet[offset + 3])
    if offset > size:
        raise MalformedInput("RTP header runs past the packet")
    return offset


def payload_end_untrusted(packet: bytes, payload_offset: int) -> int:
    """End of the payload, before any RTP padding (RFC 3550 5.1: with P set, the last octet
    counts the padding octets, itself included). Raises MalformedInput on a bad count."""
    size = len(packet)
    if size < FIXED_HEADER_LENGTH:
        raise MalformedInput("RTP packet shorter than the 12-byte fixed header")
    if not packet[0] & 0x20:
        return size
    if size <= payload_offset:
        raise MalformedInput("RTP padding bit set on a packet with no payload")
    padding = packet[size - 1]
    if padding == 0 or padding > size - payload_offset:
        raise MalformedInput("RTP padding count is zero or larger than the payload")
    return size - padding


def extension_span_untrusted(packet: bytes, ext_id: int) -> tuple[int, int]:
    """(offset, length) of the data of header extension element `ext_id`, (-1, 0) when absent.

    Walks the one-byte (RFC 8285 4.2) or two-byte (4.3) block in place, without building the
    dict `parse_rtp_header_untrusted` makes; an id that repeats (RFC 8285 forbids it) yields its
    first element. Raises MalformedInput when the block is broken before the element.
    """
    size = len(packet)
    if size < FIXED_HEADER_LENGTH:
        raise MalformedInput("RTP packet shorter than the 12-byte fixed header")
    b0 = packet[0]
    if b0 >> 6 != RTP_VERSION:
        raise MalformedInput("RTP version is not 2")
    if not b0 & 0x10:
        return -1, 0
    start = FIXED_HEADER_LENGTH + 4 * (b0 & 0x0F)
    if start + 4 > size:
        raise MalformedInput("RTP header extension header truncated")
    profile = (packet[start] << 8) | packet[start + 1]
    end = start + 4 + 4 * ((packet[start + 2] << 8) | packet[start + 3])
    if end > size:
        raise MalformedInput("RTP header extension runs past the packet")
    i = start + 4
    if profile == ONE_BYTE_PROFILE:
        while i < end:
            b = packet[i]
            if b == 0:  # padding (4.2)
                i += 1
                continue
            element = b >> 4
            if element == 15:  # reserved: stop processing the block (4.2)
                return -1, 0
            length = (b & 0x0F) + 1
            i += 1
            if i + length > end:
                raise MalformedInput("RTP one-byte header extension runs past its block")
            if element == ext_id:
                return i, length
            i += length
    elif profile & TWO_BYTE_PROFILE_MASK == TWO_BYTE_PROFILE:
        while i < end:
            element = packet[i]
            if element == 0:  # padding (4.3)
                i += 1
                continue
            if i + 2 > end:
                raise MalformedInput("RTP two-byte header extension truncated")
            length = packet[i + 1]
            i += 2
            if i + length > end:
                raise MalformedInput("RTP two-byte header extension runs past its block")
            if element == ext_id:
                return i, length
            i += length
    # Another profile is opaque (RFC 3550 5.3.1): no RFC 8285 elements in it.
    return -1, 0


def extension_offset_untrusted(packet: bytes, ext_id: int) -> int:
    """Offset of the data of header extension element `ext_id`, -1 when absent (RFC 8285)."""
    return extension_span_untrusted(packet, ext_id)[0]


# RFC 8852 section 3: "the only allowed byte values for these IDs are decimal 48 through 57, 65
# through 90, and 97 through 122"; WebRTC (addTransceiver sendEncodings) caps a rid at 16.
_RID_BYTES = frozenset(range(48, 58)) | frozenset(range(65, 91)) | frozenset(range(97, 123))
MAX_RID_LENGTH = 16


def rid_untrusted(packet: bytes, ext_id: int) -> str | None:
    """The RtpStreamId or RepairedRtpStreamId (RFC 8852 section 3) carried in element `ext_id`,
    None when absent; MalformedInput unless it is 1-16 alphanumeric ASCII characters."""
    offset, length = extension_span_untrusted(packet, ext_id)
    if offset < 0:
        return None
    value = packet[offset : offset + length]
    if not 1 <= length <= MAX_RID_LENGTH or not _RID_BYTES.issuperset(value):
        raise MalformedInput("RTP stream id is not 1-16 alphanumeric characters")
    return value.decode("ascii")
