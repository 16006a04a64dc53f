"""The media endpoint answers from the address a datagram arrived on (issue 11).

With `media.listen = 0.0.0.0` the kernel picks a reply's source address by routing; on a host
with a second address that is not the address the browser sent to, and browsers drop answers
from an unexpected address. The endpoint reads IP_PKTINFO and sends from the arrival address
(arbiter/sfu/endpoint.py, module docstring). Here:

- in memory: which source every datagram leaves from (the socket's `sendmsg` captured), through
  checks to two local addresses, an unauthenticated check, a check for another transport from
  a live address, and the transport's end;
- over real sockets: a veth pair the test makes (arbiter/testing/hostaddr.py) gives the host a
  secondary address; a server on 0.0.0.0 announcing it completes ICE and DTLS with peers on two
  other local addresses and forwards SRTP to them, every datagram from the announced address;
- the start-up warning for an announced address packets cannot reach.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import struct

import pytest
import trio

from arbiter.config import MediaConfig
from arbiter.sfu import rtp
from arbiter.sfu.client import PeerClient
from arbiter.sfu.dtls import Certificate
from arbiter.sfu.endpoint import IP_PKTINFO, MediaEndpoint, _answer_from, unreachable_announced
from arbiter.sfu.media_worker import MediaWorker
from arbiter.sfu.transport import CONSUMER, PRODUCER, WebRtcTransport
from arbiter.testing.hostaddr import veth_addresses

Address = tuple[str, int]
SFU_CERT = Certificate.generate()
CLIENT_CERT = Certificate.generate()
VIDEO = 0x5EED


def _pktinfo(local: str) -> list[tuple[int, int, bytes]]:
    """What recvmsg returns with a datagram for `local` (struct in_pktinfo)."""
    packed = socket.inet_aton(local)
    return [(socket.IPPROTO_IP, IP_PKTINFO, struct.pack("=i", 2) + packed + packed)]


def _source(via: list[tuple[int, int, bytes]] | None) -> str | None:
    """The source address sendmsg's ancillary data asks for; None for a plain sendto."""
    if via is None:
        return None
    [(level, kind, data)] = via
    assert (level, kind) == (socket.IPPROTO_IP, IP_PKTINFO)
    assert data[:4] == data[8:] == bytes(4)  # no interface, no destination: the route decides
    return socket.inet_ntoa(data[4:8])


class Captured:
    """A wildcard endpoint whose socket is replaced by a recorder of (source, destination)."""

    def __init__(self) -> None:
        self.endpoint = MediaEndpoint(MediaConfig(listen="0.0.0.0", port=0), SFU_CERT)
        assert self.endpoint.answers_from_arrival
        self.sent: list[tuple[str | None, Address, bytes]] = []
        self.endpoint._sendto = lambda data, addr: self._record(None, addr, data)
        self.endpoint._sendmsg = lambda bufs, anc, flags, addr: self._record(anc, addr, bufs[0])
        self.now = 10.0

    def _record(self, via: list[tuple[int, int, bytes]] | None, addr: Address, data: bytes) -> int:
        self.sent.append((_source(via), addr, data))
        return len(data)

    def transport(self) -> tuple[WebRtcTransport, PeerClient]:
        t = WebRtcTransport(role=PRODUCER, owner="p", certificate=SFU_CERT,
                            send=self.endpoint.send, now=self.now)  # fmt: skip
        self.endpoint.register(t)
        client = PeerClient(CLIENT_CERT, remote_ufrag=t.ice.ufrag, remote_pwd=t.ice.pwd,
                            remote_fingerprint=SFU_CERT.fingerprint())  # fmt: skip
        t.set_remote(client.ufrag, client.pwd, [("sha-256", client.fingerprint)], self.now)
        return t, client

    def check(self, client: PeerClient, remote: Address, local: str, **kw: bool) -> str | None:
        """A binding request from `remote` to `local`: the source its answer left from."""
        self.sent.clear()
        self.endpoint.dispatch(client.binding_request(**kw), remote, self.now, _pktinfo(local))
        answers = [source for source, addr, _ in self.sent if addr == remote]
        return answers[-1] if answers else None

    def source_now(self, remote: Address) -> str | None:
        """Where a datagram to `remote` leaves from now."""
        self.sent.clear()
        self.endpoint.send(b"\x80media", remote)
        [(source, _, _)] = self.sent
        return source


