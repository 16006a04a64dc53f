"""Hostile WebSocket input against a real server (real room SFUs, real sockets, real SQLite).

Wrong types in every field of every action, frame-size boundaries, deep nesting, generated
frames (hypothesis), many connections from one client, the signaling security rules, and a call
in another room that must not lose a packet while all of that goes on.
"""

from __future__ import annotations

import json
import queue
import random
import threading
from collections.abc import Iterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from trio_websocket import ConnectionClosed

from arbiter.bench import engine, payloads
from arbiter.bench.arbiter_target import ArbiterTarget
from arbiter.bench.participant import join_call
from arbiter.sfu.dtls import Certificate
from arbiter.testing import (
    SfuRegistry,
    make_config,
    new_room,
    running_server,
    ws_client,
)
from arbiter.testing.hostile import (
    HostileSession,
    Tally,
    flood_once,
    random_frame,
    valid_frames,
    verdict,
)

ERR = "error"


def error(action: str | None, status: int, message: str) -> dict[str, Any]:
    return {"type": ERR, "action": action, "status": status, "message": message}


async def healthy(srv: Any, room: int, peer_id: str) -> None:
    """The server still serves: /health answers and a fresh client can identify."""
    r = await srv.http.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    async with ws_client(srv.ws_url) as fresh:
        await fresh.identify_client(room, peer_id)


BAD_VALUES: list[Any] = [None, True, 0, -1, 1.5, "", [], {}, ["client"], {"a": 1}]


def wrong_type_cases(room: int) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(action, data, exact error) for a wrong value in every field, before identify."""
    cases: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    ident = {"type": "client", "id": "w", "roomId": room, "name": "W"}
    for bad in BAD_VALUES:
        cases.append(
            (
                "identify",
                {**ident, "type": bad},
                error("identify", 400, "Missing valid type property"),
            )
        )
        cases.append(
            ("identify", {**ident, "roomId": bad}, error("identify", 404, "Room not found"))
        )
        if not isinstance(bad, int) or isinstance(bad, bool) or bad < 0:
            # ints are valid ids (sent as strings); -1 is "-1", a valid id too.
            pass
        if bad in (None, True, "", [], {}, ["client"], {"a": 1}):
            cases.append(
                (
                    "identify",
                    {**ident, "id": bad},
                    error("identify", 400, "Missing valid id property"),
                )
            )
        if bad not in (None, ""):
            cases.append(
                ("identify", {**ident, "name": bad}, error("identify", 400, "Invalid name"))
            )
        cases.append(
            (
                "identify",
                {"type": "sfu", "id": str(room), "token": bad},
                error("identify", 403, "Forbidden"),
            )
        )
        for action in ("handshake", "chat", "features"):
            cases.append(
                (
                    action,
                    {"type": bad, "content": bad, "audio": bad},
                    error(action, 400, "WebSocket Connection Not Found"),
                )
            )
    for room_id in (0, -5, 10**30, "1e3", " ", "0x1", "9" * 40, room + 1000):
        cases.append(
            ("identify", {**ident, "roomId": room_id}, error("identify", 404, "Room not found"))
        )
    for peer_id in ("x" * 129, "a\x00b", "\u202e\n", "\ud83d"[:0]):
        cases.append(
            (
                "identify",
                {**ident, "id": peer_id},
                error("identify", 400, "Missing valid id property"),
            )
        )
    cases.append(
        ("identify", {**ident, "name": "\x07bell"}, error("identify", 400, "Invalid name"))
    )
    return cases  # fmt: skip


def identified_cases() -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(action, data, exact error) for an identified client."""
    cases: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    for bad in BAD_VALUES + ["offer", "answer", "PRODUCER"]:
        cases.append(
            ("handshake", {"type": bad}, error("handshake", 400, "Invalid handshake type"))
        )
        if not isinstance(bad, str) or not bad.strip():
            cases.append(("chat", {"content": bad}, error("chat", 400, "Invalid chat content")))
        if isinstance(bad, bool):
            continue  # booleans are valid features
        invalid = error("features", 400, "Invalid features")
        cases.append(("features", {"audio": bad, "video": True}, invalid))
        cases.append(("features", {"audio": False, "video": bad}, invalid))
    cases.append(("chat", {"content": "x" * 2001}, error("chat", 400, "Invalid chat content")))
    cases.append(("chat", {"content": " \n\t "}, error("chat", 400, "Invalid chat content")))
    cases.append(("features", {"audio": 1, "video": 0}, error("features", 400, "Invalid features")))
    cases.append(
        (
            "identify",
            {"type": "client", "id": "z", "roomId": 1},
            error("identify", 409, "Already identified"),
        )
    )
    return cases  # fmt: skip


