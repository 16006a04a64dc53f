"""Simulcast publishers and paused tiles for `arbiter bench` (issue 13, DESIGN section 4 "Quality").

A simulcast publisher sends its camera as three layers, rid `q`, `h`, `f` (lowest first), each
on an SSRC of its own that its offer does not tell (RFC 8853): every packet carries the
`sdes:mid` and `sdes:rtp-stream-id` one-byte header extensions (RFC 8285 section 4.2, RFC 8852
section 3), from which the SFU learns the layers, as Chrome sends them. No encoding happens at
run time: each layer is the recorded VP8 stream (`payloads.py`), the lower layers sending a
subset of its frames (`f` every frame, `h` every 2nd, `q` every 4th: about 1/4, 1/2 and 1 of
the packets), so the recording's keyframes (frames 0 and 60 of 120, every 2 s) are in every
layer. The keyframe header's size fields (RFC 6386 section 9.1) are rewritten per layer
(160x90, 320x180, 640x360): the SFU reads a layer's height from them to honour `maxHeight`.

A publisher honours the SFU's `layers` frames as a browser does with `setParameters`: a layer
nobody receives is not sent (it resumes at the recording's next keyframe, within 2 s).

Every stamped payload names its layer (`tag`: 0 plain, 1 + layer index), so a subscriber, which
sees one stream on the SFU's own SSRC, can tell which layer each sampled packet came from.

Paused tiles: a subscriber watching `watch` of the call's publishers sends the `preferences`
action for every publisher, `paused: true` for the others (docs/PROTOCOL.md section 3).
"""

from __future__ import annotations

import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from ..sfu.sdp_grammar import URI_MID, URI_RID
from ..sfu.sdp_grammar import URI_TRANSPORT_CC as URI_TWCC
from . import payloads

RIDS = ("q", "h", "f")
FRAME_STEP = (4, 2, 1)  # layer i sends the recording's frames whose index is a multiple of it
SIZES = ((160, 90), (320, 180), (640, 360))  # width, height per layer (16:9, as the web client)
# Extension ids as Chrome numbers them (tests/data/chrome_simulcast_offer.sdp).
MID_EXT, RID_EXT, TWCC_EXT = 4, 10, 3
VIDEO_MID = "1"
TAG_SHIFT = 24  # the stamp's publisher field: number | tag << TAG_SHIFT
TAGS = 4  # 0 plain, 1..3 the layers
_EXT_HEADER = struct.Struct("!HH")
_VP8_START = b"\x9d\x01\x2a"


@dataclass(frozen=True)
class VideoLayer:
    """One video stream a publishing leg sends: the recording's frames `index % step == 0`
    on `ssrc`, with the one-byte header extension `elements` (RFC 8285 section 4.2, without
    the 0xBEDE header; b"" for none) in every packet."""

    ssrc: int
    step: int
    frames: list[list[payloads.Packet]]
    elements: bytes = b""
    rid: str | None = None  # None: always sent; else only while the SFU wants this rid
    keyframes: frozenset[int] = frozenset()  # frame indices a stopped layer may resume at
    tag: int = 0
    timestamp_origin: int = 0


def one_byte_elements(elements: Sequence[tuple[int, bytes]]) -> bytes:
    """RFC 8285 section 4.2 one-byte-header elements: ID (4 bits), length - 1 (4 bits), data."""
    body = bytearray()
    for ident, value in elements:
        body.append((ident << 4) | (len(value) - 1))
        body += value
    return bytes(body)


