"""Dominant speaker detection from the RFC 6464 audio level header extension (sans-IO).

The Router reads the client-to-mixer audio level (`urn:ietf:params:rtp-hdrext:ssrc-audio-level`,
RFC 6464 section 3: one byte, `V` voice-activity bit then the level 0..127 in -dBov, 127 being
silence) from the decrypted header of each forwarded audio packet (`audio_level`), and feeds it
to `DominantSpeaker.update(publisher, level, now)`, which returns the new dominant speaker on a
change and None otherwise.

Hysteresis, so the choice does not flap:
- each publisher's loudness (127 - level) is smoothed exponentially (`SMOOTHING` seconds), and a
  publisher whose packets stopped for `STALE` seconds counts as silent;
- a candidate takes over only after being, for `HOLD` seconds without a break, above the speech
  threshold (`SPEECH`) and either louder than the current speaker by `MARGIN` dB or speaking
  while the current speaker is silent;
- silence never switches away: when nobody speaks the last speaker stays.
Decisions are taken at most every `EVALUATE` seconds, so the per-packet cost is a few dict and
float operations.
"""

from __future__ import annotations

from struct import Struct

SMOOTHING = 0.3  # s: time constant of the per-publisher exponential smoothing
SPEECH = 127 - 70  # loudness (127 - level) at or above which a publisher speaks: -70 dBov
MARGIN = 6.0  # dB a candidate must be louder than a speaking current speaker
HOLD = 1.0  # s a candidate must stay ahead before it takes over
STALE = 0.5  # s without an audio level: that publisher is silent
EVALUATE = 0.1  # s between decisions

_EXT_HEADER = Struct("!HH")


def audio_level(packet: bytes, ext_id: int) -> int | None:
    """The RFC 6464 level (0..127, -dBov; the V bit masked off) carried by header extension
    `ext_id` of the RTP `packet` (one-byte or two-byte form, RFC 8285), or None. Never raises
    on malformed input: a packet it cannot read simply has no level."""
    size = len(packet)
    if size < 12 or not packet[0] & 0x10:
        return None
    offset = 12 + 4 * (packet[0] & 0x0F)
    if size < offset + 4:
        return None
    profile, words = _EXT_HEADER.unpack_from(packet, offset)
    i = offset + 4
    end = i + 4 * words
    if end > size:
        return None
    if profile == 0xBEDE:  # one-byte elements (RFC 8285 section 4.2)
        while i < end:
            b = packet[i]
            if b == 0:  # padding
                i += 1
                continue
            eid = b >> 4
            if eid == 15:  # reserved: stop processing (RFC 8285 section 4.2)
                return None
            length = (b & 0x0F) + 1
            if eid == ext_id:
                return packet[i + 1] & 0x7F if i + 1 < end else None
            i += 1 + length
    elif profile & 0xFFF0 == 0x1000:  # two-byte elements (RFC 8285 section 4.3)
        while i < end:
            eid = packet[i]
            if eid == 0:
                i += 1
                continue
            if i + 1 >= end:
                return None
            length = packet[i + 1]
            if eid == ext_id:
                return packet[i + 2] & 0x7F if length and i + 2 < end else None
            i += 2 + length
    return None


class _Level:
    __slots__ = ("loudness", "at", "ahead_since")

    def __init__(self, loudness: float, at: float) -> None:
        self.loudness = loudness
        self.at = at  # time of the last level
        self.ahead_since: float | None = None  # since when it qualifies to take over


class DominantSpeaker:
    """Per-publisher smoothed levels and the dominant speaker chosen from them."""

    def __init__(self) -> None:
        self.levels: dict[str, _Level] = {}
        self.speaker: str | None = None
        self._next_evaluation = float("-inf")

    def update(self, publisher: str, level: int, now: float) -> str | None:
        """One audio level (0..127, -dBov) of `publisher` at `now`: the new dominant speaker if
        this changed it, else None."""
        loudness = 127 - level
        state = self.levels.get(publisher)
        if state is None:
            self.levels[publisher] = _Level(float(loudness), now)
        else:
            dt = now - state.at
            weight = dt / SMOOTHING if dt < SMOOTHING else 1.0
            if weight > 0:
                state.loudness += (loudness - state.loudness) * weight
                state.at = now
        if now < self._next_evaluation:
            return None
        self._next_evaluation = now + EVALUATE
        return self._evaluate(now)

    def remove(self, publisher: str) -> None:
        """`publisher` left: forgotten; if it was the speaker, nobody is until someone speaks
        (the gateway forgets a departed speaker by itself)."""
        self.levels.pop(publisher, None)
        if self.speaker == publisher:
            self.speaker = None

    def _loudness(self, state: _Level, now: float) -> float:
        return state.loudness if now - state.at < STALE else 0.0

    def _evaluate(self, now: float) -> str | None:
        current = self.levels.get(self.speaker) if self.speaker is not None else None
        current_loudness = self._loudness(current, now) if current is not None else 0.0
        bar = current_loudness + MARGIN if current_loudness >= SPEECH else SPEECH
        best: str | None = None
        best_since = now
        for publisher, state in self.levels.items():
            if state is current:
                continue
            if self._loudness(state, now) >= bar:
                if state.ahead_since is None:
                    state.ahead_since = now
                if now - state.ahead_since >= HOLD and (best is None or state.ahead_since < best_since):
                    best, best_since = publisher, state.ahead_since
            else:
                state.ahead_since = None
        if best is None:
            return None
        self.speaker = best
        for state in self.levels.values():
            state.ahead_since = None
        return best
