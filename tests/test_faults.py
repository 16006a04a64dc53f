"""Faults and leaks: nothing a participant does, or a room's SFU suffers, is left behind or
spreads to another room.

- join/leave cycles with real ICE, DTLS and SRTP leave no row, transport, lookup entry or
  gateway peer behind (the 1,000-cycle version against `arbiter serve` is
  scripts/soak_join_leave.py);
- one room's SFU task raising is caught at its task boundary: its clients get `sfuDisconnect`
  and rejoin with media, while another room's call loses not one packet;
- the browser tests (SIGKILL of the server mid-call, a page whose media stops without a
  goodbye) are in tests/test_faults_browser.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from arbiter.bench import payloads
from arbiter.bench.arbiter_target import ArbiterParticipant, ArbiterTarget
from arbiter.rooms import SignalingLink
from arbiter.server import Server
from arbiter.sfu.dtls import Certificate
from arbiter.sfu.media import run_media_room
from arbiter.testing import Running, make_config, new_room, running_server
from arbiter.testing.soak import Resident, Tables, cycle

CYCLES = 100


def _tables(srv: Running, room_id: int) -> dict[str, Any]:
    endpoint, gateway, store = srv.server.endpoint, srv.server.gateway, srv.server.store
    assert endpoint is not None and gateway is not None and store is not None
    assert srv.server.media is not None
    room = srv.server.media.rooms[room_id]
    return {
        "by_ufrag": len(endpoint.by_ufrag),
        "by_addr": len(endpoint.by_addr),
        "endpoint_transports": endpoint.transport_count(),
        "router_transports": len(room.router.transports),
        "publishers": sorted(room.publishers),
        "subscriptions": len(room.subscriptions),
        "gateway_peers": sorted(str(p.peer_id) for p in gateway.peers.values()),
        "room_clients": sorted(gateway.rooms[room_id].clients),
        "rows": store.count_connections(),
    }


async def _settle(srv: Running, room_id: int, want: dict[str, Any]) -> dict[str, Any]:
    """The tables once the last leave has been processed (bounded: 5 s)."""
    seen = _tables(srv, room_id)
    with trio.move_on_after(5):
        while seen != want:
            await trio.sleep(0.02)
            seen = _tables(srv, room_id)
    return seen


async def test_join_leave_cycles_leave_nothing_behind(tmp_path: Path) -> None:
    certificate = Certificate.generate()
    async with running_server(make_config(tmp_path)) as srv, trio.open_nursery() as nursery:
        room_id = await new_room(srv, "cycles")
        resident = Resident(srv.ws_url, room_id, certificate)
        with trio.fail_after(10):
            await nursery.start(resident.run)
        only_resident = {
            "by_ufrag": 1,
            "by_addr": 1,
            "endpoint_transports": 1,
            "router_transports": 1,
            "publishers": ["resident"],
            "subscriptions": 0,
            "gateway_peers": sorted(["resident", str(room_id)]),
            "room_clients": ["resident"],
            "rows": 2,  # the resident's and the room SFU's (in-process peers have rows too)
        }
        assert _tables(srv, room_id) == only_resident
        with trio.fail_after(60):
            for n in range(CYCLES):
                await cycle(srv.ws_url, room_id, resident, certificate, n, abrupt=n % 2 == 1)
        assert await _settle(srv, room_id, only_resident) == only_resident
        assert (resident.joins, resident.leaves, resident.errors) == (CYCLES, CYCLES, [])
        r = await srv.http.get("/metrics")
        assert Tables.from_metrics(r.text) == Tables(
            transports=1, by_ufrag=1, by_addr=1, router_transports=1, ws_connections=2
        )
        endpoint = srv.server.endpoint
        assert endpoint is not None
        with trio.fail_after(2):  # a keyframe request deferred by the 300 ms floor goes out
            assert srv.server.media is not None
            while any(router._pli_pending for router in srv.server.media.routers):
                await trio.sleep(0.05)
        counters = dict(endpoint.counters)
        # Every cycle's two consumer transports completed DTLS on the server: each asked its
        # publisher for a keyframe then (media._connected). The visitor's is sent at once; the
        # resident's stream is asked every cycle, faster than its 300 ms floor
        # (docs/PROTOCOL.md section 4, RTCP), so those requests were merged into one deferred
        # PLI per floor: each request was sent or merged into one that was, and nothing was
        # dropped or raised.
        assert set(counters) <= {"pli_sent", "pli_deferred", "pli_coalesced"}
        assert counters["pli_sent"] + counters.get("pli_coalesced", 0) == 2 * CYCLES
        # The resident leaves too: the room is empty and nothing of anyone remains.
        resident.stop.set()
        nobody = {
            **only_resident,
            "by_ufrag": 0,
            "by_addr": 0,
            "endpoint_transports": 0,
            "router_transports": 0,
            "publishers": [],
            "gateway_peers": [str(room_id)],
            "room_clients": [],
            "rows": 1,
        }
        assert await _settle(srv, room_id, nobody) == nobody
        assert dict(endpoint.counters) == counters
        nursery.cancel_scope.cancel()


class CrashableSfus:
    """The native room SFU (`run_media_room`), except that room r's raises once `crash(r)` is
    called: an injected bug at the SFU task boundary, not a cancellation or a clean exit."""

    def __init__(self) -> None:
        self.server: Server | None = None  # set once the Server exists (it owns the endpoint)
        self._triggers: dict[int, trio.Event] = {}
        self.starts: dict[int, int] = {}

    def crash(self, room_id: int) -> None:
        self._triggers[room_id].set()

    async def __call__(self, room_id: int, link: SignalingLink) -> None:
        assert self.server is not None and self.server.endpoint is not None
        trigger = self._triggers.setdefault(room_id, trio.Event())
        self.starts[room_id] = self.starts.get(room_id, 0) + 1

        async def crash_when_told() -> None:
            await trigger.wait()
            self._triggers[room_id] = trio.Event()  # once: the restarted SFU runs normally
            raise RuntimeError(f"injected crash of room {room_id}'s SFU")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(crash_when_told)
            await run_media_room(
                room_id, link, worker=self.server.media, config=self.server.config
            )
            nursery.cancel_scope.cancel()


def _exact(sender: ArbiterParticipant, receiver: ArbiterParticipant) -> dict[int, int]:
    """Per-SSRC packets `receiver` got from `sender`; asserts none lost and none duplicated."""
    assert sender.publisher_leg is not None
    sent = sender.publisher_leg.sent_by_ssrc
    streams = receiver.subscriptions[sender.peer_id].streams
    received = {ssrc: s.packets for ssrc, s in streams.items()}
    context = f"{sender.peer_id} -> {receiver.peer_id}"
    assert received == sent, context
    assert {ssrc: s.expected for ssrc, s in streams.items()} == sent, context  # no gaps
    assert all(n > 0 for n in sent.values()) and len(sent) == 2, context
    return received


async def test_one_rooms_sfu_crash_spares_the_other_room(tmp_path: Path) -> None:
    recording = payloads.load()
    certificate = Certificate.generate()
    sfus = CrashableSfus()
    async with running_server(make_config(tmp_path), sfus) as srv, trio.open_nursery() as nursery:
        sfus.server = srv.server
        gateway = srv.server.gateway
        assert gateway is not None
        crashing, spared = await new_room(srv, "crashing"), await new_room(srv, "spared")
        target = ArbiterTarget()
        target.url = srv.url  # the in-process server under test

        async def call(room: int, numbers: tuple[int, int]) -> list[ArbiterParticipant]:
            people = [ArbiterParticipant(target, room, n, certificate) for n in numbers]
            for p in people:
                p.nursery = nursery
                await p.join(nursery, publish=True)
            await people[0].wait_subscribed({people[1].peer_id})
            await people[1].wait_subscribed({people[0].peer_id})
            return people

        async def publish(people: list[ArbiterParticipant], until: float) -> None:
            async with trio.open_nursery() as senders:
                for p in people:
                    assert p.publisher_leg is not None
                    senders.start_soon(
                        p.publisher_leg.publish, recording, p.number, p.audio_ssrc,
                        p.video_ssrc, until,
                    )  # fmt: skip

        with trio.fail_after(20):
            a = await call(crashing, (1, 2))
            b = await call(spared, (3, 4))
        # The spared room talks through the whole incident: before, during and after.
        spared_until = trio.current_time() + 3.0
        nursery.start_soon(publish, b, spared_until)
        a_talking = trio.CancelScope()

        async def talk_a() -> None:
            with a_talking:
                await publish(a, trio.current_time() + 10)

        with trio.fail_after(10):
            nursery.start_soon(talk_a)
            await trio.sleep(0.5)
            for p in a:  # the crashing room's call was live: media flowed both ways
                assert p.subscriptions[a[0].peer_id if p is a[1] else a[1].peer_id].streams
            crashed_at = trio.current_time()
            sfus.crash(crashing)
            notice = {"type": "sfuDisconnect", "roomId": crashing}
            while not all(notice in p.messages for p in a):
                await trio.sleep(0.02)
            told_after = trio.current_time() - crashed_at
        a_talking.cancel()
        # Stop the legs' receive tasks before their sockets close: engine.Leg.close does not
        # notify trio, so a socket closed under a waiting task keeps its fd number registered
        # until that task's 0.25 s poll ends, and a new socket given that number would fail.
        for p in a:
            p.stop.set()
        await trio.sleep(0.3)
        for p in a:
            await p.leave()
        # The supervisor restarts the SFU after its back-off; the test rejoins (as the web
        # client does by itself) once the room's SFU is back, with fresh participants.
        with trio.fail_after(10):
            while gateway.sfu_of(crashing) is None:
                await trio.sleep(0.02)
            a2 = await call(crashing, (5, 6))
        rejoined_after = trio.current_time() - crashed_at
        await publish(a2, trio.current_time() + 1.0)
        assert trio.current_time() < spared_until  # the spared room was talking all along
        await trio.sleep_until(spared_until + 0.5)  # its last packets drain
        for sender, receiver in ((a2[0], a2[1]), (a2[1], a2[0]), (b[0], b[1]), (b[1], b[0])):
            _exact(sender, receiver)
        for p in b:
            assert [m for m in p.messages if m.get("type") == "sfuDisconnect"] == []
            assert p.errors == [] and p.close_code is None
        for p in a:
            assert [m for m in p.messages if m.get("type") == "sfuDisconnect"] == [notice]
        assert a2[0].errors == [] and a2[1].errors == []
        assert sfus.starts == {crashing: 2, spared: 1}
        metrics = (await srv.http.get("/metrics")).text
        assert "arbiter_room_sfu_crashes_total 1.0" in metrics.splitlines()
        print(f"sfuDisconnect {told_after * 1000:.0f} ms after the crash; "
              f"rejoined, both subscribed, {rejoined_after * 1000:.0f} ms after it; "
              f"spared room packets: {[_exact(s, r) for s, r in ((b[0], b[1]), (b[1], b[0]))]}")  # fmt: skip
        for p in (*a2, *b):
            await p.leave()
        nursery.cancel_scope.cancel()
