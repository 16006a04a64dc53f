"""The SFU's Router and endpoint as connection pairs in memory, no sockets (for tests).

`Harness` wires `PeerClient`s (the browser's role: controlling ICE agent, DTLS client, SRTP) to
the SFU's `WebRtcTransport`s through `MediaEndpoint.dispatch`, and captures every datagram the
SFU sends per destination address; the clock (`now`) is explicit.
"""

from __future__ import annotations

from collections import defaultdict

from arbiter.config import MediaConfig
from arbiter.sfu.client import PeerClient
from arbiter.sfu.dtls import Certificate
from arbiter.sfu.endpoint import MediaEndpoint
from arbiter.sfu.router import Router
from arbiter.sfu.transport import WebRtcTransport

Address = tuple[str, int]
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
        self.router.listener = self  # a RouterListener, as the MediaRoom is
        self.now = 100.0
        self.connected: list[WebRtcTransport] = []
        self.speakers: list[str] = []  # RouterListener.active_speaker calls
        self.layers: list[tuple[str, ...] | None] = []  # RouterListener.layers_wanted calls

    def transport_connected(self, transport: WebRtcTransport) -> None:
        self.connected.append(transport)

    def transport_closed(self, transport: WebRtcTransport) -> None:
        pass

    def active_speaker(self, publisher: str) -> None:
        self.speakers.append(publisher)

    def layers_wanted(self, track: object, rids: tuple[str, ...] | None) -> None:
        self.layers.append(rids)

    def transport(self, role: str, owner: str) -> WebRtcTransport:
        t = self.router.create_transport(role=role, owner=owner, certificate=SFU_CERT, now=self.now)
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
