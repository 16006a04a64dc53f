"""The process (docs/PROTOCOL.md section 1): store, room supervisor, HTTP + WebSocket, in one
nursery.

`Server.run` takes `task_status` and reports the URLs it listens on once everything accepts
work; cancelling it (or `shutdown()`) stops hypercorn gracefully, then the rooms, then closes the
store, with the cleanup shielded and bounded by a deadline.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve

from .config import Config
from .gateway import Gateway
from .http_api import create_app
from .metrics import Metrics
from .rooms import RoomManager, SfuFactory
from .sfu.endpoint import MediaEndpoint
from .sfu.media import run_media_room
from .sfu.media_worker import MediaWorker, media_tables
from .store import Store
from .workers import local_token, run_local_worker

log = logging.getLogger(__name__)

SHUTDOWN_GRACE = 3.0


@dataclass(frozen=True)
class Started:
    urls: list[str]

    @property
    def url(self) -> str:
        return self.urls[0]


def _hypercorn_config(config: Config) -> HyperConfig:
    hc = HyperConfig()
    host = config.http.host
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    hc.bind = [f"{host}:{config.http.port}"]
    if config.http.tls_cert:
        hc.certfile = config.http.tls_cert
        hc.keyfile = config.http.tls_key
        # HTTP/1.1 only. Over TLS browsers negotiate HTTP/2, and hypercorn 0.18's h2 protocol
        # can raise KeyError on DATA for a stream it already dropped; under trio that takes the
        # whole HTTP listener down (seen in about 1 of 8 browser runs). The API and the web
        # client are a handful of small requests and one WebSocket: h2 buys nothing here.
        hc.alpn_protocols = ["http/1.1"]
    # hypercorn closes over-size frames with 1009 itself (docs/PROTOCOL.md section 3).
    hc.websocket_max_message_size = config.limits.max_message_bytes
    hc.graceful_timeout = SHUTDOWN_GRACE / 2
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    return hc


def media_sfu_factory(config: Config, worker: MediaWorker) -> SfuFactory:
    """Room SFUs with the native media plane, all on the process's one MediaWorker."""
    return functools.partial(run_media_room, worker=worker, config=config)


def _loopback_ws_url(url: str) -> str:
    """Where local workers reach the gateway: the bound port on loopback (HTTP or HTTPS)."""
    scheme, rest = url.split("://", 1)
    port = rest.rsplit(":", 1)[1].split("/")[0]
    return f"{'wss' if scheme == 'https' else 'ws'}://127.0.0.1:{port}/ws"


class Server:
    def __init__(self, config: Config, sfu_factory: SfuFactory | None = None) -> None:
        self.config = config
        self.sfu_factory = sfu_factory  # None: the native media plane (media_sfu_factory)
        self.metrics = Metrics()
        self.endpoint: MediaEndpoint | None = None
        self.media: MediaWorker | None = None  # owns the endpoint, the rooms, their Routers
        self.store: Store | None = None
        self.rooms: RoomManager | None = None
        self.gateway: Gateway | None = None
        self._shutdown = trio.Event()

    def shutdown(self) -> None:
        if self.gateway is not None:
            self.gateway.stopping = True
        self._shutdown.set()

    async def run(
        self, *, task_status: trio.TaskStatus[Started] = trio.TASK_STATUS_IGNORED
    ) -> None:
        store = self.store = Store.open(self.config.store.path)
        try:
            stale = store.clear_connections()
            if stale:
                log.info("removed %d stale connection rows from the previous run", stale)
            endpoint = self.endpoint = MediaEndpoint(self.config.media)
            media = self.media = MediaWorker(endpoint)
            factory = self.sfu_factory or media_sfu_factory(self.config, media)
            rooms = self.rooms = RoomManager(self.config, store, self.metrics, factory)
            gateway = self.gateway = Gateway(self.config, store, rooms, self.metrics)
            rooms.gateway = gateway
            local_workers = self.config.workers.count()
            if local_workers:
                gateway.worker_token = local_token(self.config)
            self.metrics.add_gauges("arbiter_rooms", "Live rooms by status", rooms.counts)
            for what, doc in (
                ("participants", "Participants per SFU worker"),
                ("rooms", "Rooms placed on each SFU worker"),
                ("pps", "RTP packets per second each SFU worker received (last load report)"),
            ):
                self.metrics.add_gauges(
                    f"arbiter_worker_{what}",
                    doc,
                    lambda what=what: {w["id"]: w[what] for w in rooms.workers.describe()},
                )
            self.metrics.add_counters(
                "arbiter_media_datagrams",
                "Media datagrams by outcome (drop reasons and rtp_in/rtcp_in)",
                lambda: rooms.workers.sum_counters(endpoint.counters),
            )
            # The media plane's tables, so a leak is visible from outside (the soak script and
            # operators read these; once everyone has left, all but media_rooms are back to 0).
            self.metrics.add_gauges(
                "arbiter_media_transports",
                "Media plane entries: live transports and their lookup tables",
                lambda: rooms.workers.sum_tables(media_tables(media)),
            )
            app = create_app(self.config, store, rooms, gateway, self.metrics)
            async with trio.open_nursery() as nursery:
                # The endpoint first: room SFUs started by recovery need its port for their SDP.
                # With SFU workers the gateway binds no media port: the workers do.
                if not local_workers:
                    await nursery.start(media.run)
                await nursery.start(rooms.run)
                nursery.start_soon(self._bound_shutdown, nursery.cancel_scope)
                urls = await nursery.start(self._serve_http, app, nursery.cancel_scope)
                gateway_url = _loopback_ws_url(urls[0])
                for index in range(local_workers):
                    nursery.start_soon(
                        run_local_worker, self.config, index, gateway_url, gateway.worker_token
                    )
                task_status.started(Started(list(urls)))
        finally:
            # Synchronous, so it runs to completion even while cancelled. Every socket is gone
            # with the process: keep the connections table true to that.
            store.clear_connections()
            store.close()

    async def _serve_http(
        self,
        app: object,
        scope: trio.CancelScope,
        *,
        task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        await serve(
            app,  # type: ignore[arg-type]
            _hypercorn_config(self.config),
            shutdown_trigger=self._shutdown.wait,
            task_status=task_status,
        )
        # hypercorn has drained: stop the rooms too.
        scope.cancel()

    async def _bound_shutdown(self, scope: trio.CancelScope) -> None:
        await self._shutdown.wait()
        scope.deadline = min(scope.deadline, trio.current_time() + SHUTDOWN_GRACE)
