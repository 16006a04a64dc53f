"""Transports, Router and the endpoint's dispatch, as connection pairs in memory (no sockets).

A publisher and two subscribers are `PeerClient`s (the browser's role: controlling ICE agent,
DTLS client, SRTP) wired to the SFU's `WebRtcTransport`s through `MediaEndpoint.dispatch`, with
every datagram the SFU sends captured per destination address. The clock is explicit.
"""

from __future__ import annotations

from collections import defaultdict

import pytest

from arbiter.config import MediaConfig
from arbiter.sfu import rtcp, rtp
from arbiter.sfu.client import PeerClient
from arbiter.sfu.dtls import Certificate
from arbiter.sfu.endpoint import MediaEndpoint
from arbiter.sfu.router import Router
from arbiter.sfu.transport import CONSUMER, PRODUCER, WebRtcTransport

Address = tuple[str, int]
VIDEO, RTX, AUDIO = 0x1111, 0x1112, 0x2222

CLIENT_CERT = Certificate.generate()
SFU_CERT = Certificate.generate()


class Net:
    """Captures what the endpoint sends, per destination."""

    def __init__(self) -> None:
        self.inbox: dict[Address, list[bytes]] = defaultdict(list)

    def sendto(self, data: bytes, addr: Address) -> int:
        self.inbox[addr].append(data)
        return len(data)

    def take(self, addr: Address) -> list[bytes]:
        out, self.inbox[addr] = self.inbox[addr], []
        return out


class Harness:
    def __init__(self) -> None:
        self.net = Net()
        self.endpoint = MediaEndpoint(
            MediaConfig(listen="127.0.0.1", port=0, announced_ip=["127.0.0.1"]), SFU_CERT
        )
        self.endpoint._sendto = self.net.sendto  # the socket's sendto, captured
        self.router = Router(self.endpoint.send, self.endpoint.counters)
        self.now = 100.0
        self.connected: list[WebRtcTransport] = []

    def transport(self, role: str, owner: str) -> WebRtcTransport:
        t = WebRtcTransport(
            role=role, owner=owner, certificate=SFU_CERT, send=self.endpoint.send, now=self.now
        )
        t.router = self.router
        t.on_connected = self.connected.append
        self.router.add_transport(t)
        self.endpoint.register(t)
        return t

    def connect(self, t: WebRtcTransport, addr: Address) -> PeerClient:
        """ICE (one check with USE-CANDIDATE) and a full DTLS handshake through dispatch."""
        client = PeerClient(
            CLIENT_CERT,
            remote_ufrag=t.ice.ufrag,
            remote_pwd=t.ice.pwd,
            remote_fingerprint=SFU_CERT.fingerprint(),
        )
        t.set_remote(client.ufrag, client.pwd, [("sha-256", client.fingerprint)], self.now)
        self.endpoint.dispatch(client.binding_request(), addr, self.now)
        for response in self.net.take(addr):
            client.receive_untrusted(response, self.now)
        assert client.mapped_address == addr
        self.pump_dtls(client, addr)
        assert client.connected and t.connected
        return client

    def pump_dtls(self, client: PeerClient, addr: Address) -> None:
        """Exchange DTLS flights between the client and the endpoint until both are quiet."""
        flights = client.start_dtls(self.now)
        for _ in range(10):
            for datagram in flights:
                self.endpoint.dispatch(datagram, addr, self.now)
            flights = []
            for datagram in self.net.take(addr):
                flights += client.receive_untrusted(datagram, self.now)
            if not flights and not self.net.inbox[addr]:
                break

    def send_rtp(self, client: PeerClient, addr: Address, packet: bytes) -> None:
        assert client.srtp is not None
        self.endpoint.dispatch(client.srtp.protect_rtp(packet), addr, self.now)

    def send_rtcp(self, client: PeerClient, addr: Address, packet: bytes) -> None:
        assert client.srtp is not None
        self.endpoint.dispatch(client.srtp.protect_rtcp(packet), addr, self.now)


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
    h.send_rtcp(clients["S2"], S2_ADDR, rtcp.build_fir(1, VIDEO, 1))
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
    bitrate, ssrcs = rtcp.parse_remb_untrusted(items[1])
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
    producers = list(pub.producers_list)
    pub.close()
    pub.close()  # idempotent
    assert all(p.closed and not p.consumers and not p.targets for p in producers)
    assert transports["S1"].consumers == {} and transports["S2"].consumers == {}
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
