"""SDP for the SFU's producer answers and consumer offers (sans-IO, no aiortc at run time).

The SFU forwards RTP without rewriting payload types, SSRCs or header-extension ids, so the
answer to a publisher's offer fixes those numbers (`Track`), and every consumer offer repeats
them exactly, with the publisher's `mid` values so the forwarded sdes:mid extension still names
the right m-section (RFC 8843 §15).

The SFU is ICE-lite on one UDP port (RFC 8445 §2.5, `a=ice-lite`), always the DTLS server
(RFC 5763 §5: `a=setup:passive` when answering, `a=setup:actpass` when offering), and requires
BUNDLE (RFC 8843) and rtcp-mux (RFC 5761) on everything it accepts.

The parser is our own rather than `aiortc.sdp`: that one asserts and raises arbitrary exceptions
on junk, and drops what we need (extmap directions, ssrc attributes). Every value we use is
checked against an ASCII regex, so nothing but `MalformedInput` leaves `*_untrusted`.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from arbiter.errors import MalformedInput

MAX_SDP_CHARS = 64 * 1024
MAX_SECTIONS = 16
RTP_PROTOCOL = "UDP/TLS/RTP/SAVPF"  # RFC 5764 §8 + RFC 8829 §5.1.2
SCTP_PROTOCOL = "UDP/DTLS/SCTP"
# Data channels (RFC 8841): our SCTP port and the largest message we take (a=max-message-size).
SCTP_PORT = 5000
MAX_MESSAGE_SIZE = 262144
DEFAULT_MAX_MESSAGE_SIZE = 65536  # RFC 8841 §6.1: when the peer does not say

# RFC 8445 §5.1.2.1: type preference 126 (host), local preference 65535, component 1.
HOST_PRIORITY = (126 << 24) | (65535 << 8) | (256 - 1)

URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
URI_VIDEO_ORIENTATION = "urn:3gpp:video-orientation"
URI_PLAYOUT_DELAY = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay"
URI_TRANSPORT_CC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
# RFC 8285: what a publisher may stamp on packets we receive.
ACCEPTED_EXTENSIONS = frozenset(
    {URI_MID, URI_AUDIO_LEVEL, URI_ABS_SEND_TIME, URI_VIDEO_ORIENTATION, URI_PLAYOUT_DELAY}
)
# abs-send-time and transport-cc describe the sending transport (docs/PROTOCOL.md section 4, Codecs): forwarding
# the publisher's values to a consumer would lie, so consumers are never offered them.
PER_TRANSPORT_EXTENSIONS = frozenset({URI_ABS_SEND_TIME, URI_TRANSPORT_CC})
VIDEO_FEEDBACK = ("goog-remb", "nack", "nack pli", "ccm fir")
OPUS_FMTP = "minptime=10;useinbandfec=1"  # RFC 7587 §6.1
H264_FMTP = "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"  # RFC 6184
CANONICAL_NAMES = {"opus": "opus", "vp8": "VP8", "h264": "H264", "rtx": "rtx"}
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")

_TOKEN = r"[A-Za-z0-9!#$%&'*+\-.^_`{|}~]+"  # RFC 4566 token
_ICE_CHARS = re.compile(r"[A-Za-z0-9+/]+")  # RFC 8839 §5.4 ice-char
_MID = re.compile(r"[A-Za-z0-9!#$%&'*+\-.^_`{|}~]{1,16}")  # fits the one-byte sdes:mid extension
_FINGERPRINT = re.compile(r"(" + _TOKEN + r") ([0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){15,63})")
# RFC 4566 §5.14; formats are printable ASCII (str.isdigit/\S would let Unicode digits through).
_MLINE = re.compile(
    r"(" + _TOKEN + r") ([0-9]{1,5})(?:/[0-9]{1,3})? ([A-Za-z0-9/]+)((?: [\x21-\x7e]+)+)"
)
_PT = re.compile(r"[0-9]{1,3}")
_RTPMAP = re.compile(r"([0-9]{1,3}) ([A-Za-z0-9\-_.]{1,32})/([0-9]{1,6})(?:/([0-9]{1,2}))?")
_FMTP = re.compile(r"([0-9]{1,3}) ([\x21-\x7e][\x20-\x7e]{0,511})")
_RTCP_FB = re.compile(r"([0-9]{1,3}|\*) (" + _TOKEN + r")(?: (" + _TOKEN + r"))?")
_EXTMAP = re.compile(
    r"([0-9]{1,3})(?:/(sendrecv|sendonly|recvonly|inactive))? ([\x21-\x7e]{1,256})(?: .*)?"
)
# RFC 8285 section 6: an answer's extmap direction mirrors the offer's. Consumer offers send
# what the publisher sends (`CONSUMER_EXTMAP`): its sendonly stays sendonly, an extension it
# only receives or never uses is offered inactive; sendrecv (or none) is written without one.
ANSWER_EXTMAP = {"sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}
CONSUMER_EXTMAP = {"sendonly": "sendonly", "recvonly": "inactive", "inactive": "inactive"}
_SSRC = re.compile(r"([0-9]{1,10}) (" + _TOKEN + r")(?::([\x20-\x7e]{0,256}))?")
_SSRC_GROUP = re.compile(r"(" + _TOKEN + r")((?: [0-9]{1,10}){1,8})")
_MSID = re.compile(r"(" + _TOKEN + r")(?: (" + _TOKEN + r"))?")


@dataclass
class LocalParams:
    """The SFU's side of every transport: ICE credentials, certificate, host candidates."""

    ice_ufrag: str
    ice_pwd: str
    fingerprint: str  # sha-256, "AB:CD:..." (RFC 8122)
    candidates: list[tuple[str, int]]  # (ip, port): one host candidate each


