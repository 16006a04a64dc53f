"""Operator routes under /admin/ (docs/PROTOCOL.md section 2), for `arbiter rooms`.

Answered only to addresses in `http.admin_allow` (default loopback); everyone else gets the
same 404 as for a route that does not exist, so the routes are not even discoverable. They
change rooms through the room supervisor and the gateway, like every other caller: the CLI
never writes the database of a running server.

- `GET /admin/rooms` -> `200 {"rooms": [{"roomId", "urlPath", "status", "locked",
  "passwordRequired", "participants", "createdAt", "claimedAt"}]}` (live rooms).
- `PUT /admin/rooms/<id>/password` body `{"password": str|null}` -> `200 {"roomId",
  "passwordRequired"}`; the room's clients get `roomState`.
- `POST /admin/rooms/<id>/close` -> `200 {"roomId", "status": "closed"}`: its clients get
  `sfuDisconnect`, its URL is freed.
Unknown or closed rooms: `404 {"message": "Room not found"}`; a bad password body:
`400 {"message": "Invalid password"}`.
"""

from __future__ import annotations

import json
from typing import Any

import trio
from quart import Blueprint, Response, request

from . import protocol as p
from .config import Config
from .credentials import MAX_SECRET_CHARS, hash_secret
from .gateway import Gateway
from .limits import in_networks
from .rooms import RoomManager
from .store import Store


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")), status=status, content_type="application/json"
    )


NOT_FOUND = {"message": "Not found"}


def admin_blueprint(
    config: Config, store: Store, rooms: RoomManager, gateway: Gateway
) -> Blueprint:
    bp = Blueprint("admin", __name__, url_prefix="/admin")

    @bp.before_request
    async def operators_only() -> Response | None:
        # The socket's address, never X-Forwarded-For: a proxy must not make strangers local.
        if not in_networks(request.remote_addr, config.http.admin_allow):
            return _json(404, NOT_FOUND)
        return None

    @bp.route("/rooms", methods=["GET"])
    async def list_rooms() -> Response:
        out = []
        for row in store.live_rooms():
            room = rooms.room(row.id)
            out.append(
                {
                    "roomId": row.id,
                    "urlPath": row.url_path,
                    "status": room.status if room else row.status,
                    "locked": room.locked if room else row.locked,
                    "passwordRequired": (room.password_hash if room else row.password_hash)
                    is not None,
                    "participants": gateway.client_count(row.id),
                    "createdAt": row.created_at,
                    "claimedAt": row.claimed_at,
                }
            )
        return _json(200, {"rooms": out})

    @bp.route("/rooms/<int:room_id>/password", methods=["PUT"])
    async def set_password(room_id: int) -> Response:
        raw = await request.get_data(as_text=False)
        try:
            body = json.loads(raw) if raw else None
        except (ValueError, RecursionError):
            body = None
        if not isinstance(body, dict) or "password" not in body:
            return _json(400, {"message": "Invalid password"})
        password = body["password"]
        if password is not None and not (
            isinstance(password, str) and 0 < len(password) <= MAX_SECRET_CHARS
        ):
            return _json(400, {"message": "Invalid password"})
        if rooms.room(room_id) is None:
            return _json(404, {"message": p.ROOM_NOT_FOUND})
        hashed = None
        if password is not None:
            hashed = await trio.to_thread.run_sync(
                hash_secret, password, limiter=gateway.access.limiter
            )
        if rooms.room(room_id) is None:  # closed while we hashed
            return _json(404, {"message": p.ROOM_NOT_FOUND})
        rooms.set_password(room_id, hashed)
        gateway.moderation.announce(room_id)
        return _json(200, {"roomId": room_id, "passwordRequired": hashed is not None})

    @bp.route("/rooms/<int:room_id>/close", methods=["POST"])
    async def close(room_id: int) -> Response:
        if rooms.room(room_id) is None:
            return _json(404, {"message": p.ROOM_NOT_FOUND})
        rooms.close_room(room_id)
        return _json(200, {"roomId": room_id, "status": "closed"})

    return bp