async def test_wrong_types_in_every_field_of_every_action(tmp_path: Path) -> None:
    async with running_server(make_config(tmp_path)) as srv:  # the real room SFU
        room = await new_room(srv, "types")
        async with ws_client(srv.ws_url) as c:
            for action, data, expected in wrong_type_cases(room):
                await c.send(action, data)
                print("CASE", action, data, flush=True)
                assert await c.recv() == expected, (action, data)
            # The frame envelope itself: data not an object, action not a known string.
            for data in ([], "x", 5, True):
                await c.send_raw(json.dumps({"action": "chat", "data": data}))
                assert await c.recv() == error("chat", 400, "data must be an object")
            for action in (None, 5, ["identify"], {"a": 1}):
                await c.send_raw(json.dumps({"action": action}))
                assert await c.recv() == error(None, 400, "Unknown action")
            for action in ("IDENTIFY", "identify ", "chat\x00", "x" * 200):
                await c.send_raw(json.dumps({"action": action}))
                assert await c.recv() == error(action[:64], 400, "Unknown action")
            # Not JSON as a browser understands it: NaN, Infinity, 1e400, lone surrogates.
            for raw in (
                '{"action":"chat","data":{"content":NaN}}',
                '{"action":"chat","data":{"content":-Infinity}}',
                '{"action":"features","data":{"audio":1e400}}',
                '{"action":"chat","data":{"content":"\\ud800"}}',
                '{"action":"chat","data":{"\\udfff":"x"}}',
                '{"action":"chat"',
                "",
                "\ufeff{}",
            ):
                await c.send_raw(raw)
                got = await c.recv()
                assert got["status"] == 400 and got["message"] == "Invalid JSON", raw
            # Still alive: the same connection identifies, then every action with wrong types.
            await c.identify_client(room, "w")
            for action, data, expected in identified_cases():
                await c.send(action, data)
                print("CASE", action, data, flush=True)
                assert await c.recv() == expected, (action, data)
            # A valid frame after all that still works.
            await c.send("chat", {"content": "still here \U0001f600"})
            assert (await c.recv_type("chat"))["content"].startswith("still here")
        await healthy(srv, room, "after")


