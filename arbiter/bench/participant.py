"""What every benchmark target provides: a server process and synthetic participants.

A `Target` starts the server under test (`run`, started with `nursery.start`), creates rooms,
and makes `Participant`s that join a room, optionally publish (one sending leg), and subscribe
to other participants (one receiving leg per publisher, as browsers hold one consumer peer
connection per remote participant in Arbiter's model).
"""

from __future__ import annotations

from typing import Any

import trio

from ..sfu.dtls import Certificate
from . import payloads, simulcast
from .engine import Leg


class Participant:
    """A synthetic browser: publishing leg, subscribing legs, and what it measured."""

    def __init__(self, number: int, certificate: Certificate) -> None:
        self.number = number
        self.peer_id = f"p{number}"
        self.certificate = certificate
        self.audio_ssrc = 0x1000_0000 + 2 * number
        self.video_ssrc = 0x1000_0000 + 2 * number + 1
        self.publisher_leg: Leg | None = None
        self.subscriptions: dict[str, Leg] = {}
        self.errors: list[dict[str, Any]] = []
        self.joined_at = 0.0
        self.stop = trio.Event()
        self.nursery: trio.Nursery | None = None
        self.drop_one_in = 0  # tests: every subscription drops every Nth packet (lossy link)
        # Publishing: three simulcast layers (simulcast.py) instead of one stream; a plain
        # publisher may send every `frame_step`-th frame only (the rate of layer q at 4).
        self.simulcast = False
        self.flat_layers = False  # every layer sends every frame (simulcast.simulcast_layers)
        self.frame_step = 1
        self.transport_cc = False  # offer and send transport-cc, as Chrome does
        self.layer_ssrcs = tuple(0x2000_0000 + 4 * number + i for i in range(3))
        self._changed = trio.Event()

    # -- what targets implement ------------------------------------------------------------

    async def join(self, nursery: trio.Nursery, publish: bool) -> None:
        raise NotImplementedError

    async def subscribe_to(self, other: Participant) -> None:
        raise NotImplementedError

    async def leave(self) -> None:
        raise NotImplementedError

    async def send_preferences(self, data: dict[str, Any]) -> None:
        """The `preferences` action (docs/PROTOCOL.md section 3); Arbiter only."""
        raise NotImplementedError(f"{type(self).__name__} has no preferences action")

    # -- shared --------------------------------------------------------------------------------

    def video_layers(self, recording: payloads.Recording) -> list[simulcast.VideoLayer]:
        """What this participant's publishing leg sends as video."""
        if self.simulcast:
            steps = (1, 1, 1) if self.flat_layers else simulcast.FRAME_STEP
            return simulcast.simulcast_layers(recording, self.layer_ssrcs, steps)
        return [simulcast.plain_layer(recording, self.video_ssrc, self.frame_step)]

    def add_subscription(self, publisher_id: str, leg: Leg) -> None:
        old = self.subscriptions.pop(publisher_id, None)
        if old is not None:
            old.close()
        self.subscriptions[publisher_id] = leg
        leg.drop_one_in = self.drop_one_in
        assert self.nursery is not None
        self.nursery.start_soon(leg.receive, self.stop)
        self.nursery.start_soon(leg.keep_consent, self.stop)
        self.nursery.start_soon(leg.feedback, self.stop)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_subscribed(self, publishers: set[str]) -> None:
        while not publishers <= set(self.subscriptions):
            await self._changed.wait()

    async def wait_first_media(self, publishers: set[str]) -> None:
        await self.wait_subscribed(publishers)
        for publisher in publishers:
            await self.subscriptions[publisher].first_packet.wait()

    def first_media_after_join(self, publishers: set[str]) -> float | None:
        """Seconds from identify to the first packet from every one of `publishers`."""
        firsts = []
        for publisher in publishers:
            leg = self.subscriptions.get(publisher)
            if leg is None or not leg.streams:
                return None
            firsts.append(min(s.first_at for s in leg.streams.values()))
        return max(firsts) - self.joined_at if firsts else None

    def close_legs(self) -> None:
        self.stop.set()
        if self.publisher_leg is not None:
            self.publisher_leg.close()
        for leg in self.subscriptions.values():
            leg.close()


class Target:
    """A server under test."""

    name = "target"

    @property
    def pids(self) -> list[int]:
        raise NotImplementedError

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        raise NotImplementedError

    async def new_room(self) -> Any:
        raise NotImplementedError

    def participant(self, room: Any, number: int, certificate: Certificate) -> Participant:
        raise NotImplementedError


async def join_call(
    target: Target,
    room: Any,
    numbers: list[int],
    certificate: Certificate,
    nursery: trio.Nursery,
) -> list[Participant]:
    """Participants `numbers` join `room`, publish, and subscribe to one another (all see all).

    Their legs run in `nursery`; the caller bounds the wait (a `trio.fail_after`)."""
    people = [target.participant(room, n, certificate) for n in numbers]
    for p in people:
        p.nursery = nursery
        await p.join(nursery, publish=True)
    for p in people:
        for other in people:
            if other is not p:
                await p.subscribe_to(other)
    for p in people:
        await p.wait_subscribed({o.peer_id for o in people if o is not p})
    return people
