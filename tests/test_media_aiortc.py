"""End to end: aiortc participants through a real `Server` and its default room SFU.

Success means frames *decoded* on the far side (VideoFrame/AudioFrame objects out of aiortc's
decoders), not "connected" (docs/PROTOCOL.md section 8). Each participant is a `MediaPeer`
(tests/media_peer.py): one producer pc, one consumer pc per remote publisher.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from arbiter.testing import Running, make_config, new_room, running_server
from arbiter.testing.media_peer import MediaPeer, open_media_peer

pytestmark = pytest.mark.media

VIDEO_SIZE = (320, 240)


def sfu_transport_count(srv: Running, room_id: int) -> int:
    """Live media transports (producer + consumer pcs) the room's SFU holds for its clients:
    1 producer per participant + 1 consumer per (participant, other participant)."""
    assert srv.server.media is not None
    return srv.server.media.rooms[room_id].transport_count()


async def join_all(
    stack: AsyncExitStack, srv: Running, room_id: int, ids: str
) -> dict[str, MediaPeer]:
    """One MediaPeer per letter of `ids`, joined in that order (each gets its producer answer)."""
    peers: dict[str, MediaPeer] = {}
    for peer_id in ids:
        peer = await stack.enter_async_context(open_media_peer(video_size=VIDEO_SIZE))
        await peer.join(srv.ws_url, room_id, peer_id, f"name-{peer_id}")
        peers[peer_id] = peer
    return peers


async def all_receive_all(peers: dict[str, MediaPeer], timeout: float = 20) -> None:
    """Every peer decodes >= 5 video and >= 5 audio frames from every other peer."""
    async with trio.open_nursery() as nursery:
        for peer_id, peer in peers.items():
            others = set(peers) - {peer_id}
            nursery.start_soon(lambda p=peer, o=others: p.wait_for_media(o, timeout=timeout))


def assert_healthy(peers: dict[str, MediaPeer]) -> None:
    for peer_id, peer in peers.items():
        others = set(peers) - {peer_id}
        assert peer.errors == [], peer.describe()
        assert peer.producer_answered
        assert peer.sfu_disconnects == []
        assert {k: v for k, v in peer.consumer_states().items() if k in others} == {
            other: "connected" for other in others
        }, peer.describe()
        assert {k: v for k, v in peer.video_sizes().items() if k in others} == {
            other: VIDEO_SIZE for other in others
        }


async def test_three_participants_see_and_hear_each_other(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_server(make_config(tmp_path)) as srv, AsyncExitStack() as stack:
            room_id = await new_room(srv, "three")
            peers = await join_all(stack, srv, room_id, "ABC")
            await all_receive_all(peers)
            assert_healthy(peers)
            assert peers["A"].joins == ["B", "C"]
            assert peers["B"].joins == ["C"]
            assert peers["C"].joins == []
            for peer in peers.values():
                assert peer.sfu_id == str(room_id)


async def test_leaver_is_removed(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with running_server(make_config(tmp_path)) as srv, AsyncExitStack() as stack:
            room_id = await new_room(srv, "leaver")
            peers = await join_all(stack, srv, room_id, "ABC")
            await all_receive_all(peers)
            a, b, c = peers["A"], peers["B"], peers["C"]

            await c.leave()
            assert c.consumer_states() == {"A": "closed", "B": "closed"}
            assert c.producer_state() == "closed"
            for peer in (a, b):
                await peer.wait_for_disconnect("C")
                assert peer.disconnects == ["C"]
                assert peer.consumer_states()["C"] == "closed"

            # Frames from C stop growing (a short grace for what was already in flight) while
            # A and B keep receiving each other.
            await trio.sleep(0.5)
            frozen = {p.peer_id: p.stats()["C"] for p in (a, b)}
            flowing = a.stats()["B"]["video"]
            await trio.sleep(1)
            assert {p.peer_id: p.stats()["C"] for p in (a, b)} == frozen
            assert a.stats()["B"]["video"] > flowing
            assert_healthy({"A": a, "B": b})

            # The SFU closed C's producer and every consumer of it, and C's consumers.
            with trio.fail_after(5):
                while sfu_transport_count(srv, room_id) != 4:
                    await trio.sleep(0.05)


async def test_late_joiner_receives_everyone(tmp_path: Path) -> None:
    with trio.fail_after(40):
        async with running_server(make_config(tmp_path)) as srv, AsyncExitStack() as stack:
            room_id = await new_room(srv, "late")
            peers = await join_all(stack, srv, room_id, "ABC")
            await all_receive_all(peers)

            peers |= await join_all(stack, srv, room_id, "D")
            await all_receive_all(peers)
            assert_healthy(peers)
            assert peers["D"].joins == []
            for peer_id in "ABC":
                assert peers[peer_id].joins[-1] == "D"
                assert peers[peer_id].stats()["D"]["video"] >= 5


async def test_reoffers_keep_the_media_flowing(tmp_path: Path) -> None:
    """Issue 11: re-offers renegotiate the producer connection instead of replacing it. A
    re-offers its unchanged tracks three times, then once more with a second camera: B keeps
    decoding A through all of it on its one consumer pc (the second camera arrives as a
    re-offer on that pc), and the SFU keeps the same transports."""
    with trio.fail_after(30):
        async with running_server(make_config(tmp_path)) as srv, AsyncExitStack() as stack:
            room_id = await new_room(srv, "reoffers")
            peers = await join_all(stack, srv, room_id, "AB")
            await all_receive_all(peers)
            a, b = peers["A"], peers["B"]
            assert srv.server.media is not None
            room = srv.server.media.rooms[room_id]
            producer_transport = room.publishers["A"].transport
            consumer_transport = room.subscriptions[("B", "A")].transport
            producers = dict(room.publishers["A"].producers)
            for _ in range(3):
                before = b.stats()["A"]["video"]
                await a.reoffer()
                await b.wait_for_media({"A"}, video_frames=before + 10, audio_frames=0)
            assert room.publishers["A"].producers == producers  # not a single Producer replaced
            assert b.consumer_offers == {"A": 1} and a.consumer_offers == {"B": 1}
            assert sfu_transport_count(srv, room_id) == 4
            # A second camera: one re-offer to B, on the same pc.
            before = b.stats()["A"]["video"]
            await a.reoffer(add_video=True)
            await b.wait_until(lambda: b.consumer_offers == {"A": 2}, 5)
            await b.wait_for_media({"A"}, video_frames=before + 20, audio_frames=0)
            assert a.producer_answers == 5
            assert b.consumer_pcs == {"A": 1} and a.consumer_pcs == {"B": 1}
            assert room.publishers["A"].transport is producer_transport
            assert room.subscriptions[("B", "A")].transport is consumer_transport
            assert len(room.publishers["A"].producers) == 3
            assert sfu_transport_count(srv, room_id) == 4
            assert_healthy(peers)


async def test_active_speaker_is_the_publisher_that_makes_sound(tmp_path: Path) -> None:
    """A sends a tone, B silence: from the RFC 6464 levels aiortc sends, the SFU elects A and
    both clients receive `activeSpeaker` A (and never B)."""
    with trio.fail_after(25):
        async with running_server(make_config(tmp_path)) as srv, AsyncExitStack() as stack:
            room_id = await new_room(srv, "speaker")
            a = await stack.enter_async_context(open_media_peer(video=False, tone=True))
            await a.join(srv.ws_url, room_id, "A", "name-A")
            b = await stack.enter_async_context(open_media_peer(video=False))
            await b.join(srv.ws_url, room_id, "B", "name-B")
            for peer in (a, b):
                message = await peer.wait_for_message(
                    lambda m: m.get("type") == "activeSpeaker", timeout=15
                )
                assert message == {"type": "activeSpeaker", "id": "A"}
            await trio.sleep(1.5)  # B's silence never takes over
            for peer in (a, b):
                assert [m["id"] for m in peer.messages if m.get("type") == "activeSpeaker"] == [
                    "A"
                ]
