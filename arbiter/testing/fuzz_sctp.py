"""Fuzz targets for the data channel parsers (arbiter/sfu/sctp*.py, dcep.py), for
`arbiter.testing.fuzz`.

Seeds are the SCTP packets Chromium, Firefox and aiortc sent the SFU (tests/data/sctp_*.json,
scripts/record_sctp.py) plus DCEP opens. A mutation that breaks the CRC32c stops at the checksum,
so most mutants are re-checksummed (and given the association's verification tag) to reach the
chunk parsers and the association's state machine behind them: `sctp.association` feeds an
established association (replayed from the Chrome recording, replaced when a mutant closed it)
and `dcep.receive` the data channel layer above it.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from random import Random
from typing import Any

from hypothesis import strategies as st

from arbiter.sfu import dcep
from arbiter.sfu import sctp_chunks as c
from arbiter.sfu.sctp import SctpAssociation

from .fuzz_corpus import mutate_bytes

DATA = Path(__file__).resolve().parents[2] / "tests" / "data"
STACKS = ("chrome", "firefox", "aiortc")


def _recording(name: str) -> dict[str, Any]:
    return json.loads((DATA / f"sctp_{name}.json").read_text())  # type: ignore[no-any-return]


def packets_in() -> list[bytes]:
    return [bytes.fromhex(h) for name in STACKS for _, kind, h in _recording(name)["records"]
            if kind == "in"]  # fmt: skip


def rechecksum(packet: bytes) -> bytes:
    if len(packet) < 12:
        return packet
    body = packet[:8] + b"\0\0\0\0" + packet[12:]
    return packet[:8] + c.crc32c(body).to_bytes(4, "little") + packet[12:]


def established_chrome() -> tuple[SctpAssociation, float]:
    """The association of the Chrome recording, replayed up to the peer's first DATA."""
    rec = _recording("chrome")
    association = SctpAssociation(secret=bytes.fromhex(rec["secret"]), rng=Random(rec["seed"]))
    now = rec["start"]
    for offset, kind, value in rec["records"][:4]:
        if kind == "in":
            now = rec["start"] + offset
            association.receive_untrusted(bytes.fromhex(value), now)
    assert association.state == "established"
    return association, now


class InvariantBroken(Exception):
    """Not MalformedInput: the harness reports it as a bug."""


def check_invariants(association: SctpAssociation) -> None:
    """What no input may break: byte counts stay within their bounds, never negative."""
    rx = association._rx  # noqa: SLF001 - the fuzzer looks inside
    flight, buffered = association._flight, association._buffered  # noqa: SLF001
    if flight < 0 or buffered < 0 or flight > buffered:
        raise InvariantBroken(f"flight {flight} buffered {buffered}")
    if rx is not None and not (0 <= rx.buffered <= rx.buffer + 65536 and len(rx.above) <= 4096):
        raise InvariantBroken(f"receive buffer {rx.buffered} above {len(rx.above)}")


def _chunks(seeds: list[bytes], ctype: int) -> list[tuple[int, bytes]]:
    out = [(ch.flags, ch.body) for p in seeds for ch in c.parse_packet_untrusted(p).chunks
           if ch.type == ctype]  # fmt: skip
    return out or [(0, b"\0" * 16)]


