"""The parser fuzz harness (arbiter.testing.fuzz, which scripts/fuzz_parsers.py runs) with a
small budget, plus the regressions it and the UDP blast found.

Each `*_untrusted` parser of arbiter/sfu gets 300 structure-aware mutations of recorded inputs
and 100 hypothesis examples and may only return or raise MalformedInput; `dispatch` of a live
endpoint gets 1,500 inputs and may neither raise nor reach its internal_error net.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from arbiter.errors import MalformedInput
from arbiter.sfu import rtp
from arbiter.sfu.dtls import SRTP_PROFILES, SrtpKeys
from arbiter.sfu.router import MAX_FORWARD_RTP
from arbiter.sfu.srtp import REPLAY_RESET_THRESHOLD, SrtpSession
from arbiter.testing import fuzz, fuzz_dispatch, udp_blast

TARGETS = {t.name: t for t in fuzz.build_targets()}
# Targets whose valid seeds survive often enough that 400 inputs always accept some: proof
# the mutators reach past the first check instead of feeding only garbage.
_RARE = {"rtcp.parse_sdes"}


def test_every_untrusted_parser_has_a_target() -> None:
    names = set(TARGETS)
    for required in ("stun.read_username", "stun.parse_binding_request",
                     "stun.parse_binding_response", "ice.handle_request", "rtp.parse_rtp_header",
                     "rtp.get_extension", "rtp.rtx_original_seq", "rtcp.iter_packets",
                     "rtcp.parse_sender_report", "rtcp.parse_receiver_report", "rtcp.parse_sdes",
                     "rtcp.parse_bye", "rtcp.keyframe_request_ssrcs", "rtcp.parse_nack",
                     "rtcp.parse_remb", "rtcp.parse_twcc", "sdp.parse_offer", "sdp.parse_answer",
                     "dtls.receive", "srtp.unprotect_rtp[gcm]", "srtp.unprotect_rtcp[gcm]",
                     "srtp.unprotect_rtp[cm]", "srtp.unprotect_rtcp[cm]", "sctp.parse_packet",
                     "sctp.parse_init", "sctp.parse_data", "sctp.parse_sack",
                     "sctp.parse_forward_tsn", "sctp.parse_reconfig", "sctp.association",
                     "dcep.parse_open", "dcep.receive"):  # fmt: skip
        assert required in names


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_parser_raises_only_malformed_input(name: str) -> None:
    result = fuzz.run_target(TARGETS[name], 300, 100, seed=1)
    assert result.inputs == 400
    assert result.first_input == {}
    assert set(result.exceptions) <= {"MalformedInput"}
    assert result.malformed + result.accepted == result.inputs
    assert result.malformed > 0  # the mutations do break things
    if name not in _RARE:
        assert result.accepted > 0


def test_harness_reports_a_foreign_exception() -> None:
    """The harness itself can fail: a parser that raises KeyError is caught and recorded."""

    def buggy(data: bytes) -> object:
        if data[:1] == b"\x80":
            raise KeyError("bug")
        raise MalformedInput("no")

    target = fuzz.Target("buggy", buggy, lambda rng: bytes([0x80 | rng.randrange(2)]), fuzz.BYTES)
    result = fuzz.run_target(target, 50, 0, seed=1)
    assert not result.ok
    assert result.exceptions["KeyError"] + result.exceptions["MalformedInput"] == 50
    assert result.first_input["KeyError"] == "80  (KeyError('bug'))"


def test_dispatch_of_a_live_endpoint_never_raises() -> None:
    result = fuzz_dispatch.run(1_500, seed=1)
    assert result.inputs == 1_500
    assert dict(result.exceptions) == {}
    assert result.accepted > 100  # authenticated hostile packets did reach the router


async def test_authentic_rtp_too_long_to_reprotect_is_dropped_as_oversize(tmp_path: Path) -> None:
    """Regression (fuzz_dispatch): an authentic 1357..1484-byte RTP packet from a publisher
    made Router.on_rtp's per-subscriber protect raise ValueError ("packet is too long"),
    caught as internal_error with a logged traceback per packet."""
    async with udp_blast.live_call(tmp_path, participants=2) as call:
        pub, sub = call.participants
        assert pub.publisher_leg is not None and pub.publisher_leg.client is not None
        keys = pub.publisher_leg.client.dtls.srtp_keys
        assert keys is not None
        attacker = fuzz_dispatch.unlimited(SrtpSession(keys))
        counters = call.endpoint.counters
        leg = sub.subscriptions[pub.peer_id]
        for seq, size in ((1, MAX_FORWARD_RTP), (2, MAX_FORWARD_RTP + 1), (3, 1484)):
            plain = rtp.build_rtp(96, seq, 0, pub.video_ssrc, bytes(size - 12))
            before = (counters["rtp_in"], counters["oversize"])
            call.endpoint.dispatch(attacker.protect_rtp(plain), pub.publisher_leg.address,
                                   trio.current_time())  # fmt: skip
            forwarded = size <= MAX_FORWARD_RTP
            assert (counters["rtp_in"], counters["oversize"]) == (
                before[0] + forwarded,
                before[1] + (not forwarded),
            )
        assert counters["internal_error"] == 0
        with trio.fail_after(5):
            while not leg.streams:
                await trio.sleep(0.01)
        assert leg.streams[pub.video_ssrc].packets == 1  # only the 1356-byte one went out


def test_max_forward_rtp_is_pylibsrtps_protect_limit() -> None:
    for profile in SRTP_PROFILES:
        key = os.urandom(profile.key_length + profile.salt_length)
        session = SrtpSession(SrtpKeys(profile, key, key))
        session.protect_rtp(rtp.build_rtp(96, 1, 0, 5, bytes(MAX_FORWARD_RTP - 12)))
        with pytest.raises(ValueError, match="packet is too long"):
            session.protect_rtp(rtp.build_rtp(96, 2, 0, 5, bytes(MAX_FORWARD_RTP - 11)))


@pytest.mark.parametrize("profile", SRTP_PROFILES, ids=lambda p: p.name)
def test_forged_old_index_packets_cannot_reset_a_stream(profile: object) -> None:
    """Regression (udp_blast spoofing): libsrtp checks the replay window before the tag, so 64
    forged packets with an old sequence number from a spoofed source address reset the stream,
    and after a rollover the fresh ROC-0 stream rejected every later genuine packet."""
    key = os.urandom(profile.key_length + profile.salt_length)  # type: ignore[attr-defined]
    tx = SrtpSession(SrtpKeys(profile, key, key))  # type: ignore[arg-type]
    rx = SrtpSession(SrtpKeys(profile, key, key))  # type: ignore[arg-type]
    total = 65_536 + 2_000  # past the first rollover (ROC 1)
    for i in range(total):
        rx.unprotect_rtp_untrusted(tx.protect_rtp(rtp.build_rtp(96, i & 0xFFFF, i, 7, b"m")))
    for j in range(2 * REPLAY_RESET_THRESHOLD):
        forged = rtp.build_rtp(96, (total - 3_000 + j) & 0xFFFF, 0, 7, os.urandom(30))
        with pytest.raises(MalformedInput, match="^srtp replay old: "):
            rx.unprotect_rtp_untrusted(forged)
    assert rx.replay_resets == 0
    for i in range(total, total + 10):
        plain = rtp.build_rtp(96, i & 0xFFFF, i, 7, b"genuine")
        assert rx.unprotect_rtp_untrusted(tx.protect_rtp(plain)) == plain
