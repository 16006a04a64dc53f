"""Prometheus metrics (prometheus-client: exposition format and registry done right).

One registry per server instance, so several servers in one test process do not collide.
Media-plane drop counters are plain integers on the endpoint (a dict increment per bad packet
is all the hot path can afford); they are exported by a collector at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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

    def add_gauges(self, name: str, doc: str, fn: Callable[[], Mapping[str, float]]) -> None:
        """A gauge family computed at scrape time: fn returns {label value: number}."""

        def collect() -> Iterable[Metric]:
            family = GaugeMetricFamily(name, doc, labels=["kind"])
            for label, value in fn().items():
                family.add_metric([label], value)
            yield family

        self.registry.register(_Callback(collect))

    def add_counters(self, name: str, doc: str, fn: Callable[[], Mapping[str, float]]) -> None:
        def collect() -> Iterable[Metric]:
            family = CounterMetricFamily(name, doc, labels=["reason"])
            for label, value in fn().items():
                family.add_metric([label], value)
            yield family

        self.registry.register(_Callback(collect))

    def render(self) -> bytes:
        return generate_latest(self.registry)
