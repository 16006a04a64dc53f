"""A real `Server` on a loopback port 0 with a real SQLite file, and in-process recording SFUs.

What tests, scripts and the benchmark share (imported normally: `from arbiter.testing import ...`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

from ..config import Config
from ..rooms import SfuFactory, SignalingLink
from ..server import Server


def make_config(tmp_path: Path, **sections: dict[str, Any]) -> Config:
    base = Config().replace(
        http={"host": "127.0.0.1", "port": 0},
        media={"listen": "127.0.0.1", "port": 0, "announced_ip": ["127.0.0.1"]},
        store={"path": str(tmp_path / "arbiter.db")},
        rooms={"idle_pool": 0},
        # Rooms in this process (the default is one SFU worker process per core): tests that
        # need workers ask for them (tests/test_workers.py).
        workers={"local": "0"},
        # Tests create many rooms from 127.0.0.1; the per-address budgets are tested on their
        # own (tests/test_rate_limits.py, tests/test_attacks*.py) with explicit limits.
        limits={
            "create_room_per_minute": 0,
            "rooms_per_address": 0,
            "lookups_per_minute": 0,
            "failed_identifies_per_minute": 0,
            "chat_per_second": 1000.0,
            "chat_burst": 1000,
        },
    )
    return base.replace(**sections) if sections else base


@dataclass
class Running:
    server: Server
    url: str
    http: httpx.AsyncClient

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"


@asynccontextmanager
async def running_server(
    config: Config, sfu_factory: SfuFactory | None = None
) -> AsyncIterator[Running]:
    server = Server(config, sfu_factory)
    async with trio.open_nursery() as nursery:
        started = await nursery.start(server.run)
        async with httpx.AsyncClient(base_url=started.url, timeout=10) as http:
            try:
                yield Running(server, started.url, http)
            finally:
                server.shutdown()


async def new_room(srv: Running, url_path: str) -> int:
    """A fresh room claimed for `url_path`, as the web client gets one (createRoom, claimRoom)."""
    r = await srv.http.put("/createRoom")
    assert r.status_code == 200, r.text
    room_id = r.json()["roomId"]
    r = await srv.http.patch("/claimRoom", json={"urlPath": url_path})
    body = r.json()
    # This call bound the name: the claimer gets the room's moderator key, once.
    assert body == {"roomId": room_id, "moderatorKey": body.get("moderatorKey")}, body
    assert isinstance(body["moderatorKey"], str) and len(body["moderatorKey"]) >= 32
    return int(room_id)


@dataclass
class RecordingSFU:
    """An in-process SFU for gateway tests: records what it receives, sends what it is told."""

    room_id: int
    link: SignalingLink
    received: list[dict[str, Any]] = field(default_factory=list)
    arrived: trio.Event = field(default_factory=trio.Event)

    async def run(self) -> None:
        await self.link.send(
            {"action": "identify", "data": {"type": "sfu", "id": str(self.room_id)}}
        )
        while True:
            message = await self.link.receive()
            self.received.append(message)
            self.arrived.set()
            self.arrived = trio.Event()

    async def wait_for(self, pred: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        with trio.fail_after(5):
            while True:
                for message in self.received:
                    if pred(message):
                        return message
                await self.arrived.wait()


class SfuRegistry:
    """Factory handing out RecordingSFUs.

    The next `remote` rooms started get no in-process SFU at all (a test plays their remote
    SFU); their ids (random, docs/PROTOCOL.md section 2) arrive through `next_remote()`.
    """

    def __init__(self, remote: int = 0) -> None:
        self.sfus: dict[int, RecordingSFU] = {}
        self.remote = remote
        self._remote_send, self._remote_ids = trio.open_memory_channel[int](100)

    async def next_remote(self) -> int:
        """The id of the next room started without an in-process SFU."""
        with trio.fail_after(5):
            return await self._remote_ids.receive()

    async def __call__(self, room_id: int, link: SignalingLink) -> None:
        if self.remote > 0:
            self.remote -= 1
            self._remote_send.send_nowait(room_id)
            await trio.sleep_forever()
        sfu = self.sfus[room_id] = RecordingSFU(room_id, link)
        await sfu.run()
