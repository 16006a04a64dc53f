"""Fuzz `MediaEndpoint.dispatch` of a live in-process server in the middle of a real call.

Two synthetic participants (arbiter.bench, real ICE/DTLS/SRTP) publish to and subscribe from
each other, so the endpoint holds producer and consumer transports with SRTP keys and a router
with producers, consumers and caches. Then `dispatch` is called directly with mutated STUN
(re-signed with the transport's real ice-pwd), DTLS, RTP and RTCP, both raw and *protected with
the participants' real SRTP keys* (an authenticated but hostile peer: the router parses what it
sends), from the participants' addresses and from foreign ones. The contract: `dispatch` never
raises, and its `internal_error` safety net (a bug of ours caught at the last moment) never
fires; the exception it logged is reported by type with the input that caused it.

Run by scripts/fuzz_parsers.py (`--dispatch N`) and tests/test_fuzz_parsers.py.
"""

from __future__ import annotations

import logging
import struct
import tempfile
import time
from pathlib import Path
from random import Random
from typing import Any

import trio
import trio.lowlevel
from pylibsrtp._binding import ffi

from arbiter.sfu import stun
from arbiter.sfu.srtp import SrtpSession

from . import fuzz_corpus as corpus
from . import udp_blast
from .fuzz import Result


class _Collect(logging.Handler):
    """Records the exceptions the endpoint logs from its catch-all `except Exception`."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.types: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.types.append(type(record.exc_info[1]).__name__)


def unlimited(session: SrtpSession) -> SrtpSession:
    """Lift pylibsrtp's 1500-byte buffer (protect refuses plaintext over 1356 bytes) on an
    attacker's session: a browser's libsrtp has no such limit, so an SRTP packet of up to 1500
    bytes on the wire may carry up to 1484 bytes of RTP."""
    tx = session._tx
    tx._cdata = ffi.new("char[]", 4096)
    tx._buffer = ffi.buffer(tx._cdata)
    session.protect_rtp, session.protect_rtcp = tx.protect, tx.protect_rtcp
    return session


def _inputs(call: udp_blast.Call, c: corpus.Corpus) -> Any:
    """A function rng -> (datagram, source address)."""
    pub, sub = call.participants
    pub_leg, sub_leg = pub.publisher_leg, sub.subscriptions[pub.peer_id]
    assert pub_leg is not None and pub_leg.client is not None and sub_leg.client is not None
    # Fresh sessions with the participants' keys: their own tx indexes (see udp_blast).
    pub_tx = unlimited(SrtpSession(pub_leg.client.dtls.srtp_keys))  # type: ignore[arg-type]
    sub_tx = unlimited(SrtpSession(sub_leg.client.dtls.srtp_keys))  # type: ignore[arg-type]
    transports = list(call.endpoint.by_ufrag.values())
    stun_mutators = []
    for t in transports:
        _, seed = stun.build_binding_request(t.ufrag, "fuzzpeer", t.ice.pwd, use_candidate=True,
                                             controlling=True, priority=1 << 30, tie_breaker=7)
        stun_mutators.append(c.stun_mutator([seed], pwd=t.ice.pwd, ufrag=t.ufrag))
    dtls, rtp_m, rtcp_m = c.dtls_mutator(), c.rtp_mutator(), c.rtcp_mutator()
    pub_addr, sub_addr = pub_leg.address, sub_leg.address  # read now: the legs close later
    known = [pub_addr, sub_addr, *[leg.address for leg in sub.subscriptions.values()]]
    ssrcs = [pub.audio_ssrc, pub.video_ssrc, sub.audio_ssrc, sub.video_ssrc]
    seq = [0]

    def as_call_rtp(packet: bytes, rng: Random) -> bytes:
        """Give a mutated RTP packet a call SSRC and a fresh sequence number (mostly)."""
        if len(packet) >= 12 and rng.random() < 0.8:
            seq[0] += 1
            packet = (packet[:2] + struct.pack("!H", seq[0] & 0xFFFF) + packet[4:8]
                      + struct.pack("!I", rng.choice(ssrcs)) + packet[12:])  # fmt: skip
        return packet

    def protect(session: SrtpSession, rtcp_: bool, body: bytes) -> bytes:
        try:
            return session.protect_rtcp(body) if rtcp_ else session.protect_rtp(body)
        except Exception:  # noqa: BLE001 - libsrtp refuses what it cannot frame: send it raw
            return body

    def make(rng: Random) -> tuple[bytes, tuple[str, int]]:
        roll = rng.random()
        addr = rng.choice(known) if rng.random() < 0.85 else ("127.0.0.1", rng.randint(1, 65535))
        if roll < 0.15:
            return rng.choice(stun_mutators)(rng), addr
        if roll < 0.25:
            return dtls(rng), addr
        if roll < 0.50:  # authenticated hostile RTP from the publisher
            return protect(pub_tx, False, as_call_rtp(rtp_m(rng), rng)), pub_addr
        if roll < 0.55:  # authenticated, larger than the SFU can re-protect for subscribers
            base = as_call_rtp(rtp_m(rng), rng)
            size = rng.randint(1300, 1484)
            packet = (base + rng.randbytes(size))[:size]
            return protect(pub_tx, False, packet), pub_addr
        if roll < 0.65:  # authenticated hostile RTCP from the publisher (SR, ...)
            return protect(pub_tx, True, rtcp_m(rng)), pub_addr
        if roll < 0.80:  # authenticated hostile RTCP from a subscriber (PLI, FIR, NACK, ...)
            return protect(sub_tx, True, rtcp_m(rng)), sub_addr
        if roll < 0.90:
            return (rtp_m(rng) if rng.random() < 0.5 else rtcp_m(rng)), addr
        return rng.randbytes(rng.choice((0, 1, 7, 8, 12, 20, 100, 1500, 1501, 2048))), addr

    return make


async def fuzz(n: int, seed: int, tmp: Path) -> Result:
    result = Result("endpoint.dispatch")
    handler = _Collect()
    logger = logging.getLogger("arbiter.sfu.endpoint")
    logger.addHandler(handler)
    try:
        async with udp_blast.live_call(tmp, participants=2) as call:
            make = _inputs(call, corpus.Corpus.load())
            # The synthetic subscribers stop reading: what the SFU forwards to them now is
            # hostile, and the bench's receive loop trusts forwarded payloads (it reads a
            # 16-byte stamp from every sampled packet).
            for p in call.participants:
                p.close_legs()
            await trio.sleep(0.3)
            endpoint = call.endpoint
            rng = Random(f"{seed}:dispatch")
            start = time.perf_counter()
            for i in range(n):
                data, addr = make(rng)
                seen = len(handler.types)
                result.inputs += 1
                try:
                    endpoint.dispatch(data, addr, trio.current_time())
                except Exception as exc:  # noqa: BLE001 - dispatch must never raise
                    name = "raised " + type(exc).__name__
                    result.exceptions[name] += 1
                    result.first_input.setdefault(name, f"{data.hex()} from {addr} ({exc!r})")
                for name in handler.types[seen:]:
                    result.exceptions[f"internal_error {name}"] += 1
                    result.first_input.setdefault(f"internal_error {name}",
                                                  f"{data.hex()} from {addr}")  # fmt: skip
                if i % 256 == 255:
                    await trio.lowlevel.checkpoint()  # the endpoint's writer and timers run too
            result.elapsed = time.perf_counter() - start
            result.accepted = endpoint.counters["rtp_in"] + endpoint.counters["rtcp_in"]
            result.malformed = result.inputs - result.accepted
            print("endpoint.dispatch counters:", dict(sorted(endpoint.counters.items())))
    finally:
        logger.removeHandler(handler)
    return result


def run(n: int, seed: int) -> Result:
    logging.getLogger("arbiter.sfu.endpoint").propagate = False  # one line per crash, not a log
    with tempfile.TemporaryDirectory(prefix="arbiter-fuzz-") as tmp:
        return trio.run(fuzz, n, seed, Path(tmp))
