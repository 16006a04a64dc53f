"""ICE servers for clients, with coturn REST-API TURN credentials (docs/PROTOCOL.md section 3).

TURN credentials are a right to relay traffic through the operator's TURN server, so they are
handed only to identified clients, in their `identified` frame, and expire after `ice.turn_ttl`.
`GET /config` lists the same URLs without credentials. The scheme is coturn's `use-auth-secret`
(draft-uberti-behave-turn-rest-00): username `<expiry>:<connectionId>`, password
base64(HMAC-SHA1(static-auth-secret, username)); coturn checks the expiry itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any

from .config import IceConfig


def turn_credentials(secret: str, ttl: int, now: float, who: str) -> tuple[str, str]:
    username = f"{int(now) + ttl}:{who}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers(ice: IceConfig, now: float, who: str | None = None) -> list[dict[str, Any]]:
    """RTCIceServer dicts; TURN entries carry credentials only when `who` is given."""
    servers: list[dict[str, Any]] = []
    for url in ice.servers:
        entry: dict[str, Any] = {"urls": url}
        if who is not None and url.startswith(("turn:", "turns:")) and ice.turn_secret:
            entry["username"], entry["credential"] = turn_credentials(
                ice.turn_secret, ice.turn_ttl, now, who
            )
        servers.append(entry)
    return servers
