"""Client-side SDP for `arbiter bench`'s synthetic participants (either target: Arbiter or Janus).

A synthetic participant is a browser stand-in: a controlling full-ICE agent with one UDP host
candidate, BUNDLE and rtcp-mux, Opus + VP8, and explicit `a=ssrc` lines (both SFUs forward by
SSRC). It never encodes anything, so the SDP says only what the servers need to route packets.

Parsing the servers' SDP uses aiortc's parser: this is our own load generator reading a server we
started, not untrusted input on the SFU's side, so the stricter `arbiter.sfu.sdp` parser (which
only accepts what a browser offers to us) is not the right tool here.
"""

from __future__ import annotations

import secrets
from typing import NamedTuple

from aiortc.sdp import SessionDescription

from ..sfu.client import HOST_PRIORITY, PeerClient
from ..sfu.dtls import Certificate
from ..sfu.sdp_grammar import URI_TRANSPORT_CC as TWCC_URI

TWCC_EXT = 3  # the transport-wide-cc extension id, as Chrome numbers it

# aiortc maps a=setup values to its role names; map them back to what the SDP said.
_ROLE_TO_SETUP = {"auto": "actpass", "client": "active", "server": "passive"}


class RemoteMedia(NamedTuple):
    """What a synthetic participant needs from the server's offer or answer."""

    ice_ufrag: str
    ice_pwd: str
    fingerprint: str  # sha-256, "AB:CD:..." as in a=fingerprint
    setup: str  # the server's a=setup: "actpass", "active" or "passive"
    candidates: list[tuple[str, int]]  # UDP host/srflx candidates, in SDP order
    ssrcs: dict[str, list[int]]  # kind ("audio"/"video") -> SSRCs the server will send/expects


def _candidate_line(ip: str, port: int) -> str:
    return f"a=candidate:1 1 udp {HOST_PRIORITY} {ip} {port} typ host"


def build_publisher_offer(
    ice_ufrag: str,
    ice_pwd: str,
    fingerprint: str,
    audio_ssrc: int,
    video_ssrc: int,
    *,
    candidate: tuple[str, int],
    opus_pt: int = 111,
    vp8_pt: int = 96,
    cname: str = "arbiter-bench",
    transport_cc: bool = False,
) -> str:
    """A sendonly Opus + VP8 offer as a browser would make it, minus what we never send.

    Not ICE-lite: we are the full, controlling agent, so the server (ICE-lite or not) answers our
    checks and our USE-CANDIDATE decides the pair. `a=setup:actpass` lets the server choose its
    DTLS role (Janus picks `active`, Arbiter `passive`). No header extensions by default: neither
    server needs one to route SSRC-signalled streams. `transport_cc` adds the transport-wide-cc
    extension (Chrome's id 3) to both sections: what a browser's call costs an SFU that stamps
    and estimates with it (issue 13: Arbiter's layer choice needs its subscribers' feedback).
    """
    ip, port = candidate
    session_id = secrets.randbits(62)
    lines = [
        "v=0",
        f"o=- {session_id} 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "a=msid-semantic: WMS bench",
    ]
    media = (
        ("audio", opus_pt, "opus/48000/2", "minptime=10;useinbandfec=1", (), audio_ssrc),
        (
            "video",
            vp8_pt,
            "VP8/90000",
            None,
            ("nack", "nack pli", "ccm fir", "goog-remb"),
            video_ssrc,
        ),
    )
    for mid, (kind, pt, rtpmap, fmtp, feedback, ssrc) in enumerate(media):
        lines += [
            f"m={kind} {port} UDP/TLS/RTP/SAVPF {pt}",
            f"c=IN IP4 {ip}",
            f"a=rtcp:{port} IN IP4 {ip}",
            f"a=ice-ufrag:{ice_ufrag}",
            f"a=ice-pwd:{ice_pwd}",
            f"a=fingerprint:sha-256 {fingerprint}",
            "a=setup:actpass",
            f"a=mid:{mid}",
            "a=sendonly",
            "a=rtcp-mux",
            *(
                [f"a=extmap:{TWCC_EXT} {TWCC_URI}", f"a=rtcp-fb:{pt} transport-cc"]
                if transport_cc
                else []
            ),
            f"a=rtpmap:{pt} {rtpmap}",
        ]
        lines += [f"a=rtcp-fb:{pt} {fb}" for fb in feedback]
        if fmtp:
            lines.append(f"a=fmtp:{pt} {fmtp}")
        lines += [
            f"a=msid:bench {kind}",
            f"a=ssrc:{ssrc} cname:{cname}",
            f"a=ssrc:{ssrc} msid:bench {kind}",
            _candidate_line(ip, port),
            "a=end-of-candidates",
        ]
    return "\r\n".join(lines) + "\r\n"


