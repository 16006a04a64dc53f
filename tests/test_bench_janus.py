"""`arbiter bench`'s Janus target end to end: Debian's janus, our sans-IO ICE/DTLS/SRTP as clients.

One synthetic publisher and two synthetic subscribers join a VideoRoom through `JanusSignaling`;
the publisher sends a few hundred Opus and VP8 packets (SRTP-protected by our `SrtpSession`), and
both subscribers must receive every one through Janus with the payload bytes unchanged and
gap-free sequence numbers (Janus rewrites SSRCs and sequence numbers: subscribers learn the SSRCs
from Janus's offer). No aiortc media: this is exactly the path the bench drives.
"""

from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from arbiter.bench import cli, payloads, runner, sdp_client
from arbiter.bench.janus import JANUS_BINARY, JanusServer, JanusSignaling
from arbiter.bench.janus_target import JanusTarget
from arbiter.errors import MalformedInput
from arbiter.sfu import mux, rtp
from arbiter.sfu.client import PeerClient
from arbiter.sfu.dtls import Certificate
from arbiter.sfu.ice import random_pwd, random_ufrag

pytestmark = pytest.mark.bench

OPUS_PT = 111
VP8_PT = 96
PACKETS_PER_KIND = 200
STAMP = struct.Struct("!QQ")  # the bench stamps (index, send time ns) into the last 16 bytes


