"""Transports, Router and the endpoint's dispatch, as connection pairs in memory (no sockets).

A publisher and two subscribers are `PeerClient`s (the browser's role: controlling ICE agent,
DTLS client, SRTP) wired to the SFU's `WebRtcTransport`s through `MediaEndpoint.dispatch`, with
every datagram the SFU sends captured per destination address. The clock is explicit.
"""

from __future__ import annotations

import pytest

from arbiter.sfu import rtcp, rtp
from arbiter.sfu.client import PeerClient
from arbiter.sfu.dtls import Certificate
from arbiter.sfu.srtp import SrtpSession
from arbiter.sfu.transport import CONSUMER, PRODUCER, WebRtcTransport
from arbiter.testing import rtcp_reader
from arbiter.testing.router_pair import CLIENT_CERT, SFU_CERT, Address, Harness

VIDEO, RTX, AUDIO = 0x1111, 0x1112, 0x2222


P_ADDR, S1_ADDR, S2_ADDR = ("127.0.0.1", 5000), ("127.0.0.1", 5001), ("127.0.0.1", 5002)


@pytest.fixture
def room() -> tuple[Harness, dict[str, PeerClient], dict[str, WebRtcTransport]]:
    h = Harness()
    pub_t = h.transport(PRODUCER, "P")
    video = h.router.create_producer(pub_t, "video", VIDEO, RTX)
    audio = h.router.create_producer(pub_t, "audio", AUDIO, None)
    clients = {"P": h.connect(pub_t, P_ADDR)}
    transports = {"P": pub_t}
    for name, addr in (("S1", S1_ADDR), ("S2", S2_ADDR)):
        t = h.transport(CONSUMER, name)
        h.router.create_consumer(video, t)
        h.router.create_consumer(audio, t)
        clients[name] = h.connect(t, addr)
        transports[name] = t
    for producer in (video, audio):
        producer.rebuild_targets()
    return h, clients, transports


def test_rtp_is_forwarded_unchanged_to_every_consumer(room) -> None:  # type: ignore[no-untyped-def]
    h, clients, _ = room
    packets = [
        rtp.build_rtp(96, 1000 + i, 90000 * i, VIDEO, bytes([i]) * 1100, marker=i % 2 == 0)
        for i in range(5)
    ] + [rtp.build_rtp(111, 7, 960, AUDIO, b"opus" * 20)]
    for packet in packets:
        h.send_rtp(clients["P"], P_ADDR, packet)
    for name, addr in (("S1", S1_ADDR), ("S2", S2_ADDR)):
        srtp = clients[name].srtp
        assert srtp is not None
        received = [srtp.unprotect_rtp_untrusted(d) for d in h.net.take(addr)]
        assert received == packets
    assert h.endpoint.counters["rtp_in"] == 6
    assert h.net.take(P_ADDR) == []  # nothing echoed to the publisher


def test_nack_is_answered_from_the_cache(room) -> None:  # type: ignore[no-untyped-def]
    h, clients, _ = room
    h.router.tick(h.now)  # a forwarded-bytes sample: the NACK budget's window opens here
    packets = [rtp.build_rtp(96, (65534 + i) & 0xFFFF, 0, VIDEO, bytes([i]) * 500)
               for i in range(4)]  # fmt: skip
    for packet in packets:  # sequence numbers 65534, 65535, 0, 1: across the wrap
        h.send_rtp(clients["P"], P_ADDR, packet)
    h.net.take(S1_ADDR)
    h.net.take(S2_ADDR)
    nack = rtcp.build_nack(1, VIDEO, [65535, 0, 4242])
    h.send_rtcp(clients["S1"], S1_ADDR, nack)
    srtp = clients["S1"].srtp
    assert srtp is not None
    resent = [srtp.unprotect_rtp_untrusted(d) for d in h.net.take(S1_ADDR)]
    assert resent == [packets[1], packets[2]]  # 4242 was never seen: not invented
    assert h.net.take(P_ADDR) == []  # answered locally, not upstream
    assert h.net.take(S2_ADDR) == []
    assert h.endpoint.counters["nack_retransmitted"] == 2
    assert h.endpoint.counters["nack_missed"] == 1


