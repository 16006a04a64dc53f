"""SDP for the SFU's producer answers and consumer offers (sans-IO, no aiortc at run time).

The SFU forwards RTP without rewriting payload types, SSRCs or header-extension ids, so the
answer to a publisher's offer fixes those numbers (`Track`), and every consumer offer repeats
them exactly, with the publisher's `mid` values so the forwarded sdes:mid extension still names
the right m-section (RFC 8843 §15).

The SFU is ICE-lite on one UDP port (RFC 8445 §2.5, `a=ice-lite`), always the DTLS server
(RFC 5763 §5: `a=setup:passive` when answering, `a=setup:actpass` when offering), and requires
BUNDLE (RFC 8843) and rtcp-mux (RFC 5761) on everything it accepts.

This module is the negotiation policy (what we accept, what we write); the grammar and the
parsed shapes are `sdp_grammar.py`, whose names are re-exported here.
"""

from __future__ import annotations

import secrets
from collections.abc import Collection, Mapping

from .sctp import MAX_MESSAGE_SIZE
from .sdp_grammar import (
    CANONICAL_NAMES,
    DIRECTIONS,
    MAX_SDP_CHARS,
    MAX_SECTIONS,
    RTP_PROTOCOL,
    SCTP_PROTOCOL,
    URI_ABS_SEND_TIME,
    URI_AUDIO_LEVEL,
    URI_MID,
    URI_PLAYOUT_DELAY,
    URI_REPAIRED_RID,
    URI_RID,
    URI_TRANSPORT_CC,
    URI_VIDEO_ORIENTATION,
    Answer,
    Codec,
    LocalParams,
    MalformedInput,
    MediaSection,
    Offer,
    RemoteParams,
    Track,
    parse_answer_untrusted,
    parse_offer_untrusted,
)

# Re-exported: callers import the whole SDP vocabulary from here.
__all__ = [
    "CANONICAL_NAMES",
    "DIRECTIONS",
    "MAX_SDP_CHARS",
    "MAX_SECTIONS",
    "RTP_PROTOCOL",
    "SCTP_PROTOCOL",
    "URI_ABS_SEND_TIME",
    "URI_AUDIO_LEVEL",
    "URI_MID",
    "URI_PLAYOUT_DELAY",
    "URI_REPAIRED_RID",
    "URI_RID",
    "URI_TRANSPORT_CC",
    "URI_VIDEO_ORIENTATION",
    "Answer",
    "Codec",
    "LocalParams",
    "MalformedInput",
    "MediaSection",
    "Offer",
    "RemoteParams",
    "Track",
    "parse_answer_untrusted",
    "parse_offer_untrusted",
]

# Data channels (RFC 8841): our SCTP port and the largest message we take (a=max-message-size).
SCTP_PORT = 5000
DEFAULT_MAX_MESSAGE_SIZE = 65536  # RFC 8841 §6.1: when the peer does not say

# RFC 8445 §5.1.2.1: type preference 126 (host), local preference 65535, component 1.
HOST_PRIORITY = (126 << 24) | (65535 << 8) | (256 - 1)

# RFC 8285: what a publisher may stamp on packets we receive.
ACCEPTED_EXTENSIONS = frozenset(
    {URI_MID, URI_AUDIO_LEVEL, URI_ABS_SEND_TIME, URI_VIDEO_ORIENTATION, URI_PLAYOUT_DELAY}
)
# Taken only with what they serve: the RID pair with simulcast (RFC 8852), transport-cc when
# the SFU runs its feedback (`transport_cc=True`, docs/PROTOCOL.md section 4, RTCP).
SIMULCAST_EXTENSIONS = frozenset({URI_RID, URI_REPAIRED_RID})
# Never offered on consumers: abs-send-time describes the publisher's sending transport
# (forwarding its values would lie), and a consumer receives one stream, not the publisher's
# rids (docs/PROTOCOL.md section 4, Codecs). transport-cc is offered with the same id, but the
# SFU writes its own per-transport sequence numbers into it.
NOT_ON_CONSUMERS = frozenset({URI_ABS_SEND_TIME, URI_RID, URI_REPAIRED_RID})
VIDEO_FEEDBACK = ("goog-remb", "nack", "nack pli", "ccm fir")
OPUS_FMTP = "minptime=10;useinbandfec=1"  # RFC 7587 §6.1
H264_FMTP = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"  # RFC 6184