@dataclass(frozen=True)
class Codec:
    payload_type: int
    name: str  # "opus" | "VP8" | "H264" | "rtx" (others only while parsing offers)
    clock_rate: int
    channels: int | None = None
    fmtp: str | None = None
    rtcp_fb: tuple[str, ...] = ()

    @property
    def parameters(self) -> dict[str, str]:
        """The fmtp as key → value (lower-case keys); flags map to ""."""
        out: dict[str, str] = {}
        for part in (self.fmtp or "").split(";"):
            key, _, value = part.strip().partition("=")
            if key:
                out[key.lower()] = value.strip()
        return out


@dataclass
class Track:
    """One negotiated publisher m-section: what consumers must be offered to forward it as is."""

    kind: str  # "audio" | "video"
    mid: str
    ssrc: int | None
    rtx_ssrc: int | None
    cname: str | None
    msid: str | None  # "<stream id> <track id>"
    codecs: list[Codec]  # primary codec first, then its rtx (apt=primary)
    header_extensions: list[tuple[int, str]]  # (id, uri) as accepted in the producer answer
    # id -> the publisher's extmap direction when its offer gave one (RFC 8285 section 5)
    extmap_directions: dict[int, str] = field(default_factory=dict)


@dataclass
class RemoteParams:
    ice_ufrag: str
    ice_pwd: str
    fingerprints: list[tuple[str, str]]  # (hash function, value), RFC 8122
    setup: str  # RFC 4145: "actpass" | "active" | "passive"


@dataclass
class MediaSection:
    """One parsed m-section (offer or answer)."""

    kind: str
    port: int
    protocol: str
    formats: list[str]
    mid: str = ""
    direction: str = "sendrecv"  # RFC 4566 §6: the default when absent
    codecs: list[Codec] = field(default_factory=list)  # rtpmap'd formats, in m-line order
    extmaps: list[tuple[int, str]] = field(default_factory=list)
    extmap_directions: dict[int, str] = field(default_factory=dict)  # id -> "sendonly", ...
    ssrcs: dict[int, dict[str, str]] = field(default_factory=dict)  # ssrc → attribute → value
    ssrc_groups: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    msid: str | None = None
    rtcp_mux: bool = False
    rtcp_rsize: bool = False
    bundle_only: bool = False
    ice_ufrag: str | None = None
    ice_pwd: str | None = None
    fingerprints: list[tuple[str, str]] = field(default_factory=list)
    setup: str | None = None
    sctp_port: int | None = None  # m=application only (RFC 8841 §5)
    max_message_size: int | None = None

    @property
    def rejected(self) -> bool:
        # RFC 8843 §7.5.2: port 0 with a=bundle-only is a bundled section, not a rejected one.
        return self.port == 0 and not self.bundle_only


@dataclass
class Offer:
    remote: RemoteParams
    bundle: list[str]
    sections: list[MediaSection]


