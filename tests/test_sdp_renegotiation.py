"""arbiter.sfu.sdp in renegotiation (issue 11; docs/PROTOCOL.md section 4), sans-IO.

tests/data/chrome_reoffers.json holds real Chromium re-offers on one producer connection, each
answered by `build_producer_answer` as the room would (scripts/record_offers.py): the first
offer, the same offer again, after addTrack of a second camera, after removeTrack of it and
after restartIce().
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription

from arbiter.errors import MalformedInput
from arbiter.sfu.sdp import (
    URI_AUDIO_LEVEL,
    URI_MID,
    LocalParams,
    Track,
    build_consumer_answer,
    build_consumer_offer,
    build_producer_answer,
    parse_answer_untrusted,
    parse_offer_untrusted,
)
from arbiter.testing.sdp_mirror import mirror

DATA = Path(__file__).parent / "data"
STEPS = {s["step"]: s["offer"] for s in json.loads((DATA / "chrome_reoffers.json").read_text())}
FINGERPRINT = ":".join(f"{i:02X}" for i in range(32))
LOCAL = LocalParams("sfuU", "sfupasswordsfupassword", FINGERPRINT, [("127.0.0.1", 40000)])


def sections_of(sdp: str) -> list[list[str]]:
    out: list[list[str]] = []
    for line in sdp.split("\r\n")[:-1]:
        if line.startswith("m="):
            out.append([])
        if out:
            out[-1].append(line)
    return out


def answer(step: str, previous: list[Track] | None, version: int) -> tuple[str, list[Track]]:
    return build_producer_answer(
        parse_offer_untrusted(STEPS[step]),
        LOCAL,
        session_id=7,
        version=version,
        previous={t.mid: t for t in previous or []},
    )


def negotiate(*steps: str) -> list[tuple[str, list[Track]]]:
    """Answer the recorded offers in order, each knowing the previous answer's tracks."""
    out: list[tuple[str, list[Track]]] = []
    for version, step in enumerate(steps, 1):
        out.append(answer(step, out[-1][1] if out else None, version))
    return out


def without_origin(sdp: str) -> str:
    return re.sub(r"o=- 7 \d+ ", "o=- 7 N ", sdp)


def test_recorded_reoffers_keep_the_transport_and_say_what_changed() -> None:
    offers = {step: parse_offer_untrusted(sdp) for step, sdp in STEPS.items()}
    first = offers["initial"].remote
    for step in ("identical", "added", "removed"):
        remote = offers[step].remote
        assert (remote.ice_ufrag, remote.ice_pwd, remote.fingerprints) == (
            first.ice_ufrag,
            first.ice_pwd,
            first.fingerprints,
        ), step
    restart = offers["restart"].remote
    assert restart.ice_ufrag != first.ice_ufrag and restart.ice_pwd != first.ice_pwd
    assert restart.fingerprints == first.fingerprints  # the same DTLS association
    assert [s.mid for s in offers["added"].sections] == ["0", "1", "2", "3"]
    assert offers["added"].sections[3].direction == "sendrecv"
    assert offers["removed"].sections[3].direction == "recvonly"  # removeTrack keeps its place


def test_identical_reoffer_gets_the_same_answer_but_the_version() -> None:
    (first, tracks1), (second, tracks2) = negotiate("initial", "identical")
    assert "o=- 7 1 IN IP4" in first and "o=- 7 2 IN IP4" in second
    assert without_origin(first) == without_origin(second)
    assert tracks1 == tracks2  # same mids, SSRCs, payload types and extensions


def test_added_and_removed_tracks_by_mid() -> None:
    answers = negotiate("initial", "identical", "added", "removed", "restart")
    (_, base), _, (added_sdp, added), (removed_sdp, removed), (_, restarted) = answers
    assert [t.mid for t in base] == ["0", "1"]
    assert [t.mid for t in added] == ["0", "1", "3"]
    assert added[:2] == base  # untouched tracks are equal: their consumers stay
    assert added[2].kind == "video" and added[2].ssrc not in (base[0].ssrc, base[1].ssrc)
    assert "a=recvonly" in sections_of(added_sdp)[3]
    assert [t.mid for t in removed] == ["0", "1"] and removed == base
    assert "a=inactive" in sections_of(removed_sdp)[3]  # the section stays, mid kept
    assert "a=mid:3" in sections_of(removed_sdp)[3]
    assert restarted == base  # an ICE restart changes no track


