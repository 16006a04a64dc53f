"""Per-subscriber downlink bandwidth estimation in the spirit of Google Congestion Control
(draft-ietf-rmcat-gcc-02; the constants follow libwebrtc's send-side estimator).

One `DownlinkEstimator` per subscriber (DESIGN section 4, Quality): a subscriber has one consumer
transport per publisher but one downlink, so every consumer transport's `TwccSender` feeds the
same estimator. Sans-IO: every call takes `now` (seconds); nothing here logs or reads a clock.

- Delay-based (gcc-02 section 5): per source (one TwccSender: arrival times of different
  transports need not share a clock) packets are grouped into 5 ms send bursts (5.2), the
  inter-group delay variation feeds a trendline filter over 20 groups (libwebrtc's
  TrendlineEstimator, the successor of the Kalman filter of 5.3) compared with an adaptive
  threshold (5.4) → overuse / normal / underuse. The downlink overuses when any fresh source
  does. An AIMD controller (5.5) then holds, increases (8 %/s multiplicatively while the link
  capacity is unknown, additively about one packet per response time near it) or decreases
  to 0.85 × the acknowledged bitrate.
- Loss-based (gcc-02 section 6): over each feedback interval (at least 20 packets), loss above
  10 % multiplies the rate by (1 - 0.5 × loss), loss under 2 % lets it grow 8 %/s; it never
  exceeds the delay-based rate. `on_loss_report` does the same from RTCP receiver reports for
  subscribers without transport-cc, growing only 5 %/s: without delay feedback a queue is seen
  only once it overflows.
- Estimate = min(delay-based, loss-based), clamped to [min_bps, max_bps].
- Probing (DESIGN: stepping up needs evidence): `start_probe(target, now)` opens a 0.3 s window
  during which the caller tops its sending up to `target` with padding (`padding_budget`,
  counting every byte it sends through `on_sent`); `probe_result(now)` is None until decided,
  then True when the packets sent in the window were delivered at >= 90 % of the target with
  at most 5 % loss and no overuse (the estimate then rises to the delivered rate), else False.
"""

from __future__ import annotations

import math
from collections import deque

from .twcc import PacketResults

# InterArrival (gcc-02 5.2, libwebrtc inter_arrival.cc).
GROUP_US = 5_000  # packets sent within 5 ms of a group's first one form the group
BURST_US = 5_000  # ... so do packets arriving within 5 ms of it with a shrinking delay
MAX_BURST_US = 100_000
MAX_ARRIVAL_JUMP_US = 3_000_000  # a larger gap between groups resets the detector
# TrendlineEstimator.
WINDOW = 20
SMOOTHING = 0.9
THRESHOLD_GAIN = 4.0
MIN_DELTAS = 60
OVERUSE_TIME_MS = 10.0
# Adaptive threshold (gcc-02 5.4).
THRESHOLD_INIT = 12.5
K_UP = 0.0087
K_DOWN = 0.039
MAX_ADAPT_OFFSET = 15.0
# AIMD (gcc-02 5.5, libwebrtc aimd_rate_control.cc).
BETA = 0.85
MULTIPLICATIVE = 1.08  # per second, far from the link capacity
RESPONSE_TIME = 0.3  # s: assumed RTT 200 ms + 100 ms, for the additive increase
DECREASE_INTERVAL = 0.2  # s between two decreases unless the throughput collapsed
ACK_WINDOW = 1.0  # s over which the acknowledged bitrate is measured
STALE_SOURCE = 1.0  # s without feedback: a source's detector no longer votes
FORGET_SOURCE = 10.0  # s without feedback: it is dropped
# Loss-based (gcc-02 6).
LOSS_HIGH = 0.10
LOSS_LOW = 0.02
LOSS_MIN_PACKETS = 20
LOSS_DECREASE_INTERVAL = 0.3
RR_GROWTH = 1.05  # per second, receiver-report-only subscribers
# Probing.
PROBE_DURATION = 0.3
PROBE_WAIT = 0.5  # s after the window for its feedback to come back
PROBE_SUCCESS = 0.9
PROBE_MAX_LOSS = 0.05
PROBE_BURST = 0.06  # s: padding_budget never asks for more than this at the target rate (> one 50 ms tick)

NORMAL = 0
OVERUSE = 1
UNDERUSE = 2

_HOLD = 0
_INCREASE = 1