def test_pli_is_relayed_upstream_once_per_second(room) -> None:  # type: ignore[no-untyped-def]
    h, clients, transports = room
    h.now += 5  # past the PLI sent when the consumers connected
    for name, addr in (("S1", S1_ADDR), ("S2", S2_ADDR)):
        h.send_rtcp(clients[name], addr, rtcp.build_pli(1, VIDEO))
    srtp = clients["P"].srtp
    assert srtp is not None
    upstream = [srtp.unprotect_rtcp_untrusted(d) for d in h.net.take(P_ADDR)]
    assert upstream == [rtcp.build_pli(transports["P"].rtcp_ssrc, VIDEO)]
    h.now += 1.01
    h.send_rtcp(clients["S2"], S2_ADDR, rtcp_reader.build_fir(1, VIDEO, 1))
    upstream = [srtp.unprotect_rtcp_untrusted(d) for d in h.net.take(P_ADDR)]
    assert upstream == [rtcp.build_pli(transports["P"].rtcp_ssrc, VIDEO)]


def test_sender_report_is_forwarded_and_publisher_gets_rr_and_remb(room) -> None:  # type: ignore[no-untyped-def]
    h, clients, transports = room
    for i in range(10):
        h.send_rtp(clients["P"], P_ADDR, rtp.build_rtp(96, 10 + i, 0, VIDEO, b"x" * 100))
    h.net.take(S1_ADDR)
    ntp = rtcp.ntp_from_unix(1_700_000_000.25)
    sr = rtcp.build_sender_report(VIDEO, ntp, 123456, 10, 1000)
    h.send_rtcp(clients["P"], P_ADDR, sr + rtcp.build_sdes(VIDEO, "cname"))
    srtp = clients["S1"].srtp
    assert srtp is not None
    (forwarded,) = [srtp.unprotect_rtcp_untrusted(d) for d in h.net.take(S1_ADDR)]
    assert forwarded == sr
    h.now += 0.5
    h.router.send_reports(h.now)
    p_srtp = clients["P"].srtp
    assert p_srtp is not None
    (report,) = [p_srtp.unprotect_rtcp_untrusted(d) for d in h.net.take(P_ADDR)]
    items = rtcp.iter_packets_untrusted(report)
    assert [i.packet_type for i in items] == [rtcp.PT_RR, rtcp.PT_PSFB]
    rr = rtcp.parse_receiver_report_untrusted(items[0])
    assert rr.ssrc == transports["P"].rtcp_ssrc
    (block,) = rr.reports
    assert (block.ssrc, block.fraction_lost, block.packets_lost, block.highest_seq) == (
        VIDEO, 0, 0, 19,
    )  # fmt: skip
    assert block.lsr == rtcp.ntp_middle32(ntp)
    assert block.dlsr == 32768  # 0.5 s in 1/65536 s units
    bitrate, ssrcs = rtcp_reader.parse_remb_untrusted(items[1])
    assert ssrcs == [VIDEO] and bitrate > 0


def test_bad_packets_are_dropped_and_counted(room) -> None:  # type: ignore[no-untyped-def]
    h, clients, _ = room
    good = clients["P"].srtp.protect_rtp(rtp.build_rtp(96, 1, 0, VIDEO, b"y" * 50))  # type: ignore[union-attr]
    tampered = good[:-1] + bytes([good[-1] ^ 1])
    h.endpoint.dispatch(tampered, P_ADDR, h.now)
    h.endpoint.dispatch(good, ("127.0.0.1", 9999), h.now)  # right keys, unknown address
    unknown = rtp.build_rtp(96, 2, 0, 0xDEAD, b"z" * 50)
    h.send_rtp(clients["P"], P_ADDR, unknown)
    h.endpoint.dispatch(b"\x00\x01" + b"\x00" * 30, P_ADDR, h.now)  # STUN-looking junk
    h.endpoint.dispatch(b"\xff" * 40, P_ADDR, h.now)
    h.endpoint.dispatch(b"\x80" * 1600, P_ADDR, h.now)
    c = h.endpoint.counters
    assert (c["srtp_auth"], c["unknown_address"], c["unknown_ssrc"]) == (1, 1, 1)
    assert (c["stun_bad"], c["unknown_protocol"], c["oversize"]) == (1, 1, 1)
    assert h.net.take(S1_ADDR) == [] and h.net.take(S2_ADDR) == []


