"""Codec payload inspection (arbiter.sfu.vp8) and the offset-level RTP helpers simulcast needs
(arbiter.sfu.rtp: payload/extension offsets, RID): descriptors laid out by hand from RFC 7741
4.2 and its section 4.6 examples, real keyframe headers (RFC 6386 9.1), H264 NAL units
(RFC 6184), the recorded VP8 stream in tests/data/media.bin, truncation and a fuzz loop."""

from __future__ import annotations

import random
import struct

import pytest

from arbiter.bench import payloads
from arbiter.errors import MalformedInput
from arbiter.sfu import rtp, vp8


def descriptor(
    *,
    start: bool = True,
    pid: int = 0,
    picid: int | None = None,
    bits: int = 15,
    tl0: int | None = None,
    tid: int | None = None,
    y: bool = False,
    keyidx: int | None = None,
    non_ref: bool = False,
) -> bytes:
    """An RFC 7741 section 4.2 payload descriptor."""
    first = (0x20 if non_ref else 0) | (0x10 if start else 0) | pid
    ext = 0
    tail = b""
    if picid is not None:
        ext |= 0x80
        tail += struct.pack("!H", 0x8000 | picid) if bits == 15 else bytes((picid,))
    if tl0 is not None:
        ext |= 0x40
        tail += bytes((tl0,))
    if tid is not None or keyidx is not None:
        ext |= (0x20 if tid is not None else 0) | (0x10 if keyidx is not None else 0)
        tail += bytes((((tid or 0) << 6) | (0x20 if y else 0) | (keyidx or 0),))
    if ext:
        return bytes((first | 0x80, ext)) + tail
    return bytes((first,))


def keyframe(width: int, height: int, hscale: int = 0, vscale: int = 0) -> bytes:
    """A VP8 keyframe's start (RFC 6386 9.1): frame tag (key_frame = 0, version 0, show_frame,
    first partition size 1234), start code 9d 01 2a, 14-bit sizes with 2 scaling bits, data."""
    tag = 0 | (0 << 1) | (1 << 4) | (1234 << 5)
    return (
        tag.to_bytes(3, "little")
        + b"\x9d\x01\x2a"
        + struct.pack("<HH", width | (hscale << 14), height | (vscale << 14))
        + b"\x00\x11\x22"
    )


def interframe() -> bytes:
    tag = 1 | (1 << 4) | (321 << 5)  # key_frame bit 1: an interframe
    return tag.to_bytes(3, "little") + b"\x33\x44"


def packet(payload: bytes, **kwargs: object) -> bytes:
    return rtp.build_rtp(96, 1000, 90000, 0x11223344, payload, **kwargs)  # type: ignore[arg-type]


# -- the RTP offset helpers -------------------------------------------------------------------


def test_payload_offset_with_csrcs_and_extensions() -> None:
    plain = packet(b"abc")
    assert rtp.payload_offset_untrusted(plain) == 12
    ext = packet(b"abc", extensions={3: b"\x01\x02", 10: b"q"})
    # 12 + 4 (0xBEDE, length) + 2 words (3 + 2 = 5 bytes, padded to 8).
    assert rtp.payload_offset_untrusted(ext) == 24
    assert ext[24:] == b"abc"
    # CC = 2 and an extension: 12 + 8 + 4 + 4.
    csrc = bytes((0x92,)) + plain[1:12] + b"\x00\x00\x00\x01\x00\x00\x00\x02"
    csrc += b"\xbe\xde\x00\x01\x10\xaa\x00\x00" + b"xyz"
    assert rtp.payload_offset_untrusted(csrc) == 28
    assert rtp.parse_rtp_header_untrusted(csrc).header_length == 28
    for bad in (plain[:11], b"\x40" + plain[1:], csrc[:27], ext[:15]):
        with pytest.raises(MalformedInput):
            rtp.payload_offset_untrusted(bad)


def test_payload_end_excludes_padding() -> None:
    plain = packet(b"abcd")
    assert rtp.payload_end_untrusted(plain, 12) == 16
    padded = bytes((plain[0] | 0x20,)) + plain[1:] + b"\x00\x00\x03"
    assert rtp.payload_end_untrusted(padded, 12) == 16
    padding_only = bytes((plain[0] | 0x20,)) + plain[1:12] + b"\x00\x02"
    assert rtp.payload_end_untrusted(padding_only, 12) == 12
    for bad in (padded[:-1] + b"\x00", padded[:-1] + b"\x09", padded[:12]):
        with pytest.raises(MalformedInput):
            rtp.payload_end_untrusted(bad, 12)


