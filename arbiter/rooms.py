"""The room supervisor: room lifecycle, idle pool, empty-room reaper, one SFU task per room.

Rooms go `starting` -> `unclaimed` (its SFU identified) -> `claimed` -> `closed`
(docs/PROTOCOL.md section 2). Each live room has one supervised task running its SFU behind a
`SignalingLink`; an exception escaping the SFU is caught at that task boundary, logged and
counted, the room's clients get `sfuDisconnect` (the gateway sends it when the SFU's peer goes
away), and the SFU is started again after a back-off. Sibling rooms never see it.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import trio

from . import store as st
from .config import Config
from .errors import ServerFault
from .gateway import Gateway, Peer, sfu_queue_size
from .metrics import Metrics
from .sfu.link import SfuFactory as SfuFactory
from .sfu.link import SignalingLink as SignalingLink
from .store import Store
from .workers import WorkerInfo, WorkerPool

log = logging.getLogger(__name__)


class InProcessLink:
    """An in-process SFU's connection: frames go straight into the gateway's dispatcher."""

    def __init__(self, gateway: Gateway, peer: Peer) -> None:
        self.gateway = gateway
        self.peer = peer

    async def send(self, message: dict[str, Any]) -> None:
        action = message.get("action")
        data = message.get("data") or {}
        if not isinstance(action, str) or not isinstance(data, dict):
            raise ServerFault(f"room SFU sent a malformed frame: {message!r}")
        self.gateway.handle_frame(self.peer, action, data)
        await trio.lowlevel.checkpoint()

    async def receive(self) -> dict[str, Any]:
        text = await self.peer.inbox.receive()
        message: dict[str, Any] = json.loads(text)
        return message


@dataclass
class Room:
    id: int
    status: str
    ready: trio.Event = field(default_factory=trio.Event)
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    empty_since: float | None = None
    # Has any participant's media ever connected (the SFU's mediaUp) since this process started.
    # Identifying alone does not count: claiming names and idling in them must not buy an hour.
    joined: bool = False
    starts: int = 0
    # The client address (limits key) that created or claimed it: limits.rooms_per_address.
    owner: str | None = None
    # Access (docs/PROTOCOL.md section 3): scrypt hashes and the lock, mirrored in SQLite so
    # they survive a restart.
    password_hash: str | None = None
    moderator_key_hash: str | None = None
    locked: bool = False
    worker: str | None = None  # the SFU worker serving it (workers.local other than 0)


class RoomManager:
    """Owns the RoomSupervisor nursery. Implements the gateway's RoomHooks."""

    def __init__(
        self, config: Config, store: Store, metrics: Metrics, sfu_factory: SfuFactory
    ) -> None:
        self.config = config
        self.store = store
        self.metrics = metrics
        self.sfu_factory = sfu_factory
        self.gateway: Gateway | None = None
        self.rooms: dict[int, Room] = {}
        self._nursery: trio.Nursery | None = None
        self._pool_wakeup = trio.Event()
        # With workers.local other than 0, rooms are placed on SFU workers (arbiter/workers.py)
        # instead of running in this process.
        self.workers = WorkerPool()
        self.use_workers = config.workers.count() > 0

    # -- RoomHooks -----------------------------------------------------------------------------

    def room_is_live(self, room_id: int) -> bool:
        return room_id in self.rooms

    def room_accepts_clients(self, room_id: int) -> bool:
        """Clients identify only into claimed rooms: an idle-pool room is nobody's call yet."""
        room = self.rooms.get(room_id)
        return room is not None and room.status == st.CLAIMED

    def worker_attached(self, worker_id: str, peer: Peer, capacity: dict[str, Any]) -> None:
        self.workers.attached(worker_id, peer, capacity)

    def worker_load(self, worker_id: str, load: dict[str, Any]) -> None:
        self.workers.load(worker_id, load)

    def worker_gone(self, worker_id: str) -> None:
        self.workers.gone(worker_id, stopping=self.gateway is not None and self.gateway.stopping)

    def media_up(self, room_id: int) -> None:
        room = self.rooms.get(room_id)
        if room is not None:
            room.joined = True

    def sfu_identified(self, room_id: int) -> None:
        room = self.rooms.get(room_id)
        if room is None:
            return
        if room.status == st.STARTING:
            self.store.mark_ready(room_id)
            room.status = st.UNCLAIMED
        room.ready.set()

    def occupancy_changed(self, room_id: int, clients: int) -> None:
        room = self.rooms.get(room_id)
        if room is not None:
            room.empty_since = trio.current_time() if clients == 0 else None

    # -- running -------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        assert self.gateway is not None, "attach a gateway before running the rooms"
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            # Start-up recovery (docs/PROTOCOL.md section 5): every room that is not closed gets
            # its SFU again and keeps its urlPath, so room URLs survive a restart.
            for row in self.store.live_rooms():
                room = self._start(row.id, row.status)
                room.password_hash = row.password_hash
                room.moderator_key_hash = row.moderator_key_hash
                room.locked = row.locked
            if self.rooms:
                log.info("%d rooms recovered from the store (%s)", len(self.rooms),
                         ", ".join(f"{n} {state}" for state, n in self.counts().items() if n),
                         extra={"rooms": len(self.rooms)})  # fmt: skip
            nursery.start_soon(self._keep_pool)
            nursery.start_soon(self._reap_empty_rooms)
            task_status.started()

    def _start(self, room_id: int, status: str) -> Room:
        assert self._nursery is not None
        room = Room(room_id, status)
        if status == st.CLAIMED:
            room.empty_since = trio.current_time()
        self.rooms[room_id] = room
        task = self._place if self.use_workers else self._supervise
        self._nursery.start_soon(task, room, name=f"room-{room_id}")
        return room

    async def _place(self, room: Room) -> None:
        """Keep the room on a worker: place it, and place it again when its worker goes."""
        worker: WorkerInfo | None = None
        with room.cancel_scope:
            try:
                while True:
                    worker = self.workers.pick()
                    if worker is None:
                        await self.workers.wait_changed()
                        continue
                    room.starts += 1
                    room.worker = worker.id
                    worker.rooms.add(room.id)
                    self.store.set_worker(room.id, worker.id)
                    worker.peer.send({"type": "startRoom", "roomId": room.id})
                    await worker.gone.wait()
                    worker.rooms.discard(room.id)
                    room.worker = None
            finally:
                if worker is not None and room.id in worker.rooms:
                    worker.rooms.discard(room.id)
                    worker.peer.send({"type": "stopRoom", "roomId": room.id})

    async def _supervise(self, room: Room) -> None:
        assert self.gateway is not None
        backoff = 0.2
        with room.cancel_scope:
            while True:
                room.starts += 1
                peer = Peer(
                    "in-process", sfu_queue_size(self.config.limits.send_queue), trusted=True
                )
                self.gateway.connect(peer)
                started = trio.current_time()
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._close_on_request, peer, nursery.cancel_scope)
                        await self.sfu_factory(room.id, InProcessLink(self.gateway, peer))
                        nursery.cancel_scope.cancel()
                except Exception:
                    # The task boundary of docs/PROTOCOL.md section 1: log, count, restart; never
                    # propagate to the supervisor nursery, which would take the siblings down.
                    log.exception("room %d: SFU crashed; restarting", room.id)
                    self.metrics.room_crashes.inc()
                finally:
                    self.gateway.close(peer)  # sync: runs even while cancelled
                if trio.current_time() - started > 30:
                    backoff = 0.2
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    @staticmethod
    async def _close_on_request(peer: Peer, scope: trio.CancelScope) -> None:
        # An in-process SFU that stops draining its queue is restarted like a crashed one.
        await peer.close_requested.wait()
        log.warning("room SFU peer closed: %s", peer.close_reason)
        scope.cancel()

    # -- operations used by the HTTP API -------------------------------------------------------

    async def create_room(self, owner: str | None = None) -> int:
        """Insert a room, start its SFU and wait until it has identified (so it is claimable)."""
        if len(self.rooms) >= self.config.rooms.max_rooms:
            raise ServerFault("room limit reached")
        if self._nursery is None:
            raise ServerFault("room supervisor is not running")
        room_id = self.store.create_room(time.time())
        room = self._start(room_id, st.STARTING)
        room.owner = owner
        with trio.move_on_after(self.config.rooms.start_timeout):
            await room.ready.wait()
        if not room.ready.is_set():
            self.close_room(room_id, "its SFU did not start in time")
            raise ServerFault("the room's SFU did not start in time")
        log.info("room %d created (%s)", room_id, "createRoom" if owner else "idle pool",
                 extra={"room": room_id, "worker": room.worker})  # fmt: skip
        return room_id

    def rooms_held(self, owner: str) -> int:
        """Live rooms created or claimed by `owner` (idle-pool rooms belong to nobody)."""
        return sum(1 for r in self.rooms.values() if r.owner == owner)

    def claim(
        self,
        url_path: str,
        owner: str | None = None,
        *,
        password_hash: str | None = None,
        moderator_key_hash: str | None = None,
    ) -> tuple[int, bool] | None:
        """(room id, whether this call bound it) or None when no ready room is left."""
        claimed = self.store.claim(
            url_path,
            time.time(),
            password_hash=password_hash,
            moderator_key_hash=moderator_key_hash,
        )
        if claimed is not None:
            room_id, new = claimed
            room = self.rooms.get(room_id)
            if room is not None and new:
                room.status = st.CLAIMED
                room.owner = owner
                room.password_hash = password_hash
                room.moderator_key_hash = moderator_key_hash
                room.locked = False
                if self.gateway is None or self.gateway.client_count(room_id) == 0:
                    room.empty_since = trio.current_time()
                # Not the urlPath: a room's name lets whoever reads it into the call.
                log.info("room %d claimed%s", room_id,
                         " (password protected)" if password_hash else "",
                         extra={"room": room_id, "password": password_hash is not None})  # fmt: skip
            self._pool_wakeup.set()
        return claimed

    def room(self, room_id: int) -> Room | None:
        return self.rooms.get(room_id)

    def set_locked(self, room_id: int, locked: bool) -> None:
        room = self.rooms.get(room_id)
        if room is not None and room.locked != locked:
            room.locked = locked
            self.store.set_locked(room_id, locked)

    def set_password(self, room_id: int, password_hash: str | None) -> None:
        room = self.rooms.get(room_id)
        if room is not None:
            room.password_hash = password_hash
            self.store.set_password(room_id, password_hash)

    def close_room(self, room_id: int, reason: str = "closed by an operator") -> None:
        """Idempotent; stops the SFU task and frees the urlPath. `reason`: for the log line."""
        room = self.rooms.pop(room_id, None)
        self.store.close_room(room_id)
        if room is not None:
            log.info("room %d closed: %s", room_id, reason,
                     extra={"room": room_id, "reason": reason})  # fmt: skip
            room.status = st.CLOSED
            room.cancel_scope.cancel()
            room.ready.set()
        if self.gateway is not None:
            self.gateway.close_room(room_id)
        self._pool_wakeup.set()

    def idle_count(self) -> int:
        return sum(1 for r in self.rooms.values() if r.status in (st.STARTING, st.UNCLAIMED))

    def counts(self) -> dict[str, float]:
        out: dict[str, float] = {st.STARTING: 0, st.UNCLAIMED: 0, st.CLAIMED: 0}
        for room in self.rooms.values():
            out[room.status] = out.get(room.status, 0) + 1
        return out

    # -- background duties ---------------------------------------------------------------------

    async def _keep_pool(self) -> None:
        """Keep `idle_pool` ready rooms so a new URL never waits for an SFU to start."""
        while True:
            self._pool_wakeup = trio.Event()
            want = self.config.rooms.idle_pool
            while self.idle_count() < want and len(self.rooms) < self.config.rooms.max_rooms:
                try:
                    await self.create_room()
                except ServerFault as exc:
                    log.warning("idle pool: %s", exc.message)
                    await trio.sleep(1.0)
                    break
            await self._pool_wakeup.wait()

    async def _reap_empty_rooms(self) -> None:
        timeout = self.config.rooms.empty_timeout
        # A room claimed but never joined is someone holding a URL (or exhausting max_rooms
        # with createRoom + claimRoom on random paths): it gets the shorter timeout.
        unjoined = min(self.config.rooms.unjoined_timeout, timeout)
        interval = min(max(unjoined / 4, 0.05), 30.0)
        while True:
            await trio.sleep(interval)
            now = trio.current_time()
            for room in list(self.rooms.values()):
                limit = timeout if room.joined else unjoined
                if (
                    room.status == st.CLAIMED
                    and room.empty_since is not None
                    and now - room.empty_since >= limit
                ):
                    self.close_room(room.id, f"empty for {limit:.0f} s")
