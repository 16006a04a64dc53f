"""RTP header parsing and building (arbiter.sfu.rtp): hand-laid packets from RFC 3550 5.1 and
RFC 8285, cross-checks against aiortc's independent implementation, malformed input, fuzzing."""

from __future__ import annotations

import pytest
from aiortc.rtp import RtpPacket, pack_header_extensions, unpack_header_extensions, wrap_rtx
from hypothesis import given, settings
from hypothesis import strategies as st

from arbiter.errors import MalformedInput
from arbiter.sfu import rtp

# An Opus packet as Chrome sends it, laid out by hand from RFC 3550 5.1 / RFC 8285 4.2:
# V=2 X=1 CC=0, M=1 PT=111, seq 0x1a2b, ts 0x00003c00, SSRC 0x12345678,
# 0xBEDE block of 2 words: id 1 L=0 audio level 0x9c; id 3 L=1 transport seq 0x0102; 3 pad.
OPUS = bytes.fromhex("90ef1a2b00003c0012345678bede0002109c310102000000fcff01")


def test_recorded_opus_packet() -> None:
    h = rtp.parse_rtp_header_untrusted(OPUS)
    assert (h.version, h.padding, h.extension, h.csrc_count) == (2, False, True, 0)
    assert (h.marker, h.payload_type) == (True, 111)
    assert (h.sequence_number, h.timestamp, h.ssrc) == (0x1A2B, 0x3C00, 0x12345678)
    assert h.csrcs == ()
    assert h.extensions == {1: b"\x9c", 3: b"\x01\x02"}
    assert h.header_length == 24
    assert h.payload_length == 3
    assert OPUS[h.header_length :] == b"\xfc\xff\x01"


def test_fast_accessors_and_demux() -> None:
    assert rtp.ssrc_of(OPUS) == 0x12345678
    assert rtp.seq_of(OPUS) == 0x1A2B
    assert rtp.payload_type_of(OPUS) == 111
    assert not rtp.is_rtcp(OPUS)
    # RTCP SR/RR/PSFB second bytes (RFC 5761 4) are RTCP; PT 96 with marker (0xe0) is not.
    for second in (200, 201, 205, 206, 192, 223):
        assert rtp.is_rtcp(bytes((0x80, second, 0, 1)))
    for second in (96, 0xE0, 111, 0xEF, 191, 224):
        assert not rtp.is_rtcp(bytes((0x80, second, 0, 1)))
    assert not rtp.is_rtcp(b"\x80")


def test_get_extension_and_rtx() -> None:
    assert rtp.get_extension_untrusted(OPUS, 3) == b"\x01\x02"
    assert rtp.get_extension_untrusted(OPUS, 5) is None
    original = RtpPacket(
        payload_type=96, sequence_number=4242, timestamp=9, ssrc=1, payload=b"vp8 frame"
    )
    rtx_packet = wrap_rtx(original, payload_type=97, sequence_number=7, ssrc=2).serialize()
    assert rtp.rtx_original_seq_untrusted(rtx_packet) == 4242
    h = rtp.parse_rtp_header_untrusted(rtx_packet)
    assert (h.payload_type, h.sequence_number, h.ssrc) == (97, 7, 2)
    with pytest.raises(MalformedInput):
        rtp.rtx_original_seq_untrusted(rtp.build_rtp(97, 1, 2, 3, b"\x01"))


def test_build_round_trip() -> None:
    packet = rtp.build_rtp(
        96,
        65535,
        0xFFFFFFFF,
        0xDEADBEEF,
        b"payload",
        marker=True,
        extensions={4: b"abc", 1: b"\x00\x01", 14: b"x" * 16},
    )
    h = rtp.parse_rtp_header_untrusted(packet)
    assert (h.payload_type, h.sequence_number, h.timestamp, h.ssrc, h.marker) == (
        96,
        65535,
        0xFFFFFFFF,
        0xDEADBEEF,
        True,
    )
    assert h.extensions == {1: b"\x00\x01", 4: b"abc", 14: b"x" * 16}
    assert packet[h.header_length :] == b"payload"
    assert h.payload_length == 7
    assert (h.header_length - 12) % 4 == 0
    plain = rtp.build_rtp(0, 1, 2, 3, b"")
    assert plain == bytes.fromhex("800000010000000200000003")
    assert rtp.parse_rtp_header_untrusted(plain).extensions == {}
    with pytest.raises(ValueError):
        rtp.build_rtp(96, 1, 2, 3, b"", extensions={15: b"x"})
    with pytest.raises(ValueError):
        rtp.build_rtp(96, 1, 2, 3, b"", extensions={1: b"x" * 17})


def test_build_cross_checked_with_aiortc() -> None:
    packet = rtp.build_rtp(111, 10, 20, 30, b"opus", extensions={2: b"\x80", 9: b"mid"})
    theirs = RtpPacket.parse(packet)
    assert (theirs.payload_type, theirs.sequence_number, theirs.timestamp, theirs.ssrc) == (
        111,
        10,
        20,
        30,
    )
    assert theirs.payload == b"opus"
    h = rtp.parse_rtp_header_untrusted(packet)
    profile, value = rtp.ONE_BYTE_PROFILE, packet[16 : h.header_length]
    assert sorted(unpack_header_extensions(profile, value)) == [(2, b"\x80"), (9, b"mid")]


