"""Transport-cc feedback (arbiter.sfu.twcc): recorded packets from other implementations,
build/parse round trips, chunk choice, malformed input and fuzzing, the receive-side recorder
(reordering, wrap-around, duplicates, losses, bounded memory) and the send-side matcher."""

from __future__ import annotations

import random

import pytest

from arbiter.errors import MalformedInput
from arbiter.sfu import rtcp
from arbiter.sfu.twcc import (
    Feedback,
    TwccReceiver,
    TwccSender,
    build_feedback,
    parse_feedback_packet_untrusted,
    parse_feedback_untrusted,
)
from arbiter.testing import rtcp_reader


def cumulate(reference: int, deltas: list[int | None]) -> list[int | None]:
    """Expected absolute arrivals (µs) from a reference time and per-packet deltas (µs)."""
    t = reference * 64_000
    out: list[int | None] = []
    for d in deltas:
        if d is None:
            out.append(None)
        else:
            t += d
            out.append(t)
    return out


def packet(data: bytes) -> rtcp.RtcpPacket:
    [pkt] = rtcp.iter_packets_untrusted(data)
    return pkt


# -- recorded feedback ---------------------------------------------------------------------------
# Sources: pion/rtcp transport_layer_cc_test.go (TestTransportLayerCC_Unmarshal "example1",
# "example3", "example4", "example6"; TestTransportLayerCC_Marshal "example6"), with the decoded
# values pion expects; olivermichel/webrtc-analysis test/include/data.h `twcc_pkt1`, a Wireshark
# capture of Chrome's feedback (already used in test_rtcp.py).

PION_EX1 = bytes.fromhex("afcd0005fa17fa17 43032fa0 00990001 3de80217 20019401".replace(" ", ""))
PION_EX3 = bytes.fromhex("afcd0007fa17fa17193dd8bb0174000645b15a40400220041ffe1f9ad000d000")
PION_EX4 = bytes.fromhex("afcd0007fa17fa17193dd8bb00040007 10636e01 20074c24 24100c0c 10000003"
                         .replace(" ", ""))  # fmt: skip
PION_EX6 = bytes.fromhex("afcd00079b74f61f9371dcbc853c000963f916b3d55200309baa6aaa7b010901")
PION_MARSHAL_EX6 = bytes.fromhex("afcd0007fa17fa1743032fa09c14000c75842000bec0c13f3b3f53903b000003")
WIRESHARK = bytes.fromhex("afcd000700000001dd586eb6000100095e911000 20091c0c2c38000400081801"
                          .replace(" ", ""))  # fmt: skip


RECORDED = [
    # (bytes, base_seq, fb_count, reference_time, per-packet deltas in µs or None if lost)
    (PION_EX1, 153, 23, 4057090, [37000]),
    (PION_EX3, 372, 64, 4567386, [2047500, 2022500, 52000, 0, 52000, 0]),
    (PION_EX4, 4, 1, 1074030, [19000, 9000, 9000, 4000, 3000, 3000, 4000]),
    (PION_EX6, 34108, 179, 6551830,
     [38750, 42500, 26500, 42500, 30750, None, 66250, None, None]),
    (PION_MARSHAL_EX6, 39956, 0, 7701536,
     [48250, 15750, 14750, 15750, 20750, None, 36000, 14750, None, None, None, None]),
    (WIRESHARK, 1, 0, 6197520, [7000, 3000, 11000, 14000, 0, 1000, 0, 2000, 6000]),
]  # fmt: skip


@pytest.mark.parametrize("data, base, fb_count, reference, deltas", RECORDED)
def test_recorded_feedback(
    data: bytes, base: int, fb_count: int, reference: int, deltas: list[int | None]
) -> None:
    fb = parse_feedback_untrusted(data[12:])
    assert fb == Feedback(
        base_seq=base,
        fb_count=fb_count,
        reference_time=reference,
        seqs=[(base + i) & 0xFFFF for i in range(len(deltas))],
        arrivals_us=cumulate(reference, deltas),
    )


