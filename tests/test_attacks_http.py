"""Issue 9's attacks on the room API and the gateway, performed against `arbiter serve`.

Each test runs the real server as a child process (`arbiter.testing.serve.served`), attacks it
over real sockets the way the issue describes, and asserts the documented refusal (status codes
and messages byte for byte, docs/PROTOCOL.md) and that the victim loses nothing. Addresses are
told apart through `limits.trusted_proxies = ["127.0.0.1"]` and X-Forwarded-For, as behind a
reverse proxy; every budget applies to loopback clients too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionRejected

from arbiter.testing.serve import Served, served
from arbiter.testing.signaling import ws_client

PROXIED = """
[limits]
trusted_proxies = ["127.0.0.1"]
"""


def xff(addr: str) -> dict[str, str]:
    return {"X-Forwarded-For": addr}


def ws_from(addr: str) -> dict[str, Any]:
    return {"extra_headers": [("X-Forwarded-For", addr)]}


def error(action: str | None, status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "action": action, "status": status, "message": message}


async def claim(srv: Served, url_path: str, addr: str = "198.51.100.1") -> int:
    """A room for `url_path` as the web client gets one: claim, or create then claim."""
    r = await srv.http.patch("/claimRoom", json={"urlPath": url_path}, headers=xff(addr))
    if r.status_code == 404:
        assert (await srv.http.put("/createRoom", headers=xff(addr))).status_code == 200
        r = await srv.http.patch("/claimRoom", json={"urlPath": url_path}, headers=xff(addr))
    assert r.status_code == 200, r.text
    return int(r.json()["roomId"])


# -- item 1: joining a call by guessing its number --------------------------------------------


async def test_guessing_room_ids_finds_nothing_and_is_cut_off(tmp_path: Path) -> None:
    async with served(tmp_path, PROXIED) as srv:
        room = await claim(srv, "board-meeting", "198.51.100.1")
        ids = [room] + [await claim(srv, f"other-{i}", "198.51.100.1") for i in range(3)]
        # Random, not sequential, and JavaScript-safe (docs/PROTOCOL.md section 2).
        assert all(2**32 <= i < 2**53 for i in ids)
        assert sorted(ids) != list(range(min(ids), min(ids) + 4))
        async with ws_client(srv.ws_url, **ws_from("198.51.100.1")) as victim:
            await victim.identify_client(room, "victim")
            await victim.send("chat", {"content": "the numbers for Q3"})
            await victim.recv_type("chat")
            async with ws_client(srv.ws_url, **ws_from("203.0.113.66")) as attacker:
                # The old attack: small integers and neighbours of a known id.
                guesses = [1, 2, 3, room - 1, room + 1, *range(4, 19)]
                for guess in guesses[:20]:
                    await attacker.send_identify(guess, "eve")
                    assert await attacker.recv() == error("identify", 404, "Room not found")
                # Past 20 refusals a minute: 429 and the socket is closed (1008), even for the
                # right id: an address out of budget is not evaluated at all.
                await attacker.send_identify(room, "eve")
                assert await attacker.recv() == error("identify", 429, "Too many requests")
                reason = await attacker.drain()
                assert (reason.code, reason.reason) == (1008, "Too many requests")
            async with ws_client(srv.ws_url, **ws_from("203.0.113.66")) as again:
                await again.send_identify(room, "eve")
                assert await again.recv() == error("identify", 429, "Too many requests")
            # The victim heard nothing of it: no join, no leave.
            await victim.expect_silence(0.3)
        assert await srv.metric("arbiter_identify_refused_budget_total") == 2


async def test_idle_pool_rooms_cannot_be_entered_to_wait_for_a_claim(tmp_path: Path) -> None:
    async with served(tmp_path, PROXIED + "[rooms]\nidle_pool = 0\n") as srv:
        # The attacker starts an unclaimed room and learns its id from createRoom.
        r = await srv.http.put("/createRoom", headers=xff("203.0.113.66"))
        pooled = r.json()["roomId"]
        async with ws_client(srv.ws_url, **ws_from("203.0.113.66")) as attacker:
            await attacker.send_identify(pooled, "lurker")
            assert await attacker.recv() == error("identify", 404, "Room not found")
            # The next visitor of a new URL gets exactly that room ...
            assert await claim(srv, "new-call", "198.51.100.1") == pooled
            # ... and the lurker was never in it: its roster is the victim alone.
            async with ws_client(srv.ws_url, **ws_from("198.51.100.1")) as victim:
                await victim.send_identify(pooled, "victim")
                assert (await victim.recv())["type"] == "identified"
                assert await victim.recv() == {"type": "roster", "clients": []}
            await attacker.expect_silence(0.2)


# -- item 2: any web page driving a visitor's browser ------------------------------------------


async def test_foreign_origins_are_refused_on_the_api_and_the_websocket(tmp_path: Path) -> None:
    async with served(tmp_path, "[rooms]\nidle_pool = 0\n") as srv:
        evil = {"Origin": "https://evil.example"}
        host = srv.url.removeprefix("http://")
        # The WebSocket upgrade: 403 before accept.
        with pytest.raises(ConnectionRejected) as rejected:
            async with ws_client(srv.ws_url, extra_headers=list(evil.items())):
                pass
        assert rejected.value.status_code == 403
        # The API: 403, and no Access-Control-Allow-Origin for the browser to act on.
        for method, path in [
            ("GET", "/getRoomId?urlPath=x"),
            ("PUT", "/createRoom"),
            ("POST", "/createRoom"),
            ("PATCH", "/claimRoom"),
            ("OPTIONS", "/claimRoom"),
            ("GET", "/config"),
        ]:
            r = await srv.http.request(method, path, headers=evil)
            assert (r.status_code, r.json()) == (403, {"message": "Origin not allowed"}), path
            assert "access-control-allow-origin" not in r.headers
        # No room was created by the refused POST (a "simple" request a browser sends blind).
        assert srv.query("SELECT count(*) FROM rooms") == [(0,)]
        # This server's own pages work: same origin.
        same = {"Origin": f"http://{host}"}
        r = await srv.http.get("/getRoomId", params={"urlPath": "x"}, headers=same)
        assert (r.status_code, r.json()) == (404, {"message": "Room not found"})
        assert "access-control-allow-origin" not in r.headers
        async with ws_client(srv.ws_url, extra_headers=list(same.items())) as ok:
            await ok.send("identify", {"type": "client", "id": "a", "roomId": 5})
            assert await ok.recv() == error("identify", 404, "Room not found")
        assert await srv.metric("arbiter_origin_refused_total") == 7


async def test_listed_origins_get_cors_one_by_one(tmp_path: Path) -> None:
    toml = '[http]\nallowed_origins = ["https://app.example"]\n'
    async with served(tmp_path, toml) as srv:
        r = await srv.http.options(
            "/claimRoom",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "PATCH"},
        )
        assert r.status_code == 204
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        assert r.headers["vary"] == "Origin"
        assert "PATCH" in r.headers["access-control-allow-methods"]
        r = await srv.http.get("/getRoomId?urlPath=x", headers={"Origin": "https://b.example"})
        assert r.status_code == 403
        async with ws_client(srv.ws_url, extra_headers=[("Origin", "https://app.example")]):
            pass


# -- item 3: one address taking every room ----------------------------------------------------


async def test_one_address_cannot_take_every_room(tmp_path: Path) -> None:
    toml = PROXIED + "rooms_per_address = 10\ncreate_room_per_minute = 30\n"
    toml += "[rooms]\nidle_pool = 2\nmax_rooms = 40\nunjoined_timeout = 2.0\n"
    async with served(tmp_path, toml) as srv:
        squatter = xff("203.0.113.66")
        outcomes: dict[int, int] = {}
        t0 = time.monotonic()
        for i in range(92):
            r = await srv.http.patch("/claimRoom", json={"urlPath": f"grab-{i}"}, headers=squatter)
            if r.status_code == 404:
                r = await srv.http.put("/createRoom", headers=squatter)
            outcomes[r.status_code] = outcomes.get(r.status_code, 0) + 1
        assert time.monotonic() - t0 < 60
        held = srv.query(
            "SELECT count(*) FROM rooms WHERE status = 'claimed' AND url_path LIKE 'grab-%'"
        )[0][0]
        assert held <= 10
        assert outcomes.get(429, 0) >= 80
        r = await srv.http.patch("/claimRoom", json={"urlPath": "grab-x"}, headers=squatter)
        assert (r.status_code, r.json()) == (429, {"message": "Too many requests"})
        assert int(r.headers["Retry-After"]) >= 1
        # A newcomer from another address still gets a room at once.
        assert await claim(srv, "our-standup", "198.51.100.1") > 0
        # Claimed names nobody joins close after unjoined_timeout: the squat costs the
        # squatter its budget, not the server an hour per name.
        with trio.fail_after(15):
            while srv.query(
                "SELECT count(*) FROM rooms WHERE status = 'claimed' AND url_path LIKE 'grab-%'"
            )[0][0]:
                await trio.sleep(0.2)


# -- item 9: slow bodies and silent sockets ---------------------------------------------------


async def test_slow_body_gets_408_and_silent_socket_is_closed(tmp_path: Path) -> None:
    toml = "[limits]\nbody_timeout = 1.0\nidentify_timeout = 1.0\n"
    async with served(tmp_path, toml) as srv:
        host, port = srv.url.removeprefix("http://").split(":")
        stream = await trio.open_tcp_stream(host, int(port))
        request = (
            f"PATCH /claimRoom HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        )
        await stream.send_all(request.encode())
        started = time.monotonic()
        response = b""
        with trio.fail_after(10):
            while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
                chunk = await stream.receive_some(4096)
                if not chunk:
                    break
                response += chunk
        await stream.aclose()
        assert response.startswith(b"HTTP/1.1 408"), response[:80]
        assert response.split(b"\r\n\r\n", 1)[1] == b'{"message":"Request body timeout"}'
        assert time.monotonic() - started < 5
        # A WebSocket that never identifies is closed after identify_timeout.
        async with ws_client(srv.ws_url) as silent:
            with trio.fail_after(5):
                reason = await silent.drain()
        assert (reason.code, reason.reason) == (1008, "Identify timeout")
        # The server is fine, and nothing went to its log as an error: /health answers.
        assert (await srv.http.get("/health")).status_code == 200


# -- item 11: an open TURN relay --------------------------------------------------------------


async def test_turn_credentials_only_for_identified_clients(tmp_path: Path) -> None:
    toml = (
        '[ice]\nservers = ["stun:stun.example.org:3478", "turn:turn.example.org:3478"]\n'
        'turn_secret = "coturn-secret"\n'
    )
    async with served(tmp_path, toml) as srv:
        body = (await srv.http.get("/config")).json()
        assert body["iceServers"] == [
            {"urls": "stun:stun.example.org:3478"},
            {"urls": "turn:turn.example.org:3478"},
        ]
        room = await claim(srv, "turn-test")
        async with ws_client(srv.ws_url) as c:
            await c.send_identify(room, "alice")
            identified = await c.recv()
        stun, turn = identified["iceServers"]
        assert stun == {"urls": "stun:stun.example.org:3478"}
        expiry, who = turn["username"].split(":")
        assert who == identified["connectionId"]
        assert 3590 <= int(expiry) - time.time() <= 3610  # ice.turn_ttl defaults to an hour
        key = hmac.new(b"coturn-secret", turn["username"].encode(), hashlib.sha1).digest()
        assert turn["credential"] == base64.b64encode(key).decode()


# -- item 12: exposure ------------------------------------------------------------------------


async def test_metrics_are_private_and_pages_carry_csp(tmp_path: Path) -> None:
    async with served(tmp_path, '[http]\nmetrics_allow = ["10.0.0.0/8"]\n') as srv:
        r = await srv.http.get("/metrics")
        assert (r.status_code, r.json()) == (404, {"message": "Not found"})
        r = await srv.http.get("/some-room")
        host = srv.url.removeprefix("http://")
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert f"connect-src 'self' ws://{host} wss://{host}" in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["referrer-policy"] == "no-referrer"
        assert r.headers["x-frame-options"] == "DENY"
    async with served(tmp_path, name="default") as srv:
        assert (await srv.http.get("/metrics")).status_code == 200  # loopback by default


# -- item 13: unbounded personal data ---------------------------------------------------------


async def test_chat_is_bounded_per_room_and_deleted_with_the_room(tmp_path: Path) -> None:
    toml = (
        "[limits]\nchat_rows_per_room = 40\nchat_bytes_per_room = 20000\n"
        "chat_per_second = 1000.0\nchat_burst = 1000\nsend_queue = 1024\n"
        "[rooms]\nidle_pool = 0\nunjoined_timeout = 1.0\n"
    )
    async with served(tmp_path, toml) as srv:
        room = await claim(srv, "chatty")
        sent = 0

        async def writer(n: int) -> None:
            nonlocal sent
            async with ws_client(srv.ws_url) as c, trio.open_nursery() as inner:
                await c.identify_client(room, f"w{n}", "x" * 64)
                inner.start_soon(c.drain)  # the room's broadcasts
                for _ in range(60):
                    await c.send("chat", {"content": "y" * 1999})
                    sent += 1
                await trio.sleep(1.0)  # stored by now
                inner.cancel_scope.cancel()

        async with trio.open_nursery() as nursery:
            for n in range(8):
                nursery.start_soon(writer, n)
        assert sent == 480  # 480 x 2 KB offered: about 1 MB
        rows, size = srv.query(
            "SELECT count(*), sum(length(content) + length(name) + length(sender)) FROM chat"
            " WHERE room_id = ?",
            (room,),
        )[0]
        assert 0 < rows <= 40 and size <= 20000
        # Everyone left and nobody's media ever came up: the room closes, its chat goes.
        with trio.fail_after(10):
            while srv.query("SELECT count(*) FROM chat WHERE room_id = ?", (room,))[0][0]:
                await trio.sleep(0.2)
        assert srv.query("SELECT status FROM rooms WHERE id = ?", (room,)) == [("closed",)]


async def test_a_chat_flood_is_refused_and_never_disconnects_the_room(tmp_path: Path) -> None:
    async with served(tmp_path) as srv:
        room = await claim(srv, "flooded")
        async with ws_client(srv.ws_url) as victim, ws_client(srv.ws_url) as flooder:
            await victim.identify_client(room, "victim")
            await flooder.identify_client(room, "flooder")
            await victim.recv_type("clientJoin")
            for _ in range(150):  # within the connection's message budget (burst 200)
                await flooder.send("chat", {"content": "z" * 1999})
            answers: dict[str, int] = {}
            for _ in range(150):
                m = await flooder.recv()
                key = m["type"] if m["type"] == "chat" else f"{m['status']} {m['message']}"
                answers[key] = answers.get(key, 0) + 1
            # limits.chat_burst (10) stored and sent; the rest refused.
            assert answers == {"chat": 10, "429 Too many messages": 140}
            for _ in range(10):
                assert (await victim.recv())["type"] == "chat"
            await victim.expect_silence(0.3)
            assert victim.closed is None
        assert srv.query("SELECT count(*) FROM chat WHERE room_id = ?", (room,)) == [(10,)]


# -- item 14: scanning room names -------------------------------------------------------------


async def test_room_name_scans_are_cut_off(tmp_path: Path) -> None:
    async with served(tmp_path, PROXIED + "lookups_per_minute = 60\n") as srv:
        await claim(srv, "planted-room-7", "198.51.100.1")
        scanner = xff("203.0.113.66")
        statuses = []
        for n in range(100):
            r = await srv.http.get("/getRoomId", params={"urlPath": f"room-{n}"}, headers=scanner)
            statuses.append(r.status_code)
        assert statuses[:60] == [404] * 60
        assert set(statuses[60:]) == {429}
        r = await srv.http.get("/getRoomId", params={"urlPath": "planted-room-7"}, headers=scanner)
        assert (r.status_code, r.json()) == (429, {"message": "Too many requests"})
        assert int(r.headers["Retry-After"]) >= 1
        # Others are unaffected, and hits do not cost the budget.
        r = await srv.http.get(
            "/getRoomId", params={"urlPath": "planted-room-7"}, headers=xff("198.51.100.2")
        )
        assert r.status_code == 200 and r.json()["urlPath"] == "planted-room-7"