@dataclass
class Answer:
    remote: RemoteParams
    accepted_mids: list[str]  # in m-line order, port != 0
    sections: list[MediaSection]


def ice_candidate_line(
    ip: str, port: int, *, foundation: int = 1, priority: int = HOST_PRIORITY
) -> str:
    """A host candidate's attribute value (RFC 8839 §5.1), without the leading "a=" so it also
    serves as a trickled `candidate` message."""
    return f"candidate:{foundation} 1 udp {priority} {ip} {port} typ host"


# ---------------------------------------------------------------------------------------------
# Parsing


def _fail(message: str) -> MalformedInput:
    return MalformedInput(f"SDP: {message}")


def _check_ice(ufrag: str, pwd: str) -> None:
    # RFC 8839 §5.4: ufrag 4-256 ice-chars, pwd 22-256 ice-chars.
    if not (4 <= len(ufrag) <= 256 and _ICE_CHARS.fullmatch(ufrag)):
        raise _fail("a=ice-ufrag must be 4-256 ice-chars (RFC 8839)")
    if not (22 <= len(pwd) <= 256 and _ICE_CHARS.fullmatch(pwd)):
        raise _fail("a=ice-pwd must be 22-256 ice-chars (RFC 8839)")


def _codec_attr(
    section: MediaSection, pattern: re.Pattern[str], value: str, name: str
) -> re.Match[str]:
    match = pattern.fullmatch(value)
    if match is None:
        raise _fail(f"bad a={name} in the {section.kind} m-section")
    return match


def _parse_media_attr(
    section: MediaSection,
    attr: str,
    value: str | None,
    fmtps: dict[int, str],
    feedback: list[tuple[str, str]],
) -> None:
    """Fold one media-level attribute into `section` (fmtp and rtcp-fb wait for all rtpmaps)."""
    if attr == "mid":
        if value is None or not _MID.fullmatch(value):
            raise _fail("a=mid must be a 1-16 character token (RFC 8843)")
        section.mid = value
    elif attr in DIRECTIONS:
        section.direction = attr
    elif attr == "rtcp-mux":
        section.rtcp_mux = True
    elif attr == "rtcp-rsize":
        section.rtcp_rsize = True
    elif attr == "bundle-only":
        section.bundle_only = True
    elif value is None:
        return
    elif attr == "ice-ufrag":
        section.ice_ufrag = value
    elif attr == "ice-pwd":
        section.ice_pwd = value
    elif attr == "fingerprint":
        section.fingerprints.append(_parse_fingerprint(value))
    elif attr == "setup":
        section.setup = value
    elif attr == "msid":
        if not _MSID.fullmatch(value):
            raise _fail("bad a=msid")
        section.msid = value
    elif attr == "rtpmap":
        m = _codec_attr(section, _RTPMAP, value, "rtpmap")
        name = CANONICAL_NAMES.get(m[2].lower(), m[2])
        channels = int(m[4]) if m[4] else None
        section.codecs.append(Codec(int(m[1]), name, int(m[3]), channels))
    elif attr == "fmtp":
        m = _codec_attr(section, _FMTP, value, "fmtp")
        fmtps[int(m[1])] = m[2]
    elif attr == "rtcp-fb":
        m = _codec_attr(section, _RTCP_FB, value, "rtcp-fb")
        feedback.append((m[1], m[2] + (f" {m[3]}" if m[3] else "")))
    elif attr == "extmap":
        m = _codec_attr(section, _EXTMAP, value, "extmap")
        ext_id = int(m[1])
        # RFC 8285 §5: 1-14 (one-byte) or up to 255 (two-byte); 15 is reserved.
        if not 1 <= ext_id <= 255 or ext_id == 15 or any(ext_id == i for i, _ in section.extmaps):
            raise _fail(f"bad or duplicate a=extmap id {ext_id} (RFC 8285)")
        section.extmaps.append((ext_id, m[3]))
        if m[2]:
            section.extmap_directions[ext_id] = m[2]
    elif attr == "ssrc":
        m = _codec_attr(section, _SSRC, value, "ssrc")
        ssrc = int(m[1])
        if ssrc >= 1 << 32:
            raise _fail("a=ssrc out of range")
        section.ssrcs.setdefault(ssrc, {})[m[2]] = m[3] or ""
    elif attr in ("sctp-port", "max-message-size"):
        if not re.fullmatch(r"[0-9]{1,10}", value) or (attr == "sctp-port" and int(value) > 65535):
            raise _fail(f"bad a={attr} (RFC 8841)")
        if attr == "sctp-port":
            section.sctp_port = int(value)
        else:
            section.max_message_size = int(value)
    elif attr == "ssrc-group":
        m = _codec_attr(section, _SSRC_GROUP, value, "ssrc-group")
        ssrcs = tuple(int(s) for s in m[2].split())
        if any(s >= 1 << 32 for s in ssrcs):
            raise _fail("a=ssrc-group ssrc out of range")
        section.ssrc_groups.append((m[1], ssrcs))


