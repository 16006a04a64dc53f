"""SCTP (arbiter/sfu/sctp*.py) and DCEP (arbiter/sfu/dcep.py), sans-IO, for issue 11.

Three kinds of far side: recordings of Chromium, Firefox and aiortc (tests/data/sctp_*.json,
made by scripts/record_sctp.py against a real server) replayed at their recorded times; aiortc's
SCTP stack live in memory (arbiter/testing/sctp_pair.py), with loss; and hand-built packets
for what browsers rarely do (SHUTDOWN, HEARTBEAT, forged cookies, hostile TSNs).
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections import Counter
from pathlib import Path
from random import Random
from typing import Any

import google_crc32c
import pytest
from aiortc import RTCDataChannel, RTCDataChannelParameters

from arbiter.errors import MalformedInput
from arbiter.sfu import sctp_chunks as c
from arbiter.sfu.dcep import (
    ChannelClosed,
    ChannelMessage,
    ChannelOpened,
    DataChannels,
    Open,
    build_open,
    parse_open_untrusted,
)
from arbiter.sfu.sctp import MTU, Closed, Established, SctpAssociation, StreamsReset
from arbiter.sfu.sctp_rx import Message
from arbiter.testing.sctp_pair import SctpPair

DATA = Path(__file__).parent / "data"
PEER_TAG = 0x1234ABCD
PEER_TSN = 1000


# -- codecs ------------------------------------------------------------------------------------


def test_crc32c_matches_the_standard_and_a_reference() -> None:
    assert c.crc32c(b"123456789") == 0xE3069283  # RFC 3720 B.4 check value
    rng = Random(3)
    for size in (0, 1, 7, 64, 1150):
        data = rng.randbytes(size)
        assert c.crc32c(data) == google_crc32c.value(data)


def test_chunk_codecs_round_trip() -> None:
    init = c.Init(7, 65536, 10, 20, 99, forward_tsn=True, reconfig=True, cookie=b"k" * 9)
    packet = c.build_packet(5000, 5000, 0, [c.build_init(c.INIT_ACK, init)])
    (chunk,) = c.parse_packet_untrusted(packet).chunks
    assert c.parse_init_untrusted(chunk.body) == init
    data = c.Data(c.FLAG_BEGIN | c.FLAG_END, 5, 3, 2, 51, b"hello")
    sack = c.Sack(4, 1000, [(2, 3), (5, 5)], [1, 2])
    packet = c.build_packet(1, 2, 3, [c.build_data(data), c.build_sack(sack),
                                      c.build_forward_tsn(9, {3: 4})])  # fmt: skip
    parsed = c.parse_packet_untrusted(packet)
    assert (parsed.src_port, parsed.dst_port, parsed.tag) == (1, 2, 3)
    d, s, f = parsed.chunks
    assert c.parse_data_untrusted(d.flags, d.body) == data
    assert c.parse_sack_untrusted(s.body) == sack
    assert c.parse_forward_tsn_untrusted(f.body) == (9, [(3, 4)])
    request = c.ResetRequest(1, 2, 3, (4, 5))
    body = c.build_reset_request(request) + c.build_reconfig_response(8, c.RESULT_PERFORMED)
    assert c.parse_reconfig_untrusted(body) == [request, c.ReconfigResponse(8, 1)]


@pytest.mark.parametrize("packet", [
    b"", b"\x13\x88" * 8,  # too short / bad checksum
    c.build_packet(1, 2, 3, [])[:-1] + b"\x00\x00\x00\x01\x00",  # a chunk shorter than 4
])  # fmt: skip
def test_bad_packets_are_malformed(packet: bytes) -> None:
    with pytest.raises(MalformedInput):
        c.parse_packet_untrusted(packet)


def test_dcep_open_codec() -> None:
    request = Open(0x81, 256, 3, "label é", "proto")
    assert parse_open_untrusted(build_open(request)) == request
    for bad in (b"\x03", build_open(request)[:-1], b"\x03\x05" + build_open(request)[2:],
                build_open(Open(0, 0, 0, "x", ""))[:-1] + b"\xff"):  # fmt: skip
        with pytest.raises(MalformedInput):
            parse_open_untrusted(bad)


# -- recordings of real stacks -------------------------------------------------------------------


def replay(name: str) -> tuple[SctpAssociation, list[Any], list[bytes], list[bytes]]:
    """Feed a recording back at its recorded times: (association, events, ours, recorded)."""
    rec = json.loads((DATA / f"sctp_{name}.json").read_text())
    counters: Counter[str] = Counter()
    association = SctpAssociation(secret=bytes.fromhex(rec["secret"]), rng=Random(rec["seed"]),
                                  remote_max_message_size=rec["remote_max_message_size"],
                                  counters=counters)  # fmt: skip
    events: list[Any] = []
    ours: list[bytes] = []
    recorded = [bytes.fromhex(h) for _, kind, h in rec["records"] if kind == "out"]
    for offset, kind, value in rec["records"]:
        t = rec["start"] + offset  # the state cookie carries the recording's clock
        if kind == "in":
            ours += association.receive_untrusted(bytes.fromhex(value), t)
        elif kind == "timer":
            ours += association.handle_timeout(t)
        elif kind == "flush":
            ours += association.flush(t)
        elif kind == "send":
            args = json.loads(bytes.fromhex(value))
            data = bytes.fromhex(args.pop("data"))
            assert association.send(args.pop("stream"), args.pop("ppid"), data, t, **args)
        events += association.take_events()
    assert counters == Counter(), counters  # nothing the real stack sent was refused
    return association, events, ours, recorded


@pytest.mark.parametrize("name", ["chrome", "firefox"])
def test_browser_recording_replays(name: str) -> None:
    """The browser's INIT, COOKIE-ECHO, chat and features DATA, SACKs (and Firefox's stream
    reset), replayed: same association, same messages, and our packets byte for byte the
    recorded ones (re-record with scripts/record_sctp.py after a deliberate change)."""
    association, events, ours, recorded = replay(name)
    assert isinstance(events[0], Established)
    messages = [e for e in events if isinstance(e, Message)]
    assert [(m.stream, m.ppid) for m in messages] == [(100, 51), (110, 51)]
    assert json.loads(messages[0].data)["content"] == "hello from the first page"
    assert json.loads(messages[1].data) == {"features": {"audio": True, "video": False}}
    assert isinstance(events[-1], Closed) and events[-1].reason == "abort"  # the page left
    assert ours == recorded
    for packet in ours:  # what we sent is well-formed SCTP with the peer's tag
        assert c.parse_packet_untrusted(packet).dst_port == 5000


def test_aiortc_recording_replays() -> None:
    association, events, ours, recorded = replay("aiortc")
    messages = [e for e in events if isinstance(e, Message)]
    assert [(m.stream, m.ppid, len(m.data)) for m in messages] == [
        (0, 50, 18), (0, 51, 5), (0, 53, 5000), (100, 51, 17)]  # fmt: skip
    assert StreamsReset((0,)) in events
    assert ours == recorded


# -- aiortc live, in memory -------------------------------------------------------------------


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 25))


def channel_messages(pair: SctpPair, stream: int | None = None) -> list[bytes]:
    return [e.data for e in pair.events
            if isinstance(e, ChannelMessage) and stream in (None, e.channel.stream)]  # fmt: skip


async def _in_band_both_ways() -> None:
    pair = SctpPair()
    await pair.start()
    got: list[Any] = []
    channel = RTCDataChannel(pair.client, RTCDataChannelParameters(label="x", protocol="p"))
    channel.on("message", got.append)
    await pair.wait_for(lambda: any(isinstance(e, ChannelOpened) for e in pair.events))
    ours = pair.server.channels[channel.id]
    assert (ours.label, ours.protocol, ours.negotiated, ours.ordered) == ("x", "p", False, True)
    await pair.wait_for(lambda: channel.readyState == "open")  # our DATA_CHANNEL_ACK arrived
    big = bytes(range(256)) * 1000  # 256,000 bytes: 228 DATA chunks
    channel.send(big)
    channel.send("")
    channel.send(b"")
    await pair.wait_for(lambda: len(channel_messages(pair)) == 3)
    assert channel_messages(pair) == [big, b"", b""]
    for payload in (b"to aiortc", b"y" * 60000, b""):
        assert pair.server.send(ours, payload, True, pair.now())
    pair.flush()
    await pair.wait_for(lambda: len(got) == 3)
    assert got == [b"to aiortc", b"y" * 60000, b""]
    channel.close()  # RFC 8831 6.7: a stream reset; we reset ours, so aiortc's closes
    await pair.wait_for(lambda: any(isinstance(e, ChannelClosed) for e in pair.events))
    await pair.wait_for(lambda: channel.readyState == "closed")
    await pair.close()
    assert pair.errors == []


def test_in_band_channel_with_aiortc() -> None:
    run(_in_band_both_ways())


async def _lossy(unordered: bool) -> None:
    rng = Random(5)
    pair = SctpPair(delay=0.002, loss=lambda direction, data: rng.random() < 0.2)
    pair.association._rto = 0.2  # noqa: SLF001 - keep the test short: aiortc's RTO min is 1 s
    await pair.start(timeout=15)
    got: list[Any] = []
    channel = RTCDataChannel(pair.client, RTCDataChannelParameters(label="l", ordered=not unordered))
    channel.on("message", got.append)
    await pair.wait_for(lambda: channel.readyState == "open", 15)
    ours = pair.server.channels[channel.id]
    sent = [f"m{i}".encode() * (1 + i % 700) for i in range(60)]  # some fragmented
    for payload in sent:
        channel.send(payload)
        assert pair.server.send(ours, payload, True, pair.now())
    pair.flush()
    await pair.wait_for(lambda: len(channel_messages(pair)) == 60 and len(got) == 60, 20)
    if unordered:
        assert sorted(channel_messages(pair)) == sorted(sent) and sorted(got) == sorted(sent)
    else:
        assert channel_messages(pair) == sent and got == sent  # in order despite the loss
    assert pair.association.counters["sctp_malformed_chunk"] == 0
    await pair.close()


@pytest.mark.parametrize("unordered", [False, True], ids=["ordered", "unordered"])
def test_reliable_delivery_with_20_percent_loss(unordered: bool) -> None:
    run(_lossy(unordered))


async def _partial_reliability() -> None:
    """maxRetransmits=0 both ways with every DATA chunk of the 2nd message lost: aiortc's
    FORWARD-TSN makes us skip it, ours makes aiortc skip it; the rest arrives."""

    def loss(direction: str, data: bytes) -> bool:
        packet = c.parse_packet_untrusted(data)
        return any(ch.type == c.DATA and b"lost" in ch.body for ch in packet.chunks)

    pair = SctpPair(loss=loss)
    pair.association._rto = 0.2  # noqa: SLF001
    await pair.start()
    got: list[Any] = []
    channel = RTCDataChannel(pair.client, RTCDataChannelParameters(label="pr", maxRetransmits=0))
    channel.on("message", got.append)
    await pair.wait_for(lambda: channel.readyState == "open")
    ours = pair.server.channels[channel.id]
    assert ours.max_retransmits == 0
    for payload in (b"first", b"lost", b"third"):  # one packet each
        channel.send(payload)
        pair.server.send(ours, payload, True, pair.now())
        pair.flush()
        await asyncio.sleep(0.01)
    await pair.wait_for(lambda: len(channel_messages(pair)) == 2 and len(got) == 2, 10)
    assert channel_messages(pair) == [b"first", b"third"] and got == [b"first", b"third"]
    await pair.close()


def test_partial_reliability_forward_tsn_both_ways() -> None:
    run(_partial_reliability())


async def _negotiated_and_limits() -> None:
    pair = SctpPair()
    await pair.start()
    chat = RTCDataChannel(pair.client, RTCDataChannelParameters(label="chat", negotiated=True,
                                                                id=100))  # fmt: skip
    got: list[Any] = []
    chat.on("message", got.append)
    await pair.wait_for(lambda: chat.readyState == "open")
    ours = pair.server.negotiated(100)
    assert ours is not None and pair.server.negotiated(100) is ours
    assert pair.server.send(ours, b"hi", False, pair.now())
    # Past aiortc's a=max-message-size (65536, its SDP's default): refused, counted.
    assert not pair.server.send(ours, b"z" * 65537, False, pair.now())
    pair.flush()
    await pair.wait_for(lambda: got == ["hi"])
    chat.send("after")
    await pair.wait_for(lambda: channel_messages(pair) == [b"after"])
    assert pair.association.counters["sctp_send_dropped"] == 1
    await pair.close()


def test_negotiated_channel_and_message_size_limits() -> None:
    run(_negotiated_and_limits(), )


# -- hand-built peers --------------------------------------------------------------------------


def packet(association: SctpAssociation, *chunks: bytes, tag: int | None = None) -> bytes:
    return c.build_packet(5000, 5000, association.local_tag if tag is None else tag, list(chunks))


def established(**kwargs: Any) -> tuple[SctpAssociation, bytes]:
    """An association a hand-made peer (tag PEER_TAG, first TSN PEER_TSN) set up; returns it
    and the peer's COOKIE-ECHO packet."""
    association = SctpAssociation(**kwargs)
    init = c.Init(PEER_TAG, 1 << 20, 16, 16, PEER_TSN, forward_tsn=True, reconfig=True)
    (ack,) = association.receive_untrusted(c.build_packet(5000, 5000, 0,
                                                          [c.build_init(c.INIT, init)]), 1.0)  # fmt: skip
    assert association.state == "listen"  # no state until the cookie comes back
    parsed = c.parse_packet_untrusted(ack)
    assert parsed.tag == PEER_TAG
    init_ack = c.parse_init_untrusted(parsed.chunks[0].body)
    assert init_ack.forward_tsn and init_ack.reconfig and init_ack.cookie
    echo = c.build_packet(5000, 5000, init_ack.initiate_tag,
                          [c.chunk(c.COOKIE_ECHO, 0, init_ack.cookie)])  # fmt: skip
    (cookie_ack,) = association.receive_untrusted(echo, 1.5)
    assert c.parse_packet_untrusted(cookie_ack).chunks[0].type == c.COOKIE_ACK
    assert association.take_events() == [Established()]
    return association, echo


