"""The raw-ceiling target: `relay.py` in its own process, participants without ICE/DTLS/SRTP.

Same scenarios, same recorded payloads and stamps, same counting as the SFU targets; only the
security and signaling are absent, so this figure bounds what any Python SFU can do here.
"""

from __future__ import annotations

import struct
import sys
from typing import Any

import trio

from ..sfu.dtls import Certificate
from . import procstat
from .engine import Leg
from .participant import Participant, Target

_NUMBER = struct.Struct("!I")


class RelayTarget(Target):
    name = "python-udp-relay"

    def __init__(self, *, cpu: int | None = None) -> None:
        self.cpu = cpu
        self.port = 0
        self.process: trio.Process | None = None
        self._rooms = 0

    @property
    def pids(self) -> list[int]:
        return [self.process.pid] if self.process is not None else []

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        command = [sys.executable, "-m", "arbiter.bench.relay"]
        async with procstat.server_process(command, ready=b"", cpu=self.cpu) as (process, line):
            self.process = process
            self.port = int(line)
            task_status.started()
            await trio.sleep_forever()

    async def new_room(self) -> Any:
        # Participant numbers restart in every scenario; the relay's keys must not.
        self._rooms += 1
        return self._rooms

    def participant(self, room: Any, number: int, certificate: Certificate) -> Participant:
        return RelayParticipant(self, int(room) * 100_000 + number, certificate)


class RelayParticipant(Participant):
    def __init__(self, target: RelayTarget, number: int, certificate: Certificate) -> None:
        super().__init__(number, certificate)
        self.target = target

    @property
    def relay(self) -> tuple[str, int]:
        return ("127.0.0.1", self.target.port)

    async def join(self, nursery: trio.Nursery, publish: bool) -> None:
        self.joined_at = trio.current_time()
        if publish:
            self.publisher_leg = Leg(self.certificate)
            await self.publisher_leg.connect_plain(self.relay, b"PUB" + _NUMBER.pack(self.number))

    async def subscribe_to(self, other: Participant) -> None:
        leg = Leg(self.certificate)
        await leg.connect_plain(self.relay, b"SUB" + _NUMBER.pack(other.number))
        self.add_subscription(other.peer_id, leg)

    async def leave(self) -> None:
        self.close_legs()