def test_recorded_feedback_through_rtcp_framing() -> None:
    # The ones whose RTCP padding is well formed also decode from the compound parser's packet.
    for data in (PION_EX1, PION_EX4, PION_EX6, PION_MARSHAL_EX6, WIRESHARK):
        assert parse_feedback_packet_untrusted(packet(data)) == parse_feedback_untrusted(data[12:])
    assert parse_feedback_packet_untrusted(packet(PION_EX4)).arrivals_us[-1] == (
        1074030 * 64000 + 51000
    )


def test_recorded_reserved_symbol_and_short_packets_refused() -> None:
    # pion "example2" uses symbol 3, which draft-01 3.1.1 reserves (libwebrtc refuses it too).
    example2 = bytes.fromhex("afcd0006fa17fa17193dd8bb0174000e45b15a40d800f0ffd0000003")
    with pytest.raises(MalformedInput):
        parse_feedback_untrusted(example2[12:])
    # pion "example8"/"example9": more received packets announced than deltas present.
    example8 = bytes.fromhex("afcd0005fa17fa1743032fa0009900033de80217200394 01".replace(" ", ""))
    example9 = bytes.fromhex("afcd0005fa17fa1743032fa0009900023de8021740029401")
    for data in (example8, example9):
        with pytest.raises(MalformedInput):
            parse_feedback_untrusted(data[12:])


def test_empty_feedback() -> None:
    # pion "example7": status count 0, no chunks.
    data = bytes.fromhex("8fcd00049acb0442") + bytes(12)
    assert parse_feedback_packet_untrusted(packet(data)) == Feedback(0, 0, 0, [], [])


# -- building ------------------------------------------------------------------------------------


def test_build_exact_bytes_run_length() -> None:
    # 20 packets, 1 ms apart: one run-length chunk of 20 small deltas (3.1.3), 20 delta bytes,
    # 2 bytes of RTCP padding (P bit, count 2) to reach a 32-bit boundary.
    packets = [(100 + i, 64_000 * 10 + 1000 * i) for i in range(20)]
    [data] = build_feedback(0x11, 0x22, 100, 7, packets)
    assert data.hex() == (
        "afcd000a" "00000011" "00000022" "00640014" "00000a07" "2014"
        "00" + "04" * 19 + "0002"
    )  # fmt: skip
    # The compound parser of rtcp.py reads it the same way (an independent decoder).
    twcc = rtcp_reader.parse_twcc_untrusted(packet(data))
    assert twcc.packets == [(100, 1, 0)] + [(100 + i, 1, 1000) for i in range(1, 20)]


def test_build_exact_bytes_vectors() -> None:
    # A loss among small deltas: one 1-bit status vector (3.1.4, S=0) 1 1 0 1, then 3 bytes
    # of RTCP padding.
    packets = [(0, 250), (1, 500), (3, 750)]
    [data] = build_feedback(1, 2, 0, 0, packets)
    assert data[12:].hex() == "00000004" "00000000" "b400" "010101" "000003"  # fmt: skip
    assert data[:4].hex() == "afcd0006"
    # A negative delta needs symbol 2: a 2-bit status vector (S=1) 1 2 0 1.
    packets = [(0, 1000), (1, 750), (3, 1000)]
    [data] = build_feedback(1, 2, 0, 0, packets)
    assert data[12:].hex() == "00000004" "00000000" "d840" "04" "ffff" "01" "0002"  # fmt: skip
    # Without losses and 32-bit aligned: a run-length chunk of 6 small deltas, no P bit.
    [data] = build_feedback(1, 2, 0, 0, [(i, 250 * i) for i in range(6)])
    assert data.hex() == (
        "8fcd0006" "00000001" "00000002" "00000006" "00000000" "2006" "000101010101"
    )  # fmt: skip


