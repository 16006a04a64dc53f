"""Codec payload inspection for simulcast: VP8 (RFC 7741, RFC 6386) and H264 (RFC 6184).

Sans-IO and hot-path friendly: every function takes the packet and the payload offset that
`rtp.payload_offset_untrusted` found, reads a few bytes in place, and returns ints/bools (the VP8
descriptor is a tuple built without a Python-level constructor). What the SFU needs to know:

- where a packet's VP8 picture id and TL0PICIDX sit, so `layers.LayerRewriter` can rewrite them
  in place to keep them continuous across layer switches;
- whether a packet starts a keyframe, the only place a subscriber can switch layers (simulcast
  layers are independent streams: a delta frame of another layer cannot be decoded);
- a VP8 keyframe's dimensions, which tell the SFU each layer's height (`choose_layer`).

Each `_untrusted` function raises only MalformedInput.
"""

from __future__ import annotations

from typing import NamedTuple

from ..errors import MalformedInput
from .rtp import payload_end_untrusted


class Vp8Descriptor(NamedTuple):
    """The VP8 payload descriptor of one RTP packet (RFC 7741 section 4.2). Offsets are into the
    whole RTP packet; -1 marks an absent optional field."""

    start: bool  # S: the first packet of a VP8 partition
    partition: int  # PID (3 bits)
    picture_id: int  # -1 when I = 0
    picture_id_offset: int  # first byte of the PictureID field (the one holding M), -1 if absent
    picture_id_bits: int  # 7 or 15 (M bit), 0 if absent
    tl0picidx: int  # -1 when L = 0
    tl0picidx_offset: int
    tid: int  # -1 when T = 0 (TID and Y share the T/K byte with KEYIDX)
    keyidx: int  # -1 when K = 0
    keyframe: bool  # S = 1, PID = 0 and the payload header's P bit (inverse key frame) is 0
    data_offset: int  # first byte of the VP8 payload after the descriptor


_new_descriptor = tuple.__new__  # skips NamedTuple's Python-level __new__ on the hot path

# RFC 6386 section 9.1: a key frame's uncompressed data chunk has a 3-byte frame tag, then the
# start code 0x9d 0x01 0x2a, then 16-bit little-endian width and height, each with 2 scaling bits.
KEYFRAME_START_CODE = b"\x9d\x01\x2a"
_KEYFRAME_HEADER = 10


def vp8_descriptor_untrusted(
    packet: bytes, payload_offset: int, payload_end: int = -1
) -> Vp8Descriptor:
    """Parse the RFC 7741 section 4.2 descriptor at `payload_offset`; `payload_end` (default: the
    packet's end) excludes RTP padding. MalformedInput when a field or the payload is missing."""
    end = len(packet) if payload_end < 0 else payload_end
    i = payload_offset
    if i < 0 or i >= end:
        raise MalformedInput("VP8 payload is empty")
    #  |X|R|N|S|R| PID |   the required first octet
    b = packet[i]
    i += 1
    start = bool(b & 0x10)
    partition = b & 0x07
    picture_id = picture_id_offset = tl0picidx = tl0picidx_offset = tid = keyidx = -1
    picture_id_bits = 0
    if b & 0x80:  # X: the extension octet |I|L|T|K| RSV |
        if i >= end:
            raise MalformedInput("VP8 descriptor extension octet missing")
        x = packet[i]
        i += 1
        if x & 0x80:  # I: |M| PictureID (7 bits), and 8 more bits when M = 1
            if i >= end:
                raise MalformedInput("VP8 picture id missing")
            picture_id_offset = i
            p = packet[i]
            if p & 0x80:
                if i + 1 >= end:
                    raise MalformedInput("VP8 15-bit picture id truncated")
                picture_id = ((p & 0x7F) << 8) | packet[i + 1]
                picture_id_bits = 15
                i += 2
            else:
                picture_id = p
                picture_id_bits = 7
                i += 1
        if x & 0x40:  # L: TL0PICIDX (8 bits)
            if i >= end:
                raise MalformedInput("VP8 TL0PICIDX missing")
            tl0picidx_offset = i
            tl0picidx = packet[i]
            i += 1
        if x & 0x30:  # T or K: |TID|Y| KEYIDX | share one octet (4.2)
            if i >= end:
                raise MalformedInput("VP8 TID/KEYIDX octet missing")
            tk = packet[i]
            i += 1
            if x & 0x20:
                tid = tk >> 6
            if x & 0x10:
                keyidx = tk & 0x1F
    if i >= end:
        # A descriptor with no VP8 data after it carries nothing to decode.
        raise MalformedInput("VP8 packet has a descriptor but no payload")
    # RFC 7741 4.3: the payload header starts partition 0 (S = 1, PID = 0); its lowest bit P is
    # the inverse key frame flag.
    keyframe = start and partition == 0 and not packet[i] & 0x01
    return _new_descriptor(  # type: ignore[no-any-return]
        Vp8Descriptor,
        (start, partition, picture_id, picture_id_offset, picture_id_bits, tl0picidx,
         tl0picidx_offset, tid, keyidx, keyframe, i),
    )  # fmt: skip


