"""RTCP framing, parsers and builders (arbiter.sfu.rtcp): round trips, cross-checks against
aiortc's independent implementation, recorded transport-cc feedback, malformed input, fuzzing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from aiortc import rtp as aio
from hypothesis import given, settings
from hypothesis import strategies as st

from arbiter.errors import MalformedInput
from arbiter.sfu import rtcp
from arbiter.sfu.rtcp import ReportBlock
from arbiter.testing import rtcp_reader


def one(data: bytes) -> rtcp.RtcpPacket:
    packets = rtcp.iter_packets_untrusted(data)
    assert len(packets) == 1
    return packets[0]


BLOCK = ReportBlock(
    ssrc=0x11223344,
    fraction_lost=25,
    packets_lost=-5,
    highest_seq=0x1FFFF,
    jitter=123,
    lsr=0xAABBCCDD,
    dlsr=65536,
)

# -- SR / RR -----------------------------------------------------------------------------------


def test_sender_report_round_trip() -> None:
    ntp = rtcp.ntp_from_unix(1_700_000_000.25)
    data = rtcp.build_sender_report(0xCAFE, ntp, 90000, 10, 12000, [BLOCK])
    assert len(data) == 52
    pkt = one(data)
    assert (pkt.packet_type, pkt.fmt, pkt.sender_ssrc, pkt.media_ssrc) == (200, 1, 0xCAFE, 0)
    sr = rtcp.parse_sender_report_untrusted(pkt)
    assert sr == rtcp.SenderReport(0xCAFE, ntp, 90000, 10, 12000, [BLOCK])
    # aiortc reads the same bytes identically.
    [theirs] = aio.RtcpPacket.parse(data)
    assert theirs.sender_info.ntp_timestamp == ntp
    assert theirs.reports[0].packets_lost == -5
    assert theirs.reports[0].fraction_lost == 25


def test_sender_report_from_aiortc() -> None:
    info = aio.RtcpSenderInfo(
        ntp_timestamp=(3_900_000_000 << 32) | 7, rtp_timestamp=1, packet_count=2, octet_count=3
    )
    block = aio.RtcpReceiverInfo(
        ssrc=9,
        fraction_lost=255,
        packets_lost=8_388_607,
        highest_sequence=4,
        jitter=5,
        lsr=6,
        dlsr=7,
    )
    sr = rtcp.parse_sender_report_untrusted(
        one(bytes(aio.RtcpSrPacket(ssrc=77, sender_info=info, reports=[block])))
    )
    assert sr == rtcp.SenderReport(
        77, (3_900_000_000 << 32) | 7, 1, 2, 3, [ReportBlock(9, 255, 8_388_607, 4, 5, 6, 7)]
    )


def test_receiver_report_round_trip_and_split() -> None:
    rr = rtcp.parse_receiver_report_untrusted(one(rtcp.build_receiver_report(5, [BLOCK])))
    assert rr == rtcp.ReceiverReport(5, [BLOCK])
    empty = rtcp.build_receiver_report(5, [])
    assert empty == bytes.fromhex("80c9000100000005")
    assert rtcp.parse_receiver_report_untrusted(one(empty)) == rtcp.ReceiverReport(5, [])
    blocks = [BLOCK._replace(ssrc=i) for i in range(40)]
    packets = rtcp.iter_packets_untrusted(rtcp.build_receiver_report(5, blocks))
    assert [(p.packet_type, p.fmt) for p in packets] == [(201, 31), (201, 9)]
    parsed = [b for p in packets for b in rtcp.parse_receiver_report_untrusted(p).reports]
    assert parsed == blocks
    # aiortc agrees on the first RR.
    theirs = aio.RtcpPacket.parse(rtcp.build_receiver_report(5, blocks))
    assert [len(p.reports) for p in theirs] == [31, 9]


def test_sender_report_overflow_goes_to_rr() -> None:
    blocks = [BLOCK._replace(ssrc=i) for i in range(33)]
    packets = rtcp.iter_packets_untrusted(rtcp.build_sender_report(1, 2, 3, 4, 5, blocks))
    assert [(p.packet_type, p.fmt) for p in packets] == [(200, 31), (201, 2)]
    assert rtcp.parse_receiver_report_untrusted(packets[1]).reports == blocks[31:]


def test_packets_lost_clamped_to_24_bits() -> None:
    block = BLOCK._replace(packets_lost=10_000_000)
    rr = rtcp.parse_receiver_report_untrusted(one(rtcp.build_receiver_report(1, [block])))
    assert rr.reports[0].packets_lost == 0x7FFFFF
    block = BLOCK._replace(packets_lost=-10_000_000)
    rr = rtcp.parse_receiver_report_untrusted(one(rtcp.build_receiver_report(1, [block])))
    assert rr.reports[0].packets_lost == -0x800000


def test_ntp_helpers() -> None:
    assert rtcp.ntp_from_unix(0.0) == 2_208_988_800 << 32
    assert rtcp.ntp_from_unix(1.5) == (2_208_988_801 << 32) | 0x80000000
    ntp = rtcp.ntp_from_unix(1_700_000_000.75)
    assert ntp == ((1_700_000_000 + 2_208_988_800) << 32) | 0xC0000000
    assert rtcp.ntp_middle32(ntp) == ((ntp >> 16) & 0xFFFFFFFF)
    assert rtcp.ntp_middle32(0x1122334455667788) == 0x33445566
    assert rtcp_reader.ntp_to_unix(ntp) == 1_700_000_000.75


# -- compound framing --------------------------------------------------------------------------


def test_compound_with_unknown_types_in_the_middle() -> None:
    xr = bytes.fromhex("80cf00020000000904000000")  # XR (RFC 3611), skipped by callers
    app = bytes.fromhex("81cc000200000009") + b"NAME"  # APP (RFC 3550 6.7)
    compound = (
        rtcp.build_sender_report(9, 1 << 32, 2, 3, 4)
        + xr
        + app
        + rtcp.build_sdes(9, "cname-9")
        + rtcp.build_pli(9, 0xABC)
    )
    packets = rtcp.iter_packets_untrusted(compound)
    assert [p.packet_type for p in packets] == [200, 207, 204, 202, 206]
    assert packets[1].data == xr and packets[2].data == app
    assert rtcp.parse_sender_report_untrusted(packets[0]).ntp_timestamp == 1 << 32
    assert rtcp_reader.parse_sdes_untrusted(packets[3]) == [(9, {1: b"cname-9"})]
    assert rtcp.keyframe_request_ssrcs_untrusted(packets[4]) == [0xABC]
    assert packets[4].media_ssrc == 0xABC


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80\xc9\x00",  # header truncated
        bytes.fromhex("40c9000100000005"),  # version 1
        bytes.fromhex("00c9000100000005"),  # version 0
        bytes.fromhex("80c9000200000005"),  # length field past the end
        bytes.fromhex("80c90000"),  # zero length: no room for the sender SSRC
        bytes.fromhex("80c900010000000580c9"),  # trailing partial header
        bytes.fromhex("80c900010000000580c90000"),  # zero-length packet after a good one
        bytes.fromhex("a0c9000100000000"),  # padding count 0
        bytes.fromhex("a0c900020000000500000008"),  # padding eats the SSRC
        bytes.fromhex("81ce000100000005"),  # PSFB with no media SSRC (RFC 4585 6.1)
    ],
)
def test_malformed_compound(data: bytes) -> None:
    with pytest.raises(MalformedInput):
        rtcp.iter_packets_untrusted(data)


def test_parsers_reject_the_wrong_type_or_truncation() -> None:
    pli = one(rtcp.build_pli(1, 2))
    for parse in (
        rtcp.parse_sender_report_untrusted,
        rtcp.parse_receiver_report_untrusted,
        rtcp.parse_nack_untrusted,
        rtcp_reader.parse_remb_untrusted,
        rtcp_reader.parse_twcc_untrusted,
        rtcp_reader.parse_sdes_untrusted,
        rtcp_reader.parse_bye_untrusted,
    ):
        with pytest.raises(MalformedInput):
            parse(pli)
    # SR header claiming 28 bytes but RC=1 (needs 52).
    with pytest.raises(MalformedInput):
        rtcp.parse_sender_report_untrusted(one(bytes.fromhex("81c80006") + bytes(24)))
    # RR of 8 bytes: too short for the SR sender info.
    with pytest.raises(MalformedInput):
        rtcp.parse_sender_report_untrusted(one(bytes.fromhex("80c80001") + bytes(4)))
    # An RtcpPacket not from iter_packets_untrusted: data disagrees with its length field.
    forged = rtcp.RtcpPacket(rtcp.PT_PSFB, rtcp.FMT_PLI, 1, 2, b"\x81\xce\x00\x09")
    with pytest.raises(MalformedInput):
        rtcp.keyframe_request_ssrcs_untrusted(forged)


# -- SDES / BYE --------------------------------------------------------------------------------


def test_sdes_round_trip_and_aiortc() -> None:
    for cname in ("", "abc", "abcd", "{e5c2a8a4-7c34-4a1b-9c4e-0d6f3c7f2a11}"):
        data = rtcp.build_sdes(0x1234, cname)
        assert len(data) % 4 == 0
        assert rtcp_reader.parse_sdes_untrusted(one(data)) == [(0x1234, {1: cname.encode()})]
        [theirs] = aio.RtcpPacket.parse(data)
        assert theirs.chunks[0].items == [(1, cname.encode())]
    theirs = bytes(
        aio.RtcpSdesPacket(chunks=[aio.RtcpSourceInfo(ssrc=1, items=[(1, b"one"), (6, b"tool")])])
    )
    assert rtcp_reader.parse_sdes_untrusted(one(theirs)) == [(1, {1: b"one", 6: b"tool"})]
    # Two chunks, each starting on a 32-bit boundary (RFC 3550 6.5). aiortc does not align
    # the second chunk, so this one is laid out by hand.
    two = bytes.fromhex("82ca00050000000101036f6e650000000000000201015a00")
    assert rtcp_reader.parse_sdes_untrusted(one(two)) == [(1, {1: b"one"}), (2, {1: b"Z"})]


def test_sdes_malformed() -> None:
    unterminated = bytes.fromhex("81ca00020000000101026162")
    with pytest.raises(MalformedInput):
        rtcp_reader.parse_sdes_untrusted(one(unterminated))
    item_past_end = bytes.fromhex("81ca00020000000101056162")
    with pytest.raises(MalformedInput):
        rtcp_reader.parse_sdes_untrusted(one(item_past_end))
    missing_chunk = bytes.fromhex("82ca00020000000100000000")
    with pytest.raises(MalformedInput):
        rtcp_reader.parse_sdes_untrusted(one(missing_chunk))


def test_bye_round_trip_and_aiortc() -> None:
    data = rtcp_reader.build_bye([1, 0xFFFFFFFF])
    assert rtcp_reader.parse_bye_untrusted(one(data)) == [1, 0xFFFFFFFF]
    assert aio.RtcpPacket.parse(data)[0].sources == [1, 0xFFFFFFFF]
    assert rtcp_reader.parse_bye_untrusted(one(bytes(aio.RtcpByePacket(sources=[7, 8, 9])))) == [7, 8, 9]
    with pytest.raises(MalformedInput):  # SC=3 with room for 1
        rtcp_reader.parse_bye_untrusted(one(bytes.fromhex("83cb000100000001")))


# -- PLI / FIR / NACK --------------------------------------------------------------------------


def test_pli_and_fir() -> None:
    pli = rtcp.build_pli(0x10, 0x20)
    assert pli == bytes.fromhex("81ce00020000001000000020")
    assert rtcp.keyframe_request_ssrcs_untrusted(one(pli)) == [0x20]
    fir = rtcp_reader.build_fir(0x10, 0x20, 3)
    assert fir == bytes.fromhex("84ce000400000010000000000000002003000000")
    pkt = one(fir)
    assert (pkt.packet_type, pkt.fmt, pkt.media_ssrc) == (206, 4, 0)
    assert rtcp.keyframe_request_ssrcs_untrusted(pkt) == [0x20]
    two = bytes.fromhex("84ce000600000010000000000000000a010000000000000b02000000")
    assert rtcp.keyframe_request_ssrcs_untrusted(one(two)) == [10, 11]
    # aiortc's PLI parses the same way.
    theirs = bytes(aio.RtcpPsfbPacket(fmt=aio.RTCP_PSFB_PLI, ssrc=1, media_ssrc=2))
    assert rtcp.keyframe_request_ssrcs_untrusted(one(theirs)) == [2]
    with pytest.raises(MalformedInput):  # FIR with a half entry
        rtcp.keyframe_request_ssrcs_untrusted(
            one(bytes.fromhex("84ce0003000000100000000000000020"))
        )
    with pytest.raises(MalformedInput):  # REMB is not a keyframe request
        rtcp.keyframe_request_ssrcs_untrusted(one(rtcp.build_remb(1, 1000, [2])))


def test_nack_round_trip_with_wraparound() -> None:
    seqs = [65534, 65535, 0, 1, 15, 20, 100]
    data = rtcp.build_nack(0xA, 0xB, seqs)
    pkt = one(data)
    assert (pkt.packet_type, pkt.fmt, pkt.sender_ssrc, pkt.media_ssrc) == (205, 1, 0xA, 0xB)
    # PID 65534 with BLP bits for 65535, 0, 1; 15 is 17 past 65534 (beyond BLP) so it opens
    # an entry carrying 20 as bit 4; 100 opens a third.
    assert data[12:] == bytes.fromhex("fffe0007000f001000640000")
    assert rtcp.parse_nack_untrusted(pkt) == seqs
    assert [s & 0xFFFF for s in aio.RtcpPacket.parse(data)[0].lost] == seqs


def test_nack_cross_checked_with_aiortc() -> None:
    lost = [100, 101, 103, 116, 117, 300]
    theirs = aio.RtcpRtpfbPacket(fmt=aio.RTCP_RTPFB_NACK, ssrc=1, media_ssrc=2, lost=lost)
    assert rtcp.parse_nack_untrusted(one(bytes(theirs))) == lost
    [back] = aio.RtcpPacket.parse(rtcp.build_nack(1, 2, lost))
    assert (back.media_ssrc, back.lost) == (2, lost)
    # PID 0x0010 with BLP 0x8001: 16, 17 and 32; duplicates across entries are dropped.
    data = bytes.fromhex("81cd000400000001000000020010800100110000")
    assert rtcp.parse_nack_untrusted(one(data)) == [16, 17, 32]
    with pytest.raises(MalformedInput):  # no FCI at all
        rtcp.parse_nack_untrusted(one(bytes.fromhex("81cd00020000000100000002")))


# -- REMB --------------------------------------------------------------------------------------


def test_remb_round_trip_and_aiortc() -> None:
    data = rtcp.build_remb(0x99, 2_500_000, [0x11, 0x22])
    pkt = one(data)
    assert (pkt.packet_type, pkt.fmt, pkt.media_ssrc) == (206, 15, 0)
    assert rtcp_reader.is_remb(pkt)
    assert data[12:20] == b"REMB" + bytes((2, 4 << 2 | 2)) + (156250 & 0xFFFF).to_bytes(2, "big")
    assert rtcp_reader.parse_remb_untrusted(pkt) == (2_500_000, [0x11, 0x22])
    # Not representable in 18 bits: rounded down to mantissa << exponent.
    assert rtcp_reader.parse_remb_untrusted(one(rtcp.build_remb(1, 2**20 + 1, [3]))) == (2**20, [3])
    assert rtcp_reader.parse_remb_untrusted(one(rtcp.build_remb(1, 0, []))) == (0, [])
    [theirs] = aio.RtcpPacket.parse(data)
    assert aio.unpack_remb_fci(theirs.fci) == (2_500_000, [0x11, 0x22])
    mine = bytes(
        aio.RtcpPsfbPacket(fmt=15, ssrc=5, media_ssrc=0, fci=aio.pack_remb_fci(1_234_567, [42]))
    )
    assert rtcp_reader.parse_remb_untrusted(one(mine)) == (1_234_560, [42])
    bad_id = data[:12] + b"ABCD" + data[16:]
    assert not rtcp_reader.is_remb(one(bad_id))
    with pytest.raises(MalformedInput):
        rtcp_reader.parse_remb_untrusted(one(bad_id))
    with pytest.raises(MalformedInput):  # claims 3 SSRCs, carries 2
        rtcp_reader.parse_remb_untrusted(one(data[:16] + b"\x03" + data[17:]))


# -- transport-wide congestion control ---------------------------------------------------------

# Source: pion/rtcp transport_layer_cc_test.go, TestTransportLayerCC_Unmarshal "example6"
# (a packet as Chrome sends it): a 2-bit status vector then a run of "not received", padded.
PION_EXAMPLE6 = bytes(
    [
        0xAF,
        0xCD,
        0x00,
        0x07,
        0x9B,
        0x74,
        0xF6,
        0x1F,
        0x93,
        0x71,
        0xDC,
        0xBC,
        0x85,
        0x3C,
        0x00,
        0x09,
        0x63,
        0xF9,
        0x16,
        0xB3,
        0xD5,
        0x52,
        0x00,
        0x30,
        0x9B,
        0xAA,
        0x6A,
        0xAA,
        0x7B,
        0x01,
        0x09,
        0x01,
    ]
)

# Source: olivermichel/webrtc-analysis test/include/data.h `twcc_pkt1`, a Wireshark capture of
# Chrome feedback: one run-length chunk of 9 small deltas and one byte of RTCP padding.
WIRESHARK_TWCC = bytes(
    [
        0xAF,
        0xCD,
        0x00,
        0x07,
        0x00,
        0x00,
        0x00,
        0x01,
        0xDD,
        0x58,
        0x6E,
        0xB6,
        0x00,
        0x01,
        0x00,
        0x09,
        0x5E,
        0x91,
        0x10,
        0x00,
        0x20,
        0x09,
        0x1C,
        0x0C,
        0x2C,
        0x38,
        0x00,
        0x04,
        0x00,
        0x08,
        0x18,
        0x01,
    ]
)

# Source: pion/rtcp transport_layer_cc_test.go, TestTransportLayerCC_Marshal "example5":
# a 1-bit status vector chunk.
PION_ONE_BIT = bytes(
    [
        0xAF,
        0xCD,
        0x00,
        0x06,
        0xFA,
        0x17,
        0xFA,
        0x17,
        0x19,
        0x3D,
        0xD8,
        0xBB,
        0x00,
        0x01,
        0x00,
        0x0E,
        0x10,
        0x63,
        0x6D,
        0x00,
        0xBA,
        0x00,
        0x10,
        0x0C,
        0x0C,
        0x10,
        0x00,
        0x02,
    ]
)


def test_twcc_pion_example6() -> None:
    pkt = one(PION_EXAMPLE6)
    assert (pkt.packet_type, pkt.fmt, pkt.sender_ssrc, pkt.media_ssrc) == (
        205,
        15,
        2608133663,
        2473712828,
    )
    fb = rtcp_reader.parse_twcc_untrusted(pkt)
    assert (fb.base_seq, fb.packet_status_count, fb.reference_time, fb.fb_pkt_count) == (
        34108,
        9,
        6551830,
        179,
    )
    assert fb.packets == [
        (34108, 1, 38750),
        (34109, 1, 42500),
        (34110, 1, 26500),
        (34111, 1, 42500),
        (34112, 1, 30750),
        (34113, 0, None),
        (34114, 2, 66250),
        (34115, 0, None),
        (34116, 0, None),
    ]


def test_twcc_wireshark_capture() -> None:
    fb = rtcp_reader.parse_twcc_untrusted(one(WIRESHARK_TWCC))
    assert (fb.base_seq, fb.packet_status_count, fb.reference_time, fb.fb_pkt_count) == (
        1,
        9,
        6197520,
        0,
    )
    assert fb.packets == [
        (1, 1, 7000),
        (2, 1, 3000),
        (3, 1, 11000),
        (4, 1, 14000),
        (5, 1, 0),
        (6, 1, 1000),
        (7, 1, 0),
        (8, 1, 2000),
        (9, 1, 6000),
    ]


def test_twcc_one_bit_vector() -> None:
    fb = rtcp_reader.parse_twcc_untrusted(one(PION_ONE_BIT))
    assert (fb.base_seq, fb.packet_status_count, fb.reference_time, fb.fb_pkt_count) == (
        1,
        14,
        1074029,
        0,
    )
    received = [(s, d) for s, st_, d in fb.packets if st_ == rtcp.TWCC_SMALL_DELTA]
    assert received == [(1, 4000), (2, 3000), (3, 3000), (5, 4000)]
    assert [st_ for _, st_, _ in fb.packets] == [1, 1, 1, 0, 1] + [0] * 9


def test_twcc_hand_built_edge_cases() -> None:
    head = bytes.fromhex("8fcd00060000000100000002")
    # base 0xFFFF, 2 packets, reference time -1 (0xFFFFFF), fb count 7; run of 2 large
    # deltas: -250 µs and +8191.75 ms; sequence numbers wrap.
    body = bytes.fromhex("ffff0002ffffff074002ffff7fff0000")
    fb = rtcp_reader.parse_twcc_untrusted(one(head + body))
    assert (fb.base_seq, fb.reference_time, fb.fb_pkt_count) == (0xFFFF, -1, 7)
    assert fb.packets == [(0xFFFF, 2, -250), (0, 2, 8191750)]
    # An empty feedback (pion "example7"): no chunks at all.
    empty = bytes.fromhex("8fcd00049acb0442") + bytes(12)
    assert rtcp_reader.parse_twcc_untrusted(one(empty)).packets == []


@pytest.mark.parametrize(
    "data",
    [
        # pion "example8": three small deltas announced, one present before the padding.
        bytes(
            [
                0xAF,
                0xCD,
                0x00,
                0x05,
                0xFA,
                0x17,
                0xFA,
                0x17,
                0x43,
                0x03,
                0x2F,
                0xA0,
                0x00,
                0x99,
                0x00,
                0x03,
                0x3D,
                0xE8,
                0x02,
                0x17,
                0x20,
                0x03,
                0x94,
                0x01,
            ]
        ),
        # status count 20 but one run-length chunk of 9 and then nothing.
        bytes.fromhex("8fcd00050000000100000002000000140000000000090000"),
        # reserved status symbol 3 in a run-length chunk.
        bytes.fromhex("8fcd00050000000100000002000000010000000060010000"),
        # header only: no room for base seq / count / reference time.
        bytes.fromhex("8fcd00020000000100000002"),
    ],
)
def test_twcc_malformed(data: bytes) -> None:
    with pytest.raises(MalformedInput):
        rtcp_reader.parse_twcc_untrusted(one(data))


# -- fuzzing: only MalformedInput may escape ---------------------------------------------------

PARSERS: list[Callable[[rtcp.RtcpPacket], Any]] = [
    rtcp.parse_sender_report_untrusted,
    rtcp.parse_receiver_report_untrusted,
    rtcp.keyframe_request_ssrcs_untrusted,
    rtcp.parse_nack_untrusted,
    rtcp_reader.parse_remb_untrusted,
    rtcp_reader.parse_twcc_untrusted,
    rtcp_reader.parse_sdes_untrusted,
    rtcp_reader.parse_bye_untrusted,
]


def _framed(pt: int, fmt: int, body: bytes, padded: bool) -> bytes:
    """A packet with a correct length field, so the fuzzer reaches the type-specific code."""
    body += bytes(-len(body) % 4)
    b0 = 0x80 | (0x20 if padded else 0) | fmt
    return bytes((b0, pt)) + (len(body) // 4).to_bytes(2, "big") + body


_framed_packets = st.builds(
    _framed,
    st.sampled_from([200, 201, 202, 203, 204, 205, 206, 207]),
    st.integers(0, 31),
    st.one_of(
        st.binary(min_size=4, max_size=120),
        st.binary(min_size=8, max_size=8).map(lambda b: b + b"REMB" + bytes(8)),
    ),
    st.booleans(),
)


def _only_malformed(call: Callable[[], Any]) -> None:
    try:
        call()
    except MalformedInput:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_iter_packets(data: bytes) -> None:
    _only_malformed(lambda: rtcp.iter_packets_untrusted(data))


@settings(max_examples=300, deadline=None)
@given(st.lists(_framed_packets, min_size=1, max_size=3))
def test_fuzz_every_parser_on_framed_packets(packets: list[bytes]) -> None:
    try:
        items = rtcp.iter_packets_untrusted(b"".join(packets))
    except MalformedInput:
        return
    for item in items:
        for parse in PARSERS:
            _only_malformed(lambda parse=parse, item=item: parse(item))


@pytest.mark.parametrize("parse", PARSERS, ids=lambda p: p.__name__)
@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200), fmt=st.integers(0, 31))
def test_fuzz_each_parser_on_raw_bytes(
    parse: Callable[[rtcp.RtcpPacket], Any], data: bytes, fmt: int
) -> None:
    # Parsers re-read pkt.data, so a forged RtcpPacket must not get past them either.
    _only_malformed(lambda: parse(rtcp.RtcpPacket(206, fmt, 0, 0, data)))
