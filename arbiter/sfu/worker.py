"""An SFU worker: `arbiter sfu --gateway URL --token T` (docs/PROTOCOL.md section 1).

A worker is a process with its own MediaEndpoint (its own UDP port) that serves rooms for a
gateway, on this machine or another one. It keeps one control connection to the gateway:

- identify `{"type":"worker","id":W,"token":T,"capacity":{...}}`; a refused token (403) ends
  the worker with `WorkerRefused` (the CLI prints one line and exits 1: retrying cannot help);
- then `startRoom {"roomId":N}` / `stopRoom {"roomId":N}` from the gateway, and a load report
  `{"action":"load","data":{"rooms","participants","pps"}}` from the worker about every second.

Each room it is asked to serve gets its own WebSocket to the gateway and identifies there as
`type: "sfu"` for that room, exactly like the original system's task per room (the gateway
cannot tell it from an in-process room SFU); the worker token rides on that identify.

When the control connection drops (a gateway restart), every room stops and the worker
reconnects with back-off; the gateway places its rooms again when it is back. Imports nothing
from the gateway, the rooms, the store or the web.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import ssl
import time
from typing import Any
from urllib.parse import urlsplit

import trio
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection, open_websocket_url

from ..config import Config
from .endpoint import MediaEndpoint
from .media import run_media_room
from .media_worker import MediaWorker, media_tables

log = logging.getLogger(__name__)

LOAD_INTERVAL = 1.0
LAG_SAMPLES = 4
MAX_BACKOFF = 5.0


def _ssl_context(url: str) -> ssl.SSLContext | None:
    """wss:// is verified, except to this machine's own gateway on loopback (a local worker of
    `arbiter serve` with a certificate issued for the public name)."""
    parts = urlsplit(url)
    if parts.scheme != "wss":
        return None
    context = ssl.create_default_context()
    if parts.hostname in ("127.0.0.1", "::1", "localhost"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class WorkerRefused(Exception):
    """The gateway refused this worker's token: retrying cannot help."""


class WebSocketLink:
    """A room SFU's `SignalingLink` over its own WebSocket; its identify carries the token."""

    def __init__(self, ws: WebSocketConnection, token: str) -> None:
        self.ws = ws
        self.token = token

    async def send(self, message: dict[str, Any]) -> None:
        if message.get("action") == "identify":
            message = {**message, "data": {**message.get("data", {}), "token": self.token}}
        try:
            await self.ws.send_message(json.dumps(message, separators=(",", ":")))
        except ConnectionClosed as exc:
            raise trio.EndOfChannel from exc

    async def receive(self) -> dict[str, Any]:
        try:
            text = await self.ws.get_message()
        except ConnectionClosed as exc:
            raise trio.EndOfChannel from exc
        frame: dict[str, Any] = json.loads(text)
        return frame


