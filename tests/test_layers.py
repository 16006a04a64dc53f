"""Simulcast layer rewriting (arbiter.sfu.layers): three publisher layers with independent SSRC,
sequence numbers, timestamps, VP8 picture ids and TL0PICIDX become one continuous stream per
consumer; switches wait for keyframes; NACK lookups and retransmissions reproduce the original
bytes; RTX (RFC 4588); pause; wrap-around; choose_layer."""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field

import pytest
from aiortc.rtp import RtpPacket, unwrap_rtx

from arbiter.bench import payloads
from arbiter.errors import MalformedInput
from arbiter.sfu import layers, rtp, vp8
from arbiter.sfu.layers import LayerRewriter, choose_layer

OUT_SSRC = 0xC0FFEE01
FPS = 30
TICKS = 90000 // FPS
TWCC_EXT = 3


@dataclass
class Layer:
    """A publisher's simulcast encoding: its own SSRC and independent counters (RFC 3550 5.1)."""

    index: int
    ssrc: int
    seq: int
    ts: int
    picid: int
    tl0: int
    bits: int = 15  # VP8 PictureID width
    codec: str = "VP8"
    sent: list[bytes] = field(default_factory=list)

    def frame(self, key: bool, count: int = 3) -> list[bytes]:
        """One frame in `count` packets (5 for a keyframe); then the counters advance."""
        count = 5 if key else count
        rid = "qhf"[self.index].encode()
        out = []
        for n in range(count):
            if self.codec == "VP8":
                first = (0x90 if n == 0 else 0x80) | 0  # X=1, S on the first packet, PID=0
                ext = 0xE0  # I, L, T
                pid = (
                    struct.pack("!H", 0x8000 | self.picid)
                    if self.bits == 15
                    else bytes((self.picid & 0x7F,))
                )
                desc = bytes((first, ext)) + pid + bytes((self.tl0, 0x20))  # TID 0, Y=1
                if n == 0 and key:
                    body = (
                        bytes((0x10, 0x02, 0x00)) + b"\x9d\x01\x2a" + struct.pack("<HH", 320, 180)
                    )
                elif n == 0:
                    body = bytes((0x11, 0x02, 0x00)) + b"delta"
                else:
                    body = bytes((n,)) * 20
                payload = desc + body
            else:
                if key and n == 0:
                    sps, pps = bytes.fromhex("6742c01fda"), bytes.fromhex("68ce3c80")
                    payload = b"\x78" + b"".join(struct.pack("!H", len(u)) + u for u in (sps, pps))
                elif n == 1 or (not key and n == 0):
                    payload = bytes((0x7C, 0x85 if key else 0x81)) + b"start"
                else:
                    payload = bytes((0x7C, 0x05 if key else 0x01)) + b"more"
            out.append(
                rtp.build_rtp(
                    96,
                    self.seq,
                    self.ts,
                    self.ssrc,
                    payload,
                    marker=n == count - 1,
                    extensions={TWCC_EXT: struct.pack("!H", self.seq ^ 0x5A5A), 10: rid},
                )
            )
            self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + TICKS) & 0xFFFFFFFF
        self.picid = (self.picid + 1) & (0x7FFF if self.bits == 15 else 0x7F)
        self.tl0 = (self.tl0 + 1) & 0xFF
        self.sent += out
        return out


def fields(packet: bytes) -> tuple[int, int, int, int, int]:
    """(seq, ts, ssrc, picid, tl0) of a packet built by Layer (VP8)."""
    h = rtp.parse_rtp_header_untrusted(packet)
    d = vp8.vp8_descriptor_untrusted(packet, h.header_length)
    return h.sequence_number, h.timestamp, h.ssrc, d.picture_id, d.tl0picidx


def frames_of(outs: list[tuple[int, int, int, int, int]]) -> list[tuple[int, int, int]]:
    """(ts, picid, tl0) of each output frame, in order (consecutive packets that share them)."""
    frames: list[tuple[int, int, int]] = []
    for _, ts, _, picid, tl0 in outs:
        if not frames or frames[-1] != (ts, picid, tl0):
            frames.append((ts, picid, tl0))
    return frames


def three_layers() -> list[Layer]:
    return [
        Layer(0, 0x100, seq=100, ts=1000, picid=500, tl0=10),
        Layer(1, 0x200, seq=30000, ts=7_000_000, picid=20000, tl0=200),
        Layer(2, 0x300, seq=65000, ts=4_000_000_000, picid=0x7FF0, tl0=250),
    ]


