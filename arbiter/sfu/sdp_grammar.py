"""SDP grammar: the parsed shape of offers and answers (RFC 8866/4566, 8829, 8843, 8851, 8853).

Pure parsing and the dataclasses it fills; what the SFU accepts and writes back (its policy)
lives in `sdp.py`. The parser is our own rather than `aiortc.sdp`: that one asserts and raises
arbitrary exceptions on junk, and drops what we need (extmap directions, ssrc attributes, rids).
Every value we use is checked against an ASCII regex, so nothing but `MalformedInput` leaves
`*_untrusted`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from arbiter.errors import MalformedInput

MAX_SDP_CHARS = 64 * 1024
MAX_SECTIONS = 16
RTP_PROTOCOL = "UDP/TLS/RTP/SAVPF"  # RFC 5764 §8 + RFC 8829 §5.1.2
SCTP_PROTOCOL = "UDP/DTLS/SCTP"


URI_MID = "urn:ietf:params:rtp-hdrext:sdes:mid"
URI_AUDIO_LEVEL = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
URI_ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
URI_VIDEO_ORIENTATION = "urn:3gpp:video-orientation"
URI_PLAYOUT_DELAY = "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay"
URI_TRANSPORT_CC = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
URI_RID = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"  # RFC 8852 section 3.1
URI_REPAIRED_RID = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"  # RFC 8852 section 3.2
MAX_RIDS = 4  # simulcast layers we take per m-section (browsers send 3)
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
_SSRC = re.compile(r"([0-9]{1,10}) (" + _TOKEN + r")(?::([\x20-\x7e]{0,256}))?")
_SSRC_GROUP = re.compile(r"(" + _TOKEN + r")((?: [0-9]{1,10}){1,8})")
# RFC 8851 section 10: rid-id is alpha-numeric, "-" and "_"; 16 characters fit the one-byte
# RtpStreamId extension (RFC 8852). Restrictions after the direction are ignored.
_RID = re.compile(r"([A-Za-z0-9_-]{1,16}) (send|recv)(?: [\x21-\x7e]{0,256})?")
# RFC 8853 section 5.1: "send"/"recv" then ;-separated streams of ,-separated alternatives,
# "~" marking a paused one; a second direction may follow.
_SIMULCAST = re.compile(
    r"(send|recv) ([A-Za-z0-9_,;~-]{1,128})(?: (send|recv) [A-Za-z0-9_,;~-]{1,128})?"
)
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
    # Simulcast (RFC 8853): the rids the publisher sends, lowest layer first as its
    # a=simulcast lists them; empty when it sends one stream.
    rids: tuple[str, ...] = ()


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
    rids: list[tuple[str, str]] = field(default_factory=list)  # (rid-id, "send"|"recv"), RFC 8851
    simulcast_send: list[str] = field(default_factory=list)  # a=simulcast:send, first alternatives

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
    elif attr == "rid":
        # A rid or simulcast line we cannot read only costs simulcast (the answer leaves it
        # out and the browser sends one stream, RFC 8853 section 5.3), never the whole offer.
        m = _RID.fullmatch(value)
        if (
            m is not None
            and len(section.rids) < MAX_RIDS
            and all(m[1] != r for r, _ in section.rids)
        ):
            section.rids.append((m[1], m[2]))
    elif attr == "simulcast":
        m = _SIMULCAST.fullmatch(value.strip())
        if m is not None and m[1] == "send":  # a recv half concerns what the peer receives
            streams = [s.split(",")[0].lstrip("~") for s in m[2].split(";")]
            if len(streams) <= MAX_RIDS and all(streams) and len(set(streams)) == len(streams):
                section.simulcast_send = streams
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