def _parse_fingerprint(value: str) -> tuple[str, str]:
    match = _FINGERPRINT.fullmatch(value)
    if match is None:
        raise _fail("bad a=fingerprint (RFC 8122)")
    return match[1].lower(), match[2].upper()


def _finish_section(
    section: MediaSection, fmtps: dict[int, str], feedback: list[tuple[str, str]]
) -> None:
    """Attach fmtp and rtcp-fb to codecs and keep only codecs listed on the m-line, in its order."""
    by_pt: dict[int, Codec] = {}
    for codec in section.codecs:
        fbs = tuple(fb for pt, fb in feedback if pt in ("*", str(codec.payload_type)))
        by_pt[codec.payload_type] = Codec(
            codec.payload_type,
            codec.name,
            codec.clock_rate,
            codec.channels,
            fmtps.get(codec.payload_type),
            fbs,
        )
    section.codecs = [
        by_pt[int(f)] for f in section.formats if _PT.fullmatch(f) and int(f) in by_pt
    ]


def _parse_untrusted(sdp: str) -> tuple[dict[str, list[str]], list[MediaSection]]:
    """Split into session attributes and m-sections; validate syntax and sizes."""
    if not isinstance(sdp, str):
        raise _fail("not a string")
    if len(sdp) > MAX_SDP_CHARS:
        raise _fail(f"longer than {MAX_SDP_CHARS} characters")
    lines = [line[:-1] if line.endswith("\r") else line for line in sdp.split("\n")]
    while lines and lines[-1] == "":
        lines.pop()
    if not lines or lines[0] != "v=0":
        raise _fail("does not start with v=0 (RFC 4566)")
    session: dict[str, list[str]] = {}
    sections: list[MediaSection] = []
    fmtps: dict[int, str] = {}
    feedback: list[tuple[str, str]] = []
    for number, line in enumerate(lines, 1):
        if len(line) < 2 or line[1] != "=" or not "a" <= line[0] <= "z":
            raise _fail(f"line {number} is not <type>=<value>")
        kind, value = line[0], line[2:]
        if kind == "m":
            if sections:
                _finish_section(sections[-1], fmtps, feedback)
            if len(sections) == MAX_SECTIONS:
                raise _fail(f"more than {MAX_SECTIONS} m-sections")
            m = _MLINE.fullmatch(value)
            if m is None or int(m[2]) > 65535:
                raise _fail(f"bad m-line {number}")
            formats = m[4].split()
            if len(formats) > 64:
                raise _fail("more than 64 formats on an m-line")
            sections.append(MediaSection(m[1], int(m[2]), m[3], formats))
            fmtps, feedback = {}, []
        elif kind == "a":
            attr, sep, attr_value = value.partition(":")
            if sections:
                _parse_media_attr(sections[-1], attr, attr_value if sep else None, fmtps, feedback)
            else:
                session.setdefault(attr, []).append(attr_value)
    if sections:
        _finish_section(sections[-1], fmtps, feedback)
    return session, sections


