"""The parser fuzz harness: a target per `*_untrusted` parser of the media plane.

Each target is fed (1) structure-aware mutations of recorded valid inputs (`fuzz_corpus`) and
(2) hypothesis-generated inputs. The contract under test (arbiter/errors.py): a parser raises
`MalformedInput` or returns, nothing else. Shared by scripts/fuzz_parsers.py (large budgets,
a report) and tests/test_fuzz_parsers.py (a small budget, asserted).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from random import Random
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from arbiter.errors import MalformedInput
from arbiter.sfu import rtcp, rtp, sdp, stun
from arbiter.sfu.ice import IceLiteResponder

from . import fuzz_corpus as corpus
from . import rtcp_reader

# -- the harness -----------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    call: Callable[[Any], object]
    mutate: Callable[[Random], Any]  # one structure-aware input
    strategy: st.SearchStrategy[Any]  # hypothesis inputs


@dataclass
class Result:
    name: str
    inputs: int = 0
    malformed: int = 0
    accepted: int = 0
    elapsed: float = 0.0
    exceptions: Counter[str] = field(default_factory=Counter)
    first_input: dict[str, str] = field(default_factory=dict)  # exception type -> input repr

    @property
    def rate(self) -> float:
        return self.inputs / self.elapsed if self.elapsed else 0.0

    @property
    def ok(self) -> bool:
        return set(self.exceptions) <= {"MalformedInput"}


def _feed(target: Target, result: Result, value: Any) -> None:
    result.inputs += 1
    try:
        target.call(value)
    except MalformedInput:
        result.malformed += 1
        result.exceptions["MalformedInput"] += 1
    except Exception as exc:  # noqa: BLE001 - anything else is the bug we are looking for
        name = type(exc).__name__
        result.exceptions[name] += 1
        if name not in result.first_input:
            shown = value.hex() if isinstance(value, bytes) else repr(value)
            result.first_input[name] = f"{shown}  ({exc!r})"
    else:
        result.accepted += 1


def run_target(target: Target, inputs: int, hypothesis_examples: int, seed: int) -> Result:
    """`inputs` mutations of the seeds, then up to `hypothesis_examples` generated inputs."""
    result = Result(target.name)
    rng = Random(f"{seed}:{target.name}")
    start = time.perf_counter()
    for _ in range(inputs):
        _feed(target, result, target.mutate(rng))
    if hypothesis_examples:

        @settings(max_examples=hypothesis_examples, deadline=None, database=None,
                  phases=[Phase.generate], derandomize=True,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(target.strategy)
        def generated(value: Any) -> None:
            _feed(target, result, value)  # never raises: results are counted, not asserted

        generated()
    result.elapsed = time.perf_counter() - start
    return result


# -- targets ---------------------------------------------------------------------------------

BYTES = st.binary(max_size=1600)  # raw datagrams, up to a little over an MTU


def _stun_strategy(seeds: list[bytes]) -> st.SearchStrategy[bytes]:
    """Random bytes, or a STUN header + random attribute TLVs (re-signed half the time)."""
    tlv = st.tuples(st.integers(0, 0xFFFF), st.binary(max_size=80)).map(
        lambda t: t[0].to_bytes(2, "big") + len(t[1]).to_bytes(2, "big") + t[1]
        + b"\0" * (-len(t[1]) % 4))  # fmt: skip
    shaped = st.tuples(st.sampled_from([b"\x00\x01", b"\x01\x01", b"\x01\x11"]),
                       st.binary(min_size=12, max_size=12), st.lists(tlv, max_size=6),
                       st.booleans()).map(corpus.stun_from_parts)  # fmt: skip
    return BYTES | shaped | st.sampled_from(seeds)


def _rtcp_strategy() -> st.SearchStrategy[bytes]:
    header = st.tuples(st.integers(0, 255), st.integers(192, 223), st.binary(max_size=120)).map(
        lambda t: bytes([t[0] | 0x80, t[1]]) + ((len(t[2]) + 3) // 4).to_bytes(2, "big")
        + t[2] + b"\0" * (-len(t[2]) % 4))  # fmt: skip
    return BYTES | st.lists(header, min_size=1, max_size=4).map(b"".join)


def _sdp_strategy(lines: list[str]) -> st.SearchStrategy[str]:
    line = st.sampled_from(lines) | st.text(max_size=60).map(lambda s: "a=" + s)
    return st.text(max_size=2000) | st.lists(line, max_size=40).map(
        lambda ls: "v=0\r\n" + "\r\n".join(ls) + "\r\n")


def _rtcp_parser(parse: Callable[[rtcp.RtcpPacket], object]) -> Callable[[bytes], object]:
    """A parse_* fed the packets iter_packets_untrusted frames, or the raw bytes as one packet
    when they do not frame (the parsers re-read the header and must cope either way)."""

    def call(data: bytes) -> object:
        try:
            packets = rtcp.iter_packets_untrusted(data)
        except MalformedInput:
            packets = [rtcp.RtcpPacket(data[1] if len(data) > 1 else 0,
                                       data[0] & 0x1F if data else 0, 0, 0, data)]  # fmt: skip
        parsed, failure = [], None
        for packet in packets:  # every packet of the compound, not only up to the first bad one
            try:
                parsed.append(parse(packet))
            except MalformedInput as exc:
                failure = exc
        if failure is not None and not parsed:
            raise failure
        return parsed

    call.__name__ = parse.__name__
    return call


def build_targets() -> list[Target]:
    c = corpus.Corpus.load()
    stun_seeds = c.stun_requests + c.stun_responses
    responder = IceLiteResponder(ufrag=c.local_ufrag, pwd=c.local_pwd)
    responder.set_remote(c.remote_ufrag, "x" * 24)
    addr = ("192.0.2.2", 37231)

    def handle(data: bytes) -> object:
        responder.closed = False  # a closed responder rejects everything before parsing
        return responder.handle_request_untrusted(data, addr, 1.0)

    def offer_to_answer(text: str) -> object:
        # The SFU's real path for a producer offer: parse, then answer what it accepted.
        return sdp.build_producer_answer(sdp.parse_offer_untrusted(text), c.local_params)

    targets = [
        Target("stun.read_username", stun.read_username_untrusted,
               c.stun_mutator(stun_seeds), _stun_strategy(stun_seeds)),
        Target("stun.parse_binding_request",
               lambda d: stun.parse_binding_request_untrusted(d, c.local_pwd),
               c.stun_mutator(c.stun_requests), _stun_strategy(c.stun_requests)),
        Target("stun.parse_binding_response",
               lambda d: stun.parse_binding_response_untrusted(d, c.local_pwd),
               c.stun_mutator(c.stun_responses), _stun_strategy(c.stun_responses)),
        Target("ice.handle_request", handle, c.stun_mutator(c.stun_requests),
               _stun_strategy(c.stun_requests)),
        Target("rtp.parse_rtp_header", rtp.parse_rtp_header_untrusted,
               c.rtp_mutator(), BYTES | st.sampled_from(c.rtp_packets)),
        Target("rtp.get_extension", lambda d: rtp.get_extension_untrusted(d, d[-1] & 15 if d else 1),
               c.rtp_mutator(), BYTES | st.sampled_from(c.rtp_packets)),
        Target("rtp.rtx_original_seq", rtp.rtx_original_seq_untrusted,
               c.rtp_mutator(), BYTES | st.sampled_from(c.rtp_packets)),
        Target("rtcp.iter_packets", rtcp.iter_packets_untrusted,
               c.rtcp_mutator(), _rtcp_strategy()),
    ]
    for parse in (rtcp.parse_sender_report_untrusted, rtcp.parse_receiver_report_untrusted,
                  rtcp_reader.parse_sdes_untrusted, rtcp_reader.parse_bye_untrusted,
                  rtcp.keyframe_request_ssrcs_untrusted, rtcp.parse_nack_untrusted,
                  rtcp_reader.parse_remb_untrusted, rtcp_reader.parse_twcc_untrusted):  # fmt: skip
        targets.append(Target(f"rtcp.{parse.__name__.removesuffix('_untrusted')}",
                              _rtcp_parser(parse), c.rtcp_mutator(), _rtcp_strategy()))
    offer_lines = sorted(set(c.offers[0].split("\r\n") + c.offers[1].split("\r\n")))
    targets += [
        Target("sdp.parse_offer", sdp.parse_offer_untrusted, c.sdp_mutator(c.offers),
               _sdp_strategy(offer_lines)),
        Target("sdp.parse_offer+answer", offer_to_answer, c.sdp_mutator(c.offers),
               _sdp_strategy(offer_lines)),
        Target("sdp.parse_answer", sdp.parse_answer_untrusted, c.sdp_mutator([c.answer]),
               _sdp_strategy(c.answer.split("\r\n"))),
        Target("dtls.receive", c.dtls_receiver(), c.dtls_mutator(),
               BYTES | st.sampled_from(c.dtls_records)),
    ]
    from . import fuzz_sctp  # data channels: SCTP chunks, the association, DCEP

    targets += fuzz_sctp.targets(Target)
    for index, profile in enumerate(("gcm", "cm")):
        for rtcp_ in (False, True):
            call, mutate, seeds = c.srtp_target(index, rtcp_)
            name = f"srtp.unprotect_{'rtcp' if rtcp_ else 'rtp'}[{profile}]"
            targets.append(Target(name, call, mutate, BYTES | st.sampled_from(seeds)))
    return targets


# -- reporting -------------------------------------------------------------------------------


def summary_line(r: Result) -> str:
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(r.exceptions.items())) or "none"
    return (f"{r.name:<28} {r.inputs:>8} inputs {r.elapsed:8.1f} s {r.rate:>9,.0f}/s  "
            f"accepted {r.accepted:>7}  exceptions: {kinds}")  # fmt: skip


def as_json(r: Result) -> dict[str, object]:
    return {"name": r.name, "inputs": r.inputs, "accepted": r.accepted, "malformed": r.malformed,
            "elapsed_s": round(r.elapsed, 2), "inputs_per_s": round(r.rate),
            "exceptions": dict(r.exceptions), "first_input": r.first_input}  # fmt: skip