@dataclass
class Run:
    """Frames fed in time order (layers 0, 1, 2 within a frame time), and what came out."""

    rewriter: LayerRewriter
    layers: list[Layer]
    out: list[tuple[int, bytes, bytes]] = field(default_factory=list)  # (layer, in, out)
    dropped: list[tuple[int, int]] = field(default_factory=list)  # (layer, frame)

    def feed(self, frame: int, keys: dict[int, set[int]], targets: dict[int, int]) -> None:
        if frame in targets:
            self.rewriter.target = targets[frame]
        now = frame / FPS
        for layer in self.layers:
            for pkt in layer.frame(frame in keys.get(layer.index, set())):
                result = self.rewriter.rewrite_untrusted(pkt, layer.index, now)
                if result is None:
                    self.dropped.append((layer.index, frame))
                else:
                    self.out.append((layer.index, pkt, result))


def test_start_switch_up_and_down() -> None:
    rewriter = LayerRewriter(OUT_SSRC, None, None, "VP8")
    assert (rewriter.target, rewriter.current, rewriter.wants_keyframe) == (0, -1, True)
    run = Run(rewriter, three_layers())
    keys = {0: {2}, 1: {15}, 2: {8, 20}}
    targets = {5: 2, 10: 1}
    for frame in range(25):
        run.feed(frame, keys, targets)
        if frame == 1:  # no keyframe of layer 0 yet: nothing at all
            assert run.out == [] and rewriter.wants_keyframe
        if frame == 7:  # layer 2 targeted, its keyframe not there yet: still layer 0
            assert (rewriter.current, rewriter.target, rewriter.wants_keyframe) == (0, 2, True)
    assert (rewriter.current, rewriter.target, rewriter.wants_keyframe) == (1, 1, False)
    assert rewriter.switches == 3
    # Which layer's frames went out: 0 for frames 2-8, 2 for 8-14 (its keyframe came after
    # layer 0's frame 8), 1 from its keyframe at 15.
    frames: list[tuple[int, int]] = []
    for layer, pkt, _ in run.out:
        key = (layer, rtp.parse_rtp_header_untrusted(pkt).timestamp)
        if not frames or frames[-1] != key:
            frames.append(key)
    assert [layer for layer, _ in frames] == [0] * 7 + [2] * 7 + [1] * 10
    # Dropped: layer 0 frames 0-1 (before its keyframe) and from 9 on, layer 2's frames 0-7
    # (before its keyframe) and 15-24, layer 1's everything before 15.
    dropped_frames = sorted(set(run.dropped))
    assert [f for layer, f in dropped_frames if layer == 0] == [0, 1, *range(9, 25)]
    assert [f for layer, f in dropped_frames if layer == 2] == [*range(0, 8), *range(15, 25)]
    assert [f for layer, f in dropped_frames if layer == 1] == list(range(0, 15))

    outs = [fields(o) for _, _, o in run.out]
    first_seq = fields(run.out[0][1])[0]
    assert first_seq == 100 + 3 * 2  # the first generation keeps layer 0's own numbers
    assert [s for s, *_ in outs] == [(first_seq + i) & 0xFFFF for i in range(len(outs))]
    assert {ssrc for _, _, ssrc, _, _ in outs} == {OUT_SSRC}
    # One (ts, picid, tl0) per output frame: exactly the expected continuation.
    per_frame = frames_of(outs)
    expected_ts = [1000 + TICKS * k for k in range(2, 9)]  # layer 0, offsets 0
    expected_ts += [expected_ts[-1] + 1 + TICKS * k for k in range(7)]  # same instant: +1
    expected_ts += [expected_ts[-1] + TICKS * (k + 1) for k in range(10)]  # 1/30 s later
    assert [ts for ts, _, _ in per_frame] == expected_ts
    assert [p for _, p, _ in per_frame] == [502 + j for j in range(24)]
    assert [t for _, _, t in per_frame] == [(12 + j) & 0xFF for j in range(24)]
    # The payload and the other header bytes are the publisher's.
    for _, pkt, out in run.out:
        offset = rtp.payload_offset_untrusted(pkt)
        d = vp8.vp8_descriptor_untrusted(pkt, offset)
        assert out[d.data_offset :] == pkt[d.data_offset :]
        assert out[:2] == pkt[:2] and out[12:offset] == pkt[12:offset]
    assert rewriter.packets == len(run.out)
    assert rewriter.octets == sum(len(o) for _, _, o in run.out)
    # A publisher SR's timestamp of the forwarded layer maps onto the consumer's timeline.
    _, pkt, out = run.out[-1]
    in_ts = rtp.parse_rtp_header_untrusted(pkt).timestamp
    assert rewriter.translate_timestamp(1, in_ts) == fields(out)[1]
    assert rewriter.translate_timestamp(1, in_ts + 900) == fields(out)[1] + 900
    assert rewriter.translate_timestamp(0, in_ts) is None
    assert rewriter.translate_timestamp(2, in_ts) is None


