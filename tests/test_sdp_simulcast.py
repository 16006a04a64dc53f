"""Simulcast and transport-cc in producer answers and consumer offers (RFC 8851, 8852, 8853;
docs/PROTOCOL.md section 4), on a recorded Chromium 156 offer with three rids."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from arbiter.sfu.sdp import (
    URI_REPAIRED_RID,
    URI_RID,
    URI_TRANSPORT_CC,
    LocalParams,
    build_consumer_offer,
    build_producer_answer,
    parse_offer_untrusted,
)

DATA = Path(__file__).parent / "data"
SIMULCAST_OFFER = (DATA / "chrome_simulcast_offer.sdp").read_bytes().decode()
FINGERPRINT = ":".join(f"{i:02X}" for i in range(32))
LOCAL = LocalParams("abcd", "a" * 22, FINGERPRINT, [("127.0.0.1", 4000)])


def video_lines(sdp: str) -> list[str]:
    return sdp.split("m=video")[1].split("\r\n")


def test_chrome_simulcast_offer_is_answered_with_three_recv_rids() -> None:
    answer, tracks = build_producer_answer(parse_offer_untrusted(SIMULCAST_OFFER), LOCAL)
    video = [t for t in tracks if t.kind == "video"][0]
    assert video.rids == ("q", "h", "f")
    # Chrome signals no SSRC for simulcast layers: they are learnt from the RID extension.
    assert (video.ssrc, video.rtx_ssrc) == (None, None)
    assert (10, URI_RID) in video.header_extensions
    assert (11, URI_REPAIRED_RID) in video.header_extensions
    lines = video_lines(answer)
    assert [line for line in lines if line.startswith(("a=rid", "a=simulcast"))] == [
        "a=rid:q recv",
        "a=rid:h recv",
        "a=rid:f recv",
        "a=simulcast:recv q;h;f",
    ]
    assert "a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id" in lines
    # Without transport_cc the SFU runs no feedback: the extension and rtcp-fb stay out.
    assert not [line for line in answer.split("\r\n") if "transport-cc" in line]


def test_simulcast_without_the_rid_extension_is_answered_as_one_stream() -> None:
    offer = SIMULCAST_OFFER.replace(f"a=extmap:10 {URI_RID}\r\n", "")
    answer, tracks = build_producer_answer(parse_offer_untrusted(offer), LOCAL)
    assert [t.rids for t in tracks] == [(), ()]
    assert "a=simulcast" not in answer and "a=rid:" not in answer
    assert URI_REPAIRED_RID not in answer


def test_unreadable_simulcast_lines_cost_only_simulcast() -> None:
    offer = SIMULCAST_OFFER.replace("a=simulcast:send q;h;f", "a=simulcast:send rid=q;h;f!")
    answer, tracks = build_producer_answer(parse_offer_untrusted(offer), LOCAL)
    assert [t.rids for t in tracks] == [(), ()]
    assert "a=simulcast" not in answer


def test_transport_cc_is_accepted_and_replaces_remb() -> None:
    answer, tracks = build_producer_answer(
        parse_offer_untrusted(SIMULCAST_OFFER), LOCAL, transport_cc=True
    )
    audio, video = tracks
    assert (3, URI_TRANSPORT_CC) in audio.header_extensions
    assert (3, URI_TRANSPORT_CC) in video.header_extensions
    assert audio.codecs[0].rtcp_fb == ("transport-cc",)
    assert video.codecs[0].rtcp_fb == ("nack", "nack pli", "ccm fir", "transport-cc")
    assert "goog-remb" not in answer
    assert f"a=rtcp-fb:{video.codecs[0].payload_type} transport-cc" in answer


def test_consumer_offer_of_a_simulcast_track_has_one_ssrc_and_no_rids() -> None:
    _, tracks = build_producer_answer(
        parse_offer_untrusted(SIMULCAST_OFFER), LOCAL, transport_cc=True
    )
    audio, video = tracks
    consumer_video = replace(video, ssrc=1111, rtx_ssrc=2222, rids=())
    offer = build_consumer_offer([audio, consumer_video], LOCAL, session_id=1, version=1)
    lines = video_lines(offer)
    assert "a=ssrc-group:FID 1111 2222" in lines
    assert not [line for line in lines if line.startswith(("a=rid", "a=simulcast"))]
    assert not [line for line in lines if URI_RID in line or URI_REPAIRED_RID in line]
    # transport-cc is offered with the publisher's id: the SFU writes its own sequence numbers.
    assert f"a=extmap:3 {URI_TRANSPORT_CC}" in lines
