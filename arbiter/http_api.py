"""HTTP routes and the WebSocket endpoint (DESIGN sections 2 and 3) on quart-trio.

Every JSON answer's status and message are the documented ones, byte for byte. CORS is
permissive (any origin), as the original API Gateway deployment was.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import re
import time
from importlib import resources
from typing import Any

import trio
from quart import Response, request, websocket
from quart_trio import QuartTrio

from .config import Config
from .errors import ServerFault
from .gateway import CLOSE_TOO_BIG, QUEUE_FULL, Gateway, Peer
from .metrics import CONTENT_TYPE, Metrics
from .protocol import TokenBucket
from .rooms import RoomManager
from .store import Store

log = logging.getLogger(__name__)

MISSING_URL_PATH = "missing urlPath"
ROOM_NOT_FOUND = "Room not found"
SERVER_BROKE = "Something broke on the server"
TOO_MANY_REQUESTS = "Too many requests"
MAX_URL_PATH = 200
# Per-address createRoom buckets kept at most before idle (full) ones are forgotten.
MAX_TRACKED_ADDRESSES = 10_000
# Seconds a deliberately closed WebSocket gets to receive the frames already queued for it.
FLUSH_TIMEOUT = 1.0

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, PUT, POST, PATCH, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type",
    "Access-Control-Max-Age": "86400",
}


def normalise_url_path_untrusted(value: Any) -> str | None:
    """Strip leading/trailing '/'; None when empty, too long or holding control characters."""
    if not isinstance(value, str):
        return None
    path = value.strip("/")
    if not path or len(path) > MAX_URL_PATH:
        return None
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in path):
        return None
    return path


def client_key_untrusted(
    remote_addr: str | None, forwarded_for: str | None, trusted_proxies: list[str]
) -> str:
    """The address a per-client limit is keyed by.

    Behind a trusted proxy, the last X-Forwarded-For entry (the one the proxy itself appended;
    earlier entries are whatever the client claimed). IPv6 addresses are keyed by their /64: one
    host commonly owns a whole /64, so per-address keys would let it mint fresh budgets.
    """
    addr = (remote_addr or "").strip()
    if forwarded_for and addr in trusted_proxies:
        addr = forwarded_for.split(",")[-1].strip()
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return addr[:64]  # not an IP (a unix socket, a proxy's garbage): key it as given
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


class AddressLimiter:
    """One TokenBucket per client key, with a bounded table (full buckets are forgotten)."""

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = per_minute
        self.buckets: dict[str, TokenBucket] = {}

    def retry_after(self, key: str, now: float) -> int:
        """0 if the request may go ahead (a token is taken), else whole seconds to wait."""
        if self.burst <= 0:
            return 0
        bucket = self.buckets.get(key)
        if bucket is None:
            if len(self.buckets) >= MAX_TRACKED_ADDRESSES:
                # A full bucket is the same as no bucket: dropping those loses nothing.
                self.buckets = {k: b for k, b in self.buckets.items() if not b.full(now)}
            bucket = self.buckets[key] = TokenBucket(self.rate, self.burst, now)
        if bucket.take(now):
            return 0
        return max(1, math.ceil(bucket.wait_time(now)))


def json_response(status: int, body: dict[str, Any]) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")), status=status, content_type="application/json"
    )


def turn_credentials(secret: str, ttl: int, now: float) -> tuple[str, str]:
    """coturn's TURN REST API (use-auth-secret): username '<expiry>:arbiter', HMAC-SHA1 key."""
    username = f"{int(now) + ttl}:arbiter"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers(config: Config, now: float) -> list[dict[str, Any]]:
    servers: list[dict[str, Any]] = []
    for url in config.ice.servers:
        entry: dict[str, Any] = {"urls": url}
        if url.startswith(("turn:", "turns:")) and config.ice.turn_secret:
            entry["username"], entry["credential"] = turn_credentials(
                config.ice.turn_secret, config.ice.turn_ttl, now
            )
        servers.append(entry)
    return servers


def _web_file(name: str) -> bytes | None:
    try:
        return resources.files("arbiter").joinpath("web", name).read_bytes()
    except (FileNotFoundError, IsADirectoryError, OSError):
        return None


_ASSET_NAME = re.compile(r"[A-Za-z0-9_.\-/]{1,200}")

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}


