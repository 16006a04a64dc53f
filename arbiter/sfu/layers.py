"""Simulcast layer switching for one consumer: one continuous RTP stream out of several layers.

A simulcast publisher sends each encoding (layer) as its own RTP stream with its own SSRC,
sequence numbers, timestamps and VP8 picture ids (RFC 8853; DESIGN section 4 "Quality"). A
subscriber receives ONE of them, and must see one stream whatever the SFU switches between:
`LayerRewriter` rewrites each forwarded packet onto the consumer's SSRC with

- sequence numbers continuous: no gap and no duplicate at a switch (the new layer's first packet
  is the last output + 1), and a dropped layer's packets consume none;
- timestamps advancing by the wall time elapsed at a switch (the layers' RTP clocks have
  independent random origins, RFC 3550 5.1);
- VP8 picture id and TL0PICIDX continuing at +1 (RFC 7741 4.2), so the receiver's reference
  tracking sees no loss.

A switch happens only at a keyframe of the target layer: the layers are independent streams, a
delta frame of another layer is undecodable. The caller sends a PLI to the target layer while
`wants_keyframe` is true.

Every layer's mapping is an offset per field (a "generation", fixed at the switch that started
it), not a counter: packets reordered within the current layer keep their order, and a NACKed
output sequence number maps back to (layer, original seq) from the generations alone, so a
retransmission is rewritten byte for byte as the original was. Nothing is stored per packet.

Hot path (`rewrite_untrusted` on the current layer): one `bytearray`, one `pack_into`, one
`bytes`; VP8 adds an inlined descriptor walk and up to three byte stores. Packets of other layers
cost one comparison. Sans-IO: `now` is passed in.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from ..errors import MalformedInput
from .producer import VIDEO_CACHE
from .rtp import payload_end_untrusted, payload_offset_untrusted
from .vp8 import h264_is_keyframe_untrusted, vp8_descriptor_untrusted

_SEQ_TS_SSRC = struct.Struct("!HII")  # bytes 2..11 of the RTP fixed header (RFC 3550 5.1)
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")

# A NACK reaches at most this far behind the newest output sequence number: the producer's
# per-layer cache holds 1024 packets (producer.VIDEO_CACHE).
NACK_REACH = VIDEO_CACHE  # packets: as far back as a layer's cache reaches
GENERATIONS = 16  # switches remembered for NACK lookup (more than 16 within 1024 packets: gone)
# Packets this far ahead of the generation's base move the base forward (the base only exists to
# drop the few packets that arrive after a switch but were sent before it).
_BASE_SLIDE = 0x4000
_BASE_LAG = 0x2000
assert NACK_REACH < _BASE_LAG
# This many packets of the current layer "from before the switch" mean the publisher restarted
# its sequence numbers: start again at the next keyframe (a new, still continuous generation).
STALE_LIMIT = 64
# Timestamp steps at a switch stay well inside the RFC 3550 serial-number half range, so
# monotonicity holds even after a pause of hours.
_MAX_TS_STEP = 0x3FFFFFFF

# A generation: (layer, seq offset, ts offset, picture id offset, TL0PICIDX offset, first
# output seq).
Generation = tuple[int, int, int, int, int, int]


class LayerRewriter:
    """One consumer's view of a simulcast track (VP8 or H264). See the module docstring.

    `target`: the layer the SFU wants (-1: paused, forward nothing). `current`: the layer being
    forwarded (-1: none). Both are plain attributes; the caller sets `target`.
    """

    __slots__ = (
        "ssrc", "rtx_ssrc", "rtx_pt", "codec", "clock_rate", "target", "current", "switches",
        "packets", "octets", "_vp8", "_cur",
        "_base_seq", "_stale", "_max_seq", "_max_ts", "_max_ts_at", "_last_picid",
        "_last_tl0", "_gens", "_gen", "_rtx_seq",
    )  # fmt: skip

    def __init__(
        self,
        ssrc: int,
        rtx_ssrc: int | None,
        rtx_pt: int | None,
        codec: str,
        clock_rate: int = 90000,
        *,
        target: int = 0,
        rtx_seq: int = 0,
    ) -> None:
        name = codec.upper()
        if name not in ("VP8", "H264"):
            raise ValueError(f"simulcast layer switching supports VP8 and H264, not {codec}")
        self.ssrc = ssrc
        self.rtx_ssrc = rtx_ssrc
        self.rtx_pt = rtx_pt
        self.codec = name
        self.clock_rate = clock_rate
        self.target = target
        self.current = -1
        self.switches = 0  # generations started (switches, starts and resumes)
        self.packets = 0  # RTP packets output, and their bytes: for the consumer's SR
        self.octets = 0
        self._vp8 = name == "VP8"
        self._cur: Generation = (-1, 0, 0, 0, 0, 0)  # the generation being forwarded
        self._base_seq = 0
        self._stale = 0
        # The newest output values (RFC 3550 serial order), and when max_ts was first output.
        self._max_seq = 0
        self._max_ts = 0
        self._max_ts_at = 0.0
        self._last_picid = -1  # 15-bit arithmetic; a 7-bit packet sends the low 7 bits
        self._last_tl0 = -1
        self._gens: list[Generation | None] = [None] * GENERATIONS
        self._gen = 0
        self._rtx_seq = rtx_seq & 0xFFFF

    @property
    def wants_keyframe(self) -> bool:
        """True while waiting to switch: the caller sends a PLI to the target layer."""
        return self.target != self.current and self.target >= 0

    # -- the forwarding path ---------------------------------------------------------------

    def rewrite_untrusted(self, packet: bytes, layer: int, now: float) -> bytes | None:
        """`packet` (decrypted RTP of the publisher's layer `layer`) rewritten for the consumer,
        or None to drop it: not the current layer, the target layer before its keyframe, or
        sent before the current generation started. Raises MalformedInput on a bad packet."""
        if layer != self.current or self.target < 0:
            return self._switch_untrusted(packet, layer, now)
        if len(packet) < 12:
            raise MalformedInput("RTP packet shorter than the 12-byte fixed header")
        in_seq = (packet[2] << 8) | packet[3]
        if (in_seq - self._base_seq) & 0xFFFF >= _BASE_SLIDE and not self._slide(in_seq):
            return None
        return self._apply_untrusted(packet, in_seq, self._cur, now, True)

    def _slide(self, in_seq: int) -> bool:
        """Far from the base: True (and move the base) if ahead, False if from before it."""
        if (in_seq - self._base_seq) & 0xFFFF < 0x8000:
            base = self._base_seq = (in_seq - _BASE_LAG) & 0xFFFF
            # The generation's first output seq moves along too: NACK lookups compare seqs mod
            # 2^16, which a generation longer than 0x8000 packets would make ambiguous. Older
            # generations fall out of NACK_REACH (< _BASE_LAG) with it.
            gen = self._cur
            gen = self._cur = (*gen[:5], (base + gen[1]) & 0xFFFF)
            self._gens[(self._gen - 1) % GENERATIONS] = gen
            return True
        self._stale += 1
        if self._stale >= STALE_LIMIT:
            self.current = -1  # the publisher's sequence restarted: resume at a keyframe
        return False

    def _switch_untrusted(self, packet: bytes, layer: int, now: float) -> bytes | None:
        target = self.target
        if target < 0:
            self.current = -1  # paused: a resume waits for a keyframe
            return None
        if layer != target:
            return None
        offset = payload_offset_untrusted(packet)
        end = payload_end_untrusted(packet, offset)
        if offset >= end:
            return None  # padding only: never starts a layer
        picid = tl0 = -1
        if self._vp8:
            d = vp8_descriptor_untrusted(packet, offset, end)
            if not d.keyframe:
                return None
            picid, tl0 = d.picture_id, d.tl0picidx
        elif not h264_is_keyframe_untrusted(packet, offset, end):
            return None
        in_seq = (packet[2] << 8) | packet[3]
        in_ts = _U32.unpack_from(packet, 4)[0]
        if self._gen == 0:
            # The first generation keeps the publisher's (random, RFC 3550 5.1) origins.
            seq_off = ts_off = picid_off = tl0_off = 0
            self._max_seq = (in_seq - 1) & 0xFFFF
            self._max_ts = (in_ts - 1) & 0xFFFFFFFF
        else:
            seq_off = (self._max_seq + 1 - in_seq) & 0xFFFF
            step = int((now - self._max_ts_at) * self.clock_rate + 0.5)
            step = 1 if step < 1 else min(step, _MAX_TS_STEP)
            ts_off = (self._max_ts + step - in_ts) & 0xFFFFFFFF
            last = self._last_picid
            picid_off = (last + 1 - picid) & 0x7FFF if picid >= 0 and last >= 0 else 0
            last = self._last_tl0
            tl0_off = (last + 1 - tl0) & 0xFF if tl0 >= 0 and last >= 0 else 0
        gen = self._cur = (
            layer, seq_off, ts_off, picid_off, tl0_off, (in_seq + seq_off) & 0xFFFF,
        )  # fmt: skip
        self._gens[self._gen % GENERATIONS] = gen
        self._gen += 1
        self.switches += 1
        self._base_seq = in_seq
        self._stale = 0
        self.current = layer
        return self._apply_untrusted(packet, in_seq, gen, now, True)

    def _apply_untrusted(
        self, packet: bytes, in_seq: int, gen: Generation, now: float, track: bool
    ) -> bytes:
        """The one place packets are rewritten (forwarding and retransmission alike). The VP8
        descriptor walk is inlined (vp8.vp8_descriptor_untrusted is the reference parse, used
        at switches): this runs once per packet per consumer."""
        _, seq_off, ts_off, picid_off, tl0_off, _ = gen
        buf = bytearray(packet)
        out_seq = (in_seq + seq_off) & 0xFFFF
        out_ts = (_U32.unpack_from(packet, 4)[0] + ts_off) & 0xFFFFFFFF
        _SEQ_TS_SSRC.pack_into(buf, 2, out_seq, out_ts, self.ssrc)
        picid = tl0 = -1
        if self._vp8:
            try:
                # RFC 3550 5.1 and 5.3.1: past the CSRCs and the header extension block.
                b0 = packet[0]
                i = 12 + 4 * (b0 & 0x0F)
                if b0 & 0x10:
                    i += 4 + 4 * ((packet[i + 2] << 8) | packet[i + 3])
                size = len(packet)
                if i > size:
                    raise MalformedInput("RTP header runs past the packet")
                # A padding-only packet (RFC 3550 5.1: the last octet counts the padding)
                # has no descriptor. Else RFC 7741 4.2: |X|R|N|S|R|PID| then, with X,
                # |I|L|T|K|RSV|, PictureID (M bit: 15 bits, else 7), TL0PICIDX.
                if i < size and not (b0 & 0x20 and packet[size - 1] >= size - i):
                    if packet[i] & 0x80:
                        x = packet[i + 1]
                        i += 2
                        if x & 0x80:
                            p = packet[i]
                            if p & 0x80:
                                picid = ((((p & 0x7F) << 8) | packet[i + 1]) + picid_off) & 0x7FFF
                                buf[i] = 0x80 | (picid >> 8)
                                buf[i + 1] = picid & 0xFF
                                i += 2
                            else:  # 7 bits: keep the packet's width, wrap
                                picid = (p + picid_off) & 0x7FFF
                                buf[i] = picid & 0x7F
                                i += 1
                        if x & 0x40:
                            tl0 = buf[i] = (packet[i] + tl0_off) & 0xFF
            except IndexError:
                raise MalformedInput("VP8 descriptor runs past the packet") from None
        if track:
            if (out_seq - self._max_seq) & 0xFFFF < 0x8000:
                self._max_seq = out_seq
            if (out_ts - self._max_ts) & 0xFFFFFFFF < 0x80000000:
                # The newest frame: what the next switch continues from.
                if out_ts != self._max_ts:
                    self._max_ts = out_ts
                    self._max_ts_at = now
                if picid >= 0:
                    self._last_picid = picid
                if tl0 >= 0:
                    self._last_tl0 = tl0
            self.packets += 1
            self.octets += len(buf)
        return bytes(buf)

    # -- NACK, RTX and SR support ----------------------------------------------------------

    def _generation(self, out_seq: int) -> Generation | None:
        """The generation that output `out_seq`, if within NACK_REACH of the newest."""
        max_seq = self._max_seq
        if self._gen == 0 or (max_seq - out_seq) & 0xFFFF >= NACK_REACH:
            return None
        gens = self._gens
        for g in range(self._gen - 1, max(-1, self._gen - 1 - GENERATIONS), -1):
            gen = gens[g % GENERATIONS]
            assert gen is not None
            span = (max_seq - gen[5]) & 0xFFFF
            # Newest first: the first generation that starts at or before out_seq output it.
            if (out_seq - gen[5]) & 0xFFFF <= span:
                return gen
            if span >= NACK_REACH:
                return None  # older generations are further back still
        return None

    def lookup(self, out_seq: int) -> tuple[int, int] | None:
        """(layer, original seq) behind the consumer's sequence number `out_seq` (a NACK), or
        None when it is older than NACK_REACH or than the remembered switches."""
        gen = self._generation(out_seq & 0xFFFF)
        if gen is None:
            return None
        return gen[0], (out_seq - gen[1]) & 0xFFFF

    def rewrite_retransmission_untrusted(
        self, packet: bytes, layer: int, out_seq: int
    ) -> bytes | None:
        """The cached original `packet` of `layer` rewritten exactly as it was (or would have
        been) forwarded as `out_seq`: same seq, timestamp, picture id and TL0PICIDX. None if
        `out_seq` is out of reach or `packet` is not the one `lookup(out_seq)` names."""
        gen = self._generation(out_seq & 0xFFFF)
        if gen is None or gen[0] != layer:
            return None
        if len(packet) < 12:
            raise MalformedInput("RTP packet shorter than the 12-byte fixed header")
        in_seq = (packet[2] << 8) | packet[3]
        if (in_seq + gen[1]) & 0xFFFF != out_seq & 0xFFFF:
            return None
        return self._apply_untrusted(packet, in_seq, gen, 0.0, False)

    def rtx_wrap(self, rewritten: bytes) -> bytes | None:
        """An RFC 4588 section 4 RTX packet carrying `rewritten` (an output of this rewriter):
        the RTX SSRC and payload type, the RTX stream's own sequence number, the same timestamp,
        marker and header extensions, and the payload prefixed by the original (output)
        sequence number. None when RTX was not negotiated for the consumer."""
        rtx_ssrc, rtx_pt = self.rtx_ssrc, self.rtx_pt
        if rtx_ssrc is None or rtx_pt is None:
            return None
        try:
            offset = payload_offset_untrusted(rewritten)
        except MalformedInput:
            return None
        buf = bytearray(rewritten[:offset])
        buf += rewritten[2:4]  # OSN
        buf += rewritten[offset:]
        buf[1] = (rewritten[1] & 0x80) | rtx_pt
        _U16.pack_into(buf, 2, self._rtx_seq)
        _U32.pack_into(buf, 8, rtx_ssrc)
        self._rtx_seq = (self._rtx_seq + 1) & 0xFFFF
        return bytes(buf)

    def next_rtx_seq(self) -> int:
        """The RTX stream's next sequence number, taken (probe padding rides on it)."""
        seq = self._rtx_seq
        self._rtx_seq = (seq + 1) & 0xFFFF
        return seq

    @property
    def last_timestamp(self) -> int:
        """The newest timestamp output (padding carries it: RFC 3550 5.1 lets it repeat)."""
        return self._max_ts

    def translate_timestamp(self, layer: int, timestamp: int) -> int | None:
        """A publisher SR's RTP timestamp of `layer` on the consumer's timeline (for the SR the
        consumer gets, RFC 3550 6.4.1), or None unless `layer` is being forwarded."""
        if layer != self.current or layer < 0:
            return None
        return (timestamp + self._cur[2]) & 0xFFFFFFFF


def choose_layer(
    heights: Sequence[int | None], bitrates: Sequence[float], max_height: int, budget_bps: float
) -> int:
    """The layer index a consumer should get: -1 when paused (`max_height` <= 0), else the
    highest active layer that fits both `max_height` and `budget_bps`, else the lowest active
    layer (a moving picture beats a frozen one), else 0 when no layer is active.

    Layers are indexed low to high quality (rid q, h, f). `bitrates[i]` is what layer i is
    receiving now; <= 0 means the publisher is not sending it (a screen share sends only its
    full layer, which every subscriber then gets). `heights[i]` is the height from the layer's
    last keyframe, None while unknown: an unknown height counts as fitting when every lower
    layer with a known height fits (the order by index is the only thing known about it).
    """
    if max_height <= 0:
        return -1
    chosen = lowest = -1
    heights_fit = True  # every known height so far is <= max_height
    for i, bitrate in enumerate(bitrates):
        height = heights[i] if i < len(heights) else None
        if height is not None and height > max_height:
            heights_fit = False
        if bitrate <= 0:
            continue
        if lowest < 0:
            lowest = i
        if heights_fit and bitrate <= budget_bps:
            chosen = i
    if chosen >= 0:
        return chosen
    return lowest if lowest >= 0 else 0