def test_close_cascades_from_producer_transport(room) -> None:  # type: ignore[no-untyped-def]
    h, clients, transports = room
    pub = transports["P"]
    producers = h.router.producers_of(pub)
    pub.close()
    pub.close()  # idempotent
    assert all(p.closed and not p.consumers and not p.targets for p in producers)
    assert h.router.consumers_of(transports["S1"]) == {}
    assert h.router.consumers_of(transports["S2"]) == {}
    assert P_ADDR not in h.endpoint.by_addr and pub not in h.router.transports
    h.send_rtp(clients["P"], P_ADDR, rtp.build_rtp(96, 1, 0, VIDEO, b"gone"))
    assert h.endpoint.counters["unknown_address"] == 1
    h.router.close()
    assert all(t.closed for t in transports.values())


def test_wrong_fingerprint_gets_no_keys() -> None:
    h = Harness()
    t = h.transport(PRODUCER, "P")
    impostor = Certificate.generate()
    client = PeerClient(
        impostor, remote_ufrag=t.ice.ufrag, remote_pwd=t.ice.pwd,
        remote_fingerprint=SFU_CERT.fingerprint(),
    )  # fmt: skip
    t.set_remote(client.ufrag, client.pwd, [("sha-256", CLIENT_CERT.fingerprint())], h.now)
    h.endpoint.dispatch(client.binding_request(), P_ADDR, h.now)
    h.net.take(P_ADDR)
    h.pump_dtls(client, P_ADDR)
    assert t.srtp is None and not t.connected and t.closed
    assert h.endpoint.counters["dtls_failed"] == 1
    assert h.connected == []


def test_replayed_check_cannot_move_the_media() -> None:
    """A captured check with USE-CANDIDATE, replayed from another address, is dropped: it
    does not redirect the media there (the transaction ID is not fresh)."""
    h = Harness()
    t = h.transport(PRODUCER, "P")
    client = h.connect(t, P_ADDR)
    check = client.binding_request()
    h.endpoint.dispatch(check, P_ADDR, h.now)
    assert len(h.net.take(P_ADDR)) == 1  # answered
    h.endpoint.dispatch(check, P_ADDR, h.now)  # a retransmission: answered again
    assert len(h.net.take(P_ADDR)) == 1
    attacker = ("127.0.0.1", 6666)
    h.endpoint.dispatch(check, attacker, h.now)
    assert h.net.take(attacker) == []
    assert t.remote_addr == P_ADDR and t.ice.selected == P_ADDR
    assert attacker not in h.endpoint.by_addr
    assert h.endpoint.counters["stun_bad"] == 1
    # A fresh check (the real browser, or anyone holding its ice-pwd) is answered, but media
    # follows it only once authenticated SRTP comes from there too: a network change.
    h.endpoint.dispatch(client.binding_request(), attacker, h.now)
    assert len(h.net.take(attacker)) == 1
    assert t.remote_addr == P_ADDR and t.pending_addr == attacker
    h.send_rtp(client, attacker, rtp.build_rtp(96, 1, 0, VIDEO, b"moved"))
    assert t.remote_addr == attacker and t.pending_addr is None
    assert h.endpoint.counters["ice_switch"] == 1