def test_build_long_loss_run_and_splits() -> None:
    # 5000 lost between two packets: run-length chunks for the losses.
    packets = [(0, 0), (5001, 1000)]
    [data] = build_feedback(1, 2, 0, 3, packets)
    fb = parse_feedback_packet_untrusted(packet(data))
    assert len(fb.seqs) == 5002 and fb.arrivals_us[0] == 0 and fb.arrivals_us[-1] == 1000
    assert fb.arrivals_us[1:-1] == [None] * 5000
    # Chunks: a 1-bit vector (1 then 13 lost), a run of 4987 lost, a run of 1; two deltas.
    assert data[20:26].hex() == "a000137b2001" and len(data) == 12 + 8 + 6 + 2
    # A delta beyond 16 signed bits (about 8.19 s) starts a new feedback packet.
    packets = [(10, 0), (11, 8_191_750), (12, 16_383_750)]
    out = build_feedback(1, 2, 10, 255, packets)
    assert len(out) == 2
    a, b = (parse_feedback_packet_untrusted(packet(p)) for p in out)
    assert (a.base_seq, a.fb_count, a.arrivals_us) == (10, 255, [0, 8_191_750])
    assert (b.base_seq, b.fb_count, b.reference_time, b.arrivals_us) == (12, 0, 255, [16_383_750])
    # More than 200 received packets: several packets, contiguous, fb_count increasing.
    packets = [(65000 + i, 1000 * i) for i in range(450)]
    out = build_feedback(1, 2, 65000, 0, packets)
    fbs = [parse_feedback_packet_untrusted(packet(p)) for p in out]
    assert [(f.base_seq, f.fb_count, len(f.seqs)) for f in fbs] == [
        (65000, 0, 200), ((65000 + 200) & 0xFFFF, 1, 200), ((65000 + 400) & 0xFFFF, 2, 50)
    ]  # fmt: skip
    assert [a for f in fbs for a in f.arrivals_us] == [1000 * i for i in range(450)]
    assert max(len(p) for p in out) < 1250


def test_build_parse_round_trip_random() -> None:
    rng = random.Random(7)
    for _ in range(300):
        base = rng.randrange(65536)
        seq = base + rng.randrange(3)
        arrival = rng.randrange(0, 1 << 20) * 250
        packets = []
        for _ in range(rng.randrange(1, 120)):
            packets.append((seq, arrival))
            seq += 1 if rng.random() < 0.8 else rng.randrange(2, 40)
            step = rng.choice([0, 1, 4, 40, 255, 256, 300, 5000, -1, -40, 40000])
            arrival = max(0, arrival + step * 250)
        fb_count = rng.randrange(256)
        out = build_feedback(0xA, 0xB, base, fb_count, packets)
        got = {}
        for i, data in enumerate(out):
            fb = parse_feedback_packet_untrusted(packet(data))
            assert fb.fb_count == (fb_count + i) & 0xFF
            old = rtcp_reader.parse_twcc_untrusted(packet(data))  # the independent decoder agrees
            assert [s for s, _, _ in old.packets] == fb.seqs
            for s, a in zip(fb.seqs, fb.arrivals_us, strict=True):
                if a is not None:
                    got[s] = a
        assert got == {s & 0xFFFF: a for s, a in packets}


# -- malformed input -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fci",
    [
        b"",
        bytes.fromhex("0001000200000000"),  # two statuses, no chunk
        bytes.fromhex("00010002000000002002"),  # two small deltas announced, none present
        bytes.fromhex("000100020000000040020001"),  # two large deltas, one and a half present
        bytes.fromhex("0001000200000000600200"),  # run-length chunk with reserved symbol 3
        bytes.fromhex("0001000200000000f00000"),  # 2-bit vector with reserved symbol 3
        bytes.fromhex("0001ffff000000001fff"),  # 65535 statuses, one chunk can hold 8191
        bytes.fromhex("000100030000000020"),  # chunk cut in the middle
    ],
)
def test_malformed_fci(fci: bytes) -> None:
    with pytest.raises(MalformedInput):
        parse_feedback_untrusted(fci)


def test_malformed_packets() -> None:
    good = build_feedback(1, 2, 0, 0, [(0, 0), (1, 250)])[0]
    nack = rtcp.build_nack(1, 2, [5])
    with pytest.raises(MalformedInput):
        parse_feedback_packet_untrusted(packet(nack))  # RTPFB, but FMT 1
    with pytest.raises(MalformedInput):
        parse_feedback_packet_untrusted(packet(rtcp.build_pli(1, 2)))  # PSFB
    truncated = rtcp.RtcpPacket(205, 15, 1, 2, good[:-4])  # length field says more
    with pytest.raises(MalformedInput):
        parse_feedback_packet_untrusted(truncated)
    with pytest.raises(MalformedInput):
        parse_feedback_packet_untrusted(rtcp.RtcpPacket(205, 15, 1, 2, b"\x8f"))


