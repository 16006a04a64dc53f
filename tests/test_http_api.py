"""Every row of the HTTP table (docs/PROTOCOL.md section 2) against a real server on a loopback
port."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from arbiter.config import Config
from arbiter.store import Store
from arbiter.testing import SfuRegistry, make_config, running_server


async def test_get_room_id_missing_and_not_found(config: Config) -> None:
    async with running_server(config) as srv:
        for query in [
            "",
            "?urlPath=",
            "?urlPath=/",
            "?urlPath=%2F%2F",
            "?urlPath=a%01b",
            "?urlPath=" + "x" * 201,
        ]:
            r = await srv.http.get("/getRoomId" + query)
            assert (r.status_code, r.json()) == (400, {"message": "missing urlPath"}), query
            assert r.headers["content-type"] == "application/json"
        r = await srv.http.get("/getRoomId", params={"urlPath": "nobody-here"})
        assert (r.status_code, r.json()) == (404, {"message": "Room not found"})
        # The web client's probe: a miss is an answer (no console error), same budget.
        r = await srv.http.get("/getRoomId", params={"urlPath": "nobody-here", "probe": "1"})
        assert (r.status_code, r.json()) == (200, {"exists": False, "urlPath": "nobody-here"})
        r = await srv.http.get("/getRoomId", params={"urlPath": "nobody-here", "probe": "yes"})
        assert (r.status_code, r.json()) == (404, {"message": "Room not found"})


async def test_create_claim_get_round_trip(config: Config) -> None:
    async with running_server(config) as srv:
        r = await srv.http.put("/createRoom")
        assert r.status_code == 200
        room_id = r.json()["roomId"]
        assert r.json() == {"message": "Task started successfully!", "roomId": room_id}
        assert isinstance(room_id, int) and room_id > 0

        r = await srv.http.patch("/claimRoom", json={"urlPath": "/myRoom/"})
        # This call bound the name: its caller gets the moderator key, once.
        key = r.json().get("moderatorKey")
        assert (r.status_code, r.json()) == (200, {"roomId": room_id, "moderatorKey": key})
        assert isinstance(key, str) and len(key) == 32
        # Idempotent: the same path (normalised) gets the same room, no new room is taken.
        r = await srv.http.patch("/claimRoom", json={"urlPath": "myRoom"})
        assert (r.status_code, r.json()) == (200, {"roomId": room_id})

        for path in ["myRoom", "/myRoom", "myRoom/", "//myRoom//"]:
            r = await srv.http.get("/getRoomId", params={"urlPath": path})
            assert (r.status_code, r.json()) == (
                200,
                {"roomId": room_id, "id": room_id, "urlPath": "myRoom", "passwordRequired": False},
            )

        r = await srv.http.post("/createRoom")  # the deployed client used POST
        assert r.status_code == 200
        other = r.json()["roomId"]
        # Random, never sequential (docs/PROTOCOL.md section 2), JavaScript-safe.
        assert other != room_id and 2**32 <= min(room_id, other) < max(room_id, other) < 2**53


async def test_claim_room_errors(config: Config) -> None:
    async with running_server(config) as srv:
        bad_bodies: list[dict] = [
            {},
            {"content": b"not json"},
            {"content": b"[1,2]"},
            {"json": {}},
            {"json": {"urlPath": 5}},
            {"json": {"urlPath": None}},
            {"json": {"urlPath": "///"}},
            {"content": b"[" * 20_000 + b"]" * 20_000},  # RecursionError in json
        ]
        for kwargs in bad_bodies:
            r = await srv.http.patch("/claimRoom", **kwargs)
            assert (r.status_code, r.json()) == (400, {"message": "missing urlPath"}), kwargs
        r = await srv.http.patch("/claimRoom", content=b" " * 200_000)
        assert (r.status_code, r.json()) == (413, {"message": "Request body too large"})
        # Nothing ready to claim (idle pool 0, no room created).
        r = await srv.http.patch("/claimRoom", json={"urlPath": "x"})
        assert (r.status_code, r.json()) == (404, {"message": "Room not found"})


async def test_create_room_limit(tmp_path: Path) -> None:
    config = make_config(tmp_path, rooms={"idle_pool": 0, "max_rooms": 1})
    async with running_server(config) as srv:
        assert (await srv.http.put("/createRoom")).status_code == 200
        r = await srv.http.put("/createRoom")
        assert (r.status_code, r.json()) == (
            500,
            {"message": "Failed to start task.", "reason": "room limit reached"},
        )


async def test_create_room_sfu_never_ready(tmp_path: Path) -> None:
    registry = SfuRegistry(remote=1)  # no SFU ever identifies for the first room
    config = make_config(tmp_path, rooms={"idle_pool": 0, "start_timeout": 0.3})
    async with running_server(config, registry) as srv:
        r = await srv.http.put("/createRoom")
        room = await registry.next_remote()
        assert (r.status_code, r.json()) == (
            500,
            {"message": "Failed to start task.", "reason": "the room's SFU did not start in time"},
        )
        # The failed room is closed, not left half-started.
        assert srv.server.store is not None
        assert srv.server.store.get_room(room).status == "closed"  # type: ignore[union-attr]


async def test_500_when_the_store_breaks(config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    async with running_server(config) as srv:

        def broken(*args: object) -> None:
            raise RuntimeError("disk on fire")

        assert srv.server.store is not None
        monkeypatch.setattr(srv.server.store, "room_by_path", broken)
        monkeypatch.setattr(srv.server.store, "claim", broken)
        r = await srv.http.get("/getRoomId", params={"urlPath": "x"})
        assert (r.status_code, r.json()) == (500, {"message": "Something broke on the server"})
        r = await srv.http.patch("/claimRoom", json={"urlPath": "x"})
        assert (r.status_code, r.json()) == (500, {"message": "Something broke on the server"})


async def test_cors_preflight_and_headers_when_any_origin_is_allowed(tmp_path: Path) -> None:
    config = make_config(tmp_path, http={"allowed_origins": ["*"]})
    async with running_server(config) as srv:
        r = await srv.http.options(
            "/claimRoom",
            headers={
                "Origin": "https://elsewhere.example",
                "Access-Control-Request-Method": "PATCH",
            },
        )
        assert r.status_code in (200, 204)
        assert r.headers["access-control-allow-origin"] == "*"
        assert "PATCH" in r.headers["access-control-allow-methods"]
        assert "Content-Type" in r.headers["access-control-allow-headers"]
        r = await srv.http.get(
            "/getRoomId", params={"urlPath": "x"}, headers={"Origin": "https://a.example"}
        )
        assert r.headers["access-control-allow-origin"] == "*"


async def test_health_config_metrics_and_client(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        ice={
            "servers": ["stun:stun.example.org:3478", "turn:turn.example.org:3478"],
            "turn_secret": "s3cret",
            "turn_ttl": 600,
        },
    )
    async with running_server(config) as srv:
        r = await srv.http.get("/health")
        assert r.status_code == 200
        assert r.json() == {
            "status": "ok",
            "rooms": {"starting": 0, "unclaimed": 0, "claimed": 0},
            "connections": 0,
            "workers": [],  # workers.local = 0: rooms run in this process
            "ready": True,  # the idle pool (0 here) is full
        }
        r = await srv.http.get("/config")
        body = r.json()
        assert body["wsUrl"] == srv.ws_url
        assert body["iceServers"][0] == {"urls": "stun:stun.example.org:3478"}
        # URLs only: TURN credentials go to identified clients (tests/test_attacks_http.py).
        assert body["iceServers"][1] == {"urls": "turn:turn.example.org:3478"}
        assert body["limits"] == {"maxParticipants": 16, "maxMessageBytes": 65536}
        r = await srv.http.get("/metrics")
        assert r.status_code == 200
        assert "arbiter_http_requests_total" in r.text
        for path in ["/", "/some-room", "/deep/room/name"]:
            r = await srv.http.get(path)
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/html")
        r = await srv.http.delete("/getRoomId")
        assert (r.status_code, r.json()) == (405, {"message": "Method not allowed"})


async def test_concurrent_claims_never_share_a_room(tmp_path: Path) -> None:
    config = make_config(tmp_path, rooms={"idle_pool": 0, "max_rooms": 60})
    async with running_server(config) as srv:
        for _ in range(50):
            assert (await srv.http.put("/createRoom")).status_code == 200
        results: list[tuple[str, int, dict]] = []

        async def claim(path: str) -> None:
            r = await srv.http.patch("/claimRoom", json={"urlPath": path})
            results.append((path, r.status_code, r.json()))

        async with trio.open_nursery() as nursery:
            for i in range(60):
                nursery.start_soon(claim, f"room-{i}")
        granted = [body["roomId"] for _, status, body in results if status == 200]
        refused = [body for _, status, body in results if status == 404]
        assert len(granted) == 50
        assert len(set(granted)) == 50
        assert refused == [{"message": "Room not found"}] * 10


async def test_restart_keeps_urls_and_empties_connections(tmp_path: Path) -> None:
    config = make_config(tmp_path, rooms={"idle_pool": 1})
    async with running_server(config) as srv:
        with trio.fail_after(5):
            while (await srv.http.patch("/claimRoom", json={"urlPath": "keep"})).status_code != 200:
                await trio.sleep(0.05)
        room_id = (await srv.http.get("/getRoomId", params={"urlPath": "keep"})).json()["roomId"]
    # A row left behind by a process that died without cleaning up.
    store = Store.open(config.store.path)
    store.add_connection("stale-connection", "10.9.9.9:1", 1.0)
    assert store.count_connections() == 1
    store.close()
    async with running_server(config) as srv:
        r = await srv.http.get("/getRoomId", params={"urlPath": "keep"})
        assert r.json() == {
            "roomId": room_id,
            "id": room_id,
            "urlPath": "keep",
            "passwordRequired": False,
        }
        assert srv.server.store is not None
        assert srv.server.store.count_connections() == 1 + 1  # the room's SFU and pool SFU
        rows = srv.server.store.connections()
        assert all(row["connection_id"] != "stale-connection" for row in rows)
        # The recovered room's SFU is running again and identified.
        assert srv.server.gateway is not None
        with trio.fail_after(5):
            while srv.server.gateway.sfu_of(room_id) is None:
                await trio.sleep(0.02)
    store = Store.open(config.store.path)
    assert store.count_connections() == 0
    store.close()