def build_subscriber_answer(
    offer_sdp: str,
    ice_ufrag: str,
    ice_pwd: str,
    fingerprint: str,
    *,
    setup: str = "active",
    candidate: tuple[str, int],
) -> str:
    """A recvonly answer to a server's subscriber (consumer) offer.

    Mirrors every m-section's mid, payload types (rtpmap, fmtp, rtcp-fb) and header extensions,
    so the server forwards exactly what it offered; data channels are rejected with port 0.
    `setup="active"` makes us the DTLS client, the normal answer to `actpass` (RFC 5763 5).
    """
    if setup not in ("active", "passive"):
        raise ValueError("an answer's a=setup is 'active' or 'passive'")
    offer = SessionDescription.parse(offer_sdp)
    ip, port = candidate
    lines = [
        "v=0",
        f"o=- {secrets.randbits(62)} 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
    ]
    bundle = [
        m.rtp.muxId
        for m in offer.media
        if m.kind in ("audio", "video") and m.port != 0 and m.rtp.muxId is not None
    ]
    if bundle:
        lines.append("a=group:BUNDLE " + " ".join(bundle))
    for media in offer.media:
        mid = media.rtp.muxId
        if media.kind not in ("audio", "video") or media.port == 0:
            fmt = " ".join(str(f) for f in media.fmt)
            lines += [f"m={media.kind} 0 {media.profile} {fmt}", "c=IN IP4 0.0.0.0"]
            if mid is not None:
                lines.append(f"a=mid:{mid}")
            continue
        lines += [
            f"m={media.kind} {port} {media.profile} {' '.join(str(f) for f in media.fmt)}",
            f"c=IN IP4 {ip}",
            f"a=rtcp:{port} IN IP4 {ip}",
            f"a=ice-ufrag:{ice_ufrag}",
            f"a=ice-pwd:{ice_pwd}",
            f"a=fingerprint:sha-256 {fingerprint}",
            f"a=setup:{setup}",
        ]
        if mid is not None:
            lines.append(f"a=mid:{mid}")
        direction = media.direction or "sendrecv"
        lines.append("a=recvonly" if direction in ("sendonly", "sendrecv") else "a=inactive")
        lines.append("a=rtcp-mux")
        lines += [f"a=extmap:{ext.id} {ext.uri}" for ext in media.rtp.headerExtensions]
        for codec in media.rtp.codecs:
            lines.append(f"a=rtpmap:{codec.payloadType} {codec}")
            for fb in codec.rtcpFeedback:
                value = fb.type + (f" {fb.parameter}" if fb.parameter else "")
                lines.append(f"a=rtcp-fb:{codec.payloadType} {value}")
            params = ";".join(
                f"{k}={v}" if v is not None else str(k) for k, v in codec.parameters.items()
            )
            if params:
                lines.append(f"a=fmtp:{codec.payloadType} {params}")
        lines += [_candidate_line(ip, port), "a=end-of-candidates"]
    return "\r\n".join(lines) + "\r\n"


def remote_media_params(sdp_text: str) -> RemoteMedia:
    """ICE, DTLS, candidates and SSRCs of a server's SDP (Janus's or Arbiter's).

    With BUNDLE every m-section carries the same transport, so the first audio/video section's
    credentials stand for all; candidates are collected from every section, deduplicated.
    """
    description = SessionDescription.parse(sdp_text)
    sections = [m for m in description.media if m.kind in ("audio", "video") and m.port != 0]
    if not sections:
        raise ValueError("SDP has no audio or video section")
    first = sections[0]
    if first.ice is None or not first.ice.usernameFragment or not first.ice.password:
        raise ValueError("SDP has no ICE credentials")
    if first.dtls is None:
        raise ValueError("SDP has no a=setup")
    sha256 = [f.value for f in first.dtls.fingerprints if f.algorithm.lower() == "sha-256"]
    if not sha256:
        raise ValueError("SDP has no sha-256 fingerprint")
    candidates: list[tuple[str, int]] = []
    ssrcs: dict[str, list[int]] = {}
    for media in sections:
        for cand in media.ice_candidates:
            addr = (cand.ip, cand.port)
            if cand.protocol.lower() == "udp" and addr not in candidates:
                candidates.append(addr)
        ssrcs.setdefault(media.kind, []).extend(s.ssrc for s in media.ssrc)
    return RemoteMedia(
        ice_ufrag=first.ice.usernameFragment,
        ice_pwd=first.ice.password,
        fingerprint=sha256[0].upper(),
        setup=_ROLE_TO_SETUP[first.dtls.role],
        candidates=candidates,
        ssrcs=ssrcs,
    )


def peer_client_for(
    certificate: Certificate,
    remote: RemoteMedia,
    *,
    ufrag: str | None = None,
    pwd: str | None = None,
) -> PeerClient:
    """A PeerClient whose DTLS role is the complement of the server's a=setup.

    `ufrag`/`pwd`: the ICE credentials our own SDP already announced (a publisher's offer is
    written before the server's answer exists); by default PeerClient picks fresh ones.

    The server says `active` (Janus answering a publisher): we are the DTLS server. It says
    `passive` (Arbiter's answers) or `actpass` (any server's offer, which we answer `active`):
    we are the DTLS client, PeerClient's default.
    """
    client = PeerClient(
        certificate,
        remote_ufrag=remote.ice_ufrag,
        remote_pwd=remote.ice_pwd,
        remote_fingerprint=remote.fingerprint,
        dtls_role="server" if remote.setup == "active" else "client",
    )
    if ufrag is not None and pwd is not None:
        client.ufrag, client.pwd = ufrag, pwd
    return client
