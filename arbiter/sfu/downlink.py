"""One subscriber's downlink: its bandwidth estimate and the layer each of its simulcast
consumers gets (docs/PROTOCOL.md section 4, "Quality").

A subscriber has one consumer connection per publisher but one downlink, so the estimate is per
subscriber, fed by the transport-cc feedback of all its consumer transports (bwe.py), or by
the loss in its receiver reports when it sends no transport-cc. `allocate` then gives each of
its simulcast consumers the highest layer that fits both what the subscriber asked for
(`preferences`: maxHeight, paused) and the estimate, as libwebrtc-based SFUs do:

- moving down is immediate: the most expensive consumers step down first, never below the
  lowest layer (a moving picture beats a frozen one); paused consumers get nothing;
- moving up needs evidence: the estimate must allow the higher layer for `UP_HOLD` seconds, and
  when the estimate is what holds a consumer back the SFU probes first (padding on the
  consumer's RTX stream at the rate the step needs, `PROBE_DURATION` long); a probe that fails
  (delay or loss grew) backs off exponentially before the next one.

Sans-IO: times are passed in; the Router sends the padding `padding_packets` builds.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from .bwe import PROBE_DURATION, DownlinkEstimator
from .layers import choose_layer
from .simulcast import NOMINAL_BPS

if TYPE_CHECKING:
    from .simulcast import SimulcastConsumer

INITIAL_BPS = 300_000
UP_HOLD = 2.0  # seconds the estimate must allow a higher layer before a consumer moves up
HEADROOM = 0.9  # of the estimate, the rest absorbs audio bursts and retransmissions
PROBE_OVERSHOOT = 1.1  # a probe aims this far above what the step up needs
PROVEN_FOR = 1.0  # seconds a successful probe's rate counts as the estimate
PROBE_LEAD = 0.025  # padding is due half a tick early, so the window's last tick is not short
PROBE_BACKOFF_MIN = 4.0
PROBE_BACKOFF_MAX = 8.0  # a link that got better is found within seconds
PADDING_PACKET = 255 + 20  # RTP header + transport-cc extension + a full padding run (RFC 3550)

_HEADER = struct.Struct("!BBHII")
# 0xBEDE, length 1 word; then id/len (L = 1: two bytes), the sequence number, one pad byte.
_EXTENSION = struct.Struct("!HHBHB")
_PADDING = bytes(254) + b"\xff"  # 255 bytes of padding, the last one counting them


class Downlink:
    """The estimate and layer choices of one subscriber. See the module docstring."""

    __slots__ = (
        "subscriber", "estimator", "twcc", "up_since", "probe_until", "next_probe", "backoff",
        "probing_for", "probing_for_last", "sent_bytes", "proven_bps", "proven_until",
        "congested",
    )  # fmt: skip

    def __init__(self, subscriber: str, now: float) -> None:
        self.subscriber = subscriber
        # libwebrtc's start rate: a new subscriber starts low and probes up, rather than
        # start above a thin link and freeze until the loss says so.
        self.estimator = DownlinkEstimator(now, initial_bps=INITIAL_BPS)
        self.twcc = False  # transport-cc feedback seen: receiver reports no longer drive it
        self.up_since: dict[SimulcastConsumer, float] = {}
        self.congested: set[SimulcastConsumer] = set()  # paused by the downlink, not by asking
        self.probe_until = float("-inf")
        self.next_probe = now + UP_HOLD
        self.backoff = PROBE_BACKOFF_MIN
        self.probing_for = 0.0  # the rate a running probe must reach
        self.probing_for_last = 0.0
        self.sent_bytes = 0  # its transports' TwccSender.sent_bytes summed, as last seen
        # What the last successful probe delivered, trusted until `proven_until`: the step up
        # it was for happens at once (the estimate alone stays near 1.5x what is acknowledged
        # until more is sent, as in libwebrtc, so it would never allow it).
        self.proven_bps = 0
        self.proven_until = float("-inf")

    @property
    def estimate_bps(self) -> int:
        return self.estimator.estimate_bps

    @property
    def probing(self) -> bool:
        return self.probing_for > 0

    def allocate(
        self, consumers: list[SimulcastConsumer], fixed_bps: float, now: float
    ) -> None:
        """Set each consumer's `rewriter.target` (see the module docstring). `fixed_bps`: what
        the subscriber receives besides simulcast video (audio, non-simulcast video)."""
        self._finish_probe(now)
        proven = now < self.proven_until
        estimate = max(self.estimator.estimate_bps, self.proven_bps if proven else 0)
        budget = estimate * HEADROOM - fixed_bps
        rates = {c: _rates(c, now) for c in consumers}
        want: dict[SimulcastConsumer, int] = {}
        for c in consumers:
            heights = _heights(c.producer.heights)
            # A layer up to a quarter taller than the tile still fits: the browser scales it
            # down, where the next lower layer would be scaled up and blur (a 332 px tile gets
            # the 360 p layer, not the 180 p one).
            want[c] = -1 if c.paused else choose_layer(
                heights, rates[c], c.max_height * 5 // 4, float("inf")
            )
        alloc = dict(want)
        total = sum(rates[c][alloc[c]] for c in consumers if alloc[c] >= 0)
        while total > budget:
            # Step down the consumer whose current choice costs most (never below layer 0).
            options = [c for c in consumers if alloc[c] > 0]
            if not options:
                break
            c = max(options, key=lambda o: rates[o][alloc[o]])
            lower = _next_lower(rates[c], alloc[c])
            if lower < 0:
                break  # the lowest layer being sent (a screen share sends only its top one)
            total -= rates[c][alloc[c]] - rates[c][lower]
            alloc[c] = lower
        # Even the lowest layers do not fit a downlink measured below the start rate (evidence
        # of congestion, not a start): the smallest tiles' video stops (congestion pause)
        # rather than every picture freezing in the loss; one video always stays.
        while total > budget and self.estimator.estimate_bps < INITIAL_BPS:
            running = [c for c in consumers if alloc[c] >= 0]
            if len(running) <= 1:
                break
            c = min(running, key=lambda o: (o.max_height, rates[o][alloc[o]]))
            total -= rates[c][alloc[c]]
            alloc[c] = -1
        # Moving up needs room for the new layer's ceiling (its nominal rate: what its encoder
        # may reach on a busier scene), where staying needs room only for what it sends now.
        # The gap between the two is the hysteresis that keeps a layer from flapping.
        for c in consumers:
            old = c.rewriter.target
            # From a congestion pause the lowest layer is an up-move too; from a pause the
            # subscriber asked for (it has its tile back) it is not: that one resumes at once.
            floor = old if old >= 0 or c in self.congested else 0
            if old >= 0 and rates[c][old] <= 0:
                continue  # its layer stopped (a share began): whatever is sent, at once
            while alloc[c] > floor and alloc[c] >= 0:
                up = alloc[c]
                extra = max(rates[c][up], _nominal_of(c, up)) - rates[c][up]
                if total + extra <= budget:
                    break
                lower = _next_lower(rates[c], up)
                total -= rates[c][up] - (rates[c][lower] if lower >= 0 else 0.0)
                alloc[c] = lower if lower >= 0 else (-1 if old < 0 else 0)
        for c in consumers:
            rewriter = c.rewriter
            new, old = alloc[c], rewriter.target
            # An up-move, or a resume after a congestion pause (not one the subscriber asked).
            stopped = old >= 0 and rates[c][old] <= 0
            if new > old and (old >= 0 or c in self.congested) and not proven and not stopped:
                since = self.up_since.setdefault(c, now)
                if now - since < UP_HOLD:
                    continue  # evidence first: the estimate must hold a while
            self.up_since.pop(c, None)
            rewriter.target = new
            if new < 0 and not c.paused:
                self.congested.add(c)
            else:
                self.congested.discard(c)
        for c in list(self.up_since):
            if c not in alloc or alloc[c] <= c.rewriter.target:
                del self.up_since[c]
        # Held back by the estimate (not by preferences): probe for the next step up, at
        # what is sent now plus that layer's ceiling; a probe far above the link would only
        # cost loss (and freezes) on a thin one.
        held = [c for c in consumers if want[c] > alloc[c]]
        # A probe is judged on transport-cc feedback: without it (receiver reports only) the
        # loss-based estimate grows on its own and up-moves wait for it and UP_HOLD.
        if held and self.twcc and not self.probing and now >= self.next_probe:
            c = min(held, key=lambda o: _nominal_of(o, _next_higher(rates[o], alloc[o])))
            up = _next_higher(rates[c], alloc[c])
            now_bps = rates[c][alloc[c]] if alloc[c] >= 0 else 0.0
            step = max(rates[c][up], _nominal_of(c, up)) - now_bps
            target = (total + fixed_bps + step) / HEADROOM * PROBE_OVERSHOOT
            self.probing_for = target
            self.probe_until = now + PROBE_DURATION
            self.estimator.start_probe(int(target), now)

    def _finish_probe(self, now: float) -> None:
        if not self.probing:
            return
        result = self.estimator.probe_result(now)
        if result is None and now < self.probe_until + 1.0:
            return  # still running (feedback for its last packets may still come)
        self.probing_for_last, self.probing_for = self.probing_for, 0.0
        if result:
            self.backoff = PROBE_BACKOFF_MIN
            self.next_probe = now + UP_HOLD
            # Delivered at 90 % or more of its target (bwe.py): the link carried the target.
            self.proven_bps = int(self.probing_for_last)
            self.proven_until = now + PROVEN_FOR
        else:
            self.next_probe = now + self.backoff
            self.backoff = min(PROBE_BACKOFF_MAX, self.backoff * 2)

    def padding_bytes(self, now: float) -> int:
        """Bytes of padding to send now for a running probe (0 when none runs)."""
        if not self.probing or now >= self.probe_until:
            return 0
        estimator = self.estimator
        return estimator.padding_budget(now + PROBE_LEAD) or estimator.padding_budget(now)

    def forget(self, consumer: SimulcastConsumer) -> None:
        self.up_since.pop(consumer, None)
        self.congested.discard(consumer)


def _rates(consumer: SimulcastConsumer, now: float) -> list[float]:
    """Per layer of the consumer's track: its rate, 0 when the publisher does not send it
    although asked to (a screen share sends only its top layer)."""
    track = consumer.producer
    out = []
    for index in range(len(track.rids)):
        out.append(track.layer_bps(index, now) if track.available(index, now) else 0.0)
    return out


def _nominal_of(consumer: SimulcastConsumer, index: int) -> float:
    """A layer's ceiling: the nominal rate of its place among the track's layers (the web
    client's maxBitrate per rid, counted from the top layer down)."""
    count = len(consumer.producer.rids)
    return float(NOMINAL_BPS[max(0, min(len(NOMINAL_BPS) - 1, index + 3 - count))])


def _heights(known: list[int | None]) -> list[int | None]:
    """Layer heights with the unknown ones (a layer not sent yet) guessed from the layer below:
    simulcast layers double in size (the web client's scaleResolutionDownBy 4, 2, 1)."""
    out = list(known)
    for i in range(1, len(out)):
        below = out[i - 1]
        if out[i] is None and below is not None:
            out[i] = below * 2
    return out


def _next_lower(rates: list[float], index: int) -> int:
    for i in range(index - 1, -1, -1):
        if rates[i] > 0:
            return i
    return -1


def _next_higher(rates: list[float], index: int) -> int:
    for i in range(index + 1, len(rates)):
        if rates[i] > 0:
            return i
    return index


def padding_packet(
    ssrc: int, payload_type: int, seq: int, timestamp: int, twcc_ext: int, twcc_seq: int
) -> bytes:
    """An RTP packet of padding only (RFC 3550 section 5.1, P bit: the last byte counts the
    padding), on a consumer's RTX stream as libwebrtc sends its probes, with our transport-cc
    sequence number (one-byte header extension, RFC 8285 section 4.2) so its arrival is
    reported. `twcc_ext` must be 1-14."""
    header = _HEADER.pack(0xB0, payload_type & 0x7F, seq & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc)
    extension = _EXTENSION.pack(0xBEDE, 1, (twcc_ext << 4) | 1, twcc_seq & 0xFFFF, 0)
    return header + extension + _PADDING