def test_aiortc_packet_with_csrcs_and_padding() -> None:
    theirs = RtpPacket(
        payload_type=100,
        marker=1,
        sequence_number=513,
        timestamp=77,
        ssrc=0xCAFEBABE,
        payload=b"\x01\x02\x03\x04\x05",
    )
    theirs.csrc = [11, 22, 33]
    theirs.padding_size = 7
    data = theirs.serialize()
    h = rtp.parse_rtp_header_untrusted(data)
    assert (h.padding, h.csrc_count, h.csrcs) == (True, 3, (11, 22, 33))
    assert (h.marker, h.payload_type, h.sequence_number, h.timestamp, h.ssrc) == (
        True,
        100,
        513,
        77,
        0xCAFEBABE,
    )
    assert h.header_length == 24
    assert h.payload_length == 5
    assert data[h.header_length : h.header_length + h.payload_length] == theirs.payload


def test_two_byte_extensions_from_aiortc() -> None:
    # An id above 14 and a zero-length value force the two-byte form (RFC 8285 4.3).
    profile, value = pack_header_extensions([(20, b""), (3, b"z" * 20), (200, b"\x07")])
    assert profile == 0x1000
    header = bytes.fromhex("906000010000000200000003")
    packet = header + profile.to_bytes(2, "big") + (len(value) // 4).to_bytes(2, "big")
    packet += value + b"pl"
    h = rtp.parse_rtp_header_untrusted(packet)
    assert h.extensions == {20: b"", 3: b"z" * 20, 200: b"\x07"}
    assert h.payload_length == 2
    # The low 4 bits of 0x100X are "appbits" and do not change the format.
    appbits = packet[:12] + b"\x10\x0f" + packet[14:]
    assert rtp.parse_rtp_header_untrusted(appbits).extensions == h.extensions


def test_unknown_profile_and_reserved_id_15() -> None:
    unknown = bytes.fromhex("900000010000000200000003abcd000111223344") + b"p"
    h = rtp.parse_rtp_header_untrusted(unknown)
    assert (h.extensions, h.header_length, h.payload_length) == ({}, 20, 1)
    # id 15 stops processing of the block (RFC 8285 4.2); what precedes it is kept.
    stop = bytes.fromhex("900000010000000200000003bede000110aaf0ff")
    assert rtp.parse_rtp_header_untrusted(stop).extensions == {1: b"\xaa"}


@pytest.mark.parametrize(
    "data",
    [
        b"",
        OPUS[:11],  # shorter than the fixed header
        bytes((0x50,)) + OPUS[1:],  # version 1
        bytes((0x10,)) + OPUS[1:],  # version 0
        bytes.fromhex("82000001000000020000000300000004"),  # CC=2, one CSRC present
        bytes.fromhex("900000010000000200000003bede"),  # extension header truncated
        bytes.fromhex("900000010000000200000003bede000210aa0000"),  # block past end
        bytes.fromhex("900000010000000200000003bede000133aa0000"),  # element past block
        bytes.fromhex("900000010000000200000003100000010105aabb"),  # two-byte past block
        bytes.fromhex("9000000100000002000000031000000100000005"),  # two-byte no len
        bytes.fromhex("a00000010000000200000003"),  # padding bit, no payload
        bytes.fromhex("a00000010000000200000003aabb00"),  # padding count 0
        bytes.fromhex("a00000010000000200000003aabb04"),  # padding past the header
    ],
)
def test_malformed(data: bytes) -> None:
    with pytest.raises(MalformedInput):
        rtp.parse_rtp_header_untrusted(data)


def test_padding_only_packet_is_valid() -> None:
    # Chrome sends padding-only packets for bandwidth probing: payload_length 0.
    data = bytes.fromhex("a0000001000000020000000300000004")
    assert rtp.parse_rtp_header_untrusted(data).payload_length == 0


_rtp_like = st.one_of(
    st.binary(max_size=200),
    # Version 2 prefixes reach the CSRC, extension and padding paths far more often.
    st.tuples(st.integers(0x80, 0xBF), st.binary(max_size=120)).map(
        lambda t: bytes((t[0],)) + t[1]
    ),
    st.tuples(
        st.sampled_from([b"\xbe\xde", b"\x10\x00", b"\x10\x05"]),
        st.integers(0, 6),
        st.binary(max_size=40),
        st.integers(0x90, 0xBF),
    ).map(lambda t: bytes((t[3] & 0xB0,)) + bytes(11) + t[0] + t[1].to_bytes(2, "big") + t[2]),
)


@settings(max_examples=300, deadline=None)
@given(_rtp_like)
def test_fuzz_parse_header(data: bytes) -> None:
    try:
        h = rtp.parse_rtp_header_untrusted(data)
    except MalformedInput:
        return
    assert 12 <= h.header_length <= len(data)
    assert 0 <= h.payload_length <= len(data) - h.header_length


@settings(max_examples=300, deadline=None)
@given(_rtp_like, st.integers(0, 255))
def test_fuzz_get_extension_and_rtx(data: bytes, ext_id: int) -> None:
    for parse in (
        lambda: rtp.get_extension_untrusted(data, ext_id),
        lambda: rtp.rtx_original_seq_untrusted(data),
    ):
        try:
            parse()
        except MalformedInput:
            pass