def test_peer_close_notify_closes_the_transport_at_once(room) -> None:  # type: ignore[no-untyped-def]
    """A browser closing its peer connection sends close_notify: the SFU stops sending to it
    then, not when consent runs out (30 s later)."""
    h, clients, transports = room
    for datagram in clients["S1"].dtls.close():
        h.endpoint.dispatch(datagram, S1_ADDR, h.now)
    s1 = transports["S1"]
    assert s1.closed and s1.close_reason == "peer_closed"
    assert h.endpoint.counters["dtls_peer_closed"] == 1
    assert S1_ADDR not in h.endpoint.by_addr
    h.send_rtp(clients["P"], P_ADDR, rtp.build_rtp(96, 1, 0, VIDEO, b"v" * 100))
    assert h.net.take(S1_ADDR) == [] and len(h.net.take(S2_ADDR)) == 1


# --- issue 9: feedback never amplifies, addresses need proof ---------------------------------


def _resent(h: Harness, client: PeerClient, addr: Address) -> list[bytes]:
    """Decrypted with a fresh session: the client's own has seen these indexes already."""
    keys = client.dtls.srtp_keys
    assert keys is not None
    srtp = SrtpSession(keys)
    return [srtp.unprotect_rtp_untrusted(d) for d in h.net.take(addr)]


def test_nack_flood_is_bounded_per_seq_and_by_forwarded_bytes(room) -> None:  # type: ignore[no-untyped-def]
    """Each (consumer, seq) is resent at most once per 100 ms, and what is resent to a consumer
    within any second stays below what that stream forwarded to it in the same second."""
    h, clients, _ = room
    size = 1000
    h.router.tick(h.now)
    for seq in range(100):  # 100 kB forwarded at t=100
        h.send_rtp(clients["P"], P_ADDR, rtp.build_rtp(96, seq, 0, VIDEO, b"v" * (size - 12)))
    h.net.take(S1_ADDR)
    h.net.take(S2_ADDR)
    nack = rtcp.build_nack(1, VIDEO, range(100))
    h.send_rtcp(clients["S1"], S1_ADDR, nack)
    first = _resent(h, clients["S1"], S1_ADDR)
    # Strictly below the 100 forwarded packets' bytes: 99 of them.
    assert len(first) == 99 and len(set(first)) == 99
    c = h.endpoint.counters
    assert (c["nack_retransmitted"], c["nack_suppressed"]) == (99, 1)
    # The same NACK again and again within 100 ms: nothing more (and no budget left anyway).
    for _ in range(50):
        h.now += 0.001
        h.send_rtcp(clients["S1"], S1_ADDR, nack)
    assert _resent(h, clients["S1"], S1_ADDR) == []
    # A second later nothing new was forwarded: the window holds no forwarded bytes, no budget.
    h.now += 1.0
    h.router.tick(h.now)
    h.send_rtcp(clients["S1"], S1_ADDR, nack)
    assert _resent(h, clients["S1"], S1_ADDR) == []
    # New media earns new budget, for this consumer only and at most its size.
    for seq in range(100, 110):
        h.send_rtp(clients["P"], P_ADDR, rtp.build_rtp(96, seq, 0, VIDEO, b"w" * (size - 12)))
    h.net.take(S2_ADDR)
    h.net.take(S1_ADDR)
    h.send_rtcp(clients["S1"], S1_ADDR, nack)
    assert len(_resent(h, clients["S1"], S1_ADDR)) == 9
    assert h.net.take(S2_ADDR) == [] and h.net.take(P_ADDR) == []
    # S2 never asked: its own budget is untouched by S1's flood.
    h.send_rtcp(clients["S2"], S2_ADDR, rtcp.build_nack(1, VIDEO, [105]))
    assert len(_resent(h, clients["S2"], S2_ADDR)) == 1


