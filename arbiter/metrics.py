"""Prometheus metrics (prometheus-client: exposition format and registry done right).

One registry per server instance, so several servers in one test process do not collide. It
also holds prometheus-client's process collector (`process_cpu_seconds_total`,
`process_resident_memory_bytes`, `process_open_fds`, ...: the gateway process's own) and its
platform and GC collectors.

The media plane counts everything in one `collections.Counter` of plain integers (a dict
increment per packet is all the hot path can afford; SFU workers send theirs in their load
reports and the gateway sums them). At scrape time `media_families` sorts its names into
separate families (docs/PROTOCOL.md section 1):

- `arbiter_media_packets_total{kind}`: traffic, the names in `TRAFFIC`;
- `arbiter_media_bytes_total{direction="in"|"out"}`: UDP payload bytes received and sent;
- `arbiter_media_events_total{event}`: decisions and state changes that drop nothing
  (`EVENTS`: ICE moves, consent expiry, PLIs merged or held back, NACKs not answered);
- `arbiter_media_dropped_total{reason}`: everything else: a datagram or message discarded, or
  one we failed to send. A name the media plane adds later is a drop reason until listed here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import trio
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# Traffic the media plane handled (arbiter/sfu: endpoint, router, quality, producer).
TRAFFIC = frozenset(
    {
        "rtp_in",  # SRTP packets received and authenticated
        "rtcp_in",  # SRTCP compounds received and authenticated
        "pli_sent",  # keyframe requests sent to publishers
        "nack_retransmitted",  # packets resent from the NACK cache
        "padding_sent",  # probe padding packets (bandwidth probing)
        "twcc_feedback_in",  # transport-wide CC feedback received from subscribers
        "twcc_feedback_out",  # transport-wide CC feedback sent to publishers
        "simulcast_layers",  # layers frames sent to publishers
    }
)
# Normal decisions and state changes: nothing is lost by them.
EVENTS = frozenset(
    {
        "ice_switch",
        "ice_switch_deferred",
        "ice_nomination_pending",
        "consent_expired",
        "dtls_peer_closed",
        "pli_coalesced",
        "pli_deferred",
        "pli_throttled",
        "nack_suppressed",
        "nack_missed",
    }
)
BYTES = {"bytes_in": "in", "bytes_out": "out"}
JOIN_BUCKETS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
LAG_INTERVAL = 0.5  # seconds between event-loop lag samples


def media_families(counters: Mapping[str, int]) -> dict[str, dict[str, int]]:
    """The media plane's counters sorted into traffic, bytes, events and drops."""
    out: dict[str, dict[str, int]] = {"packets": {}, "bytes": {}, "events": {}, "dropped": {}}
    for name, value in counters.items():
        if name in BYTES:
            out["bytes"][BYTES[name]] = value
        elif name in TRAFFIC:
            out["packets"][name] = value
        elif name in EVENTS:
            out["events"][name] = value
        else:
            out["dropped"][name] = value
    for direction in BYTES.values():
        out["bytes"].setdefault(direction, 0)
    return out


CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Callback(Collector):
    def __init__(self, fn: Callable[[], Iterable[Metric]]) -> None:
        self._fn = fn

    def collect(self) -> Iterable[Metric]:
        return self._fn()


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.ws_frames = Counter(
            "arbiter_ws_frames_received", "WebSocket frames received", ["action"], registry=r
        )
        self.ws_errors = Counter(
            "arbiter_ws_errors", "Error frames sent to WebSocket peers", ["status"], registry=r
        )
        self.ws_closed = Counter(
            "arbiter_ws_closed_by_server", "WebSockets closed by the server", ["code"], registry=r
        )
        self.http_requests = Counter(
            "arbiter_http_requests", "HTTP API requests", ["route", "status"], registry=r
        )
        self.room_crashes = Counter(
            "arbiter_room_sfu_crashes", "Room SFU tasks that raised and were restarted", registry=r
        )
        self.identify_refused = Counter(
            "arbiter_identify_refused_budget",
            "Identifies refused 429 because the address ran out of failed-identify budget",
            registry=r,
        )
        self.sfu_busy = Counter(
            "arbiter_sfu_busy",
            "Client frames refused 503 at a room SFU's high-water mark",
            registry=r,
        )
        self.origin_refused = Counter(
            "arbiter_origin_refused",
            "HTTP requests and WebSocket upgrades refused for Origin",
            registry=r,
        )
        self.moderation = Counter(
            "arbiter_moderation", "Moderation actions carried out", ["op"], registry=r
        )
        self.ws_connections = Gauge(
            "arbiter_ws_connections", "Open WebSocket connections", registry=r
        )
        # Set to a function by the server (Gateway.participant_count).
        self.participants = Gauge(
            "arbiter_participants", "Clients identified in a room, all rooms together", registry=r
        )
        self.join_seconds = Histogram(
            "arbiter_join_seconds",
            "From a client's accepted identify to the first of its transports connecting "
            "(the room SFU's mediaUp), per client",
            buckets=JOIN_BUCKETS,
            registry=r,
        )
        self.loop_lag = Histogram(
            "arbiter_event_loop_lag_seconds",
            f"How late a {LAG_INTERVAL} s sleep of the gateway's event loop woke up",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)

    def add_gauges(
        self,
        name: str,
        doc: str,
        fn: Callable[[], Mapping[str, float]],
        label: str = "kind",
    ) -> None:
        """A gauge family computed at scrape time: fn returns {label value: number}."""

        def collect() -> Iterable[Metric]:
            family = GaugeMetricFamily(name, doc, labels=[label])
            for value_label, value in fn().items():
                family.add_metric([value_label], value)
            yield family

        self.registry.register(_Callback(collect))

    def add_counters(
        self,
        name: str,
        doc: str,
        fn: Callable[[], Mapping[str, float]],
        label: str = "reason",
    ) -> None:
        """A counter family computed at scrape time (`name` without `_total`)."""

        def collect() -> Iterable[Metric]:
            family = CounterMetricFamily(name, doc, labels=[label])
            for value_label, value in fn().items():
                family.add_metric([value_label], value)
            yield family

        self.registry.register(_Callback(collect))

    def add_media(self, fn: Callable[[], Mapping[str, int]]) -> None:
        """The media plane's counters (this process's plus the workers'), by family."""

        def collect() -> Iterable[Metric]:
            families = media_families(fn())
            for key, name, label, doc in (
                ("packets", "arbiter_media_packets", "kind",
                 "Media-plane traffic by kind (packets and feedback handled)"),
                ("bytes", "arbiter_media_bytes", "direction",
                 "UDP payload bytes the media plane received (in) and sent (out)"),
                ("events", "arbiter_media_events", "event",
                 "Media-plane decisions and state changes that drop nothing"),
                ("dropped", "arbiter_media_dropped", "reason",
                 "Media datagrams and messages dropped or not sent, by reason"),
            ):  # fmt: skip
                family = CounterMetricFamily(name, doc, labels=[label])
                for value_label, value in sorted(families[key].items()):
                    family.add_metric([value_label], value)
                yield family
            # The one family of earlier releases, every name together (bytes aside): kept for
            # scripts that still read it; new readers use the families above.
            old = CounterMetricFamily(
                "arbiter_media_datagrams",
                "Deprecated: arbiter_media_packets/events/dropped_total together",
                labels=["reason"],
            )
            for group in ("packets", "events", "dropped"):
                for value_label, value in sorted(families[group].items()):
                    old.add_metric([value_label], value)
            yield old

        self.registry.register(_Callback(collect))

    def render(self) -> bytes:
        return generate_latest(self.registry)


async def watch_loop_lag(histogram: Histogram, interval: float = LAG_INTERVAL) -> None:
    """Event-loop lag: sleep `interval`, observe how much later than asked the task woke up
    (anything that holds the loop, a slow handler or a long batch, shows up here)."""
    while True:
        asked = trio.current_time() + interval
        await trio.sleep_until(asked)
        histogram.observe(max(trio.current_time() - asked, 0.0))
