"""RFC 7983 demultiplexing of the one media port: STUN, DTLS, SRTP and SRTCP share it.

RFC 7983 section 7 assigns the first byte of a datagram:

    0..3     STUN                 (RFC 5389)
    16..19   ZRTP                 (not used by WebRTC: dropped)
    20..63   DTLS                 (RFC 6347)
    64..79   TURN channel         (not used: Arbiter is not a TURN server)
    128..191 RTP or RTCP          (told apart by the payload type, RFC 5761 section 4)

Everything else is dropped and counted. The table is a tuple indexed by the first byte, so the
hot path pays one index and one comparison per datagram.
"""

from __future__ import annotations

from typing import Final

OTHER: Final = 0
STUN: Final = 1
DTLS: Final = 2
RTP: Final = 3  # RTP or RTCP: see rtp.is_rtcp


def _build_table() -> tuple[int, ...]:
    table = [OTHER] * 256
    for b in range(0, 4):
        table[b] = STUN
    for b in range(20, 64):
        table[b] = DTLS
    for b in range(128, 192):
        table[b] = RTP
    return tuple(table)


KIND_BY_FIRST_BYTE: Final[tuple[int, ...]] = _build_table()

# Smallest datagram worth looking at: a STUN header is 20 bytes, an RTP header 12, an RTCP
# packet 8, a DTLS record header 13. Anything shorter is a parse error without parsing.
MIN_DATAGRAM: Final = 8


def classify(datagram: bytes) -> int:
    """The kind of one datagram per RFC 7983 (OTHER for empty or unassigned first bytes)."""
    if len(datagram) < MIN_DATAGRAM:
        return OTHER
    return KIND_BY_FIRST_BYTE[datagram[0]]
