"""Simulcast and transport-cc through the Router, as connection pairs in memory (no sockets):
layers learnt from the RID extension, one rewritten layer per consumer, switches on keyframes,
preferences (paused, maxHeight), NACK through the rewrite, transport-cc both ways and the
`layers` the publisher is told to encode (docs/PROTOCOL.md section 4, Quality)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import pytest

from arbiter.sfu import rtcp, rtp, vp8
from arbiter.sfu.client import PeerClient
from arbiter.sfu.simulcast import SimulcastConsumer, SimulcastTrack
from arbiter.sfu.transport import CONSUMER, PRODUCER
from arbiter.sfu.twcc import build_feedback, parse_feedback_packet_untrusted
from arbiter.testing.router_pair import Harness

MID_EXT, RID_EXT, RRID_EXT, TWCC_EXT = 4, 10, 11, 3
OUT, OUT_RTX = 0xAAAA0001, 0xAAAA0002
P_ADDR, S_ADDR = ("127.0.0.1", 6000), ("127.0.0.1", 6001)
HEIGHTS = (180, 360, 720)


@dataclass
class Layer:
    """One encoding of the publisher: own SSRC, sequence, timestamp and picture id."""

    rid: str
    ssrc: int
    height: int
    seq: int
    ts: int = 1000
    picid: int = 100
    twcc: int = 0

    def frame(self, key: bool, twcc: list[int]) -> list[bytes]:
        out = []
        for n in range(3):
            head = bytes((0x90 if n == 0 else 0x80, 0x80)) + struct.pack("!H", 0x8000 | self.picid)
            if n == 0 and key:  # RFC 6386 section 9.1 keyframe header with the layer's size
                body = b"\x10\x02\x00\x9d\x01\x2a" + struct.pack("<HH", self.height * 16 // 9,
                                                                  self.height)  # fmt: skip
            else:
                body = b"\x11\x02\x00" + bytes(200)
            seq_twcc = twcc[0]
            twcc[0] += 1
            out.append(rtp.build_rtp(
                96, self.seq, self.ts, self.ssrc, head + body, marker=n == 2,
                extensions={MID_EXT: b"1", RID_EXT: self.rid.encode(),
                            TWCC_EXT: struct.pack("!H", seq_twcc)},
            ))  # fmt: skip
            self.seq = (self.seq + 1) & 0xFFFF
        self.ts += 3000
        self.picid = (self.picid + 1) & 0x7FFF
        return out


class Call:
    def __init__(self) -> None:
        h = self.h = Harness()
        self.pub_t = h.transport(PRODUCER, "P")
        self.track: SimulcastTrack = h.router.create_simulcast(
            self.pub_t, "1", ("q", "h", "f"), mid_ext=MID_EXT, rid_ext=RID_EXT,
            rrid_ext=RRID_EXT, codec="VP8", rtx_pt=97, twcc_ext=TWCC_EXT,
        )  # fmt: skip
        h.router.enable_transport_cc(self.pub_t)
        self.sub_t = h.transport(CONSUMER, "S")
        h.router.enable_transport_cc(self.sub_t)
        self.consumer: SimulcastConsumer = h.router.create_simulcast_consumer(
            self.track, self.sub_t, OUT, OUT_RTX
        )
        self.pub: PeerClient = h.connect(self.pub_t, P_ADDR)
        self.sub: PeerClient = h.connect(self.sub_t, S_ADDR)
        self.layers = [Layer(rid, 0x100 + i, HEIGHTS[i], seq=1000 * (i + 1))
                       for i, rid in enumerate("qhf")]  # fmt: skip
        self.twcc = [500]  # the publisher's transport-wide sequence

    def send_frames(self, key: bool = False, which: tuple[int, ...] = (0, 1, 2)) -> None:
        for i in which:
            for packet in self.layers[i].frame(key, self.twcc):
                self.h.send_rtp(self.pub, P_ADDR, packet)

    def received(self) -> list[bytes]:
        srtp = self.sub.srtp
        assert srtp is not None
        out = []
        for datagram in self.h.net.take(S_ADDR):
            if rtp.is_rtcp(datagram):
                continue
            out.append(srtp.unprotect_rtp_untrusted(datagram))
        return out

    def publisher_rtcp(self) -> list[rtcp.RtcpPacket]:
        srtp = self.pub.srtp
        assert srtp is not None
        out = []
        for datagram in self.h.net.take(P_ADDR):
            out += rtcp.iter_packets_untrusted(srtp.unprotect_rtcp_untrusted(datagram))
        return out

    def tick(self, seconds: float = 0.05) -> None:
        self.h.now += seconds
        self.h.router.tick(self.h.now)


def picture_id(packet: bytes) -> int:
    return vp8.vp8_descriptor_untrusted(packet, rtp.payload_offset_untrusted(packet)).picture_id


@pytest.fixture
def call() -> Call:
    return Call()


def test_layers_are_learnt_and_one_is_forwarded_rewritten(call: Call) -> None:
    call.send_frames(key=True)
    assert call.h.endpoint.counters["simulcast_layers"] == 3
    assert [p.ssrc for p in call.track.layers] == [0x100, 0x101, 0x102]  # type: ignore[union-attr]
    assert call.track.heights == [180, 360, 720]
    got = call.received()
    # Layer q only (the consumer's first target), on our SSRC, from its keyframe on.
    assert [rtp.ssrc_of(p) for p in got] == [OUT] * 3
    assert [rtp.seq_of(p) for p in got] == [1000, 1001, 1002]
    # Our own transport-wide sequence numbers, not the publisher's (500, 501, ...).
    assert [rtp.get_extension_untrusted(p, TWCC_EXT) for p in got] == [
        b"\x00\x00", b"\x00\x01", b"\x00\x02",
    ]  # fmt: skip
    # Everything else is the publisher's packet (the consumer's SDP has no RID extension: a
    # receiver ignores ids it did not negotiate, RFC 8285 section 5).
    assert call.consumer.rewriter.current == 0


def test_switch_up_on_the_target_keyframe_without_a_gap(call: Call) -> None:
    call.h.router.quality.next_allocation = float("inf")  # the target is set by hand here
    call.send_frames(key=True)
    first = call.received()
    call.consumer.rewriter.target = 2  # what the Downlink decides from preferences/estimate
    call.publisher_rtcp()
    call.tick()
    plis = [p for p in call.publisher_rtcp() if p.packet_type == rtcp.PT_PSFB]
    assert [p.media_ssrc for p in plis] == [0x102]  # a PLI to the target layer only
    call.send_frames()  # delta frames: still layer q
    mid = call.received()
    assert len(mid) == 3 and call.consumer.rewriter.current == 0
    call.send_frames(key=True, which=(2, 0))  # f's keyframe: the switch happens here
    after = call.received()
    assert call.consumer.rewriter.current == 2
    seqs = [rtp.seq_of(p) for p in first + mid + after]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # continuous, no gap
    pics = [picture_id(p) for p in first + mid + after]
    assert pics == [100] * 3 + [101] * 3 + [102] * 3  # continuous across the switch
    assert len(after) == 3  # only f's frame: q's frame after the switch is dropped


def test_paused_consumer_gets_no_video_and_the_publisher_stops_encoding(call: Call) -> None:
    call.send_frames(key=True)
    call.received()
    call.h.router.set_preferences(call.sub_t, 360, True, call.h.now)
    call.send_frames(key=True)
    assert call.received() == []
    for _ in range(80):  # 4 s: past the 3 s hold, the publisher is told to stop all layers
        call.tick()
    assert call.h.layers[-1] == ()
    call.h.router.set_preferences(call.sub_t, 360, False, call.h.now)
    call.tick()
    # Its estimate starts at 300 kbit/s: the lowest layer first, more once probed.
    assert call.h.layers[-1] == ("q",)
    call.send_frames(key=True)
    got = call.received()
    assert got and all(rtp.ssrc_of(p) == OUT for p in got)


def test_max_height_caps_the_layer_and_a_probe_proves_the_step_up(call: Call) -> None:
    call.send_frames(key=True)
    call.h.router.set_preferences(call.sub_t, 180, False, call.h.now)
    for _ in range(10):  # the publisher sends all along: its layers' rates are measured
        call.send_frames()
        call.tick()
    assert call.consumer.rewriter.target == 0
    call.h.router.set_preferences(call.sub_t, 300, False, call.h.now)
    call.send_frames()
    call.tick()  # 360 <= 300 * 1.25: the 360 p layer fits a 300 px tile...
    assert call.consumer.rewriter.target == 0  # ...but not the 300 kbit/s start estimate
    # A healthy downlink: the subscriber acknowledges everything it gets (padding included)
    # 10 ms after it was sent. The SFU probes, the probe is delivered, and it steps up.
    fb_count = 0
    for _ in range(80):  # 4 s
        call.send_frames()
        call.tick()
        srtp = call.sub.srtp
        assert srtp is not None
        seqs = []
        for datagram in call.h.net.take(S_ADDR):
            if not rtp.is_rtcp(datagram):
                packet = srtp.unprotect_rtp_untrusted(datagram)
                value = rtp.get_extension_untrusted(packet, TWCC_EXT)
                if value is not None:
                    seqs.append(struct.unpack("!H", value)[0])
        if seqs:
            arrival = int(call.h.now * 1_000_000) + 10_000
            acks = [(s, arrival + i * 50) for i, s in enumerate(seqs)]
            for packet in build_feedback(call.sub_t.rtcp_ssrc, OUT, seqs[0], fb_count, acks):
                call.h.send_rtcp(call.sub, S_ADDR, packet)
            fb_count += 1
    assert call.h.endpoint.counters["padding_sent"] > 0
    assert call.consumer.rewriter.target == 1  # h, never f: 720 > 300 * 1.25


def test_nack_is_served_through_the_rewrite(call: Call) -> None:
    call.h.router.quality.next_allocation = float("inf")  # layer q throughout
    call.send_frames(key=True)
    call.tick()
    call.send_frames()
    datagrams = call.h.net.take(S_ADDR)
    srtp = call.sub.srtp
    assert srtp is not None
    # The subscriber never got the second packet: it decrypts the others and NACKs that one.
    got = [srtp.unprotect_rtp_untrusted(d) for i, d in enumerate(datagrams) if i != 1]
    lost_seq = rtp.seq_of(got[0]) + 1
    nack = rtcp.build_nack(call.sub_t.rtcp_ssrc, OUT, [lost_seq])
    call.tick(0.2)  # a forwarded-bytes sample opens the NACK budget's window
    call.h.send_rtcp(call.sub, S_ADDR, nack)
    (again,) = call.received()
    assert rtp.seq_of(again) == lost_seq and rtp.ssrc_of(again) == OUT
    neighbour = got[1]  # the next packet of the same frame: same picture id and timestamp
    assert picture_id(again) == picture_id(neighbour) and rtp.seq_of(neighbour) == lost_seq + 1
    assert again[4:8] == neighbour[4:8]
    assert call.h.endpoint.counters["nack_retransmitted"] == 1
    # A fresh transport-wide sequence number of ours, after everything sent before it.
    (twcc,) = struct.unpack("!H", rtp.get_extension_untrusted(again, TWCC_EXT) or b"")
    assert twcc == len(datagrams)  # the six first copies took 0-5


def test_transport_cc_feedback_reaches_the_publisher(call: Call) -> None:
    call.send_frames(key=True)
    call.publisher_rtcp()
    call.tick(0.1)
    feedback = [p for p in call.publisher_rtcp()
                if p.packet_type == rtcp.PT_RTPFB and p.fmt == rtcp.FMT_TWCC]  # fmt: skip
    assert len(feedback) == 1
    parsed = parse_feedback_packet_untrusted(feedback[0])
    assert parsed.seqs == list(range(500, 509))
    assert all(a is not None for a in parsed.arrivals_us)
    # REMB is only for publishers without transport-cc.
    call.h.router.send_reports(call.h.now)
    assert not [p for p in call.publisher_rtcp() if p.packet_type == rtcp.PT_PSFB]


def test_a_lossy_downlink_steps_down_at_once(call: Call) -> None:
    call.send_frames(key=True)
    call.consumer.rewriter.target = 2  # as if the estimate had allowed it
    call.send_frames(key=True)
    assert call.consumer.rewriter.current == 2
    call.received()
    estimator = call.h.router.quality.downlink("S", call.h.now).estimator
    before = estimator.estimate_bps
    # The subscriber reports half of what we sent lost, several times.
    for round_ in range(6):
        for _ in range(3):
            call.send_frames()
        sent = call.received()
        seqs = [struct.unpack("!H", rtp.get_extension_untrusted(p, TWCC_EXT) or b"\0\0")[0]
                for p in sent]  # fmt: skip
        arrivals = [(s, 1_000_000 + round_ * 100_000 + i * 1000)
                    for i, s in enumerate(seqs) if i % 2 == 0]  # fmt: skip
        for packet in build_feedback(call.sub_t.rtcp_ssrc, OUT, seqs[0], round_, arrivals):
            call.h.send_rtcp(call.sub, S_ADDR, packet)
        call.tick(0.1)
    assert call.h.endpoint.counters["twcc_feedback_in"] == 6
    assert estimator.estimate_bps < before
    for _ in range(12):
        call.tick()
    assert call.consumer.rewriter.target < 2


def test_closing_the_publisher_closes_the_track_and_its_consumers(call: Call) -> None:
    call.send_frames(key=True)
    assert len(call.received()) == 3
    call.pub_t.close()
    assert call.track.closed and call.consumer.closed
    assert call.h.router.consumers_of(call.sub_t) == {}
    call.send_frames(key=True)  # nothing routes any more, nothing raises
    assert call.received() == []