def test_extension_offsets_one_byte() -> None:
    # RFC 8285 4.2 laid out by hand: id 1 L=0 (1 byte), two padding bytes, id 4 L=2 (3 bytes),
    # padding to the word boundary.
    header = bytes.fromhex("900100010000000200000003")
    block = bytes.fromhex("bede0002" "10aa0000" "42616263")  # fmt: skip
    pkt = header + block + b"PAYLOAD"
    assert rtp.extension_span_untrusted(pkt, 1) == (17, 1)
    assert rtp.extension_offset_untrusted(pkt, 1) == 17
    assert pkt[17] == 0xAA
    assert rtp.extension_span_untrusted(pkt, 4) == (21, 3)
    assert pkt[21:24] == b"abc"
    assert rtp.extension_offset_untrusted(pkt, 2) == -1
    assert rtp.extension_offset_untrusted(packet(b"x"), 1) == -1  # no X bit
    # ID 15 stops the parse: an element behind it is not seen (RFC 8285 4.2).
    stopped = header + bytes.fromhex("bede0002" "f0001000" "aa000000") + b"P"  # fmt: skip
    assert rtp.extension_offset_untrusted(stopped, 1) == -1
    # An element running past its block.
    broken = header + bytes.fromhex("bede0001" "00003fab") + b"P" * 8  # fmt: skip
    with pytest.raises(MalformedInput):
        rtp.extension_offset_untrusted(broken, 3)
    # A repeated id (RFC 8285 forbids it): the first element.
    twice = header + bytes.fromhex("bede0001" "10aa10bb") + b"P"  # fmt: skip
    assert rtp.extension_span_untrusted(twice, 1) == (17, 1)
    # Agrees with the dict parser on every id.
    ext = packet(b"z", extensions={1: b"\x01", 5: b"hello", 14: b"q" * 16})
    parsed = rtp.parse_rtp_header_untrusted(ext).extensions
    for i in range(1, 15):
        off, length = rtp.extension_span_untrusted(ext, i)
        assert (ext[off : off + length] if off >= 0 else None) == parsed.get(i)


def test_extension_offsets_two_byte() -> None:
    # RFC 8285 4.3: profile 0x1000 (appbits 0), id 0 padding, id 20 len 0, id 200 len 3.
    header = bytes.fromhex("900100010000000200000003")
    block = bytes.fromhex("10000003" "00140000" "c8037879" "7a000000")  # fmt: skip
    pkt = header + block + b"P"
    assert rtp.extension_span_untrusted(pkt, 20) == (19, 0)
    assert rtp.extension_span_untrusted(pkt, 200) == (22, 3)
    assert pkt[22:25] == b"xyz"
    assert rtp.extension_offset_untrusted(pkt, 7) == -1
    # An unknown profile is opaque.
    opaque = header + bytes.fromhex("abcd0001" "0c037879") + b"P"  # fmt: skip
    assert rtp.extension_offset_untrusted(opaque, 12) == -1
    truncated = header + bytes.fromhex("10000001" "0005aabb") + b"P"  # fmt: skip
    with pytest.raises(MalformedInput):
        rtp.extension_offset_untrusted(truncated, 5)


def test_rid() -> None:
    assert rtp.rid_untrusted(packet(b"x", extensions={10: b"h"}), 10) == "h"
    assert rtp.rid_untrusted(packet(b"x", extensions={10: b"f", 11: b"q"}), 11) == "q"
    assert rtp.rid_untrusted(packet(b"x", extensions={10: b"Layer0ABCDEFGHIJ"}), 10) == (
        "Layer0ABCDEFGHIJ"
    )
    assert rtp.rid_untrusted(packet(b"x", extensions={3: b"\x01\x02"}), 10) is None
    assert rtp.rid_untrusted(packet(b"x"), 10) is None
    for bad in (b"a-b", b"a_b", b"\x00", b"h\xff", b"h "):
        with pytest.raises(MalformedInput):
            rtp.rid_untrusted(packet(b"x", extensions={10: bad}), 10)
    # 17 characters only fit a two-byte block: longer than any WebRTC rid.
    header = bytes.fromhex("900100010000000200000003")
    long_rid = header + bytes.fromhex("100000050a11") + b"a" * 17 + b"\x00" + b"P"
    with pytest.raises(MalformedInput):
        rtp.rid_untrusted(long_rid, 10)
    empty_rid = header + bytes.fromhex("100000010a000000") + b"P"
    with pytest.raises(MalformedInput):
        rtp.rid_untrusted(empty_rid, 10)