def extension_block(elements: bytes) -> bytes:
    """`elements` as an RFC 8285 one-byte-header extension block (0xBEDE, length in 32-bit
    words), zero-padded to 32 bits; b"" for no elements."""
    if not elements:
        return b""
    pad = -len(elements) % 4
    return _EXT_HEADER.pack(0xBEDE, (len(elements) + pad) // 4) + elements + bytes(pad)


def resized_frames(
    video: list[list[payloads.Packet]], width: int, height: int
) -> list[list[payloads.Packet]]:
    """The recording with every keyframe's size fields set to `width` x `height` (RFC 6386
    section 9.1: after the 3-byte frame tag and the start code, two little-endian 16-bit
    fields whose low 14 bits are the size). The VP8 payload descriptor (RFC 7741 section 4.2)
    is walked to find the frame tag."""
    out = []
    for frame in video:
        first = frame[0].payload
        at = _vp8_payload_start(first)
        if at < 0 or first[at] & 0x01 or first[at + 3 : at + 6] != _VP8_START:
            out.append(frame)  # not the start of a keyframe
            continue
        patched = bytearray(first)
        struct.pack_into("<HH", patched, at + 6, width & 0x3FFF, height & 0x3FFF)
        out.append([replace(frame[0], payload=bytes(patched)), *frame[1:]])
    return out


def _vp8_payload_start(payload: bytes) -> int:
    """Offset of the VP8 payload after the descriptor of a partition's first packet, else -1."""
    if len(payload) < 11 or not payload[0] & 0x10 or payload[0] & 0x07:
        return -1  # not S=1 with partition index 0
    at = 1
    if payload[0] & 0x80:  # X: the extension byte
        ext = payload[1]
        at = 2
        if ext & 0x80:  # I: picture id, 7 or 15 bits (M)
            at += 2 if payload[at] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            at += 1
        if ext & 0x30:  # T or K: one byte
            at += 1
    return at if at + 10 <= len(payload) else -1


def keyframe_indices(frames: list[list[payloads.Packet]]) -> frozenset[int]:
    """Indices of the frames that are VP8 keyframes (RFC 6386 section 9.1: frame tag P bit
    0 and the start code)."""
    out = set()
    for index, frame in enumerate(frames):
        first = frame[0].payload
        at = _vp8_payload_start(first)
        if at >= 0 and not first[at] & 0x01 and first[at + 3 : at + 6] == _VP8_START:
            out.add(index)
    return frozenset(out)


def plain_layer(recording: payloads.Recording, ssrc: int, step: int = 1) -> VideoLayer:
    """Today's publisher: the whole recording on one signalled SSRC (or every `step`-th frame:
    the same packet rate as simulcast layer `q` when `step` is 4)."""
    return VideoLayer(ssrc=ssrc, step=step, frames=recording.video)


def simulcast_layers(
    recording: payloads.Recording, ssrcs: Sequence[int], steps: Sequence[int] = FRAME_STEP
) -> list[VideoLayer]:
    """The three layers q, h, f on `ssrcs` (see the module docstring). `steps` (1, 1, 1): every
    layer sends every frame, the packet rate of a plain publisher whichever layer a subscriber
    gets (the forwarding cost of the rewrite on today's load)."""
    layers = []
    for index, rid in enumerate(RIDS):
        width, height = SIZES[index]
        elements = one_byte_elements([(MID_EXT, VIDEO_MID.encode()), (RID_EXT, rid.encode())])
        frames = resized_frames(recording.video, width, height)
        layers.append(VideoLayer(
            ssrc=ssrcs[index], step=steps[index], frames=frames, elements=elements,
            rid=rid, keyframes=keyframe_indices(frames), tag=1 + index,
            timestamp_origin=secrets.randbits(32),
        ))  # fmt: skip
    return layers


def build_simulcast_offer(
    ice_ufrag: str,
    ice_pwd: str,
    fingerprint: str,
    audio_ssrc: int,
    *,
    candidate: tuple[str, int],
    opus_pt: int = 111,
    vp8_pt: int = 96,
    transport_cc: bool = False,
) -> str:
    """A sendonly Opus + simulcast VP8 offer as Chrome makes it (tests/data/
    chrome_simulcast_offer.sdp), minus what the load generator never sends: the video section
    has no a=ssrc (RFC 8853: the layers' SSRCs come from the RID extension), `a=rid:<rid> send`
    for q, h, f, `a=simulcast:send q;h;f` and the mid and RID header extensions; with
    `transport_cc`, the transport-wide-cc extension and feedback on both sections, as Chrome
    offers them (the SFU then sends us feedback and offers transport-cc to subscribers)."""
    twcc = [f"a=extmap:{TWCC_EXT} {URI_TWCC}"] if transport_cc else []
    ip, port = candidate
    host = f"a=candidate:1 1 udp 2130706431 {ip} {port} typ host"
    common = [
        f"c=IN IP4 {ip}",
        f"a=rtcp:{port} IN IP4 {ip}",
        f"a=ice-ufrag:{ice_ufrag}",
        f"a=ice-pwd:{ice_pwd}",
        f"a=fingerprint:sha-256 {fingerprint}",
        "a=setup:actpass",
    ]
    lines = [
        "v=0",
        f"o=- {secrets.randbits(62)} 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        f"a=group:BUNDLE 0 {VIDEO_MID}",
        "a=msid-semantic: WMS bench",
        f"m=audio {port} UDP/TLS/RTP/SAVPF {opus_pt}",
        *common,
        "a=mid:0",
        *twcc,
        "a=sendonly",
        "a=rtcp-mux",
        f"a=rtpmap:{opus_pt} opus/48000/2",
        f"a=fmtp:{opus_pt} minptime=10;useinbandfec=1",
        "a=msid:bench audio",
        f"a=ssrc:{audio_ssrc} cname:arbiter-bench",
        f"a=ssrc:{audio_ssrc} msid:bench audio",
        host,
        "a=end-of-candidates",
        f"m=video {port} UDP/TLS/RTP/SAVPF {vp8_pt}",
        *common,
        f"a=mid:{VIDEO_MID}",
        f"a=extmap:{MID_EXT} {URI_MID}",
        f"a=extmap:{RID_EXT} {URI_RID}",
        *twcc,
        "a=sendonly",
        "a=msid:bench video",
        "a=rtcp-mux",
        f"a=rtpmap:{vp8_pt} VP8/90000",
        *(f"a=rtcp-fb:{vp8_pt} {fb}" for fb in ("nack", "nack pli", "ccm fir", "goog-remb")),
        *([f"a=rtcp-fb:{vp8_pt} transport-cc"] if transport_cc else []),
        *(f"a=rid:{rid} send" for rid in RIDS),
        "a=simulcast:send " + ";".join(RIDS),
        host,
        "a=end-of-candidates",
    ]
    return "\r\n".join(lines) + "\r\n"


def watched(publishers: Sequence[str], me: str, watch: int) -> set[str]:
    """The `watch` publishers subscriber `me` watches: the ones after it in join order, wrapping
    (every publisher is then watched by the same number of subscribers). `watch` <= 0: all."""
    others = [p for p in publishers if p != me]
    if watch <= 0 or watch >= len(others):
        return set(others)
    start = publishers.index(me) if me in publishers else 0
    ordered = [p for p in publishers[start + 1 :] + publishers[: start + 1] if p != me]
    return set(ordered[:watch])


def preferences(publishers: Sequence[str], me: str, watch: int,
                max_height: int) -> list[dict[str, Any]]:  # fmt: skip
    """The `preferences` data subscriber `me` sends: paused for the publishers it does not
    watch; for the watched ones `maxHeight` (no frame for them when `max_height` is 0)."""
    seen = watched(publishers, me, watch)
    out = []
    for publisher in publishers:
        if publisher == me:
            continue
        if publisher not in seen:
            out.append({"remotePeerId": publisher, "maxHeight": 0, "paused": True})
        elif max_height > 0:
            out.append({"remotePeerId": publisher, "maxHeight": max_height, "paused": False})
    return out
