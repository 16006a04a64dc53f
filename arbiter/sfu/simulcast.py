"""Simulcast tracks and their consumers (docs/PROTOCOL.md section 4, "Quality").

A publisher that simulcasts sends one video track as several layers (rids `q`, `h`, `f`, lowest
first), each on its own SSRC, which the SDP does not tell (RFC 8853): the Router learns them from
the RID / repaired-RID header extensions (RFC 8852) of the first packets and makes one Producer
per layer, which keeps that layer's NACK cache and RTCP statistics like any other Producer.

A subscriber receives ONE layer on ONE SSRC of ours: a `SimulcastConsumer` owns a
`LayerRewriter` (layers.py) that rewrites SSRC, sequence number, timestamp and VP8 picture id so
the stream stays continuous across switches, and switches only on a keyframe of the new layer.
Which layer a consumer should get (`target`) is decided per subscriber by the Downlink
(downlink.py) from the subscriber's preferences and its estimated downlink.

Plain state objects the Router owns, like Producer and Consumer: they never touch a transport's
state or the Router's tables.
"""

from __future__ import annotations

import secrets
import struct
from collections import deque
from typing import TYPE_CHECKING

from ..errors import MalformedInput
from .layers import LayerRewriter
from .producer import (
    NACK_REPEAT_INTERVAL,
    NACK_WINDOW,
    RESENT_PRUNE,
    SAMPLES,
    Consumer,
    Producer,
    restamp,
)
from .rtp import (
    get_extension_untrusted,
    payload_offset_untrusted,
    rid_untrusted,
)
from .srtp import PROTECT_ERRORS
from .vp8 import vp8_keyframe_size_untrusted

if TYPE_CHECKING:
    from collections.abc import Callable

    from .transport import WebRtcTransport
    from .twcc import TwccSender

_SEQ = struct.Struct("!H")

# Nominal bit rates per layer before one is measured (the web client's maxBitrate per rid:
# docs/PROTOCOL.md section 4): used only to decide whether a layer not yet sent would fit.
NOMINAL_BPS = (150_000, 500_000, 1_500_000, 2_500_000)
LAYER_RATE_WINDOW = 1.0  # seconds of forwarded bytes a layer's measured rate covers
# A layer nobody gets any more stays encoded this long before the publisher is told to stop
# it (a subscriber that steps down and up again finds it running).
LAYER_HOLD = 3.0
# A layer silent this long has stopped (a screen share turned it off): its consumers move to
# what is sent at once. Frames come every 33-100 ms; keyframe gaps never reach this.
STOPPED_AFTER = 0.5
ASK_GRACE = 2.0  # a layer the publisher was asked for has this long to start


def _nominal(index: int) -> float:
    return float(NOMINAL_BPS[min(index, len(NOMINAL_BPS) - 1)])