BROWSER = ("192.0.2.50", 50000)
OTHER = ("192.0.2.51", 50001)
A, B, C = "198.51.100.1", "198.51.100.2", "198.51.100.3"


def test_every_answer_leaves_from_its_arrival_address() -> None:
    net = Captured()
    t, client = net.transport()
    # A check (no nomination) to A, then the nominating one to B: each answered from where it
    # arrived, and what follows goes out from B.
    assert net.check(client, BROWSER, A, use_candidate=False) == A
    assert net.source_now(BROWSER) == A
    assert net.check(client, BROWSER, B) == B
    assert t.remote_addr == BROWSER
    assert net.source_now(BROWSER) == B
    # DTLS flights (sent by the transport) and RTCP (by the router) use the same path.
    flights = client.start_dtls(net.now)
    net.sent.clear()
    for datagram in flights:
        net.endpoint.dispatch(datagram, BROWSER, net.now, _pktinfo(B))
    assert net.sent and {source for source, _, _ in net.sent} == {B}
    # An address nobody proved is answered as before: plain sendto.
    assert net.source_now(OTHER) is None


def test_unauthenticated_checks_change_nothing() -> None:
    net = Captured()
    t, client = net.transport()
    assert net.check(client, BROWSER, B) == B
    # Signed with the wrong password: dropped, unanswered, and media still leaves from B.
    forged = PeerClient(CLIENT_CERT, remote_ufrag=t.ice.ufrag, remote_pwd="x" * 32,
                        remote_fingerprint=SFU_CERT.fingerprint())  # fmt: skip
    assert net.check(forged, BROWSER, C) is None
    assert net.endpoint.counters["stun_bad"] == 1
    assert net.source_now(BROWSER) == B
    # Same for a check from an address the endpoint never heard of: no entry is left behind.
    assert net.check(forged, OTHER, C) is None
    assert OTHER not in net.endpoint._via


def test_a_live_address_keeps_its_source_against_another_transports_check() -> None:
    net = Captured()
    owner, owner_client = net.transport()
    assert net.check(owner_client, BROWSER, B) == B
    owner.last_rx = net.now  # receiving authenticated media from BROWSER right now
    other, other_client = net.transport()
    # A valid check for another transport from the owner's address (a replay or a spoof): it
    # is answered from its own arrival address, but the owner's media still leaves from B.
    assert net.check(other_client, BROWSER, C) == C
    assert net.endpoint.counters["stun_address_in_use"] == 1
    assert net.endpoint.by_addr[BROWSER] is owner
    assert net.source_now(BROWSER) == B


def test_closing_a_transport_forgets_its_sources() -> None:
    net = Captured()
    t, client = net.transport()
    assert net.check(client, BROWSER, A) == A
    assert net.check(client, OTHER, B) == B
    assert set(net.endpoint._via) == {BROWSER, OTHER}
    t.close("closed")
    assert net.endpoint._via == {}
    assert net.source_now(BROWSER) is None


def test_no_ancillary_data_where_the_kernel_picks_the_arrival_address_anyway() -> None:
    net = Captured()
    t, client = net.transport()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        net.endpoint._probe = probe  # what run() makes: the kernel's choice, by a route lookup
        # The kernel answers 127.0.0.1 from 127.0.0.1: a plain sendto, nothing recorded.
        assert net.check(client, ("127.0.0.1", 5000), "127.0.0.1") is None
        assert net.endpoint._via == {}
        # ... but 127.0.0.1 from 127.0.0.2 only when told to.
        assert net.check(client, ("127.0.0.1", 5000), "127.0.0.2") == "127.0.0.2"
        assert net.endpoint.reply_source(("127.0.0.1", 5000)) == "127.0.0.2"
        assert net.check(client, ("127.0.0.1", 5000), "127.0.0.1") is None
        assert net.endpoint._via == {}