def data(tsn: int, payload: bytes, *, stream: int = 1, ssn: int = 0, flags: int = 3) -> bytes:
    return c.build_data(c.Data(flags, tsn, stream, ssn, 51, payload))


def sacks(packets: list[bytes]) -> list[c.Sack]:
    return [c.parse_sack_untrusted(ch.body) for p in packets
            for ch in c.parse_packet_untrusted(p).chunks if ch.type == c.SACK]  # fmt: skip


def test_state_cookie_is_verified_statelessly() -> None:
    association, echo = established()
    cookie = c.parse_packet_untrusted(echo).chunks[0].body
    other = SctpAssociation()
    for bad_cookie, tag, now in (
        (cookie, association.local_tag, 1.5),  # another association's secret
        (cookie[:-1] + bytes([cookie[-1] ^ 1]), association.local_tag, 1.5),  # tampered
        (cookie[:5], association.local_tag, 1.5),  # truncated
    ):
        bad = c.build_packet(5000, 5000, tag, [c.chunk(c.COOKIE_ECHO, 0, bad_cookie)])
        with pytest.raises(MalformedInput):
            other.receive_untrusted(bad, now)
        assert other.state == "listen"
    fresh = SctpAssociation(secret=b"k" * 32, rng=Random(1))
    (ack,) = fresh.receive_untrusted(c.build_packet(5000, 5000, 0, [c.build_init(
        c.INIT, c.Init(PEER_TAG, 1 << 20, 16, 16, PEER_TSN))]), 0.0)  # fmt: skip
    init_ack = c.parse_init_untrusted(c.parse_packet_untrusted(ack).chunks[0].body)
    assert init_ack.cookie is not None
    echo = c.build_packet(5000, 5000, init_ack.initiate_tag,
                          [c.chunk(c.COOKIE_ECHO, 0, init_ack.cookie)])  # fmt: skip
    with pytest.raises(MalformedInput, match="stale"):
        fresh.receive_untrusted(echo, 61.0)
    with pytest.raises(MalformedInput, match="wrong tag"):
        fresh.receive_untrusted(c.build_packet(5000, 5000, 5, [c.chunk(c.COOKIE_ECHO, 0,
                                                                       init_ack.cookie)]), 1.0)  # fmt: skip
    # A retransmitted COOKIE-ECHO (our COOKIE-ACK was lost) gets another COOKIE-ACK.
    (again,) = association.receive_untrusted(echo_of(association, cookie), 2.0)
    assert c.parse_packet_untrusted(again).chunks[0].type == c.COOKIE_ACK