class SimulcastTrack:
    """One publisher's simulcast video track: a Producer per layer (None until its first
    packet), the learnt frame height of each layer, and the consumers of the track."""

    __slots__ = (
        "transport", "mid", "rids", "mid_ext", "rid_ext", "rrid_ext", "codec", "rtx_pt",
        "layers", "heights", "consumers", "closed", "kind", "active", "twcc_ext", "wanted_at",
        "active_at",
    )  # fmt: skip

    def __init__(
        self,
        transport: WebRtcTransport,
        mid: str,
        rids: tuple[str, ...],
        *,
        mid_ext: int,
        rid_ext: int,
        rrid_ext: int,
        codec: str,
        rtx_pt: int | None,
        twcc_ext: int = 0,
    ) -> None:
        self.transport = transport
        self.twcc_ext = twcc_ext
        self.kind = "video"
        self.mid = mid
        self.rids = rids
        self.mid_ext = mid_ext
        self.rid_ext = rid_ext
        self.rrid_ext = rrid_ext
        self.codec = codec
        self.rtx_pt = rtx_pt
        self.layers: list[Producer | None] = [None] * len(rids)
        self.heights: list[int | None] = [None] * len(rids)  # from keyframes (vp8.py)
        self.consumers: list[SimulcastConsumer] = []
        # The rids the publisher was last told to encode (a `layers` frame), None: not told yet.
        self.active: tuple[str, ...] | None = None
        self.active_at = float("-inf")  # when it was last told (the Router sets both)
        self.wanted_at = [float("-inf")] * len(rids)  # when some consumer last got each layer
        self.closed = False

    def layer_bps(self, index: int, now: float) -> float:
        """The measured rate of one layer over the last second. A layer not being sent is
        scaled from a measured one by the nominal ratios (an encoder that makes 500 kbit/s of
        its full layer makes about a third of that of its half one), else nominal."""
        measured = self._measured_bps(index, now)
        if measured > 0:
            return measured
        for other in range(len(self.rids)):
            rate = self._measured_bps(other, now) if other != index else 0.0
            if rate > 0:
                return rate * _nominal(index) / _nominal(other)
        return _nominal(index)

    def _measured_bps(self, index: int, now: float) -> float:
        producer = self.layers[index] if 0 <= index < len(self.layers) else None
        if producer is None or not producer.samples:
            return 0.0
        horizon = now - LAYER_RATE_WINDOW
        first = next(((t, o) for t, o in producer.samples if t >= horizon), None)
        if first is None or now - first[0] < 0.3:
            return 0.0
        measured = (producer.octets - first[1]) * 8 / (now - first[0])
        return measured if measured > 10_000 else 0.0  # a stopped layer

    def available(self, index: int, now: float) -> bool:
        """Whether a consumer may be given layer `index`: it is being sent, or the publisher
        was not asked for it (it starts when asked), or was asked only just now. A layer asked
        for and still silent after ASK_GRACE is not coming (a screen share sends only f)."""
        if self.sending(index, now):
            return True
        asked = self.active is None or self.rids[index] in self.active
        return not asked or now - self.active_at < ASK_GRACE

    def sending(self, index: int, now: float) -> bool:
        """Whether layer `index` brought any packet within the last STOPPED_AFTER."""
        producer = self.layers[index]
        if producer is None:
            return False
        horizon = now - STOPPED_AFTER
        first = next((o for t, o in producer.samples if t >= horizon), None)
        return first is None or producer.octets > first

    def close(self) -> None:
        """Idempotent; closes every layer Producer and every consumer of the track."""
        if self.closed:
            return
        self.closed = True
        for consumer in list(self.consumers):
            consumer.close()
        for layer in self.layers:
            if layer is not None:
                layer.close()


class SimulcastConsumer:
    """A simulcast track on one subscriber's consumer transport: one layer at a time, on our
    own SSRC (`ssrc`, `rtx_ssrc`), through a LayerRewriter. `producer` is the track (what the
    MediaRoom attached it to); the layer forwarded is the rewriter's `current`."""

    __slots__ = (
        "producer", "transport", "ssrc", "rtx_ssrc", "rewriter", "max_height", "paused",
        "octets", "samples", "resent", "rtx_log", "rtx_bytes", "closed", "twcc",
    )  # fmt: skip

    def __init__(
        self,
        track: SimulcastTrack,
        transport: WebRtcTransport,
        ssrc: int,
        rtx_ssrc: int | None,
        twcc: TwccSender | None = None,
    ) -> None:
        self.producer = track
        self.twcc = twcc
        self.transport = transport
        self.ssrc = ssrc
        self.rtx_ssrc = rtx_ssrc
        self.rewriter = LayerRewriter(ssrc, rtx_ssrc, track.rtx_pt, track.codec)
        self.max_height = 1 << 16  # no preference yet: as high as the downlink allows
        self.paused = False
        # Bytes forwarded to this consumer and (time, octets) samples (`Router.tick`): its
        # NACK budget, as Consumer.nack_budget's over a Producer's.
        self.octets = 0
        self.samples: deque[tuple[float, int]] = deque(maxlen=SAMPLES)
        self.resent: dict[int, float] | None = None
        self.rtx_log: deque[tuple[float, int]] | None = None
        self.rtx_bytes = 0
        self.closed = False

    def nack_budget(self, now: float) -> int:
        """Bytes that may still be resent now: forwarded to this consumer minus resent, both
        within the last NACK_WINDOW (a NACK flood at most doubles what it receives)."""
        rtx_log = self.rtx_log
        if rtx_log is None:
            rtx_log = self.rtx_log = deque()
            self.resent = {}
        horizon = now - NACK_WINDOW
        while rtx_log and rtx_log[0][0] <= horizon:
            self.rtx_bytes -= rtx_log.popleft()[1]
        since = next((o for t, o in self.samples if t >= horizon), self.octets)
        return self.octets - since - self.rtx_bytes

    def close(self) -> None:
        """Idempotent; detaches from the track (the Router drops it from its SSRC tables)."""
        if self.closed:
            return
        self.closed = True
        if self in self.producer.consumers:
            self.producer.consumers.remove(self)