def test_ipv6_arrival_addresses() -> None:
    """in6_pktinfo {addr; ifindex}: the interface is kept for a link-local address only; an
    IPv4 datagram on a dual-stack socket arrives IPv4-mapped and is answered the same way."""
    ifindex = struct.pack("=i", 3)

    def arrival(ip: str) -> list[tuple[int, int, bytes]]:
        return [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO,
                 socket.inet_pton(socket.AF_INET6, ip) + ifindex)]  # fmt: skip

    endpoint = MediaEndpoint(MediaConfig(listen="::", port=0), SFU_CERT)
    for ip, kept in (("2001:db8::7", False), ("fe80::7", True), ("::ffff:198.51.100.2", False)):
        via = _answer_from(arrival(ip))
        assert via is not None
        [(level, kind, data)] = via
        assert (level, kind) == (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO)
        assert data == socket.inet_pton(socket.AF_INET6, ip) + (ifindex if kept else bytes(4))
        endpoint._via[("remote", 1)] = via
        assert endpoint.reply_source(("remote", 1)) == ip.removeprefix("::ffff:")
    assert _answer_from([]) is None
    assert _answer_from([(socket.SOL_SOCKET, 1, b"x" * 12)]) is None


def test_a_socket_bound_to_one_address_sends_plainly() -> None:
    endpoint = MediaEndpoint(MediaConfig(listen="127.0.0.1", port=0), SFU_CERT)
    assert not endpoint.answers_from_arrival


def test_unreachable_announced_addresses() -> None:
    assert unreachable_announced("127.0.0.1", ["127.0.0.1"]) == []
    assert unreachable_announced("0.0.0.0", ["127.0.0.1", "127.0.0.7"]) == []  # local
    assert unreachable_announced("0.0.0.0", ["93.184.216.34"]) == []  # public: a NAT's
    [problem] = unreachable_announced("0.0.0.0", ["10.255.255.254"])
    assert "neither an address of this host nor a public address" in problem
    [problem] = unreachable_announced("127.0.0.1", ["127.0.0.2"])
    assert "listens on 127.0.0.1" in problem
    [problem] = unreachable_announced("0.0.0.0", ["::1"])  # IPv6 on an IPv4 socket
    assert "listens on 0.0.0.0" in problem
    [problem] = unreachable_announced("0.0.0.0", ["media.example"])
    assert "not an IP address" in problem


async def test_startup_warns_once_for_an_unreachable_announced_address(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="arbiter.sfu.endpoint")
    config = MediaConfig(listen="127.0.0.1", port=0, announced_ip=["127.0.0.1", "10.255.255.254"])
    async with trio.open_nursery() as nursery:
        await nursery.start(MediaEndpoint(config, SFU_CERT).run)
        nursery.cancel_scope.cancel()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("media.announced_ip: 10.255.255.254 is neither"), warnings
    caplog.clear()
    async with trio.open_nursery() as nursery:
        await nursery.start(MediaEndpoint(MediaConfig(listen="0.0.0.0", port=0), SFU_CERT).run)
        nursery.cancel_scope.cancel()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# -- over real sockets -----------------------------------------------------------------------


def _udp(host: str) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, 0))
    s.setblocking(False)
    return s


async def _exchange(
    sock: socket.socket, target: Address, datagrams: list[bytes]
) -> list[tuple[bytes, Address]]:
    """Send, then collect what comes back within a short quiet period."""
    for datagram in datagrams:
        sock.sendto(datagram, target)
    got = []
    while True:
        with trio.move_on_after(0.3):
            await trio.lowlevel.wait_readable(sock)
        try:
            got.append(sock.recvfrom(2048))
        except BlockingIOError:
            return got


async def _connect(
    sock: socket.socket, target: Address, client: PeerClient, sources: set[Address]
) -> None:
    """ICE and DTLS from `sock` to `target`; every source the SFU answered from into `sources`."""
    for data, source in await _exchange(sock, target, [client.binding_request()]):
        sources.add(source)
        client.receive_untrusted(data, trio.current_time())
    assert client.mapped_address is not None
    host, port = client.mapped_address
    # A dual-stack endpoint reports an IPv4 peer IPv4-mapped in XOR-MAPPED-ADDRESS.
    mapped = ipaddress.ip_address(host)
    mapped = getattr(mapped, "ipv4_mapped", None) or mapped
    assert (str(mapped), port) == sock.getsockname()
    out = client.start_dtls(trio.current_time())
    for _ in range(20):
        if client.connected:
            return
        replies = await _exchange(sock, target, out)
        out = client.handle_timeout(trio.current_time())
        for data, source in replies:
            sources.add(source)
            if 20 <= data[0] < 64:  # DTLS (RFC 7983); an early PLI to a subscriber is not
                out += client.receive_untrusted(data, trio.current_time())
    raise AssertionError("DTLS did not complete")


