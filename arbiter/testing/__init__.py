"""The test kit: what tests, scripts and the benchmark share, imported normally.

- `server`: `make_config`, `running_server` (a real `Server` on loopback port 0 with a real
  SQLite file), `new_room`, recording in-process SFUs.
- `signaling`: `WsClient` / `ws_client`, the one gateway client with exact-frame helpers.
- `media_peer`: aiortc peers speaking the gateway protocol (asyncio in a thread).
- `browser`: Debian's Chromium through Playwright.
- `hostile`: generated hostile frames; `soak`: synthetic residents for join/leave cycles.
"""

from .server import (
    RecordingSFU,
    Running,
    SfuRegistry,
    make_config,
    new_room,
    running_server,
)
from .signaling import WsClient, ws_client

__all__ = [
    "RecordingSFU",
    "Running",
    "SfuRegistry",
    "WsClient",
    "make_config",
    "new_room",
    "running_server",
    "ws_client",
]
