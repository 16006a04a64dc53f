"""The load generator's media engine: one `Leg` per peer connection of a synthetic participant.

A leg is what a browser's RTCPeerConnection does on the wire, built from the SFU's own sans-IO
pieces in the client role (`PeerClient`): connectivity checks with USE-CANDIDATE as the
controlling agent, DTLS, SRTP. Each leg has its own UDP socket, as each browser peer
connection has its own port (the SFU tells transports apart by address).

Publishing legs send recorded Opus (50 packets/s) and VP8 (~1.5 Mbit/s, 30 frames/s) payloads
paced in real time. The last 16 bytes of every payload are overwritten with a stamp: send time
(CLOCK_MONOTONIC ns, shared by every process of this machine), publisher number and packet
counter, so subscribers measure forwarding latency without decoding. SFUs forward payloads
unchanged (Janus rewrites SSRCs and sequence numbers, never payloads).

Subscribing legs count every RTP packet per SSRC from its clear header (RFC 3711 3.1: the
header is not encrypted), including sequence continuity, and decrypt one packet in
`LATENCY_SAMPLE` to read its stamp.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from ..errors import MalformedInput
from ..sfu import mux, rtp
from ..sfu.client import PeerClient
from ..sfu.dtls import Certificate
from . import payloads
from .sdp_client import RemoteMedia, peer_client_for

STAMP = struct.Struct("!QII")  # send time ns, publisher number, counter
LATENCY_SAMPLE = 8
OPUS_PT, VP8_PT = 111, 96
RECV_BUFFER = 4 * 1024 * 1024
CONSENT_INTERVAL = 5.0  # seconds between consent checks (browsers: about 5 s)


@dataclass
class StreamStats:
    """Receive statistics of one SSRC on one subscribing leg."""

    packets: int = 0
    bytes: int = 0
    first_seq: int = -1
    highest: int = -1  # extended highest sequence number
    latencies_ns: list[int] = field(default_factory=list)
    first_at: float = 0.0

    def note(self, seq: int) -> None:
        if self.first_seq < 0:
            self.first_seq = self.highest = seq
            return
        # RFC 3550 A.1: extend the 16-bit sequence number across wraps.
        delta = (seq - self.highest) & 0xFFFF
        if delta < 0x8000:
            self.highest += delta

    @property
    def expected(self) -> int:
        return 0 if self.first_seq < 0 else self.highest - self.first_seq + 1


class Leg:
    """One synthetic peer connection: a UDP socket, ICE + DTLS + SRTP, send or receive."""

    def __init__(self, certificate: Certificate, bind_ip: str = "127.0.0.1") -> None:
        self.certificate = certificate
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
        self.sock.bind((bind_ip, 0))
        self.sock.setblocking(False)
        self.client: PeerClient | None = None
        self.remote: tuple[str, int] | None = None
        self.streams: dict[int, StreamStats] = {}
        self.connected_at = 0.0
        self.first_packet = trio.Event()  # set when the first RTP packet arrives
        # SRTP once connected; identity for the plain relay (the machine's raw ceiling).
        self.protect: Callable[[bytes], bytes] | None = None
        self.unprotect: Callable[[bytes], bytes] | None = None
        self.sent_packets = 0
        self.sent_bytes = 0
        self.sent_by_ssrc: dict[int, int] = {}
        self.closed = False

    @property
    def address(self) -> tuple[str, int]:
        addr = self.sock.getsockname()
        return (addr[0], addr[1])

    def prepare(self, remote: RemoteMedia) -> PeerClient:
        """Set up ICE/DTLS for the server's offer; returns the client (for our answer's SDP)."""
        self.client = peer_client_for(self.certificate, remote)
        self.remote = remote.candidates[0]
        return self.client

    def local_credentials(self) -> PeerClient:
        """A client whose ufrag/pwd/fingerprint go into our offer before the answer is known."""
        if self.client is None:
            self.client = PeerClient(
                self.certificate, remote_ufrag="", remote_pwd="", remote_fingerprint=""
            )
        return self.client

    def attach_remote(self, remote: RemoteMedia) -> None:
        """Our offer went first: keep our credentials, learn the server's (publishers)."""
        mine = self.local_credentials()
        self.client = peer_client_for(self.certificate, remote, ufrag=mine.ufrag, pwd=mine.pwd)
        self.remote = remote.candidates[0]

    async def connect(self) -> None:
        """ICE (a check with USE-CANDIDATE, retried) then the DTLS handshake. Callers bound it.

        Until the peer answers any DTLS, our first flight is resent every 100 ms, as browsers
        do (OpenSSL's own first retransmission waits 1 s): a server whose ICE completes a
        moment after ours (libnice nominates on its triggered check) would otherwise cost every
        connection a second.
        """
        client, remote, sock = self.client, self.remote, self.sock
        assert client is not None and remote is not None
        out = [client.binding_request()]
        next_check = trio.current_time() + 0.2
        started = False
        first_flight: list[bytes] = []
        heard_dtls = False
        while not client.connected:
            for datagram in out:
                sock.sendto(datagram, remote)
            out = []
            try:
                data, source = sock.recvfrom(2048)
            except BlockingIOError:
                data = None
            if data is None:
                with trio.move_on_after(0.02):
                    await trio.lowlevel.wait_readable(sock)
                now = trio.current_time()
                if client.mapped_address is None and now >= next_check:
                    out = [client.binding_request()]
                    next_check = now + 0.2
                elif started and not heard_dtls and first_flight and now >= next_check:
                    out = list(first_flight)
                    next_check = now + 0.1
                elif started:
                    out = client.handle_timeout(now)
                continue
            kind = mux.classify(data)
            if kind not in (mux.STUN, mux.DTLS):
                continue  # early RTP/RTCP before our side completes: not ours yet
            heard_dtls = heard_dtls or kind == mux.DTLS
            try:
                out = client.receive_untrusted(data, trio.current_time(), source)
            except MalformedInput:
                continue
            if client.mapped_address is not None and not started:
                started = True
                first_flight = client.start_dtls(trio.current_time())
                out += first_flight
                next_check = trio.current_time() + 0.1
        for datagram in out:  # as the DTLS server, our last flight completes the peer's side
            sock.sendto(datagram, remote)
        assert client.srtp is not None
        self.protect = client.srtp.protect_rtp
        self.unprotect = client.srtp.unprotect_rtp_untrusted
        self.connected_at = trio.current_time()

    async def connect_plain(self, relay: tuple[str, int], hello: bytes) -> None:
        """The raw-relay target: no ICE, DTLS or SRTP; register with one datagram."""
        self.remote = relay
        self.protect = self.unprotect = _identity
        registered = False
        while not registered:
            self.sock.sendto(hello, relay)
            with trio.move_on_after(0.2):
                await trio.lowlevel.wait_readable(self.sock)
            while (data := self._recv_nowait()) is not None:
                registered = registered or data == b"OK"  # media may already follow it
        self.connected_at = trio.current_time()

    async def keep_consent(self, stop: trio.Event) -> None:
        """A consent check every few seconds, as browsers send (RFC 7675 5.1): without them
        the SFU closes the transport after its consent timeout."""
        if self.client is None or self.remote is None:
            return  # the plain relay has no ICE
        while not stop.is_set():
            with trio.move_on_after(CONSENT_INTERVAL):
                await stop.wait()
            if not self.closed:
                try:
                    self.sock.sendto(self.client.binding_request(), self.remote)
                except OSError:
                    return

    def _recv_nowait(self) -> bytes | None:
        try:
            return self.sock.recv(2048)
        except BlockingIOError:
            return None

    async def publish(
        self,
        recording: payloads.Recording,
        number: int,
        audio_ssrc: int,
        video_ssrc: int,
        until: float,
    ) -> None:
        """Send the recording in real time until `until` (trio clock) or cancellation.

        Counts what the kernel accepted in `sent_packets` / `sent_bytes`."""
        remote, sock, protect = self.remote, self.sock, self.protect
        assert protect is not None and remote is not None
        sendto = sock.sendto
        stamp = STAMP.pack
        monotonic_ns = time.monotonic_ns
        audio, video = recording.audio, recording.video
        start = trio.current_time()
        a_index = v_index = 0
        a_seq = v_seq = 0
        a_ts = v_ts = 0
        counter = 0
        while True:
            a_due = start + a_index * payloads.AUDIO_FRAME_MS / 1000
            v_due = start + v_index / payloads.VIDEO_FPS
            due = min(a_due, v_due)
            if due >= until:
                break
            await trio.sleep_until(due)
            if a_due <= v_due:
                packet = audio[a_index % len(audio)]
                a_ts += 960
                batch = [(OPUS_PT, a_seq, a_ts, audio_ssrc, packet)]
                a_seq += 1
                a_index += 1
            else:
                frame = video[v_index % len(video)]
                v_ts += 3000
                batch = []
                for packet in frame:
                    batch.append((VP8_PT, v_seq, v_ts, video_ssrc, packet))
                    v_seq += 1
                v_index += 1
            for pt, seq, ts, ssrc, packet in batch:
                body = packet.payload
                if len(body) < STAMP.size + 4:
                    body = body + bytes(STAMP.size + 4 - len(body))
                body = body[: -STAMP.size] + stamp(monotonic_ns(), number, counter)
                counter += 1
                datagram = protect(
                    rtp.build_rtp(pt, seq & 0xFFFF, ts, ssrc, body, marker=packet.marker)
                )
                try:
                    sendto(datagram, remote)
                except BlockingIOError:
                    continue  # the kernel's buffer is full: a loss the subscribers will see
                self.sent_packets += 1
                self.sent_bytes += len(datagram)
                self.sent_by_ssrc[ssrc] = self.sent_by_ssrc.get(ssrc, 0) + 1

    async def receive(self, stop: trio.Event) -> None:
        """Count RTP per SSRC until `stop`; decrypt a sample for latency."""
        sock, unprotect = self.sock, self.unprotect
        assert unprotect is not None
        recv = sock.recv
        streams = self.streams
        ssrc_of, seq_of = rtp.ssrc_of, rtp.seq_of
        monotonic_ns = time.monotonic_ns
        sample = 0
        while not stop.is_set():
            while True:
                try:
                    data = recv(2048)
                except BlockingIOError:
                    break
                except OSError:
                    return  # the leg was closed under us
                if len(data) < 12 or not 128 <= data[0] < 192 or 192 <= data[1] <= 223:
                    continue  # RTCP (SR, PLI), STUN or DTLS: not media
                ssrc = ssrc_of(data)
                stats = streams.get(ssrc)
                if stats is None:
                    stats = streams[ssrc] = StreamStats(first_at=trio.current_time())
                    self.first_packet.set()
                stats.packets += 1
                stats.bytes += len(data)
                stats.note(seq_of(data))
                sample += 1
                if sample % LATENCY_SAMPLE == 0:
                    now = monotonic_ns()
                    try:
                        plain = unprotect(data)
                    except MalformedInput:
                        continue
                    if len(plain) < rtp.FIXED_HEADER_LENGTH + STAMP.size:
                        continue  # not one of ours (a padding probe, a foreign packet)
                    sent_ns, _, _ = STAMP.unpack_from(plain, len(plain) - STAMP.size)
                    stats.latencies_ns.append(now - sent_ns)
            with trio.move_on_after(0.25):
                try:
                    await trio.lowlevel.wait_readable(sock)
                except trio.ClosedResourceError:
                    return  # close() woke us: the leg is gone

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            # Wake any task waiting on this socket before the fd number can be reused by a new
            # socket (trio would otherwise see two waiters on one fd: BusyResourceError).
            trio.lowlevel.notify_closing(self.sock)
            self.sock.close()


def _identity(packet: bytes) -> bytes:
    return packet