def targets(target: Callable[..., Any]) -> list[Any]:
    """The `fuzz.Target`s (built with `target`, the dataclass) of the data channel parsers."""
    seeds = packets_in()
    open_seeds = [dcep.build_open(dcep.Open(t, 256, r, label, proto))
                  for t, r, label, proto in ((0, 0, "chat", ""), (0x81, 3, "x", "p"),
                                             (0x02, 500, "é" * 5, "json"))]  # fmt: skip
    reference = established_chrome()[0]
    # Build stand-alone DATA/SACK/FORWARD-TSN/RE-CONFIG seeds from the builders too.
    built = [
        c.build_packet(5000, 5000, reference.local_tag, [
            c.build_data(c.Data(c.FLAG_BEGIN, 10, 100, 1, 51, b"frag")),
            c.build_forward_tsn(12, {100: 2}),
            c.chunk(c.RECONFIG, 0, c.build_reset_request(c.ResetRequest(5, 4, 9, (0, 2)))),
            c.chunk(c.HEARTBEAT, 0, c.param(1, b"hb")),
            c.chunk(c.SHUTDOWN, 0, struct.pack("!I", 7))]),
        c.build_packet(5000, 5000, reference.local_tag, [
            c.build_sack(c.Sack(3, 1000, [(2, 4), (6, 6)], [1])),
            c.build_data(c.Data(3 | c.FLAG_UNORDERED, 11, 5, 0, 53, b"u"))]),
    ]  # fmt: skip
    packets = seeds + built
    tag = struct.pack("!I", reference.local_tag)

    def packet_mutator(rng: Random) -> bytes:
        data = mutate_bytes(rng, rng.choice(packets), packets)
        roll = rng.random()
        if roll < 0.7 and len(data) >= 12:
            if roll < 0.5:
                data = data[:4] + tag + data[8:]  # the live association's tag
            data = rechecksum(data)
        return data

    def body_mutator(ctype: int) -> Callable[[Random], tuple[int, bytes]]:
        bodies = _chunks(packets, ctype)

        def mutate(rng: Random) -> tuple[int, bytes]:
            flags, body = rng.choice(bodies)
            return rng.randrange(256) if rng.random() < 0.2 else flags, mutate_bytes(
                rng, body, [b for _, b in bodies])

        return mutate

    state: dict[str, Any] = {}

    def association(data: bytes) -> object:
        live = state.get("association")
        if live is None or live.state != "established":
            live, state["now"] = established_chrome()
            state["association"] = live
        state["now"] += 0.001
        state["n"] = n = state.get("n", 0) + 1
        if n % 5 == 0:  # data of ours in flight, so hostile SACKs and FORWARD-TSNs have a target
            live.send(100 + n % 3, 51, b"y" * (1 + n * 37 % 3000), state["now"],
                      max_retransmits=0 if n % 2 else None)  # fmt: skip
        try:
            return live.receive_untrusted(data, state["now"]) + live.handle_timeout(
                state["now"] + 0.3)
        finally:
            check_invariants(live)

    def channels(data: bytes) -> object:
        live = state.get("channels")
        if live is None or live.association.state != "established":
            live = state["channels"] = dcep.DataChannels(established_chrome()[0])
        state["now"] = state.get("now", 0.0) + 0.001
        return live.receive_untrusted(data, state["now"])

    def open_mutator(rng: Random) -> bytes:
        return mutate_bytes(rng, rng.choice(open_seeds), open_seeds)

    raw = st.binary(max_size=1600)
    body = st.tuples(st.integers(0, 255), st.binary(max_size=300))
    shaped = st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=80)),
                      max_size=6).map(lambda chunks: rechecksum(
                          c.build_packet(5000, 5000, reference.local_tag,
                                         [c.chunk(t, f, b) for t, f, b in chunks])))  # fmt: skip
    packet_strategy = raw | shaped | st.sampled_from(packets)
    return [
        target("sctp.parse_packet", c.parse_packet_untrusted, packet_mutator, packet_strategy),
        target("sctp.parse_init", lambda v: c.parse_init_untrusted(v[1]),
               body_mutator(c.INIT), body),
        target("sctp.parse_data", lambda v: c.parse_data_untrusted(*v),
               body_mutator(c.DATA), body),
        target("sctp.parse_sack", lambda v: c.parse_sack_untrusted(v[1]),
               body_mutator(c.SACK), body),
        target("sctp.parse_forward_tsn", lambda v: c.parse_forward_tsn_untrusted(v[1]),
               body_mutator(c.FORWARD_TSN), body),
        target("sctp.parse_reconfig", lambda v: c.parse_reconfig_untrusted(v[1]),
               body_mutator(c.RECONFIG), body),
        target("sctp.association", association, packet_mutator, packet_strategy),
        target("dcep.parse_open", dcep.parse_open_untrusted, open_mutator,
               st.binary(max_size=64) | st.sampled_from(open_seeds)),
        target("dcep.receive", channels, packet_mutator, packet_strategy),
    ]  # fmt: skip
