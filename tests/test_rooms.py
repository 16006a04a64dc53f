"""The room supervisor: idle pool, SFU crash containment and restart, empty-room reaper."""

from __future__ import annotations

from pathlib import Path

import trio

from arbiter.rooms import SignalingLink
from arbiter.testing import SfuRegistry, make_config, running_server, ws_client


async def test_idle_pool_is_kept_topped_up(tmp_path: Path) -> None:
    config = make_config(tmp_path, rooms={"idle_pool": 3, "max_rooms": 10})
    async with running_server(config) as srv:

        async def idle() -> int:
            return (await srv.http.get("/health")).json()["rooms"]["unclaimed"]

        with trio.fail_after(5):
            while await idle() != 3:
                await trio.sleep(0.02)
        for i in range(4):
            r = await srv.http.patch("/claimRoom", json={"urlPath": f"p{i}"})
            assert r.status_code in (200, 404)
            with trio.fail_after(5):
                while await idle() != 3:
                    await trio.sleep(0.02)
        health = (await srv.http.get("/health")).json()
        assert health["rooms"]["claimed"] == 4


async def test_crashing_sfu_is_restarted_and_siblings_untouched(tmp_path: Path) -> None:
    registry = SfuRegistry()
    crashes = {"left": 1}
    first: list[int] = []

    async def factory(room_id: int, link: SignalingLink) -> None:
        if not first:
            first.append(room_id)
        if room_id == first[0] and crashes["left"]:
            await link.send({"action": "identify", "data": {"type": "sfu", "id": str(room_id)}})
            await link.receive()  # identified
            await link.receive()  # roster
            message = await link.receive()  # the first client's arrival
            assert message["type"] == "clientJoin"
            crashes["left"] -= 1
            raise RuntimeError("injected SFU crash")
        await registry(room_id, link)

    async with running_server(make_config(tmp_path), factory) as srv:
        ids = [(await srv.http.put("/createRoom")).json()["roomId"] for _ in range(2)]
        assert ids[0] == first[0]
        for name, room_id in zip(("victim", "bystander"), ids, strict=True):
            r = await srv.http.patch("/claimRoom", json={"urlPath": name})
            assert r.json()["roomId"] == room_id
        async with ws_client(srv.ws_url) as victim, ws_client(srv.ws_url) as bystander:
            await bystander.identify_client(ids[1], "bystander")
            await victim.identify_client(ids[0], "victim")
            assert await victim.recv() == {"type": "sfuDisconnect", "roomId": ids[0]}
            # The SFU comes back and routes again.
            with trio.fail_after(5):
                while ids[0] not in registry.sfus:
                    await trio.sleep(0.02)
            await victim.send("handshake", {"type": "producer", "description": {"sdp": "x"}})
            got = await registry.sfus[ids[0]].wait_for(lambda m: m.get("type") == "producer")
            assert got["sender"] == "victim"
            # The other room never noticed.
            await bystander.expect_silence()
            await bystander.send("handshake", {"type": "producer"})
            got = await registry.sfus[ids[1]].wait_for(lambda m: m.get("type") == "producer")
            assert got["sender"] == "bystander"
        assert srv.server.metrics.room_crashes._value.get() == 1


async def test_empty_claimed_room_is_closed_and_url_freed(tmp_path: Path) -> None:
    config = make_config(tmp_path, rooms={"idle_pool": 0, "empty_timeout": 0.4})
    async with running_server(config) as srv:
        first = (await srv.http.put("/createRoom")).json()["roomId"]
        assert (await srv.http.patch("/claimRoom", json={"urlPath": "r"})).json()["roomId"] == first
        async with ws_client(srv.ws_url) as c:
            await c.identify_client(first, "present")
            await trio.sleep(0.8)  # occupied: never reaped
            r = await srv.http.get("/getRoomId", params={"urlPath": "r"})
            assert r.status_code == 200
        with trio.fail_after(5):
            while (await srv.http.get("/getRoomId", params={"urlPath": "r"})).status_code != 404:
                await trio.sleep(0.05)
        assert srv.server.store.get_room(first).status == "closed"  # type: ignore[union-attr]
        # The next visitor of the URL transparently gets a fresh room.
        second = (await srv.http.put("/createRoom")).json()["roomId"]
        assert (await srv.http.patch("/claimRoom", json={"urlPath": "r"})).json()[
            "roomId"
        ] == second
        assert second != first


async def test_claimed_room_nobody_joins_is_closed_sooner(tmp_path: Path) -> None:
    """createRoom + claimRoom on random URLs cannot hold max_rooms for empty_timeout."""
    config = make_config(
        tmp_path, rooms={"idle_pool": 0, "empty_timeout": 3600.0, "unjoined_timeout": 0.3}
    )
    registry = SfuRegistry()
    async with running_server(config, registry) as srv:
        squatted = (await srv.http.put("/createRoom")).json()["roomId"]
        await srv.http.patch("/claimRoom", json={"urlPath": "squat"})
        # Identifying without ever connecting media does not count as joining.
        async with ws_client(srv.ws_url) as c:
            await c.identify_client(squatted, "idler")
        used = (await srv.http.put("/createRoom")).json()["roomId"]
        await srv.http.patch("/claimRoom", json={"urlPath": "used"})
        async with ws_client(srv.ws_url) as c:
            await c.identify_client(used, "visitor")
            # The room's SFU reports the visitor's media up (docs/PROTOCOL.md section 3, mediaUp).
            await registry.sfus[used].link.send(
                {"action": "room", "data": {"type": "mediaUp", "id": "visitor"}}
            )
            await c.expect_silence(0.1)
        with trio.fail_after(5):
            while (
                await srv.http.get("/getRoomId", params={"urlPath": "squat"})
            ).status_code != 404:
                await trio.sleep(0.05)
        await trio.sleep(0.6)  # twice the unjoined timeout: the joined room keeps its hour
        r = await srv.http.get("/getRoomId", params={"urlPath": "used"})
        assert r.status_code == 200 and r.json()["roomId"] == used
        assert srv.server.store.get_room(squatted).status == "closed"  # type: ignore[union-attr]