def _validate_untrusted(sdp: str) -> tuple[RemoteParams, list[str], list[MediaSection]]:
    """Checks common to offers and answers; returns the transport parameters and BUNDLE mids."""
    session, sections = _parse_untrusted(sdp)
    if not sections:
        raise _fail("no m-sections")
    if "ice-lite" in session:
        raise _fail("the remote side is ICE-lite too; someone must be a full agent (RFC 8445)")
    mids = [s.mid for s in sections]
    if "" in mids:
        raise _fail("an m-section has no a=mid (RFC 8843)")
    if len(set(mids)) != len(mids):
        raise _fail("duplicate a=mid")
    bundles = [g.split()[1:] for g in session.get("group", []) if g.split()[:1] == ["BUNDLE"]]
    if not bundles or not bundles[0]:
        raise _fail("no a=group:BUNDLE (RFC 8843 is required)")
    bundle = bundles[0]
    if any(mid not in mids for mid in bundle):
        raise _fail("a=group:BUNDLE names an unknown mid")
    for section in sections:
        if not section.rejected and section.kind in ("audio", "video") and not section.rtcp_mux:
            raise _fail(f"m-section {section.mid} lacks a=rtcp-mux (RFC 5761 is required)")
    # RFC 8843 §7.3.1: the first mid in the group tags the section whose transport is used.
    tagged = sections[mids.index(bundle[0])]
    ufrag = tagged.ice_ufrag or next(iter(session.get("ice-ufrag", [])), None)
    pwd = tagged.ice_pwd or next(iter(session.get("ice-pwd", [])), None)
    if ufrag is None or pwd is None:
        raise _fail("no a=ice-ufrag/a=ice-pwd (RFC 8839)")
    _check_ice(ufrag, pwd)
    fingerprints = tagged.fingerprints or [
        _parse_fingerprint(v) for v in session.get("fingerprint", [])
    ]
    if not fingerprints:
        raise _fail("no a=fingerprint (RFC 8122)")
    setup = tagged.setup or next(iter(session.get("setup", [])), None)
    if setup not in (None, "actpass", "active", "passive"):
        raise _fail("bad a=setup (RFC 4145)")
    return RemoteParams(ufrag, pwd, fingerprints, setup or ""), bundle, sections


def parse_offer_untrusted(sdp: str) -> Offer:
    """Parse and check a producer offer (a browser's or aiortc's)."""
    remote, bundle, sections = _validate_untrusted(sdp)
    # RFC 4145 §4: an offer without a=setup means active; RFC 5763 §5 asks offerers for actpass.
    remote.setup = remote.setup or "active"
    if remote.setup == "passive":
        raise _fail("offer says a=setup:passive but the SFU is always the DTLS server (RFC 5763)")
    return Offer(remote, bundle, sections)


def parse_answer_untrusted(sdp: str) -> Answer:
    """Parse and check a consumer's answer to our offer (which said a=setup:actpass)."""
    remote, _, sections = _validate_untrusted(sdp)
    if remote.setup != "active":
        raise _fail("answer must say a=setup:active: the SFU is always the DTLS server (RFC 5763)")
    accepted = [s.mid for s in sections if not s.rejected]
    return Answer(remote, accepted, sections)


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
        lines += [f"a=rtcp-fb:{c.payload_type} {fb}" for fb in c.rtcp_fb if fb != "transport-cc"]
        if c.fmtp:
            lines.append(f"a=fmtp:{c.payload_type} {c.fmtp}")
    return lines


def _choose_codecs(
    section: MediaSection, video_codec: str, previous: Track | None = None
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
                return [Codec(c.payload_type, "opus", 48000, 2, OPUS_FMTP)]
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
    for semantics, group in section.ssrc_groups:
        if semantics == "FID" and len(group) == 2:
            ssrc, rtx_ssrc = group
            break
    if ssrc is None and section.ssrcs:
        ssrc = next(iter(section.ssrcs))
    attrs = section.ssrcs.get(ssrc, {}) if ssrc is not None else {}
    msid = section.msid or attrs.get("msid")
    directions = {i: section.extmap_directions[i] for i, _ in extensions
                  if i in section.extmap_directions}  # fmt: skip
    return Track(
        section.kind, section.mid, ssrc, rtx_ssrc, attrs.get("cname"), msid, codecs, extensions,
        directions,
    )  # fmt: skip


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
            codecs = _choose_codecs(section, video_codec, (previous or {}).get(section.mid))
        if not codecs:
            bodies.append(_rejected_lines(section, local))
            continue
        accepted.append(section.mid)
        publishes = section.direction in ("sendrecv", "sendonly")
        extensions = [(i, uri) for i, uri in section.extmaps if uri in ACCEPTED_EXTENSIONS]
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
                      if u not in PER_TRANSPORT_EXTENSIONS]  # fmt: skip
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
                      if u not in PER_TRANSPORT_EXTENSIONS and (i, u) in offered_ext]  # fmt: skip
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