def test_fuzz_only_malformed_input_escapes() -> None:
    rng = random.Random(1234)
    seeds = [d[12:] for d, *_ in RECORDED] + [
        d[12:] for d in build_feedback(1, 2, 0, 0, [(0, 0), (3, 99_000), (4, 1000), (40, 2000)])
    ]
    parsed = 0
    for i in range(6000):
        if i % 3 == 0:
            data = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40)))
        else:
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randrange(1, 4)):
                op = rng.randrange(3)
                if op == 0 and data:
                    data[rng.randrange(len(data))] = rng.randrange(256)
                elif op == 1 and data:
                    del data[rng.randrange(len(data)) :]
                else:
                    data += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 6)))
            data = bytes(data)
        # The same bytes as a whole RTCP packet: its length field right when they are 32-bit
        # aligned, else whatever the fuzz gives.
        words = (12 + len(data)) // 4 - 1 if len(data) % 4 == 0 else rng.randrange(65536)
        full = bytes((0x8F, 205)) + words.to_bytes(2, "big") + bytes(8) + data
        try:
            parse_feedback_packet_untrusted(rtcp.RtcpPacket(205, 15, 0, 0, full))
        except MalformedInput:
            pass
        try:
            fb = parse_feedback_untrusted(data)
        except MalformedInput:
            continue
        parsed += 1
        assert len(fb.seqs) == len(fb.arrivals_us) <= 65535
    assert parsed > 500  # the mutations exercise the decoder, not only its first check


# -- receive side --------------------------------------------------------------------------------


def feedbacks(receiver: TwccReceiver, now: float = 0.0) -> list[Feedback]:
    return [parse_feedback_packet_untrusted(packet(p)) for p in receiver.build(now, 1, 2)]


def received(fbs: list[Feedback]) -> list[tuple[int, int | None]]:
    return [pair for fb in fbs for pair in zip(fb.seqs, fb.arrivals_us, strict=True)]


def test_receiver_reorder_gap_and_duplicate() -> None:
    r = TwccReceiver()
    assert r.build(0.0, 1, 2) == []
    for seq, t in [(10, 100.0), (11, 100.001), (13, 100.002), (12, 100.003), (15, 100.004)]:
        r.on_packet(seq, t)
    r.on_packet(11, 100.005)  # duplicate: the first arrival counts
    fbs = feedbacks(r)
    assert [(f.base_seq, f.fb_count) for f in fbs] == [(10, 0)]
    assert received(fbs) == [(10, 0), (11, 1000), (12, 3000), (13, 2000), (14, None),
                             (15, 4000)]  # fmt: skip
    assert (r.received, r.duplicates, r.dropped) == (5, 1, 0)
    assert r.build(0.1, 1, 2) == []  # nothing new
    # 14 arrives late: the next feedback starts there (and repeats 15), as libwebrtc does.
    r.on_packet(14, 100.006)
    r.on_packet(16, 100.007)
    fbs = feedbacks(r)
    assert [(f.base_seq, f.fb_count) for f in fbs] == [(14, 1)]
    assert received(fbs) == [(14, 6000), (15, 4000), (16, 7000)]


def test_receiver_wraps_at_65535() -> None:
    r = TwccReceiver()
    for i, seq in enumerate([65533, 65534, 65535, 0, 2]):
        r.on_packet(seq, 5.0 + i * 0.01)
    r.on_packet(1, 5.05)  # reordered across the wrap
    fbs = feedbacks(r)
    assert fbs[0].base_seq == 65533
    assert received(fbs) == [(65533, 0), (65534, 10000), (65535, 20000), (0, 30000),
                             (1, 50000), (2, 40000)]  # fmt: skip
    r.on_packet(65535, 5.06)  # a duplicate from before the wrap is still recognized
    assert r.duplicates == 1 and r.build(5.1, 1, 2) == []


def test_receiver_bounded_memory() -> None:
    r = TwccReceiver(capacity=8192)
    for i in range(20000):
        r.on_packet(i & 0xFFFF, i * 0.0001)
    fbs = feedbacks(r)
    got = received(fbs)
    assert len(got) == 8192
    assert got[0] == (11808, 1180750) and got[-1] == (19999, 1999750)  # 250 µs units
    assert r.dropped == 20000 - 8192
    r.on_packet(100, 3.0)  # far older than the window: dropped, not reported
    assert r.dropped == 20000 - 8192 + 1 and r.build(3.0, 1, 2) == []
    assert len(r._tags) == 8192 and len(r._arrivals) == 8192