def echo_of(association: SctpAssociation, cookie: bytes) -> bytes:
    return packet(association, c.chunk(c.COOKIE_ECHO, 0, cookie))


def test_verification_tags_ports_and_out_of_the_blue() -> None:
    association, _ = established()
    assert association.receive_untrusted(packet(association, data(PEER_TSN, b"x"), tag=7), 2) == []
    assert association.counters["sctp_bad_tag"] == 1
    with pytest.raises(MalformedInput, match="port"):
        association.receive_untrusted(c.build_packet(5001, 5000, association.local_tag,
                                                     [c.chunk(c.COOKIE_ACK, 0, b"")]), 2)
    listening = SctpAssociation()
    assert listening.receive_untrusted(packet(listening, data(1, b"x"), tag=1), 2) == []
    assert listening.counters["sctp_out_of_the_blue"] == 1
    with pytest.raises(MalformedInput, match="INIT must be alone"):
        listening.receive_untrusted(c.build_packet(5000, 5000, 0, [
            c.build_init(c.INIT, c.Init(1, 1, 1, 1, 1)), data(1, b"x")]), 2)  # fmt: skip


def test_sack_gaps_duplicates_and_the_delayed_ack() -> None:
    association, _ = established()
    # One packet: no SACK yet (delayed 200 ms at most), then the timer sends it.
    assert association.receive_untrusted(packet(association, data(PEER_TSN, b"a")), 2.0) == []
    deadline = association.next_timeout()
    assert deadline is not None and deadline <= 2.2
    (sack,) = sacks(association.handle_timeout(deadline))
    assert (sack.cumulative_tsn, sack.gaps) == (PEER_TSN, [])
    # A gap: reported at once with a gap block; then a duplicate, at once too.
    out = association.receive_untrusted(packet(association, data(PEER_TSN + 2, b"c", ssn=2)), 3)
    assert [(s.cumulative_tsn, s.gaps) for s in sacks(out)] == [(PEER_TSN, [(2, 2)])]
    out = association.receive_untrusted(packet(association, data(PEER_TSN, b"a")), 3)
    assert sacks(out)[0].duplicates == [PEER_TSN]
    out = association.receive_untrusted(packet(association, data(PEER_TSN + 1, b"b", ssn=1)), 3)
    assert sacks(out)[0].cumulative_tsn == PEER_TSN + 2
    assert [m.data for m in association.take_events()] == [b"a", b"b", b"c"]  # in SSN order
    # Far beyond the window: dropped unacknowledged (the peer would resend).
    association.receive_untrusted(packet(association, data(PEER_TSN + 10_000, b"z", ssn=3)), 4)
    assert association.counters["sctp_rwnd_drop"] == 1