# -- VP8 descriptors ---------------------------------------------------------------------------


@pytest.mark.parametrize("picid", [None, 0, 17, 127, 4660, 0x7FFF])
@pytest.mark.parametrize("tl0", [None, 0, 5, 255])
@pytest.mark.parametrize("tk", [(None, None), (2, None), (None, 17), (1, 31)])
def test_descriptor_round_trip(
    picid: int | None, tl0: int | None, tk: tuple[int | None, int | None]
) -> None:
    tid, keyidx = tk
    bits = 7 if picid is not None and picid < 128 and picid % 2 else 15
    desc = descriptor(start=False, pid=3, picid=picid, bits=bits, tl0=tl0, tid=tid, keyidx=keyidx)
    pkt = packet(desc + interframe())
    d = vp8.vp8_descriptor_untrusted(pkt, 12)
    assert (d.start, d.partition, d.keyframe) == (False, 3, False)
    assert d.picture_id == (-1 if picid is None else picid)
    assert d.picture_id_bits == (0 if picid is None else bits)
    if picid is None:
        assert d.picture_id_offset == -1
    else:
        assert d.picture_id_offset == 14
        field = pkt[14] & 0x7F if bits == 7 else struct.unpack_from("!H", pkt, 14)[0] & 0x7FFF
        assert field == picid
    assert d.tl0picidx == (-1 if tl0 is None else tl0)
    if tl0 is not None:
        assert pkt[d.tl0picidx_offset] == tl0
    else:
        assert d.tl0picidx_offset == -1
    assert d.tid == (-1 if tid is None else tid)
    assert d.keyidx == (-1 if keyidx is None else keyidx)
    assert d.data_offset == 12 + len(desc)
    assert pkt[d.data_offset :] == interframe()


def test_rfc7741_examples() -> None:
    """RFC 7741 section 4.6: the examples' descriptors, bit for bit."""
    # 4.6.1 Key frame in a single RTP packet: X=1 S=1 PID=0; I=1; PictureID=17; P=0.
    key = bytes((0b10010000, 0b10000000, 0b00010001)) + keyframe(320, 240)
    d = vp8.vp8_descriptor_untrusted(packet(key), 12)
    assert (d.start, d.partition, d.picture_id, d.picture_id_bits, d.keyframe) == (
        True,
        0,
        17,
        7,
        True,
    )
    assert vp8.vp8_keyframe_size_untrusted(packet(key), 12) == (320, 240)
    # 4.6.2 Non-discardable interframe, no PictureID: X=0 S=1 PID=0; P=1.
    inter = bytes((0b00010000,)) + interframe()
    d = vp8.vp8_descriptor_untrusted(packet(inter), 12)
    assert (d.start, d.picture_id, d.picture_id_offset, d.keyframe, d.data_offset) == (
        True,
        -1,
        -1,
        False,
        13,
    )
    # 4.6.3 Partitions in separate packets: the second starts partition 1 (no payload header).
    second = bytes((0b10010001, 0b10000000, 0b00010001)) + b"\x00\x01\x02"
    d = vp8.vp8_descriptor_untrusted(packet(second), 12)
    assert (d.start, d.partition, d.picture_id, d.keyframe) == (True, 1, 17, False)
    # 4.6.4 Frame fragmented across packets: I=1 L=1, PictureID 17, TL0PICIDX 5; the second
    # fragment has S=0 and the same fields.
    first = bytes((0b10010000, 0b11000000, 17, 5)) + interframe()
    later = bytes((0b10000000, 0b11000000, 17, 5)) + b"\xaa\xbb"
    d1 = vp8.vp8_descriptor_untrusted(packet(first), 12)
    d2 = vp8.vp8_descriptor_untrusted(packet(later), 12)
    assert (d1.start, d1.tl0picidx, d1.tl0picidx_offset, d1.picture_id) == (True, 5, 15, 17)
    assert (d2.start, d2.tl0picidx, d2.picture_id, d2.keyframe) == (False, 5, 17, False)
    # 4.6.5 Long PictureID: M=1, PictureID 4660 = 0x1234.
    long_id = bytes((0b10010000, 0b10000000, 0b10010010, 0b00110100)) + interframe()
    d = vp8.vp8_descriptor_untrusted(packet(long_id), 12)
    assert (d.picture_id, d.picture_id_bits, d.picture_id_offset, d.data_offset) == (
        4660,
        15,
        14,
        16,
    )