async def test_garbage_handshakes_reach_the_real_sfu_and_it_keeps_serving(tmp_path: Path) -> None:
    """The room SFU answers unusable offers with an error handshake and stays up."""
    async with running_server(make_config(tmp_path)) as srv:
        room = await new_room(srv, "sdp")
        async with ws_client(srv.ws_url) as c:
            await c.identify_client(room, "g")
            deep: Any = "x"
            for _ in range(500):
                deep = [deep]
            descriptions: list[Any] = [
                5, "offer", [], {"type": "offer"}, {"type": "offer", "sdp": 5},
                {"type": "offer", "sdp": "garbage"}, {"type": "offer", "sdp": "v=0\r\n" * 2000},
                {"type": "answer", "sdp": "v=0\r\n"}, {"type": "offer", "sdp": deep},
                {"type": "pranswer", "sdp": ""},
            ]  # fmt: skip
            for description in descriptions:
                await c.send("handshake", {"type": "producer", "description": description})
            await c.send("handshake", {"type": "consumer", "remotePeerId": "nobody",
                                       "description": {"type": "answer", "sdp": "v=0"}})  # fmt: skip
            await c.send("handshake", {"type": "producer", "candidate": {"candidate": 5}})
            answers = []
            with trio.move_on_after(2):
                while True:
                    answers.append(await c.recv())
            for message in answers:
                assert verdict(message) is None, message
                assert message["type"] in ("producer", "consumer") and "error" in message
                assert message["error"]["status"] == 400
            # Every offer-typed description that is a dict is answered with an error; none
            # produced an answer or a 500.
            assert len([m for m in answers if m["type"] == "producer"]) >= 6
            # The SFU still answers a real offer.
            leg_offer = valid_frames(room)[2]["data"]
            await c.send("handshake", leg_offer)
            answer = await c.recv_type("producer")
            assert answer["description"]["type"] == "answer", answer
        await healthy(srv, room, "after")