def test_a_message_over_max_message_size_is_dropped_and_the_stream_goes_on() -> None:
    association, _ = established(max_message_size=2000)
    chunks = [data(PEER_TSN, b"x" * 1500, flags=c.FLAG_BEGIN),
              data(PEER_TSN + 1, b"x" * 1500, flags=c.FLAG_END), data(PEER_TSN + 2, b"ok", ssn=1)]
    for chunk in chunks:
        association.receive_untrusted(packet(association, chunk), 2)
    assert [m.data for m in association.take_events()] == [b"ok"]
    assert association.counters["sctp_message_too_big"] == 1


def test_fragments_out_of_order_and_unordered() -> None:
    association, _ = established()
    chunks = [data(PEER_TSN + 2, b"3", flags=c.FLAG_END), data(PEER_TSN, b"1", flags=c.FLAG_BEGIN),
              data(PEER_TSN + 3, b"u", flags=3 | c.FLAG_UNORDERED, stream=2),
              data(PEER_TSN + 1, b"2", flags=0)]  # fmt: skip
    for chunk in chunks:
        association.receive_untrusted(packet(association, chunk), 2)
    events = association.take_events()
    assert [(m.stream, m.data, m.unordered) for m in events] == [(2, b"u", True),
                                                                 (1, b"123", False)]  # fmt: skip


