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
`LATENCY_SAMPLE` to read its stamp. They send back what a browser sends (`feedback.py`:
receiver reports every second, NACKs for missing video packets, a PLI per video stream at start,
transport-cc feedback where the server's SDP negotiates it) and read the server's sender
reports for the LSR/DLSR of their receiver reports. Publishing legs send a sender report and
SDES for their two streams every second, as browsers do.
"""

from __future__ import annotations

import random
import socket
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import trio

from ..errors import MalformedInput
from ..sfu import mux, rtcp, rtp
from ..sfu.client import PeerClient
from ..sfu.dtls import Certificate
from . import feedback, payloads
from .feedback import ReceptionState
from .sdp_client import RemoteMedia, peer_client_for
from .simulcast import TAG_SHIFT, TAGS, TWCC_EXT, VideoLayer, extension_block

STAMP = struct.Struct("!QII")  # send time ns, publisher number | layer tag << 24, counter
_RTP_HEADER = struct.Struct("!BBHII")  # RFC 3550 5.1 fixed header
_U16 = struct.Struct("!H")
_TWCC_ELEMENT = bytes([(TWCC_EXT << 4) | 1])  # RFC 8285 4.2: id, length 2 - 1
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
    # Sampled packets (the LATENCY_SAMPLE ones) per stamp tag: 0 plain, 1 + simulcast layer.
    layers: list[int] = field(default_factory=lambda: [0] * TAGS)
    # Extended seq -> [first noticed, last NACKed] (0.0: not yet), kept for video streams only.
    missing: dict[int, list[float]] | None = None

    def note(self, seq: int) -> None:
        if self.first_seq < 0:
            self.first_seq = self.highest = seq
            return
        # RFC 3550 A.1: extend the 16-bit sequence number across wraps.
        delta = (seq - self.highest) & 0xFFFF
        if delta < 0x8000:
            missing = self.missing
            if delta > 1 and missing is not None and delta < 512:
                for ext in range(self.highest + 1, self.highest + delta):
                    missing[ext] = [0.0, 0.0]
            self.highest += delta
        elif self.missing:  # a late or retransmitted packet: no longer missing
            self.missing.pop(self.highest - ((self.highest - seq) & 0xFFFF), None)

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
        # What a browser's receiver sends back (feedback.py); off for the plain relay.
        self.rtcp_ssrc = random.getrandbits(32) | 1
        self.send_feedback = True
        self.twcc_id: int | None = None  # the transport-wide-cc extension id, when negotiated
        self.reception: dict[int, ReceptionState] = {}
        self.twcc_arrivals: list[tuple[int, float]] = []
        self.pli_pending: list[int] = []
        self.drop_one_in = 0  # tests: drop every Nth media packet on arrival (a lossy link)
        # Publishing: the rids the SFU last said anyone receives (a `layers` frame), None: all.
        self.active_rids: set[str] | None = None
        # Subscribing: the SSRCs the server's offer announced, per kind ("audio", "video").
        self.offered: dict[str, list[int]] = {}
        self.rtcp_counts: dict[str, int] = {"rr": 0, "nack": 0, "nacked_seqs": 0, "pli": 0,
                                            "twcc": 0, "sr_in": 0, "sr_out": 0}  # fmt: skip

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
        *,
        layers: Sequence[VideoLayer] | None = None,
        transport_cc: bool = False,
    ) -> None:
        """Send the recording in real time until `until` (trio clock) or cancellation.

        `layers`: the video streams to send (simulcast.py); by default the whole recording on
        `video_ssrc`. A layer with a rid is sent only while `active_rids` (the SFU's last
        `layers` frame; None: not told yet) names it, and resumes at a keyframe, as a browser's
        encoder does. `transport_cc`: every packet (audio too) carries the next transport-wide
        sequence number of this leg (draft-holmer-rmcat-transport-wide-cc-extensions-01 section
        2, extension id TWCC_EXT), as Chrome sends them. Counts what the kernel accepted in
        `sent_packets` / `sent_bytes`."""
        remote, sock, protect = self.remote, self.sock, self.protect
        assert protect is not None and remote is not None
        if layers is None:
            layers = [VideoLayer(ssrc=video_ssrc, step=1, frames=recording.video)]
        sendto = sock.sendto
        stamp = STAMP.pack
        header = _RTP_HEADER.pack
        monotonic_ns = time.monotonic_ns
        audio = recording.audio
        start = trio.current_time()
        a_index = v_index = 0
        a_seq = 0
        a_ts = v_ts = 0
        seqs = [0] * len(layers)
        twcc_seq = 0
        sending = [True] * len(layers)  # False: stopped, waiting for a keyframe to resume
        counter = 0
        srtcp = self.client.srtp.protect_rtcp if self.client and self.client.srtp else None
        next_sr = start + 1.0
        while True:
            a_due = start + a_index * payloads.AUDIO_FRAME_MS / 1000
            v_due = start + v_index / payloads.VIDEO_FPS
            due = min(a_due, v_due)
            if due >= until:
                break
            await trio.sleep_until(due)
            if srtcp is not None and due >= next_sr:
                next_sr += 1.0
                self._sender_report(srtcp, [(audio_ssrc, a_ts)] + [
                    (layer.ssrc, (v_ts + layer.timestamp_origin) & 0xFFFFFFFF) for layer in layers
                ])  # fmt: skip
            batch: list[tuple[int, int, int, int, bytes, payloads.Packet, int]] = []
            if a_due <= v_due:
                packet = audio[a_index % len(audio)]
                a_ts += 960
                batch.append((OPUS_PT, a_seq, a_ts, audio_ssrc, b"", packet, 0))
                a_seq += 1
                a_index += 1
            else:
                v_ts += 3000
                active = self.active_rids
                for i, layer in enumerate(layers):
                    if v_index % layer.step:
                        continue
                    frame = layer.frames[v_index % len(layer.frames)]
                    if layer.rid is not None and active is not None and layer.rid not in active:
                        sending[i] = False
                        continue
                    if not sending[i]:
                        if v_index % len(layer.frames) not in layer.keyframes:
                            continue  # an encoder turned back on starts with a keyframe
                        sending[i] = True
                    ts = (v_ts + layer.timestamp_origin) & 0xFFFFFFFF
                    for packet in frame:
                        batch.append((VP8_PT, seqs[i], ts, layer.ssrc, layer.elements, packet,
                                      layer.tag))  # fmt: skip
                        seqs[i] += 1
                v_index += 1
            for pt, seq, ts, ssrc, elements, packet, tag in batch:
                if transport_cc:
                    elements = elements + _TWCC_ELEMENT + _U16.pack(twcc_seq & 0xFFFF)
                    twcc_seq += 1
                extension = extension_block(elements)
                body = packet.payload
                if len(body) < STAMP.size + 4:
                    body = body + bytes(STAMP.size + 4 - len(body))
                body = body[: -STAMP.size] + stamp(
                    monotonic_ns(), number | tag << TAG_SHIFT, counter
                )
                counter += 1
                first = 0x90 if extension else 0x80  # RFC 3550 5.1: V=2, X when extended
                marker = 0x80 if packet.marker else 0
                datagram = protect(
                    header(first, marker | pt, seq & 0xFFFF, ts, ssrc) + extension + body
                )
                try:
                    sendto(datagram, remote)
                except BlockingIOError:
                    continue  # the kernel's buffer is full: a loss the subscribers will see
                self.sent_packets += 1
                self.sent_bytes += len(datagram)
                self.sent_by_ssrc[ssrc] = self.sent_by_ssrc.get(ssrc, 0) + 1

    def _sender_report(self, srtcp: Callable[[bytes], bytes],
                       streams: list[tuple[int, int]]) -> None:  # fmt: skip
        """SR + SDES for each stream (one compound each), as a browser sends."""
        ntp = feedback.ntp_now()
        for ssrc, ts in streams:
            sent = self.sent_by_ssrc.get(ssrc, 0)
            if not sent:
                continue  # a layer not sent yet (the SFU wants none of it)
            compound = rtcp.build_sender_report(ssrc, ntp, ts, sent, sent * 1000, []) + \
                rtcp.build_sdes(ssrc, "bench")  # fmt: skip
            self._send_rtcp(srtcp, compound)
            self.rtcp_counts["sr_out"] += 1

    def _send_rtcp(self, srtcp: Callable[[bytes], bytes], compound: bytes) -> None:
        if self.closed or self.remote is None:
            return
        try:
            self.sock.sendto(srtcp(compound), self.remote)
        except OSError:
            pass  # a full buffer or a closed leg: a lost report, as on a real link

    def _on_rtcp(self, data: bytes, now: float) -> None:
        """A sender report's NTP time for the LSR/DLSR of our next receiver report."""
        client = self.client
        if client is None or client.srtp is None:
            return
        try:
            plain = client.srtp.unprotect_rtcp_untrusted(data)
            packets = rtcp.iter_packets_untrusted(plain)
        except MalformedInput:
            return
        for pkt in packets:
            if pkt.packet_type != rtcp.PT_SR:
                continue
            try:
                sr = rtcp.parse_sender_report_untrusted(pkt)
            except MalformedInput:
                continue
            self.rtcp_counts["sr_in"] += 1
            state = self.reception.get(sr.ssrc)
            if state is not None:
                state.last_sr = rtcp.ntp_middle32(sr.ntp_timestamp)
                state.last_sr_at = now

    async def feedback(self, stop: trio.Event) -> None:
        """The subscriber's RTCP (feedback.py): NACK and PLI at 20 ms ticks, transport-cc every
        100 ms where negotiated, a receiver report (with SDES) every second."""
        client = self.client
        if client is None or client.srtp is None or not self.send_feedback:
            return  # the plain relay (no SRTCP), or not connected: nothing a browser would send
        srtcp = client.srtp.protect_rtcp
        me = self.rtcp_ssrc
        counts = self.rtcp_counts
        next_rr = time.monotonic() + feedback.RR_INTERVAL
        next_twcc = time.monotonic() + feedback.TWCC_INTERVAL
        twcc_count = 0
        empty_rr = rtcp.build_receiver_report(me, [])
        while not stop.is_set() and not self.closed:
            with trio.move_on_after(feedback.NACK_TICK):
                await stop.wait()
            now = time.monotonic()
            out = b""
            while self.pli_pending:
                out += rtcp.build_pli(me, self.pli_pending.pop())
                counts["pli"] += 1
            for ssrc, stats in self.streams.items():
                missing = stats.missing
                if not missing:
                    continue
                ask = []
                for ext, times in list(missing.items()):
                    if times[0] == 0.0:
                        times[0] = now
                    elif now - times[0] > feedback.NACK_GIVE_UP:
                        del missing[ext]
                        continue
                    if times[1] == 0.0 or now - times[1] >= feedback.NACK_REPEAT:
                        times[1] = now
                        ask.append(ext & 0xFFFF)
                if ask:
                    out += rtcp.build_nack(me, ssrc, ask)
                    counts["nack"] += 1
                    counts["nacked_seqs"] += len(ask)
            if self.twcc_id is not None and now >= next_twcc:
                next_twcc = now + feedback.TWCC_INTERVAL
                arrivals = self.twcc_arrivals[:]
                self.twcc_arrivals.clear()  # the receive task holds this same list
                media = next(iter(self.streams), 0)
                twcc = feedback.build_twcc(me, media, twcc_count, arrivals)
                if twcc is not None:
                    twcc_count += 1
                    out += twcc
                    counts["twcc"] += 1
            if now >= next_rr:
                next_rr = now + feedback.RR_INTERVAL
                blocks = [
                    feedback.block(
                        ssrc, s.packets, s.expected, s.highest, self.reception[ssrc], now
                    )  # fmt: skip
                    for ssrc, s in self.streams.items()
                    if ssrc in self.reception
                ]
                self._send_rtcp(srtcp, rtcp.build_receiver_report(me, blocks)
                                + rtcp.build_sdes(me, "bench"))  # fmt: skip
                counts["rr"] += 1
            if out:  # feedback goes in a compound that starts with a report (RFC 3550 6.1)
                self._send_rtcp(srtcp, empty_rr + out)

    async def receive(self, stop: trio.Event) -> None:
        """Count RTP per SSRC until `stop`; decrypt a sample for latency."""
        sock, unprotect = self.sock, self.unprotect
        assert unprotect is not None
        recv = sock.recv
        streams = self.streams
        ssrc_of, seq_of = rtp.ssrc_of, rtp.seq_of
        monotonic_ns = time.monotonic_ns
        monotonic = time.monotonic
        reception = self.reception
        respond = self.send_feedback and self.client is not None
        twcc_id = self.twcc_id if respond else None
        arrivals = self.twcc_arrivals
        timestamp_of = struct.Struct("!I").unpack_from
        drop_one_in, arrived = self.drop_one_in, 0
        sample = 0
        while not stop.is_set():
            while True:
                try:
                    data = recv(2048)
                except BlockingIOError:
                    break
                except OSError:
                    return  # the leg was closed under us
                if len(data) < 12 or not 128 <= data[0] < 192:
                    continue  # STUN or DTLS: not media
                if 192 <= data[1] <= 223:
                    if respond:
                        self._on_rtcp(data, monotonic())
                    continue
                if drop_one_in:
                    arrived += 1
                    if arrived % drop_one_in == 0:
                        continue
                ssrc = ssrc_of(data)
                stats = streams.get(ssrc)
                if stats is None:
                    stats = streams[ssrc] = StreamStats(first_at=trio.current_time())
                    if respond:
                        video = data[1] & 0x7F != OPUS_PT
                        if video:
                            stats.missing = {}
                            self.pli_pending.append(ssrc)
                        clock = feedback.VIDEO_CLOCK if video else feedback.AUDIO_CLOCK
                        reception[ssrc] = ReceptionState(clock, video)
                    self.first_packet.set()
                stats.packets += 1
                stats.bytes += len(data)
                stats.note(seq_of(data))
                if respond:
                    now = monotonic()
                    reception[ssrc].arrival(timestamp_of(data, 4)[0], now)
                    if twcc_id is not None:
                        tseq = feedback.transport_seq(data, twcc_id)
                        if tseq is not None:
                            arrivals.append((tseq, now))
                sample += 1
                if sample % LATENCY_SAMPLE == 0:
                    now = monotonic_ns()
                    try:
                        plain = unprotect(data)
                    except MalformedInput:
                        continue
                    if len(plain) < rtp.FIXED_HEADER_LENGTH + STAMP.size:
                        continue  # not one of ours (a padding probe, a foreign packet)
                    sent_ns, who, _ = STAMP.unpack_from(plain, len(plain) - STAMP.size)
                    stats.latencies_ns.append(now - sent_ns)
                    tag = who >> TAG_SHIFT
                    if tag < TAGS:
                        stats.layers[tag] += 1
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