def new_ssrcs(taken: set[int]) -> tuple[int, int]:
    """Two fresh random SSRCs (media, RTX) for a simulcast consumer (RFC 3550 section 8)."""
    out: list[int] = []
    while len(out) < 2:
        ssrc = secrets.randbits(32)
        if ssrc and ssrc not in taken and ssrc not in out:
            out.append(ssrc)
    return out[0], out[1]


def learn_layer_untrusted(
    tracks: list[SimulcastTrack], packet: bytes, ssrc: int
) -> tuple[SimulcastTrack, int, bool] | None:
    """Which layer an unknown SSRC's packet belongs to: (track, layer index, is RTX) from its
    sdes:mid and RtpStreamId / RepairedRtpStreamId extensions (RFC 8852 section 3, RFC 8843
    section 15), or None when it names no layer of `tracks`. MalformedInput on a bad header."""
    for track in tracks:
        if track.closed:
            continue
        mid = get_extension_untrusted(packet, track.mid_ext) if track.mid_ext else None
        if mid is not None and mid.decode("ascii", "replace") != track.mid:
            continue
        rid = rid_untrusted(packet, track.rid_ext)
        rtx = False
        if rid is None and track.rrid_ext:
            rid, rtx = rid_untrusted(packet, track.rrid_ext), True
        if rid is not None and rid in track.rids:
            return track, track.rids.index(rid), rtx
    return None


def forward_layer(
    layer: Producer,
    packet: bytes,
    twcc_at: int,
    now: float,
    send: Callable[[bytes, tuple[str, int]], None],
    counters: dict[str, int],
) -> None:
    """One packet of a simulcast layer to the consumers of its track that get (or wait to
    switch to) that layer: rewritten per consumer (layers.py), then its own transport-cc
    sequence number, one protect and one send each."""
    track = layer.group
    assert track is not None
    index = layer.layer
    size = len(packet)
    if track.codec == "VP8":
        # Keyframe sizes (RFC 6386 section 9.1) give each layer's height, which the
        # subscribers' maxHeight preferences are compared with (a browser may scale a layer
        # down under load: every keyframe updates it). H264 layers keep their index order.
        try:
            found = vp8_keyframe_size_untrusted(packet, payload_offset_untrusted(packet))
        except MalformedInput:
            found = None
        if found is not None:
            track.heights[index] = found[1]
    for consumer in track.consumers:
        rewriter = consumer.rewriter
        if index != rewriter.current and index != rewriter.target:
            continue
        transport = consumer.transport
        addr = transport.remote_addr
        if not transport.connected or addr is None:
            continue
        try:
            out = rewriter.rewrite_untrusted(packet, index, now)
        except MalformedInput:
            counters["rtp_parse"] += 1
            return
        if out is None:
            continue
        twcc = consumer.twcc
        if twcc is not None and twcc_at >= 0:
            copy = bytearray(out)
            _SEQ.pack_into(copy, twcc_at, twcc.next_seq(size, now))
            out = bytes(copy)
        try:
            send(transport.protect_rtp(out), addr)
        except PROTECT_ERRORS:
            counters["protect_failed"] += 1
            continue
        consumer.octets += size