def test_nack_repeat_limit_is_100_ms_per_seq(room) -> None:  # type: ignore[no-untyped-def]
    h, clients, _ = room
    h.router.tick(h.now)
    for seq in range(50):
        h.send_rtp(clients["P"], P_ADDR, rtp.build_rtp(96, seq, 0, VIDEO, b"v" * 500))
    h.net.take(S1_ADDR)
    nack = rtcp.build_nack(1, VIDEO, [7])
    times = []
    for _ in range(30):  # every 20 ms for 0.6 s
        h.send_rtcp(clients["S1"], S1_ADDR, nack)
        if _resent(h, clients["S1"], S1_ADDR):
            times.append(h.now)
        h.now += 0.02
    gaps = [round(b - a, 3) for a, b in zip(times, times[1:], strict=False)]
    # Every 100 ms, give or take the 20 ms step (floats land 0.1 just below or above it).
    assert len(times) >= 5 and all(0.1 <= g <= 0.12 for g in gaps), gaps


def test_nack_older_than_libsrtp_default_window_is_served(room) -> None:  # type: ignore[no-untyped-def]
    """libsrtp's default outbound replay window is 128: a NACK 200 packets back made protect
    raise out of the RTCP handler. The window now covers the whole cache."""
    h, clients, _ = room
    h.router.tick(h.now)
    for seq in range(1000):
        h.send_rtp(clients["P"], P_ADDR, rtp.build_rtp(96, seq, 0, VIDEO, bytes([seq & 255]) * 200))
    h.net.take(S1_ADDR)
    old = [0, 1, 500, 799, 998]
    h.send_rtcp(clients["S1"], S1_ADDR, rtcp.build_nack(1, VIDEO, old))
    resent = _resent(h, clients["S1"], S1_ADDR)
    assert [rtp.seq_of(p) for p in resent] == old
    c = h.endpoint.counters
    assert c["internal_error"] == 0 and c["nack_protect_failed"] == 0
    # The publisher's sequence number jumps ahead: packets still in the cache but further
    # back than the cache's length (the outbound window) are not served, not even tried.
    h.now += 0.5
    h.router.tick(h.now)
    for seq in range(5000, 5010):
        h.send_rtp(clients["P"], P_ADDR, rtp.build_rtp(96, seq, 0, VIDEO, b"j" * 200))
    h.net.take(S1_ADDR)
    h.send_rtcp(clients["S1"], S1_ADDR, rtcp.build_nack(1, VIDEO, [500, 5001]))
    assert [rtp.seq_of(p) for p in _resent(h, clients["S1"], S1_ADDR)] == [5001]
    assert c["nack_missed"] == 1 and c["nack_protect_failed"] == 0


def test_a_failing_retransmission_costs_only_itself(room) -> None:  # type: ignore[no-untyped-def]
    """One packet whose protect fails is counted; the rest of the NACK and of the compound
    (here a PLI after it) are still handled, and nothing is logged per datagram."""
    h, clients, transports = room
    h.now += 5  # past the PLIs sent when the consumers connected
    h.router.tick(h.now)
    for seq in range(10):
        h.send_rtp(clients["P"], P_ADDR, rtp.build_rtp(96, seq, 0, VIDEO, b"v" * 300))
    h.net.take(S1_ADDR)
    h.net.take(P_ADDR)
    s1 = transports["S1"]
    real = s1.protect_rtp

    def flaky(packet: bytes) -> bytes:
        if rtp.seq_of(packet) == 3:
            return real(b"\x80" * 2000)  # pylibsrtp refuses it (ValueError: too long)
        return real(packet)

    s1.protect_rtp = flaky
    compound = rtcp.build_nack(1, VIDEO, [2, 3, 4]) + rtcp.build_pli(1, VIDEO)
    h.send_rtcp(clients["S1"], S1_ADDR, compound)
    assert [rtp.seq_of(p) for p in _resent(h, clients["S1"], S1_ADDR)] == [2, 4]
    p_srtp = clients["P"].srtp
    assert p_srtp is not None
    upstream = [p_srtp.unprotect_rtcp_untrusted(d) for d in h.net.take(P_ADDR)]
    assert upstream == [rtcp.build_pli(transports["P"].rtcp_ssrc, VIDEO)]
    c = h.endpoint.counters
    assert (c["nack_protect_failed"], c["nack_retransmitted"], c["internal_error"]) == (1, 2, 0)
    # A malformed packet inside a well-framed compound costs only itself too.
    h.now += 1.5
    bad_fir = bytes([0x80 | rtcp.FMT_FIR, rtcp.PT_PSFB, 0, 3]) + bytes(8) + VIDEO.to_bytes(4, "big")
    # A FIR whose FCI is half an entry (RFC 5104 4.3.1.2: 8 bytes each), then a good PLI.
    h.send_rtcp(clients["S1"], S1_ADDR, bad_fir + rtcp.build_pli(1, VIDEO))
    assert len(h.net.take(P_ADDR)) == 1
    assert c["rtcp_parse"] == 1 and c["internal_error"] == 0