def test_keyframe_flags() -> None:
    assert vp8.vp8_descriptor_untrusted(packet(descriptor(picid=1) + keyframe(64, 48)), 12)[9]
    # S = 0, PID = 1 or P = 1: not a keyframe start.
    for desc, body in (
        (descriptor(start=False, picid=1), keyframe(64, 48)),
        (descriptor(pid=1, picid=1), keyframe(64, 48)),
        (descriptor(picid=1), interframe()),
    ):
        pkt = packet(desc + body)
        assert not vp8.vp8_descriptor_untrusted(pkt, 12).keyframe
        assert vp8.vp8_keyframe_size_untrusted(pkt, 12) is None
        assert not vp8.is_keyframe_untrusted("VP8", pkt, 12)


def test_keyframe_size_masks_scaling() -> None:
    pkt = packet(descriptor(picid=9, tl0=1, tid=0) + keyframe(1280, 720, hscale=2, vscale=3))
    assert vp8.vp8_keyframe_size_untrusted(pkt, 12) == (1280, 720)
    pkt = packet(descriptor() + keyframe(0x3FFF, 1, hscale=1, vscale=1))
    assert vp8.vp8_keyframe_size_untrusted(pkt, 12) == (0x3FFF, 1)
    bad_code = packet(descriptor() + keyframe(640, 360)[:3] + b"\x9d\x01\x2b" + b"\x00" * 4)
    with pytest.raises(MalformedInput):
        vp8.vp8_keyframe_size_untrusted(bad_code, 12)
    whole = packet(descriptor(picid=300) + keyframe(640, 360))
    header_end = 12 + 4 + 10
    for cut in range(12 + 4 + 1, header_end):
        with pytest.raises(MalformedInput):
            vp8.vp8_keyframe_size_untrusted(whole[:cut], 12)
    # RTP padding is not keyframe data: the same bytes behind a padding count are refused.
    padded = bytes((whole[0] | 0x20,)) + whole[1 : header_end - 2] + b"\x00\x00\x03"
    end = rtp.payload_end_untrusted(padded, 12)
    with pytest.raises(MalformedInput):
        vp8.vp8_keyframe_size_untrusted(padded, 12, end)


def test_truncated_descriptors_raise() -> None:
    full = descriptor(picid=0x1234, tl0=7, tid=1, keyidx=3)
    pkt = packet(full + interframe())
    assert vp8.vp8_descriptor_untrusted(pkt, 12).data_offset == 12 + len(full)
    for cut in range(12, 12 + len(full) + 1):  # up to a descriptor with no data after it
        with pytest.raises(MalformedInput):
            vp8.vp8_descriptor_untrusted(pkt[:cut], 12)
    with pytest.raises(MalformedInput):
        vp8.vp8_descriptor_untrusted(pkt, len(pkt))
    with pytest.raises(MalformedInput):  # the end before the offset
        vp8.vp8_descriptor_untrusted(pkt, 12, 12)


def test_recorded_vp8_stream() -> None:
    """tests/data/media.bin: libvpx via aiortc, 15-bit picture ids, keyframes at frames 0, 60."""
    recording = payloads.load()
    seq = 0
    previous = None
    keyframes = []
    for index, frame in enumerate(recording.video):
        ids = set()
        for n, p in enumerate(frame):
            pkt = rtp.build_rtp(96, seq, index * 3000, 5, p.payload, marker=p.marker)
            seq += 1
            offset = rtp.payload_offset_untrusted(pkt)
            d = vp8.vp8_descriptor_untrusted(pkt, offset)
            assert d.start == (n == 0)
            assert d.picture_id_bits == 15
            assert (d.tl0picidx_offset, d.tid, d.keyidx) == (-1, -1, -1)
            ids.add(d.picture_id)
            assert vp8.is_keyframe_untrusted("vp8", pkt, offset) == d.keyframe
            if d.keyframe:
                keyframes.append((index, vp8.vp8_keyframe_size_untrusted(pkt, offset)))
        assert len(ids) == 1
        (picid,) = ids
        if previous is not None:
            assert picid == (previous + 1) & 0x7FFF
        previous = picid
    assert keyframes == [(0, (640, 360)), (60, (640, 360))]


# -- H264 --------------------------------------------------------------------------------------

SPS = bytes.fromhex("6742c01fda0140")
PPS = bytes.fromhex("68ce3c80")
IDR = bytes.fromhex("6588840021")
NON_IDR = bytes.fromhex("419a2233")


def stap_a(*units: bytes) -> bytes:
    return b"\x78" + b"".join(struct.pack("!H", len(u)) + u for u in units)


