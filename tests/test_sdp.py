"""arbiter.sfu.sdp against real offers (recorded Chrome, live aiortc and live Chromium).

tests/data/*.sdp come from scripts/record_offers.py; the numbers asserted below (Opus 111, VP8 96
with rtx 97, SSRCs, extmap ids) are the ones in those recordings.
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from aiortc.sdp import SessionDescription
from hypothesis import given, settings
from hypothesis import strategies as st

from arbiter.errors import MalformedInput
from arbiter.sfu.sdp import (
    HOST_PRIORITY,
    MAX_SDP_CHARS,
    URI_ABS_SEND_TIME,
    URI_AUDIO_LEVEL,
    URI_MID,
    URI_PLAYOUT_DELAY,
    URI_TRANSPORT_CC,
    URI_VIDEO_ORIENTATION,
    Codec,
    LocalParams,
    Track,
    application_section,
    build_consumer_offer,
    build_producer_answer,
    ice_candidate_line,
    parse_answer_untrusted,
    parse_offer_untrusted,
)

DATA = Path(__file__).parent / "data"
CHROME_OFFER = (DATA / "chrome_offer.sdp").read_bytes().decode()
AIORTC_OFFER = (DATA / "aiortc_offer.sdp").read_bytes().decode()
FINGERPRINT = ":".join(f"{i:02X}" for i in range(32))
LOCAL = LocalParams("sfuU", "sfupasswordsfupassword", FINGERPRINT, [("127.0.0.1", 40000)])
CHROME_STREAM = "6c11f43a-7981-4524-9860-a1d0fb827033"
CHROME_FINGERPRINT = "A5:D0:17:39:71:21:F4:A6:75:14:72:F1:B1:02:1E:A3:8A:B9:5D:49:E4:98:60:52:1B:D1:A7:3B:8B:D2:BC:5B"


def transport_lines(setup: str) -> list[str]:
    return [
        "c=IN IP4 127.0.0.1",
        f"a=candidate:1 1 udp {HOST_PRIORITY} 127.0.0.1 40000 typ host",
        "a=end-of-candidates",
        "a=ice-ufrag:sfuU",
        "a=ice-pwd:sfupasswordsfupassword",
        f"a=fingerprint:sha-256 {FINGERPRINT}",
        f"a=setup:{setup}",
    ]


def lines_of(sdp: str) -> list[str]:
    assert sdp.endswith("\r\n") and "\n" not in sdp.replace("\r\n", "")
    return sdp.split("\r\n")[:-1]


def sections_of(sdp: str) -> list[list[str]]:
    """The m-sections of an SDP, each as its lines (m-line first)."""
    out: list[list[str]] = []
    for line in lines_of(sdp):
        if line.startswith("m="):
            out.append([])
        if out:
            out[-1].append(line)
    return out


def session_of(sdp: str) -> list[str]:
    return lines_of(sdp.split("\r\nm=")[0] + "\r\n")


# ---------------------------------------------------------------------------------------------
# Parsing offers


def test_parse_chrome_offer() -> None:
    offer = parse_offer_untrusted(CHROME_OFFER)
    assert offer.remote.ice_ufrag == "1Wrg"
    assert offer.remote.ice_pwd == "UX7jc0ZdVP2ipDa4mNwg9nir"
    assert offer.remote.setup == "actpass"
    assert offer.remote.fingerprints == [("sha-256", CHROME_FINGERPRINT)]
    assert offer.bundle == ["0", "1", "2"]
    audio, video, app = offer.sections
    assert [s.kind for s in offer.sections] == ["audio", "video", "application"]
    assert [s.mid for s in offer.sections] == ["0", "1", "2"]
    assert audio.direction == video.direction == "sendrecv"
    assert audio.codecs[0] == Codec(
        111, "opus", 48000, 2, "minptime=10;useinbandfec=1", ("transport-cc",)
    )
    assert [c.payload_type for c in audio.codecs] == [111, 63, 9, 0, 8, 13, 110, 126]
    assert (3, URI_TRANSPORT_CC) in audio.extmaps
    assert audio.ssrcs[224412333]["cname"] == "7ZuLJxI0gAm1sfKQ" and len(audio.ssrcs) == 1
    assert video.codecs[0] == Codec(
        96, "VP8", 90000, None, None, ("goog-remb", "transport-cc", "ccm fir", "nack", "nack pli")
    )
    assert video.codecs[1] == Codec(97, "rtx", 90000, None, "apt=96")
    assert video.ssrc_groups == [("FID", (266888950, 1485898479))]
    assert audio.rtcp_mux and audio.rtcp_rsize and video.rtcp_mux
    assert app.protocol == "UDP/DTLS/SCTP" and app.formats == ["webrtc-datachannel"]


def test_parse_aiortc_offer_session_level_defaults_and_several_fingerprints() -> None:
    offer = parse_offer_untrusted(AIORTC_OFFER)
    assert offer.remote.ice_ufrag == "Ksli"
    assert [alg for alg, _ in offer.remote.fingerprints] == ["sha-256", "sha-384", "sha-512"]
    assert offer.sections[1].msid and offer.sections[1].msid.endswith(
        " d74f2188-4793-4c65-929a-e0850d39d631"
    )


# ---------------------------------------------------------------------------------------------
# Producer answers


def test_producer_answer_to_recorded_chrome_offer() -> None:
    answer, tracks = build_producer_answer(parse_offer_untrusted(CHROME_OFFER), LOCAL, session_id=7)
    assert session_of(answer) == [
        "v=0",
        "o=- 7 1 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        "a=ice-lite",
        "a=group:BUNDLE 0 1 2",
        "a=msid-semantic: WMS",
    ]
    transport = transport_lines("passive")
    audio, video, app = sections_of(answer)
    assert audio == [
        "m=audio 40000 UDP/TLS/RTP/SAVPF 111",
        *transport,
        "a=mid:0",
        f"a=extmap:1 {URI_AUDIO_LEVEL}",
        f"a=extmap:2 {URI_ABS_SEND_TIME}",
        f"a=extmap:4 {URI_MID}",
        "a=recvonly",
        "a=rtcp-mux",
        "a=rtcp-rsize",
        "a=rtpmap:111 opus/48000/2",
        "a=fmtp:111 minptime=10;useinbandfec=1",
    ]
    assert video == [
        "m=video 40000 UDP/TLS/RTP/SAVPF 96 97",
        *transport,
        "a=mid:1",
        f"a=extmap:2 {URI_ABS_SEND_TIME}",
        f"a=extmap:13 {URI_VIDEO_ORIENTATION}",
        f"a=extmap:5 {URI_PLAYOUT_DELAY}",
        f"a=extmap:4 {URI_MID}",
        "a=recvonly",
        "a=rtcp-mux",
        "a=rtcp-rsize",
        "a=rtpmap:96 VP8/90000",
        "a=rtcp-fb:96 goog-remb",
        "a=rtcp-fb:96 nack",
        "a=rtcp-fb:96 nack pli",
        "a=rtcp-fb:96 ccm fir",
        "a=rtpmap:97 rtx/90000",
        "a=fmtp:97 apt=96",
    ]
    # Data channels (RFC 8841): accepted in the same BUNDLE group, our SCTP port and limit.
    assert app == [
        "m=application 40000 UDP/DTLS/SCTP webrtc-datachannel",
        *transport,
        "a=mid:2",
        "a=sctp-port:5000",
        "a=max-message-size:262144",
    ]
    assert "transport-cc" not in answer and "transport-wide-cc" not in answer

    assert tracks == [
        Track(
            "audio",
            "0",
            224412333,
            None,
            "7ZuLJxI0gAm1sfKQ",
            f"{CHROME_STREAM} e680e6a1-7b6a-41ec-8cff-d0cfdc49e834",
            [Codec(111, "opus", 48000, 2, "minptime=10;useinbandfec=1")],
            [(1, URI_AUDIO_LEVEL), (2, URI_ABS_SEND_TIME), (4, URI_MID)],
        ),
        Track(
            "video",
            "1",
            266888950,
            1485898479,
            "7ZuLJxI0gAm1sfKQ",
            f"{CHROME_STREAM} cef01f9e-21d5-4ed7-a3ee-ec26f2f28964",
            [
                Codec(96, "VP8", 90000, None, None, ("goog-remb", "nack", "nack pli", "ccm fir")),
                Codec(97, "rtx", 90000, None, "apt=96"),
            ],
            [
                (2, URI_ABS_SEND_TIME),
                (13, URI_VIDEO_ORIENTATION),
                (5, URI_PLAYOUT_DELAY),
                (4, URI_MID),
            ],
        ),
    ]


def test_producer_answer_h264_picks_packetization_mode_1_42e01f() -> None:
    answer, tracks = build_producer_answer(
        parse_offer_untrusted(CHROME_OFFER), LOCAL, video_codec="H264"
    )
    video = sections_of(answer)[1]
    assert video[0] == "m=video 40000 UDP/TLS/RTP/SAVPF 108 109"
    assert "a=rtpmap:108 H264/90000" in video
    assert (
        "a=fmtp:108 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f" in video
    )
    assert video[-2:] == ["a=rtpmap:109 rtx/90000", "a=fmtp:109 apt=108"]
    assert [c.payload_type for c in tracks[1].codecs] == [108, 109]
    _, tracks = build_producer_answer(
        parse_offer_untrusted(AIORTC_OFFER), LOCAL, video_codec="H264"
    )
    assert [c.payload_type for c in tracks[1].codecs] == [101, 102]


def test_producer_answer_directions_and_trackless_sections() -> None:
    audio_recvonly = CHROME_OFFER.replace("a=sendrecv", "a=recvonly", 1)
    video_sendonly = audio_recvonly.replace("a=sendrecv", "a=sendonly", 1)
    answer, tracks = build_producer_answer(parse_offer_untrusted(video_sendonly), LOCAL)
    audio, video, _ = sections_of(answer)
    assert "a=inactive" in audio and "a=recvonly" not in audio
    assert "a=recvonly" in video
    assert [t.mid for t in tracks] == ["1"]
    # Still bundled: an inactive section is accepted, just not sending (RFC 3264 §6).
    assert "a=group:BUNDLE 0 1 2" in session_of(answer)


def test_producer_answer_rejects_section_without_common_codec() -> None:
    no_opus = re.sub(r"a=rtpmap:111 opus/48000/2\r\n", "", CHROME_OFFER)
    answer, tracks = build_producer_answer(parse_offer_untrusted(no_opus), LOCAL)
    audio = sections_of(answer)[0]
    assert audio[0] == "m=audio 0 UDP/TLS/RTP/SAVPF 111"
    assert audio[-3:] == ["a=mid:0", "a=inactive", "a=rtcp-mux"]
    assert not any(line.startswith(("a=candidate", "a=rtpmap")) for line in audio)
    assert "a=group:BUNDLE 1 2" in session_of(answer)
    assert [t.mid for t in tracks] == ["1"]


def test_producer_answer_with_nothing_acceptable_is_malformed() -> None:
    head, app = CHROME_OFFER.split("m=audio")[0], CHROME_OFFER.split("m=application")[1]
    only_app = head.replace("BUNDLE 0 1 2", "BUNDLE 2") + "m=application" + app
    # A data-channel-only offer is fine (RFC 8841) ...
    answer, tracks = build_producer_answer(parse_offer_untrusted(only_app), LOCAL)
    assert tracks == [] and "a=group:BUNDLE 2" in session_of(answer)
    assert application_section(parse_offer_untrusted(only_app)) is not None
    # ... but not one whose data channel section is unusable.
    for bad in (only_app.replace("webrtc-datachannel", "5000"),
                only_app.replace("UDP/DTLS/SCTP", "DTLS/SCTP"),
                only_app.replace("m=application 39945 ", "m=application 0 ")):  # fmt: skip
        with pytest.raises(MalformedInput, match="^SDP: offer has no audio, video or data channel"):
            build_producer_answer(parse_offer_untrusted(bad), LOCAL)


def test_application_section_attributes() -> None:
    """a=sctp-port and a=max-message-size (RFC 8841 §5, §6) are read and checked."""
    app = application_section(parse_offer_untrusted(CHROME_OFFER))
    assert app is not None and app.sctp_port == 5000 and app.max_message_size == 262144
    for bad in ("a=sctp-port:70000", "a=sctp-port:x", "a=max-message-size:-1"):
        text = CHROME_OFFER.replace("a=sctp-port:5000", bad)
        with pytest.raises(MalformedInput, match="RFC 8841"):
            parse_offer_untrusted(text)


def test_several_candidates_and_ipv6() -> None:
    local = LocalParams(
        "sfuU", "sfupasswordsfupassword", FINGERPRINT, [("2001:db8::1", 5000), ("192.0.2.9", 5001)]
    )
    answer, _ = build_producer_answer(parse_offer_untrusted(CHROME_OFFER), local)
    audio = sections_of(answer)[0]
    assert audio[:4] == [
        "m=audio 5000 UDP/TLS/RTP/SAVPF 111",
        "c=IN IP6 2001:db8::1",
        f"a=candidate:1 1 udp {HOST_PRIORITY} 2001:db8::1 5000 typ host",
        f"a=candidate:2 1 udp {HOST_PRIORITY - 256} 192.0.2.9 5001 typ host",
    ]
    assert ice_candidate_line("10.0.0.1", 9) == "candidate:1 1 udp 2130706431 10.0.0.1 9 typ host"


async def _aiortc_producer_roundtrip() -> tuple[str, str]:
    pc = RTCPeerConnection()
    try:
        pc.addTrack(AudioStreamTrack())
        pc.addTrack(VideoStreamTrack())
        pc.createDataChannel("chat", negotiated=True, id=100)
        await pc.setLocalDescription(await pc.createOffer())
        offer = pc.localDescription.sdp
        answer, _ = build_producer_answer(parse_offer_untrusted(offer), LOCAL)
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        assert pc.signalingState == "stable"
        return offer, answer
    finally:
        await pc.close()


def test_aiortc_accepts_producer_answer() -> None:
    offer, answer = asyncio.run(_aiortc_producer_roundtrip())
    parsed = parse_offer_untrusted(offer)
    opus = next(c for c in parsed.sections[0].codecs if c.name == "opus")
    vp8 = next(c for c in parsed.sections[1].codecs if c.name == "VP8")
    assert f"m=audio 40000 UDP/TLS/RTP/SAVPF {opus.payload_type}" in lines_of(answer)
    assert f"a=fmtp:{vp8.payload_type + 1} apt={vp8.payload_type}" in lines_of(answer)


# ---------------------------------------------------------------------------------------------
# Consumer offers


def chrome_tracks() -> list[Track]:
    return build_producer_answer(parse_offer_untrusted(CHROME_OFFER), LOCAL)[1]


def test_consumer_offer_repeats_publisher_numbers() -> None:
    offer = build_consumer_offer(chrome_tracks(), LOCAL, session_id=42, version=3)
    assert session_of(offer) == [
        "v=0",
        "o=- 42 3 IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        "a=ice-lite",
        "a=group:BUNDLE 0 1",
        f"a=msid-semantic: WMS {CHROME_STREAM}",
    ]
    audio, video = sections_of(offer)
    audio_msid = f"{CHROME_STREAM} e680e6a1-7b6a-41ec-8cff-d0cfdc49e834"
    video_msid = f"{CHROME_STREAM} cef01f9e-21d5-4ed7-a3ee-ec26f2f28964"
    transport = transport_lines("actpass")
    assert audio == [
        "m=audio 40000 UDP/TLS/RTP/SAVPF 111",
        *transport,
        "a=mid:0",
        f"a=extmap:1 {URI_AUDIO_LEVEL}",
        f"a=extmap:4 {URI_MID}",
        "a=sendonly",
        f"a=msid:{audio_msid}",
        "a=rtcp-mux",
        "a=rtcp-rsize",
        "a=rtpmap:111 opus/48000/2",
        "a=fmtp:111 minptime=10;useinbandfec=1",
        "a=ssrc:224412333 cname:7ZuLJxI0gAm1sfKQ",
        f"a=ssrc:224412333 msid:{audio_msid}",
    ]
    assert video == [
        "m=video 40000 UDP/TLS/RTP/SAVPF 96 97",
        *transport,
        "a=mid:1",
        f"a=extmap:13 {URI_VIDEO_ORIENTATION}",
        f"a=extmap:5 {URI_PLAYOUT_DELAY}",
        f"a=extmap:4 {URI_MID}",
        "a=sendonly",
        f"a=msid:{video_msid}",
        "a=rtcp-mux",
        "a=rtcp-rsize",
        "a=rtpmap:96 VP8/90000",
        "a=rtcp-fb:96 goog-remb",
        "a=rtcp-fb:96 nack",
        "a=rtcp-fb:96 nack pli",
        "a=rtcp-fb:96 ccm fir",
        "a=rtpmap:97 rtx/90000",
        "a=fmtp:97 apt=96",
        "a=ssrc-group:FID 266888950 1485898479",
        "a=ssrc:266888950 cname:7ZuLJxI0gAm1sfKQ",
        f"a=ssrc:266888950 msid:{video_msid}",
        "a=ssrc:1485898479 cname:7ZuLJxI0gAm1sfKQ",
        f"a=ssrc:1485898479 msid:{video_msid}",
    ]
    assert "abs-send-time" not in offer and "transport-cc" not in offer
    # aiortc's parser reads back the same numbers.
    parsed = SessionDescription.parse(offer)
    assert [m.rtp.muxId for m in parsed.media] == ["0", "1"]
    assert [c.payloadType for c in parsed.media[1].rtp.codecs] == [96, 97]
    assert [s.ssrc for s in parsed.media[1].ssrc] == [266888950, 1485898479]
    assert [(h.id, h.uri) for h in parsed.media[0].rtp.headerExtensions] == [
        (1, "urn:ietf:params:rtp-hdrext:ssrc-audio-level"),
        (4, URI_MID),
    ]


def test_consumer_offer_needs_tracks() -> None:
    with pytest.raises(ValueError, match="at least one track"):
        build_consumer_offer([], LOCAL, session_id=1, version=1)


async def _aiortc_consumer(offer: str) -> str:
    pc = RTCPeerConnection()
    try:
        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        assert [t.receiver.track.kind for t in pc.getTransceivers()] == ["audio", "video"]
        return pc.localDescription.sdp
    finally:
        await pc.close()


def test_aiortc_answers_consumer_offer() -> None:
    offer = build_consumer_offer(chrome_tracks(), LOCAL, session_id=1, version=1)
    answer = parse_answer_untrusted(asyncio.run(_aiortc_consumer(offer)))
    assert answer.remote.setup == "active"
    assert answer.accepted_mids == ["0", "1"]
    assert [s.direction for s in answer.sections] == ["recvonly", "recvonly"]
    assert [c.payload_type for c in answer.sections[1].codecs] == [96, 97]


# ---------------------------------------------------------------------------------------------
# Malformed input: exact messages


def drop_lines(sdp: str, prefix: str) -> str:
    return "".join(line for line in sdp.splitlines(keepends=True) if not line.startswith(prefix))


C = CHROME_OFFER
# (id, offer, message after "SDP: ")
MALFORMED_OFFERS = [
    ("garbage", "hello world", "does not start with v=0 (RFC 4566)"),
    ("empty", "", "does not start with v=0 (RFC 4566)"),
    ("no BUNDLE", drop_lines(C, "a=group:"), "no a=group:BUNDLE (RFC 8843 is required)"),
    ("no fingerprint", drop_lines(C, "a=fingerprint:"), "no a=fingerprint (RFC 8122)"),
    (
        "no rtcp-mux",
        drop_lines(C, "a=rtcp-mux"),
        "m-section 0 lacks a=rtcp-mux (RFC 5761 is required)",
    ),
    ("no ice", drop_lines(C, "a=ice-pwd:"), "no a=ice-ufrag/a=ice-pwd (RFC 8839)"),
    ("no mid", drop_lines(C, "a=mid:1"), "an m-section has no a=mid (RFC 8843)"),
    ("dup mid", C.replace("a=mid:1", "a=mid:0"), "duplicate a=mid"),
    (
        "bundle mid",
        C.replace("BUNDLE 0 1 2", "BUNDLE 0 1 7"),
        "a=group:BUNDLE names an unknown mid",
    ),
    ("too many sections", C + "m=audio 9 UDP/TLS/RTP/SAVPF 0\r\n" * 14, "more than 16 m-sections"),
    ("too long", "v=0\r\n" + "a=x\r\n" * MAX_SDP_CHARS, f"longer than {MAX_SDP_CHARS} characters"),
    ("unicode pt", "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF \u00b2\r\n", "bad m-line 2"),
    ("no m-sections", "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", "no m-sections"),
    ("bad line", C.replace("s=-", "s -"), "line 3 is not <type>=<value>"),
    (
        "passive offer",
        C.replace("a=setup:actpass", "a=setup:passive"),
        "offer says a=setup:passive but the SFU is always the DTLS server (RFC 5763)",
    ),
    (
        "remote ice-lite",
        C.replace("t=0 0\r\n", "t=0 0\r\na=ice-lite\r\n"),
        "the remote side is ICE-lite too; someone must be a full agent (RFC 8445)",
    ),
    (
        "ufrag",
        C.replace("ufrag:1Wrg", "ufrag:1W"),
        "a=ice-ufrag must be 4-256 ice-chars (RFC 8839)",
    ),
    (
        "extmap 15",
        C.replace("extmap:1 ", "extmap:15 "),
        "bad or duplicate a=extmap id 15 (RFC 8285)",
    ),
    ("rtpmap", C.replace("111 opus/48000/2", "111 opus"), "bad a=rtpmap in the audio m-section"),
    ("m-line", C.replace("m=audio 51034", "m=audio 99999"), "bad m-line 8"),
    ("fingerprint", C.replace("sha-256 A5:D0", "sha-256 Z5:D0"), "bad a=fingerprint (RFC 8122)"),
]


@pytest.mark.parametrize(
    ("sdp", "message"), [c[1:] for c in MALFORMED_OFFERS], ids=[c[0] for c in MALFORMED_OFFERS]
)
def test_malformed_offers(sdp: str, message: str) -> None:
    with pytest.raises(MalformedInput) as caught:
        parse_offer_untrusted(sdp)
    assert caught.value.message == "SDP: " + message


def test_answer_must_be_dtls_client() -> None:
    offer = build_consumer_offer(chrome_tracks(), LOCAL, session_id=1, version=1)
    answer = asyncio.run(_aiortc_consumer(offer))
    for setup in ("passive", "actpass"):
        with pytest.raises(MalformedInput) as caught:
            parse_answer_untrusted(answer.replace("a=setup:active", f"a=setup:{setup}"))
        assert caught.value.message == (
            "SDP: answer must say a=setup:active: the SFU is always the DTLS server (RFC 5763)"
        )


def test_rejected_sections_in_answer_are_not_accepted_mids() -> None:
    offer = build_consumer_offer(chrome_tracks(), LOCAL, session_id=1, version=1)
    answer = asyncio.run(_aiortc_consumer(offer))
    answer = re.sub(r"m=audio \d+", "m=audio 0", answer).replace("BUNDLE 0 1", "BUNDLE 1")
    assert parse_answer_untrusted(answer).accepted_mids == ["1"]


# SDP-shaped junk: known line prefixes followed by arbitrary text, behind a valid "v=0".
PREFIXES = ["m=audio 9 UDP/TLS/RTP/SAVPF ", "a=rtpmap:", "a=fmtp:", "a=ssrc:", "a=extmap:", "a="]
SDP_ISH = st.lists(st.tuples(st.sampled_from(PREFIXES), st.text(max_size=30)), max_size=20).map(
    lambda lines: "v=0\r\n" + "".join(f"{p}{t}\r\n" for p, t in lines)
)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=2000) | SDP_ISH)
def test_fuzz_text_raises_only_malformed_input(text: str) -> None:
    for parse in (parse_offer_untrusted, parse_answer_untrusted):
        try:
            parse(text)
        except MalformedInput:
            pass


CHROME_LINES = CHROME_OFFER.split("\r\n")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(CHROME_LINES) - 1), st.text(max_size=40)), max_size=4))
def test_fuzz_mutated_chrome_offer(edits: list[tuple[int, str]]) -> None:
    """Near-valid input reaches the deep branches: replace or truncate a few real lines."""
    lines = list(CHROME_LINES)
    for index, text in edits:
        line = lines[index]
        lines[index] = line[: len(line) // 2] + text if text else ""
    try:
        offer = parse_offer_untrusted("\r\n".join(lines))
    except MalformedInput:
        return
    try:
        build_producer_answer(offer, LOCAL)
    except MalformedInput:
        pass


# ---------------------------------------------------------------------------------------------
# Chromium

CHROMIUM = "/usr/bin/chromium"

CHROME_PRODUCER_JS = """
async () => {
  const stream = await navigator.mediaDevices.getUserMedia({audio: true, video: true});
  const pc = new RTCPeerConnection();
  for (const track of stream.getTracks()) pc.addTrack(track, stream);
  pc.createDataChannel("chat", {negotiated: true, id: 100});
  pc.createDataChannel("features", {negotiated: true, id: 110});
  await pc.setLocalDescription(await pc.createOffer());
  window.producer = pc;
  return pc.localDescription.sdp;
}
"""

CHROME_ANSWER_JS = """async (sdp) => {
  await window.producer.setRemoteDescription({type: "answer", sdp});
  return window.producer.signalingState;
}"""

CHROME_CONSUMER_JS = """
async (offer) => {
  const pc = new RTCPeerConnection();
  const tracks = [];
  pc.ontrack = (e) => tracks.push([e.track.kind, e.streams.map((s) => s.id)]);
  await pc.setRemoteDescription({type: "offer", sdp: offer});
  await pc.setLocalDescription(await pc.createAnswer());
  const sdp = pc.localDescription.sdp;
  pc.close();
  window.producer.close();
  return JSON.stringify({sdp, tracks});
}
"""


@pytest.mark.browser
@pytest.mark.parametrize("video_codec", ["VP8", "H264"])
def test_chromium_accepts_producer_answer_and_consumer_offer(video_codec: str) -> None:
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), "Debian's chromium is required (scripts/test installs it)"
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"],
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(10_000)
            # about:blank has no navigator.mediaDevices (not a secure context); localhost is.
            page.route(
                "http://localhost/",
                lambda route: route.fulfill(body="<!doctype html>", content_type="text/html"),
            )
            page.goto("http://localhost/")
            offer_sdp = page.evaluate(CHROME_PRODUCER_JS)
            offer = parse_offer_untrusted(offer_sdp)
            answer, tracks = build_producer_answer(offer, LOCAL, video_codec=video_codec)
            assert page.evaluate(CHROME_ANSWER_JS, answer) == "stable"

            consumer_offer = build_consumer_offer(tracks, LOCAL, session_id=9, version=1)
            result = json.loads(page.evaluate(CHROME_CONSUMER_JS, consumer_offer))
        finally:
            browser.close()
    assert [t.codecs[0].name for t in tracks] == ["opus", video_codec]
    stream = tracks[0].msid.split()[0] if tracks[0].msid else None
    assert result["tracks"] == [["audio", [stream]], ["video", [stream]]]
    consumer_answer = parse_answer_untrusted(result["sdp"])  # which also checks a=setup:active
    assert consumer_answer.remote.setup == "active"
    assert consumer_answer.accepted_mids == ["0", "1"]
    assert [s.direction for s in consumer_answer.sections] == ["recvonly", "recvonly"]
    # Chrome answers with the publisher's payload types, so forwarding needs no rewriting.
    assert [c.payload_type for c in consumer_answer.sections[1].codecs] == [
        c.payload_type for c in tracks[1].codecs
    ]
