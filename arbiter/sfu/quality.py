"""Congestion control and layer choice: the Router's quality half (docs/PROTOCOL.md section 4,
"Quality" and "RTCP").

transport-cc both ways: feedback on what each publisher's transport received (so its browser's
estimator adapts), and our sequence numbers' feedback from each subscriber, which feeds that
subscriber's one Downlink (downlink.py: estimate, layer per simulcast consumer, probes). Every
`ALLOCATION_INTERVAL` the layers are chosen and publishers told which of theirs anyone gets;
probe padding goes out on each tick.

Reads the Router's per-transport tables (`routes`) and never edits them: it sets only what
belongs to layer choice (a rewriter's `target`, a track's `active`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from . import rtcp
from .downlink import PADDING_PACKET, Downlink, padding_packet
from .simulcast import SimulcastConsumer, SimulcastTrack, consumer_bps, wanted_rids
from .srtp import PROTECT_ERRORS
from .transport import Role
from .twcc import TwccSender, parse_feedback_packet_untrusted

if TYPE_CHECKING:
    from .router import Send, _Routes
    from .transport import WebRtcTransport

TWCC_FEEDBACK_INTERVAL = 0.1  # transport-cc feedback to publishers (docs/PROTOCOL.md section 4)
ALLOCATION_INTERVAL = 0.5  # layer choices per subscriber (downlink.py)
MAX_PADDING_BURST = 64  # probe packets per tick and subscriber (a tick is 50 ms: 2.8 Mbit/s)

LayersWanted = Callable[[SimulcastTrack, "tuple[str, ...] | None"], None]


class Quality:
    """Downlinks per subscriber and the transport-cc timers of one Router."""

    def __init__(
        self,
        routes: Mapping[WebRtcTransport, _Routes],
        send: Send,
        counters: dict[str, int],
        layers_wanted: LayersWanted,
    ) -> None:
        self.routes = routes
        self.send = send
        self.counters = counters
        self.layers_wanted = layers_wanted
        self.downlinks: dict[str, Downlink] = {}  # subscriber -> its one downlink (estimate)
        self.next_feedback = float("-inf")
        self.next_allocation = float("-inf")

    def tick(self, now: float) -> None:
        if now >= self.next_feedback:
            self.next_feedback = now + TWCC_FEEDBACK_INTERVAL
            self.send_transport_feedback(now)
        if now >= self.next_allocation:
            self.next_allocation = now + ALLOCATION_INTERVAL
            self.allocate(now)
        self.send_padding(now)

    def forget(self, consumer: SimulcastConsumer) -> None:
        downlink = self.downlinks.get(consumer.transport.owner)
        if downlink is not None:
            downlink.forget(consumer)

    def on_transport_feedback(
        self, transport: WebRtcTransport, item: rtcp.RtcpPacket, now: float
    ) -> None:
        """A subscriber's transport-cc feedback: the arrival of what we sent it, for its
        downlink estimate (bwe.py)."""
        routes = self.routes.get(transport)
        if routes is None or routes.twcc_out is None:
            return
        feedback = parse_feedback_packet_untrusted(item)
        results = routes.twcc_out.on_feedback(feedback)
        downlink = self.downlink(transport.owner, now)
        downlink.twcc = True
        downlink.estimator.on_packet_results(results, now)
        self.counters["twcc_feedback_in"] += 1

    def on_receiver_report(
        self, transport: WebRtcTransport, item: rtcp.RtcpPacket, now: float
    ) -> None:
        """A subscriber's RR: the loss it reports drives its estimate when it sends no
        transport-cc (aiortc), docs/PROTOCOL.md section 4, Quality."""
        downlink = self.downlinks.get(transport.owner)
        if downlink is None or downlink.twcc:
            return
        report = rtcp.parse_receiver_report_untrusted(item)
        if report.reports:
            worst = max(b.fraction_lost for b in report.reports) / 256
            downlink.estimator.on_loss_report(worst, now)

    def downlink(self, subscriber: str, now: float) -> Downlink:
        downlink = self.downlinks.get(subscriber)
        if downlink is None:
            downlink = self.downlinks[subscriber] = Downlink(subscriber, now)
        return downlink

    def send_transport_feedback(self, now: float) -> None:
        """transport-cc feedback to every publisher that negotiated it (~every 100 ms), so
        its browser's own estimator adapts its sending rate (docs/PROTOCOL.md section 4)."""
        for t, routes in self.routes.items():
            receiver = routes.twcc_in
            if receiver is None or not t.connected or t.remote_addr is None:
                continue
            media_ssrc = routes.producer_list[0].ssrc if routes.producer_list else 0
            for packet in receiver.build(now, t.rtcp_ssrc, media_ssrc):
                try:
                    self.send(t.protect_rtcp(packet), t.remote_addr)
                except PROTECT_ERRORS:
                    self.counters["protect_failed"] += 1
                self.counters["twcc_feedback_out"] += 1

    def allocate(self, now: float) -> None:
        """Each subscriber's simulcast consumers get their layers (downlink.py); a publisher
        is told which of its layers anyone gets (`layers_wanted`)."""
        by_subscriber: dict[str, list[SimulcastConsumer]] = {}
        fixed: dict[str, float] = {}
        for t, routes in self.routes.items():
            if t.role != Role.CONSUMER:
                continue
            for consumer in set(routes.consumers.values()):
                if isinstance(consumer, SimulcastConsumer):
                    by_subscriber.setdefault(t.owner, []).append(consumer)
                elif not consumer.paused:
                    fixed[t.owner] = fixed.get(t.owner, 0.0) + consumer_bps(consumer, now)
        for subscriber, consumers in by_subscriber.items():
            downlink = self.downlink(subscriber, now)
            downlink.allocate(consumers, fixed.get(subscriber, 0.0), now)
        for subscriber in [s for s in self.downlinks if s not in by_subscriber]:
            if subscriber not in fixed:
                del self.downlinks[subscriber]
        for routes in self.routes.values():
            for track in routes.simulcast:
                wanted = wanted_rids(track, now)
                if wanted != track.active:
                    track.active, track.active_at = wanted, now
                    self.layers_wanted(track, wanted)

    def send_padding(self, now: float) -> None:
        """Probe padding for the downlinks that probe (downlink.py): on the RTX stream of one
        of the subscriber's connected simulcast consumers with transport-cc."""
        if not self.downlinks:
            return
        sent: dict[str, int] = {}
        for t, routes in self.routes.items():
            if routes.twcc_out is not None:
                sent[t.owner] = sent.get(t.owner, 0) + routes.twcc_out.sent_bytes
        for downlink in self.downlinks.values():
            # What the subscriber was sent since the last tick (media included) paces it.
            total = sent.get(downlink.subscriber, 0)
            downlink.estimator.on_sent(total - downlink.sent_bytes, now)
            downlink.sent_bytes = total
            if not downlink.probing:
                continue
            budget = downlink.padding_bytes(now)
            if budget < PADDING_PACKET:
                continue
            carrier = self._padding_carrier(downlink.subscriber)
            if carrier is None:
                continue
            consumer, twcc, ext = carrier
            t = consumer.transport
            rewriter = consumer.rewriter
            for _ in range(min(budget // PADDING_PACKET, MAX_PADDING_BURST)):
                packet = padding_packet(
                    consumer.rtx_ssrc or 0, rewriter.rtx_pt or 0, rewriter.next_rtx_seq(),
                    rewriter.last_timestamp, ext, twcc.next_seq(PADDING_PACKET, now),
                )  # fmt: skip
                try:
                    self.send(t.protect_rtp(packet), t.remote_addr)  # type: ignore[arg-type]
                except PROTECT_ERRORS:
                    self.counters["protect_failed"] += 1
                    break
                self.counters["padding_sent"] += 1

    def _padding_carrier(
        self, subscriber: str
    ) -> tuple[SimulcastConsumer, TwccSender, int] | None:
        for t, routes in self.routes.items():
            if t.owner != subscriber or t.role != Role.CONSUMER or routes.twcc_out is None:
                continue
            if not t.connected or t.remote_addr is None:
                continue
            for consumer in routes.consumers.values():
                if (
                    isinstance(consumer, SimulcastConsumer)
                    and consumer.rtx_ssrc is not None
                    and consumer.rewriter.rtx_pt is not None
                    and 0 < consumer.producer.twcc_ext < 15
                    and consumer.rewriter.current >= 0
                ):
                    return consumer, routes.twcc_out, consumer.producer.twcc_ext
        return None