def test_renegotiation_keeps_the_negotiated_codec_when_offered_in_another_order() -> None:
    offer = STEPS["identical"]
    # The re-offer lists a second VP8 (98, was VP9) before 96: 96 stays, being still offered.
    mline = next(line for line in offer.split("\r\n") if line.startswith("m=video"))
    formats = mline.split()[3:]
    assert formats[:2] == ["96", "97"] and "98" in formats
    head = " ".join(mline.split()[:3])
    moved = ["98", "99", *(f for f in formats if f not in ("98", "99"))]
    reordered = offer.replace(mline, f"{head} {' '.join(moved)}").replace(
        "a=rtpmap:98 VP9/90000", "a=rtpmap:98 VP8/90000"
    )
    (_, base), = negotiate("initial")
    _, tracks = build_producer_answer(
        parse_offer_untrusted(reordered), LOCAL, session_id=7, version=2,
        previous={t.mid: t for t in base},
    )  # fmt: skip
    assert tracks == base
    assert [c.payload_type for c in tracks[1].codecs] == [96, 97]
    # Without the previous answer the first VP8 offered is taken, with its rtx.
    _, fresh = build_producer_answer(parse_offer_untrusted(reordered), LOCAL, session_id=7)
    assert [c.payload_type for c in fresh[1].codecs] == [98, 99]


def test_consumer_reoffer_appends_and_marks_inactive_never_reorders() -> None:
    (_, base), _, (_, added), _ = negotiate("initial", "identical", "added", "removed")
    first = build_consumer_offer(base, LOCAL, session_id=5, version=1)
    grown = build_consumer_offer(added, LOCAL, session_id=5, version=2)
    shrunk = build_consumer_offer(added, LOCAL, session_id=5, version=3, inactive={"3"})
    assert "o=- 5 2 IN IP4" in grown and "o=- 5 3 IN IP4" in shrunk
    assert sections_of(grown)[:2] == sections_of(first)  # unchanged sections, byte for byte
    assert [s[0].split()[0] for s in sections_of(shrunk)] == ["m=audio", "m=video", "m=video"]
    inactive = sections_of(shrunk)[2]
    assert "a=mid:3" in inactive and "a=inactive" in inactive
    assert not [line for line in inactive if line.startswith(("a=ssrc", "a=msid"))]
    assert inactive[0] == sections_of(grown)[2][0]  # same codecs on its m-line
    assert "a=group:BUNDLE 0 1 3" in shrunk  # inactive, not rejected: still bundled
    assert sections_of(shrunk)[:2] == sections_of(first)


def test_extmap_directions_are_kept() -> None:
    offer = STEPS["initial"].replace(
        f"a=extmap:1 {URI_AUDIO_LEVEL}", f"a=extmap:1/sendonly {URI_AUDIO_LEVEL}"
    ).replace(f"a=extmap:4 {URI_MID}", f"a=extmap:4/recvonly {URI_MID}", 1)
    assert offer.count("/sendonly") == 1 and offer.count("/recvonly") == 1
    sdp, tracks = build_producer_answer(parse_offer_untrusted(offer), LOCAL)
    audio = sections_of(sdp)[0]
    assert f"a=extmap:1/recvonly {URI_AUDIO_LEVEL}" in audio  # RFC 8285 section 6
    assert f"a=extmap:4/sendonly {URI_MID}" in audio
    assert tracks[0].extmap_directions == {1: "sendonly", 4: "recvonly"}
    consumer = sections_of(build_consumer_offer(tracks, LOCAL, session_id=1, version=1))[0]
    assert f"a=extmap:1/sendonly {URI_AUDIO_LEVEL}" in consumer  # forwarded as it is sent
    assert f"a=extmap:4/inactive {URI_MID}" in consumer  # the publisher never sends it
    video = sections_of(build_consumer_offer(tracks, LOCAL, session_id=1, version=1))[1]
    assert not [line for line in video if re.match(r"a=extmap:\d+/", line)]