class _DelayDetector:
    """Grouping, trendline and threshold for one source (one consumer transport)."""

    __slots__ = ("first_send", "last_send", "first_arrival", "last_arrival", "prev_send",
                 "prev_arrival", "origin_ms", "accumulated", "smoothed", "xs", "ys", "deltas",
                 "prev_trend", "threshold", "threshold_at", "time_over", "over_count", "state",
                 "updated_at")  # fmt: skip

    def __init__(self, now: float) -> None:
        self.updated_at = now
        self.clear()

    def clear(self) -> None:
        self.first_send = -1  # current group; -1: none yet
        self.last_send = 0
        self.first_arrival = 0
        self.last_arrival = 0
        self.prev_send = -1  # previous complete group; -1: none yet
        self.prev_arrival = 0
        self.origin_ms = -1.0
        self.accumulated = 0.0
        self.smoothed = 0.0
        self.xs: deque[float] = deque(maxlen=WINDOW)
        self.ys: deque[float] = deque(maxlen=WINDOW)
        self.deltas = 0
        self.prev_trend = 0.0
        self.threshold = THRESHOLD_INIT
        self.threshold_at = -1.0
        self.time_over = -1.0
        self.over_count = 0
        self.state = NORMAL

    def add(self, send_us: int, arrival_us: int) -> None:
        if self.first_send < 0:
            self.first_send = self.last_send = send_us
            self.first_arrival = self.last_arrival = arrival_us
            return
        if send_us < self.first_send:
            return  # sent before the current group: reordered, skip (inter_arrival.cc)
        if send_us - self.first_send <= GROUP_US:
            self._extend(send_us, arrival_us)
            return
        arrival_delta = arrival_us - self.last_arrival
        send_delta = send_us - self.last_send
        if (arrival_delta - send_delta < 0 and 0 <= arrival_delta <= BURST_US
                and arrival_us - self.first_arrival < MAX_BURST_US):  # fmt: skip
            self._extend(send_us, arrival_us)  # a burst queued somewhere upstream
            return
        if self.prev_send >= 0:
            send_ms = (self.last_send - self.prev_send) / 1000.0
            arrival_ms = (self.last_arrival - self.prev_arrival) / 1000.0
            if arrival_ms < 0 or abs(arrival_ms - send_ms) * 1000 > MAX_ARRIVAL_JUMP_US:
                self.clear()
                self.add(send_us, arrival_us)
                return
            self._trendline(arrival_ms, send_ms, self.last_arrival / 1000.0)
        self.prev_send, self.prev_arrival = self.last_send, self.last_arrival
        self.first_send = self.last_send = send_us
        self.first_arrival = self.last_arrival = arrival_us

    def _extend(self, send_us: int, arrival_us: int) -> None:
        if send_us > self.last_send:
            self.last_send = send_us
        if arrival_us > self.last_arrival:
            self.last_arrival = arrival_us

    def _trendline(self, arrival_delta_ms: float, send_delta_ms: float, arrival_ms: float) -> None:
        """libwebrtc TrendlineEstimator::UpdateTrendline: least-squares slope of the smoothed
        accumulated delay variation against arrival time over the last WINDOW groups."""
        self.deltas = min(self.deltas + 1, 1000)
        if self.origin_ms < 0:
            self.origin_ms = arrival_ms
        self.accumulated += arrival_delta_ms - send_delta_ms
        self.smoothed = SMOOTHING * self.smoothed + (1 - SMOOTHING) * self.accumulated
        self.xs.append(arrival_ms - self.origin_ms)
        self.ys.append(self.smoothed)
        trend = self.prev_trend
        if len(self.xs) == WINDOW:
            mx = sum(self.xs) / WINDOW
            my = sum(self.ys) / WINDOW
            num = den = 0.0
            for x, y in zip(self.xs, self.ys, strict=True):
                num += (x - mx) * (y - my)
                den += (x - mx) * (x - mx)
            if den > 0:
                trend = num / den
        self._detect(trend, send_delta_ms, arrival_ms)

    def _detect(self, trend: float, send_delta_ms: float, now_ms: float) -> None:
        """gcc-02 5.4 over-use detector on the modified trend, adaptive threshold."""
        if self.deltas < 2:
            self.state = NORMAL
            return
        modified = min(self.deltas, MIN_DELTAS) * trend * THRESHOLD_GAIN
        if modified > self.threshold:
            if self.time_over < 0:
                self.time_over = send_delta_ms / 2
            else:
                self.time_over += send_delta_ms
            self.over_count += 1
            if (
                self.time_over > OVERUSE_TIME_MS
                and self.over_count > 1
                and trend >= self.prev_trend
            ):
                self.time_over = 0.0
                self.over_count = 0
                self.state = OVERUSE
        elif modified < -self.threshold:
            self.time_over = -1.0
            self.over_count = 0
            self.state = UNDERUSE
        else:
            self.time_over = -1.0
            self.over_count = 0
            self.state = NORMAL
        self.prev_trend = trend
        # Threshold adaptation (gcc-02 5.4): slow up, fast down, ignoring outliers.
        if self.threshold_at < 0:
            self.threshold_at = now_ms
        if abs(modified) > self.threshold + MAX_ADAPT_OFFSET:
            self.threshold_at = now_ms
            return
        k = K_DOWN if abs(modified) < self.threshold else K_UP
        dt = min(now_ms - self.threshold_at, 100.0)
        self.threshold += k * (abs(modified) - self.threshold) * dt
        self.threshold = min(max(self.threshold, 6.0), 600.0)
        self.threshold_at = now_ms