def test_unexpected_errors_are_counted_and_logged_at_a_bounded_rate(
    room,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    h, clients, _ = room

    def broken(*args: object) -> None:
        raise RuntimeError("a bug of ours")

    monkeypatch.setattr(h.router, "on_rtcp", broken)
    with caplog.at_level("ERROR", logger="arbiter.sfu.endpoint"):
        for _ in range(200):  # 200 datagrams over 20 s
            h.now += 0.1
            h.send_rtcp(clients["S1"], S1_ADDR, rtcp.build_pli(1, VIDEO))
    assert h.endpoint.counters["internal_error"] == 200
    lines = [r for r in caplog.records if r.name == "arbiter.sfu.endpoint"]
    assert len(lines) == 2  # at t=0.1 and t=10.1: one per 10 s per kind
    assert "more like it since the last one" in lines[1].getMessage()


def test_forced_keyframe_requests_keep_a_300_ms_floor(room) -> None:  # type: ignore[no-untyped-def]
    """New consumers force a PLI, but ten within 0.1 s are one PLI now and one at the floor's
    end (the last newcomer still gets its keyframe), not ten."""
    h, clients, transports = room
    producer = h.router.transports[transports["P"]].producers[VIDEO]
    h.now += 5
    h.net.take(P_ADDR)
    start = h.now
    for _ in range(10):
        h.router.request_keyframe(producer, h.now, force=True)
        h.now += 0.01
    sent_at = [round(start - start, 2)] if h.net.take(P_ADDR) else []
    while h.now < start + 1.0:
        h.now += 0.05
        h.router.tick(h.now)
        if h.net.take(P_ADDR):
            sent_at.append(round(h.now - start, 2))
    assert sent_at == [0.0, 0.3]
    c = h.endpoint.counters
    assert (c["pli_deferred"], c["pli_coalesced"]) == (1, 8)
    # A consumer's own PLI keeps the one-per-second limit on top of the floor.
    h.send_rtcp(clients["S1"], S1_ADDR, rtcp.build_pli(1, VIDEO))
    assert h.net.take(P_ADDR) == [] and c["pli_throttled"] == 1


def test_a_check_replayed_from_a_live_participants_address_does_not_steal_it(room) -> None:  # type: ignore[no-untyped-def]
    """S1's check (a fresh one: say captured and replayed before S1's own arrived) sent from
    S2's address, which S2 is using: answered, but S2 keeps its packets and S1 its media."""
    h, clients, transports = room
    h.now += 1
    h.send_rtcp(clients["S2"], S2_ADDR, rtcp.build_receiver_report(1, []))  # S2 is live
    h.endpoint.dispatch(clients["S1"].binding_request(), S2_ADDR, h.now)
    assert len(h.net.take(S2_ADDR)) == 1  # the binding response goes to the source
    assert h.endpoint.by_addr[S2_ADDR] is transports["S2"]
    assert h.endpoint.counters["stun_address_in_use"] == 1
    s1 = transports["S1"]
    assert s1.remote_addr == S1_ADDR and s1.pending_addr == S2_ADDR
    # S2's RTCP still reaches S2's transport (no srtp_auth failures), media still flows to both.
    h.send_rtcp(clients["S2"], S2_ADDR, rtcp.build_receiver_report(1, []))
    h.send_rtp(clients["P"], P_ADDR, rtp.build_rtp(96, 1, 0, VIDEO, b"v" * 100))
    assert len(h.net.take(S1_ADDR)) == 1 and len(h.net.take(S2_ADDR)) == 1
    assert h.endpoint.counters["srtp_auth"] == 0
    # Once S2 has been silent for ADDRESS_HOLD (its browser closed), a check may take it.
    h.now += 6
    h.endpoint.dispatch(clients["S1"].binding_request(use_candidate=False), S2_ADDR, h.now)
    assert h.endpoint.by_addr[S2_ADDR] is s1


def test_media_moves_only_after_srtp_from_the_new_address_and_at_most_once_a_second(room) -> None:  # type: ignore[no-untyped-def]
    h, clients, transports = room
    s1, c1 = transports["S1"], clients["S1"]
    new, back = ("127.0.0.1", 7001), S1_ADDR
    h.endpoint.dispatch(c1.binding_request(), new, h.now)
    assert len(h.net.take(new)) == 1
    h.send_rtp(clients["P"], P_ADDR, rtp.build_rtp(96, 1, 0, VIDEO, b"v" * 100))
    assert h.net.take(new) == [] and len(h.net.take(S1_ADDR)) == 1  # still the old address
    h.send_rtcp(c1, new, rtcp.build_receiver_report(1, []))  # authenticated, from `new`
    assert s1.remote_addr == new
    h.send_rtp(clients["P"], P_ADDR, rtp.build_rtp(96, 2, 0, VIDEO, b"v" * 100))
    assert len(h.net.take(new)) == 1 and h.net.take(S1_ADDR) == []
    # Back at once: proven, but the second switch within a second waits.
    h.now += 0.2
    h.endpoint.dispatch(c1.binding_request(), back, h.now)
    h.send_rtcp(c1, back, rtcp.build_receiver_report(1, []))
    h.send_rtcp(c1, back, rtcp.build_receiver_report(1, []))
    assert s1.remote_addr == new
    h.now += 1.0
    h.send_rtcp(c1, back, rtcp.build_receiver_report(1, []))
    assert s1.remote_addr == back
    c = h.endpoint.counters
    assert (c["ice_nomination_pending"], c["ice_switch"], c["ice_switch_deferred"]) == (2, 2, 1)


def test_renomination_before_dtls_moves_the_handshake_with_it() -> None:
    """Before any keys exist nothing but handshake flights follow the address: DTLS from the
    newly nominated address moves it (the browser renominated and handshakes from there).
    IPv6 sources arrive as 4-tuples from recvfrom; ICE compares (host, port)."""
    h = Harness()
    t = h.transport(PRODUCER, "P")
    client = PeerClient(
        CLIENT_CERT, remote_ufrag=t.ice.ufrag, remote_pwd=t.ice.pwd,
        remote_fingerprint=SFU_CERT.fingerprint(),
    )  # fmt: skip
    t.set_remote(client.ufrag, client.pwd, [("sha-256", client.fingerprint)], h.now)
    first: Address = ("2001:db8::1", 5000, 0, 0)  # type: ignore[assignment]
    second: Address = ("2001:db8::2", 5002, 0, 0)  # type: ignore[assignment]
    h.endpoint.dispatch(client.binding_request(), first, h.now)
    h.endpoint.dispatch(client.binding_request(), second, h.now)
    for response in h.net.take(first) + h.net.take(second):
        client.receive_untrusted(response, h.now)
    assert t.remote_addr == ("2001:db8::1", 5000) and t.pending_addr == ("2001:db8::2", 5002)
    flights = client.start_dtls(h.now)
    for _ in range(10):
        for datagram in flights:
            h.endpoint.dispatch(datagram, second, h.now)
        flights = []
        for datagram in h.net.take(("2001:db8::2", 5002)):  # type: ignore[arg-type]
            flights += client.receive_untrusted(datagram, h.now)
    assert client.connected and t.connected and t.remote_addr == ("2001:db8::2", 5002)
    assert h.endpoint.counters["ice_switch"] == 1
    assert h.net.take(("2001:db8::1", 5000)) == []  # type: ignore[arg-type]
