"""HTTP routes and the WebSocket endpoint (docs/PROTOCOL.md sections 2 and 3) on quart-trio.

Every JSON answer's status and message are the documented ones, byte for byte.

Origins: a browser page may use the API and `/ws` only from this server's own origin or one
listed in `http.allowed_origins` (`["*"]`: any, the original deployment's CORS). A request whose
`Origin` is neither gets 403 (an upgrade: 403 before the WebSocket is accepted), so a page on the
internet cannot drive a visitor's browser against an intranet Arbiter. Requests without `Origin`
(curl, the CLI, workers) are not browsers acting for someone else and are served.
"""

from __future__ import annotations

import json
import logging
import re
import time
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import trio
from quart import Response, request, websocket
from quart_trio import QuartTrio
from werkzeug.exceptions import RequestTimeout

from . import protocol as p
from .admin_api import admin_blueprint
from .config import Config
from .credentials import MAX_SECRET_CHARS, hash_secret, new_moderator_key
from .errors import ServerFault
from .gateway import CLOSE_POLICY, CLOSE_TOO_BIG, QUEUE_FULL, Gateway, Peer
from .limits import AddressLimiter, client_key_untrusted, in_networks
from .metrics import CONTENT_TYPE, Metrics
from .rooms import RoomManager
from .store import UNCLAIMED, Store
from .turn import ice_servers

log = logging.getLogger(__name__)

MISSING_URL_PATH = "missing urlPath"
ORIGIN_NOT_ALLOWED = "Origin not allowed"
MAX_URL_PATH = 200
# Seconds a deliberately closed WebSocket gets to receive the frames already queued for it.
FLUSH_TIMEOUT = 1.0

CORS_HEADERS = {
    "Access-Control-Allow-Methods": "GET, PUT, POST, PATCH, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type",
    "Access-Control-Max-Age": "86400",
}


def content_security_policy(host: str) -> str:
    """The web client's CSP: its own scripts and styles only, media and sockets to this host."""
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "media-src 'self' blob: mediastream:; "
        f"connect-src 'self' ws://{host} wss://{host}; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
    )


HTML_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
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


_HOST_CHARS = re.compile(r"[A-Za-z0-9.\-:\[\]]{1,300}")


def origin_verdict_untrusted(origin: str | None, host: str | None, allowed: list[str]) -> str:
    """ "none" (no Origin: not a browser page), "same", "allowed" or "refused".

    Same origin compares the Origin's host[:port] with the Host header the browser sent (a TLS
    proxy in front changes the scheme the server sees, not the host).
    """
    if origin is None:
        return "none"
    if "*" in allowed or origin in allowed:
        return "allowed"
    try:
        netloc = urlsplit(origin).netloc.lower()
    except ValueError:
        return "refused"
    if (
        netloc
        and host
        and _HOST_CHARS.fullmatch(host)
        and _strip_default_port(netloc) == _strip_default_port(host.lower())
    ):
        return "same"
    return "refused"


def _strip_default_port(netloc: str) -> str:
    for port in (":80", ":443"):
        if netloc.endswith(port):
            return netloc[: -len(port)]
    return netloc