def nack_simulcast(
    consumer: SimulcastConsumer,
    seqs: list[int],
    now: float,
    send: Callable[[bytes, tuple[str, int]], None],
    counters: dict[str, int],
) -> None:
    """A subscriber's NACK of our sequence numbers: each maps back to (layer, original seq)
    through the rewriter and is resent from that layer's cache, rewritten exactly as it was
    first sent, under the same budget as any consumer (docs/PROTOCOL.md section 4, RTCP)."""
    transport = consumer.transport
    addr = transport.remote_addr
    if addr is None:
        return
    budget = consumer.nack_budget(now)
    resent, rtx_log = consumer.resent, consumer.rtx_log
    assert resent is not None and rtx_log is not None  # made by nack_budget
    if len(resent) > RESENT_PRUNE:
        horizon = now - NACK_REPEAT_INTERVAL
        consumer.resent = resent = {s: t for s, t in resent.items() if t > horizon}
    rewriter, track = consumer.rewriter, consumer.producer
    for i, out_seq in enumerate(seqs):
        if budget <= 12:
            counters["nack_suppressed"] += len(seqs) - i
            return
        found = rewriter.lookup(out_seq)
        layer = track.layers[found[0]] if found is not None else None
        if found is None or layer is None:
            counters["nack_missed"] += 1
            continue
        cached = layer.cache[found[1] & layer.mask]
        if cached is None or _SEQ.unpack_from(cached, 2)[0] != found[1]:
            counters["nack_missed"] += 1
            continue
        last = resent.get(out_seq)
        if (last is not None and now - last < NACK_REPEAT_INTERVAL) or len(cached) >= budget:
            counters["nack_suppressed"] += 1
            continue
        try:
            out = rewriter.rewrite_retransmission_untrusted(cached, found[0], out_seq)
            if out is None:
                counters["nack_missed"] += 1
                continue
            send(transport.protect_rtp(restamp(out, track.twcc_ext, consumer.twcc, now)), addr)
        except (MalformedInput, *PROTECT_ERRORS):
            counters["nack_protect_failed"] += 1
            continue
        counters["nack_retransmitted"] += 1
        resent[out_seq] = now
        rtx_log.append((now, len(cached)))
        consumer.rtx_bytes += len(cached)
        budget -= len(cached)



def wanted_rids(track: SimulcastTrack, now: float) -> tuple[str, ...] | None:
    """The rids the publisher should encode: the layers some unpaused consumer gets or waits
    for, or got within LAYER_HOLD (docs/PROTOCOL.md section 4: a layer nobody watches is not
    encoded). None (no opinion: it sends them all) while the track has no consumer."""
    if not track.consumers:
        return track.active
    for consumer in track.consumers:
        rewriter = consumer.rewriter
        for index in (rewriter.target, rewriter.current):
            if 0 <= index < len(track.rids) and rewriter.target >= 0:
                track.wanted_at[index] = now
    return tuple(
        rid for index, rid in enumerate(track.rids) if now - track.wanted_at[index] < LAYER_HOLD
    )


def consumer_bps(consumer: Consumer, now: float) -> float:
    """What a plain consumer receives: its producer's rate over the last second."""
    producer = consumer.producer
    horizon = now - LAYER_RATE_WINDOW
    first = next(((t, o) for t, o in producer.samples if t >= horizon), None)
    if first is None or now - first[0] < 0.3:
        return 0.0
    return (producer.octets - first[1]) * 8 / (now - first[0])