class _LinkCapacity:
    """libwebrtc LinkCapacityEstimator: a smoothed estimate of the throughput at which
    overuse was seen, with its deviation; AIMD increases additively inside its bounds."""

    __slots__ = ("kbps", "deviation")

    def __init__(self) -> None:
        self.kbps = -1.0
        self.deviation = 0.4

    def reset(self) -> None:
        self.kbps = -1.0

    def update(self, bps: float, alpha: float) -> None:
        sample = bps / 1000.0
        self.kbps = sample if self.kbps < 0 else (1 - alpha) * self.kbps + alpha * sample
        error = self.kbps - sample
        self.deviation = (1 - alpha) * self.deviation + alpha * error * error / max(self.kbps, 1.0)
        self.deviation = min(max(self.deviation, 0.4), 2.5)

    def bounds(self) -> tuple[float, float]:
        spread = 3 * math.sqrt(self.deviation * self.kbps)
        return max(0.0, self.kbps - spread) * 1000, (self.kbps + spread) * 1000


class DownlinkEstimator:
    """The downlink of one subscriber, fed by all its consumer transports."""

    def __init__(self, now: float, initial_bps: int = 600_000, min_bps: int = 100_000,
                 max_bps: int = 5_000_000) -> None:  # fmt: skip
        self._min = float(min_bps)
        self._max = float(max_bps)
        self._delay_rate = float(initial_bps)
        self._loss_rate = float(initial_bps)
        self._has_twcc = False
        self._detectors: dict[int, _DelayDetector] = {}
        self.state = NORMAL  # the downlink's last combined detector state
        self._rc = _HOLD
        self._changed_at = now
        self._decreased_at = -math.inf
        self._link = _LinkCapacity()
        self._acked: deque[tuple[float, int]] = deque()
        self._acked_bytes = 0
        self._acked_since = math.inf  # time of the first feedback
        self._loss_lost = 0
        self._loss_total = 0
        self._loss_at = now  # last loss-based evaluation
        self._loss_decreased_at = -math.inf
        self._sent_bytes = 0
        # Probe: window in µs of our clock, target, decision, per-source delivery.
        self._probe_start = 0
        self._probe_end = 0
        self._probe_target = 0
        self._probe_sent_at_start = 0
        self._probe_decision: bool | None = None
        self._probing = False
        self._probe_overuse = False
        self._probe_total = 0
        self._probe_lost = 0
        # source -> [first send, last send, first arrival, last arrival, bytes after the first]
        self._probe_flows: dict[int, list[int]] = {}

    # -- inputs ----------------------------------------------------------------------------------

    def on_sent(self, size: int, now: float) -> None:
        """Every byte sent to this subscriber (media, RTX, padding): paces `padding_budget`."""
        self._sent_bytes += size

    def on_packet_results(self, results: PacketResults, now: float) -> None:
        """What one TwccSender matched from one feedback."""
        sends = results.send_us
        if not sends:
            return
        self._has_twcc = True
        det = self._detectors.get(results.source)
        if det is None:
            det = self._detectors[results.source] = _DelayDetector(now)
        det.updated_at = now
        arrivals = results.arrival_us
        sizes = results.sizes
        received = 0
        lost = 0
        probing = self._probing
        for i in range(len(sends)):
            arrival = arrivals[i]
            if arrival is None:
                lost += 1
            else:
                received += sizes[i]
                det.add(sends[i], arrival)
            if probing and self._probe_start <= sends[i] < self._probe_end:
                self._probe_packet(results.source, sends[i], arrival, sizes[i])
        self._acked.append((now, received))
        self._acked_bytes += received
        if self._acked_since == math.inf:
            self._acked_since = now
        while self._acked and self._acked[0][0] <= now - ACK_WINDOW:
            self._acked_bytes -= self._acked.popleft()[1]
        state = NORMAL
        for source, d in list(self._detectors.items()):
            age = now - d.updated_at
            if age > FORGET_SOURCE:
                del self._detectors[source]
            elif age <= STALE_SOURCE:
                if d.state == OVERUSE:
                    state = OVERUSE
                elif d.state == UNDERUSE and state == NORMAL:
                    state = UNDERUSE
        self.state = state
        if probing and state == OVERUSE:
            self._probe_overuse = True
        self._update_delay_based(state, now)
        self._loss_lost += lost
        self._loss_total += len(sends)
        if self._loss_total >= LOSS_MIN_PACKETS:
            self._update_loss_based(self._loss_lost / self._loss_total, now, MULTIPLICATIVE)
            self._loss_lost = self._loss_total = 0
        elif self._loss_rate > self._delay_rate:
            self._loss_rate = self._delay_rate

    def on_loss_report(self, fraction_lost: float, now: float) -> None:
        """A receiver report's fraction lost (RFC 3550 6.4.1, as 0..1) for this subscriber."""
        self._update_loss_based(min(max(fraction_lost, 0.0), 1.0), now, RR_GROWTH)

    # -- outputs ---------------------------------------------------------------------------------

    @property
    def estimate_bps(self) -> int:
        rate = min(self._delay_rate, self._loss_rate) if self._has_twcc else self._loss_rate
        return int(min(max(rate, self._min), self._max))

    def acked_bps(self, now: float) -> int | None:
        """Bytes acknowledged by feedback received over the last ACK_WINDOW seconds, as bit/s;
        None until feedback has come for a whole window."""
        if now - self._acked_since < ACK_WINDOW:
            return None
        total = self._acked_bytes
        for t, size in self._acked:  # entries older than the window (none after a feedback)
            if t <= now - ACK_WINDOW:
                total -= size
        return int(total * 8 / ACK_WINDOW)

    # -- delay-based rate control (gcc-02 5.5) -----------------------------------------------------

    def _update_delay_based(self, state: int, now: float) -> None:
        acked = self.acked_bps(now)
        rate = self._delay_rate
        if state == OVERUSE:
            if now - self._decreased_at < DECREASE_INTERVAL and not (
                acked is not None and acked < rate / 2
            ):
                return
            throughput = float(acked) if acked is not None else rate
            new = BETA * throughput
            if new > rate and self._link.kbps >= 0:
                new = BETA * self._link.kbps * 1000  # never increase while overusing
            if new < rate:
                rate = new
            if self._link.kbps >= 0 and throughput < self._link.bounds()[0]:
                self._link.reset()
            self._link.update(throughput, 0.05)
            self._rc = _HOLD
            self._changed_at = self._decreased_at = now
        elif state == UNDERUSE:
            self._rc = _HOLD  # the queues are draining: wait
            self._changed_at = now
        else:
            if self._rc == _HOLD:
                self._rc = _INCREASE
                self._changed_at = now
            throughput = float(acked) if acked is not None else rate
            if self._link.kbps >= 0 and throughput > self._link.bounds()[1]:
                self._link.reset()  # well above where overuse was seen: capacity unknown again
            dt = min(now - self._changed_at, 1.0)
            if self._link.kbps >= 0:
                increase = self._near_max_increase(rate) * dt
            else:
                increase = max(rate * (MULTIPLICATIVE**dt - 1), 1000.0 * dt)
            new = rate + increase
            if acked is not None:  # do not run away from what the subscriber actually gets
                new = min(new, max(rate, 1.5 * acked + 10_000))
            rate = new
            self._changed_at = now
        self._delay_rate = min(max(rate, self._min), self._max)
        if self._loss_rate > self._delay_rate:
            self._loss_rate = self._delay_rate

    @staticmethod
    def _near_max_increase(rate: float) -> float:
        """bit/s per second: about one average packet of a 30 fps stream per response time."""
        frame_bytes = rate / 30 / 8
        packets = max(1, math.ceil(frame_bytes / 1200))
        return max(4000.0, frame_bytes / packets * 8 / RESPONSE_TIME)

    # -- loss-based (gcc-02 6) -----------------------------------------------------------------------

    def _update_loss_based(self, loss: float, now: float, growth: float) -> None:
        rate = self._loss_rate
        if loss > LOSS_HIGH:
            if now - self._loss_decreased_at >= LOSS_DECREASE_INTERVAL:
                rate *= 1 - 0.5 * loss
                self._loss_decreased_at = now
        elif loss < LOSS_LOW:
            rate *= growth ** min(max(now - self._loss_at, 0.0), 1.0)
        self._loss_at = now
        if self._has_twcc:
            rate = min(rate, self._delay_rate)
        self._loss_rate = min(max(rate, self._min), self._max)

    # -- probing -----------------------------------------------------------------------------------

    def start_probe(self, target_bps: int, now: float) -> None:
        """Open a PROBE_DURATION window in which the caller sends up to `target_bps` (media plus
        padding from `padding_budget`). A probe in progress is abandoned."""
        self._probing = True
        self._probe_start = int(now * 1_000_000)
        self._probe_end = self._probe_start + int(PROBE_DURATION * 1_000_000)
        self._probe_target = target_bps
        self._probe_sent_at_start = self._sent_bytes
        self._probe_decision = None
        self._probe_overuse = False
        self._probe_total = self._probe_lost = 0
        self._probe_flows = {}

    @property
    def probing(self) -> bool:
        """A probe is open and undecided."""
        return self._probing

    def padding_budget(self, now: float) -> int:
        """Padding bytes to send now so the bytes sent since the probe began reach the target
        rate; 0 outside the probe window. Bounded to PROBE_BURST seconds at the target."""
        t = int(now * 1_000_000)
        if not self._probing or not self._probe_start <= t < self._probe_end:
            return 0
        due = self._probe_target * (t - self._probe_start) / 8_000_000
        due -= self._sent_bytes - self._probe_sent_at_start
        return int(min(max(due, 0.0), self._probe_target * PROBE_BURST / 8))

    def probe_result(self, now: float) -> bool | None:
        """None while no probe was started or it is undecided; then the decision, which stays
        until the next start_probe. Fails as soon as the downlink overuses during the probe."""
        if not self._probing:
            return self._probe_decision
        if self._probe_overuse:
            return self._decide(False)
        if int(now * 1_000_000) < self._probe_end + int(PROBE_WAIT * 1_000_000):
            return None
        if not self._probe_total or self._probe_lost > PROBE_MAX_LOSS * self._probe_total:
            return self._decide(False)
        delivered = self.probe_delivered_bps()
        if delivered < PROBE_SUCCESS * self._probe_target:
            return self._decide(False)
        rate = float(min(delivered, self._probe_target))
        self._link.reset()  # there is more room than the last overuse said
        self._delay_rate = min(max(self._delay_rate, rate), self._max)
        self._loss_rate = min(max(self._loss_rate, rate), self._max)
        return self._decide(True)

    def probe_delivered_bps(self) -> int:
        """Delivery rate of the probe window's packets so far: bytes after each source's first
        packet over the longest send or arrival span of any source."""
        total = 0
        span = 0
        for first_send, last_send, first_arrival, last_arrival, size in self._probe_flows.values():
            total += size
            span = max(span, last_send - first_send, last_arrival - first_arrival)
        return int(total * 8_000_000 / span) if span > 0 else 0

    def _decide(self, decision: bool) -> bool:
        self._probing = False
        self._probe_decision = decision
        return decision

    def _probe_packet(self, source: int, send_us: int, arrival_us: int | None, size: int) -> None:
        self._probe_total += 1
        if arrival_us is None:
            self._probe_lost += 1
            return
        flow = self._probe_flows.get(source)
        if flow is None:
            self._probe_flows[source] = [send_us, send_us, arrival_us, arrival_us, 0]
            return
        flow[0] = min(flow[0], send_us)
        flow[1] = max(flow[1], send_us)
        flow[2] = min(flow[2], arrival_us)
        flow[3] = max(flow[3], arrival_us)
        flow[4] += size