def json_response(status: int, body: dict[str, Any]) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")), status=status, content_type="application/json"
    )


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
    # A body that does not arrive in time is 408, not a handler held for a minute.
    app.config["BODY_TIMEOUT"] = config.limits.body_timeout
    limits = config.limits
    create_limiter = AddressLimiter(limits.create_room_per_minute)
    lookup_limiter = AddressLimiter(limits.lookups_per_minute)
    allowed = config.http.allowed_origins

    def answer(route: str, status: int, body: dict[str, Any]) -> Response:
        metrics.http_requests.labels(route, str(status)).inc()
        return json_response(status, body)

    def client_key() -> str:
        return client_key_untrusted(
            request.remote_addr, request.headers.get("X-Forwarded-For"), limits.trusted_proxies
        )

    def too_many(route: str, wait: int) -> Response:
        response = answer(route, 429, {"message": p.TOO_MANY_REQUESTS})
        response.headers["Retry-After"] = str(wait)
        return response

    def origin_of_request() -> str:
        return origin_verdict_untrusted(
            request.headers.get("Origin"), request.headers.get("Host"), allowed
        )

    @app.before_request
    async def check_origin() -> Response | None:
        # The API and every state-changing method; pages and assets are anyone's to load.
        if request.path not in API_ROUTES and request.method not in CHECKED_METHODS:
            return None
        if origin_of_request() == "refused":
            metrics.origin_refused.inc()
            return json_response(403, {"message": ORIGIN_NOT_ALLOWED})
        if request.method == "OPTIONS":
            return Response("", status=204)  # preflight: after_request adds the CORS headers
        return None

    @app.after_request
    async def headers(response: Response) -> Response:
        if origin_of_request() == "allowed":
            origin = request.headers.get("Origin", "")
            response.headers["Access-Control-Allow-Origin"] = "*" if "*" in allowed else origin
            response.headers.update(CORS_HEADERS)
            if "*" not in allowed:
                response.headers["Vary"] = "Origin"
        if (response.content_type or "").startswith("text/html"):
            host = request.headers.get("Host", "")
            if not _HOST_CHARS.fullmatch(host):
                host = ""
            response.headers["Content-Security-Policy"] = content_security_policy(host)
            response.headers.update(HTML_HEADERS)
        else:
            response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @app.errorhandler(404)
    async def not_found(_: Exception) -> Response:
        return json_response(404, {"message": "Not found"})

    @app.errorhandler(405)
    async def not_allowed(_: Exception) -> Response:
        return json_response(405, {"message": "Method not allowed"})

    @app.errorhandler(408)
    async def body_timeout(_: Exception) -> Response:
        return json_response(408, {"message": "Request body timeout"})

    @app.errorhandler(413)
    async def too_large(_: Exception) -> Response:
        return json_response(413, {"message": "Request body too large"})

    @app.errorhandler(Exception)
    async def broke(exc: Exception) -> Response:
        if isinstance(exc, RequestTimeout):
            return json_response(408, {"message": "Request body timeout"})
        log.exception("HTTP handler failed", exc_info=exc)
        return json_response(500, {"message": p.SERVER_BROKE})

    @app.route("/getRoomId", methods=["GET"])
    async def get_room_id() -> Response:
        url_path = normalise_url_path_untrusted(request.args.get("urlPath"))
        if url_path is None:
            return answer("getRoomId", 400, {"message": MISSING_URL_PATH})
        key = client_key()
        now = time.monotonic()
        if lookup_limiter.exhausted(key, now):
            # Out of budget: refused without looking, so a scan learns nothing more.
            return too_many("getRoomId", lookup_limiter.wait(key, now))
        row = store.room_by_path(url_path)
        if row is None:
            lookup_limiter.retry_after(key, now)  # only misses cost: a scan is all misses
            if request.args.get("probe") == "1":
                # The web client asks whether a room exists before it makes one: a miss is
                # an answer, not an error (a 404 is a console error in every browser).
                return answer("getRoomId", 200, {"exists": False, "urlPath": url_path})
            return answer("getRoomId", 404, {"message": p.ROOM_NOT_FOUND})
        return answer(
            "getRoomId",
            200,
            {
                "roomId": row.id,
                "id": row.id,
                "urlPath": url_path,
                "passwordRequired": row.password_hash is not None,
            },
        )

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
        assert isinstance(body, dict)
        existing = store.room_by_path(url_path)
        if existing is not None:
            # Idempotent and free; the password is ignored (the room has its own rules).
            return answer("claimRoom", 200, {"roomId": existing.id})
        password = body.get("password")
        if password is not None and not (
            isinstance(password, str) and 0 < len(password) <= MAX_SECRET_CHARS
        ):
            return answer("claimRoom", 400, {"message": p.INVALID_PASSWORD})
        # Binding a new name takes a room out of everyone's pool: it costs the same budget
        # as creating one, and one address holds a bounded number of rooms.
        key = client_key()
        if limits.rooms_per_address and rooms.rooms_held(key) >= limits.rooms_per_address:
            return too_many("claimRoom", 60)
        wait = create_limiter.retry_after(key, time.monotonic())
        if wait:
            return too_many("claimRoom", wait)
        if not rooms.counts().get(UNCLAIMED):
            return answer("claimRoom", 404, {"message": p.ROOM_NOT_FOUND})  # before any hashing
        # The claimer becomes the room's moderator: a fresh key, returned once, stored hashed.
        moderator_key = new_moderator_key()
        limiter = gateway.access.limiter
        key_hash = await trio.to_thread.run_sync(hash_secret, moderator_key, limiter=limiter)
        password_hash = None
        if password is not None:
            password_hash = await trio.to_thread.run_sync(hash_secret, password, limiter=limiter)
        claimed = rooms.claim(
            url_path, owner=key, password_hash=password_hash, moderator_key_hash=key_hash
        )
        if claimed is None:
            return answer("claimRoom", 404, {"message": p.ROOM_NOT_FOUND})
        room_id, new = claimed
        if not new:  # someone bound the path while we hashed: theirs, no key for us
            return answer("claimRoom", 200, {"roomId": room_id})
        return answer("claimRoom", 200, {"roomId": room_id, "moderatorKey": moderator_key})

    @app.route("/createRoom", methods=["PUT", "POST"])
    async def create_room() -> Response:
        # createRoom takes no body, but reading it is what enforces the size limit (413).
        await request.get_data(as_text=False)
        # Each room costs an SFU task and a row: one address may not start them in a loop.
        key = client_key()
        if limits.rooms_per_address and rooms.rooms_held(key) >= limits.rooms_per_address:
            return too_many("createRoom", 60)
        wait = create_limiter.retry_after(key, time.monotonic())
        if wait:
            return too_many("createRoom", wait)
        try:
            room_id = await rooms.create_room(owner=key)
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
                "workers": rooms.workers.describe(),
                # The idle pool is full of ready rooms: a new URL will not wait for an SFU.
                "ready": rooms.counts().get(UNCLAIMED, 0) >= config.rooms.idle_pool,
            },
        )

    @app.route("/config", methods=["GET"])
    async def client_config() -> Response:
        scheme = "wss" if request.scheme in ("https", "wss") else "ws"
        return json_response(
            200,
            {
                "wsUrl": f"{scheme}://{request.host}/ws",
                # URLs only: TURN credentials go to identified clients (identified frame).
                "iceServers": ice_servers(config.ice, time.time()),
                "limits": {
                    "maxParticipants": config.rooms.max_participants,
                    "maxMessageBytes": config.limits.max_message_bytes,
                },
            },
        )

    @app.route("/metrics", methods=["GET"])
    async def metrics_page() -> Response:
        # Operators only (docs/PROTOCOL.md section 2): everyone else sees no such page.
        if not in_networks(request.remote_addr, config.http.metrics_allow):
            return json_response(404, {"message": "Not found"})
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
    async def ws() -> Response | None:
        verdict = origin_verdict_untrusted(
            websocket.headers.get("Origin"), websocket.headers.get("Host"), allowed
        )
        if verdict == "refused":
            # Refused before accept: the page's browser sees a failed handshake (403).
            metrics.origin_refused.inc()
            return json_response(403, {"message": ORIGIN_NOT_ALLOWED})
        key = client_key_untrusted(
            websocket.remote_addr, websocket.headers.get("X-Forwarded-For"), limits.trusted_proxies
        )
        await websocket_session(config, gateway, metrics, key)
        return None

    app.register_blueprint(admin_blueprint(config, store, rooms, gateway))
    return app