def test_lookup_and_retransmission_reproduce_the_original() -> None:
    rewriter = LayerRewriter(OUT_SSRC, None, None, "VP8")
    run = Run(rewriter, three_layers())
    for frame in range(25):
        run.feed(frame, {0: {0}, 1: {9}, 2: {4, 16}}, {3: 2, 8: 1, 14: 2})
    assert rewriter.switches == 4
    for layer, pkt, out in run.out:
        out_seq = rtp.seq_of(out)
        assert rewriter.lookup(out_seq) == (layer, rtp.seq_of(pkt))
        assert rewriter.lookup(out_seq + 0x10000) == (layer, rtp.seq_of(pkt))
        assert rewriter.rewrite_retransmission_untrusted(pkt, layer, out_seq) == out
        # Another packet, or another layer, for that sequence number: refused.
        other = bytearray(pkt)
        struct.pack_into("!H", other, 2, (rtp.seq_of(pkt) + 1) & 0xFFFF)
        assert rewriter.rewrite_retransmission_untrusted(bytes(other), layer, out_seq) is None
        assert rewriter.rewrite_retransmission_untrusted(pkt, (layer + 1) % 3, out_seq) is None
    newest = rtp.seq_of(run.out[-1][2])
    assert rewriter.lookup((newest + 1) & 0xFFFF) is None  # not sent yet
    with pytest.raises(MalformedInput):
        rewriter.rewrite_retransmission_untrusted(b"\x80\x60", 2, newest)
    # A NACK reaches back NACK_REACH packets, no further.
    first = rtp.seq_of(run.out[0][2])
    for frame in range(25, 25 + layers.NACK_REACH // 3 + 2):
        run.feed(frame, {}, {})
    assert rewriter.lookup(first) is None
    assert rewriter.rewrite_retransmission_untrusted(run.out[0][1], 0, first) is None
    newest = rtp.seq_of(run.out[-1][2])
    assert rewriter.lookup((newest - layers.NACK_REACH + 1) & 0xFFFF) is not None
    assert rewriter.lookup((newest - layers.NACK_REACH) & 0xFFFF) is None


def test_reordering_inside_a_layer_and_across_a_switch() -> None:
    rewriter = LayerRewriter(OUT_SSRC, None, None, "VP8")
    l0, l1 = three_layers()[:2]
    key = l0.frame(True)
    assert [rewriter.rewrite_untrusted(p, 0, 0.0) is not None for p in key] == [True] * 5
    base = rtp.seq_of(rewriter.rewrite_retransmission_untrusted(key[-1], 0, 104) or b"")
    assert base == 104
    a, b, c = l0.frame(False)
    out_a = rewriter.rewrite_untrusted(a, 0, 0.033)
    out_c = rewriter.rewrite_untrusted(c, 0, 0.034)
    out_b = rewriter.rewrite_untrusted(b, 0, 0.035)  # late, inside the layer: keeps its place
    assert out_a and out_b and out_c
    assert [rtp.seq_of(o) for o in (out_a, out_b, out_c)] == [105, 106, 107]
    # Switch to layer 1: its keyframe's second packet overtakes the first and is dropped
    # (sent before the switch), a NACK for its slot gets it back.
    rewriter.target = 1
    assert rewriter.rewrite_untrusted(l1.frame(False)[0], 1, 0.05) is None
    k = l1.frame(True)
    assert rewriter.rewrite_untrusted(k[1], 1, 0.066) is None
    out_k0 = rewriter.rewrite_untrusted(k[0], 1, 0.067)
    assert out_k0 is not None and rtp.seq_of(out_k0) == 108
    outs = [rewriter.rewrite_untrusted(p, 1, 0.068) for p in k[2:]]
    assert [rtp.seq_of(o or b"") for o in outs] == [110, 111, 112]
    assert rewriter.lookup(109) == (1, rtp.seq_of(k[1]))
    out_k1 = rewriter.rewrite_retransmission_untrusted(k[1], 1, 109)
    assert out_k1 is not None
    assert fields(out_k1)[:2] == (109, fields(out_k0)[1])
    assert fields(out_k1)[3:] == fields(out_k0)[3:]
    # Late packets of the old layer, and of the new layer from before its keyframe: dropped.
    assert rewriter.rewrite_untrusted(b, 0, 0.07) is None
    assert rewriter.rewrite_untrusted(l1.sent[0], 1, 0.07) is None
    assert rewriter.lookup(107) == (0, rtp.seq_of(c))


def test_wrap_around() -> None:
    """Output seq, ts, 15-bit picid and TL0PICIDX all wrap, inside a layer and at a switch."""
    rewriter = LayerRewriter(OUT_SSRC, None, None, "VP8")
    l0 = Layer(0, 1, seq=65530, ts=0xFFFFFFFF - 3 * TICKS, picid=0x7FFD, tl0=254)
    l1 = Layer(1, 2, seq=65533, ts=0xFFFFFF00, picid=0x7FFF, tl0=255)
    run = Run(rewriter, [l0, l1])
    for frame in range(12):
        run.feed(frame, {0: {0}, 1: {6}}, {4: 1})
    assert rewriter.current == 1
    outs = [fields(o) for _, _, o in run.out]
    assert [s for s, *_ in outs] == [(65530 + i) & 0xFFFF for i in range(len(outs))]
    # Layer 0's frames 0-6, then layer 1's keyframe at the same instant (+1 tick) and on.
    frames = frames_of(outs)
    assert [p for _, p, _ in frames] == [(0x7FFD + j) & 0x7FFF for j in range(13)]
    assert [t for _, _, t in frames] == [(254 + j) & 0xFF for j in range(13)]
    stamps = [ts for ts, _, _ in frames]
    expected = [(0xFFFFFFFF - 3 * TICKS + TICKS * k) & 0xFFFFFFFF for k in range(7)]
    expected += [(expected[-1] + 1 + TICKS * k) & 0xFFFFFFFF for k in range(6)]
    assert stamps == expected
    for before, after in zip(stamps, stamps[1:], strict=False):
        assert 0 < (after - before) & 0xFFFFFFFF < 0x80000000  # monotonic, RFC 3550 serial
    assert stamps[4] < stamps[3]  # it did wrap


def test_picture_id_width_kept() -> None:
    """A 7-bit layer after a 15-bit one: the packet keeps its 1-byte field, continuing mod 128."""
    rewriter = LayerRewriter(OUT_SSRC, None, None, "VP8")
    l0 = Layer(0, 1, seq=1, ts=1, picid=0x1234, tl0=1)
    l1 = Layer(1, 2, seq=9, ts=9, picid=120, tl0=9, bits=7)
    run = Run(rewriter, [l0, l1])
    for frame in range(20):
        run.feed(frame, {0: {0, 12}, 1: {3}}, {2: 1, 10: 0})
    widths = []
    picids = []
    for layer, pkt, out in run.out:
        d_in = vp8.vp8_descriptor_untrusted(pkt, rtp.payload_offset_untrusted(pkt))
        d_out = vp8.vp8_descriptor_untrusted(out, rtp.payload_offset_untrusted(out))
        assert len(out) == len(pkt)
        assert d_out.picture_id_bits == d_in.picture_id_bits == (7 if layer else 15)
        if rtp.parse_rtp_header_untrusted(out).marker:
            widths.append(d_out.picture_id_bits)
            picids.append(d_out.picture_id)
    assert widths == [15] * 4 + [7] * 9 + [15] * 8
    assert [p & 0x7F for p in picids] == [(0x1234 + j) & 0x7F for j in range(21)]


def test_rtx_wrap() -> None:
    rewriter = LayerRewriter(OUT_SSRC, 0xBEEF, 97, "VP8", rtx_seq=65535)
    layer = three_layers()[0]
    outs = [rewriter.rewrite_untrusted(p, 0, 0.0) for p in layer.frame(True)]
    rewritten = outs[-1]
    assert rewritten is not None
    rtx_packet = rewriter.rtx_wrap(rewritten)
    assert rtx_packet is not None
    h = rtp.parse_rtp_header_untrusted(rtx_packet)
    o = rtp.parse_rtp_header_untrusted(rewritten)
    assert (h.payload_type, h.sequence_number, h.ssrc) == (97, 65535, 0xBEEF)
    assert (h.timestamp, h.marker, h.extensions) == (o.timestamp, True, o.extensions)
    # RFC 4588 section 4: OSN (the rewritten packet's sequence number), then its payload.
    assert rtx_packet[h.header_length : h.header_length + 2] == struct.pack("!H", 104)
    assert rtx_packet[h.header_length + 2 :] == rewritten[o.header_length :]
    assert rtp.rtx_original_seq_untrusted(rtx_packet) == 104
    # aiortc's independent unwrap recovers the rewritten packet.
    original = unwrap_rtx(RtpPacket.parse(rtx_packet), payload_type=96, ssrc=OUT_SSRC)
    assert (original.sequence_number, original.timestamp, original.payload) == (
        104,
        o.timestamp,
        rewritten[o.header_length :],
    )
    second = rewriter.rtx_wrap(outs[0] or b"")
    assert second is not None and rtp.seq_of(second) == 0  # its own counter, wrapping
    assert rtp.rtx_original_seq_untrusted(second) == 100
    assert second[1] == 97  # marker clear, as on the original
    assert LayerRewriter(OUT_SSRC, None, None, "VP8").rtx_wrap(rewritten) is None
    assert LayerRewriter(OUT_SSRC, 5, None, "VP8").rtx_wrap(rewritten) is None


def test_pause_and_resume() -> None:
    rewriter = LayerRewriter(OUT_SSRC, None, None, "VP8")
    l0 = three_layers()[0]
    run = Run(rewriter, [l0])
    for frame in range(4):
        run.feed(frame, {0: {0}}, {})
    last = fields(run.out[-1][2])
    sent = len(run.out)
    for frame in range(4, 10):
        run.feed(frame, {0: {6}}, {4: -1})  # a keyframe while paused changes nothing
    assert len(run.out) == sent
    assert (rewriter.current, rewriter.wants_keyframe) == (-1, False)
    for frame in range(10, 16):
        run.feed(frame, {0: {13}}, {10: 0})
        if frame == 12:
            assert rewriter.wants_keyframe and len(run.out) == sent
    resumed = fields(run.out[sent][2])
    assert resumed[0] == (last[0] + 1) & 0xFFFF
    assert resumed[1] == last[1] + TICKS * (13 - 3)  # the wall time the pause lasted
    assert (resumed[3], resumed[4]) == (last[3] + 1, (last[4] + 1) & 0xFF)
    assert rewriter.switches == 2 and rewriter.current == 0


def test_paused_from_the_start_drops_everything() -> None:
    rewriter = LayerRewriter(OUT_SSRC, None, None, "VP8", target=-1)
    assert not rewriter.wants_keyframe
    for layer in three_layers():
        for frame in range(3):
            for p in layer.frame(frame == 0):
                assert rewriter.rewrite_untrusted(p, layer.index, frame / FPS) is None
    assert (rewriter.current, rewriter.packets, rewriter.lookup(100)) == (-1, 0, None)


def test_h264_layers() -> None:
    rewriter = LayerRewriter(OUT_SSRC, None, None, "h264")
    l0 = Layer(0, 1, seq=10, ts=10, picid=0, tl0=0, codec="H264")
    l1 = Layer(1, 2, seq=50000, ts=123456, picid=0, tl0=0, codec="H264")
    run = Run(rewriter, [l0, l1])
    for frame in range(10):
        run.feed(frame, {0: {1}, 1: {5}}, {3: 1})
    assert rewriter.current == 1
    assert [layer for layer, _, _ in run.out] == [0] * 17 + [1] * 17
    heads = [rtp.parse_rtp_header_untrusted(o) for _, _, o in run.out]
    assert [h.sequence_number for h in heads] == [13 + i for i in range(34)]
    stamps = sorted({h.timestamp for h in heads})
    assert stamps == [10 + TICKS * k for k in range(1, 6)] + [
        10 + TICKS * 5 + 1 + TICKS * k for k in range(5)
    ]
    for (_, pkt, out), h in zip(run.out, heads, strict=True):
        assert out[h.header_length :] == pkt[h.header_length :]
    with pytest.raises(ValueError):
        LayerRewriter(OUT_SSRC, None, None, "VP9")


def test_publisher_sequence_restart_resumes_at_a_keyframe() -> None:
    rewriter = LayerRewriter(OUT_SSRC, None, None, "VP8")
    l0 = three_layers()[0]
    run = Run(rewriter, [l0])
    for frame in range(3):
        run.feed(frame, {0: {0}}, {})
    last = fields(run.out[-1][2])
    l0.seq = 20  # the encoder restarted its sequence far behind: "before the switch"
    for frame in range(3, 3 + layers.STALE_LIMIT // 3 + 1):
        run.feed(frame, {}, {})
    assert len(run.out) == 11 and rewriter.current == -1 and rewriter.wants_keyframe
    run.feed(40, {0: {40}}, {})
    assert fields(run.out[11][2])[0] == (last[0] + 1) & 0xFFFF


def test_long_run_in_one_layer_never_stalls() -> None:
    """Past 0x8000 and 0x10000 packets since the switch, packets still go out (the base that
    filters pre-switch stragglers slides along) and NACK lookups still find the right layer
    (not the generation before, whose output seqs the counter has wrapped onto)."""
    rewriter = LayerRewriter(OUT_SSRC, None, None, "VP8", target=1)
    l0 = Layer(0, 1, seq=0, ts=0, picid=0, tl0=0)
    l1 = Layer(1, 2, seq=5000, ts=0, picid=0, tl0=0)
    for p in l1.frame(True) + l1.frame(False):
        assert rewriter.rewrite_untrusted(p, 1, 0.0) is not None
    rewriter.target = 0
    frames = 22000  # 3 packets each: 66 000 packets
    last = b""
    for frame in range(frames):
        for p in l0.frame(frame == 0):
            out = rewriter.rewrite_untrusted(p, 0, frame / FPS)
            assert out is not None
            last = out
    assert rewriter.packets == 8 + 5 + 3 * (frames - 1)
    late = l0.sent[-4]  # reordered a little, still in
    assert rewriter.rewrite_untrusted(late, 0, frames / FPS) is not None
    newest = rtp.seq_of(last)
    for back in (0, 1, 500, layers.NACK_REACH - 1):
        original = l0.sent[-1 - back]
        assert rewriter.lookup((newest - back) & 0xFFFF) == (0, rtp.seq_of(original))
        again = rewriter.rewrite_retransmission_untrusted(original, 0, (newest - back) & 0xFFFF)
        assert again is not None and rtp.seq_of(again) == (newest - back) & 0xFFFF
    assert rewriter.rewrite_retransmission_untrusted(l0.sent[-1], 0, newest) == last
    assert rewriter.lookup((newest - layers.NACK_REACH) & 0xFFFF) is None


def test_recorded_vp8_through_three_layers() -> None:
    """tests/data/media.bin's libvpx packets as three layers (each with its own SSRC,
    sequence, timestamp and picture id origin): the switch lands on the recorded keyframe."""
    recording = payloads.load()
    origins = [(0x11, 1000, 5, 100), (0x22, 40000, 777777, 9000), (0x33, 65500, 3, 0x7FF8)]
    rewriter = LayerRewriter(OUT_SSRC, None, None, "VP8")
    first_picid = vp8.vp8_descriptor_untrusted(recording.video[0][0].payload, 0).picture_id
    outs = []
    seqs = [o[1] for o in origins]
    for index, frame in enumerate(recording.video):
        if index == 30:
            rewriter.target = 2  # takes effect at the next recorded keyframe (frame 60)
        for layer, (ssrc, _, ts0, pic0) in enumerate(origins):
            for p in frame:
                payload = bytearray(p.payload)
                picid = (first_picid + index + pic0) & 0x7FFF
                struct.pack_into("!H", payload, 2, 0x8000 | picid)
                pkt = rtp.build_rtp(96, seqs[layer], ts0 + 3000 * index, ssrc, bytes(payload))
                seqs[layer] = (seqs[layer] + 1) & 0xFFFF
                out = rewriter.rewrite_untrusted(pkt, layer, index / FPS)
                if out is not None:
                    outs.append((index, layer, out))
    assert [(i, layer) for i, layer, _ in outs if i in (59, 60)] == [(59, 0)] * len(
        recording.video[59]
    ) + [(60, 0)] * len(recording.video[60]) + [(60, 2)] * len(recording.video[60])
    assert {layer for i, layer, _ in outs if i > 60} == {2}
    out_fields = [fields(o) for _, _, o in outs]
    assert [f[0] for f in out_fields] == [(1000 + i) & 0xFFFF for i in range(len(outs))]
    picids = [f[3] for f in out_fields]
    steps = {(b - a) & 0x7FFF for a, b in zip(picids, picids[1:], strict=False)}
    assert steps == {0, 1}
    assert sum(1 for a, b in zip(picids, picids[1:], strict=False) if a != b) == 120


def test_choose_layer() -> None:
    heights = [180, 360, 720]
    rates = [150e3, 500e3, 1.5e6]
    assert choose_layer(heights, rates, 720, 2e6) == 2
    assert choose_layer(heights, rates, 720, 1e6) == 1
    assert choose_layer(heights, rates, 720, 100e3) == 0  # nothing fits: still layer 0
    assert choose_layer(heights, rates, 360, 2e6) == 1
    assert choose_layer(heights, rates, 359, 2e6) == 0
    assert choose_layer(heights, rates, 90, 2e6) == 0
    assert choose_layer(heights, rates, 0, 2e6) == -1  # paused
    # Unknown heights count by index order: fitting unless a lower known layer is too tall.
    assert choose_layer([None, None, None], rates, 180, 2e6) == 2
    assert choose_layer([180, None, 720], rates, 360, 2e6) == 1
    assert choose_layer([180, 720, None], rates, 360, 2e6) == 0
    # Inactive layers (not received) are skipped; a lone full layer (a screen share) is sent
    # whatever the tile or budget.
    assert choose_layer([None, None, 720], [0, 0, 2e6], 180, 100e3) == 2
    assert choose_layer(heights, [100e3, 0, 1e6], 720, 2e6) == 2
    assert choose_layer(heights, [100e3, 0, 1e6], 720, 500e3) == 0
    assert choose_layer(heights, [0, 0, 0], 720, 2e6) == 0
    assert choose_layer([], [], 720, 2e6) == 0


def test_fuzz_rewrite_only_malformed_input_escapes() -> None:
    """Mutated and truncated packets: MalformedInput or a rewrite that touches only the
    seq/ts/SSRC, picture id and TL0PICIDX bytes, where the reference parser (vp8.py) puts them."""
    rng = random.Random(4588)
    rewriter = LayerRewriter(OUT_SSRC, 9, 97, "VP8")
    layer = Layer(0, 1, seq=10, ts=10, picid=100, tl0=5)
    for p in layer.frame(True):
        assert rewriter.rewrite_untrusted(p, 0, 0.0) is not None
    checked = 0
    for i in range(4000):
        data = bytearray(rng.choice(layer.frame(False, count=2)))
        for _ in range(rng.randint(0, 3)):
            at = rng.choice((0, 1, *range(12, len(data))))  # keep seq/ts/SSRC in order
            data[at] = rng.randrange(256)
        pkt = bytes(data[: rng.randint(0, len(data))] if i % 3 == 0 else data)
        try:
            out = rewriter.rewrite_untrusted(pkt, 0, i / FPS)
        except MalformedInput:
            continue
        assert out is not None and len(out) == len(pkt)
        allowed = set(range(2, 12))
        try:
            offset = rtp.payload_offset_untrusted(pkt)
            end = rtp.payload_end_untrusted(pkt, offset)
            d = vp8.vp8_descriptor_untrusted(pkt, offset, end)
        except MalformedInput:
            continue
        d_out = vp8.vp8_descriptor_untrusted(out, offset, end)
        assert d_out[3:5] == d[3:5] and d_out[6] == d[6]  # same places, same widths
        if d.picture_id_offset >= 0:
            allowed |= set(range(d.picture_id_offset, d.picture_id_offset + d.picture_id_bits // 7))
        if d.tl0picidx_offset >= 0:
            allowed.add(d.tl0picidx_offset)
        assert {n for n in range(len(pkt)) if pkt[n] != out[n]} <= allowed
        checked += 1
    assert checked > 1000
    assert rewriter.current == 0