def test_receiver_feedback_count_and_reference_time() -> None:
    r = TwccReceiver()
    r.on_packet(0, 1000.0)
    r.on_packet(1, 1000.2)
    a = feedbacks(r)
    r.on_packet(2, 1000.3)
    b = feedbacks(r)
    assert [(f.fb_count, f.reference_time) for f in a + b] == [(0, 0), (1, 4)]  # 300 ms // 64
    assert received(b) == [(2, 300_000)]


# -- send side -----------------------------------------------------------------------------------


def test_sender_matches_and_never_double_reports() -> None:
    s = TwccSender()
    seqs = [s.next_seq(1000 + i, 10.0 + i * 0.001) for i in range(5)]
    assert seqs == [0, 1, 2, 3, 4]
    fb = Feedback(0, 0, 0, [0, 1, 2, 3], [100, None, 400, 600])
    res = s.on_feedback(fb)
    assert res.send_us == [10_000_000, 10_001_000, 10_002_000, 10_003_000]
    assert res.arrival_us == [100, None, 400, 600]
    assert res.sizes == [1000, 1001, 1002, 1003]
    assert res.source == s.source
    # The receiver repeats 1..4 after a reorder: only 1 (now received) and 4 are new.
    res = s.on_feedback(Feedback(1, 1, 0, [1, 2, 3, 4], [300, 400, 600, 700]))
    assert (res.send_us, res.arrival_us, res.sizes) == (
        [10_001_000, 10_004_000], [300, 700], [1001, 1004]
    )  # fmt: skip
    assert s.on_feedback(Feedback(1, 2, 0, [1, 2], [None, 400])).sizes == []  # all reported
    # Never sent (5, 6) or unknown: skipped.
    assert s.on_feedback(Feedback(5, 3, 0, [5, 6], [1, 2])).sizes == []


def test_sender_wrap_ring_and_reference_unwrap() -> None:
    s = TwccSender(capacity=64)
    for i in range(70000):
        s.next_seq(100, i * 0.001)
    last = (70000 - 1) & 0xFFFF
    # The last two packets, with the reference time just past the 24-bit signed limit.
    res = s.on_feedback(Feedback((last - 1) & 0xFFFF, 0, 0x7FFFFF, [(last - 1) & 0xFFFF, last],
                                 [0x7FFFFF * 64000, 0x7FFFFF * 64000 + 250]))  # fmt: skip
    assert res.send_us == [69_998_000, 69_999_000]
    assert res.arrival_us == [0x7FFFFF * 64000, 0x7FFFFF * 64000 + 250]
    # The next feedback's reference time wrapped to -2^23: unwrapped, it follows on.
    nxt = s.next_seq(100, 70.0)
    res = s.on_feedback(Feedback(nxt, 1, -0x800000, [nxt], [-0x800000 * 64000 + 500]))
    assert res.arrival_us == [0x800000 * 64000 + 500]
    # Packets that left the 64-entry history are not reported.
    old = (70000 - 100) & 0xFFFF
    assert s.on_feedback(Feedback(old, 2, 0, [old], [0])).sizes == []


def test_receiver_to_sender_end_to_end() -> None:
    s = TwccSender()
    r = TwccReceiver()
    for i in range(300):
        seq = s.next_seq(1200 + i % 3, 7.0 + i * 0.01)
        if i % 10 != 3:  # 10 % lost
            r.on_packet(seq, 0.05 + i * 0.01 + (0.002 if i % 7 == 1 else 0.0))
    results = [s.on_feedback(fb) for fb in feedbacks(r)]
    assert len(results) == 2  # 270 received: 200 + 70
    send = [t for res in results for t in res.send_us]
    arrivals = [a for res in results for a in res.arrival_us]
    sizes = [n for res in results for n in res.sizes]
    assert send == [7_000_000 + i * 10_000 for i in range(300)]
    assert sizes == [1200 + i % 3 for i in range(300)]
    assert arrivals == [
        None if i % 10 == 3 else i * 10_000 + (2000 if i % 7 == 1 else 0) for i in range(300)
    ]
