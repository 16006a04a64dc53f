"""The aiortc test harness itself, without the SFU's media plane.

1. Two MediaPeers wired directly to each other (A's producer offer answered by B's consumer pc):
   proves the loop thread, the trio <-> asyncio calls, the synthetic VP8/Opus tracks, the frame
   counting and the clean-up (no thread survives the peers).
2. The same through a real `Server` whose room SFU is a signaling relay (a producer offer is
   handed to the other participant as a consumer offer, the answer goes back as the producer
   answer): proves MediaPeer's side of the wire protocol, including clientDisconnect handling.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import trio

from arbiter.rooms import SignalingLink
from arbiter.testing import make_config, running_server
from arbiter.testing.media_peer import MediaPeer, open_media_peer

pytestmark = pytest.mark.media


def _threads() -> set[threading.Thread]:
    return set(threading.enumerate())


def _foreign_threads(before: set[threading.Thread]) -> set[str]:
    """Threads started since `before`, except trio's idle worker-thread cache."""
    return {
        t.name for t in _threads() - before if t.is_alive() and not t.name.startswith("Trio thread")
    }


async def _assert_no_threads_left(before: set[threading.Thread]) -> None:
    with trio.move_on_after(5):
        while _foreign_threads(before):
            await trio.sleep(0.05)
    assert _foreign_threads(before) == set()


async def test_direct_pair_exchanges_vp8_and_opus() -> None:
    before = _threads()
    with trio.fail_after(30):
        async with open_media_peer() as a, open_media_peer(video_size=(160, 120)) as b:
            a.peer_id, b.peer_id = "A", "B"
            offer = await a.create_producer_offer()
            assert offer["type"] == "offer"
            assert "VP8" in offer["sdp"] and "opus" in offer["sdp"]
            answer = await b.accept_consumer_offer("A", offer)
            assert answer["type"] == "answer"
            await a.accept_producer_answer(answer)
            # and the other way round
            answer_ba = await a.accept_consumer_offer("B", await b.create_producer_offer())
            await b.accept_producer_answer(answer_ba)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(lambda: b.wait_for_media({"A"}, timeout=20))
                nursery.start_soon(lambda: a.wait_for_media({"B"}, timeout=20))

            assert b.video_sizes() == {"A": (320, 240)}
            assert a.video_sizes() == {"B": (160, 120)}
            assert b.consumer_states() == {"A": "connected"}
            assert a.consumer_states() == {"B": "connected"}
            assert a.producer_state() == "connected"
            assert set(b.stats()) == {"A"}

            # closing the consumer stops the counting
            await b.close_consumer("A")
            assert b.consumer_states() == {"A": "closed"}
            await trio.sleep(0.3)
            frozen = b.stats()
            await trio.sleep(0.5)
            assert b.stats() == frozen
            assert a.errors == [] and b.errors == []
    assert not a.thread.alive and not b.thread.alive
    await _assert_no_threads_left(before)


async def test_cleanup_after_failure_leaves_no_threads() -> None:
    before = _threads()
    with pytest.raises(ZeroDivisionError), trio.fail_after(20):
        async with open_media_peer() as a, open_media_peer() as b:
            answer = await b.accept_consumer_offer("A", await a.create_producer_offer())
            await a.accept_producer_answer(answer)
            await b.wait_for_media({"A"}, video_frames=1, audio_frames=1)
            1 / 0  # noqa: B018
    assert not a.thread.alive and not b.thread.alive
    await _assert_no_threads_left(before)


class RelaySFU:
    """A signaling-only room SFU for two participants: it relays offers and answers."""

    def __init__(self, room_id: int, link: SignalingLink) -> None:
        self.room_id = room_id
        self.link = link
        self.clients: list[str] = []
        self.offers: dict[str, dict[str, Any]] = {}  # publisher -> producer offer
        self.sent: set[tuple[str, str]] = set()  # (receiver, publisher)
        self.received: list[dict[str, Any]] = []

    async def handshake(self, data: dict[str, Any]) -> None:
        await self.link.send({"action": "handshake", "data": {"sender": str(self.room_id), **data}})

    async def offer_pending(self) -> None:
        for publisher, offer in self.offers.items():
            for receiver in self.clients:
                if receiver != publisher and (receiver, publisher) not in self.sent:
                    self.sent.add((receiver, publisher))
                    await self.handshake(
                        {
                            "type": "consumer",
                            "receiver": receiver,
                            "remotePeerId": publisher,
                            "description": offer,
                        }
                    )

    async def run(self) -> None:
        await self.link.send(
            {"action": "identify", "data": {"type": "sfu", "id": str(self.room_id)}}
        )
        while True:
            message = await self.link.receive()
            self.received.append(message)
            kind = message.get("type")
            if kind == "clientJoin":
                self.clients.append(message["clientId"])
            elif kind == "clientDisconnect":
                self.clients.remove(message["clientId"])
                self.offers.pop(message["clientId"], None)
            elif kind == "producer":
                self.offers[message["sender"]] = message["description"]
            elif kind == "consumer":
                await self.handshake(
                    {
                        "type": "producer",
                        "receiver": message["remotePeerId"],
                        "description": message["description"],
                    }
                )
            await self.offer_pending()


async def test_relay_through_server(tmp_path: Path) -> None:
    relays: dict[int, RelaySFU] = {}

    async def factory(room_id: int, link: SignalingLink) -> None:
        relay = relays[room_id] = RelaySFU(room_id, link)
        await relay.run()

    before = _threads()
    with trio.fail_after(40):
        async with running_server(make_config(tmp_path), factory) as srv:
            room_id = (await srv.http.put("/createRoom")).json()["roomId"]
            r = await srv.http.patch("/claimRoom", json={"urlPath": "smoke"})
            assert r.json()["roomId"] == room_id
            async with open_media_peer() as a, open_media_peer() as b:
                # the relay answers A's offer only once B is there to answer it
                await a.join(srv.ws_url, room_id, "A", "Alice", answer_timeout=None)
                await b.join(srv.ws_url, room_id, "B", "Bob")
                await a.wait_for_producer_answer()
                assert a.sfu_id == str(room_id) and b.sfu_id == str(room_id)
                assert a.joins == ["B"]
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(lambda: a.wait_for_media({"B"}))
                    nursery.start_soon(lambda: b.wait_for_media({"A"}))
                assert a.video_sizes() == {"B": (320, 240)}

                await b.leave()
                await a.wait_for_disconnect("B")
                assert a.disconnects == ["B"]
                assert a.consumer_states() == {"B": "closed"}
                assert relays[room_id].clients == ["A"]
                assert a.errors == [] and b.errors == []
                assert b.producer_state() == "closed"
    assert not a.thread.alive and not b.thread.alive
    await _assert_no_threads_left(before)


def test_media_peer_outside_context_is_rejected() -> None:
    peer = MediaPeer()
    with pytest.raises(RuntimeError, match="use `async with MediaPeer"):
        trio.run(peer.join, "ws://127.0.0.1:1/ws", 1, "A", "A")
    peer.thread.loop.close()
