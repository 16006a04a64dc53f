"""The process (docs/PROTOCOL.md section 1): store, room supervisor, HTTP + WebSocket, in one
nursery.

`Server.prepare()` does everything that can refuse to start before anything runs or logs: it
checks the TLS files, binds the HTTP socket, test-binds the media UDP port(s) and opens the
store, raising `ConfigError` or `StartupError` with one line naming the key (`arbiter serve`
prints it and exits 2). `Server.run` (which prepares first if nobody did) takes `task_status`
and reports the URLs it listens on once everything accepts work, then logs the start-up
summary: URLs, announced media addresses and ports, the worker layout. `shutdown()` tells every
client `serverRestarting` and closes its socket with 1012, stops hypercorn gracefully, then the
rooms, then closes the store, with the cleanup bounded by a deadline.
"""

from __future__ import annotations

import functools
import logging
import socket
import sqlite3
from dataclasses import dataclass

import trio
from hypercorn.config import Config as HyperConfig
from hypercorn.trio import serve

from . import logs
from .config import Config, StartupError, bind_error, check_files, check_udp_ports, exposure_warning
from .gateway import Gateway
from .http_api import create_app
from .metrics import Metrics, watch_loop_lag
from .rooms import RoomManager, SfuFactory
from .sfu.endpoint import MediaEndpoint, default_announced_ip
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


__all__ = ["Server", "Started", "StartupError", "announced_addresses", "media_ports"]


def announced_addresses(config: Config) -> list[str]:
    """The addresses put in SDP host candidates (sfu/endpoint.py: the announced ones, else the
    listen address or, for a wildcard, this host's default-route address)."""
    return list(config.media.announced_ip) or [default_announced_ip(config.media.listen)]


def media_ports(config: Config) -> str:
    """The UDP port(s) browsers send media to, as a firewall rule would say it."""
    port, workers = config.media.port, config.workers.count()
    if not port:
        return "ports chosen by the kernel (media.port = 0)"
    return f"{port}-{port + workers - 1}" if workers > 1 else str(port)


def bind_http(config: Config) -> socket.socket:
    """The HTTP listening socket, bound here (not by hypercorn) so a port in use is one line."""
    host, port = config.http.host, config.http.port
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"http.host: cannot resolve {host!r}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # As hypercorn does: a restart must not wait for TIME_WAIT connections to expire.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise bind_error("http.port", "TCP", host, port, exc) from None
    return sock


