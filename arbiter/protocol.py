"""The signaling wire format (docs/PROTOCOL.md section 3): frame decoding, error frames and limits.

Every frame is one JSON object `{"action": A, "data": {...}}` from peers, and one JSON object with
a `type` from the server. Decoding is pure; it raises only `MalformedInput` (status 400), whose
message is the documented text of the error frame. `TokenBucket` is the pure rate limiter the
gateway (frames per connection) and the HTTP API (createRoom per address) share.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .errors import MalformedInput

# Shared with the SFU, which must not import the gateway: defined there, re-exported here.
from .sfu.bucket import TokenBucket as TokenBucket
from .sfu.link import MAX_CHAT_CHARS as MAX_CHAT_CHARS

ACTIONS = frozenset(
    {
        "identify",
        "handshake",
        "disconnect",
        "chat",
        "features",
        "room",
        "moderate",
        "load",
        "preferences",
    }
)

# Documented messages, byte for byte (docs/PROTOCOL.md section 3).
INVALID_JSON = "Invalid JSON"
UNKNOWN_ACTION = "Unknown action"
MISSING_TYPE = "Missing valid type property"
NOT_IDENTIFIED = "WebSocket Connection Not Found"
INVALID_HANDSHAKE = "Invalid handshake type"
ROOM_NOT_FOUND = "Room not found"
ROOM_FULL = "Room is full"
DUPLICATE_ID = "Duplicate id"
FORBIDDEN = "Forbidden"
SFU_NOT_CONNECTED = "SFU not connected, try again later"
RECEIVER_NOT_FOUND = "Receiver not found"
SERVER_BROKE = "Something broke on the server"
TOO_MANY_MESSAGES = "Too many messages"
TOO_MANY_REQUESTS = "Too many requests"
OFFER_IN_FLIGHT = "Offer in flight"
SFU_BUSY = "SFU busy, try again later"
IDENTIFY_TIMEOUT = "Identify timeout"
PASSWORD_REQUIRED = "Password required"
WRONG_PASSWORD = "Wrong password"
ROOM_LOCKED = "Room is locked"
NOT_A_MODERATOR = "Not a moderator"
INVALID_MODERATION = "Invalid moderation op"
NOT_ON_A_MODERATOR = "Not allowed on a moderator"
INVALID_PASSWORD = "Invalid password"
INVALID_PREFERENCES = "Invalid preferences"

MAX_VIDEO_HEIGHT = 4320  # preferences.maxHeight: 8K is the most a tile can ask for
MAX_ID_CHARS = 128
MAX_NAME_CHARS = 64
CHAT_HISTORY = 50


def decode_frame_untrusted(text: str | bytes) -> tuple[str, dict[str, Any]]:
    """Parse one peer frame into (action, data). `data` defaults to `{}`.

    Raises MalformedInput with the documented message. Deeply nested JSON raises RecursionError
    inside the json module; it is invalid input, not our fault.
    """
    if isinstance(text, bytes | bytearray):
        raise MalformedInput("Binary frames are not supported")
    try:
        frame = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as exc:
        raise MalformedInput(INVALID_JSON) from exc
    if not isinstance(frame, dict):
        raise MalformedInput(INVALID_JSON)
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(frame):
        raise MalformedInput(INVALID_JSON)
    action = frame.get("action")
    if not isinstance(action, str) or action not in ACTIONS:
        raise MalformedInput(UNKNOWN_ACTION)
    data = frame.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise MalformedInput("data must be an object")
    return action, data


# A text frame is valid UTF-8 (the WebSocket layer checks), so a lone surrogate can only come
# from a \uD800-\uDFFF escape. Such a string cannot be encoded as UTF-8 again: relayed, it would
# fail in every recipient's writer (and in SQLite), so it is refused at the door.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:  # iterative: the parser already bounded the depth, no recursion needed here
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON (RFC 8259): Python accepts them, a browser's JSON.parse does
    # not, so relaying them would break every client that receives the frame.
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number out of range")  # 1e400 would be re-encoded as Infinity
    return value


def action_of_untrusted(text: str | bytes) -> str | None:
    """Best effort: the action named by a frame that failed to decode, for its error frame."""
    if isinstance(text, str) and len(text) < 100_000:
        try:
            frame = json.loads(text)
        except (ValueError, RecursionError):
            return None
        if isinstance(frame, dict) and isinstance(frame.get("action"), str):
            return frame["action"][:64]
    return None


def error_frame(action: str | None, status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "action": action, "status": status, "message": message}


def encode(message: dict[str, Any]) -> str:
    # Compact separators: these frames are sent to every peer of a room.
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)


def parse_room_id_untrusted(value: Any) -> int:
    """roomId may arrive as an int or a decimal string; room ids are positive integers."""
    if isinstance(value, bool):
        raise MalformedInput("Invalid roomId")
    if isinstance(value, int):
        room_id = value
    elif isinstance(value, str) and value.strip().isdigit() and len(value) < 19:
        room_id = int(value.strip())
    else:
        raise MalformedInput("Invalid roomId")
    if room_id <= 0:
        raise MalformedInput("Invalid roomId")
    return room_id


def parse_peer_id_untrusted(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise MalformedInput("Missing valid id property")
    peer_id = str(value)
    if not peer_id or len(peer_id) > MAX_ID_CHARS or not peer_id.isprintable():
        raise MalformedInput("Missing valid id property")
    return peer_id


def parse_name_untrusted(value: Any, default: str) -> str:
    if value is None:
        return default
    if not isinstance(value, str):
        raise MalformedInput("Invalid name")
    name = " ".join(value.split())[:MAX_NAME_CHARS]
    if not name.isprintable():
        raise MalformedInput("Invalid name")
    return name or default