# RFC 8285 section 6: an answer's extmap direction mirrors the offer's. Consumer offers send
# what the publisher sends (`CONSUMER_EXTMAP`): its sendonly stays sendonly, an extension it
# only receives or never uses is offered inactive; sendrecv (or none) is written without one.
ANSWER_EXTMAP = {"sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}
CONSUMER_EXTMAP = {"sendonly": "sendonly", "recvonly": "inactive", "inactive": "inactive"}


def ice_candidate_line(
    ip: str, port: int, *, foundation: int = 1, priority: int = HOST_PRIORITY
) -> str:
    """A host candidate's attribute value (RFC 8839 §5.1), without the leading "a=" so it also
    serves as a trickled `candidate` message."""
    return f"candidate:{foundation} 1 udp {priority} {ip} {port} typ host"


# ---------------------------------------------------------------------------------------------
# Generating


def _origin(session_id: int, version: int) -> list[str]:
    return ["v=0", f"o=- {session_id} {version} IN IP4 0.0.0.0", "s=-", "t=0 0", "a=ice-lite"]


def _transport_lines(local: LocalParams, setup: str) -> list[str]:
    ip = local.candidates[0][0]
    lines = [f"c=IN IP{6 if ':' in ip else 4} {ip}"]
    for index, (cand_ip, cand_port) in enumerate(local.candidates):
        # Lower local preference for later candidates so the first is preferred (RFC 8445).
        priority = HOST_PRIORITY - (index << 8)
        lines.append(
            "a=" + ice_candidate_line(cand_ip, cand_port, foundation=index + 1, priority=priority)
        )
    lines += [
        "a=end-of-candidates",  # RFC 8838 §8.2: ICE-lite never trickles more
        f"a=ice-ufrag:{local.ice_ufrag}",
        f"a=ice-pwd:{local.ice_pwd}",
        f"a=fingerprint:sha-256 {local.fingerprint}",
        f"a=setup:{setup}",
    ]
    return lines


def _codec_lines(codecs: list[Codec]) -> list[str]:
    lines = []
    for c in codecs:
        rate = f"{c.clock_rate}/{c.channels}" if c.channels else str(c.clock_rate)
        lines.append(f"a=rtpmap:{c.payload_type} {c.name}/{rate}")
        lines += [f"a=rtcp-fb:{c.payload_type} {fb}" for fb in c.rtcp_fb]
        if c.fmtp:
            lines.append(f"a=fmtp:{c.payload_type} {c.fmtp}")
    return lines


def _choose_codecs(
    section: MediaSection,
    video_codec: str,
    previous: Track | None = None,
    transport_cc: bool = False,
) -> list[Codec]:
    """The codecs we accept from one offered section (empty: reject it). In a renegotiation
    the codec this section already uses (`previous`) is kept while it is still offered, so a
    re-offer that lists the codecs in another order changes nothing (RFC 8829 section 5.3.1)."""
    offered = section.codecs
    if previous is not None and previous.kind == section.kind and previous.codecs:
        kept = previous.codecs[0].payload_type
        offered = sorted(offered, key=lambda c: c.payload_type != kept)  # stable: kept first
    if section.kind == "audio":
        # RFC 7587 §7: Opus is always opus/48000/2 in SDP.
        for c in offered:
            if c.name == "opus" and c.clock_rate == 48000 and c.channels == 2:
                fbs = ("transport-cc",) if transport_cc and "transport-cc" in c.rtcp_fb else ()
                return [Codec(c.payload_type, "opus", 48000, 2, OPUS_FMTP, fbs)]
        return []
    primary: Codec | None = None
    for c in offered:
        if c.clock_rate != 90000 or c.name != video_codec:
            continue
        params = c.parameters
        if video_codec == "H264" and (
            params.get("packetization-mode") != "1"
            or params.get("profile-level-id", "").lower() != "42e01f"
        ):
            continue
        primary = c
        break
    if primary is None:
        return []
    fmtp = H264_FMTP if video_codec == "H264" else None  # RFC 7741: VP8 needs no fmtp
    fbs = tuple(fb for fb in VIDEO_FEEDBACK if fb in primary.rtcp_fb)
    if transport_cc and "transport-cc" in primary.rtcp_fb:
        # The browser's send-side estimator then runs on our feedback; REMB is only for peers
        # without transport-cc (docs/PROTOCOL.md section 4, RTCP).
        fbs = tuple(fb for fb in fbs if fb != "goog-remb") + ("transport-cc",)
    chosen = [Codec(primary.payload_type, video_codec, 90000, None, fmtp, fbs)]
    for c in section.codecs:  # RFC 4588 §8.6: the rtx payload type bound to ours with apt=
        if c.name == "rtx" and c.parameters.get("apt") == str(primary.payload_type):
            chosen.append(
                Codec(c.payload_type, "rtx", c.clock_rate, None, f"apt={primary.payload_type}")
            )
            break
    return chosen


def _track_of(
    section: MediaSection, codecs: list[Codec], extensions: list[tuple[int, str]]
) -> Track:
    """SSRCs from a=ssrc / a=ssrc-group:FID (RFC 5576, RFC 4588 §8.7); msid prefers media level."""
    ssrc = rtx_ssrc = None
    rids = simulcast_rids(section, extensions)
    for semantics, group in [] if rids else section.ssrc_groups:
        if semantics == "FID" and len(group) == 2:
            ssrc, rtx_ssrc = group
            break
    if ssrc is None and section.ssrcs and not rids:
        # With simulcast the SSRCs are learnt from the RID extension of arriving packets
        # (RFC 8852): a=ssrc lines (Firefox writes one per layer) say nothing of which is which.
        ssrc = next(iter(section.ssrcs))
    attrs = section.ssrcs.get(ssrc, {}) if ssrc is not None else {}
    msid = section.msid or attrs.get("msid")
    directions = {i: section.extmap_directions[i] for i, _ in extensions
                  if i in section.extmap_directions}  # fmt: skip
    return Track(
        section.kind, section.mid, ssrc, rtx_ssrc, attrs.get("cname"), msid, codecs, extensions,
        directions, rids,
    )  # fmt: skip


def simulcast_rids(section: MediaSection, extensions: list[tuple[int, str]]) -> tuple[str, ...]:
    """The layers we take from an offered video section (RFC 8853): every stream of its
    a=simulcast:send has an a=rid ... send, and the RID extension is among `extensions` (the
    only way to tell the layers' SSRCs apart). Otherwise () and the section is answered
    without simulcast, so the browser sends its first encoding alone (RFC 8853 section 5.3)."""
    sent = {rid for rid, direction in section.rids if direction == "send"}
    streams = section.simulcast_send
    if (
        section.kind != "video"
        or len(streams) < 2
        or not all(rid in sent for rid in streams)
        or all(uri != URI_RID for _, uri in extensions)
    ):
        return ()
    return tuple(streams)


def _extmap_line(ext_id: int, uri: str, direction: str | None) -> str:
    """`a=extmap:<id>[/<direction>] <uri>` (RFC 8285 section 5)."""
    return f"a=extmap:{ext_id}{'/' + direction if direction else ''} {uri}"


def _rejected_lines(section: MediaSection, local: LocalParams) -> list[str]:
    # RFC 3264 §6 / RFC 8843 §7.3.3: port 0, mid kept, left out of the BUNDLE group. The ICE,
    # DTLS and rtcp-mux lines are redundant for a rejected section, but aiortc refuses an answer
    # whose every m-section lacks them.
    if section.kind == "application":
        fmt = "webrtc-datachannel" if section.protocol == SCTP_PROTOCOL else section.formats[0]
        lines = [f"m=application 0 {section.protocol} {fmt}"]
    else:
        lines = [f"m={section.kind} 0 {section.protocol} {section.formats[0]}"]
    lines += [
        "c=IN IP4 0.0.0.0",
        f"a=ice-ufrag:{local.ice_ufrag}",
        f"a=ice-pwd:{local.ice_pwd}",
        f"a=fingerprint:sha-256 {local.fingerprint}",
        "a=setup:passive",
        f"a=mid:{section.mid}",
    ]
    if section.kind != "application":
        lines += ["a=inactive", "a=rtcp-mux"]
    return lines


def application_section(offer: Offer) -> MediaSection | None:
    """The offer's data channel section we accept (RFC 8841), if any: the first bundled
    `m=application ... UDP/DTLS/SCTP webrtc-datachannel` that is not rejected."""
    for section in offer.sections:
        if (
            section.kind == "application"
            and section.protocol == SCTP_PROTOCOL
            and section.formats == ["webrtc-datachannel"]
            and not section.rejected
            and section.mid in offer.bundle
        ):
            return section
    return None


def _application_lines(section: MediaSection, local: LocalParams, port: int) -> list[str]:
    lines = [f"m=application {port} {SCTP_PROTOCOL} webrtc-datachannel"]
    lines += _transport_lines(local, "passive")
    lines += [f"a=mid:{section.mid}", f"a=sctp-port:{SCTP_PORT}",
              f"a=max-message-size:{MAX_MESSAGE_SIZE}"]  # fmt: skip
    return lines


def build_producer_answer(
    offer: Offer,
    local: LocalParams,
    *,
    video_codec: str = "VP8",
    session_id: int | None = None,
    version: int = 1,
    previous: Mapping[str, Track] | None = None,
    transport_cc: bool = False,
) -> tuple[str, list[Track]]:
    """Answer a publisher's offer; returns the SDP and the tracks it will send us.

    A renegotiation passes the same `session_id`, the next `version` (RFC 3264 section 8: the
    o= line's version grows by one per new description) and the tracks of the previous answer
    by mid (`previous`), whose codecs are kept while still offered: an identical re-offer gets
    an identical answer but for the version.
    """
    if video_codec not in ("VP8", "H264"):
        raise ValueError(f"unsupported video codec {video_codec!r}")
    if not local.candidates:
        raise ValueError("LocalParams needs at least one candidate")
    port = local.candidates[0][1]
    bodies: list[list[str]] = []
    accepted: list[str] = []
    tracks: list[Track] = []
    data = application_section(offer)
    for section in offer.sections:
        if section is data:
            accepted.append(section.mid)
            bodies.append(_application_lines(section, local, port))
            continue
        codecs: list[Codec] = []
        if (
            section.kind in ("audio", "video")
            and not section.rejected
            and section.protocol == RTP_PROTOCOL
            and section.mid in offer.bundle
        ):
            codecs = _choose_codecs(
                section, video_codec, (previous or {}).get(section.mid), transport_cc
            )
        if not codecs:
            bodies.append(_rejected_lines(section, local))
            continue
        accepted.append(section.mid)
        publishes = section.direction in ("sendrecv", "sendonly")
        accepted_uris = ACCEPTED_EXTENSIONS | SIMULCAST_EXTENSIONS
        if transport_cc:
            accepted_uris |= {URI_TRANSPORT_CC}
        extensions = [(i, uri) for i, uri in section.extmaps if uri in accepted_uris]
        rids = simulcast_rids(section, extensions) if publishes else ()
        if not rids:
            extensions = [(i, uri) for i, uri in extensions if uri not in SIMULCAST_EXTENSIONS]
        lines = [
            f"m={section.kind} {port} {RTP_PROTOCOL} {' '.join(str(c.payload_type) for c in codecs)}"
        ]
        lines += _transport_lines(local, "passive")
        lines.append(f"a=mid:{section.mid}")
        lines += [
            _extmap_line(i, uri, ANSWER_EXTMAP.get(section.extmap_directions.get(i, "")))
            for i, uri in extensions
        ]
        lines.append("a=recvonly" if publishes else "a=inactive")
        lines.append("a=rtcp-mux")
        if section.rtcp_rsize:
            lines.append("a=rtcp-rsize")  # RFC 5506
        lines += _codec_lines(codecs)
        if rids:  # RFC 8851 section 4 / RFC 8853 section 5.3: we receive every offered layer
            lines += [f"a=rid:{rid} recv" for rid in rids]
            lines.append(f"a=simulcast:recv {';'.join(rids)}")
        bodies.append(lines)
        if publishes:
            tracks.append(_track_of(section, codecs, extensions))
    if not accepted:
        raise MalformedInput("SDP: offer has no audio, video or data channel section we can accept")
    head = _origin(secrets.randbits(62) if session_id is None else session_id, version)
    head += [f"a=group:BUNDLE {' '.join(accepted)}", "a=msid-semantic: WMS"]
    return "\r\n".join(head + [line for body in bodies for line in body]) + "\r\n", tracks


def _consumer_section(
    track: Track,
    local: LocalParams,
    setup: str,
    *,
    active: bool = True,
    codecs: list[Codec] | None = None,
    extensions: list[tuple[int, str]] | None = None,
    rtcp_rsize: bool = True,
) -> list[str]:
    """One m-section of a consumer connection, sent by the SFU: the publisher's track with its
    numbers, `a=sendonly`; or, for a track the publisher no longer sends, `a=inactive` with
    the same mid, kind and codecs and no SSRCs (RFC 8829 section 5.2.2: an m-section keeps
    its place; it is never removed or reordered)."""
    codecs = track.codecs if codecs is None else codecs
    if extensions is None:
        extensions = [(i, u) for i, u in track.header_extensions
                      if u not in NOT_ON_CONSUMERS]  # fmt: skip
    port = local.candidates[0][1]
    formats = " ".join(str(c.payload_type) for c in codecs)
    lines = [f"m={track.kind} {port} {RTP_PROTOCOL} {formats}"]
    lines += _transport_lines(local, setup)
    lines.append(f"a=mid:{track.mid}")
    lines += [
        _extmap_line(i, uri, CONSUMER_EXTMAP.get(track.extmap_directions.get(i, "")))
        for i, uri in extensions
    ]
    lines.append("a=sendonly" if active else "a=inactive")
    if active and track.msid:
        lines.append(f"a=msid:{track.msid}")
    lines.append("a=rtcp-mux")
    if rtcp_rsize:
        lines.append("a=rtcp-rsize")
    lines += _codec_lines(codecs)
    if not active:
        return lines
    ssrcs = [s for s in (track.ssrc, track.rtx_ssrc) if s is not None]
    if track.ssrc is not None and track.rtx_ssrc is not None:
        lines.append(f"a=ssrc-group:FID {track.ssrc} {track.rtx_ssrc}")  # RFC 4588 §8.7
    cname = track.cname or "arbiter"  # RFC 5576 §6.1: every a=ssrc group carries a cname
    for ssrc in ssrcs:
        lines.append(f"a=ssrc:{ssrc} cname:{cname}")
        if track.msid:
            lines.append(f"a=ssrc:{ssrc} msid:{track.msid}")
    return lines


def _consumer_head(
    session_id: int, version: int, bundle: list[str], active: list[Track]
) -> list[str]:
    streams = list(dict.fromkeys(t.msid.split()[0] for t in active if t.msid))
    lines = _origin(session_id, version)
    lines += [f"a=group:BUNDLE {' '.join(bundle)}", "a=msid-semantic: WMS " + " ".join(streams)]
    return lines


def build_consumer_offer(
    tracks: list[Track],
    local: LocalParams,
    *,
    session_id: int,
    version: int,
    inactive: Collection[str] = (),
) -> str:
    """Offer one publisher's tracks to a consumer, sendonly, with the publisher's numbers.

    A re-offer on the same consumer connection passes every m-section offered so far, in
    order (`tracks`: for each, the track it carries or last carried), the same `session_id`
    and the next `version`; the mids in `inactive` are tracks the publisher stopped sending,
    offered `a=inactive` in their place (RFC 8829 section 5.2.2).
    """
    if not tracks:
        raise ValueError("a consumer offer needs at least one track (zero m-sections is invalid)")
    if not local.candidates:
        raise ValueError("LocalParams needs at least one candidate")
    mids = [t.mid for t in tracks]
    if len(set(mids)) != len(mids):
        raise ValueError("tracks must have distinct mids")
    active = [t for t in tracks if t.mid not in inactive]
    lines = _consumer_head(session_id, version, mids, active)
    for track in tracks:
        lines += _consumer_section(track, local, "actpass", active=track.mid not in inactive)
    return "\r\n".join(lines) + "\r\n"


def build_consumer_answer(
    offer: Offer,
    tracks: list[Track],
    local: LocalParams,
    *,
    session_id: int,
    version: int,
    inactive: Collection[str] = (),
) -> str:
    """Answer a subscriber's offer on its consumer connection (it renegotiates, e.g. an ICE
    restart from `pc.restartIce()`): the SFU stays the sender of `tracks` (by mid, as in
    `build_consumer_offer`) and the DTLS server.

    An offered section is answered `a=sendonly` with the track's numbers when its mid is one
    of `tracks`, its kind matches, the subscriber still receives it (recvonly/sendrecv) and
    it still offers the track's primary payload type (rtx, extensions and rtcp-rsize only as
    offered); an inactive track's section is answered `a=inactive`. Anything else is rejected
    (port 0, mid kept). Nothing acceptable at all: MalformedInput.
    """
    if not local.candidates:
        raise ValueError("LocalParams needs at least one candidate")
    by_mid = {t.mid: t for t in tracks}
    bodies: list[list[str]] = []
    accepted: list[str] = []
    answered: list[Track] = []
    for section in offer.sections:
        track = by_mid.get(section.mid)
        offered_pts = {c.payload_type for c in section.codecs}
        if (
            track is None
            or section.kind != track.kind
            or section.rejected
            or section.protocol != RTP_PROTOCOL
            or section.mid not in offer.bundle
            or not track.codecs
            or track.codecs[0].payload_type not in offered_pts
        ):
            bodies.append(_rejected_lines(section, local))
            continue
        codecs = [c for c in track.codecs if c.payload_type in offered_pts]
        offered_ext = set(section.extmaps)
        extensions = [(i, u) for i, u in track.header_extensions
                      if u not in NOT_ON_CONSUMERS and (i, u) in offered_ext]  # fmt: skip
        active = track.mid not in inactive and section.direction in ("recvonly", "sendrecv")
        accepted.append(section.mid)
        if active:
            answered.append(track)
        bodies.append(
            _consumer_section(
                track,
                local,
                "passive",
                active=active,
                codecs=codecs,
                extensions=extensions,
                rtcp_rsize=section.rtcp_rsize,
            )
        )
    if not accepted:
        raise MalformedInput("SDP: offer has no m-section of this consumer connection")
    lines = _consumer_head(session_id, version, accepted, answered)
    return "\r\n".join(lines + [line for body in bodies for line in body]) + "\r\n"
