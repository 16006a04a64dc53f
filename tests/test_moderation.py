"""Room access (docs/PROTOCOL.md sections 2 and 3): passwords, moderator keys, moderate.

Real server (in-process `Server`, real sockets, real SQLite), real WebSocket clients; every
status and message asserted byte for byte.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed

from arbiter.credentials import verify_secret
from arbiter.testing import Running, SfuRegistry, make_config, running_server, ws_client
from arbiter.testing.signaling import WsClient


def error(action: str, status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "action": action, "status": status, "message": message}


async def claim(srv: Running, url_path: str, password: str | None = None) -> tuple[int, str]:
    r = await srv.http.put("/createRoom")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = {"urlPath": url_path}
    if password is not None:
        body["password"] = password
    r = await srv.http.patch("/claimRoom", json=body)
    assert r.status_code == 200, r.text
    return r.json()["roomId"], r.json()["moderatorKey"]


async def identify(ws: WsClient, room: int, peer_id: str, **extra: Any) -> dict[str, Any]:
    await ws.send("identify", {"type": "client", "id": peer_id, "roomId": room, **extra})
    return await ws.recv()


async def joined(ws: WsClient, room: int, peer_id: str, **extra: Any) -> dict[str, Any]:
    identified = await identify(ws, room, peer_id, **extra)
    assert identified["type"] == "identified", identified
    assert (await ws.recv())["type"] == "roster"
    assert (await ws.recv())["type"] == "chatHistory"
    return identified


async def test_passwords_and_keys(tmp_path: Path) -> None:
    registry = SfuRegistry()
    async with running_server(make_config(tmp_path), registry) as srv:
        room, key = await claim(srv, "secret-meeting", password="hunter2")
        # getRoomId tells the browser to ask for a password; claimRoom again is idempotent
        # and hands out no key (and ignores a password).
        r = await srv.http.get("/getRoomId", params={"urlPath": "secret-meeting"})
        assert r.json()["passwordRequired"] is True
        for ignored in ("x", 5, ""):
            r = await srv.http.patch(
                "/claimRoom", json={"urlPath": "secret-meeting", "password": ignored}
            )
            assert (r.status_code, r.json()) == (200, {"roomId": room})
        for bad in (5, "", "x" * 129, ["a"]):
            r = await srv.http.patch("/claimRoom", json={"urlPath": "other", "password": bad})
            assert (r.status_code, r.json()) == (400, {"message": "Invalid password"}), bad
        async with ws_client(srv.ws_url) as c:
            assert await identify(c, room, "guest") == error("identify", 401, "Password required")
            assert await identify(c, room, "guest", password="") == error(
                "identify", 401, "Password required"
            )
            assert await identify(c, room, "guest", password="hunter3") == error(
                "identify", 403, "Wrong password"
            )
            assert await identify(c, room, "guest", password=12345) == error(
                "identify", 403, "Wrong password"
            )
            # A forged key is ignored: the password rules apply as if it were absent.
            assert await identify(c, room, "guest", moderatorKey=key[:-1] + "A") == error(
                "identify", 401, "Password required"
            )
            identified = await joined(c, room, "guest", password="hunter2", name="Guest")
            assert identified["moderator"] is False and identified["locked"] is False
        async with ws_client(srv.ws_url) as m:
            identified = await joined(m, room, "host", moderatorKey=key, name="Host")
            assert identified["moderator"] is True  # no password needed with the key
        # Only hashes are stored, never the secrets.
        db = sqlite3.connect(tmp_path / "arbiter.db")
        row = db.execute(
            "SELECT password_hash, moderator_key_hash FROM rooms WHERE id = ?", (room,)
        ).fetchone()
        db.close()
        assert "hunter2" not in row[0] and key not in row[1]
        assert row[0].startswith("scrypt$16384$8$1$") and verify_secret("hunter2", row[0])
        assert verify_secret(key, row[1]) and not verify_secret(key, row[0])


async def test_moderation_rules(tmp_path: Path) -> None:
    registry = SfuRegistry()
    async with running_server(make_config(tmp_path), registry) as srv:
        room, key = await claim(srv, "run-it")
        sfu = registry.sfus[room]
        async with (
            ws_client(srv.ws_url) as host,
            ws_client(srv.ws_url) as cohost,
            ws_client(srv.ws_url) as guest,
            ws_client(srv.ws_url) as other,
        ):
            await joined(host, room, "host", moderatorKey=key, name="Ana")
            await joined(cohost, room, "cohost", moderatorKey=key)
            assert await host.recv() == {
                "type": "clientJoin", "clientId": "cohost", "name": "cohost", "moderator": True,
            }  # fmt: skip
            await guest.send("identify", {"type": "client", "id": "guest", "roomId": room})
            assert (await guest.recv())["moderator"] is False
            roster = await guest.recv()
            assert [(c["id"], c["moderator"]) for c in roster["clients"]] == [
                ("host", True), ("cohost", True),
            ]  # fmt: skip
            await guest.recv()  # chatHistory
            await joined(other, room, "other")
            for ws in (host, cohost):
                await ws.recv_type("clientJoin")
                await ws.recv_type("clientJoin")
            await guest.recv_type("clientJoin")

            # Not a moderator.
            await guest.send("moderate", {"op": "kick", "target": "other"})
            assert await guest.recv() == error("moderate", 403, "Not a moderator")
            # Bad ops and targets.
            for data, status, message in [
                ({"op": "ban", "target": "guest"}, 400, "Invalid moderation op"),
                ({}, 400, "Invalid moderation op"),
                ({"op": "kick", "target": "host"}, 400, "Invalid moderation op"),  # self
                ({"op": "kick", "target": "nobody"}, 404, "Receiver not found"),
                ({"op": "mute"}, 404, "Receiver not found"),
                ({"op": "kick", "target": "cohost"}, 403, "Not allowed on a moderator"),
                ({"op": "mute", "target": "cohost"}, 403, "Not allowed on a moderator"),
                ({"op": "password", "password": ""}, 400, "Invalid password"),
                ({"op": "password", "password": 7}, 400, "Invalid password"),
                ({"op": "password"}, 400, "Invalid password"),
            ]:
                await host.send("moderate", data)
                assert await host.recv() == error("moderate", status, message), data
            # Mute: a request to the target only.
            await host.send("moderate", {"op": "mute", "target": "guest"})
            assert await guest.recv() == {"type": "muteRequest", "by": "host"}
            await other.expect_silence(0.1)
            # Lock: everyone is told; newcomers are refused, moderators are not.
            await host.send("moderate", {"op": "lock"})
            for ws in (host, cohost, guest, other):
                assert await ws.recv() == {
                    "type": "roomState", "locked": True, "passwordRequired": False, "by": "host",
                }  # fmt: skip
            async with ws_client(srv.ws_url) as late:
                assert await identify(late, room, "late") == error(
                    "identify", 403, "Room is locked"
                )
                assert (await joined(late, room, "late-mod", moderatorKey=key))["locked"] is True
            for ws in (host, cohost, guest, other):
                assert (await ws.recv_type("clientJoin"))["clientId"] == "late-mod"
            for ws in (host, cohost, guest, other):
                assert await ws.recv() == {"type": "clientDisconnect", "clientId": "late-mod"}
            # Kick: the target is told who, closed with 4003; the room and the SFU hear it;
            # it cannot come back while the room is locked.
            await host.send("moderate", {"op": "kick", "target": "other"})
            assert await other.recv_type("kicked") == {"type": "kicked", "by": "host"}
            with pytest.raises(ConnectionClosed) as closed:
                await other.recv()
            assert closed.value.reason.code == 4003
            assert await guest.recv_type("clientDisconnect") == {
                "type": "clientDisconnect", "clientId": "other",
            }  # fmt: skip
            await sfu.wait_for(lambda m: m == {"type": "clientDisconnect", "clientId": "other"})
            async with ws_client(srv.ws_url) as back:
                assert await identify(back, room, "other") == error(
                    "identify", 403, "Room is locked"
                )
            await host.send("moderate", {"op": "unlock"})
            assert (await guest.recv_type("roomState"))["locked"] is False
            # Password: set, then removed; roomState says so.
            await host.send("moderate", {"op": "password", "password": "s3cret"})
            assert await guest.recv_type("roomState") == {
                "type": "roomState", "locked": False, "passwordRequired": True, "by": "host",
            }  # fmt: skip
            async with ws_client(srv.ws_url) as late:
                assert await identify(late, room, "x") == error(
                    "identify", 401, "Password required"
                )
                await joined(late, room, "x", password="s3cret")
            await host.send("moderate", {"op": "password", "password": None})
            assert (await guest.recv_type("roomState"))["passwordRequired"] is False
            r = await srv.http.get("/getRoomId", params={"urlPath": "run-it"})
            assert r.json()["passwordRequired"] is False


async def test_access_survives_a_restart_and_an_empty_room_unlocks(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with running_server(config) as srv:
        room, key = await claim(srv, "durable", password="pw")
        async with ws_client(srv.ws_url) as host, ws_client(srv.ws_url) as guest:
            await joined(host, room, "host", moderatorKey=key)
            await joined(guest, room, "guest", password="pw")
            await host.send("moderate", {"op": "lock"})
            await guest.recv_type("roomState")
            # The lock is in SQLite: it survives a restart while people are inside.
            srv.server.shutdown()
    async with running_server(config) as srv:
        r = await srv.http.get("/getRoomId", params={"urlPath": "durable"})
        assert r.json()["passwordRequired"] is True
        async with ws_client(srv.ws_url) as c:
            assert await identify(c, room, "guest", password="pw") == error(
                "identify", 403, "Room is locked"
            )
            identified = await joined(c, room, "host", moderatorKey=key)
            assert identified["moderator"] is True and identified["locked"] is True
        # The last one left: the room unlocks (nobody would be left to unlock it).
        with trio.fail_after(5):
            while True:
                async with ws_client(srv.ws_url) as c:
                    first = await identify(c, room, "guest", password="pw")
                    if first["type"] == "identified":
                        break
                await trio.sleep(0.05)
        async with ws_client(srv.ws_url) as c:
            assert await identify(c, room, "g2", password="nope") == error(
                "identify", 403, "Wrong password"
            )


async def test_admin_routes_and_cli(tmp_path: Path) -> None:
    async with running_server(make_config(tmp_path)) as srv:
        room, key = await claim(srv, "ops")
        r = await srv.http.get("/admin/rooms")
        assert r.status_code == 200
        (entry,) = [x for x in r.json()["rooms"] if x["roomId"] == room]
        assert entry == {
            "roomId": room, "urlPath": "ops", "status": "claimed", "locked": False,
            "passwordRequired": False, "participants": 0,
            "createdAt": entry["createdAt"], "claimedAt": entry["claimedAt"],
        }  # fmt: skip
        async with ws_client(srv.ws_url) as c:
            await joined(c, room, "c")
            # The CLI, in a thread, over the admin routes of this very server.
            from arbiter.cli import main

            def cli(*argv: str, stdin: str = "") -> int:
                import io
                import sys

                old = sys.stdin
                sys.stdin = io.StringIO(stdin)
                try:
                    return main(["rooms", *argv, "--server", srv.url])
                finally:
                    sys.stdin = old

            assert (
                await trio.to_thread.run_sync(lambda: cli("password", str(room), stdin="pw\n")) == 0
            )
            assert await c.recv_type("roomState") == {
                "type": "roomState", "locked": False, "passwordRequired": True,
            }  # fmt: skip
            r = await srv.http.get("/getRoomId", params={"urlPath": "ops"})
            assert r.json()["passwordRequired"] is True
            assert await trio.to_thread.run_sync(lambda: cli("password", str(room), "--clear")) == 0
            assert (await c.recv_type("roomState"))["passwordRequired"] is False
            assert await trio.to_thread.run_sync(lambda: cli("close", str(room))) == 0
            assert await c.recv() == {"type": "roomClosed", "roomId": room}
            with pytest.raises(ConnectionClosed) as closed:
                await c.recv()
            assert (closed.value.reason.code, closed.value.reason.reason) == (1000, "Room closed")
        assert await trio.to_thread.run_sync(lambda: cli("close", str(room))) == 1
        r = await srv.http.put(f"/admin/rooms/{room}/password", json={"password": "x"})
        assert (r.status_code, r.json()) == (404, {"message": "Room not found"})
        r = await srv.http.put("/admin/rooms/1/password", json={"password": 5})
        assert (r.status_code, r.json()) == (400, {"message": "Invalid password"})
    # Other addresses do not even see the routes.
    config = make_config(tmp_path / "b", http={"admin_allow": ["10.9.9.9"]})
    async with running_server(config) as srv:
        for method, path in [
            ("GET", "/admin/rooms"),
            ("POST", f"/admin/rooms/{room}/close"),
            ("PUT", f"/admin/rooms/{room}/password"),
        ]:
            r = await srv.http.request(method, path, json={"password": None})
            assert (r.status_code, r.json()) == (404, {"message": "Not found"}), path


async def test_password_guessing_is_budgeted(tmp_path: Path) -> None:
    """Wrong passwords are refused identifies: past the per-address budget, 429 and 1008,
    and the right password is not even checked any more."""
    config = make_config(tmp_path, limits={"failed_identifies_per_minute": 5})
    async with running_server(config) as srv:
        room, _ = await claim(srv, "guarded", password="correct horse")
        async with ws_client(srv.ws_url) as c:
            for n in range(5):
                assert await identify(c, room, "g", password=f"guess{n}") == error(
                    "identify", 403, "Wrong password"
                )
            assert await identify(c, room, "g", password="correct horse") == error(
                "identify", 429, "Too many requests"
            )
            with pytest.raises(ConnectionClosed) as closed:
                await c.recv()
            assert closed.value.reason.code == 1008