def test_heartbeat_shutdown_and_abort() -> None:
    association, _ = established()
    info = c.param(1, b"opaque heartbeat info")
    (ack,) = association.receive_untrusted(packet(association, c.chunk(c.HEARTBEAT, 0, info)), 2)
    (chunk,) = c.parse_packet_untrusted(ack).chunks
    assert (chunk.type, chunk.body) == (c.HEARTBEAT_ACK, info)
    # The peer shuts down: SHUTDOWN-ACK (nothing of ours outstanding), then its COMPLETE.
    ours_acked = association._acked_tsn  # noqa: SLF001 - nothing of ours sent yet
    out = association.receive_untrusted(
        packet(association, c.chunk(c.SHUTDOWN, 0, struct.pack("!I", ours_acked))), 3)
    assert [ch.type for p in out for ch in c.parse_packet_untrusted(p).chunks] == [c.SHUTDOWN_ACK]
    association.receive_untrusted(packet(association, c.chunk(c.SHUTDOWN_COMPLETE, 0, b"")), 3)
    assert association.state == "closed" and association.take_events() == [Closed("shutdown")]
    # Our own graceful close, and an ABORT with the T bit (the peer's tag).
    ours, _ = established()
    out = ours.shutdown(2)
    assert [ch.type for p in out for ch in c.parse_packet_untrusted(p).chunks] == [c.SHUTDOWN]
    out = ours.receive_untrusted(packet(ours, c.chunk(c.SHUTDOWN_ACK, 0, b"")), 2)
    assert [ch.type for p in out for ch in c.parse_packet_untrusted(p).chunks] == [
        c.SHUTDOWN_COMPLETE]  # fmt: skip
    aborted, _ = established()
    aborted.receive_untrusted(packet(aborted, c.chunk(c.ABORT, c.FLAG_T, b""), tag=PEER_TAG), 2)
    assert aborted.take_events() == [Closed("abort")]


