"""Blast the media port with hostile datagrams during a live call; the call must not notice.

An in-process Arbiter server (`arbiter.testing.running_server`) hosts a call of synthetic
participants (arbiter.bench `ArbiterParticipant`: real ICE, DTLS and SRTP over their own UDP
sockets, each publishing the recorded Opus + VP8 media with exact per-SSRC accounting). While
they publish, `--datagrams` hostile datagrams go to the media port, from other sockets on
127.0.0.1 (and, for the spoofing category, from the participants' own sockets, which is what an
attacker who forges a participant's source address achieves):

    random         random bytes, 0..1600 long
    stun_badmi     Binding request for a call transport's ufrag, MESSAGE-INTEGRITY garbage
    stun_unknown   Binding request for an unknown ufrag, correctly signed
    stun_wrongpwd  Binding request for a call transport's ufrag, signed with a wrong password
    dtls           DTLS records captured from an in-memory handshake, mutated
    srtp_forged    SRTP/SRTCP with the call's SSRCs and random auth tags
    replay         real SRTP packets protected with a participant's keys, replayed
    oversize       1501..4000 bytes
    empty          zero bytes
    spoofed        forged SRTP/SRTCP sent from a participant's own address (source spoofing)

Every datagram's fate is predicted exactly from RFC 7983 and the endpoint's rules, so the
endpoint's per-reason drop counters must equal the prediction. The blast is flow-controlled
(at most `IN_FLIGHT` datagrams ahead of what the endpoint has counted) so the kernel never
drops: the blaster shares the process with the server, as a remote attacker would not, and an
unpaced blaster would only measure the kernel's receive buffer. Kernel drops (RcvbufErrors in
/proc/net/snmp) are reported anyway.

Shared by scripts/udp_blast.py (100,000 datagrams, a report) and tests/test_udp_blast.py
(5,000, asserted); `live_call` also hosts the dispatch fuzzer (`fuzz_dispatch`), and
`served_call`, the same call on a real `arbiter serve` child process, hosts the media-plane
attack tests (tests/test_attack_media.py).
"""

from __future__ import annotations

import socket
import statistics
import struct
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from random import Random
from typing import Any, cast

import trio

from arbiter.bench import payloads
from arbiter.bench.arbiter_target import ArbiterParticipant, ArbiterTarget
from arbiter.bench.participant import join_call
from arbiter.sfu import rtcp, rtp, stun
from arbiter.sfu.dtls import Certificate
from arbiter.sfu.srtp import SrtpSession

from . import fuzz_corpus as corpus
from .serve import served
from .server import make_config, new_room, running_server

CATEGORIES = ("random", "stun_badmi", "stun_unknown", "stun_wrongpwd", "dtls", "srtp_forged",
              "replay", "oversize", "empty", "spoofed")  # fmt: skip
# Drop reasons the blast can produce; legitimate call traffic produces none of them.
BLAST_REASONS = ("oversize", "unknown_protocol", "stun_bad", "stun_unknown_ufrag",
                 "unknown_address", "srtp_auth")  # fmt: skip
IN_FLIGHT = 256  # datagrams ahead of the endpoint's counters (one receive batch)
SENDERS = 8  # attacker sockets


@dataclass
class Blast:
    sent: Counter[str] = field(default_factory=Counter)  # by category
    predicted: Counter[str] = field(default_factory=Counter)  # by drop reason
    seconds: float = 0.0


# -- the live call -----------------------------------------------------------------------------


@dataclass
class Call:
    srv: Any  # `Running` (live_call: in-process) or `serve.Served` (served_call: a child process)
    room: int
    participants: list[ArbiterParticipant]
    nursery: trio.Nursery

    @property
    def endpoint(self) -> Any:
        """The in-process server's media endpoint (live_call only)."""
        return self.srv.server.endpoint

    def legs(self) -> list[Any]:
        out = []
        for p in self.participants:
            out.append(p.publisher_leg)
            out += list(p.subscriptions.values())
        return out


