"""Join/leave cycles against a real server, shared by tests/test_faults.py and
scripts/soak_join_leave.py.

A *resident* participant stays in the room and publishes (its SDP announces audio and video), so
every newcomer gets a consumer offer for it. Each *cycle* is one participant that:

1. opens a WebSocket and identifies,
2. offers its producer and completes ICE, DTLS and SRTP on it (a real `engine.Leg`),
3. answers the SFU's consumer offer for the resident and completes that transport too,
4. waits until the resident has answered the consumer offer for it and connected it,
5. leaves: an explicit `disconnect` (the server closes with 1000) or, alternately, an abrupt
   TCP reset without any WebSocket close (as a crashed tab or a dead network does).

So each cycle creates and tears down three transports (one producer, two consumers), two
signaling identities' worth of frames and one connection row; anything a cycle leaves behind
accumulates and shows up in `Tables`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import trio
from trio_websocket import ConnectionClosed

from arbiter.bench import sdp_client
from arbiter.bench.engine import Leg
from arbiter.sfu.dtls import Certificate

from .signaling import WsClient, consumer_offer, is_error, producer_answer, ws_client

STEP_TIMEOUT = 10.0  # seconds any one step of a cycle may take
AUDIO_SSRC, VIDEO_SSRC = 0x2000_0000, 0x2000_0001


def _publisher_offer(leg: Leg, audio_ssrc: int, video_ssrc: int) -> str:
    me = leg.local_credentials()
    return sdp_client.build_publisher_offer(
        me.ufrag, me.pwd, me.fingerprint, audio_ssrc, video_ssrc, candidate=leg.address
    )


async def _answer_consumer(
    ws: WsClient, certificate: Certificate, publisher: str, offer: str
) -> Leg:
    """Answer one consumer offer and complete ICE + DTLS on it; the caller closes the leg."""
    leg = Leg(certificate)
    try:
        me = leg.prepare(sdp_client.remote_media_params(offer))
        answer = sdp_client.build_subscriber_answer(
            offer, me.ufrag, me.pwd, me.fingerprint, setup="active", candidate=leg.address
        )
        await ws.send_answer(publisher, answer)
        with trio.fail_after(STEP_TIMEOUT):
            await leg.connect()
    except BaseException:
        leg.close()
        raise
    return leg


@dataclass
class Resident:
    """The participant that stays: publishes, and answers every consumer offer it gets."""

    ws_url: str
    room_id: int
    certificate: Certificate
    peer_id: str = "resident"
    ws: WsClient | None = None
    producer: Leg | None = None
    consumer: Leg | None = None  # the latest cycle's consumer leg
    offers: dict[str, str] = field(default_factory=dict)  # publisher -> pending offer SDP
    joins: int = 0
    leaves: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    stop: trio.Event = field(default_factory=trio.Event)
    _changed: trio.Event = field(default_factory=trio.Event)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with ws_client(self.ws_url) as ws, trio.open_nursery() as nursery:
            self.ws = ws
            await ws.send_identify(self.room_id, self.peer_id)
            leg = self.producer = Leg(self.certificate)
            await ws.send_offer(_publisher_offer(leg, AUDIO_SSRC - 2, VIDEO_SSRC - 2))
            nursery.start_soon(self._read, ws)
            with trio.fail_after(STEP_TIMEOUT):
                answer = await self._wait_offer("")
            leg.attach_remote(sdp_client.remote_media_params(answer))
            with trio.fail_after(STEP_TIMEOUT):
                await leg.connect()
            nursery.start_soon(leg.keep_consent, self.stop)
            task_status.started()
            await self.stop.wait()
            await ws.send("disconnect", {})
            nursery.cancel_scope.cancel()
        self.close()

    def close(self) -> None:
        self.stop.set()
        for leg in (self.producer, self.consumer):
            if leg is not None:
                leg.close()

    async def _read(self, ws: WsClient) -> None:
        while True:
            try:
                message = await ws.recv(timeout=None)
            except ConnectionClosed:
                return
            kind = message.get("type")
            if (answer := producer_answer(message)) is not None:
                self.offers[""] = answer
            elif (offer := consumer_offer(message)) is not None:
                publisher, sdp = offer
                self.offers[publisher] = sdp
            elif kind == "clientJoin":
                self.joins += 1
            elif kind == "clientDisconnect":
                self.leaves += 1
            elif is_error(message):
                self.errors.append(message)
            self._changed.set()
            self._changed = trio.Event()

    async def _wait_offer(self, publisher: str) -> str:
        while publisher not in self.offers:
            await self._changed.wait()
        return self.offers.pop(publisher)

    async def accept(self, publisher: str) -> None:
        """Answer the consumer offer for `publisher` and connect it (replacing the last one)."""
        assert self.ws is not None
        with trio.fail_after(STEP_TIMEOUT):
            offer = await self._wait_offer(publisher)
        leg = await _answer_consumer(self.ws, self.certificate, publisher, offer)
        if self.consumer is not None:
            self.consumer.close()
        self.consumer = leg


async def cycle(
    ws_url: str, room_id: int, resident: Resident, certificate: Certificate, n: int,
    *, abrupt: bool,
) -> None:  # fmt: skip
    """One participant joins with media, sees the resident, is seen by it, and leaves."""
    peer_id = f"cycler-{n}"
    legs: list[Leg] = []
    try:
        async with ws_client(ws_url) as ws:
            await ws.send_identify(room_id, peer_id)
            producer = Leg(certificate)
            legs.append(producer)
            await ws.send_offer(_publisher_offer(producer, AUDIO_SSRC + 2 * n, VIDEO_SSRC + 2 * n))
            answer = resident_offer = None
            with trio.fail_after(STEP_TIMEOUT):
                while answer is None or resident_offer is None:
                    message = await ws.recv(timeout=None)
                    if is_error(message):
                        raise AssertionError(f"cycle {n}: {message}")
                    if (sdp := producer_answer(message)) is not None:
                        answer = sdp
                    elif (offer := consumer_offer(message)) and offer[0] == resident.peer_id:
                        resident_offer = offer[1]
            producer.attach_remote(sdp_client.remote_media_params(answer))
            with trio.fail_after(STEP_TIMEOUT):
                await producer.connect()
            legs.append(await _answer_consumer(ws, certificate, resident.peer_id, resident_offer))
            await resident.accept(peer_id)
            if abrupt:
                ws.reset()
                return
            await ws.send("disconnect", {})
            with trio.fail_after(STEP_TIMEOUT):
                reason = await ws.drain()  # nothing more is expected but the close
            if reason.code != 1000:
                raise AssertionError(f"cycle {n}: closed with {reason}")
    finally:
        for leg in legs:
            leg.close()


@dataclass(frozen=True)
class Tables:
    """What a participant's stay could leave behind in the server, from /metrics."""

    transports: int
    by_ufrag: int
    by_addr: int
    router_transports: int
    ws_connections: int

    @classmethod
    def from_metrics(cls, text: str) -> Tables:
        values: dict[str, int] = {}
        for line in text.splitlines():
            if line.startswith("arbiter_media_transports{"):
                kind = line.split('kind="', 1)[1].split('"', 1)[0]
                values[kind] = int(float(line.rsplit(" ", 1)[1]))
            elif line.startswith("arbiter_ws_connections "):
                values["ws_connections"] = int(float(line.rsplit(" ", 1)[1]))
        return cls(
            transports=values["transports"],
            by_ufrag=values["by_ufrag"],
            by_addr=values["by_addr"],
            router_transports=values["router_transports"],
            ws_connections=values["ws_connections"],
        )