def subscriber_offer(consumer_offer: str, ufrag: str = "subU") -> str:
    """What Chrome offers on a consumer connection it renegotiates (e.g. after restartIce()):
    our offer's m-sections in the same order with the same payload types, recvonly, its own
    ICE credentials and certificate, a=setup:actpass, no SSRCs of ours."""
    return mirror(consumer_offer, setup="actpass", ufrag=ufrag)


(_, TRACKS), = negotiate("initial")
CONSUMER_OFFER = build_consumer_offer(TRACKS, LOCAL, session_id=5, version=1)


def test_consumer_answer_to_a_subscribers_offer() -> None:
    offer = parse_offer_untrusted(subscriber_offer(CONSUMER_OFFER))
    assert offer.remote.setup == "actpass"
    ours = build_consumer_answer(offer, TRACKS, LOCAL, session_id=5, version=2)
    assert "o=- 5 2 IN IP4" in ours and "a=ice-lite" in ours
    # The same sections as our offer, but a=setup:passive: the SFU stays the DTLS server.
    assert sections_of(ours) == [
        [line.replace("a=setup:actpass", "a=setup:passive") for line in section]
        for section in sections_of(CONSUMER_OFFER)
    ]
    assert parse_answer_untrusted(
        ours.replace("a=setup:passive", "a=setup:active").replace("a=ice-lite\r\n", "")
    ).accepted_mids == ["0", "1"]


def test_consumer_answer_rejects_what_is_not_ours() -> None:
    sub_offer = subscriber_offer(CONSUMER_OFFER)
    # A mid we never offered: rejected (port 0, mid kept), out of the BUNDLE group.
    strange = sub_offer.replace("a=mid:1", "a=mid:9").replace("BUNDLE 0 1", "BUNDLE 0 9")
    ours = build_consumer_answer(parse_offer_untrusted(strange), TRACKS, LOCAL,
                                 session_id=5, version=2)  # fmt: skip
    assert sections_of(ours)[1][0].startswith("m=video 0 ")
    assert "a=mid:9" in sections_of(ours)[1]
    assert "a=group:BUNDLE 0\r\n" in ours
    # Tracks the publisher stopped are answered inactive, without SSRCs.
    quiet = build_consumer_answer(parse_offer_untrusted(sub_offer), TRACKS, LOCAL,
                                  session_id=5, version=2, inactive={"1"})  # fmt: skip
    assert "a=inactive" in sections_of(quiet)[1] and "a=sendonly" in sections_of(quiet)[0]
    assert not [line for line in sections_of(quiet)[1] if line.startswith("a=ssrc")]
    # An rtx or extension it no longer offers is left out; the primary payload type must stay.
    no_rtx = sub_offer.replace("SAVPF 96 97", "SAVPF 96")
    video = sections_of(build_consumer_answer(parse_offer_untrusted(no_rtx), TRACKS, LOCAL,
                                              session_id=5, version=2))[1]  # fmt: skip
    assert video[0].endswith("SAVPF 96") and "a=rtpmap:97 rtx/90000" not in video
    with pytest.raises(MalformedInput, match="no m-section of this consumer connection"):
        build_consumer_answer(parse_offer_untrusted(strange.replace("a=mid:0", "a=mid:8")
                                                    .replace("BUNDLE 0 9", "BUNDLE 8 9")),
                              TRACKS, LOCAL, session_id=5, version=2)  # fmt: skip


async def _aiortc_subscriber_offer(offer: str) -> str:
    pc = RTCPeerConnection()
    try:
        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await pc.setLocalDescription(await pc.createOffer())
        return str(pc.localDescription.sdp)
    finally:
        await pc.close()


def test_aiortc_subscriber_offer_renumbers_payload_types_and_is_refused() -> None:
    """aiortc's subsequent offers do not keep the negotiated payload types (RFC 8829 section
    5.2.2 says they must): our numbers are the publisher's and are forwarded unrewritten, so
    such an offer cannot be answered."""
    offer = asyncio.run(_aiortc_subscriber_offer(CONSUMER_OFFER))
    assert "m=audio" in offer and " 111" not in offer.split("m=audio", 1)[1].split("\r\n")[0]
    with pytest.raises(MalformedInput, match="no m-section of this consumer connection"):
        build_consumer_answer(parse_offer_untrusted(offer), TRACKS, LOCAL, session_id=5, version=2)