def _as_seen(listen: str, addr: Address) -> tuple[object, ...]:
    """An IPv4 peer's address as the endpoint's socket reports it (IPv4-mapped on `::`)."""
    return (f"::ffff:{addr[0]}", addr[1], 0, 0) if listen == "::" else addr


@pytest.mark.parametrize("listen", ["0.0.0.0", "::"])
async def test_a_wildcard_server_answers_from_the_announced_second_address(listen: str) -> None:
    with veth_addresses() as host, trio.fail_after(20):
        # The setting reproduces the bug: a plain wildcard socket's answer to a datagram sent
        # to the secondary address leaves from the primary one.
        plain, client = _udp("0.0.0.0"), _udp(host.primary)
        with plain, client:
            client.sendto(b"ping", (host.secondary, plain.getsockname()[1]))
            await trio.lowlevel.wait_readable(plain)
            _, peer = plain.recvfrom(64)
            plain.sendto(b"pong", peer)
            await trio.lowlevel.wait_readable(client)
            assert client.recvfrom(64)[1][0] == host.primary

        config = MediaConfig(listen=listen, port=0, announced_ip=[host.secondary])
        endpoint = MediaEndpoint(config, SFU_CERT)
        async with trio.open_nursery() as nursery:
            worker = MediaWorker(endpoint)
            await nursery.start(worker.run)
            assert endpoint.candidates() == [(host.secondary, endpoint.port)]
            target = (host.secondary, endpoint.port)
            router = worker.create_router()

            def transport(role: str) -> tuple[WebRtcTransport, PeerClient]:
                t = router.create_transport(role=role, owner=role, certificate=SFU_CERT,
                                            now=trio.current_time())  # fmt: skip
                endpoint.register(t)
                c = PeerClient(CLIENT_CERT, remote_ufrag=t.ice.ufrag, remote_pwd=t.ice.pwd,
                               remote_fingerprint=SFU_CERT.fingerprint())  # fmt: skip
                t.set_remote(c.ufrag, c.pwd, [("sha-256", c.fingerprint)], trio.current_time())
                return t, c

            # The publisher sends from the primary address (the kernel's choice for an answer
            # to it), the subscriber from loopback.
            pub_t, pub = transport(PRODUCER)
            producer = router.create_producer(pub_t, "video", VIDEO, None)
            sub_t, sub = transport(CONSUMER)
            router.create_consumer(producer, sub_t)
            pub_sock, sub_sock = _udp(host.primary), _udp("127.0.0.1")
            with pub_sock, sub_sock:
                sources: set[Address] = set()
                await _connect(pub_sock, target, pub, sources)
                await _connect(sub_sock, target, sub, sources)
                producer.rebuild_targets()
                assert sources == {target}
                for sock in (pub_sock, sub_sock):
                    seen = _as_seen(listen, sock.getsockname())
                    assert endpoint.reply_source(seen) == host.secondary  # type: ignore[arg-type]
                # Media, forwarded to the subscriber, comes from the announced address too.
                assert pub.srtp is not None and sub.srtp is not None
                packets = [rtp.build_rtp(96, i, 3000 * i, VIDEO, bytes(800)) for i in range(5)]
                got = await _exchange(pub_sock, target, [pub.srtp.protect_rtp(p) for p in packets])
                got += await _exchange(sub_sock, target, [])
                media = [(d, s) for d, s in got if 128 <= d[0] < 192 and not 192 <= d[1] <= 223]
                assert [sub.srtp.unprotect_rtp_untrusted(d) for d, _ in media] == packets
                assert {s for _, s in got} == {target}
                # A check sent to the primary address is answered from the primary address.
                again = await _exchange(pub_sock, (host.primary, endpoint.port),
                                        [pub.binding_request()])  # fmt: skip
                assert [s for _, s in again] == [(host.primary, endpoint.port)]
                # (the kernel's own choice for that address: no source is forced any more)
                assert endpoint.reply_source(_as_seen(listen, pub_sock.getsockname())) is None  # type: ignore[arg-type]
            nursery.cancel_scope.cancel()