def _hypercorn_config(config: Config, sock: socket.socket) -> HyperConfig:
    """hypercorn's settings; `sock` (bound by `bind_http`) is handed over as fd://, and from
    then on hypercorn owns and closes it."""
    hc = HyperConfig()
    hc.bind = [f"fd://{sock.detach()}"]
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
    hc.accesslog = logs.access_logger(config.log.access)
    hc.access_log_format = logs.ACCESS_FORMAT
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
        self._http_socket: socket.socket | None = None

    def prepare(self) -> None:
        """Check and bind everything that can refuse to start (module docstring). Idempotent."""
        if self.store is not None:
            return
        config = self.config
        check_files(config)
        http = bind_http(config)
        try:
            check_udp_ports(config.media, config.workers.count())
            try:
                self.store = Store.open(config.store.path)
            except (sqlite3.Error, OSError) as exc:
                raise StartupError(f"store.path: cannot open {config.store.path}: {exc}") from None
        except BaseException:
            http.close()
            raise
        self._http_socket = http

    def shutdown(self) -> None:
        """SIGTERM/SIGINT: clients are told the server restarts (close 1012), then stop."""
        if self.gateway is not None:
            self.gateway.stopping = True
            self.gateway.server_restarting()
        self._shutdown.set()

    async def run(
        self, *, task_status: trio.TaskStatus[Started] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.prepare()
        store = self.store
        assert store is not None and self._http_socket is not None
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
            self.metrics.add_gauges("arbiter_rooms", "Live rooms by state", rooms.counts, "state")
            self.metrics.participants.set_function(gateway.participant_count)
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
            # Each worker process's own figures (the process collector sees the gateway only).
            for name, field_, scale, doc in (
                ("cpu_seconds", "cpu_ms", 1e-3, "CPU seconds each SFU worker process has used"),
                ("resident_memory_bytes", "rss_bytes", 1.0, "Each SFU worker's resident memory"),
                ("open_fds", "open_fds", 1.0, "Open file descriptors of each SFU worker"),
                ("event_loop_lag_seconds", "loop_lag_us", 1e-6,
                 "Each SFU worker's largest event-loop lag in its last load report"),
            ):  # fmt: skip
                self.metrics.add_gauges(
                    f"arbiter_worker_{name}",
                    doc,
                    lambda field_=field_, scale=scale: {
                        w.id: w.process[field_] * scale
                        for w in rooms.workers.workers.values()
                        if field_ in w.process
                    },
                    label="worker",
                )
            self.metrics.add_media(
                lambda: rooms.workers.sum_counters(
                    {
                        **endpoint.counters,
                        "bytes_in": endpoint.bytes_in,
                        "bytes_out": endpoint.bytes_out,
                    }
                )
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
                nursery.start_soon(watch_loop_lag, self.metrics.loop_lag)
                hc = _hypercorn_config(self.config, self._http_socket)
                self._http_socket = None  # hypercorn's now
                urls = await nursery.start(self._serve_http, app, hc, nursery.cancel_scope)
                gateway_url = _loopback_ws_url(urls[0])
                for index in range(local_workers):
                    nursery.start_soon(
                        run_local_worker, self.config, index, gateway_url, gateway.worker_token
                    )
                self._log_started(list(urls))
                task_status.started(Started(list(urls)))
        finally:
            if self._http_socket is not None:
                self._http_socket.close()
                self._http_socket = None
            # Synchronous, so it runs to completion even while cancelled. Every socket is gone
            # with the process: keep the connections table true to that.
            store.clear_connections()
            store.close()

    def _log_started(self, urls: list[str]) -> None:
        """The start-up summary (INFO, then the exposure WARNING if any; docs section 6)."""
        config = self.config
        for url in urls:
            log.info("listening on %s", url, extra={"url": url})
        announced = announced_addresses(config)
        workers = config.workers.count()
        if workers:
            ports = media_ports(config)
            log.info("media: UDP %s on %s (one port per local SFU worker), announced as %s",
                     ports, config.media.listen, ", ".join(announced),
                     extra={"media_ports": ports, "announced": announced})  # fmt: skip
            log.info("workers: %d local SFU worker processes (workers.local = %s); remote "
                     "workers %s", workers, config.workers.local,
                     "may attach with workers.token" if config.workers.token else "refused",
                     extra={"workers": workers})  # fmt: skip
        else:
            port = self.endpoint.port if self.endpoint is not None else config.media.port
            ports = str(port)
            log.info("media: UDP %d on %s, announced as %s", port, config.media.listen,
                     ", ".join(announced),
                     extra={"media_ports": ports, "announced": announced})  # fmt: skip
            log.info("workers: none, rooms run in this process (workers.local = 0)",
                     extra={"workers": 0})  # fmt: skip
        warning = exposure_warning(config, announced, ports)
        if warning:
            log.warning("%s", warning)

    async def _serve_http(
        self,
        app: object,
        hc: HyperConfig,
        scope: trio.CancelScope,
        *,
        task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        await serve(
            app,  # type: ignore[arg-type]
            hc,
            shutdown_trigger=self._shutdown.wait,
            task_status=task_status,
        )
        # hypercorn has drained: stop the rooms too.
        scope.cancel()

    async def _bound_shutdown(self, scope: trio.CancelScope) -> None:
        await self._shutdown.wait()
        scope.deadline = min(scope.deadline, trio.current_time() + SHUTDOWN_GRACE)
