"""Downlink estimator (arbiter.sfu.bwe) on simulated links.

The link is a bottleneck FIFO: a packet sent at `t` arrives at max(t, previous arrival) +
size * 8 / rate, and is dropped when it would wait more than 300 ms in the queue. The sender
paces 1200-byte packets at the estimator's own estimate; the real TwccSender / TwccReceiver /
feedback bytes sit in between (feedback every 100 ms, 20 ms back to the sender)."""

from __future__ import annotations

from collections import deque

import pytest

from arbiter.sfu import rtcp
from arbiter.sfu.bwe import (
    OVERUSE,
    PROBE_BURST,
    DownlinkEstimator,
)
from arbiter.sfu.twcc import (
    PacketResults,
    TwccReceiver,
    TwccSender,
    parse_feedback_packet_untrusted,
)


class Link:
    def __init__(self, rate_bps: int) -> None:
        self.rate = rate_bps
        self.prev = 0.0
        self.lost = 0

    def send(self, t: float, size: int) -> float | None:
        start = max(t, self.prev)
        if start - t > 0.3:
            self.lost += 1
            return None
        self.prev = start + size * 8 / self.rate
        return self.prev


class Sim:
    """`flows` consumer transports of one subscriber share the link, packets round robin."""

    def __init__(self, est: DownlinkEstimator, link: Link, flows: int = 1) -> None:
        self.est = est
        self.link = link
        self.t = 0.0
        self.flows = [(TwccSender(), TwccReceiver(), deque()) for _ in range(flows)]
        self.next_fb = [0.1 + 0.03 * i for i in range(flows)]
        self.feedback: deque[tuple[float, int, bytes]] = deque()
        self.next_send = 0.0
        self.k = 0
        self.samples: list[tuple[float, int]] = []

    def send(self, size: int, at: float) -> None:
        sender, _, flight = self.flows[self.k % len(self.flows)]
        self.k += 1
        seq = sender.next_seq(size, at)
        self.est.on_sent(size, at)
        arrival = self.link.send(at, size)
        if arrival is not None:
            flight.append((arrival, seq))

    def run(self, until: float, step: float = 0.005) -> None:
        est = self.est
        while self.t < until:
            t = self.t
            while self.next_send <= t:
                self.send(1200, self.next_send)
                padding = est.padding_budget(self.next_send)
                while padding > 0:  # padding in packets of at most 1200 bytes
                    self.send(min(padding, 1200), self.next_send)
                    padding -= 1200
                self.next_send += 1200 * 8 / est.estimate_bps
            for i, (_, receiver, flight) in enumerate(self.flows):
                while flight and flight[0][0] <= t:
                    arrival, seq = flight.popleft()
                    receiver.on_packet(seq, arrival)
                if t >= self.next_fb[i]:
                    for data in receiver.build(t, 1, 2):
                        self.feedback.append((t + 0.02, i, data))
                    self.next_fb[i] += 0.1
            while self.feedback and self.feedback[0][0] <= t:
                _, i, data = self.feedback.popleft()
                [pkt] = rtcp.iter_packets_untrusted(data)
                fb = parse_feedback_packet_untrusted(pkt)
                est.on_packet_results(self.flows[i][0].on_feedback(fb), t)
            self.samples.append((t, est.estimate_bps))
            self.t = round(t + step, 6)

    def between(self, start: float, end: float) -> list[int]:
        return [e for t, e in self.samples if start <= t < end]


@pytest.mark.parametrize("flows", [1, 2])
def test_settles_under_a_500k_bottleneck_then_follows_it_up_to_3m(flows: int) -> None:
    est = DownlinkEstimator(0.0)  # starts at 600 kbit/s, above the link
    link = Link(500_000)
    sim = Sim(est, link, flows)
    sim.run(30.0)
    settled = sim.between(10.0, 30.0)
    assert 300_000 <= min(settled) and max(settled) <= 550_000
    # The first overuse comes within a second and cuts to 0.85 x what got through.
    assert min(sim.between(0.0, 1.5)) < 500_000
    assert link.lost == 0  # delay-based: the queue never reached 300 ms
    ack = est.acked_bps(sim.t)
    assert ack is not None and 400_000 <= ack <= 510_000
    link.rate = 3_000_000
    sim.run(50.0)
    climbed = [t for t, e in sim.samples if t >= 30.0 and e > 1_200_000]
    assert climbed and climbed[0] < 50.0
    assert sim.samples[-1][1] > 1_600_000  # still climbing at 8 %/s, no overuse
    assert link.lost == 0


