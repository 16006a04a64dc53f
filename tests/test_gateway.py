"""The WebSocket gateway (docs/PROTOCOL.md section 3) over real WebSockets on a loopback port."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from pathlib import Path

import trio
from trio_websocket import ConnectionClosed

from arbiter.gateway import Peer
from arbiter.testing import SfuRegistry, make_config, running_server, ws_client


async def _rooms(srv, n: int) -> list[int]:  # type: ignore[no-untyped-def]
    ids = []
    for i in range(n):
        r = await srv.http.put("/createRoom")
        room_id = r.json()["roomId"]
        await srv.http.patch("/claimRoom", json={"urlPath": f"room{i}"})
        ids.append(room_id)
    return ids


async def test_error_frames_and_connection_survives(tmp_path: Path) -> None:
    registry = SfuRegistry()
    async with running_server(make_config(tmp_path), registry) as srv:
        (room,) = await _rooms(srv, 1)
        async with ws_client(srv.ws_url) as c:
            cases = [
                ("not json", None, 400, "Invalid JSON"),
                ("[1, 2]", None, 400, "Invalid JSON"),
                ("[" * 5000 + "]" * 5000, None, 400, "Invalid JSON"),
                (json.dumps({"action": "fly"}), "fly", 400, "Unknown action"),
                (json.dumps({"data": {}}), None, 400, "Unknown action"),
                (
                    json.dumps({"action": "identify", "data": {}}),
                    "identify",
                    400,
                    "Missing valid type property",
                ),
                (
                    json.dumps({"action": "identify", "data": {"type": "admin"}}),
                    "identify",
                    400,
                    "Missing valid type property",
                ),
                (
                    json.dumps(
                        {"action": "identify", "data": {"type": "client", "id": "a", "roomId": 999}}
                    ),
                    "identify",
                    404,
                    "Room not found",
                ),
                (
                    json.dumps(
                        {
                            "action": "identify",
                            "data": {"type": "client", "id": "a", "roomId": "nope"},
                        }
                    ),
                    "identify",
                    404,
                    "Room not found",
                ),
                (
                    json.dumps({"action": "handshake", "data": {"type": "producer"}}),
                    "handshake",
                    400,
                    "WebSocket Connection Not Found",
                ),
                (
                    json.dumps({"action": "chat", "data": {"content": "hi"}}),
                    "chat",
                    400,
                    "WebSocket Connection Not Found",
                ),
                (
                    json.dumps({"action": "identify", "data": {"type": "sfu", "id": str(room)}}),
                    "identify",
                    403,
                    "Forbidden",
                ),
            ]
            for raw, action, status, message in cases:
                await c.send_raw(raw)
                assert await c.recv() == {
                    "type": "error",
                    "action": action,
                    "status": status,
                    "message": message,
                }, raw
            await c.send_raw(b"\x00\x01binary")
            assert await c.recv() == {
                "type": "error",
                "action": None,
                "status": 400,
                "message": "Binary frames are not supported",
            }
            # Still alive: it can identify now.
            identified = await c.identify_client(room, "alice", "Alice")
            assert identified["id"] == "alice" and identified["roomId"] == room
            assert identified["status"] == 200 and identified["connectionId"]
            await c.send("handshake", {"type": "offer"})
            assert await c.recv() == {
                "type": "error",
                "action": "handshake",
                "status": 400,
                "message": "Invalid handshake type",
            }
            await c.send("identify", {"type": "client", "id": "again", "roomId": room})
            assert await c.recv() == {
                "type": "error",
                "action": "identify",
                "status": 409,
                "message": "Already identified",
            }


async def test_duplicate_id_and_room_full(tmp_path: Path) -> None:
    config = make_config(tmp_path, rooms={"idle_pool": 0, "max_participants": 2})
    async with running_server(config, SfuRegistry()) as srv:
        (room,) = await _rooms(srv, 1)
        async with (
            ws_client(srv.ws_url) as a,
            ws_client(srv.ws_url) as b,
            ws_client(srv.ws_url) as c,
        ):
            await a.identify_client(room, "a")
            await b.send("identify", {"type": "client", "id": "a", "roomId": room})
            assert await b.recv() == {
                "type": "error",
                "action": "identify",
                "status": 409,
                "message": "Duplicate id",
            }
            await b.identify_client(room, "b")
            await c.send("identify", {"type": "client", "id": "c", "roomId": str(room)})
            assert await c.recv() == {
                "type": "error",
                "action": "identify",
                "status": 403,
                "message": "Room is full",
            }


async def test_routing_isolation_between_two_rooms(tmp_path: Path) -> None:
    registry = SfuRegistry()
    async with running_server(make_config(tmp_path), registry) as srv:
        r1, r2 = await _rooms(srv, 2)
        async with AsyncExitStack() as stack:
            a1 = await stack.enter_async_context(ws_client(srv.ws_url))
            b1 = await stack.enter_async_context(ws_client(srv.ws_url))
            a2 = await stack.enter_async_context(ws_client(srv.ws_url))
            b2 = await stack.enter_async_context(ws_client(srv.ws_url))
            await a1.identify_client(r1, "alice")
            await b1.identify_client(r1, "bob")
            await a2.identify_client(r2, "alice")  # same id, other room: allowed
            await b2.identify_client(r2, "carol")
            assert await a1.recv() == {
                "type": "clientJoin",
                "clientId": "bob",
                "name": "bob",
                "moderator": False,
            }
            assert await a2.recv() == {
                "type": "clientJoin",
                "clientId": "carol",
                "name": "carol",
                "moderator": False,
            }
            sfu1, sfu2 = registry.sfus[r1], registry.sfus[r2]

            # A client handshake goes to its own room's SFU, with sender and roomId overwritten
            # (spoofed sender, foreign roomId).
            offer = {"type": "offer", "sdp": "v=0"}
            await a1.send(
                "handshake",
                {"type": "producer", "sender": "bob", "roomId": r2, "description": offer},
            )
            got = await sfu1.wait_for(lambda m: m.get("type") == "producer")
            assert got == {
                "type": "producer",
                "sender": "alice",
                "roomId": r1,
                "description": offer,
            }
            assert not any(m.get("type") == "producer" for m in sfu2.received)

            # The SFU answers: routed to the receiver in ITS room only.
            answer = {"type": "answer", "sdp": "v=0"}
            await sfu1.link.send(
                {
                    "action": "handshake",
                    "data": {
                        "type": "producer",
                        "sender": "x",
                        "receiver": "alice",
                        "description": answer,
                    },
                }
            )
            assert await a1.recv() == {
                "type": "producer",
                "sender": str(r1),
                "receiver": "alice",
                "roomId": r1,
                "description": answer,
            }
            await a2.expect_silence()
            # A receiver that exists only in another room is not found.
            await sfu1.link.send(
                {
                    "action": "handshake",
                    "data": {
                        "type": "consumer",
                        "receiver": "carol",
                        "remotePeerId": "alice",
                        "description": answer,
                    },
                }
            )
            error = await sfu1.wait_for(lambda m: m.get("type") == "error")
            assert error == {
                "type": "error",
                "action": "handshake",
                "status": 404,
                "message": "Receiver not found",
            }
            await b2.expect_silence()

            # Consumer answers from a client carry remotePeerId through.
            await b1.send(
                "handshake", {"type": "consumer", "remotePeerId": "alice", "description": answer}
            )
            got = await sfu1.wait_for(lambda m: m.get("type") == "consumer")
            assert got == {
                "type": "consumer",
                "sender": "bob",
                "roomId": r1,
                "remotePeerId": "alice",
                "description": answer,
            }


async def test_remote_sfu_token_and_routing(tmp_path: Path) -> None:
    registry = SfuRegistry(remote=1)
    config = make_config(tmp_path, workers={"token": "worker-secret"})
    async with running_server(config, registry) as srv:
        async with trio.open_nursery() as nursery:
            created: list[dict] = []

            async def create() -> None:
                created.append((await srv.http.put("/createRoom")).json())

            nursery.start_soon(create)
            room = await registry.next_remote()
            async with ws_client(srv.ws_url) as sfu:
                for token in [None, "", "wrong", 5]:
                    data = {"type": "sfu", "id": str(room)}
                    if token is not None:
                        data["token"] = token
                    await sfu.send("identify", data)
                    assert await sfu.recv() == {
                        "type": "error",
                        "action": "identify",
                        "status": 403,
                        "message": "Forbidden",
                    }
                await sfu.send(
                    "identify", {"type": "sfu", "id": str(room), "token": "worker-secret"}
                )
                identified = await sfu.recv()
                assert identified["type"] == "identified" and identified["roomId"] == room
                assert identified["id"] == str(room)
                assert await sfu.recv() == {"type": "roster", "clients": []}
                with trio.fail_after(5):
                    while not created:
                        await trio.sleep(0.01)
                assert created == [{"message": "Task started successfully!", "roomId": room}]
                r = await srv.http.patch("/claimRoom", json={"urlPath": "remote"})
                assert r.json()["roomId"] == room
                # A second SFU for the same room is refused.
                async with ws_client(srv.ws_url) as sfu2:
                    await sfu2.send(
                        "identify", {"type": "sfu", "id": str(room), "token": "worker-secret"}
                    )
                    assert await sfu2.recv() == {
                        "type": "error",
                        "action": "identify",
                        "status": 409,
                        "message": "Duplicate id",
                    }
                async with ws_client(srv.ws_url) as client:
                    await client.identify_client(room, "dave", "Dave")
                    assert await sfu.recv() == {
                        "type": "clientJoin",
                        "clientId": "dave",
                        "name": "Dave",
                        "moderator": False,
                    }
                    await client.send(
                        "handshake", {"type": "producer", "description": {"type": "offer"}}
                    )
                    assert await sfu.recv() == {
                        "type": "producer",
                        "sender": "dave",
                        "roomId": room,
                        "description": {"type": "offer"},
                    }
                    await sfu.send(
                        "handshake",
                        {"type": "producer", "receiver": "dave", "description": {"type": "answer"}},
                    )
                    assert await client.recv() == {
                        "type": "producer",
                        "receiver": "dave",
                        "sender": str(room),
                        "roomId": room,
                        "description": {"type": "answer"},
                    }
                # The client went away: the SFU is told.
                assert await sfu.recv() == {"type": "clientDisconnect", "clientId": "dave"}
            nursery.cancel_scope.cancel()


async def test_sfu_not_connected(tmp_path: Path) -> None:
    registry = SfuRegistry(remote=1)
    config = make_config(tmp_path, workers={"token": "t"})
    async with running_server(config, registry) as srv:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(srv.http.put, "/createRoom")
            room = await registry.next_remote()
            async with ws_client(srv.ws_url) as sfu, ws_client(srv.ws_url) as client:
                await sfu.send("identify", {"type": "sfu", "id": str(room), "token": "t"})
                await sfu.recv_type("identified")
                r = await srv.http.patch("/claimRoom", json={"urlPath": "erin"})
                assert r.json()["roomId"] == room
                await client.identify_client(room, "erin")
                await sfu.ws.aclose()
                assert await client.recv() == {"type": "sfuDisconnect", "roomId": room}
                await client.send("handshake", {"type": "producer"})
                assert await client.recv() == {
                    "type": "error",
                    "action": "handshake",
                    "status": 503,
                    "message": "SFU not connected, try again later",
                }
            nursery.cancel_scope.cancel()


async def test_disconnect_notices_roster_features_and_chat_history(tmp_path: Path) -> None:
    registry = SfuRegistry()
    async with running_server(make_config(tmp_path), registry) as srv:
        (room,) = await _rooms(srv, 1)
        sfu = registry.sfus[room]
        async with ws_client(srv.ws_url) as a, ws_client(srv.ws_url) as b:
            await a.identify_client(room, "a", "Ann")
            await b.send(
                "identify", {"type": "client", "id": "b", "roomId": room, "name": "  Bea  "}
            )
            assert (await b.recv())["type"] == "identified"
            assert await b.recv() == {
                "type": "roster",
                "clients": [
                    {
                        "id": "a",
                        "name": "Ann",
                        "features": {"audio": True, "video": True},
                        "moderator": False,
                    }
                ],
            }
            assert await b.recv() == {"type": "chatHistory", "messages": []}
            assert await a.recv() == {
                "type": "clientJoin",
                "clientId": "b",
                "name": "Bea",
                "moderator": False,
            }

            await a.send("features", {"audio": False, "video": True})
            assert await b.recv() == {
                "type": "features",
                "id": "a",
                "features": {"audio": False, "video": True},
            }
            await a.send("features", {"audio": "no"})
            assert await a.recv() == {
                "type": "error",
                "action": "features",
                "status": 400,
                "message": "Invalid features",
            }

            await a.send("chat", {"content": "hello"})
            for c in (a, b):
                chat = await c.recv()
                ts = chat.pop("ts")
                assert chat == {"type": "chat", "sender": "a", "name": "Ann", "content": "hello"}
                assert isinstance(ts, float)
            await b.send("chat", {"content": ""})
            assert await b.recv() == {
                "type": "error",
                "action": "chat",
                "status": 400,
                "message": "Invalid chat content",
            }

            await b.send("disconnect")
            assert await a.recv() == {"type": "clientDisconnect", "clientId": "b"}
            await sfu.wait_for(lambda m: m == {"type": "clientDisconnect", "clientId": "b"})
            # Explicit leave closes b's socket normally.
            try:
                with trio.fail_after(2):
                    await b.ws.get_message()
            except ConnectionClosed as exc:
                assert exc.reason.code == 1000
            async with ws_client(srv.ws_url) as late:
                await late.send("identify", {"type": "client", "id": "late", "roomId": room})
                await late.recv_type("identified")
                assert (await late.recv())["type"] == "roster"
                history = await late.recv()
                assert history["type"] == "chatHistory"
                assert [(m["sender"], m["name"], m["content"]) for m in history["messages"]] == [
                    ("a", "Ann", "hello")
                ]
        # Every connection row is gone once the sockets are (the room SFU's stays).
        with trio.fail_after(5):
            while srv.server.store.count_connections() != 1:  # type: ignore[union-attr]
                await trio.sleep(0.02)


async def test_oversize_frame_closes_1009(tmp_path: Path) -> None:
    config = make_config(tmp_path, limits={"max_message_bytes": 1000})
    async with running_server(config) as srv, ws_client(srv.ws_url) as c:
        await c.send_raw(json.dumps({"action": "chat", "data": {"content": "x" * 2000}}))
        try:
            with trio.fail_after(5):
                await c.ws.get_message()
            raise AssertionError("expected close")
        except ConnectionClosed as exc:
            assert exc.reason.code == 1009


async def test_peer_that_stops_reading_is_closed_1008(tmp_path: Path) -> None:
    config = make_config(tmp_path, limits={"send_queue": 8})
    async with running_server(config, SfuRegistry()) as srv:
        (room,) = await _rooms(srv, 1)
        async with (
            ws_client(srv.ws_url, message_queue_size=0) as lazy,
            ws_client(srv.ws_url) as talker,
        ):
            await lazy.send_identify(room, "lazy")
            await talker.identify_client(room, "talker")
            # The lazy peer never reads; the talker keeps broadcasting. Once the kernel buffers
            # are full, lazy's queue fills and the gateway closes it with 1008.
            closed = False
            with trio.fail_after(30):
                for _ in range(20000):
                    await talker.send("chat", {"content": "y" * 1900})
                    await talker.recv_type("chat")
                    if srv.server.gateway.client_count(room) == 1:  # type: ignore[union-attr]
                        closed = True
                        break
            assert closed
            assert srv.server.metrics.ws_closed.labels("1008")._value.get() == 1


def test_peer_queue_overflow_requests_close() -> None:
    peer = Peer("test", 2)
    peer.send({"n": 1})
    peer.send({"n": 2})
    assert peer.close_code is None
    peer.send({"n": 3})
    assert peer.close_code == 1008
    assert peer.close_requested.is_set()


async def test_room_events_from_the_sfu(tmp_path: Path) -> None:
    """The SFU's `room` frames: activeSpeaker is broadcast and remembered for newcomers until
    that speaker leaves; chat from a data channel is stored and broadcast; clients cannot send
    room events."""
    registry = SfuRegistry()
    async with running_server(make_config(tmp_path), registry) as srv:
        (room,) = await _rooms(srv, 1)
        sfu = registry.sfus[room]
        async with ws_client(srv.ws_url) as a, ws_client(srv.ws_url) as b:
            await a.identify_client(room, "a", "Ann")
            await b.identify_client(room, "b", "Bob")
            await a.recv_type("clientJoin")
            await sfu.link.send({"action": "room", "data": {"type": "activeSpeaker", "id": "b"}})
            assert await a.recv() == {"type": "activeSpeaker", "id": "b"}
            assert await b.recv() == {"type": "activeSpeaker", "id": "b"}
            await sfu.link.send(
                {"action": "room", "data": {"type": "chat", "sender": "a", "content": "hi"}}
            )
            chat = await b.recv()
            assert (chat["type"], chat["sender"], chat["name"], chat["content"]) == (
                "chat", "a", "Ann", "hi",
            )  # fmt: skip
            # The SFU hears the room's chat too (it relays it to data-channel users).
            await sfu.wait_for(lambda m: m.get("type") == "chat" and m["content"] == "hi")
            await b.send("chat", {"content": "from the web"})
            got = await sfu.wait_for(lambda m: m.get("content") == "from the web")
            assert (got["sender"], got["name"]) == ("b", "Bob")
            await a.recv_type("chat")
            await b.recv_type("chat")
            # A data-channel user's features, reported by the SFU, reach the web clients.
            await sfu.link.send(
                {
                    "action": "room",
                    "data": {
                        "type": "features",
                        "id": "a",
                        "features": {"audio": False, "video": True},
                    },
                }
            )
            assert await b.recv() == {
                "type": "features", "id": "a", "features": {"audio": False, "video": True},
            }  # fmt: skip
            await a.send("room", {"type": "activeSpeaker", "id": "a"})
            assert await a.recv_type("error") == {
                "type": "error",
                "action": "room",
                "status": 403,
                "message": "Forbidden",
            }
            async with ws_client(srv.ws_url) as c:
                await c.identify_client(room, "c")
                assert await c.recv() == {"type": "activeSpeaker", "id": "b"}
            await b.aclose()
            await a.recv_type("clientDisconnect")
            async with ws_client(srv.ws_url) as d:
                identified = await d.identify_client(room, "d")
                assert identified["type"] == "identified"
                await d.expect_silence(0.2)  # no activeSpeaker for a departed speaker


async def test_preferences_and_layers_relay(tmp_path: Path) -> None:
    """`preferences` (client -> its room SFU, sender set by the gateway) and `layers` (SFU ->
    one publisher), docs/PROTOCOL.md sections 3 and 4: exact frames, and bad ones refused."""
    registry = SfuRegistry()
    async with running_server(make_config(tmp_path), registry) as srv:
        (room,) = await _rooms(srv, 1)
        sfu = registry.sfus[room]
        async with ws_client(srv.ws_url) as a, ws_client(srv.ws_url) as b:
            await a.identify_client(room, "a", "Ann")
            await b.identify_client(room, "b", "Bob")
            await a.recv_type("clientJoin")
            await a.send(
                "preferences", {"remotePeerId": "b", "maxHeight": 360, "paused": False,
                                "sender": "b"},  # a forged sender is ignored
            )  # fmt: skip
            got = await sfu.wait_for(lambda m: m.get("type") == "preferences")
            assert got == {
                "type": "preferences", "sender": "a", "roomId": room, "remotePeerId": "b",
                "maxHeight": 360, "paused": False,
            }  # fmt: skip
            bad = [
                {"remotePeerId": "b", "maxHeight": 360},
                {"remotePeerId": "b", "maxHeight": -1, "paused": False},
                {"remotePeerId": "b", "maxHeight": 10**9, "paused": False},
                {"remotePeerId": "b", "maxHeight": True, "paused": False},
                {"remotePeerId": "b", "maxHeight": 360.5, "paused": False},
                {"remotePeerId": "a", "maxHeight": 360, "paused": False},
                {"remotePeerId": "nobody", "maxHeight": 360, "paused": False},
                {"remotePeerId": 7, "maxHeight": 360, "paused": "no"},
            ]
            for data in bad:
                await a.send("preferences", data)
                assert await a.recv_type("error") == {
                    "type": "error", "action": "preferences", "status": 400,
                    "message": "Invalid preferences",
                }  # fmt: skip
            await sfu.link.send(
                {"action": "room",
                 "data": {"type": "layers", "receiver": "b", "mid": "1", "active": ["q", "h"]}}
            )  # fmt: skip
            assert await b.recv() == {"type": "layers", "mid": "1", "active": ["q", "h"]}
            await a.expect_silence(0.2)  # only the publisher hears it
