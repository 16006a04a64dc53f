"""Rate limits (README "Decisions"): frames per WebSocket connection and createRoom per address.

Real server on loopback, real WebSockets and HTTP; each test sets its own small limits so the
exact sequence of answers is known.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed

from arbiter.limits import AddressLimiter, client_key_untrusted
from arbiter.protocol import TokenBucket
from arbiter.testing import SfuRegistry, make_config, new_room, running_server, ws_client

TOO_MANY = {"type": "error", "action": "chat", "status": 429, "message": "Too many messages"}


def test_token_bucket_refills_at_rate_up_to_burst() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=100.0)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.wait_time(100.0) == pytest.approx(0.5)
    assert bucket.take(100.25) is False  # half a token
    assert bucket.take(100.5) is True
    assert bucket.take(200.0) and bucket.take(200.0) and bucket.take(200.0)  # capped at burst
    assert bucket.take(200.0) is False
    assert bucket.full(201.5) is True


def test_client_key() -> None:
    assert client_key_untrusted("203.0.113.7", None, []) == "203.0.113.7"
    # X-Forwarded-For is believed only from a trusted proxy, and only its last entry.
    assert client_key_untrusted("203.0.113.7", "1.1.1.1", []) == "203.0.113.7"
    assert client_key_untrusted("127.0.0.1", "6.6.6.6, 1.1.1.1", ["127.0.0.1"]) == "1.1.1.1"
    # IPv6: one /64 is one client; IPv4-mapped addresses are the IPv4 address.
    assert client_key_untrusted("2001:db8:1:2:aaaa::1", None, []) == "2001:db8:1:2::/64"
    assert client_key_untrusted("2001:db8:1:2:bbbb::9", None, []) == "2001:db8:1:2::/64"
    assert client_key_untrusted("::ffff:198.51.100.1", None, []) == "198.51.100.1"
    assert client_key_untrusted("fe80::1%eth0", None, []) == "fe80::/64"
    assert client_key_untrusted(None, None, []) == ""
    assert client_key_untrusted("not an ip" * 20, None, []) == ("not an ip" * 20)[:64]


def test_address_limiter_forgets_full_buckets_when_the_table_is_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("arbiter.limits.MAX_TRACKED_ADDRESSES", 3)
    limiter = AddressLimiter(per_minute=60)
    for key in ("a", "b", "c"):
        assert limiter.retry_after(key, 0.0) == 0
    # A minute later every bucket is full again: the fourth address replaces them all.
    assert limiter.retry_after("d", 60.0) == 0
    assert set(limiter.buckets) == {"d"}
    assert AddressLimiter(per_minute=0).retry_after("x", 0.0) == 0  # 0 disables


async def test_frames_over_the_limit_get_429_and_the_connection_survives(tmp_path: Path) -> None:
    config = make_config(tmp_path, limits={"messages_per_second": 5.0, "message_burst": 3})
    async with running_server(config, SfuRegistry()) as srv:
        room = await new_room(srv, "limited")
        async with ws_client(srv.ws_url) as a, ws_client(srv.ws_url) as b:
            await b.identify_client(room, "b")  # b's own bucket: unaffected by a's frames
            await a.identify_client(room, "a")  # token 1
            await a.send("chat", {"content": "one"})  # token 2
            await a.send("chat", {"content": "two"})  # token 3
            await a.send("chat", {"content": "dropped"})  # no token: refused, not relayed
            await a.send_raw(b"\x00binary")  # every frame counts, valid or not
            for content in ("one", "two"):
                assert (await a.recv())["content"] == content
            assert await a.recv() == TOO_MANY
            assert await a.recv() == {**TOO_MANY, "action": None}
            await trio.sleep(0.5)  # 2.5 tokens back
            await a.send("chat", {"content": "three"})
            assert (await a.recv())["content"] == "three"
            seen = [(await b.recv_type("chat"))["content"] for _ in range(3)]
            assert seen == ["one", "two", "three"]
            store = srv.server.store
            assert store is not None
            assert [m.content for m in store.recent_chat(room, 10)] == ["one", "two", "three"]


async def test_a_flood_is_closed_1008_after_max_refused(tmp_path: Path) -> None:
    # Refill so slow (one token per 1000 s) that the sequence is exact.
    limits = {"messages_per_second": 0.001, "message_burst": 5, "max_refused_messages": 10}
    async with running_server(make_config(tmp_path, limits=limits), SfuRegistry()) as srv:
        room = await new_room(srv, "flood")
        async with ws_client(srv.ws_url) as c:
            await c.identify_client(room, "flooder")  # 1 token
            # 4 accepted + 10 refused. (Sending more than the server reads before it closes would
            # make its kernel answer with RST, which discards what this side has not read yet.)
            for i in range(14):
                await c.send("chat", {"content": f"m{i}"})
            chats, refusals = [], 0
            with pytest.raises(ConnectionClosed) as closed:
                with trio.fail_after(5):
                    while True:
                        message = await c.recv()
                        if message["type"] == "chat":
                            chats.append(message["content"])
                        else:
                            assert message == TOO_MANY
                            refusals += 1
            assert chats == ["m0", "m1", "m2", "m3"]
            # Every refusal up to and including the one that closed it is delivered first.
            assert refusals == 10
            assert closed.value.reason.code == 1008
            assert closed.value.reason.reason == "Too many messages"
        assert srv.server.metrics.ws_closed.labels("1008")._value.get() == 1
        assert (await srv.http.get("/health")).status_code == 200
        async with ws_client(srv.ws_url) as fresh:  # a fresh connection has a fresh bucket
            await fresh.identify_client(room, "flooder")


async def test_max_refused_zero_never_closes(tmp_path: Path) -> None:
    limits = {"messages_per_second": 0.001, "message_burst": 1, "max_refused_messages": 0}
    async with running_server(make_config(tmp_path, limits=limits)) as srv:
        async with ws_client(srv.ws_url) as c:
            await c.send("fly")
            assert (await c.recv())["message"] == "Unknown action"
            for _ in range(300):
                await c.send("chat", {"content": "x"})
            for _ in range(300):
                assert await c.recv() == TOO_MANY
            assert not c.ws.closed


async def test_identified_remote_sfu_is_exempt_but_not_before_identify(tmp_path: Path) -> None:
    registry = SfuRegistry(remote=1)
    config = make_config(
        tmp_path,
        workers={"token": "secret"},
        limits={"messages_per_second": 0.001, "message_burst": 3},
    )
    async with running_server(config, registry) as srv, trio.open_nursery() as nursery:
        nursery.start_soon(srv.http.put, "/createRoom")
        room = await registry.next_remote()
        sid = str(room)
        async with ws_client(srv.ws_url) as guesser:
            # Unidentified, a would-be SFU is limited like anyone: 3 guesses, then a 429 even
            # for the right token.
            for _ in range(3):
                await guesser.send("identify", {"type": "sfu", "id": sid, "token": "guess"})
                assert (await guesser.recv())["message"] == "Forbidden"
            await guesser.send("identify", {"type": "sfu", "id": sid, "token": "secret"})
            assert await guesser.recv() == {
                "type": "error",
                "action": "identify",
                "status": 429,
                "message": "Too many messages",
            }
        async with ws_client(srv.ws_url) as sfu, ws_client(srv.ws_url) as client:
            await sfu.send("identify", {"type": "sfu", "id": sid, "token": "secret"})
            assert (await sfu.recv())["type"] == "identified"
            await sfu.recv_type("roster")
            r = await srv.http.patch("/claimRoom", json={"urlPath": "exempt"})
            assert r.json()["roomId"] == room
            await client.identify_client(room, "c")
            # Identified, it sends 100 offers (a big room's join) with no token left: all relayed.
            for n in range(100):
                await sfu.send(
                    "handshake",
                    {"type": "consumer", "receiver": "c", "remotePeerId": f"p{n}"},
                )
            for n in range(100):
                assert (await client.recv())["remotePeerId"] == f"p{n}"
        nursery.cancel_scope.cancel()


async def test_create_room_per_address(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        limits={"create_room_per_minute": 3, "trusted_proxies": ["127.0.0.1"]},
        rooms={"idle_pool": 0, "max_rooms": 20},
    )
    async with running_server(config, SfuRegistry()) as srv:
        for method in ("put", "post", "put"):
            r = await getattr(srv.http, method)("/createRoom")
            assert r.status_code == 200, r.text
        r = await srv.http.post("/createRoom")
        assert r.status_code == 429
        assert r.json() == {"message": "Too many requests"}
        assert r.headers["Retry-After"] == "20"  # one token per 20 s at 3 per minute
        assert r.headers["Content-Type"] == "application/json"
        # Behind the trusted proxy (127.0.0.1 here) each forwarded client has its own budget;
        # only the last X-Forwarded-For entry counts (the proxy appended it).
        for _ in range(3):
            r = await srv.http.put("/createRoom", headers={"X-Forwarded-For": "9.9.9.9, 10.0.0.5"})
            assert r.status_code == 200
        r = await srv.http.put("/createRoom", headers={"X-Forwarded-For": "8.8.8.8, 10.0.0.5"})
        assert r.status_code == 429 and r.json() == {"message": "Too many requests"}
        # Other routes are not limited, and the refused calls started no room.
        assert (await srv.http.get("/getRoomId", params={"urlPath": "x"})).status_code == 404
        health = (await srv.http.get("/health")).json()
        assert health["rooms"]["unclaimed"] == 6
        metrics = (await srv.http.get("/metrics")).text
        assert 'arbiter_http_requests_total{route="createRoom",status="429"} 2.0' in metrics


async def test_untrusted_forwarded_for_is_ignored(tmp_path: Path) -> None:
    config = make_config(tmp_path, limits={"create_room_per_minute": 1})
    async with running_server(config, SfuRegistry()) as srv:
        assert (await srv.http.put("/createRoom")).status_code == 200
        r = await srv.http.put("/createRoom", headers={"X-Forwarded-For": "1.2.3.4"})
        assert r.status_code == 429 and r.headers["Retry-After"] == "60"


async def test_defaults_leave_a_browser_join_alone(tmp_path: Path) -> None:
    """The default bucket (50/s, burst 200) fits a 16-person room's join with room to spare."""
    config = make_config(tmp_path)
    assert (config.limits.messages_per_second, config.limits.message_burst) == (50.0, 200)
    assert config.limits.max_refused_messages == 100
    async with running_server(config, SfuRegistry()) as srv:
        room = await new_room(srv, "busy")
        async with ws_client(srv.ws_url) as c:
            await c.identify_client(room, "joiner")
            # identify + producer offer + 15 consumer answers + a features frame, all at once,
            # and then a burst of 150 chats: nothing is refused.
            frames = [{"type": "producer", "description": {"type": "offer"}}]
            frames += [{"type": "consumer", "remotePeerId": f"p{n}"} for n in range(15)]
            for data in frames:
                await c.send("handshake", data)
            await c.send("features", {"audio": False, "video": True})
            for n in range(150):
                await c.send("chat", {"content": f"c{n}"})
            for n in range(150):
                assert (await c.recv())["content"] == f"c{n}"