async def test_frame_size_boundaries(tmp_path: Path) -> None:
    limit = 4096
    config = make_config(tmp_path, limits={"max_message_bytes": limit})
    async with running_server(config, SfuRegistry()) as srv:
        room = await new_room(srv, "size")
        head = '{"action":"chat","data":{"content":"'
        tail = '"}}'
        exact = head + "x" * (limit - len(head) - len(tail)) + tail
        assert len(exact.encode()) == limit
        async with ws_client(srv.ws_url) as c:
            await c.identify_client(room, "s")
            await c.send_raw(exact)  # exactly at the limit: read, and refused for its content
            assert await c.recv() == error("chat", 400, "Invalid chat content")
            await c.send("chat", {"content": "fits"})
            assert (await c.recv())["content"] == "fits"
        for over in (
            exact[:-3] + "x" + tail,  # one byte over
            head + "\u20ac" * ((limit // 3) + 1) + tail,  # under the limit in characters
            b"\x00" * (limit + 1),  # binary
        ):
            async with ws_client(srv.ws_url) as c:
                await c.send_raw(over)
                with pytest.raises(ConnectionClosed) as closed:
                    await c.recv()
                assert closed.value.reason.code == 1009
        # Deep nesting inside a frame that is otherwise valid.
        async with ws_client(srv.ws_url) as c:
            await c.send_raw('{"action":"chat","data":' + "[" * 2000 + "]" * 2000 + "}")
            # Too deep to parse at all, so its action cannot be named either.
            assert await c.recv() == error(None, 400, "Invalid JSON")
            await c.send_raw("{" * 2000)
            assert await c.recv() == error(None, 400, "Invalid JSON")
        # hypercorn closes the byte-counted over-size frames itself, before the app sees them;
        # the gateway's own check (and counter) catches the one counted differently.
        assert srv.server.metrics.ws_closed.labels("1009")._value.get() == 1
        await healthy(srv, room, "after")


async def test_many_connections_from_one_client(tmp_path: Path) -> None:
    """300 sockets from one address, all at once: each is served; then all go away cleanly."""
    count = 300
    async with running_server(make_config(tmp_path), SfuRegistry()) as srv:
        room = await new_room(srv, "many")
        answered = 0
        async with AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(ws_client(srv.ws_url)) for _ in range(count)]
            assert (await srv.http.get("/health")).json()["connections"] == count + 1
            for i, c in enumerate(clients):
                await c.send("identify", {"type": "client", "id": f"m{i}", "roomId": room})
            for i, c in enumerate(clients):
                got = await c.recv()
                if i < 16:  # rooms.max_participants
                    assert got["type"] == "identified"
                else:
                    assert got == error("identify", 403, "Room is full")
                    answered += 1
        assert answered == count - 16
        with trio.fail_after(5):
            while srv.server.store.count_connections() != 1:  # type: ignore[union-attr]
                await trio.sleep(0.02)  # only the room SFU's row is left
        await healthy(srv, room, "m0")


# -- security rules of signaling that tests/test_gateway.py does not already cover -------------


async def test_sfu_identify_refused_when_no_token_is_configured(tmp_path: Path) -> None:
    # An empty workers.token must not match an empty (or absent) token.
    async with running_server(make_config(tmp_path), SfuRegistry()) as srv:
        room = await new_room(srv, "tok")
        async with ws_client(srv.ws_url) as c:
            for token in ("", None):
                data: dict[str, Any] = {"type": "sfu", "id": str(room)}
                if token is not None:
                    data["token"] = token
                await c.send("identify", data)
                assert await c.recv() == error("identify", 403, "Forbidden")


async def test_only_an_sfu_of_the_room_can_evict(tmp_path: Path) -> None:
    registry = SfuRegistry()
    config = make_config(tmp_path, workers={"token": "t"})
    async with running_server(config, registry) as srv, trio.open_nursery() as nursery:
        room1 = await new_room(srv, "one")  # in-process SFU
        registry.remote = 1
        nursery.start_soon(srv.http.put, "/createRoom")
        room2 = await registry.next_remote()
        async with AsyncExitStack() as stack:
            sfu2 = await stack.enter_async_context(ws_client(srv.ws_url))
            await sfu2.send("identify", {"type": "sfu", "id": str(room2), "token": "t"})
            await sfu2.recv_type("roster")
            a = await stack.enter_async_context(ws_client(srv.ws_url))
            b = await stack.enter_async_context(ws_client(srv.ws_url))
            await a.identify_client(room1, "a")
            await b.identify_client(room1, "b")
            assert await a.recv() == {
                "type": "clientJoin",
                "clientId": "b",
                "name": "b",
                "moderator": False,
            }
            # Room 2's SFU cannot evict (or reach) a client of room 1.
            await sfu2.send("disconnect", {"clientId": "a"})
            assert await sfu2.recv() == error("disconnect", 404, "Receiver not found")
            await sfu2.send("handshake", {"type": "consumer", "receiver": "a", "roomId": room1})
            assert await sfu2.recv() == error("handshake", 404, "Receiver not found")
            await a.expect_silence()
            # A client naming another client in `disconnect` just leaves itself (1000).
            await b.send("disconnect", {"clientId": "a"})
            with pytest.raises(ConnectionClosed) as closed:
                await b.recv()
            assert closed.value.reason.code == 1000
            assert await a.recv() == {"type": "clientDisconnect", "clientId": "b"}
            assert srv.server.gateway.client_count(room1) == 1  # type: ignore[union-attr]
            # A client's handshake naming a receiver still goes only to its room's SFU.
            c = await stack.enter_async_context(ws_client(srv.ws_url))
            await c.identify_client(room1, "c")
            await a.recv_type("clientJoin")
            await c.send("handshake", {"type": "producer", "receiver": "a", "sender": "a",
                                       "description": {"type": "answer", "sdp": "v=0"}})  # fmt: skip
            sfu1 = registry.sfus[room1]
            got = await sfu1.wait_for(lambda m: m.get("type") == "producer")
            assert got["sender"] == "c" and got["roomId"] == room1
            await a.expect_silence()
        nursery.cancel_scope.cancel()


# -- generated frames (hypothesis) against one long-lived server ------------------------------


class ServerThread:
    """A real server and one HostileSession in a trio loop on another thread.

    Hypothesis drives synchronous tests; each example crosses into the loop with
    trio.from_thread, so 200 examples share one server (as an attacker's frames would).
    """

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.tally = Tally()
        self.ready: queue.Queue[Any] = queue.Queue()
        self.stop: trio.Event | None = None
        self.room = 0
        self.session: HostileSession | None = None
        self.final: dict[str, Any] = {}
        self.thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    async def _main(self) -> None:
        # A flood is its own test: here the frames must be judged, not refused.
        config = make_config(
            self.tmp_path, limits={"messages_per_second": 1e6, "message_burst": 1_000_000}
        )
        try:
            async with running_server(config) as srv, trio.open_nursery() as nursery:
                self.room = await new_room(srv, "hyp")
                self.session = HostileSession(srv.ws_url, self.tally, nursery)
                self.stop = trio.Event()
                self.ready.put(trio.lowlevel.current_trio_token())
                await self.stop.wait()
                await self.session.aclose()
                self.final["health"] = (await srv.http.get("/health")).status_code
                async with ws_client(srv.ws_url) as fresh:
                    self.final["identified"] = await fresh.identify_client(self.room, "fresh")
                    await fresh.send("handshake", valid_frames(self.room)[2]["data"])
                    self.final["answer"] = await fresh.recv_type("producer")
                self.final["errors_500"] = srv.server.metrics.ws_errors.labels("500")._value.get()
        except BaseException as exc:  # reported to the test thread, never lost
            self.ready.put(exc)
            self.final["exception"] = exc

    def __enter__(self) -> ServerThread:
        self.thread.start()
        got = self.ready.get(timeout=20)
        if isinstance(got, BaseException):
            raise got
        self.token = got
        return self

    def exchange(self, frame: str | bytes) -> list[dict[str, Any]]:
        assert self.session is not None
        return trio.from_thread.run(self.session.exchange, frame, trio_token=self.token)

    def __exit__(self, *exc: object) -> None:
        assert self.stop is not None
        trio.from_thread.run_sync(self.stop.set, trio_token=self.token)
        self.thread.join(timeout=20)
        assert not self.thread.is_alive()


@pytest.fixture
def server_thread(tmp_path: Path) -> Iterator[ServerThread]:
    with ServerThread(tmp_path) as server:
        yield server
    assert "exception" not in server.final, server.final.get("exception")
    print(f"generated: {server.tally.frames} frames, {server.tally.reconnects} reconnects,",
          dict(sorted(server.tally.by_outcome.items())))  # fmt: skip
    assert server.tally.frames >= 200  # hypothesis ran the examples (and its shrinks)
    assert server.final["health"] == 200
    assert server.final["identified"]["type"] == "identified"
    assert server.final["answer"]["description"]["type"] == "answer"  # the SFU is alive
    assert server.final["errors_500"] == 0


_KEYS = st.sampled_from(["action", "data", "type", "id", "roomId", "name", "token", "content",
                         "audio", "video", "description", "sdp", "candidate", "receiver",
                         "remotePeerId", "clientId", "sender"])  # fmt: skip
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS | st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
ACTIONS = st.sampled_from(["identify", "handshake", "disconnect", "chat", "features"])


def _seed_frames() -> list[dict[str, Any]]:
    return valid_frames(1)  # rooms start at 1 in a fresh database


@st.composite
def mutated_frames(draw: st.DrawFn) -> str:
    frame = json.loads(json.dumps(draw(st.sampled_from(_seed_frames()))))
    data = frame["data"]
    for key in draw(st.lists(_KEYS, max_size=3)):
        if draw(st.booleans()):
            data[key] = draw(JSONISH)
        else:
            data.pop(key, None)
    if draw(st.integers(0, 9)) == 0:
        frame["action"] = draw(ACTIONS | JSONISH)
    return json.dumps(frame)


FRAMES = st.one_of(
    mutated_frames(),
    st.builds(lambda a, d: json.dumps({"action": a, "data": d}), ACTIONS, JSONISH),
    JSONISH.map(json.dumps),
    st.text(max_size=300),
    st.binary(max_size=100),
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(frame=FRAMES)
def test_generated_frames_get_documented_answers(
    server_thread: ServerThread, frame: str | bytes
) -> None:
    server_thread.exchange(frame)
    assert server_thread.tally.violations == []


# -- a concurrent call in another room keeps its media ------------------------------------------


async def test_barrage_on_one_room_costs_another_rooms_call_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Room Y has a two-person call (real ICE/DTLS/SRTP, recorded media) while room X gets
    generated garbage from 4 sockets, a flood, over-size frames and connection churn.
    Every packet of the call arrives (per-SSRC sequence accounting) and no error reaches it."""
    monkeypatch.setattr(engine, "CONSENT_INTERVAL", 1.0)
    seconds = 3.0
    recording = payloads.load()
    certificate = Certificate.generate()
    config = make_config(tmp_path, limits={"max_message_bytes": 16384})
    async with running_server(config) as srv, trio.open_nursery() as nursery:
        room_x = await new_room(srv, "x")
        room_y = await new_room(srv, "y")
        target = ArbiterTarget()
        target.url = srv.url
        with trio.fail_after(15):
            a, b = await join_call(target, room_y, [1, 2], certificate, nursery)
        tally = Tally()
        until = trio.current_time() + seconds

        async def garbage(seed: int) -> None:
            rng = random.Random(seed)
            seeds = valid_frames(room_x, me=f"h{seed}")
            session = HostileSession(srv.ws_url, tally, nursery)
            while trio.current_time() < until:
                await session.exchange(random_frame(rng, seeds))
            await session.aclose()

        async def flood() -> None:
            # Past the 200-frame burst, 100 refusals (defaults) close the connection with 1008.
            # It reads its answers, as a browser would, and stops sending once it is closed.
            # (Its own nursery, cancelled at the end: trio-websocket's close handshake can wait
            # a minute on a connection the server closed while frames were still in flight.)
            while trio.current_time() < until:
                await flood_once(srv.ws_url, 1000, tally)

        async def oversize() -> None:
            while trio.current_time() < until:
                async with ws_client(srv.ws_url) as c:
                    await c.send_raw("x" * 20000)
                    try:
                        await c.recv()
                    except ConnectionClosed as exc:
                        tally.count(f"oversize close {exc.reason.code}")
                await trio.sleep(0.05)

        async with trio.open_nursery() as attack:
            for seed in range(4):
                attack.start_soon(garbage, seed)
            attack.start_soon(flood)
            attack.start_soon(oversize)
            for p in (a, b):
                assert p.publisher_leg is not None
                attack.start_soon(
                    p.publisher_leg.publish, recording, p.number, p.audio_ssrc, p.video_ssrc, until
                )
        await trio.sleep(0.5)  # the last packets drain
        assert tally.violations == []
        assert tally.frames > 200
        assert tally.by_outcome.get("flood close 1008", 0) >= 1
        assert tally.by_outcome.get("oversize close 1009", 0) >= 1
        latencies = []
        for sender, receiver in ((a, b), (b, a)):
            assert sender.publisher_leg is not None
            sent = sender.publisher_leg.sent_by_ssrc
            streams = receiver.subscriptions[sender.peer_id].streams
            assert {ssrc: s.packets for ssrc, s in streams.items()} == sent
            assert {ssrc: s.expected for ssrc, s in streams.items()} == sent  # no gaps
            latencies += [ns for s in streams.values() for ns in s.latencies_ns]
        assert a.errors == [] and b.errors == []
        assert a.close_code is None and b.close_code is None
        assert all(0 < ns < 1_000_000_000 for ns in latencies)
        packets = sum(sum(p.publisher_leg.sent_by_ssrc.values()) for p in (a, b))  # type: ignore[union-attr]
        latencies.sort()
        print(f"barrage: {tally.frames} frames, {tally.by_outcome}; call: {packets} packets, "
              f"0 lost, latency p50 {latencies[len(latencies) // 2] / 1e6:.2f} ms, "
              f"p99 {latencies[len(latencies) * 99 // 100] / 1e6:.2f} ms")  # fmt: skip
        await healthy(srv, room_x, "after")
        for p in (a, b):
            await p.leave()
        nursery.cancel_scope.cancel()
