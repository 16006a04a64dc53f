"""The Janus target: Debian's `janus` (VideoRoom) driven with the same synthetic participants.

Each participant holds one Janus session (one WebSocket), publishes with one handle and
subscribes to every other publisher with one handle each: the same one-connection-per-remote
model as Arbiter's consumers, so the two servers carry the same packets. Legs bind to Janus's
media address (see `janus.py`: libnice ignores loopback).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import trio

from ..sfu.dtls import Certificate
from . import feedback, sdp_client
from .engine import Leg
from .janus import JanusServer, JanusSignaling
from .participant import Participant, Target


def pin_threads(pid: int, cpu: int) -> None:
    """Pin every thread of `pid` to `cpu`; threads created later inherit it from their creator."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            os.sched_setaffinity(int(task.name), {cpu})
        except OSError:
            pass  # a thread that just exited


class JanusTarget(Target):
    name = "janus"

    def __init__(
        self, *, cpu: int | None = None, event_loops: int = 1, name: str = "janus"
    ) -> None:
        """`event_loops`: Janus's `general.event_loops`, as its documentation advises for load
        (a fixed pool of GLib loops shared by all handles instead of one thread per handle):
        the benchmark gives it one loop per core Janus is given."""
        self.cpu = cpu
        self.name = name
        self.event_loops = event_loops
        self.server = JanusServer(event_loops=event_loops)
        self.control: JanusSignaling | None = None
        self._rooms = 0

    @property
    def pids(self) -> list[int]:
        return [self.server.pid]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.server.run)
            if self.cpu is not None:
                pin_threads(self.server.pid, self.cpu)
            self.control = await JanusSignaling.connect(self.server.ws_url, nursery)
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                with trio.move_on_after(2) as cleanup:
                    cleanup.shield = True
                    await self.control.close()

    async def new_room(self) -> Any:
        assert self.control is not None
        self._rooms += 1
        room = 1000 + self._rooms
        await self.control.create_room(room, publishers=64)
        return room

    def participant(self, room: Any, number: int, certificate: Certificate) -> Participant:
        return JanusParticipant(self, int(room), number, certificate)


class JanusParticipant(Participant):
    def __init__(
        self, target: JanusTarget, room: int, number: int, certificate: Certificate
    ) -> None:
        super().__init__(number, certificate)
        self.target = target
        self.room = room
        self.signaling: JanusSignaling | None = None
        self.feed: int | None = None

    def _leg(self) -> Leg:
        return Leg(self.certificate, bind_ip=self.target.server.media_ip)

    async def join(self, nursery: trio.Nursery, publish: bool) -> None:
        self.joined_at = trio.current_time()
        self.signaling = await JanusSignaling.connect(self.target.server.ws_url, nursery)
        if not publish:
            return
        leg = self.publisher_leg = self._leg()
        me = leg.local_credentials()
        offer = sdp_client.build_publisher_offer(
            me.ufrag, me.pwd, me.fingerprint, self.audio_ssrc, self.video_ssrc,
            candidate=leg.address,
        )  # fmt: skip
        self.feed, answer = await self.signaling.publish(self.room, self.peer_id, offer)
        leg.attach_remote(sdp_client.remote_media_params(answer))
        await leg.connect()
        # Subscribers may only ask for a feed once its PeerConnection is up (428 before).
        handle = self.signaling.publisher_handle(self.feed)
        await self.signaling.wait_event(handle, lambda e: e.get("janus") == "webrtcup")

    async def subscribe_to(self, other: Participant) -> None:
        assert self.signaling is not None and isinstance(other, JanusParticipant)
        assert other.feed is not None
        subscription, offer = await self.signaling.subscribe(self.room, other.feed)
        leg = self._leg()
        leg.twcc_id = feedback.twcc_extension_id(offer)  # our answer mirrors the offer's extmaps
        me = leg.prepare(sdp_client.remote_media_params(offer))
        answer = sdp_client.build_subscriber_answer(
            offer, me.ufrag, me.pwd, me.fingerprint, setup="active", candidate=leg.address
        )
        await self.signaling.start(subscription, answer)
        await leg.connect()
        self.add_subscription(other.peer_id, leg)

    async def leave(self) -> None:
        if self.signaling is not None:
            with trio.move_on_after(2):
                await self.signaling.close()
        self.close_legs()