class Worker:
    def __init__(
        self,
        config: Config,
        gateway_url: str,
        token: str,
        worker_id: str | None = None,
        parent_pid: int | None = None,
    ) -> None:
        self.config = config
        self.gateway_url = gateway_url
        self.token = token
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.endpoint = MediaEndpoint(config.media)
        self.media = MediaWorker(self.endpoint)  # the rooms' media: endpoint, Routers, timers
        self.rooms: dict[int, trio.CancelScope] = {}
        self.ssl_context = _ssl_context(gateway_url)
        self.parent_pid = parent_pid
        self.participants: dict[int, int] = {}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            if self.parent_pid is not None:
                nursery.start_soon(self._exit_with_parent, nursery.cancel_scope)
            await nursery.start(self.media.run)
            log.info(
                "SFU worker %s: media on UDP %s, gateway %s",
                self.id,
                self.endpoint.port,
                self.gateway_url,
            )
            task_status.started()
            backoff = 0.2
            while True:
                attached = trio.current_time()
                try:
                    await self._session()
                except* WorkerRefused:
                    raise
                except* (OSError, HandshakeError, ConnectionClosed, ValueError) as group:
                    # The gateway went away (a restart) or is not up yet: retry, with back-off.
                    log.warning(
                        "SFU worker %s: gateway connection lost (%s); retrying",
                        self.id,
                        group.exceptions[0],
                    )
                if trio.current_time() - attached > 30:
                    backoff = 0.2
                await trio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def _exit_with_parent(self, scope: trio.CancelScope) -> None:
        """A local worker ends when the server that started it is gone (re-parented)."""
        # Polled: no event says "my parent died" (PR_SET_PDEATHSIG follows a thread, not the
        # process, and the server spawns us from a trio worker thread).
        while os.getppid() == self.parent_pid:  # noqa: ASYNC110
            await trio.sleep(1.0)
        log.warning("SFU worker %s: the server that started it is gone; stopping", self.id)
        scope.cancel()

    async def _session(self) -> None:
        """One control connection: identify, then serve start/stop until it drops."""
        async with (
            open_websocket_url(self.gateway_url, ssl_context=self.ssl_context) as ws,
            trio.open_nursery() as rooms,
        ):
            await ws.send_message(
                json.dumps(
                    {
                        "action": "identify",
                        "data": {
                            "type": "worker",
                            "id": self.id,
                            "token": self.token,
                            "capacity": {"cores": os.cpu_count() or 1},
                        },
                    }
                )
            )
            answer = json.loads(await ws.get_message())
            if answer.get("type") == "error":
                if answer.get("status") == 403:
                    raise WorkerRefused(str(answer.get("message")))
                raise ConnectionClosed(None)  # type: ignore[arg-type]
            log.info("SFU worker %s: attached to the gateway", self.id)
            rooms.start_soon(self._report_load, ws)
            try:
                while True:
                    frame = json.loads(await ws.get_message())
                    kind = frame.get("type")
                    room_id = frame.get("roomId")
                    if kind == "startRoom" and isinstance(room_id, int):
                        if room_id not in self.rooms:
                            scope = self.rooms[room_id] = trio.CancelScope()
                            rooms.start_soon(self._room, room_id, scope)
                    elif kind == "stopRoom" and isinstance(room_id, int):
                        scope = self.rooms.pop(room_id, None)
                        if scope is not None:
                            scope.cancel()
            finally:
                # The gateway is gone: so are our rooms (it places them again when it is back).
                for scope in self.rooms.values():
                    scope.cancel()
                self.rooms.clear()
                rooms.cancel_scope.cancel()

    async def _room(self, room_id: int, scope: trio.CancelScope) -> None:
        with scope:
            backoff = 0.2
            while True:
                try:
                    async with open_websocket_url(
                        self.gateway_url, ssl_context=self.ssl_context
                    ) as ws:
                        link = WebSocketLink(ws, self.token)
                        await run_media_room(room_id, link, worker=self.media, config=self.config)
                except (OSError, HandshakeError, ConnectionClosed) as exc:
                    log.warning("room %d: gateway connection failed (%s)", room_id, exc)
                except Exception:
                    log.exception("room %d: SFU crashed; restarting", room_id)
                await trio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def _report_load(self, ws: WebSocketConnection) -> None:
        last = self.endpoint.counters["rtp_in"]
        while True:
            # Event-loop lag: how late the worker's loop wakes this task up (the most of
            # LAG_SAMPLES sleeps per report), as the gateway measures its own.
            lag = 0.0
            for _ in range(LAG_SAMPLES):
                asked = trio.current_time() + LOAD_INTERVAL / LAG_SAMPLES
                await trio.sleep_until(asked)
                lag = max(lag, trio.current_time() - asked)
            now = self.endpoint.counters["rtp_in"]
            participants = sum(len(room.sfu.participants) for room in self.media.rooms.values())
            report = {
                "rooms": len(self.rooms),
                "participants": participants,
                "pps": round((now - last) / LOAD_INTERVAL),
                # The media plane's counters and tables, summed into the gateway's /metrics.
                "counters": {
                    **self.endpoint.counters,
                    "bytes_in": self.endpoint.bytes_in,
                    "bytes_out": self.endpoint.bytes_out,
                },
                "tables": media_tables(self.media),
                "process": process_figures(lag),
            }
            last = now
            await ws.send_message(json.dumps({"action": "load", "data": report}))


def process_figures(loop_lag: float) -> dict[str, int]:
    """This worker process for the gateway's /metrics (its own process collector sees only the
    gateway): CPU seconds (ms), resident memory, open file descriptors, event-loop lag (µs)."""
    figures = {"cpu_ms": int(time.process_time() * 1000), "loop_lag_us": int(loop_lag * 1e6)}
    try:
        with open("/proc/self/statm") as statm:  # Linux: pages; the second field is resident
            figures["rss_bytes"] = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        figures["open_fds"] = len(os.listdir("/proc/self/fd"))
    except (OSError, ValueError, IndexError):
        pass  # not Linux: CPU and lag only
    return figures