@asynccontextmanager
async def live_call(tmp: Path, participants: int = 3) -> AsyncIterator[Call]:
    """Every participant publishes and subscribes to every other one (n + n(n-1) transports),
    on an in-process server (the blast and the dispatch fuzzer read its endpoint)."""
    async with running_server(make_config(tmp)) as srv, _call(srv, participants) as call:
        yield call


# What make_config relaxes for tests, for a served call: one address creates every room.
SERVED_TOML = """
[rooms]
idle_pool = 0
[limits]
create_room_per_minute = 0
rooms_per_address = 0
"""


@asynccontextmanager
async def served_call(tmp: Path, participants: int = 3, toml: str = "") -> AsyncIterator[Call]:
    """live_call on a real `arbiter serve` child process (`serve.served`, its log kept:
    `call.srv.log_problems()`); what the test learns of the server comes over its sockets
    (`call.srv.counters(...)` reads /metrics)."""
    async with (
        served(tmp, SERVED_TOML + toml, stderr=True) as srv,
        _call(srv, participants) as call,
    ):
        yield call


@asynccontextmanager
async def _call(srv: Any, participants: int) -> AsyncIterator[Call]:
    certificate = Certificate.generate()
    async with trio.open_nursery() as nursery:
        room = await new_room(srv, "blast")
        target = ArbiterTarget()
        target.url = srv.url  # the server under test
        numbers = list(range(1, participants + 1))
        with trio.fail_after(20):
            joined = await join_call(target, room, numbers, certificate, nursery)
        people = cast(list[ArbiterParticipant], joined)
        try:
            yield Call(srv, room, people, nursery)
        finally:
            for p in people:
                p.close_legs()
                for leg in [p.publisher_leg, *p.subscriptions.values()]:
                    if leg is not None:
                        leg.close()
            nursery.cancel_scope.cancel()


def call_figures(call: Call) -> dict[str, Any]:
    """Per publisher SSRC: sent vs received by every subscriber, and forwarding latency."""
    lost = 0
    gaps = 0
    received = 0
    latencies: list[int] = []
    for pub in call.participants:
        assert pub.publisher_leg is not None
        sent = pub.publisher_leg.sent_by_ssrc
        for sub in call.participants:
            if sub is pub:
                continue
            streams = sub.subscriptions[pub.peer_id].streams
            for ssrc, count in sent.items():
                s = streams.get(ssrc)
                got = s.packets if s else 0
                received += got
                lost += count - got
                gaps += (s.expected - s.packets) if s else 0
                latencies += s.latencies_ns if s else []
    latencies.sort()

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] / 1e6, 3)

    return {"packets_received": received, "packets_lost": lost, "sequence_gaps": gaps,
            "latency_samples": len(latencies),
            "latency_ms_p50": pct(0.5) if latencies else None,
            "latency_ms_p99": pct(0.99) if latencies else None,
            "latency_ms_max": pct(1.0) if latencies else None,
            "latency_ms_mean": round(statistics.fmean(latencies) / 1e6, 3) if latencies else None}


# -- hostile datagrams -------------------------------------------------------------------------


def rfc7983_reason(data: bytes) -> str:
    """What the endpoint must count for a datagram from an address no STUN check proved."""
    if len(data) > 1500:
        return "oversize"
    if len(data) < 8:
        return "unknown_protocol"
    first = data[0]
    if first <= 3:
        return "stun_bad"  # not a parseable Binding request with a USERNAME
    if 20 <= first <= 63 or 128 <= first <= 191:
        return "unknown_address"  # DTLS / SRTP from an address no check validated
    return "unknown_protocol"