def vp8_keyframe_size_untrusted(
    packet: bytes, payload_offset: int, payload_end: int = -1
) -> tuple[int, int] | None:
    """(width, height) of the keyframe this packet starts, None if it starts no keyframe.

    RFC 6386 section 9.1: the upper two bits of each 16-bit dimension are a scaling code, not
    part of the size. MalformedInput when the keyframe header is truncated or lacks its start code.
    """
    d = vp8_descriptor_untrusted(packet, payload_offset, payload_end)
    if not d.keyframe:
        return None
    end = len(packet) if payload_end < 0 else payload_end
    i = d.data_offset
    if i + _KEYFRAME_HEADER > end:
        raise MalformedInput("VP8 keyframe header truncated")
    if packet[i + 3 : i + 6] != KEYFRAME_START_CODE:
        raise MalformedInput("VP8 keyframe without the 9d 01 2a start code")
    width = (packet[i + 6] | (packet[i + 7] << 8)) & 0x3FFF
    height = (packet[i + 8] | (packet[i + 9] << 8)) & 0x3FFF
    return width, height


# RFC 6184 section 5.4 / 1.3 (H.264 table 7-1): NAL unit types that make a packet a keyframe.
H264_IDR = 5
H264_SPS = 7
H264_STAP_A = 24
H264_FU_A = 28
_H264_KEY_TYPES = (H264_IDR, H264_SPS)


def h264_is_keyframe_untrusted(packet: bytes, payload_offset: int, payload_end: int = -1) -> bool:
    """True if the packet carries an IDR slice or an SPS: as a single NAL unit (types 1-23), in
    an STAP-A (RFC 6184 5.7.1), or as the first fragment (S bit) of an FU-A (5.8)."""
    end = len(packet) if payload_end < 0 else payload_end
    i = payload_offset
    if i < 0 or i >= end:
        raise MalformedInput("H264 payload is empty")
    nal_type = packet[i] & 0x1F
    if nal_type == H264_STAP_A:
        # STAP-A: the header octet, then (16-bit size, NAL unit) pairs to the end.
        i += 1
        if i >= end:
            raise MalformedInput("H264 STAP-A without aggregation units")
        key = False
        while i < end:
            if i + 2 >= end:
                raise MalformedInput("H264 STAP-A unit size truncated")
            size = (packet[i] << 8) | packet[i + 1]
            i += 2
            if size == 0 or i + size > end:
                raise MalformedInput("H264 STAP-A unit runs past the payload")
            if packet[i] & 0x1F in _H264_KEY_TYPES:
                key = True  # keep walking: the whole aggregate must be well formed
            i += size
        return key
    if nal_type == H264_FU_A:
        # FU indicator, then the FU header |S|E|R| Type |.
        if i + 1 >= end:
            raise MalformedInput("H264 FU-A header missing")
        fu = packet[i + 1]
        return bool(fu & 0x80) and fu & 0x1F in _H264_KEY_TYPES
    return nal_type in _H264_KEY_TYPES


def is_keyframe_untrusted(codec: str, packet: bytes, payload_offset: int) -> bool:
    """Whether the packet starts (VP8) or carries (H264) a keyframe; False for other codecs,
    which the SFU does not switch layers for. `codec` is the SDP encoding name, any case."""
    name = codec.upper()
    if name != "VP8" and name != "H264":
        return False
    end = payload_end_untrusted(packet, payload_offset)
    if end <= payload_offset:
        return False  # padding only (RFC 3550 5.1): no media at all
    if name == "VP8":
        return vp8_descriptor_untrusted(packet, payload_offset, end).keyframe
    return h264_is_keyframe_untrusted(packet, payload_offset, end)