API_ROUTES = frozenset({"/getRoomId", "/claimRoom", "/createRoom", "/config"})
CHECKED_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


async def websocket_session(
    config: Config, gateway: Gateway, metrics: Metrics, client_key: str
) -> None:
    """One WebSocket: a reader (this task) and a writer draining the bounded queue."""
    await websocket.accept()
    peer = Peer(websocket.remote_addr or "", config.limits.send_queue, client_key=client_key)
    gateway.connect(peer)
    limit = config.limits.max_message_bytes

    async def identify_deadline() -> None:
        # A socket that never identifies holds a connection and a row for nothing.
        with trio.move_on_after(config.limits.identify_timeout):
            await peer.identified.wait()
        if not peer.identified.is_set():
            peer.request_close(CLOSE_POLICY, p.IDENTIFY_TIMEOUT)

    async def writer() -> None:
        async for text in peer.inbox:
            await websocket.send(text)

    async def closer(scope: trio.CancelScope) -> None:
        await peer.close_requested.wait()
        scope.cancel()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            nursery.start_soon(identify_deadline)
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
                    decoded = gateway.admit(peer, frame)
                    if decoded is None:
                        continue
                    try:
                        # Slow credential checks (scrypt) run in a thread, before the
                        # synchronous gateway sees the frame; frames stay in order.
                        await gateway.access.prepare(peer, *decoded)
                    except Exception:
                        log.exception("credential check failed; the frame fails closed")
                    if peer.close_code is None:
                        gateway.handle_frame(peer, *decoded)
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