class Generator:
    """Seeded hostile datagrams for one call, each with its predicted drop reason."""

    def __init__(self, call: Call, seed: int) -> None:
        self.rng = Random(seed)
        self.corpus = corpus.Corpus.load()
        self.transports = [t for t in _transports(call)]
        self.ssrcs = [s for p in call.participants for s in (p.audio_ssrc, p.video_ssrc)]
        self.dtls_mutate = self.corpus.dtls_mutator()
        # Genuine packets, protected with a participant's real keys, to replay.
        leg = call.participants[0].publisher_leg
        assert leg is not None and leg.client is not None and leg.client.dtls.srtp_keys is not None
        # A second session with the participant's keys: its own tx index, so protecting these
        # does not disturb the live publisher's (libsrtp refuses indexes far behind its own).
        tx = SrtpSession(leg.client.dtls.srtp_keys)
        recording = payloads.load()
        self.replays = [tx.protect_rtp(rtp.build_rtp(111, 30000 + i, i * 960,
                                                     call.participants[0].audio_ssrc,
                                                     recording.audio[i].payload))
                        for i in range(20)]  # fmt: skip
        self.replays.append(tx.protect_rtcp(rtcp.build_sender_report(
            call.participants[0].audio_ssrc, rtcp.ntp_from_unix(time.time()), 1, 2, 3)))
        self.spoof_legs = call.legs()

    def make(self, category: str) -> tuple[bytes, str, Any]:
        """(datagram, predicted reason, leg to send from or None for an attacker socket)."""
        rng = self.rng
        if category == "random":
            data = rng.randbytes(rng.randrange(1601))
            return data, rfc7983_reason(data), None
        if category in ("stun_badmi", "stun_wrongpwd", "stun_unknown"):
            t = rng.choice(self.transports)
            ufrag = "UnknownUfrag" + rng.randbytes(4).hex() if category == "stun_unknown" else t.ufrag
            _, data = stun.build_binding_request(
                ufrag, "attacker", t.ice.pwd if category == "stun_unknown" else "wrong" * 5,
                use_candidate=rng.random() < 0.5, controlling=True, priority=1 << 30,
                tie_breaker=rng.randrange(1 << 64))  # fmt: skip
            if category == "stun_badmi":  # garbage HMAC, valid FINGERPRINT after it
                body = data[:-32] if data[-8:-4] == b"\x80\x28\x00\x04" else data
                body = body + b"\x00\x08\x00\x14" + rng.randbytes(20)
                data = stun_with_fingerprint(body)
            reason = "stun_unknown_ufrag" if category == "stun_unknown" else "stun_bad"
            return data, reason, None
        if category == "dtls":
            data = self.dtls_mutate(rng)
            return data, rfc7983_reason(data), None
        if category in ("srtp_forged", "spoofed"):
            data = self.forged_srtp()
            if category == "srtp_forged":
                return data, "unknown_address", None
            return data, "srtp_auth", rng.choice(self.spoof_legs)
        if category == "replay":
            return rng.choice(self.replays), "unknown_address", None
        if category == "oversize":
            return rng.randbytes(rng.randint(1501, 4000)), "oversize", None
        return b"", "unknown_protocol", None

    def forged_srtp(self) -> bytes:
        """RTP or RTCP with a call SSRC, an index far ahead of the genuine one (so libsrtp's
        replay check passes and it reaches authentication) and a random tag."""
        rng = self.rng
        ssrc = rng.choice(self.ssrcs)
        if rng.random() < 0.7:
            header = struct.pack("!BBHII", 0x80, rng.choice((96, 111)), rng.randint(20000, 30000),
                                 rng.randrange(1 << 32), ssrc)  # fmt: skip
            return header + rng.randbytes(rng.randint(16, 1200))
        body = struct.pack("!BBHI", 0x80, 200, 6, ssrc) + rng.randbytes(20)
        # SRTCP trailer (RFC 3711 3.4): E flag + 31-bit index far ahead, then a random tag.
        index = (1 << 31) | rng.randint(1 << 20, 1 << 30)
        return body + struct.pack("!I", index) + rng.randbytes(rng.choice((10, 16)))


def stun_with_fingerprint(body: bytes) -> bytes:
    from aioice import stun as aioice_stun

    body = aioice_stun.set_body_length(body, len(body) - 20 + 8)
    crc = aioice_stun.message_fingerprint(body)
    return body + b"\x80\x28\x00\x04" + struct.pack("!I", crc)


