"""The test kit: what tests, scripts and the benchmark share, imported normally.

- `server`: `make_config`, `running_server` (a real `Server` on loopback port 0 with a real
  SQLite file), `new_room`, recording in-process SFUs.
- `signaling`: `WsClient` / `ws_client`, the one gateway client (tests, scripts and
  `arbiter.bench`), with exact-frame helpers; no pytest or aiortc imports.
- `media_peer`: aiortc peers speaking the gateway protocol (asyncio in a thread).
- `browser`: Debian's Chromium through Playwright.
- `hostile`: generated hostile frames; `soak`: synthetic residents for join/leave cycles.
- `fuzz`, `fuzz_corpus`, `fuzz_dispatch`: the media-parser and `dispatch` fuzzers and their
  seeds and mutators; `udp_blast`: hostile datagrams during a live call.

The scripts in scripts/ are thin command lines over these modules.
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