def fu_a(nal: bytes, start: bool, end: bool = False) -> bytes:
    indicator = (nal[0] & 0xE0) | 28
    header = (0x80 if start else 0) | (0x40 if end else 0) | (nal[0] & 0x1F)
    return bytes((indicator, header)) + nal[1:]


def test_h264_keyframes() -> None:
    cases = [
        (IDR, True),
        (SPS, True),
        (PPS, False),
        (NON_IDR, False),
        (stap_a(SPS, PPS), True),
        (stap_a(PPS, IDR), True),
        (stap_a(PPS, bytes.fromhex("06050403")), False),
        (fu_a(IDR, start=True), True),
        (fu_a(IDR, start=False), False),
        (fu_a(IDR, start=False, end=True), False),
        (fu_a(NON_IDR, start=True), False),
    ]
    for payload, expected in cases:
        pkt = packet(payload)
        assert vp8.h264_is_keyframe_untrusted(pkt, 12) is expected, payload.hex()
        assert vp8.is_keyframe_untrusted("H264", pkt, 12) is expected
        assert vp8.is_keyframe_untrusted("h264", pkt, 12) is expected


def test_h264_malformed() -> None:
    good = stap_a(SPS, PPS)
    for bad in (
        b"",
        b"\x78",
        good[:2],  # size truncated
        good[:5],  # unit runs past the payload
        b"\x78\x00\x00\x67",  # zero-length unit
        b"\x7c",  # FU-A without its header
    ):
        with pytest.raises(MalformedInput):
            vp8.h264_is_keyframe_untrusted(packet(bad), 12)


def test_is_keyframe_dispatch() -> None:
    key = packet(descriptor(picid=1) + keyframe(640, 360))
    assert vp8.is_keyframe_untrusted("VP8", key, 12)
    assert not vp8.is_keyframe_untrusted("VP9", key, 12)
    assert not vp8.is_keyframe_untrusted("opus", key, 12)
    padding_only = bytes((key[0] | 0x20,)) + key[1:12] + b"\x00\x00\x03"
    assert not vp8.is_keyframe_untrusted("VP8", padding_only, 12)
    assert not vp8.is_keyframe_untrusted("H264", padding_only, 12)


# -- fuzz --------------------------------------------------------------------------------------


def test_fuzz_only_malformed_input_escapes() -> None:
    rng = random.Random(7741)
    seeds = [
        packet(descriptor(picid=4660, tl0=3, tid=1, keyidx=2) + keyframe(640, 360)),
        packet(stap_a(SPS, PPS), extensions={3: b"\x01\x02", 10: b"h"}),
        packet(fu_a(IDR, start=True)),
    ]
    for i in range(6000):
        if i % 2:
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            data = data[: rng.randint(0, len(data))]
        else:
            data = bytearray(rng.randbytes(rng.randint(0, 40)))
            if data:
                data[0] = (data[0] & 0x3F) | 0x80  # mostly version 2
        pkt = bytes(data)
        offset = rng.randint(0, 20)
        calls = [
            (rtp.payload_offset_untrusted, (pkt,)),
            (rtp.extension_offset_untrusted, (pkt, rng.randint(1, 255))),
            (rtp.rid_untrusted, (pkt, rng.randint(1, 14))),
            (rtp.payload_end_untrusted, (pkt, offset)),
            (vp8.vp8_descriptor_untrusted, (pkt, offset)),
            (vp8.vp8_keyframe_size_untrusted, (pkt, offset)),
            (vp8.h264_is_keyframe_untrusted, (pkt, offset)),
            (vp8.is_keyframe_untrusted, ("VP8", pkt, offset)),
            (vp8.is_keyframe_untrusted, ("H264", pkt, offset)),
        ]
        for function, args in calls:
            try:
                function(*args)  # type: ignore[operator]
            except MalformedInput:
                pass
        # When the full parser accepts the header, the offset helper agrees with it.
        try:
            header = rtp.parse_rtp_header_untrusted(pkt)
        except MalformedInput:
            continue
        assert rtp.payload_offset_untrusted(pkt) == header.header_length
        if not header.extensions:
            continue
        two_byte = pkt[12 + 4 * header.csrc_count] == 0x10
        for ext_id in header.extensions:
            # The span names an element with that id (the first one when an id repeats; the
            # dict keeps the last).
            off, length = rtp.extension_span_untrusted(pkt, ext_id)
            if two_byte:
                assert (pkt[off - 2], pkt[off - 1]) == (ext_id, length)
            else:
                assert (pkt[off - 1] >> 4, (pkt[off - 1] & 0x0F) + 1) == (ext_id, length)