def test_probe_succeeds_on_a_wide_link_and_raises_the_estimate() -> None:
    est = DownlinkEstimator(0.0, initial_bps=400_000)
    sim = Sim(est, Link(3_000_000))
    sim.run(5.0)
    before = est.estimate_bps
    assert 500_000 < before < 650_000  # multiplicative growth: about 8 %/s
    est.start_probe(1_000_000, sim.t)
    assert est.probing and est.probe_result(sim.t) is None
    result = None
    while result is None and sim.t < 7.0:
        sim.run(sim.t + 0.05)
        result = est.probe_result(sim.t)
    assert result is True and 5.75 <= sim.t <= 5.85  # 0.3 s window + 0.5 s for feedback
    assert 950_000 <= est.probe_delivered_bps() <= 1_050_000
    assert est.estimate_bps == est.probe_delivered_bps()  # raised to the delivered rate
    assert est.probe_result(sim.t + 1) is True and not est.probing  # stays decided
    sim.run(sim.t + 0.5)
    assert est.estimate_bps >= 1_000_000


def test_probe_fails_on_a_narrow_link() -> None:
    est = DownlinkEstimator(0.0, initial_bps=400_000)
    link = Link(500_000)
    sim = Sim(est, link)
    sim.run(5.0)
    est.start_probe(1_000_000, sim.t)
    result = None
    while result is None and sim.t < 7.0:
        sim.run(sim.t + 0.05)
        result = est.probe_result(sim.t)
    assert result is False and sim.t < 5.8  # the overuse ends it before the window is judged
    assert est.state == OVERUSE or est.estimate_bps < 450_000
    assert est.estimate_bps < 500_000 and link.lost == 0
    assert est.padding_budget(sim.t) == 0


def test_padding_budget() -> None:
    est = DownlinkEstimator(10.0)
    assert est.padding_budget(10.0) == 0  # no probe
    est.start_probe(1_000_000, 10.0)
    assert est.padding_budget(10.0) == 0
    assert est.padding_budget(10.01) == 1250  # 10 ms at 1 Mbit/s
    est.on_sent(1000, 10.01)
    assert est.padding_budget(10.01) == 250
    assert est.padding_budget(10.2) == int(1_000_000 * PROBE_BURST / 8)  # one burst at most
    assert est.padding_budget(10.3) == 0  # window over
    assert est.probe_result(10.9) is False  # no feedback at all


def test_receiver_reports_only() -> None:
    down = DownlinkEstimator(0.0)
    for i in range(1, 11):  # one RR a second, 20 % lost: x (1 - 0.5 * 0.2) each time
        down.on_loss_report(0.2, float(i))
    assert down.estimate_bps == 209_207  # 600000 * 0.9^10
    up = DownlinkEstimator(0.0)
    for i in range(1, 11):  # no loss: 5 %/s, slower than the 8 %/s of transport-cc
        up.on_loss_report(0.0, float(i))
    assert up.estimate_bps == 977_336  # 600000 * 1.05^10
    hold = DownlinkEstimator(0.0)
    hold.on_loss_report(0.05, 1.0)  # between 2 % and 10 %: hold
    assert hold.estimate_bps == 600_000
    quick = DownlinkEstimator(0.0)
    quick.on_loss_report(0.5, 1.0)
    quick.on_loss_report(0.5, 1.1)  # at most one decrease per 300 ms
    assert quick.estimate_bps == 450_000
    floor = DownlinkEstimator(0.0, min_bps=100_000)
    for i in range(1, 30):
        floor.on_loss_report(1.0, float(i))
    assert floor.estimate_bps == 100_000
    ceiling = DownlinkEstimator(0.0, max_bps=700_000)
    for i in range(1, 30):
        ceiling.on_loss_report(0.0, float(i))
    assert ceiling.estimate_bps == 700_000


def results(source: int, start_us: int, count: int, lost_every: int = 0) -> PacketResults:
    """Packets 10 ms apart arriving 10 ms apart (no queueing), 1200 bytes each."""
    send = [start_us + 10_000 * i for i in range(count)]
    arrival: list[int | None] = [
        None if lost_every and i % lost_every == 0 else 50_000 + s for i, s in enumerate(send)
    ]
    return PacketResults(source, send, arrival, [1200] * count)


def test_transport_cc_loss_based() -> None:
    est = DownlinkEstimator(0.0)
    est.on_packet_results(results(1, 0, 20), 0.1)  # no loss
    assert est.estimate_bps == 600_000
    # 25 % lost over 20 packets (a loss interval has at least 20): x (1 - 0.5 * 0.25).
    est.on_packet_results(results(1, 100_000, 20, lost_every=4), 0.3)
    assert est.estimate_bps == 525_000
    est.on_packet_results(results(1, 300_000, 20, lost_every=4), 0.5)  # 200 ms later: waits
    assert est.estimate_bps == 525_000
    est.on_packet_results(results(1, 500_000, 20, lost_every=4), 0.7)
    assert est.estimate_bps == 459_375
    # Delay-based and loss-based both grow again without loss, starting from the lower one.
    for i in range(10):
        est.on_packet_results(results(1, 700_000 + 200_000 * i, 20), 0.9 + 0.2 * i)
    assert 459_375 < est.estimate_bps <= int(459_375 * 1.08**2) + 1


def test_no_feedback_no_change() -> None:
    est = DownlinkEstimator(0.0, initial_bps=800_000)
    est.on_packet_results(PacketResults(1, [], [], []), 1.0)
    assert est.estimate_bps == 800_000 and est.acked_bps(1.0) is None