def test_t3_retransmission_backs_off_and_gives_up() -> None:
    association, _ = established()
    assert association.send(1, 51, b"x" * 3000, 2.0)
    first = association.flush(2.0)
    assert len(first) == 3 and all(len(p) <= MTU for p in first)  # within cwnd (4380)
    times = []
    now = 2.0
    while association.state != "closed":
        deadline = association.next_timeout()
        assert deadline is not None
        now = deadline
        out = association.handle_timeout(now)
        times.append(round(now - 2.0, 1))
        if association.state != "closed":  # cwnd is one MTU after a timeout: one chunk
            assert len(out) == 1
    assert times[:4] == [1.0, 3.0, 7.0, 15.0]  # RTO 1 s doubling (RFC 9260 6.3.3)
    assert len(times) == 11 and association.take_events()[-1] == Closed("timeout")


def test_send_queue_is_bounded() -> None:
    association, _ = established(max_buffered=10_000)
    assert association.send(1, 51, b"x" * 6000, 2)
    assert not association.send(1, 51, b"x" * 6000, 2)  # 12,000 > 10,000 queued bytes
    assert association.counters["sctp_send_dropped"] == 1
    assert not association.send(999, 51, b"x", 2)  # no such stream


def test_data_channels_bounds_and_dcep_errors() -> None:
    association, _ = established()
    channels = DataChannels(association, max_channels=2)
    open_ = build_open(Open(0, 0, 0, "a", ""))
    tsn = PEER_TSN
    events = []
    ssns: Counter[int] = Counter()
    for stream, ppid, payload in ((0, 50, open_), (0, 50, open_), (2, 51, b"neg"), (4, 51, b"x"),
                                  (2, 52, b"old"), (6, 50, b"\x03junk")):  # fmt: skip
        chunk = c.build_data(c.Data(3, tsn, stream, ssns[stream], ppid, payload))
        ssns[stream] += 1
        _, new = channels.receive_untrusted(packet(association, chunk), 2)
        events += new
        tsn += 1
    assert [type(e).__name__ for e in events] == ["ChannelOpened", "ChannelOpened",
                                                  "ChannelMessage"]  # fmt: skip
    counters = association.counters
    assert (counters["dc_stream_in_use"], counters["dc_too_many_channels"],
            counters["dc_bad_ppid"], counters["dc_malformed"]) == (1, 1, 1, 1)  # fmt: skip