def create_app(
    config: Config, store: Store, rooms: RoomManager, gateway: Gateway, metrics: Metrics
) -> QuartTrio:
    app = QuartTrio(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = max(config.limits.max_message_bytes, 16384)
    create_limiter = AddressLimiter(config.limits.create_room_per_minute)

    def answer(route: str, status: int, body: dict[str, Any]) -> Response:
        metrics.http_requests.labels(route, str(status)).inc()
        return json_response(status, body)

    @app.after_request
    async def cors(response: Response) -> Response:
        response.headers.update(CORS_HEADERS)
        return response

    @app.errorhandler(404)
    async def not_found(_: Exception) -> Response:
        return json_response(404, {"message": "Not found"})

    @app.errorhandler(405)
    async def not_allowed(_: Exception) -> Response:
        return json_response(405, {"message": "Method not allowed"})

    @app.errorhandler(413)
    async def too_large(_: Exception) -> Response:
        return json_response(413, {"message": "Request body too large"})

    @app.errorhandler(Exception)
    async def broke(exc: Exception) -> Response:
        log.exception("HTTP handler failed", exc_info=exc)
        return json_response(500, {"message": SERVER_BROKE})

    @app.route("/getRoomId", methods=["GET"])
    async def get_room_id() -> Response:
        url_path = normalise_url_path_untrusted(request.args.get("urlPath"))
        if url_path is None:
            return answer("getRoomId", 400, {"message": MISSING_URL_PATH})
        row = store.room_by_path(url_path)
        if row is None:
            return answer("getRoomId", 404, {"message": ROOM_NOT_FOUND})
        return answer("getRoomId", 200, {"roomId": row.id, "id": row.id, "urlPath": url_path})

    @app.route("/claimRoom", methods=["PATCH"])
    async def claim_room() -> Response:
        raw = await request.get_data(as_text=False)
        try:
            body = json.loads(raw) if raw else None
        except (ValueError, RecursionError):
            body = None
        url_path = normalise_url_path_untrusted(
            body.get("urlPath") if isinstance(body, dict) else None
        )
        if url_path is None:
            return answer("claimRoom", 400, {"message": MISSING_URL_PATH})
        room_id = rooms.claim(url_path)
        if room_id is None:
            return answer("claimRoom", 404, {"message": ROOM_NOT_FOUND})
        return answer("claimRoom", 200, {"roomId": room_id})

    @app.route("/createRoom", methods=["PUT", "POST"])
    async def create_room() -> Response:
        # createRoom takes no body, but reading it is what enforces the size limit (413).
        await request.get_data(as_text=False)
        # Each room costs an SFU task and a row: one address may not start them in a loop.
        key = client_key_untrusted(
            request.remote_addr,
            request.headers.get("X-Forwarded-For"),
            config.limits.trusted_proxies,
        )
        wait = create_limiter.retry_after(key, time.monotonic())
        if wait:
            response = answer("createRoom", 429, {"message": TOO_MANY_REQUESTS})
            response.headers["Retry-After"] = str(wait)
            return response
        try:
            room_id = await rooms.create_room()
        except ServerFault as exc:
            return answer(
                "createRoom", 500, {"message": "Failed to start task.", "reason": exc.message}
            )
        return answer(
            "createRoom", 200, {"message": "Task started successfully!", "roomId": room_id}
        )

    @app.route("/health", methods=["GET"])
    async def health() -> Response:
        return json_response(
            200,
            {
                "status": "ok",
                "rooms": rooms.counts(),
                "connections": len(gateway.peers),
            },
        )

    @app.route("/config", methods=["GET"])
    async def client_config() -> Response:
        scheme = "wss" if request.scheme in ("https", "wss") else "ws"
        return json_response(
            200,
            {
                "wsUrl": f"{scheme}://{request.host}/ws",
                "iceServers": ice_servers(config, time.time()),
                "limits": {
                    "maxParticipants": config.rooms.max_participants,
                    "maxMessageBytes": config.limits.max_message_bytes,
                },
            },
        )

    @app.route("/metrics", methods=["GET"])
    async def metrics_page() -> Response:
        return Response(metrics.render(), status=200, content_type=CONTENT_TYPE)

    @app.route("/_app/<path:name>", methods=["GET"])
    async def web_asset(name: str) -> Response:
        # Only plain relative names of the bundled files: no "..", no NUL (pathlib raises
        # ValueError on it), no control characters, no absolute or empty segments.
        if not _ASSET_NAME.fullmatch(name) or any(s in ("", ".", "..") for s in name.split("/")):
            return json_response(404, {"message": "Not found"})
        data = _web_file(name)
        if data is None:
            return json_response(404, {"message": "Not found"})
        suffix = name[name.rfind(".") :] if "." in name else ""
        content_type = _CONTENT_TYPES.get(suffix, "application/octet-stream")
        return Response(data, status=200, content_type=content_type)

    @app.route("/", methods=["GET"])
    @app.route("/<path:url_path>", methods=["GET"])
    async def web_client(url_path: str = "") -> Response:
        data = _web_file("index.html") or b"<!doctype html><title>Arbiter</title>"
        return Response(data, status=200, content_type="text/html; charset=utf-8")

    @app.websocket("/ws")
    async def ws() -> None:
        await websocket_session(config, gateway, metrics)

    return app


async def websocket_session(config: Config, gateway: Gateway, metrics: Metrics) -> None:
    """One WebSocket: a reader (this task) and a writer draining the bounded queue."""
    await websocket.accept()
    peer = Peer(websocket.remote_addr or "", config.limits.send_queue)
    gateway.connect(peer)
    limit = config.limits.max_message_bytes

    async def writer() -> None:
        async for text in peer.inbox:
            await websocket.send(text)

    async def closer(scope: trio.CancelScope) -> None:
        await peer.close_requested.wait()
        scope.cancel()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            with trio.CancelScope() as reading:
                nursery.start_soon(closer, reading)
                while True:
                    frame = await websocket.receive()
                    # hypercorn enforces the limit first (websocket_max_message_size); this
                    # check covers frames it counts differently (characters vs bytes).
                    if len(frame) > limit or (
                        len(frame) * 4 > limit
                        and len(frame.encode() if isinstance(frame, str) else frame) > limit
                    ):
                        peer.request_close(CLOSE_TOO_BIG, "message too big")
                        break
                    gateway.handle_text(peer, frame)
            # A deliberate close (only those end the loop without an exception). Closing the
            # queue lets the writer deliver what is already in it and stop: the last 429 that
            # explains a 1008, the clientDisconnect before a 4001. Not cancelling it mid-send
            # is what keeps those frames whole. A peer whose queue overflowed is not reading:
            # it gets nothing more.
            metrics.ws_closed.labels(str(peer.close_code)).inc()
            gateway.close(peer)
            if peer.close_reason == QUEUE_FULL:
                nursery.cancel_scope.cancel()
            else:
                nursery.cancel_scope.deadline = trio.current_time() + FLUSH_TIMEOUT
    finally:
        gateway.close(peer)
    if peer.close_code is not None:
        with trio.move_on_after(1):
            await websocket.close(peer.close_code, peer.close_reason)