def _transports(call: Call) -> list[Any]:
    endpoint = call.endpoint
    return list(endpoint.by_ufrag.values())


def kernel_udp_drops() -> int:
    """RcvbufErrors from /proc/net/snmp: datagrams the kernel dropped for a full buffer."""
    try:
        lines = [line.split() for line in Path("/proc/net/snmp").read_text().splitlines()
                 if line.startswith("Udp:")]  # fmt: skip
        return int(lines[1][lines[0].index("RcvbufErrors")])
    except (OSError, ValueError, IndexError):
        return -1


async def blast(call: Call, datagrams: int, seed: int) -> Blast:
    """Send `datagrams` hostile datagrams round-robin over the categories, flow-controlled."""
    endpoint = call.endpoint
    target = ("127.0.0.1", endpoint.port)
    gen = Generator(call, seed)
    counters = endpoint.counters
    baseline = sum(counters[r] for r in BLAST_REASONS)
    socks = []
    for _ in range(SENDERS):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    result = Blast()
    start = trio.current_time()
    try:
        for i in range(datagrams):
            category = CATEGORIES[i % len(CATEGORIES)]
            data, reason, leg = gen.make(category)
            sock = leg.sock if leg is not None else socks[i % SENDERS]
            while i - (sum(counters[r] for r in BLAST_REASONS) - baseline) >= IN_FLIGHT:
                await trio.lowlevel.checkpoint()  # let the endpoint drain its socket
            sock.sendto(data, target)
            result.sent[category] += 1
            result.predicted[reason] += 1
        with trio.fail_after(10):
            while sum(counters[r] for r in BLAST_REASONS) - baseline < datagrams:
                await trio.sleep(0.01)
    finally:
        for s in socks:
            s.close()
    result.seconds = trio.current_time() - start
    return result


async def run(datagrams: int, participants: int, seed: int, tmp: Path) -> dict[str, Any]:
    recording = payloads.load()
    async with live_call(tmp, participants) as call:
        endpoint = call.endpoint
        before = Counter(endpoint.counters)
        transports = endpoint.transport_count()
        kernel0 = kernel_udp_drops()
        cpu0 = time.process_time()
        # Publish for the whole blast: start, blast, then stop publishing and let it drain.
        stop_at = trio.current_time() + 3600
        async with trio.open_nursery() as publishers:
            for p in call.participants:
                assert p.publisher_leg is not None
                publishers.start_soon(p.publisher_leg.publish, recording, p.number, p.audio_ssrc,
                                      p.video_ssrc, stop_at)  # fmt: skip
            await trio.sleep(0.5)
            result = await blast(call, datagrams, seed)
            await trio.sleep(0.5)
            publishers.cancel_scope.cancel()
        await trio.sleep(0.5)  # the last forwarded packets arrive
        cpu = time.process_time() - cpu0
        delta = Counter(endpoint.counters)
        delta.subtract(before)
        figures = call_figures(call)
        closed = [repr(t) for t in _transports(call) if t.closed]
        return {
            "datagrams": datagrams, "participants": participants,
            "blast_seconds": round(result.seconds, 2),
            "blast_rate": round(datagrams / result.seconds) if result.seconds else None,
            "process_cpu_seconds": round(cpu, 2),
            "sent_by_category": dict(result.sent),
            "predicted_by_reason": dict(result.predicted),
            "counted_by_reason": {r: delta[r] for r in BLAST_REASONS},
            "other_counters": {k: v for k, v in delta.items() if k not in BLAST_REASONS and v},
            "transports_before": transports, "transports_after": endpoint.transport_count(),
            "transports_closed": closed,
            "participant_errors": [p.errors for p in call.participants if p.errors],
            "websocket_closes": [p.close_code for p in call.participants if p.close_code],
            "kernel_rcvbuf_drops": kernel_udp_drops() - kernel0 if kernel0 >= 0 else None,
            "call": figures,
        }