@pytest.fixture(scope="module")
def janus_installed() -> None:
    """Install Debian's janus when missing and we are root (as scripts/test does for chromium)."""
    if os.access(JANUS_BINARY, os.X_OK):
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("janus is not installed (apt-get install janus)")
    result = subprocess.run(
        "apt-get update -q && apt-get install -y -q --no-install-recommends janus",
        shell=True,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0 or not os.access(JANUS_BINARY, os.X_OK):
        pytest.fail(
            f"apt-get install janus failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )


def vp8_payload(index: int, keyframe: bool, size: int = 400) -> bytes:
    """A VP8 RTP payload that parses: descriptor (S=1, partition 0) + frame tag (+ key header)."""
    descriptor = b"\x10"
    first_partition = 100
    # RFC 6386 9.1 frame tag: bit 0 is 0 for a key frame, show_frame bit 4, partition size above.
    tag = (first_partition << 5) | (1 << 4) | (0 if keyframe else 1)
    header = tag.to_bytes(3, "little")
    if keyframe:
        header += b"\x9d\x01\x2a" + struct.pack("<HH", 320, 240)
    body = bytes((index + i) & 0xFF for i in range(size - len(descriptor) - len(header) - 16))
    return descriptor + header + body + STAMP.pack(index, 0)


def opus_payload(index: int, size: int = 80) -> bytes:
    toc = b"\xfc"  # config 31 (CELT FB 20 ms), stereo, one frame
    body = bytes((3 * index + i) & 0xFF for i in range(size - 1 - 16))
    return toc + body + STAMP.pack(index, 0)


@dataclass
class Leg:
    """One synthetic PeerConnection: a UDP socket driving a PeerClient against Janus."""

    certificate: Certificate
    sock: trio.socket.SocketType = field(init=False)
    client: PeerClient | None = None
    remote_addr: tuple[str, int] | None = None
    received: dict[int, list[bytes]] = field(default_factory=dict)  # SSRC -> plaintext RTP
    rtcp_types: list[int] = field(default_factory=list)
    connected: trio.Event = field(default_factory=trio.Event)

    def __post_init__(self) -> None:
        self.sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.checks_answered = 0

    async def bind(self, ip: str) -> tuple[str, int]:
        # Janus's media address, not 127.0.0.1: libnice never answers checks from loopback
        # towards its non-loopback host candidate (and Janus cannot gather on lo).
        await self.sock.bind((ip, 0))
        return self.sock.getsockname()

    def attach(
        self, remote_sdp: str, *, ufrag: str | None = None, pwd: str | None = None
    ) -> sdp_client.RemoteMedia:
        remote = sdp_client.remote_media_params(remote_sdp)
        self.client = sdp_client.peer_client_for(self.certificate, remote, ufrag=ufrag, pwd=pwd)
        self.remote_addr = remote.candidates[0]
        return remote

    async def run(self) -> None:
        """ICE (checks with USE-CANDIDATE until answered), DTLS in the SDP's role, then SRTP in."""
        assert self.client is not None and self.remote_addr is not None
        client = self.client
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._checks)
            while True:
                data, addr = await self.sock.recvfrom(2048)
                now = trio.current_time()
                kind = mux.classify(data)
                if kind in (mux.STUN, mux.DTLS):
                    had_mapped = client.mapped_address is not None
                    try:
                        # A full agent answers the server's checks too (libnice sends one).
                        out = client.receive_untrusted(data, now, addr)
                    except MalformedInput:
                        continue
                    if data[:2] == b"\x00\x01":  # that was Janus's check: answered
                        self.checks_answered += 1
                        await self.sock.sendto(out[0], addr)
                        continue
                    if not had_mapped and client.mapped_address is not None:
                        # ICE done: a DTLS client speaks first (a server waits for Janus).
                        out += client.start_dtls(now)
                    for datagram in out:
                        await self.sock.sendto(datagram, self.remote_addr)
                    if client.connected:
                        self.connected.set()
                elif kind == mux.RTP and client.srtp is not None:
                    if rtp.is_rtcp(data):
                        try:
                            plain = client.srtp.unprotect_rtcp_untrusted(data)
                        except MalformedInput:
                            continue
                        self.rtcp_types.extend(_rtcp_types(plain))
                    else:
                        plain = client.srtp.unprotect_rtp_untrusted(data)
                        self.received.setdefault(rtp.ssrc_of(plain), []).append(plain)

    async def _checks(self) -> None:
        assert self.client is not None and self.remote_addr is not None
        while not self.connected.is_set():
            # Retransmit checks and DTLS flights until the handshake completes.
            await self.sock.sendto(self.client.binding_request(), self.remote_addr)
            for datagram in self.client.handle_timeout(trio.current_time()):
                await self.sock.sendto(datagram, self.remote_addr)
            with trio.move_on_after(0.1):
                await self.connected.wait()

    async def send_rtp(self, packet: bytes) -> None:
        assert self.client is not None and self.client.srtp is not None
        assert self.remote_addr is not None
        await self.sock.sendto(self.client.srtp.protect_rtp(packet), self.remote_addr)


def _rtcp_types(compound: bytes) -> list[int]:
    types = []
    pos = 0
    while pos + 4 <= len(compound):
        packet_type = compound[pos + 1]
        fmt = compound[pos] & 0x1F
        types.append(packet_type * 100 + fmt if packet_type in (205, 206) else packet_type)
        pos += (struct.unpack_from("!H", compound, pos + 2)[0] + 1) * 4
    return types


async def test_janus_forwards_every_packet_to_two_subscribers(janus_installed: None) -> None:
    certificate = Certificate.generate()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server = JanusServer()
            ws_url = await nursery.start(server.run)
            signaling = await JanusSignaling.connect(ws_url, nursery)
            room = 4242
            await signaling.create_room(room)

            # Publisher: our offer (actpass), Janus answers active -> we are the DTLS server.
            publisher = Leg(certificate)
            local = await publisher.bind(server.media_ip)
            audio_ssrc, video_ssrc = 0x11110001, 0x11110002
            ufrag, pwd = random_ufrag(), random_pwd()
            offer = sdp_client.build_publisher_offer(
                ufrag, pwd, certificate.fingerprint(), audio_ssrc, video_ssrc, candidate=local
            )
            feed, answer = await signaling.publish(room, "publisher", offer)
            remote = publisher.attach(answer, ufrag=ufrag, pwd=pwd)
            assert remote.setup == "active"  # Janus is the DTLS client towards publishers
            assert publisher.client is not None and publisher.client.dtls.role == "server"
            nursery.start_soon(publisher.run)
            await publisher.connected.wait()
            handle = signaling.publisher_handle(feed)
            await signaling.wait_event(handle, lambda e: e.get("janus") == "webrtcup")

            subscribers = []
            for _ in range(2):
                leg = Leg(certificate)
                local = await leg.bind(server.media_ip)
                subscription, sub_offer = await signaling.subscribe(room, feed)
                remote = leg.attach(sub_offer)
                assert remote.setup == "actpass"
                assert leg.client is not None and leg.client.dtls.role == "client"
                sub_answer = sdp_client.build_subscriber_answer(
                    sub_offer,
                    leg.client.ufrag,
                    leg.client.pwd,
                    leg.client.fingerprint,
                    setup="active",
                    candidate=local,
                )
                await signaling.start(subscription, sub_answer)
                nursery.start_soon(leg.run)
                await leg.connected.wait()
                await signaling.wait_event(
                    subscription.handle, lambda e: e.get("janus") == "webrtcup"
                )
                subscribers.append((leg, remote))

            sent: dict[str, list[bytes]] = {"audio": [], "video": []}
            for i in range(PACKETS_PER_KIND):
                video = vp8_payload(i, keyframe=i % 50 == 0)
                audio = opus_payload(i)
                sent["video"].append(video)
                sent["audio"].append(audio)
                await publisher.send_rtp(
                    rtp.build_rtp(VP8_PT, 1000 + i, 3000 * i, video_ssrc, video, marker=True)
                )
                await publisher.send_rtp(
                    rtp.build_rtp(OPUS_PT, 5000 + i, 960 * i, audio_ssrc, audio)
                )
                await trio.sleep(0.002)  # ~500 packets/s per kind: well below any loss

            def complete() -> bool:
                return all(
                    sum(len(v) for v in leg.received.values()) >= 2 * PACKETS_PER_KIND
                    for leg, _ in subscribers
                )

            with trio.move_on_after(5):
                while not complete():
                    await trio.sleep(0.05)

            for leg, remote in subscribers:
                assert set(leg.received) == {remote.ssrcs["audio"][0], remote.ssrcs["video"][0]}
                for kind in ("audio", "video"):
                    packets = leg.received[remote.ssrcs[kind][0]]
                    header = [rtp.parse_rtp_header_untrusted(p) for p in packets]
                    payloads = [p[h.header_length :] for p, h in zip(packets, header, strict=True)]
                    assert len(packets) == PACKETS_PER_KIND, kind
                    # Payload bytes unchanged, in order (the bench's send-time stamp survives).
                    assert payloads == sent[kind], kind
                    seqs = [h.sequence_number for h in header]
                    assert all(
                        (b - a) & 0xFFFF == 1 for a, b in zip(seqs, seqs[1:], strict=False)
                    ), kind
                    # Timestamps are rewritten too (new base) but their spacing is kept.
                    step = 960 if kind == "audio" else 3000
                    stamps = [h.timestamp for h in header]
                    assert all(
                        (b - a) & 0xFFFFFFFF == step
                        for a, b in zip(stamps, stamps[1:], strict=False)
                    ), kind
                    expected_pt = OPUS_PT if kind == "audio" else VP8_PT
                    assert {h.payload_type for h in header} == {expected_pt}

            await signaling.close()
            nursery.cancel_scope.cancel()


def test_janus_config_carries_event_loops(janus_installed: None, tmp_path: Path) -> None:
    """The benchmark's Janus runs as its documentation advises under load: a fixed pool of
    `event_loops` (one per core it is given), not one thread per handle."""
    single = cli.make_target("janus", pin=True)
    assert isinstance(single, JanusTarget) and single.server.event_loops == 1
    jcfg = single.server.write_config(tmp_path).read_text()
    assert "event_loops = 1" in jcfg
    two, _ = cli.two_core_targets(["janus"])
    assert isinstance(two[0], JanusTarget) and two[0].server.event_loops == 2


async def test_janus_subscribers_send_browser_rtcp(janus_installed: None) -> None:
    """Against Janus (which offers transport-wide-cc) subscribers send transport-cc feedback
    as well as receiver reports, and hear Janus's sender reports."""
    target = JanusTarget(event_loops=1)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(target.run)
            result = await runner.run_scenario(target, runner.meeting(2), 1.5, payloads.load())
            nursery.cancel_scope.cancel()
    assert result["loss"] == 0.0 and result["errors"] == []
    assert result["transport_cc"] is True
    counts = result["subscriber_rtcp"]
    assert counts["rr"] >= 2 and counts["pli"] >= 2 and counts["twcc"] >= 10
    assert counts["sr_in"] >= 1  # Janus's SRs arrive and are parsed for LSR/DLSR
